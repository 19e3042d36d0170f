//! What the scheduler writes to the API: the binding (`pods/<name>/binding`), the
//! `PodScheduled` condition of a pod that cannot be placed (pods/status, a strategic
//! merge patch on the condition, skipped when nothing changed), and events.k8s.io/v1
//! Events as upstream's recorder writes them (reportingController: the profile's
//! scheduler name, reportingInstance `<controller>-<hostname>`). As upstream's recorder, an event like one
//! written in the last 6 minutes (same pod, action, reason) is not written again;
//! upstream counts such repeats in the first event's series, which ferrokube does not
//! patch yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub struct Writer {
    pub client: Client,
    hostname: String,
    /// (pod uid, action, reason) → when such an event was last written; when the map
    /// was last pruned.
    recent: Mutex<(HashMap<EventKey, Instant>, Instant)>,
}

type EventKey = (String, String, String);

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

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Writer {
    pub fn new(client: Client) -> Writer {
        Writer { client, hostname: hostname(), recent: Mutex::new((HashMap::new(), Instant::now())) }
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

    /// Whether an event of this kind about this pod was written within the window (and
    /// if not, remember that one is being written now).
    fn repeated(&self, pod: &Pod, reason: &str, action: &str) -> bool {
        let now = Instant::now();
        let key = (pod.metadata.uid.clone().unwrap_or_default(), action.to_string(), reason.to_string());
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, pruned) = &mut *recent;
        // forget old entries now and then, not on every event
        if now.duration_since(*pruned) >= Duration::from_secs(10) {
            seen.retain(|_, at| now.duration_since(*at) < EVENT_SERIES_WINDOW);
            *pruned = now;
        }
        if seen.get(&key).is_some_and(|at| now.duration_since(*at) < EVENT_SERIES_WINDOW) {
            return true;
        }
        seen.insert(key, now);
        false
    }

    /// An events.k8s.io/v1 Event about the pod (`related`: another pod it concerns).
    pub async fn event(
        &self,
        pod: &Pod,
        related: Option<&Pod>,
        type_: &str,
        reason: &str,
        action: &str,
        note: &str,
    ) -> kube::Result<()> {
        if self.repeated(pod, reason, action) {
            return Ok(());
        }
        // the profile's recorder: the scheduler name of the pod acted for
        let controller = super::scheduler_name(related.unwrap_or(pod));
        let now = Timestamp::now();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let nanos = now.as_nanosecond();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", name(pod))),
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
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}
