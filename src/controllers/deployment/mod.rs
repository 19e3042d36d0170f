//! The Deployment controller (upstream's deployment controller): a Deployment owns
//! ReplicaSets named `<deployment>-<pod-template-hash>`, one per template it has had;
//! the one whose template is the Deployment's is the new set, the others old. Each sync
//! claims the ReplicaSets, then either only scales (paused, or `spec.replicas` changed:
//! proportionally across the sets during a rollout) or rolls out (`rollout.rs`:
//! RollingUpdate within maxSurge/maxUnavailable, or Recreate), cleans up old sets beyond
//! `revisionHistoryLimit`, and writes status and conditions (`status.rs`). Revisions
//! live in annotations, so `kubectl rollout history|undo` work from the ReplicaSets
//! (`sets.rs`). The controller never reads pods except for Recreate, which waits for
//! the old pods to be gone.

mod rollout;
mod sets;
mod status;
mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::replicaset::api_error;
use super::runtime::claim::is_orphan;
use super::runtime::informer::controller_of;
use super::runtime::{Ctx, Event, Informer, Recorder, WorkQueue, key_of};
use crate::label_selector::selector_matches;

pub(super) struct Controller {
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    client: Client,
    queue: Arc<WorkQueue>,
    recorder: Recorder,
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("deployment");
    let this = Arc::new(Controller {
        deployments: ctx.informer::<Deployment>(),
        sets: ctx.informer::<ReplicaSet>(),
        pods: ctx.informer::<Pod>(),
        client: ctx.client.clone(),
        queue: queue.clone(),
        recorder: ctx.recorder("deployment-controller"),
    });
    let q = queue.clone();
    this.deployments.on_change(move |ev| q.add(key_of(ev.object().as_ref())));
    let c = this.clone();
    this.sets.on_change(move |ev| c.on_replica_set(ev));
    let c = this.clone();
    this.pods.on_change(move |ev| c.on_pod(ev));
    ctx.run_syncs(queue, 5, this, |c, key| async move { c.sync(&key).await });
    Ok(())
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

/// The selector is empty: it would select every pod (upstream refuses to act on it).
fn selects_everything(d: &Deployment) -> bool {
    let sel = d.spec.as_ref().map(|s| &s.selector);
    sel.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

fn selects(d: &Deployment, labels: &BTreeMap<String, String>) -> bool {
    !selects_everything(d) && d.spec.as_ref().is_some_and(|s| selector_matches(&s.selector, labels))
}

impl Controller {
    /// The Deployment controlling `rs`, if it is still the one the reference names.
    fn owner_of(&self, rs: &ReplicaSet) -> Option<Arc<Deployment>> {
        let r = controller_of(rs, "Deployment")?;
        let d = self.deployments.get_in(namespace(&rs.metadata), &r.name)?;
        (d.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(d)
    }

    fn enqueue_selecting(&self, rs: &ReplicaSet) {
        let no_labels = BTreeMap::new();
        let labels = rs.metadata.labels.as_ref().unwrap_or(&no_labels);
        for d in self.deployments.list_namespace(namespace(&rs.metadata)) {
            if selects(&d, labels) {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    fn on_replica_set(&self, ev: &Event<ReplicaSet>) {
        let rs = ev.object();
        if let Event::Updated { old, .. } = ev
            && let Some(d) = self.owner_of(old)
        {
            self.queue.add(key_of(d.as_ref()));
        }
        match self.owner_of(rs) {
            Some(d) => self.queue.add(key_of(d.as_ref())),
            None if is_orphan(&rs.metadata) && !matches!(ev, Event::Deleted(_)) => self.enqueue_selecting(rs),
            None => {}
        }
    }

    /// Recreate waits for the old pods to be gone: a pod's deletion may unblock it.
    fn on_pod(&self, ev: &Event<Pod>) {
        let Event::Deleted(pod) = ev else { return };
        let Some(r) = controller_of(pod.as_ref(), "ReplicaSet") else { return };
        let Some(rs) = self.sets.get_in(namespace(&pod.metadata), &r.name) else { return };
        if let Some(d) = self.owner_of(&rs)
            && !util::is_rolling(&d)
        {
            self.queue.add(key_of(d.as_ref()));
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(d) = self.deployments.get(key) else { return Ok(()) };
        let mut d = (*d).clone();
        if selects_everything(&d) {
            self.recorder.warning(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            return self.observe_generation_only(&d).await;
        }
        let sets = self.claim_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut d, sets).await;
        }
        self.note_pause(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&d, &sets) {
            return self.scale_only(&mut d, sets).await;
        }
        match util::is_rolling(&d) {
            true => self.rollout_rolling(&mut d, sets).await,
            false => self.rollout_recreate(&mut d, sets).await,
        }
    }

    fn deployment_api(&self, d: &Deployment) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace(&d.metadata))
    }

    fn rs_api(&self, d: &Deployment) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace(&d.metadata))
    }

    async fn observe_generation_only(&self, d: &Deployment) -> anyhow::Result<()> {
        let status = d.status.clone().unwrap_or_default();
        if status.observed_generation >= d.metadata.generation {
            return Ok(());
        }
        let patch = json!({"status": {"observedGeneration": d.metadata.generation}});
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let api = self.deployment_api(d);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("writing status"))?;
        Ok(())
    }

    /// The Deployment's ReplicaSets, after adopting orphans its selector matches and
    /// releasing its own that it no longer matches.
    async fn claim_sets(&self, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
        use super::runtime::claim::{Owner, claim, controller_ref};
        let matches = |labels: &BTreeMap<String, String>| selects(d, labels);
        let owner = Owner {
            reference: controller_ref(d),
            deleting: d.metadata.deletion_timestamp.is_some(),
            selects: &matches,
        };
        let name = d.metadata.name.clone().unwrap_or_default();
        let recheck = async {
            let fresh = self.deployment_api(d).get(&name).await.context("re-reading before adoption")?;
            if fresh.metadata.uid != d.metadata.uid || fresh.metadata.deletion_timestamp.is_some() {
                anyhow::bail!("deployment {name} was replaced or is being deleted; not adopting");
            }
            Ok(())
        };
        let candidates = self.sets.list_namespace(namespace(&d.metadata));
        let claimed = claim(&self.rs_api(d), &owner, candidates, recheck).await?;
        Ok(claimed.into_iter().map(|rs| (*rs).clone()).collect())
    }

    /// Writes the Deployment's status if it changed; `d` takes the written object. (`d`
    /// always holds the status as last written: changes are written as they are made.)
    async fn write_status(
        &self,
        d: &mut Deployment,
        status: k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> anyhow::Result<()> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = d.clone();
        next.status = Some(status);
        let name = d.metadata.name.clone().unwrap_or_default();
        *d = self
            .deployment_api(d)
            .replace_status(&name, &PostParams::default(), &next)
            .await
            .context("writing status")?;
        Ok(())
    }

    /// Sets an annotation of the Deployment itself (its revision); `d` takes the result.
    async fn annotate(&self, d: &mut Deployment, key: &str, value: &str) -> anyhow::Result<()> {
        if util::annotation(&d.metadata, key) == Some(value) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {key: value}}});
        let name = d.metadata.name.clone().unwrap_or_default();
        let api = self.deployment_api(d);
        *d = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(api_error("annotating"))?;
        Ok(())
    }
}
