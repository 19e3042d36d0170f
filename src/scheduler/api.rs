//! What the scheduler writes to the API: the binding (`pods/<name>/binding`), the
//! `PodScheduled` condition of a pod that cannot be placed (pods/status, a strategic
//! merge patch on the condition, skipped when nothing changed), and events.k8s.io/v1
//! Events as upstream's recorder writes them (reportingController `default-scheduler`,
//! reportingInstance `<controller>-<hostname>`). As upstream's recorder, an event like one
//! written in the last 6 minutes (same pod, action, reason) is not written again;
//! upstream counts such repeats in the first event's series, which ferrokube does not
//! patch yet.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub struct Writer {
    pub client: Client,
    /// The reporting controller (the scheduler name).
    pub controller: String,
    pub instance: String,
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

impl Writer {
    pub fn new(client: Client, controller: &str) -> Writer {
        Writer {
            client,
            controller: controller.to_string(),
            instance: format!("{controller}-{}", crate::certs::hostname()),
            recent: Mutex::new((HashMap::new(), Instant::now())),
        }
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

    /// Set `PodScheduled=False` with this reason and message, unless it already says so.
    pub async fn set_unschedulable(&self, pod: &Pod, reason: &str, message: &str) -> kube::Result<()> {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)
        }) {
            return Ok(());
        }
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .unwrap_or_else(|| Time(Timestamp::now()));
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": transition,
        }]}});
        pods(&self.client, pod).patch_status(name(pod), &PatchParams::default(), &Patch::Strategic(&patch)).await?;
        Ok(())
    }

    /// An events.k8s.io/v1 Event about the pod.
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

    pub async fn event(&self, pod: &Pod, type_: &str, reason: &str, action: &str, note: &str) -> kube::Result<()> {
        if self.repeated(pod, reason, action) {
            return Ok(());
        }
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
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await?;
        Ok(())
    }
}
