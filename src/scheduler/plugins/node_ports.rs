//! NodePorts: a pod's host ports must be free on the node. A port bound to 0.0.0.0
//! conflicts with the same protocol and port on any address, and the reverse.

use crate::scheduler::framework::{Failure, FilterPlugin, HostPort, NodeInfo, PodInfo, Snapshot};

pub struct NodePorts;

pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

const ANY: &str = "0.0.0.0";

fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    want.port == used.port && want.protocol == used.protocol && (want.ip == used.ip || want.ip == ANY || used.ip == ANY)
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let taken = pod.host_ports.iter().any(|want| node.used_ports.iter().any(|used| conflicts(want, used)));
        if taken { Err(Failure::unschedulable(vec![REASON.into()])) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn with_port(name: &str, port: Value) -> PodInfo {
        named_pod("default", name, json!({"containers": [{"name": "c", "ports": [port]}]}))
    }

    #[test]
    fn host_port_conflicts_by_protocol_and_address() {
        let mut n = sized_node("n", "4", "4Gi");
        n.add_pod(Arc::new(with_port("a", json!({"containerPort": 80, "hostPort": 8080}))));
        n.add_pod(Arc::new(with_port(
            "b",
            json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"}),
        )));
        let cases = [
            (json!({"containerPort": 80, "hostPort": 8080}), false),
            (json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}), true),
            (json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}), false),
            (json!({"containerPort": 80, "hostPort": 8081}), true),
            (json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.2"}), true),
            (json!({"containerPort": 53, "hostPort": 53, "protocol": "UDP"}), false),
            (json!({"containerPort": 53}), true),
        ];
        for (i, (port, fits)) in cases.into_iter().enumerate() {
            let reasons = filter_reasons(&NodePorts, &with_port("new", port), &n);
            assert_eq!(reasons.is_empty(), fits, "case {i}: {reasons:?}");
        }
        n.remove_pod("default/a");
        assert!(
            filter_reasons(&NodePorts, &with_port("new", json!({"containerPort": 1, "hostPort": 8080})), &n).is_empty()
        );
    }
}
