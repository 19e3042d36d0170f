//! What the workload controllers (StatefulSet, DaemonSet, Job) share: pod states as
//! upstream's podutil reads them, controller ownerReferences, the pods a controller owns,
//! and `Expectations`, which keeps a controller from acting twice on a stale cache (the
//! pods it just created or deleted are not yet in the informer), as client-go's
//! ControllerExpectations do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Client, Resource};

use crate::label_selector::selector_matches;

use super::runtime::claim::{Owner, claim};
use super::runtime::{Ctx, Event, Informer, Kind, Recorder, WorkQueue, informer::controller_of, key_of};

/// Running with the Ready condition true.
pub fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running") && ready_since(pod).is_some()
}

/// When the Ready condition turned true, if it is.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready_seconds` (upstream's IsPodAvailable).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod).flatten() {
        Some(since) => now.as_second() - since.as_second() >= i64::from(min_ready_seconds),
        None => false,
    }
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Succeeded or Failed: its containers will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Neither finished nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}

pub use super::runtime::claim::controller_ref;

/// The pods of `owner`'s namespace whose controller it is.
pub fn owned_pods<K: Resource<DynamicType = ()>>(pods: &Informer<Pod>, owner: &K) -> Vec<Arc<Pod>> {
    let ns = owner.meta().namespace.as_deref().unwrap_or_default();
    let uid = owner.meta().uid.as_deref();
    let kind = K::kind(&());
    pods.list_namespace(ns)
        .into_iter()
        .filter(|p| controller_of(p.as_ref(), &kind).is_some_and(|r| Some(r.uid.as_str()) == uid))
        .collect()
}

/// A controller's sync of one key, run by `run` on its queue's workers.
pub trait Reconcile: Send + Sync + 'static {
    fn sync(&self, key: &str) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// Run `controller`'s syncs on `queue` (`--concurrent-*-syncs` workers, else `default`).
pub fn run<C: Reconcile>(ctx: &Ctx, queue: Arc<WorkQueue>, default: usize, controller: C) {
    let this = Arc::new(controller);
    ctx.run_workers(queue, default, move |key| {
        let c = this.clone();
        async move { c.sync(&key).await }
    });
}

/// A handler that queues the object's own key.
pub fn enqueue<K: Resource>(queue: Arc<WorkQueue>) -> impl Fn(&Event<K>) + Send + Sync {
    move |ev| queue.add(key_of(ev.object().as_ref()))
}

/// A pod handler that queues the pod's controller of kind `kind`.
pub fn enqueue_owner(queue: Arc<WorkQueue>, kind: &'static str) -> impl Fn(&Event<Pod>) + Send + Sync {
    move |ev| {
        let pod = ev.object();
        if let Some(owner) = controller_of(pod.as_ref(), kind) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            queue.add(format!("{ns}/{}", owner.name));
        }
    }
}

/// Delete `pod` if it is still the pod seen (a uid precondition); false if it was
/// already gone or replaced.
pub async fn delete_pod(client: &Client, pod: &Pod) -> anyhow::Result<bool> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Delete `owner`'s pods as the Job and DaemonSet controllers do: each expected gone
/// under `key`, and told in a `SuccessfulDelete` event `Deleted pod: <name>`.
pub async fn delete_owned_pods<K: Resource<DynamicType = ()>>(
    client: &Client,
    recorder: &Recorder,
    expectations: &Expectations,
    key: &str,
    owner: &K,
    pods: &[Arc<Pod>],
) -> anyhow::Result<()> {
    for pod in pods {
        if delete_pod(client, pod).await? {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            expectations.deleted(key, name);
            recorder.normal(owner, "SuccessfulDelete", format!("Deleted pod: {name}"));
        }
    }
    Ok(())
}

/// Upstream's ClaimPods over `runtime::claim`: of the namespace's pods that are `member`s
/// (or already `owner`'s), those `owner` controls once orphans its selector matches are
/// adopted and its pods the selector no longer matches are released. The owner is read
/// afresh before the first adoption.
pub async fn claim_pods<K: Kind + serde::Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &Client,
    pods: &Informer<Pod>,
    owner: &K,
    selector: &LabelSelector,
    member: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Vec<Arc<Pod>>> {
    let ns = owner.meta().namespace.as_deref().unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone();
    let selects = |labels: &BTreeMap<String, String>| selector_matches(selector, labels);
    let claimant = Owner {
        reference: controller_ref(owner),
        deleting: owner.meta().deletion_timestamp.is_some(),
        selects: &selects,
    };
    let ours = |p: &Pod| controller_of(p, &K::kind(&())).is_some_and(|r| Some(&r.uid) == uid.as_ref());
    let candidates = pods.list_namespace(ns).into_iter().filter(|p| ours(p) || member(p)).collect();
    let recheck = async {
        let fresh: K = Api::namespaced(client.clone(), ns).get(&name).await?;
        if fresh.meta().uid != uid || fresh.meta().deletion_timestamp.is_some() {
            anyhow::bail!("{} {name} was replaced or is being deleted; not adopting", K::kind(&()));
        }
        Ok(())
    };
    claim(&Api::namespaced(client.clone(), ns), &claimant, candidates, recheck).await
}

/// How long an expectation may wait for the informer before it is assumed lost.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

/// Pods a controller created or deleted and its pod informer has not shown yet, per
/// controller key. A sync that finds its expectations unmet leaves the pods alone: the
/// informer's events queue the key again once they arrive.
#[derive(Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    pub fn created(&self, key: &str, pod: &str) {
        let mut all = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let p = all.entry(key.to_string()).or_default();
        p.created.insert(pod.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    pub fn deleted(&self, key: &str, pod: &str) {
        let mut all = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let p = all.entry(key.to_string()).or_default();
        p.deleted.insert(pod.to_string());
        p.since.get_or_insert_with(Instant::now);
    }

    /// Whether the informer shows everything expected for `key` (forgetting what it shows).
    pub fn satisfied(&self, key: &str, pods: &Informer<Pod>, namespace: &str) -> bool {
        let mut all = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = all.get_mut(key) else { return true };
        p.created.retain(|name| pods.get_in(namespace, name).is_none());
        p.deleted.retain(|name| pods.get_in(namespace, name).is_some_and(|pod| !is_terminating(&pod)));
        let done = (p.created.is_empty() && p.deleted.is_empty())
            || p.since.is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        if done {
            all.remove(key);
        }
        done
    }

    pub fn forget(&self, key: &str) {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}
