//! Pod states as upstream's podutil reads them (ready, available after minReadySeconds,
//! active), and the order in which a shrinking ReplicaSet gives up its pods (upstream's
//! ActivePodsWithRanks with LogarithmicScaleDown): the cheapest to lose go first.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// When the Ready condition turned true, if it is true (`Some(None)`: true, time unknown).
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// The Ready condition is true (upstream's IsPodReady).
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a ready pod counts as available; zero if it already does, `None` if it
/// is not ready (upstream's IsPodAvailable, which wants ready for minReadySeconds).
pub fn available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(std::time::Duration::ZERO);
    }
    let Some(since) = since else { return Some(std::time::Duration::ZERO) };
    let due = since.as_millisecond() + i64::from(min_ready_seconds) * 1000;
    Some(std::time::Duration::from_millis(due.saturating_sub(now.as_millisecond()).max(0) as u64))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Not finished and not being deleted (upstream's IsPodActive): the pods a set counts.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

fn node(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default()
}

fn max_restarts(pod: &Pod) -> i32 {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().map(|c| c.restart_count).max().unwrap_or(0)
}

/// Unassigned, then Pending, Unknown, Running.
fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// ⌊log2(age in ns)⌋, -1 for a time in the future: times within a factor of two of each
/// other compare equal, so scaling down does not always pick the very newest pods.
fn log_age(t: Timestamp, now: Timestamp) -> i64 {
    let ns = now.as_nanosecond() - t.as_nanosecond();
    if ns <= 0 { -1 } else { 127 - i64::from(ns.leading_zeros()) }
}

/// Newer first, unknown times first; times within one log2 bucket of age tie (the next
/// criterion, and finally the uid, decides).
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp) -> Ordering {
    let bucket = |t: Option<Timestamp>| t.map(|t| log_age(t, now));
    bucket(a).cmp(&bucket(b))
}

/// Upstream's deletion order: a `Less` pod is deleted before a `Greater` one. `rank` is
/// the number of related pods on the pod's node (more doubled-up pods go first). A
/// total order (sorting requires one): each criterion is a key, the uid the last.
fn deletion_order(a: &Pod, b: &Pod, rank: &dyn Fn(&Pod) -> usize, now: Timestamp) -> Ordering {
    (!node(a).is_empty())
        .cmp(&!node(b).is_empty())
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| rank(b).cmp(&rank(a)))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            (Some(x), Some(y)) => newer_first(x, y, now),
            _ => Ordering::Equal,
        })
        .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            newer_first(created(a), created(b), now)
        })
        .then_with(|| a.metadata.uid.cmp(&b.metadata.uid))
}

/// The `n` pods to delete first; `related` are the pods whose node-sharing counts
/// (the set's own, plus those of its sibling sets under the same Deployment).
pub fn to_delete(pods: Vec<Arc<Pod>>, related: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    to_delete_at(pods, related, n, Timestamp::now())
}

/// `to_delete` with ages taken at `now` (ages are bucketed, so the order can change as
/// time passes).
fn to_delete_at(mut pods: Vec<Arc<Pod>>, related: &[Arc<Pod>], n: usize, now: Timestamp) -> Vec<Arc<Pod>> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p) && !node(p).is_empty()) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let rank = |p: &Pod| on_node.get(node(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| deletion_order(a, b, &rank, now));
    pods.truncate(n);
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<&str>, restarts: i32, created: &str) -> Arc<Pod> {
        let conditions = match ready_at {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "uid": name, "creationTimestamp": created},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase, "conditions": conditions,
                    "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": ready_at.is_some(), "restartCount": restarts}]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn unassigned_pending_unready_and_fresh_pods_go_first() {
        let old = "2020-01-01T00:00:00Z";
        let pods = vec![
            pod("ready-old", "n1", "Running", Some(old), 0, old),
            pod("unassigned", "", "Pending", None, 0, old),
            pod("pending", "n1", "Pending", None, 0, old),
            pod("unready", "n1", "Running", None, 0, old),
            pod("ready-new", "n1", "Running", Some(&Timestamp::now().to_string()), 0, old),
            pod("restarted", "n1", "Running", Some(old), 5, old),
        ];
        let names: Vec<_> =
            to_delete(pods.clone(), &pods, 6).iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["unassigned", "pending", "unready", "ready-new", "restarted", "ready-old"]);
    }

    #[test]
    fn thousands_of_pods_with_near_times_sort_without_panicking() {
        let now = Timestamp::now().as_second();
        let pods: Vec<Arc<Pod>> = (0..3000)
            .map(|i| {
                let t = Timestamp::from_second(now - (i * 7919 % 13)).unwrap().to_string();
                let ready = (i % 3 != 0).then_some(t.as_str());
                pod(&format!("p{:04}", i * 7907 % 3001), "n1", "Running", ready, (i % 2) as i32, &t)
            })
            .collect();
        // the same instant for both: a second passing between them may move an age bucket
        let at = Timestamp::now();
        let first = to_delete_at(pods.clone(), &pods, 500, at);
        assert_eq!(first, to_delete_at(pods.clone(), &pods, 500, at), "deterministic");
        assert!(first.iter().all(|p| !is_ready(p)), "the unready go first");
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Timestamp::now();
        let p = pod("p", "n", "Running", Some(&now.to_string()), 0, &now.to_string());
        assert_eq!(available_in(&p, 0, now), Some(std::time::Duration::ZERO));
        assert!(available_in(&p, 5, now).unwrap() > std::time::Duration::from_secs(4));
        let later = Timestamp::from_second(now.as_second() + 6).unwrap();
        assert_eq!(available_in(&p, 5, later), Some(std::time::Duration::ZERO));
        let unready = pod("u", "n", "Running", None, 0, &now.to_string());
        assert_eq!(available_in(&unready, 0, now), None);
    }
}
