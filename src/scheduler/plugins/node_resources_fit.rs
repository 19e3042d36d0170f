//! NodeResourcesFit: the pod's requests must fit in what the node's pods leave of its
//! allocatable (cpu, memory, ephemeral-storage, extended resources), and the node must
//! have room for one more pod. Its score follows the scoring strategy (pluginConfig's
//! `scoringStrategy`; upstream's default LeastAllocated over cpu and memory, weight 1
//! each): per resource a score from what the node would have requested with the pod
//! (scoring's non-zero requests for cpu and memory) against its allocatable, weighted.

use crate::scheduler::framework::{Failure, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};
use crate::scheduler::resources::{CPU, MEMORY};

pub struct NodeResourcesFit {
    pub strategy: Strategy,
    /// (resource name, weight).
    pub resources: Vec<(String, i64)>,
}

/// How a resource's use scores.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
    /// Points (utilization 0..=100, score 0..=MAX_NODE_SCORE) of a broken line.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

impl Default for NodeResourcesFit {
    fn default() -> NodeResourcesFit {
        let resources = vec![(CPU.to_string(), 1), (MEMORY.to_string(), 1)];
        NodeResourcesFit { strategy: Strategy::LeastAllocated, resources }
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > node.allowed_pods {
            reasons.push("Too many pods".to_string());
        }
        let want = &pod.requests;
        if !want.is_zero() {
            let free = |name: &str| node.allocatable.get(name).saturating_sub(node.requested.get(name));
            let fixed = [(CPU, want.milli_cpu), (MEMORY, want.memory), ("ephemeral-storage", want.ephemeral_storage)];
            let scalar = want.scalar.iter().map(|(name, v)| (name.as_str(), *v));
            for (name, amount) in fixed.into_iter().chain(scalar) {
                if amount > 0 && amount > free(name) {
                    reasons.push(format!("Insufficient {name}"));
                }
            }
        }
        if reasons.is_empty() { Ok(()) } else { Err(Failure::unschedulable(reasons)) }
    }
}

/// The node's allocatable and what it would have requested with this pod, for cpu and
/// memory: scoring's non-zero requests (LeastAllocated) or the plain ones (Balanced).
pub fn with_pod(pod: &PodInfo, node: &NodeInfo, non_zero: bool) -> [(i64, i64); 2] {
    let (on_node, of_pod) =
        if non_zero { (&node.non_zero_requested, &pod.non_zero) } else { (&node.requested, &pod.requests) };
    [CPU, MEMORY].map(|r| (node.allocatable.get(r), on_node.get(r).saturating_add(of_pod.get(r))))
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    // in i128: allocatable may be near i64::MAX (exabytes), and ×100 must not overflow
    ((capacity as i128 - requested as i128) * MAX_NODE_SCORE as i128 / capacity as i128) as i64
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    (requested.min(capacity) as i128 * MAX_NODE_SCORE as i128 / capacity as i128) as i64
}

/// Upstream's BuildBrokenLinearFunction: flat before the first point and after the last,
/// straight lines between.
fn broken_line(shape: &[(i64, i64)], x: i64) -> i64 {
    let Some(i) = shape.iter().position(|(u, _)| x <= *u) else { return shape.last().map_or(0, |p| p.1) };
    if i == 0 {
        return shape[0].1;
    }
    let ((u0, s0), (u1, s1)) = (shape[i - 1], shape[i]);
    s0 + (s1 - s0) * (x - u0) / (u1 - u0)
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (mut sum, mut weights) = (0i64, 0i64);
        for (name, weight) in &self.resources {
            let capacity = node.allocatable.get(name);
            if capacity == 0 {
                continue;
            }
            // scoring counts cpu and memory with the defaults for containers asking none
            let (on_node, of_pod) = match name.as_str() {
                CPU | MEMORY => (&node.non_zero_requested, &pod.non_zero),
                _ => (&node.requested, &pod.requests),
            };
            let requested = on_node.get(name).saturating_add(of_pod.get(name));
            let score = match &self.strategy {
                Strategy::LeastAllocated => least_requested(requested, capacity),
                Strategy::MostAllocated => most_requested(requested, capacity),
                Strategy::RequestedToCapacityRatio(shape) => {
                    let utilization = if requested > capacity { 100 } else { most_requested(requested, capacity) };
                    let score = broken_line(shape, utilization);
                    // this strategy leaves resources that score 0 out of the average
                    if score == 0 {
                        continue;
                    }
                    score
                }
            };
            sum += score * weight;
            weights += weight;
        }
        match (&self.strategy, weights) {
            (_, 0) => 0,
            (Strategy::RequestedToCapacityRatio(_), w) => (sum as f64 / w as f64).round() as i64,
            (_, w) => sum / w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;
    use std::sync::Arc;

    fn requesting(cpu: &str, memory: &str) -> PodInfo {
        pod_info(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}))
    }

    #[test]
    fn requests_must_fit_in_what_is_left() {
        let mut n = sized_node("n", "2", "4Gi");
        n.add_pod(Arc::new(named_pod(
            "d",
            "busy",
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}),
        )));
        assert!(filter_reasons(&NodeResourcesFit::default(), &requesting("500m", "1Gi"), &n).is_empty());
        assert_eq!(
            filter_reasons(&NodeResourcesFit::default(), &requesting("501m", "1Gi"), &n),
            vec!["Insufficient cpu"]
        );
        assert_eq!(
            filter_reasons(&NodeResourcesFit::default(), &requesting("1", "5Gi"), &n),
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let gpu = pod_info(json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}));
        assert_eq!(filter_reasons(&NodeResourcesFit::default(), &gpu, &n), vec!["Insufficient example.com/gpu"]);
    }

    #[test]
    fn pod_count_is_a_resource() {
        let mut n = node("n", json!({}), json!({"allocatable": {"cpu": "4", "pods": "1"}}));
        let empty = pod_info(json!({"containers": [{"name": "c"}]}));
        assert!(filter_reasons(&NodeResourcesFit::default(), &empty, &n).is_empty());
        n.add_pod(Arc::new(named_pod("d", "other", json!({"containers": []}))));
        assert_eq!(filter_reasons(&NodeResourcesFit::default(), &empty, &n), vec!["Too many pods"]);
        let no_pods = node("m", json!({}), json!({"allocatable": {"cpu": "4"}}));
        assert_eq!(filter_reasons(&NodeResourcesFit::default(), &empty, &no_pods), vec!["Too many pods"]);
    }

    #[test]
    fn least_allocated_score() {
        let n = sized_node("n", "4", "8Gi");
        // cpu (4000-1000)*100/4000 = 75, memory (8-2)*100/8 = 75
        assert_eq!(raw_score(&NodeResourcesFit::default(), &requesting("1", "2Gi"), &n), 75);
        // no requests: 100m and 200Mi count
        let none = pod_info(json!({"containers": [{"name": "c"}]}));
        let cpu = (4000 - 100) * 100 / 4000;
        let mem = ((8i64 << 30) - (200 << 20)) * 100 / (8i64 << 30);
        assert_eq!(raw_score(&NodeResourcesFit::default(), &none, &n), (cpu + mem) / 2);
    }

    #[test]
    fn most_allocated_and_requested_to_capacity_ratio() {
        let n = sized_node("n", "4", "8Gi");
        let pod = requesting("1", "4Gi");
        let with = |strategy, resources: &[(&str, i64)]| NodeResourcesFit {
            strategy,
            resources: resources.iter().map(|(r, w)| (r.to_string(), *w)).collect(),
        };
        // cpu 25, memory 50
        assert_eq!(raw_score(&with(Strategy::MostAllocated, &[("cpu", 1), ("memory", 1)]), &pod, &n), 37);
        assert_eq!(raw_score(&with(Strategy::MostAllocated, &[("cpu", 1), ("memory", 3)]), &pod, &n), 43);
        assert_eq!(raw_score(&with(Strategy::LeastAllocated, &[("cpu", 1)]), &pod, &n), 75);
        // a line from (0, 0) to (100, 100): the utilization itself; (25 + 50) / 2
        let line = Strategy::RequestedToCapacityRatio(vec![(0, 0), (100, 100)]);
        assert_eq!(raw_score(&with(line, &[("cpu", 1), ("memory", 1)]), &pod, &n), 38);
        // flat 100 up to 30% then down to 0 at 100%: cpu 100, memory 100 − 20×100/70 = 72
        let bin = Strategy::RequestedToCapacityRatio(vec![(30, 100), (100, 0)]);
        assert_eq!(raw_score(&with(bin, &[("cpu", 1), ("memory", 1)]), &pod, &n), 86);
    }

    #[test]
    fn huge_allocatable_does_not_overflow() {
        let n = sized_node("n", "9E", "8Ei");
        assert_eq!(raw_score(&NodeResourcesFit::default(), &requesting("1", "1Gi"), &n), 99);
        assert!(filter_reasons(&NodeResourcesFit::default(), &requesting("1", "1Gi"), &n).is_empty());
    }
}
