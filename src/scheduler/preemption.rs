//! Preemption, upstream's DefaultPreemption PostFilter: when no node fits a pod, find the
//! nodes where evicting pods of lower priority would let it fit, keep as few victims as
//! possible on each (the most important are reprieved first), and pick one node as
//! upstream does. Executing the choice (nominating the pod, deleting the victims) is the
//! scheduler's (`mod.rs`); this module only decides, under the cache lock.
//!
//! PodDisruptionBudgets are not read: every candidate counts as violating none, so the
//! first of upstream's criteria never decides.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use super::framework::{Failure, NodeInfo, PodInfo, Profile, Snapshot, histogram_message};

const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's DefaultPreemptionArgs defaults: dry-run at least this share of the nodes,
/// and at least this many, before choosing.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A node and the pods to evict there, the most important first.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Whether a pod has been marked for deletion by a preemption (upstream's
/// podTerminatingByPreemption).
fn terminating_by_preemption(pod: &PodInfo) -> bool {
    pod.pod.metadata.deletion_timestamp.is_some()
        && pod.pod.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| {
            c.type_ == "DisruptionTarget" && c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler")
        })
}

/// Upstream's PodEligibleToPreemptOthers: not with preemptionPolicy Never, nor while the
/// victims of an earlier preemption are still terminating on the nominated node (unless
/// that node no longer suits the pod at all).
fn ineligible(snapshot: &Snapshot, pod: &PodInfo, by_node: &BTreeMap<String, Failure>) -> Option<&'static str> {
    if pod.spec().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = snapshot.nominated.node_of(&pod.key)?;
    if by_node.get(nominated).is_some_and(|f| !f.resolvable) {
        return None;
    }
    let node = snapshot.node(nominated)?;
    let waiting = node.pods.values().any(|p| p.priority < pod.priority && terminating_by_preemption(p));
    waiting.then_some("not eligible due to a terminating pod on the nominated node.")
}

/// How many candidates to find before choosing (upstream's calculateNumCandidates).
fn candidates_to_find(num_nodes: usize) -> usize {
    (num_nodes * MIN_CANDIDATE_NODES_PERCENTAGE / 100).max(MIN_CANDIDATE_NODES_ABSOLUTE).min(num_nodes)
}

/// The PostFilter: the node to preempt on, or the "preemption: …" message saying why
/// there is none. `by_node` holds every node's filter failure.
pub fn post_filter(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    by_node: &BTreeMap<String, Failure>,
) -> Result<Candidate, String> {
    if let Some(why) = ineligible(snapshot, pod, by_node) {
        return Err(format!("preemption: {why}"));
    }
    let nodes = &snapshot.nodes;
    let want = candidates_to_find(nodes.len());
    // start at a random node, as upstream, so concurrent preemptors spread out
    let offset = fastrand::usize(0..nodes.len().max(1));
    let mut candidates = Vec::new();
    let mut reasons = Vec::new();
    for i in 0..nodes.len() {
        let node = nodes[(offset + i) % nodes.len()];
        let Some(failure) = by_node.get(&node.name) else { continue };
        if !failure.resolvable {
            reasons.push(NOT_HELPFUL.to_string());
            continue;
        }
        match select_victims(profile, snapshot, pod, node) {
            Ok(victims) => {
                candidates.push(Candidate { node: node.name.clone(), victims });
                if candidates.len() >= want {
                    break;
                }
            }
            Err(why) => reasons.extend(why),
        }
    }
    pick_one(candidates).ok_or_else(|| format!("preemption: {}", histogram_message(nodes.len(), reasons.into_iter())))
}

/// When a pod started (upstream's GetPodStartTime: not started counts as now, the latest).
fn start_time(pod: &PodInfo) -> Timestamp {
    pod.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or(Timestamp::MAX, |t| t.0)
}

/// Upstream's SelectVictimsOnNode: take away every lower-priority pod; if the pod then
/// fits, give them back one at a time, the most important first (higher priority, then
/// earlier start), keeping back as victims those without which it would not fit.
fn select_victims(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Result<Vec<Arc<PodInfo>>, Vec<String>> {
    let mut potential: Vec<Arc<PodInfo>> = node.pods.values().filter(|p| p.priority < pod.priority).cloned().collect();
    if potential.is_empty() {
        return Err(vec![NO_VICTIMS.to_string()]);
    }
    let mut trial = node.clone();
    for victim in &potential {
        trial.remove_pod(&victim.key);
    }
    // each trial filters a snapshot holding the trial node, so the spread and affinity
    // counts are those of the pods left on it
    let fits = |trial: &NodeInfo| profile.fits(&snapshot.with_node(trial), pod, trial);
    fits(&trial).map_err(|f| f.reasons)?;
    potential.sort_by_key(|p| (std::cmp::Reverse(p.priority), start_time(p)));
    let mut victims = Vec::new();
    for p in potential {
        trial.add_pod(p.clone());
        if fits(&trial).is_err() {
            trial.remove_pod(&p.key);
            victims.push(p);
        }
    }
    Ok(victims)
}

/// Upstream's pickOneNodeForPreemption, its criteria in order: no victims at all; the
/// lowest highest-priority victim; the lowest sum of priorities; the fewest victims; the
/// latest start among the highest-priority victims; the first found.
fn pick_one(candidates: Vec<Candidate>) -> Option<Candidate> {
    if let Some(i) = candidates.iter().position(|c| c.victims.is_empty()) {
        return candidates.into_iter().nth(i);
    }
    candidates.into_iter().min_by_key(|c| {
        let highest = c.victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        // shifted so negative priorities add up the way upstream's sum does
        let sum: i64 = c.victims.iter().map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1).sum();
        let earliest = c.victims.iter().filter(|v| v.priority == highest).map(|v| start_time(v)).min();
        (highest, sum, c.victims.len(), std::cmp::Reverse(earliest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::Nominated;
    use crate::scheduler::plugins::testing::{named_pod, sized_node, with_nominated};
    use serde_json::json;

    fn pod(name: &str, cpu: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(named_pod(
            "d",
            name,
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        ))
    }

    fn node(name: &str, cpu: &str, pods: &[Arc<PodInfo>]) -> NodeInfo {
        let mut n = sized_node(name, cpu, "8Gi");
        pods.iter().for_each(|p| n.add_pod(p.clone()));
        n
    }

    /// The PostFilter's answer for `pod` on these nodes, after they all failed the filters.
    fn preempt(nodes: &[&NodeInfo], nominated: &Nominated, pod: &PodInfo) -> Result<(String, Vec<String>), String> {
        let profile = Profile::default_plugins();
        with_nominated(nodes, nominated, |s| {
            let by_node = nodes.iter().map(|n| (n.name.clone(), profile.fits(s, pod, n).unwrap_err())).collect();
            post_filter(&profile, s, pod, &by_node).map(|c| (c.node, c.victims.iter().map(|v| v.key.clone()).collect()))
        })
    }

    #[test]
    fn fewest_and_least_important_victims() {
        // a: evicting one 10-priority pod is enough; b: two 5-priority pods must go
        let a = node("a", "2", &[pod("a1", "1", 10), pod("a2", "1", 1)]);
        let b = node("b", "2", &[pod("b1", "1", 5), pod("b2", "1", 5)]);
        let high = pod("high", "2", 100);
        // a: both a1 and a2 must go (2 cpus wanted); b: both; the lowest highest
        // priority (5 on b) wins
        assert_eq!(
            preempt(&[&a, &b], &Nominated::default(), &high),
            Ok(("b".into(), vec!["d/b1".into(), "d/b2".into()]))
        );
        // one cpu wanted: a keeps its 10-priority pod and loses the other (highest 1)
        let mid = pod("mid", "1", 100);
        assert_eq!(preempt(&[&a, &b], &Nominated::default(), &mid), Ok(("a".into(), vec!["d/a2".into()])));
    }

    #[test]
    fn no_victims_of_equal_or_higher_priority() {
        let a = node("a", "1", &[pod("a1", "1", 100)]);
        let p = pod("p", "1", 100);
        assert_eq!(
            preempt(&[&a], &Nominated::default(), &p),
            Err("preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.".into())
        );
        let never = Arc::new(named_pod(
            "d",
            "never",
            json!({"priority": 1000, "preemptionPolicy": "Never",
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
        ));
        assert_eq!(
            preempt(&[&a], &Nominated::default(), &never),
            Err("preemption: not eligible due to preemptionPolicy=Never.".into())
        );
    }

    #[test]
    fn nominated_pods_keep_their_room() {
        // the node is empty but a pod of priority 100 is nominated to it
        let a = node("a", "1", &[]);
        let mut nominated = Nominated::default();
        nominated.add(pod("waiting", "1", 100), "a");
        let profile = Profile::default_plugins();
        with_nominated(&[&a], &nominated, |s| {
            let reasons = |p: &PodInfo| profile.fits(s, p, &a).err().map(|f| f.reasons);
            assert_eq!(reasons(&pod("low", "1", 10)), Some(vec!["Insufficient cpu".to_string()]));
            assert_eq!(reasons(&pod("higher", "1", 200)), None, "a higher priority pod may take it");
            assert_eq!(reasons(&pod("waiting", "1", 100)), None, "the nominated pod itself fits");
        });
    }
}
