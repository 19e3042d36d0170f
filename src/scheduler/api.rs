//! What the scheduler writes to the API: the binding (`pods/<name>/binding`), the
//! `PodScheduled` condition of a pod that cannot be placed (pods/status, a strategic
//! merge patch on the condition, skipped when nothing changed), and events.k8s.io/v1
//! Events as upstream's recorder writes them (reportingController: the profile's
//! scheduler name, reportingInstance `<controller>-<hostname>`), repeats counted in the
//! first event's series as client-go's event broadcaster does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub struct Writer {
    pub client: Client,
    hostname: String,
    /// Events written in the last 6 minutes by series key, and when the map was last pruned.
    recent: Mutex<(HashMap<String, Recorded>, Instant)>,
}

/// An event as last written (with its series count so far) and when it last happened.
struct Recorded {
    event: Event,
    last: Instant,
}

/// How long a written event stands for its repeats (upstream's 6 minutes).
const EVENT_SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

fn pods(client: &Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"))
}

fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_))
}

fn reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: Some(pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

impl Writer {
    pub fn new(client: Client) -> Writer {
        Writer { client, hostname: crate::certs::hostname(), recent: Mutex::new((HashMap::new(), Instant::now())) }
    }

    pub async fn bind(&self, pod: &Pod, node: &str) -> kube::Result<()> {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name(pod), "namespace": pod.metadata.namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        pods(&self.client, pod)
            .create_subresource::<_, serde_json::Value>("binding", name(pod), &PostParams::default(), &binding)
            .await?;
        Ok(())
    }

    /// Set `PodScheduled=False` with this reason and message, and `nominatedNodeName` when
    /// preemption made room for the pod, unless the pod already says so.
    pub async fn set_unschedulable(
        &self,
        pod: &Pod,
        reason: &str,
        message: &str,
        nominated: Option<&str>,
    ) -> kube::Result<()> {
        let status = pod.status.as_ref();
        let current = condition(pod, "PodScheduled");
        let same_nomination =
            nominated.is_none_or(|n| status.and_then(|s| s.nominated_node_name.as_deref()) == Some(n));
        if same_nomination
            && current.is_some_and(|c| {
                c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)
            })
        {
            return Ok(());
        }
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .unwrap_or_else(|| Time(Timestamp::now()));
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": transition,
        }]}});
        if let Some(node) = nominated {
            patch["status"]["nominatedNodeName"] = json!(node);
        }
        self.patch_status(pod, &patch).await
    }

    async fn patch_status(&self, pod: &Pod, patch: &serde_json::Value) -> kube::Result<()> {
        pods(&self.client, pod).patch_status(name(pod), &PatchParams::default(), &Patch::Strategic(patch)).await?;
        Ok(())
    }

    /// Bind a volume to a claim as upstream's volume binder does: the volume's
    /// `claimRef`; the PersistentVolume controller completes the binding.
    pub async fn bind_volume(&self, volume: &str, claim: &PersistentVolumeClaim) -> kube::Result<()> {
        let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": claim.metadata.namespace, "name": claim.metadata.name, "uid": claim.metadata.uid});
        let patch = json!({"spec": {"claimRef": claim_ref}});
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        api.patch(volume, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Ask for a volume provisioned for the node: the claim's selected-node annotation.
    pub async fn select_node(&self, claim: &PersistentVolumeClaim, node: &str) -> kube::Result<()> {
        let patch = json!({"metadata": {"annotations": {super::plugins::SELECTED_NODE: node}}});
        let ns = claim.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        api.patch(claim.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// A lower-priority pod loses its nomination to a node a higher one preempted on.
    pub async fn clear_nomination(&self, pod: &Pod) -> kube::Result<()> {
        self.patch_status(pod, &json!({"status": {"nominatedNodeName": null}})).await
    }

    /// Evict a preemption victim as upstream: mark it with the `DisruptionTarget`
    /// condition (reason PreemptionByScheduler), delete it with its own grace period, and
    /// report a `Preempted` event on it. A victim already gone is no error.
    pub async fn preempt(&self, victim: &Pod, preemptor: &Pod, node: &str) -> kube::Result<()> {
        let gone = |r: kube::Result<()>| match r {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            other => other.map(|()| true),
        };
        let marked = condition(victim, "DisruptionTarget")
            .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler"));
        if !marked {
            let scheduler = super::scheduler_name(preemptor);
            let patch = json!({"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if !gone(self.patch_status(victim, &patch).await)? {
                return Ok(());
            }
        }
        let deleted = pods(&self.client, victim).delete(name(victim), &DeleteParams::default()).await.map(|_| ());
        if !gone(deleted)? {
            return Ok(());
        }
        let uid = preemptor.metadata.uid.as_deref().unwrap_or_default();
        let note = format!("Preempted by pod {uid} on node {node}");
        self.event(victim, Some(preemptor), "Normal", "Preempted", "Preempting", &note).await
    }

    /// An events.k8s.io/v1 Event about the pod (`related`: another pod it concerns), as
    /// client-go's event broadcaster records it: the first of its kind is created; a
    /// repeat within 6 minutes of the last (same regarding and related objects, action,
    /// reason and controller) turns it into a series, patched at once to count 2; later
    /// repeats only count here, and `refresh_series` writes them (every 30 minutes).
    pub async fn event(
        &self,
        pod: &Pod,
        related: Option<&Pod>,
        type_: &str,
        reason: &str,
        action: &str,
        note: &str,
    ) -> kube::Result<()> {
        // the profile's recorder: the scheduler name of the pod acted for
        let controller = super::scheduler_name(related.unwrap_or(pod));
        let now = Timestamp::now();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", name(pod), now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            type_: Some(type_.into()),
            reporting_controller: Some(controller.to_string()),
            reporting_instance: Some(format!("{controller}-{}", self.hostname)),
            regarding: Some(reference(pod)),
            related: related.map(reference),
            ..Default::default()
        };
        let key = series_key(&event);
        let to_write = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let (seen, pruned) = &mut *recent;
            let at = std::time::Instant::now();
            // series end 6 minutes after their last event (client-go's finishSeries)
            if at.duration_since(*pruned) >= Duration::from_secs(10) {
                seen.retain(|_, s| at.duration_since(s.last) < EVENT_SERIES_WINDOW);
                *pruned = at;
            }
            match seen.get_mut(&key).filter(|s| at.duration_since(s.last) < EVENT_SERIES_WINDOW) {
                Some(s) => {
                    s.last = at;
                    let series =
                        s.event.series.get_or_insert(EventSeries { count: 1, last_observed_time: MicroTime(now) });
                    series.count += 1;
                    series.last_observed_time = MicroTime(now);
                    // the second of a series is written now; later ones by the refresh
                    (series.count == 2).then(|| s.event.clone())
                }
                None => {
                    seen.insert(key, Recorded { event: event.clone(), last: at });
                    Some(event)
                }
            }
        };
        match to_write {
            Some(e) => self.record(&e).await,
            None => Ok(()),
        }
    }

    /// Write an event: create it, or patch the series of one already written (created
    /// again if it is gone).
    async fn record(&self, event: &Event) -> kube::Result<()> {
        let api =
            Api::<Event>::namespaced(self.client.clone(), event.metadata.namespace.as_deref().unwrap_or("default"));
        if let Some(series) = &event.series {
            let patch = json!({"series": {"count": series.count, "lastObservedTime": series.last_observed_time}});
            let name = event.metadata.name.as_deref().unwrap_or_default();
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => return other.map(|_| ()),
            }
        }
        api.create(&PostParams::default(), event).await?;
        Ok(())
    }

    /// Write the current counts of the series still open (client-go's refresh, every 30
    /// minutes).
    pub async fn refresh_series(&self) {
        let open: Vec<Event> = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.0.values().filter(|s| s.event.series.is_some()).map(|s| s.event.clone()).collect()
        };
        for event in open {
            if let Err(e) = self.record(&event).await {
                tracing::warn!(event = ?event.metadata.name, error = %e, "cannot refresh the event series");
            }
        }
    }
}

/// What makes events one series (client-go's getKey): the regarding and related objects
/// (resourceVersion included), action, reason, reporting controller.
fn series_key(e: &Event) -> String {
    let reference = |r: &Option<ObjectReference>| {
        r.as_ref().map(|r| format!("{:?}/{:?}/{:?}/{:?}", r.namespace, r.name, r.uid, r.resource_version))
    };
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        reference(&e.regarding),
        reference(&e.related),
        e.action,
        e.reason,
        e.reporting_controller
    )
}
