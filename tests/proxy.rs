//! `ferrokube proxy` (kube-proxy, iptables mode), run inside a network namespace of the
//! test's own (`common/netns.rs`) with the test API server relayed in, so the rules it
//! writes touch neither the host nor parallel tests. Backends are TCP listeners on extra
//! addresses of the namespace's `lo`; Services and EndpointSlices are made through the API.

mod common;

use std::time::Duration;

use common::netns::NetNs;
use common::{Cluster, KUBECTL_VERSIONS};

/// The harness itself: kubectl inside a namespace reaches the API server through the
/// relay with the cluster's own kubeconfig, and the namespace is gone after drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_relays_the_api_server_and_cleans_up() {
    let c = Cluster::start().await;
    let ns = NetNs::new();
    ns.relay_host_port(c.port);
    let name = ns.name.clone();
    let kubectl = common::kubectl_binary(KUBECTL_VERSIONS[1]);
    let out = ns
        .command(&kubectl)
        .args(["--kubeconfig", &c.kubeconfig.to_string_lossy(), "get", "namespaces", "-o", "name"])
        .env("HOME", c.dir.path())
        .output()
        .expect("kubectl in the netns");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    let links = ns.ip(&["-o", "link"]);
    assert!(links.contains("lo:") && !links.contains("eth0"), "{links}");
    drop(ns);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left = common::netns::run("ip", &["netns", "list"]);
    assert!(!left.contains(&name), "{name} left behind: {left}");
}
