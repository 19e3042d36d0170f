//! The new ReplicaSet and the old ones (upstream's getAllReplicaSetsAndSyncRevision):
//! the new set is the oldest whose template equals the Deployment's; it gets the next
//! revision (a set that had a revision before is a rollback: its old number moves into
//! `revision-history`), the Deployment's annotations, and the Deployment the same
//! revision. A missing new set is created as `<deployment>-<hash>`; a name taken by a set
//! with another template is a hash collision, settled by bumping
//! `status.collisionCount` and trying again.

use anyhow::{anyhow, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;

use super::util::{self, HASH_LABEL, REVISION};
use super::{Controller, namespace};
use crate::controllers::replicaset::{api_error, api_message};
use crate::controllers::runtime::claim::controller_ref;

/// The new set (if any) and the old ones, oldest first.
pub(super) type Sets = (Option<ReplicaSet>, Vec<ReplicaSet>);

impl Controller {
    /// Splits `sets` into new and old, bringing the new set's revision up to date (and
    /// creating it when `create` is set and there is none).
    pub(super) async fn new_and_old(
        &self,
        d: &mut Deployment,
        mut sets: Vec<ReplicaSet>,
        create: bool,
    ) -> anyhow::Result<Sets> {
        let template = util::d_template(d);
        sets.sort_by(util::by_age);
        let new =
            sets.iter().position(|rs| util::same_template(&util::rs_template(rs), &template)).map(|i| sets.remove(i));
        let old = sets;
        let revision = util::max_revision(&old) + 1;
        let new = match new {
            Some(rs) => Some(self.sync_new_set(d, rs, revision).await?),
            None if create => Some(self.create_new_set(d, &old, revision).await?),
            None => None,
        };
        Ok((new, old))
    }

    async fn sync_new_set(&self, d: &mut Deployment, rs: ReplicaSet, revision: i64) -> anyhow::Result<ReplicaSet> {
        let mut rs = rs;
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let mut changed = util::set_new_rs_annotations(d, &mut rs, revision, true);
        let spec = rs.spec.get_or_insert_with(Default::default);
        if spec.min_ready_seconds.unwrap_or(0) != min_ready {
            spec.min_ready_seconds = Some(min_ready);
            changed = true;
        }
        if changed {
            let name = rs.metadata.name.clone().unwrap_or_default();
            rs = self.rs_api(d).replace(&name, &PostParams::default(), &rs).await.map_err(api_error("updating"))?;
        }
        let revision = util::annotation(&rs.metadata, REVISION).unwrap_or_default().to_string();
        self.annotate(d, REVISION, &revision).await?;
        let status = d.status.clone().unwrap_or_default();
        if util::has_progress_deadline(d) && util::condition(&status, "Progressing").is_none() {
            let message = format!("Found new replica set {:?}", rs.metadata.name.as_deref().unwrap_or_default());
            self.set_condition(d, util::new_condition("Progressing", "True", "FoundNewReplicaSet", message)).await?;
        }
        Ok(rs)
    }

    /// Writes one condition into the Deployment's status.
    pub(super) async fn set_condition(
        &self,
        d: &mut Deployment,
        cond: k8s_openapi::api::apps::v1::DeploymentCondition,
    ) -> anyhow::Result<()> {
        let mut status = d.status.clone().unwrap_or_default();
        util::set_condition(&mut status, cond);
        self.write_status(d, status).await
    }

    async fn create_new_set(
        &self,
        d: &mut Deployment,
        old: &[ReplicaSet],
        revision: i64,
    ) -> anyhow::Result<ReplicaSet> {
        let rs = new_set(d, old, revision);
        let name = rs.metadata.name.clone().unwrap_or_default();
        let replicas = util::rs_replicas(&rs);
        match self.rs_api(d).create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    let message = format!("Scaled up replica set {name} from 0 to {replicas}");
                    self.recorder.normal(d, "ScalingReplicaSet", message);
                }
                self.annotate(d, REVISION, &revision.to_string()).await?;
                if util::has_progress_deadline(d) {
                    let message = format!("Created new replica set {name:?}");
                    self.set_condition(d, util::new_condition("Progressing", "True", "NewReplicaSetCreated", message))
                        .await?;
                }
                Ok(created)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => self.name_taken(d, &rs).await,
            Err(e) => {
                let message = format!("Failed to create new replica set {name:?}: {}", api_message(&e));
                self.recorder.warning(d, "FailedCreate", message.clone());
                if util::has_progress_deadline(d) {
                    let cond = util::new_condition("Progressing", "False", "ReplicaSetCreateError", message.clone());
                    self.set_condition(d, cond).await?;
                }
                Err(anyhow!(message))
            }
        }
    }

    /// The new set's name exists: ours with our template (the informer had not seen it
    /// yet), or a hash collision.
    async fn name_taken(&self, d: &mut Deployment, wanted: &ReplicaSet) -> anyhow::Result<ReplicaSet> {
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let existing = self.rs_api(d).get(&name).await.map_err(api_error("reading"))?;
        let ours = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == d.metadata.uid.as_ref());
        if ours && util::same_template(&util::rs_template(&existing), &util::d_template(d)) {
            return Ok(existing);
        }
        let mut status = d.status.clone().unwrap_or_default();
        let count = status.collision_count.unwrap_or(0).saturating_add(1);
        status.collision_count = Some(count);
        self.write_status(d, status).await?;
        bail!("replica set {name} exists with another template (hash collision); collisionCount is now {count}")
    }
}

/// The ReplicaSet for the Deployment's current template: its hash in the name, the
/// template's labels and the selector; sized for the first rollout step.
fn new_set(d: &Deployment, old: &[ReplicaSet], revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = util::template_hash(&spec.template, collision_count);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
    let old_refs: Vec<&ReplicaSet> = old.iter().collect();
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default())),
            namespace: Some(namespace(&d.metadata).to_string()),
            owner_references: Some(vec![controller_ref(d)]),
            labels,
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(util::new_rs_replicas(d, &old_refs, 0)),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    util::set_new_rs_annotations(d, &mut rs, revision, false);
    rs
}
