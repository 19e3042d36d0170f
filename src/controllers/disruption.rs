//! The disruption controller: keeps each PodDisruptionBudget's status, which the
//! eviction API spends from. For the pods the budget selects (policy/v1: an empty
//! selector selects the whole namespace) that have not finished: `expectedPods`, the
//! Ready ones not being deleted as `currentHealthy`, `desiredHealthy` from
//! `minAvailable` (a number, or a percentage of the expected pods rounded up) or
//! `expectedPods - maxUnavailable` (a percentage rounded up, as upstream), and
//! `disruptionsAllowed = currentHealthy - desiredHealthy` less the evictions recorded in
//! `disruptedPods` that have not yet happened (kept two minutes, as upstream), with the
//! `DisruptionAllowed` condition.
//!
//! Simplification: upstream counts expected pods from the scale of the pods'
//! controllers when percentages or maxUnavailable are used; here the selected pods
//! themselves are the expectation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::runtime::{Ctx, Informer, WorkQueue, key_of, split_key};

/// How long an eviction recorded in `disruptedPods` waits for its pod to go.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

struct Disruption {
    client: kube::Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue>,
}

fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    crate::label_selector::selector_matches(selector, &labels)
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// A number, or a percentage of `of` rounded up.
fn scaled(v: &IntOrString, of: i32) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((i64::from(of) * percent + 99) / 100) as i32
        }
    }
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("disruption");
    let d = Arc::new(Disruption {
        client: ctx.client.clone(),
        budgets: ctx.informer::<PodDisruptionBudget>(),
        pods: ctx.informer::<Pod>(),
        queue: queue.clone(),
    });
    let q = queue.clone();
    d.budgets.on_change(move |ev| q.add(key_of(ev.object().as_ref())));
    let (q, budgets) = (queue.clone(), d.budgets.clone());
    d.pods.on_change(move |ev| {
        let pod = ev.object();
        for pdb in budgets.list_namespace(pod.metadata.namespace.as_deref().unwrap_or_default()) {
            if selects(&pdb, pod) {
                q.add(key_of(pdb.as_ref()));
            }
        }
    });
    ctx.run_workers(queue, 5, move |key| {
        let d = d.clone();
        async move { d.sync(&key).await }
    });
    Ok(())
}

impl Disruption {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(pdb) = self.budgets.get(key) else { return Ok(()) };
        let (ns, name) = split_key(key);
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> =
            self.pods.list_namespace(ns).into_iter().filter(|p| selects(&pdb, p) && !finished(p)).collect();
        let expected = pods.len() as i32;
        let healthy = pods.iter().filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none()).count() as i32;
        let desired = match (&spec.min_available, &spec.max_unavailable) {
            (Some(min), _) => scaled(min, expected),
            (None, Some(max)) => (expected - scaled(max, expected)).max(0),
            (None, None) => 0,
        };
        // evictions granted whose pods are still there (and not yet overdue) are spent
        let now = Timestamp::now();
        let mut disrupted = BTreeMap::new();
        for (pod, at) in pdb.status.as_ref().and_then(|s| s.disrupted_pods.clone()).unwrap_or_default() {
            let alive = pods.iter().any(|p| p.name_any() == pod && p.metadata.deletion_timestamp.is_none());
            let overdue = at.0.checked_add(DELETION_TIMEOUT).is_ok_and(|t| t < now);
            if alive && !overdue {
                disrupted.insert(pod, at);
            } else if alive {
                // an eviction that never happened: look again when it times out
                self.queue.add_after(key.to_string(), Duration::from_secs(1));
            }
        }
        let allowed = (healthy - desired - disrupted.len() as i32).max(0);
        let (status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let generation = pdb.metadata.generation;
        let current = pdb.status.clone().unwrap_or_default();
        let unchanged = current.observed_generation == generation
            && current.expected_pods == expected
            && current.current_healthy == healthy
            && current.desired_healthy == desired
            && current.disruptions_allowed == allowed
            && current.disrupted_pods.clone().unwrap_or_default() == disrupted
            && current.conditions.iter().flatten().any(|c| c.type_ == "DisruptionAllowed" && c.reason == reason);
        if unchanged {
            return Ok(());
        }
        let transition = current
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionAllowed" && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        // a merge patch merges maps: entries no longer wanted are removed by null
        let mut disrupted_patch = serde_json::to_value(&disrupted)?;
        for gone in current.disrupted_pods.iter().flatten().map(|(k, _)| k).filter(|k| !disrupted.contains_key(*k)) {
            disrupted_patch[gone] = serde_json::Value::Null;
        }
        let patch = json!({
            "metadata": {"resourceVersion": pdb.metadata.resource_version},
            "status": {
                "observedGeneration": generation, "expectedPods": expected, "currentHealthy": healthy,
                "desiredHealthy": desired, "disruptionsAllowed": allowed, "disruptedPods": disrupted_patch,
                "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": "",
                                "observedGeneration": generation, "lastTransitionTime": transition}],
            },
        });
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("writing the status of the budget {key}"))?;
        Ok(())
    }
}
