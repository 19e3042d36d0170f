//! NodeResourcesBalancedAllocation: favour nodes whose cpu and memory would be used in
//! equal shares with the pod placed: (1 - the standard deviation of the shares) × 100.
//! As upstream, it counts plain requests (no scoring defaults), of the node's pods and
//! of the incoming one. A pod that requests neither is not scored (all nodes 0), as
//! upstream since 1.33, so best-effort pods do not pile onto one node.

use super::node_resources_fit::with_pod;
use crate::scheduler::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
            return 0;
        }
        let fractions: Vec<f64> = with_pod(pod, node, false)
            .into_iter()
            .filter(|(alloc, _)| *alloc != 0)
            .map(|(alloc, req)| (req as f64 / alloc as f64).min(1.0))
            .collect();
        // with two resources the standard deviation is half their difference
        let std = match fractions.as_slice() {
            [a, b] => ((a - b) / 2.0).abs(),
            _ => 0.0,
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn equal_shares_score_highest() {
        let n = sized_node("n", "4", "4Gi");
        let even =
            pod_info(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]}));
        assert_eq!(raw_score(&BalancedAllocation, &even, &n), 100);
        // cpu 1/4, memory 3/4: std 0.25
        let skewed =
            pod_info(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]}));
        assert_eq!(raw_score(&BalancedAllocation, &skewed, &n), 75);
        let best_effort = pod_info(json!({"containers": [{"name": "c"}]}));
        assert_eq!(raw_score(&BalancedAllocation, &best_effort, &n), 0);
    }
}
