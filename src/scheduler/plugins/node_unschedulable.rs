//! NodeUnschedulable: a cordoned node (spec.unschedulable) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerates;
use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, Snapshot};

pub struct NodeUnschedulable;

pub const REASON: &str = "node(s) were unschedulable";

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let cordoned = node.node.as_ref().and_then(|n| n.spec.as_ref()).and_then(|s| s.unschedulable).unwrap_or(false);
        if !cordoned {
            return Ok(());
        }
        let taint =
            Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        let tolerations = pod.spec().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
        if tolerations.iter().any(|t| tolerates(t, &taint)) { Ok(()) } else { Err(Failure::unresolvable(REASON)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let cordoned = node("n", json!({"unschedulable": true}), json!({}));
        let plain = pod_info(json!({"containers": [{"name": "c"}]}));
        assert_eq!(filter_reasons(&NodeUnschedulable, &plain, &cordoned), vec![REASON]);
        let tolerant = pod_info(json!({"containers": [{"name": "c"}], "tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(filter_reasons(&NodeUnschedulable, &tolerant, &cordoned).is_empty());
        let open = node("n", json!({}), json!({}));
        assert!(filter_reasons(&NodeUnschedulable, &plain, &open).is_empty());
    }
}
