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
