//! `ferrokube kubelet --pod-routes=host-gw` keeps a route to every other node's podCIDR
//! via its InternalIP. The kubelet (fake runtime: the routes do not depend on it) runs in
//! a network namespace of the test's own, linked by a veth to a second one standing in
//! for the peer node's link, so no route touches the host.

mod common;

use std::time::Duration;

use common::controllers::eventually;
use common::netns::NetNs;
use common::{Cluster, StatusCode, json};

const WAIT: Duration = Duration::from_secs(30);

async fn set_internal_ip(c: &Cluster, node: &str, ip: &str) {
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
    let (code, body) = c.patch(&format!("/api/v1/nodes/{node}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Wait until the namespace's routes of the kubelet's protocol are exactly `want`.
async fn routes_become(ns: &NetNs, want: &[&str]) {
    eventually(WAIT, &format!("routes {want:?}"), || async {
        let table = ns.ip(&["route", "show", "proto", "188"]);
        let lines: Vec<String> = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        let matches = lines.len() == want.len() && want.iter().all(|w| lines.iter().any(|l| l.starts_with(w)));
        matches.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_gw_routes_follow_the_nodes() {
    let c = Cluster::start().await;
    let (node_ns, peer_ns) = (NetNs::new(), NetNs::new());
    node_ns.veth_to(&peer_ns, "10.250.0.1/24", "10.250.0.2/24");
    node_ns.relay_host_port(c.port);
    // a route of ours left from an earlier run, for a podCIDR no node has
    node_ns.ip(&["route", "add", "10.244.99.0/24", "via", "10.250.0.9", "proto", "188"]);
    let peer = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "routes-peer"},
        "spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}});
    c.create("/api/v1/nodes", &peer).await;
    set_internal_ip(&c, "routes-peer", "10.250.0.2").await;

    let dir = c.dir.path();
    let mut kubelet = node_ns.command(env!("CARGO_BIN_EXE_ferrokube"));
    kubelet
        .args(["kubelet", "--runtime=fake", "--node-name=routes-me", "--port=0", "--pod-routes=host-gw"])
        .args(["--node-ip=10.250.0.1", "--kubeconfig", &c.kubeconfig.to_string_lossy()])
        .arg(format!("--root-dir={}", dir.join("kubelet").display()))
        .arg(format!("--pod-logs-dir={}", dir.join("pod-logs").display()))
        .env("RUST_LOG", "info");
    node_ns.spawn(&mut kubelet, &dir.join("kubelet.log"));

    // the peer's podCIDR via its address; the stale route gone
    routes_become(&node_ns, &["10.244.7.0/24 via 10.250.0.2"]).await;
    // the peer moves to another address
    set_internal_ip(&c, "routes-peer", "10.250.0.3").await;
    routes_become(&node_ns, &["10.244.7.0/24 via 10.250.0.3"]).await;
    // a second peer appears, then the first is deleted
    let second = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "routes-second"},
        "spec": {"podCIDR": "10.244.8.0/24"}});
    c.create("/api/v1/nodes", &second).await;
    set_internal_ip(&c, "routes-second", "10.250.0.4").await;
    routes_become(&node_ns, &["10.244.7.0/24 via 10.250.0.3", "10.244.8.0/24 via 10.250.0.4"]).await;
    let (code, _) = c.delete("/api/v1/nodes/routes-peer").await;
    assert_eq!(code, StatusCode::OK);
    routes_become(&node_ns, &["10.244.8.0/24 via 10.250.0.4"]).await;
    let log = std::fs::read_to_string(dir.join("kubelet.log")).unwrap_or_default();
    assert!(log.contains("route to a node's pods"), "{log}");
}
