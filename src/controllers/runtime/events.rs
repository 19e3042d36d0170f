//! Events as the controller-manager's recorders write them: core/v1 Events with
//! `source.component` (the FROM column of `kubectl describe`, e.g. `deployment-controller`),
//! named `<object>.<hex nanoseconds>`. As client-go's event correlator, an event identical
//! to one already written (same object, type, reason and message) is not written again:
//! that Event's `count` and `lastTimestamp` are patched instead. As its aggregator, more
//! than ten events of one object, type and reason with different messages within ten
//! minutes become one "(combined from similar events): …" event whose count grows; as its
//! spam filter, each object, type and reason may write 25 events at once and one more
//! every five minutes after that, so a ReplicaSet creating 5,000 pods writes 25 events,
//! not 5,000. Writing is fire and forget (a spawned task): a controller never waits on,
//! or fails because of, an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

/// How long a written event stands for its identical repeats.
const CORRELATION_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Distinct messages of one object, type and reason before they are combined.
const AGGREGATE_AFTER: usize = 10;
const COMBINED: &str = "(combined from similar events): ";
/// The spam filter's bucket: 25 events, refilled one per five minutes.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(5 * 60);

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: &'static str,
    host: String,
    seen: Arc<Mutex<HashMap<SeenKey, Seen>>>,
    similar: Arc<Mutex<HashMap<SimilarKey, Similar>>>,
}

/// (object uid, type, reason): events that are similar (aggregated and rationed together).
type SimilarKey = (String, String, String);

/// The recent events of one object, type and reason.
struct Similar {
    messages: std::collections::HashSet<String>,
    since: Instant,
    tokens: f64,
    refilled: Instant,
}

impl Similar {
    fn new(now: Instant) -> Similar {
        Similar { messages: Default::default(), since: now, tokens: SPAM_BURST, refilled: now }
    }

    /// Takes a token from the spam bucket; false if there is none.
    fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.refilled).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        self.tokens = (self.tokens + refill).min(SPAM_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// The message to write: `message`, or combined once too many differ.
    fn aggregate(&mut self, message: String, now: Instant) -> String {
        if now.duration_since(self.since) > CORRELATION_WINDOW {
            self.messages.clear();
            self.since = now;
        }
        if self.messages.contains(&message) || self.messages.len() < AGGREGATE_AFTER {
            self.messages.insert(message.clone());
            return message;
        }
        format!("{COMBINED}{message}")
    }
}

/// (object uid, type, reason, message): what makes two events the same.
type SeenKey = (String, String, String, String);

/// The event written for a key: its name, count, and when it was first written.
#[derive(Clone)]
struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

/// A reference to `obj` for an Event's involvedObject.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: Client, component: &'static str) -> Recorder {
        Recorder { client, component, host: crate::certs::hostname(), seen: Arc::default(), similar: Arc::default() }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), "Normal", reason, message.into());
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: impl Into<String>) {
        self.record(reference(obj), "Warning", reason, message.into());
    }

    /// The message to write after aggregation, or `None` if the spam filter drops it.
    fn admit(
        &self,
        regarding: &ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
        now: Instant,
    ) -> Option<String> {
        let key = (regarding.uid.clone().unwrap_or_default(), type_.to_string(), reason.to_string());
        let mut similar = self.similar.lock().unwrap_or_else(|e| e.into_inner());
        if similar.len() > 4096 {
            similar.retain(|_, s| now.duration_since(s.refilled) < SPAM_REFILL * 25);
        }
        let entry = similar.entry(key).or_insert_with(|| Similar::new(now));
        let message = entry.aggregate(message, now);
        entry.allow(now).then_some(message)
    }

    pub fn record(&self, regarding: ObjectReference, type_: &str, reason: &str, message: String) {
        let now = Instant::now();
        let Some(message) = self.admit(&regarding, type_, reason, message, now) else {
            tracing::debug!(reason, "event dropped by the spam filter");
            return;
        };
        // combined events count as repeats of one another
        let same = if message.starts_with(COMBINED) { COMBINED.to_string() } else { message.clone() };
        let key = (regarding.uid.clone().unwrap_or_default(), type_.to_string(), reason.to_string(), same);
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > 4096 {
                seen.retain(|_, s| now.duration_since(s.at) < CORRELATION_WINDOW);
            }
            match seen.get_mut(&key) {
                Some(s) if now.duration_since(s.at) < CORRELATION_WINDOW => {
                    s.count += 1;
                    Some(s.clone())
                }
                _ => None,
            }
        };
        let namespace = regarding.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let this = self.clone();
        let type_ = type_.to_string();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let api = Api::<Event>::namespaced(this.client.clone(), &namespace);
            let stamp = Time(Timestamp::now());
            if let Some(s) = repeat {
                let patch = json!({"count": s.count, "lastTimestamp": stamp, "message": message});
                if let Err(e) = api.patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    tracing::debug!(event = %s.name, error = %e, "cannot count a repeated event");
                }
                return;
            }
            let object = regarding.name.clone().unwrap_or_default();
            let name = format!("{object}.{:x}", Timestamp::now().as_nanosecond());
            let event = Event {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                involved_object: regarding,
                type_: Some(type_),
                reason: Some(reason),
                message: Some(message.chars().take(1024).collect()),
                source: Some(EventSource { component: Some(this.component.to_string()), host: None }),
                reporting_component: Some(this.component.to_string()),
                reporting_instance: Some(this.host.clone()),
                first_timestamp: Some(stamp.clone()),
                last_timestamp: Some(stamp),
                count: Some(1),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    let seen = Seen { name, count: 1, at: now };
                    this.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key, seen);
                }
                // a namespace being deleted refuses new events; nothing to tell anyone
                Err(e) => tracing::debug!(error = %e, "cannot write an event"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_events_are_combined_then_rationed() {
        let now = Instant::now();
        let mut s = Similar::new(now);
        let written: Vec<String> = (0..30)
            .filter_map(|i| {
                let message = s.aggregate(format!("Created pod: p{i}"), now);
                s.allow(now).then_some(message)
            })
            .collect();
        assert_eq!(written.len(), 25);
        assert_eq!(written[9], "Created pod: p9");
        assert_eq!(written[10], "(combined from similar events): Created pod: p10");
        assert!(s.allow(now + SPAM_REFILL), "one more after five minutes");
    }
}
