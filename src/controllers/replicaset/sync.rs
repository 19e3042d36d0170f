//! One sync of a ReplicaSet (or ReplicationController), as upstream's syncReplicaSet:
//! claim the active pods, create or delete the difference (unless expectations are
//! still pending), then write status — a failed create or delete becomes the
//! ReplicaFailure condition and the sync's error, so the key is retried with backoff.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Controller, Set, pods, selects};
use crate::controllers::runtime::claim::{self, Owner, controller_ref};
use crate::controllers::runtime::key_of;

/// At most this many pods are created or deleted in one sync (upstream's burstReplicas).
const BURST: i64 = 500;

/// The message of an API error (what upstream puts in events and conditions).
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// Turns a kube error into `what: <the API's message>` (kube's own text carries a
/// debug dump of the Status).
pub fn api_error(what: &str) -> impl FnOnce(kube::Error) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {}", api_message(&e))
}

fn namespace_terminating(e: &kube::Error) -> bool {
    let kube::Error::Api(s) = e else { return false };
    let causes = s.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    causes.iter().any(|c| c.reason == "NamespaceTerminating")
}

impl<K: Set> Controller<K> {
    pub(super) async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(set) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let ns = set.meta().namespace.clone().unwrap_or_default();
        let needs_sync = self.expectations.satisfied(key);
        let active = self.pods.list_namespace(&ns).into_iter().filter(|p| pods::is_active(p)).collect();
        let pods = self.claim_pods(&set, active).await?;
        let managed = match needs_sync && set.meta().deletion_timestamp.is_none() {
            true => self.manage(&set, key, &pods).await,
            false => Ok(()),
        };
        let (status, recheck) = desired_status(set.as_ref(), &pods, managed.as_ref().err());
        self.write_status(set.as_ref(), status).await?;
        if let Some(after) = recheck {
            self.queue.add_after(key.to_string(), after);
        }
        managed
    }

    fn pod_api(&self, set: &K) -> Api<Pod> {
        Api::namespaced(self.client.clone(), set.meta().namespace.as_deref().unwrap_or_default())
    }

    fn set_api(&self, set: &K) -> Api<K> {
        Api::namespaced(self.client.clone(), set.meta().namespace.as_deref().unwrap_or_default())
    }

    async fn claim_pods(&self, set: &Arc<K>, active: Vec<Arc<Pod>>) -> anyhow::Result<Vec<Arc<Pod>>> {
        let selector = set.selector();
        let matches = |labels: &BTreeMap<String, String>| selects(&selector, labels);
        let owner = Owner {
            reference: controller_ref(set.as_ref()),
            deleting: set.meta().deletion_timestamp.is_some(),
            selects: &matches,
        };
        let name = set.meta().name.clone().unwrap_or_default();
        let recheck = async {
            let fresh = self.set_api(set).get(&name).await.context("re-reading before adoption")?;
            if fresh.meta().uid != set.meta().uid || fresh.meta().deletion_timestamp.is_some() {
                bail!("{} {name} was replaced or is being deleted; not adopting", K::kind(&()));
            }
            Ok(())
        };
        claim::claim(&self.pod_api(set), &owner, active, recheck).await
    }

    async fn manage(&self, set: &K, key: &str, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let diff = pods.len() as i64 - i64::from(set.replicas());
        match diff {
            d if d < 0 => self.create_pods(set, key, (-d).min(BURST) as usize).await,
            d if d > 0 => self.delete_pods(set, key, pods, d.min(BURST) as usize).await,
            _ => Ok(()),
        }
    }

    /// Creates `n` pods in batches of 1, 2, 4, ... stopping at the first batch with a
    /// failure, so a doomed create (quota, admission) fails once, not `n` times.
    async fn create_pods(&self, set: &K, key: &str, n: usize) -> anyhow::Result<()> {
        let template = set.template().ok_or_else(|| anyhow!("no pod template"))?;
        self.expectations.expect(key, n, []);
        let (mut created, mut remaining, mut batch) = (0, n, 1.min(n));
        let mut failure = None;
        while batch > 0 {
            let results = join_all((0..batch).map(|_| self.create_pod(set, template))).await;
            created += results.iter().filter(|r| r.is_ok()).count();
            if let Some(e) = results.into_iter().find_map(Result::err) {
                failure = Some(e);
                break;
            }
            remaining -= batch;
            batch = (2 * batch).min(remaining);
        }
        // creations that failed or were never tried will not be seen
        for _ in created..n {
            self.expectations.creation_observed(key);
        }
        failure.map_or(Ok(()), Err)
    }

    async fn create_pod(&self, set: &K, template: &PodTemplateSpec) -> anyhow::Result<()> {
        match self.pod_api(set).create(&PostParams::default(), &pod_from(set, template)).await {
            Ok(pod) => {
                let name = pod.metadata.name.unwrap_or_default();
                self.recorder.normal(set, "SuccessfulCreate", format!("Created pod: {name}"));
                Ok(())
            }
            // every create would fail: nothing to retry
            Err(e) if namespace_terminating(&e) => Ok(()),
            Err(e) => {
                let message = api_message(&e);
                self.recorder.warning(set, "FailedCreate", format!("Error creating: {message}"));
                Err(anyhow!(message))
            }
        }
    }

    async fn delete_pods(&self, set: &K, key: &str, pods: &[Arc<Pod>], n: usize) -> anyhow::Result<()> {
        let doomed = pods::to_delete(pods.to_vec(), &self.related_pods(set, pods), n);
        self.expectations.expect(key, 0, doomed.iter().map(|p| key_of(p.as_ref())));
        let results = join_all(doomed.iter().map(|p| self.delete_pod(set, key, p))).await;
        results.into_iter().collect()
    }

    async fn delete_pod(&self, set: &K, key: &str, pod: &Pod) -> anyhow::Result<()> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.pod_api(set).delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.recorder.normal(set, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) => {
                self.expectations.deletion_observed(key, &key_of(pod));
                if let kube::Error::Api(s) = &e
                    && s.is_not_found()
                {
                    return Ok(());
                }
                let message = api_message(&e);
                self.recorder.warning(set, "FailedDelete", format!("Error deleting: {message}"));
                Err(anyhow!(message))
            }
        }
    }

    /// The pods whose nodes count when ranking for deletion: those of every set under
    /// the same controller (a Deployment's ReplicaSets), else the set's own.
    fn related_pods(&self, set: &K, own: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let controller_uid = |m: &ObjectMeta| {
            m.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.clone())
        };
        let Some(owner) = controller_uid(set.meta()) else { return own.to_vec() };
        let ns = set.meta().namespace.as_deref().unwrap_or_default();
        let siblings: HashSet<String> = self
            .sets
            .list_namespace(ns)
            .iter()
            .filter(|s| controller_uid(s.meta()).as_ref() == Some(&owner))
            .filter_map(|s| s.meta().uid.clone())
            .collect();
        let pods = self.pods.list_namespace(ns);
        pods.into_iter().filter(|p| controller_uid(&p.metadata).is_some_and(|u| siblings.contains(&u))).collect()
    }

    async fn write_status(&self, set: &K, desired: Value) -> anyhow::Result<()> {
        if same_status(&set.status_json(), &desired) {
            return Ok(());
        }
        let name = set.meta().name.clone().unwrap_or_default();
        let patch = json!({ "status": desired });
        match self.set_api(set).patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(e).context("writing status"),
        }
    }
}

/// A pod from the set's template (upstream's GetPodFromTemplate): `<set>-` plus a
/// generated suffix, the template's labels, annotations and finalizers, and the set
/// as its controller.
fn pod_from<K: Set>(set: &K, template: &PodTemplateSpec) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", set.meta().name.as_deref().unwrap_or_default())),
            namespace: set.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

const STATUS_FIELDS: [&str; 6] =
    ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration", "conditions"];

/// Zero, null and [] are the same (omitempty) value.
fn same_status(current: &Value, desired: &Value) -> bool {
    let norm = |v: Option<&Value>| match v {
        None | Some(Value::Null) => Value::from(0),
        Some(Value::Array(a)) if a.is_empty() => Value::from(0),
        Some(v) => v.clone(),
    };
    STATUS_FIELDS.iter().all(|f| norm(current.get(f)) == norm(desired.get(f)))
}

/// The status the pods make (upstream's calculateStatus), and when to look again for a
/// ready pod to turn available.
fn desired_status<K: Set>(set: &K, pods: &[Arc<Pod>], error: Option<&anyhow::Error>) -> (Value, Option<Duration>) {
    let now = Timestamp::now();
    let min_ready = set.min_ready_seconds();
    let template_labels = set.template().and_then(|t| t.metadata.as_ref()?.labels.clone()).unwrap_or_default();
    let has_label = |p: &Pod, k: &String, v: &String| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v);
    let fully_labeled = pods.iter().filter(|p| template_labels.iter().all(|(k, v)| has_label(p, k, v))).count();
    let waits: Vec<Duration> = pods.iter().filter_map(|p| pods::available_in(p, min_ready, now)).collect();
    let available = waits.iter().filter(|d| d.is_zero()).count();
    let recheck = waits.iter().filter(|d| !d.is_zero()).min().map(|d| *d + Duration::from_millis(50));
    let status = json!({
        "replicas": pods.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": waits.len(),
        "availableReplicas": available,
        "observedGeneration": set.meta().generation,
        "conditions": conditions(set, pods.len() as i64, error, now),
    });
    (status, recheck)
}

/// The set's conditions with ReplicaFailure added for a failed create/delete, or
/// removed once syncs succeed again.
fn conditions<K: Set>(set: &K, have: i64, error: Option<&anyhow::Error>, now: Timestamp) -> Value {
    let mut conditions: Vec<Value> = set.status_json()["conditions"].as_array().cloned().unwrap_or_default();
    let failing = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match error {
        Some(e) if !failing => {
            let reason = if have < i64::from(set.replicas()) { "FailedCreate" } else { "FailedDelete" };
            conditions.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": reason,
                "message": format!("{e:#}"), "lastTransitionTime": now,
            }));
        }
        None if failing => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    if conditions.is_empty() { Value::Null } else { Value::Array(conditions) }
}
