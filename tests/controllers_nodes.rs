//! Node lifecycle, taint eviction, node IPAM and pod GC. The test plays the kubelet:
//! it creates the Node, posts Ready and renews the node's Lease until it "dies".

mod common;

use std::time::Duration;

use common::controllers::{eventually, start_controller_manager};
use common::{Cluster, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn timestamp() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn ready_node(c: &Cluster, name: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    c.create("/api/v1/nodes", &node).await;
    let t = timestamp();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": t, "lastTransitionTime": t},
    ]}});
    let (s, body) = c.patch(&format!("/api/v1/nodes/{name}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Renew the node's Lease every 300 ms, as a kubelet does every 10 s, until aborted.
fn renew_lease(c: &Cluster, node: &str) -> tokio::task::JoinHandle<()> {
    let (http, base, node) = (c.http.clone(), c.base.clone(), node.to_string());
    tokio::spawn(async move {
        let path = format!("{base}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": timestamp()},
        });
        let _ = http
            .post(format!("{base}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"))
            .json(&lease)
            .send()
            .await;
        loop {
            let patch = json!({"spec": {"renewTime": timestamp()}});
            let _ = http.patch(&path).header("content-type", "application/merge-patch+json").json(&patch).send().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

async fn bound_pod(c: &Cluster, name: &str, node: &str, tolerations: Value) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]},
    });
    c.create("/api/v1/namespaces/default/pods", &pod).await;
}

fn taints(node: &Value) -> Vec<String> {
    let mut out: Vec<String> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or_default(), t["effect"].as_str().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_silent_node_turns_unknown_is_tainted_and_its_pods_are_evicted() {
    let c = Cluster::start().await;
    ready_node(&c, "n1").await;
    let kubelet = renew_lease(&c, "n1");
    let _cm = start_controller_manager(
        &c,
        &["--controllers=nodelifecycle", "--node-monitor-period=1s", "--node-monitor-grace-period=3s"],
    )
    .await;
    let quick = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]);
    bound_pod(&c, "quick", "n1", quick).await;
    bound_pod(&c, "defaulted", "n1", json!([])).await;
    let forever = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
    bound_pod(&c, "forever", "n1", forever).await;
    // DefaultTolerationSeconds gave the plain pod upstream's five minutes
    let defaulted = c.must_get("/api/v1/namespaces/default/pods/defaulted").await;
    let tolerations = defaulted["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    assert!(
        tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 300),
        "{defaulted}"
    );

    // healthy for a while: no taints
    tokio::time::sleep(Duration::from_secs(4)).await;
    let node = c.must_get("/api/v1/nodes/n1").await;
    assert!(taints(&node).is_empty(), "{node}");

    kubelet.abort();
    let node = eventually(WAIT, "the node to turn Unknown and be tainted", || async {
        let node = c.must_get("/api/v1/nodes/n1").await;
        (taints(&node).len() == 2).then_some(node)
    })
    .await;
    assert_eq!(
        taints(&node),
        ["node.kubernetes.io/unreachable:NoExecute", "node.kubernetes.io/unreachable:NoSchedule"]
    );
    let ready =
        node["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").cloned().unwrap();
    assert_eq!(ready["status"], "Unknown", "{node}");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let quick = eventually(WAIT, "the quick pod to be evicted", || async {
        let pod = c.must_get("/api/v1/namespaces/default/pods/quick").await;
        (!pod["metadata"]["deletionTimestamp"].is_null()).then_some(pod)
    })
    .await;
    let conditions = quick["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "DeletionByTaintManager"),
        "{quick}"
    );
    for name in ["defaulted", "forever"] {
        let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        assert!(pod["metadata"]["deletionTimestamp"].is_null(), "{name} must stay: {pod}");
    }

    // the kubelet comes back and posts Ready: the taints go
    let _kubelet = renew_lease(&c, "n1");
    let t = timestamp();
    let back = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": t, "lastTransitionTime": t}]}});
    c.patch("/api/v1/nodes/n1/status", "application/strategic-merge-patch+json", &back).await;
    eventually(WAIT, "the taints to be removed", || async {
        taints(&c.must_get("/api/v1/nodes/n1").await).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn nodes_get_pod_cidrs_and_orphaned_pods_are_collected() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(
        &c,
        &["--controllers=nodeipam,podgc", "--allocate-node-cidrs", "--cluster-cidr=10.244.0.0/16"],
    )
    .await;
    for name in ["a", "b"] {
        c.create("/api/v1/nodes", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).await;
    }
    let cidrs = eventually(WAIT, "pod CIDRs", || async {
        let a = c.must_get("/api/v1/nodes/a").await["spec"]["podCIDR"].as_str().map(str::to_string);
        let b = c.must_get("/api/v1/nodes/b").await["spec"]["podCIDR"].as_str().map(str::to_string);
        Some(vec![a?, b?])
    })
    .await;
    let mut sorted = cidrs.clone();
    sorted.sort();
    assert_eq!(sorted, ["10.244.0.0/24", "10.244.1.0/24"]);
    let node = c.must_get("/api/v1/nodes/a").await;
    assert_eq!(node["spec"]["podCIDRs"], json!([node["spec"]["podCIDR"]]));

    // a pod bound to a node that does not exist is deleted for good (pod GC passes
    // every 20 s)
    bound_pod(&c, "orphan", "no-such-node", json!([])).await;
    eventually(Duration::from_secs(60), "the orphaned pod to be collected", || async {
        (c.get("/api/v1/namespaces/default/pods/orphan").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}
