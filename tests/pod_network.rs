//! Pods on two real nodes reach each other by pod IP, without NAT. Each node — its own
//! containerd launcher and kubelet — runs in a network namespace of the test's own (the
//! API server relayed in), the two linked by a veth carrying the nodes' InternalIPs. Each
//! node's CNI bridge hands out the podCIDR node IPAM gave it (containerd gets no subnet:
//! the kubelet hands it the Node's podCIDR with CRI UpdateRuntimeConfig), and the
//! kubelets' `--pod-routes=host-gw` route the other node's podCIDR via its InternalIP.

mod common;

use std::time::Duration;

use common::containerd::CriNode;
use common::controllers::{eventually, start_controller_manager};
use common::netns::NetNs;
use common::{Cluster, json};

const WAIT: Duration = Duration::from_secs(60);

/// A busybox pod on `node` running `script`; its IP once it runs.
async fn run_pod(c: &Cluster, name: &str, node: &str, script: &str) -> String {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}});
    c.create("/api/v1/namespaces/default/pods", &pod).await;
    eventually(WAIT, &format!("{name} to run"), || async {
        let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        let running = pod["status"]["containerStatuses"][0]["state"]["running"].is_object();
        running.then(|| pod["status"]["podIP"].as_str().map(str::to_string)).flatten()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_two_nodes_reach_each_other_without_nat() {
    let c = Cluster::start().await;
    let ipam = ["--controllers=nodeipam", "--allocate-node-cidrs", "--cluster-cidr=10.244.0.0/16"];
    let _cm = start_controller_manager(&c, &ipam).await;
    let (ns_a, ns_b) = (NetNs::new(), NetNs::new());
    ns_a.veth_to(&ns_b, "10.250.1.1/24", "10.250.1.2/24");
    ns_a.relay_host_port(c.port);
    ns_b.relay_host_port(c.port);
    // declared after the namespaces, so dropped first: the launchers clean up inside them
    let flags = |ip: &'static str| [ip, "--pod-routes=host-gw"];
    let (path_a, path_b) = (ns_a.path(), ns_b.path());
    let _a = CriNode::start_with_node_pod_cidr(&c, "net-a", &flags("--node-ip=10.250.1.1"), Some(&path_a)).await;
    let b = CriNode::start_with_node_pod_cidr(&c, "net-b", &flags("--node-ip=10.250.1.2"), Some(&path_b)).await;

    // B listens and reports its TCP connections; A connects and holds the connection
    // (nc's input held open: with /dev/null it would close the connection at once)
    let listen = "sleep 3600 | nc -l -p 9000 >/dev/null & while true; do netstat -tn 2>/dev/null | grep ':9000 '; sleep 0.5; done";
    let ip_b = run_pod(&c, "listener", "net-b", listen).await;
    let ip_a = run_pod(&c, "caller", "net-a", &format!("sleep 3600 | nc {ip_b} 9000; echo nc ended $?")).await;
    let (pod_a, pod_b) = (
        c.must_get("/api/v1/namespaces/default/pods/caller").await,
        c.must_get("/api/v1/namespaces/default/pods/listener").await,
    );
    let deadline = std::time::Instant::now() + WAIT;
    let seen = loop {
        let out = b.container_output(&pod_b, "main", 0);
        if let Some(line) = out.lines().find(|l| l.contains("ESTABLISHED")) {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection from {ip_a} at {ip_b}:9000\nlistener: {out}\ncaller: {}\nroutes of A:\n{}\nroutes of B:\n{}",
            _a.container_output(&pod_a, "main", 0),
            ns_a.ip(&["route"]),
            ns_b.ip(&["route"]),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // `tcp 0 0 [::ffff:]<B>:9000 [::ffff:]<A>:<port> ESTABLISHED`: the source is A's pod
    // IP, not a node's
    let peer = seen.split_whitespace().nth(4).unwrap_or_default().trim_start_matches("::ffff:");
    assert!(peer.starts_with(&format!("{ip_a}:")), "the listener saw {seen:?}; the caller is {ip_a}");
    assert!(seen.contains(&format!("{ip_b}:9000")), "{seen}");
}

/// A node whose containerd has no subnet of its own: IPAM gives the Node its podCIDR, the
/// kubelet hands it to containerd (UpdateRuntimeConfig), containerd writes its network
/// config from the template, and a pod's IP is inside the podCIDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_its_ip_from_the_node_pod_cidr_ipam_gave() {
    let c = Cluster::start().await;
    let ipam = ["--controllers=nodeipam", "--allocate-node-cidrs", "--cluster-cidr=10.244.0.0/16"];
    let _cm = start_controller_manager(&c, &ipam).await;
    let ns = NetNs::new();
    ns.relay_host_port(c.port);
    let path = ns.path();
    let node = CriNode::start_with_node_pod_cidr(&c, "cidr-a", &["--node-ip=127.0.0.1"], Some(&path)).await;
    let ip = run_pod(&c, "inside", "cidr-a", "sleep 3600").await;
    let cidr = c.must_get("/api/v1/nodes/cidr-a").await["spec"]["podCIDR"].as_str().expect("a podCIDR").to_string();
    let net: ipnet::Ipv4Net = cidr.parse().expect("an IPv4 podCIDR");
    let addr: std::net::Ipv4Addr = ip.parse().expect("an IPv4 pod IP");
    let rendered =
        std::fs::read_to_string(node.dir.join("containerd/cni/10-containerd-net.conflist")).unwrap_or_default();
    assert!(net.contains(&addr), "pod IP {ip} outside the node's podCIDR {cidr}; network config: {rendered}");
    assert!(rendered.contains(&format!("\"subnet\": \"{cidr}\"")), "{rendered}");
    drop(node);
}

/// Without node IPAM the node's containerd has no network: the node turns NotReady with
/// upstream's "container runtime network not ready" until a podCIDR is set on the Node
/// (here by hand), then Ready, and its pods get IPs in that podCIDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_pod_cidr_is_not_ready_until_it_gets_one() {
    let c = Cluster::start().await;
    let ns = NetNs::new();
    ns.relay_host_port(c.port);
    let path = ns.path();
    let node = CriNode::start_with_node_pod_cidr(&c, "cidr-b", &["--node-ip=127.0.0.1"], Some(&path)).await;
    let ready = |want: &'static str| {
        let c = &c;
        move || async move {
            let n = c.must_get("/api/v1/nodes/cidr-b").await;
            let conditions = n["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.into_iter().find(|k| k["type"] == "Ready" && k["status"] == want)
        }
    };
    let not_ready = eventually(WAIT, "the node NotReady without a network", ready("False")).await;
    let message = not_ready["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("container runtime network not ready: NetworkReady=false"), "{not_ready}");
    let patch = json!({"spec": {"podCIDR": "10.243.7.0/24", "podCIDRs": ["10.243.7.0/24"]}});
    let (status, body) = c.patch("/api/v1/nodes/cidr-b", "application/merge-patch+json", &patch).await;
    assert!(status.is_success(), "{body}");
    eventually(WAIT, "the node Ready with a network", ready("True")).await;
    let ip = run_pod(&c, "late", "cidr-b", "sleep 3600").await;
    assert!(ip.starts_with("10.243.7."), "pod IP {ip} outside the podCIDR 10.243.7.0/24");
    drop(node);
}
