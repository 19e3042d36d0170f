//! The StatefulSet controller (upstream's statefulset-controller): pods `<set>-<ordinal>`
//! with stable identities (`identity.rs`), each made from a ControllerRevision
//! (`history.rs`). With OrderedReady management it acts on one pod at a time — creating
//! ordinals upwards, each once its predecessors are Running and Ready, and removing them
//! from the highest down; with Parallel it creates and deletes all at once. Pods that
//! failed are deleted and made again. RollingUpdate replaces, from the highest ordinal
//! down to `partition`, one pod whose revision is not the update revision at a time, and
//! only while every pod is healthy; OnDelete leaves replacement to the user.

mod identity;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::history::{self, REVISION_LABEL};
use super::runtime::{Ctx, Informer, Recorder, WorkQueue, key_of, split_key};
use super::workload;
use identity::{claims, new_pod, ordinal_of, pod_name, retention, set_name};

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("statefulset");
    let sets = ctx.informer::<StatefulSet>();
    sets.on_change(workload::enqueue(queue.clone()));
    let pods = ctx.informer::<Pod>();
    pods.on_change(workload::enqueue_owner(queue.clone(), "StatefulSet"));
    let this = Controller {
        client: ctx.client.clone(),
        sets,
        pods,
        revisions: ctx.informer::<ControllerRevision>(),
        claims: ctx.informer::<PersistentVolumeClaim>(),
        recorder: ctx.recorder("statefulset-controller"),
        queue: queue.clone(),
    };
    workload::run(ctx, queue, 5, this);
    Ok(())
}

struct Controller {
    client: Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    recorder: Recorder,
    queue: Arc<WorkQueue>,
}

/// The revisions a sync works with: what existing pods were made from (`current`) and
/// what new pods are made from (`update`).
struct Revisions {
    current: ControllerRevision,
    update: ControllerRevision,
}

impl Revisions {
    fn name_of(rev: &ControllerRevision) -> String {
        rev.metadata.name.clone().unwrap_or_default()
    }

    /// The revision and template for a new pod of `ordinal`: the current one below a
    /// RollingUpdate's partition (the API server defaults it to 0), else the update one.
    fn for_ordinal(&self, set: &StatefulSet, ordinal: i32) -> (String, PodTemplateSpec) {
        let spec = set.spec.as_ref();
        let strategy = spec.and_then(|s| s.update_strategy.as_ref());
        let rolling = strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
        let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
        let keep_current = rolling && ordinal < partition;
        match keep_current.then(|| history::template_of(&self.current)).flatten() {
            Some(t) => (Self::name_of(&self.current), t),
            None => (Self::name_of(&self.update), spec.map(|s| s.template.clone()).unwrap_or_default()),
        }
    }
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map_or("", String::as_str)
}

/// Running and Ready, and not being deleted.
fn healthy(pod: &Pod) -> bool {
    workload::is_ready(pod) && !workload::is_terminating(pod)
}

impl workload::Reconcile for Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(set) = self.sets.get(key) else { return Ok(()) };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let (ns, _) = split_key(key);
        let selector = set.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let member = |p: &Pod| ordinal_of(&set, p).is_some();
        let claimed = workload::claim_pods(&self.client, &self.pods, set.as_ref(), &selector, member).await?;
        let mut collisions = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let revisions = self.revisions(&set, &mut collisions).await?;
        let pods: BTreeMap<i32, Arc<Pod>> =
            claimed.into_iter().filter_map(|p| Some((ordinal_of(&set, &p)?, p))).collect();
        self.reconcile(&set, &revisions, &pods).await?;
        let status = self.status(&set, &revisions, &pods, collisions);
        let in_use: Vec<String> = pods.values().map(|p| revision_of(p).to_string()).collect();
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), ns);
        let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        let mut keep = in_use;
        keep.extend([
            status.current_revision.clone().unwrap_or_default(),
            status.update_revision.clone().unwrap_or_default(),
        ]);
        history::truncate(&rev_api, &history::owned(&self.revisions, set.as_ref()), &keep, limit).await?;
        if set.status.as_ref() != Some(&status) {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({"status": status});
            api.patch_status(set_name(&set), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        Ok(())
    }
}

impl Controller {
    async fn revisions(&self, set: &StatefulSet, collisions: &mut i32) -> anyhow::Result<Revisions> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), ns);
        let history = history::owned(&self.revisions, set);
        let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let update = history::current(&api, set, &template, &history, collisions).await?;
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = history
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
            .map_or_else(|| update.clone(), |r| (**r).clone());
        Ok(Revisions { current, update })
    }

    /// Take the one step (OrderedReady) or all steps (Parallel) towards the spec.
    async fn reconcile(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &BTreeMap<i32, Arc<Pod>>,
    ) -> anyhow::Result<()> {
        let spec = set.spec.as_ref();
        let ordered = spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel");
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
        let first = spec.and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0).max(0);
        let wanted = first..first + replicas;
        for ordinal in wanted.clone() {
            let acted = match pods.get(&ordinal) {
                None => {
                    self.create(set, revs, ordinal).await?;
                    true
                }
                Some(pod) if workload::is_terminal(pod) && !workload::is_terminating(pod) => {
                    let message = format!(
                        "StatefulSet {}/{} is recreating failed Pod {}",
                        set.metadata.namespace.as_deref().unwrap_or_default(),
                        set_name(set),
                        pod_name(set, ordinal)
                    );
                    self.recorder.warning(set, "RecreatingFailedPod", message);
                    self.delete(set, pod).await?;
                    true
                }
                Some(pod) => !healthy(pod),
            };
            if acted && ordered {
                return Ok(());
            }
        }
        let condemned: Vec<&Arc<Pod>> =
            pods.iter().rev().filter(|(o, _)| !wanted.contains(o)).map(|(_, p)| p).collect();
        let all_healthy = wanted.clone().all(|o| pods.get(&o).is_some_and(|p| healthy(p)));
        for pod in &condemned {
            if ordered && (workload::is_terminating(pod) || !all_healthy) {
                return Ok(());
            }
            if !workload::is_terminating(pod) {
                self.delete(set, pod).await?;
            }
            if ordered {
                return Ok(());
            }
        }
        self.delete_scaled_down_claims(set, pods, &wanted).await?;
        if condemned.is_empty() && all_healthy {
            self.roll(set, revs, pods, &wanted).await?;
        }
        Ok(())
    }

    /// RollingUpdate: replace the highest-ordinal pod at or above the partition that is
    /// not of the update revision.
    async fn roll(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &BTreeMap<i32, Arc<Pod>>,
        wanted: &std::ops::Range<i32>,
    ) -> anyhow::Result<()> {
        let strategy = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        if strategy.and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") != "RollingUpdate" {
            return Ok(());
        }
        let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
        let update = Revisions::name_of(&revs.update);
        let stale = wanted
            .clone()
            .rev()
            .filter(|o| *o >= partition)
            .find_map(|o| pods.get(&o).filter(|p| revision_of(p) != update));
        if let Some(pod) = stale {
            self.delete(set, pod).await?;
        }
        Ok(())
    }

    /// With `whenScaled: Delete`, the claims of ordinals scaled away whose pods are gone.
    async fn delete_scaled_down_claims(
        &self,
        set: &StatefulSet,
        pods: &BTreeMap<i32, Arc<Pod>>,
        wanted: &std::ops::Range<i32>,
    ) -> anyhow::Result<()> {
        if !retention(set).1 {
            return Ok(());
        }
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for claim in self.claims.list_namespace(ns) {
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            let ordinal = identity::claim_ordinal(set, name);
            let condemned = ordinal.is_some_and(|o| !wanted.contains(&o) && !pods.contains_key(&o));
            if condemned && claim.metadata.deletion_timestamp.is_none() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn create(&self, set: &StatefulSet, revs: &Revisions, ordinal: i32) -> anyhow::Result<()> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let pod_name = pod_name(set, ordinal);
        let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for claim in claims(set, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            match claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let m =
                        format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {} success", set_name(set));
                    self.recorder.normal(set, "SuccessfulCreate", m);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    let m = format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {e}",
                        set_name(set)
                    );
                    self.recorder.warning(set, "FailedCreate", m);
                    return Err(e.into());
                }
            }
        }
        let (revision, template) = revs.for_ordinal(set, ordinal);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &new_pod(set, &template, &revision, ordinal)).await {
            Ok(_) => {
                let m = format!("create Pod {pod_name} in StatefulSet {} successful", set_name(set));
                self.recorder.normal(set, "SuccessfulCreate", m);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => {
                let m = format!("create Pod {pod_name} in StatefulSet {} failed error: {e}", set_name(set));
                self.recorder.warning(set, "FailedCreate", m);
                Err(e.into())
            }
        }
    }

    async fn delete(&self, set: &StatefulSet, pod: &Pod) -> anyhow::Result<()> {
        if workload::delete_pod(&self.client, pod).await? {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let m = format!("delete Pod {name} in StatefulSet {} successful", set_name(set));
            self.recorder.normal(set, "SuccessfulDelete", m);
        }
        Ok(())
    }

    fn status(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &BTreeMap<i32, Arc<Pod>>,
        collisions: i32,
    ) -> StatefulSetStatus {
        let min_ready = set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Timestamp::now();
        let (current, update) = (Revisions::name_of(&revs.current), Revisions::name_of(&revs.update));
        let live: Vec<&Arc<Pod>> = pods.values().filter(|p| !workload::is_terminating(p)).collect();
        let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
        let mut status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: live.len() as i32,
            ready_replicas: Some(count(&|p| workload::is_ready(p))),
            available_replicas: Some(count(&|p| workload::is_available(p, min_ready, now))),
            current_replicas: Some(count(&|p| revision_of(p) == current)),
            updated_replicas: Some(count(&|p| revision_of(p) == update)),
            current_revision: Some(current),
            update_revision: Some(update.clone()),
            collision_count: Some(collisions),
            conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        if status.available_replicas < status.ready_replicas {
            self.queue.add_after(key_of(set), Duration::from_secs(min_ready.max(1) as u64));
        }
        let done = status.updated_replicas == Some(status.replicas) && status.ready_replicas == Some(status.replicas);
        if done {
            status.current_replicas = status.updated_replicas;
            status.current_revision = Some(update);
        }
        status
    }
}
