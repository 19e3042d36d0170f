//! NodeResourcesFit: the pod's requests must fit in what the node's pods leave of its
//! allocatable (cpu, memory, ephemeral-storage, extended resources), and the node must
//! have room for one more pod. Its score is upstream's default strategy, LeastAllocated
//! over cpu and memory (weight 1 each), counted with scoring's non-zero requests.

use crate::scheduler::framework::{Failure, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};
use crate::scheduler::resources::{CPU, MEMORY};

pub struct NodeResourcesFit;

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

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (mut sum, mut weights) = (0, 0);
        for (alloc, req) in with_pod(pod, node, true) {
            if alloc == 0 {
                continue;
            }
            sum += least_requested(req, alloc);
            weights += 1;
        }
        if weights == 0 { 0 } else { sum / weights }
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
        assert!(filter_reasons(&NodeResourcesFit, &requesting("500m", "1Gi"), &n).is_empty());
        assert_eq!(filter_reasons(&NodeResourcesFit, &requesting("501m", "1Gi"), &n), vec!["Insufficient cpu"]);
        assert_eq!(
            filter_reasons(&NodeResourcesFit, &requesting("1", "5Gi"), &n),
            vec!["Insufficient cpu", "Insufficient memory"]
        );
        let gpu = pod_info(json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}));
        assert_eq!(filter_reasons(&NodeResourcesFit, &gpu, &n), vec!["Insufficient example.com/gpu"]);
    }

    #[test]
    fn pod_count_is_a_resource() {
        let mut n = node("n", json!({}), json!({"allocatable": {"cpu": "4", "pods": "1"}}));
        let empty = pod_info(json!({"containers": [{"name": "c"}]}));
        assert!(filter_reasons(&NodeResourcesFit, &empty, &n).is_empty());
        n.add_pod(Arc::new(named_pod("d", "other", json!({"containers": []}))));
        assert_eq!(filter_reasons(&NodeResourcesFit, &empty, &n), vec!["Too many pods"]);
        let no_pods = node("m", json!({}), json!({"allocatable": {"cpu": "4"}}));
        assert_eq!(filter_reasons(&NodeResourcesFit, &empty, &no_pods), vec!["Too many pods"]);
    }

    #[test]
    fn least_allocated_score() {
        let n = sized_node("n", "4", "8Gi");
        // cpu (4000-1000)*100/4000 = 75, memory (8-2)*100/8 = 75
        assert_eq!(raw_score(&NodeResourcesFit, &requesting("1", "2Gi"), &n), 75);
        // no requests: 100m and 200Mi count
        let none = pod_info(json!({"containers": [{"name": "c"}]}));
        let cpu = (4000 - 100) * 100 / 4000;
        let mem = ((8i64 << 30) - (200 << 20)) * 100 / (8i64 << 30);
        assert_eq!(raw_score(&NodeResourcesFit, &none, &n), (cpu + mem) / 2);
    }

    #[test]
    fn huge_allocatable_does_not_overflow() {
        let n = sized_node("n", "9E", "8Ei");
        assert_eq!(raw_score(&NodeResourcesFit, &requesting("1", "1Gi"), &n), 99);
        assert!(filter_reasons(&NodeResourcesFit, &requesting("1", "1Gi"), &n).is_empty());
    }
}
