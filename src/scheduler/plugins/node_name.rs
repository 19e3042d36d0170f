//! NodeName: a pod that names its node fits only there.

use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, Snapshot};

pub struct NodeName;

pub const REASON: &str = "node(s) didn't match the requested node name";

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        match pod.spec().and_then(|s| s.node_name.as_deref()) {
            Some(name) if !name.is_empty() && name != node.name => Err(Failure::unresolvable(REASON)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;

    #[test]
    fn a_named_node_is_the_only_fit() {
        let n = sized_node("n1", "1", "1Gi");
        let named = |name: &str| pod_info(json!({"containers": [], "nodeName": name}));
        assert!(filter_reasons(&NodeName, &named("n1"), &n).is_empty());
        assert_eq!(filter_reasons(&NodeName, &named("n2"), &n), vec![REASON]);
        assert!(filter_reasons(&NodeName, &pod_info(json!({"containers": []})), &n).is_empty());
    }
}
