//! The ReplicaSet and ReplicationController controllers (upstream's replicaset and
//! replication controllers, one logic for both: an RC is a ReplicaSet whose selector is a
//! label map). Each keeps `spec.replicas` active pods matching its selector: it claims
//! pods (adopting orphans, releasing pods it no longer selects), creates missing pods
//! from the template in slow-start batches, deletes surplus pods cheapest first
//! (`pods::to_delete`), and writes status and events as upstream does. Expectations
//! keep it from acting again before its informer has seen its own writes.
//!
//! This file holds the kind-specific glue (`Set`) and the informer handlers; `sync.rs`
//! holds what one sync does.

pub(super) mod pods;
mod sync;

pub(super) use sync::{api_error, api_message};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Client, Resource};
use serde_json::Value;

use super::runtime::claim::is_orphan;
use super::runtime::expectations::Expectations;
use super::runtime::informer::controller_of;
use super::runtime::{Ctx, Event, Informer, Kind, Recorder, WorkQueue, key_of};
use crate::label_selector::selector_matches;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait Set: Kind + serde::Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope> {
    /// The events' source component.
    const COMPONENT: &'static str;
    /// The work queue (`--concurrent-*-syncs`).
    const QUEUE: &'static str;
    fn selector(&self) -> LabelSelector;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// `.status` as JSON (the two kinds' statuses have the same fields).
    fn status_json(&self) -> Value;
}

/// The accessors the two kinds spell the same way.
macro_rules! spelled_alike {
    () => {
        fn replicas(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
        }
        fn min_ready_seconds(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
        }
        fn template(&self) -> Option<&PodTemplateSpec> {
            self.spec.as_ref()?.template.as_ref()
        }
        fn status_json(&self) -> Value {
            serde_json::to_value(&self.status).unwrap_or_default()
        }
    };
}

impl Set for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    const QUEUE: &'static str = "replicaset";
    fn selector(&self) -> LabelSelector {
        self.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default()
    }
    spelled_alike!();
}

impl Set for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    const QUEUE: &'static str = "replicationmanager";
    fn selector(&self) -> LabelSelector {
        let labels = self.spec.as_ref().and_then(|s| s.selector.clone());
        LabelSelector { match_labels: labels, match_expressions: None }
    }
    spelled_alike!();
}

/// A selector matches `labels`; an empty selector matches nothing here (upstream never
/// lets a set select every pod).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    !empty && selector_matches(selector, labels)
}

pub(super) struct Controller<K: Set> {
    sets: Arc<Informer<K>>,
    pods: Arc<Informer<Pod>>,
    client: Client,
    queue: Arc<WorkQueue>,
    expectations: Expectations,
    recorder: Recorder,
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    start_kind::<ReplicaSet>(ctx)
}

pub fn start_rc(ctx: &Ctx) -> anyhow::Result<()> {
    start_kind::<ReplicationController>(ctx)
}

fn start_kind<K: Set>(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue(K::QUEUE);
    let this = Arc::new(Controller::<K> {
        sets: ctx.informer::<K>(),
        pods: ctx.informer::<Pod>(),
        client: ctx.client.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        recorder: ctx.recorder(K::COMPONENT),
    });
    let c = this.clone();
    this.sets.on_change(move |ev| c.on_set(ev));
    let c = this.clone();
    this.pods.on_change(move |ev| c.on_pod(ev));
    ctx.run_syncs(queue, 5, this, |c, key| async move { c.sync(&key).await });
    Ok(())
}

impl<K: Set> Controller<K> {
    fn on_set(&self, ev: &Event<K>) {
        let key = key_of(ev.object().as_ref());
        if let Event::Deleted(_) = ev {
            self.expectations.forget(&key);
        }
        self.queue.add(key);
    }

    /// The set `pod`'s controller reference names, if it is one of ours and still there.
    fn owner_of(&self, pod: &Pod) -> Option<Arc<K>> {
        let r = controller_of(pod, &K::kind(&()))?;
        let set = self.sets.get_in(pod.metadata.namespace.as_deref().unwrap_or_default(), &r.name)?;
        (set.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(set)
    }

    /// Queue every set that would adopt the orphan `pod`.
    fn enqueue_selecting(&self, pod: &Pod) {
        let no_labels = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
        for set in self.sets.list_namespace(pod.metadata.namespace.as_deref().unwrap_or_default()) {
            if selects(&set.selector(), labels) {
                self.queue.add(key_of(set.as_ref()));
            }
        }
    }

    fn on_pod(&self, ev: &Event<Pod>) {
        match ev {
            Event::Added(pod) if pod.metadata.deletion_timestamp.is_some() => self.pod_gone(pod),
            Event::Added(pod) => match self.owner_of(pod) {
                Some(set) => {
                    let key = key_of(set.as_ref());
                    self.expectations.creation_observed(&key);
                    self.queue.add(key);
                }
                None if is_orphan(&pod.metadata) => self.enqueue_selecting(pod),
                None => {}
            },
            Event::Updated { old, new } => self.pod_updated(old, new),
            Event::Deleted(pod) => self.pod_gone(pod),
        }
    }

    fn pod_updated(&self, old: &Pod, new: &Pod) {
        let labels_changed = old.metadata.labels != new.metadata.labels;
        if new.metadata.deletion_timestamp.is_some() {
            self.pod_gone(new);
            if labels_changed {
                self.pod_gone(old);
            }
            return;
        }
        let old_owner = self.owner_of(old);
        let new_owner = self.owner_of(new);
        if let Some(o) = &old_owner
            && new_owner.as_ref().is_none_or(|n| n.meta().uid != o.meta().uid)
        {
            self.queue.add(key_of(o.as_ref()));
        }
        match new_owner {
            Some(set) => {
                let key = key_of(set.as_ref());
                let min_ready = set.min_ready_seconds();
                // a pod turning ready becomes available minReadySeconds later: look again then
                if min_ready > 0 && !pods::is_ready(old) && pods::is_ready(new) {
                    self.queue.add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
                }
                self.queue.add(key);
            }
            None if is_orphan(&new.metadata)
                && (labels_changed || old.metadata.owner_references != new.metadata.owner_references) =>
            {
                self.enqueue_selecting(new)
            }
            None => {}
        }
    }

    /// The pod is deleted or being deleted: its owner's expectation is met.
    fn pod_gone(&self, pod: &Pod) {
        if let Some(set) = self.owner_of(pod) {
            let key = key_of(set.as_ref());
            self.expectations.deletion_observed(&key, &key_of(pod));
            self.queue.add(key);
        }
    }
}
