//! `ferrokube proxy` (kube-proxy, iptables and nftables modes), run inside a network
//! namespace of the test's own (`common/netns.rs`) with the test API server relayed in,
//! so the rules it writes touch neither the host nor parallel tests. Backends are TCP
//! listeners on extra addresses of the namespace's `lo`; Services and EndpointSlices are
//! made through the API. Each behaviour test runs once per mode (`<test>::iptables`,
//! `<test>::nftables`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::containerd::CriNode;
use common::controllers::{eventually, start_controller_manager};
use common::netns::NetNs;
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, Value, json};

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

/// The node's name as the proxy is told it; endpoints on it are local.
const NODE: &str = "node-a";
/// An address of the test namespace standing for the node's own (NodePorts answer on it).
const NODE_IP: &str = "192.168.77.1";
const WAIT: Duration = Duration::from_secs(30);

/// A TCP server inside the namespace on `ip:8080` that answers every connection with its
/// own name, then echoes lines until the client closes (so a connection can outlive a
/// proxy restart). Stops when dropped.
struct Backend {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ns: &NetNs, ip: &str) -> Backend {
        ns.add_local_address(&format!("{ip}/32"));
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("backend address");
        let listener = ns.run_in(|| TcpListener::bind(addr).expect("binding a backend"));
        listener.set_nonblocking(true).expect("non-blocking backend");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = ip.to_string();
        let handle = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || echo(conn, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { stop, handle: Some(handle) }
    }
}

fn echo(conn: TcpStream, name: &str) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut writer) = conn.try_clone() else { return };
    if writeln!(writer, "{name}").is_err() {
        return;
    }
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if writeln!(writer, "{name} {line}").is_err() {
            return;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A connection made from inside `ns`: the answering backend's name, or the error.
fn ask(ns: &NetNs, addr: &str) -> Result<String, std::io::ErrorKind> {
    let addr: SocketAddr = addr.parse().expect("address");
    let conn = ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_millis(1500))).map_err(|e| e.kind())?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.kind())?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).map_err(|e| e.kind())?;
    Ok(line.trim().to_string())
}

/// A plain HTTP/1.0 GET from inside `ns`: the whole answer (status line, headers, body).
fn http_get(ns: &NetNs, addr: &str, path: &str) -> String {
    let addr: SocketAddr = addr.parse().expect("address");
    let mut conn = ns.run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2))).expect("connecting");
    write!(conn, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).expect("answer");
    answer
}

/// The backends answering `n` connections to `addr`, with how often each did.
fn spread(ns: &NetNs, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = ask(ns, addr).unwrap_or_else(|e| format!("error: {e:?}"));
        *seen.entry(who).or_default() += 1;
    }
    seen
}

/// Wait until a connection to `addr` gives `want` (a backend name or an error kind).
async fn wait_answer(
    env: &ProxyEnv,
    addr: &str,
    want: impl Fn(&Result<String, std::io::ErrorKind>) -> bool,
    what: &str,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = ask(&env.ns, addr);
        if want(&got) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {addr} still gives {got:?}\nproxy log:\n{}\n{}",
            env.proxy_log(),
            env.rules()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cluster, a namespace standing for the node with the API relayed in, another one
/// outside it on a veth (its clients are "external"; the node routes the service range
/// to it as to a default gateway), and `ferrokube proxy` running inside the node.
struct ProxyEnv {
    c: Cluster,
    ns: NetNs,
    outside: NetNs,
    proxy: usize,
    /// `--proxy-mode`: iptables or nftables.
    mode: &'static str,
}

crate::both_proxy_modes!(
    cluster_ip_and_node_port_reach_ready_endpoints_only,
    client_ip_affinity_sticks,
    stale_chains_go_and_cleanup_removes_all,
    restart_keeps_established_connections,
    local_traffic_policies,
    load_balancer_gets_a_working_node_port_and_stays_pending,
    bad_endpoints_are_skipped_without_breaking_the_rest,
    pods_reach_ready_pods_through_cluster_ip_and_node_port,
    removed_rules_come_back_at_the_next_sync_period,
);

impl ProxyEnv {
    async fn start(mode: &'static str) -> ProxyEnv {
        let c = Cluster::start().await;
        let ns = NetNs::new();
        ns.relay_host_port(c.port);
        ns.add_local_address(&format!("{NODE_IP}/32"));
        let outside = NetNs::new();
        ns.veth_to(&outside, "192.168.78.1/24", "192.168.78.2/24");
        // local clients reach ClusterIPs through the nat OUTPUT chain, which runs after
        // the routing decision: the range needs a route, as a default route gives it on
        // a real node (over lo, the REJECT's ICMP error never reaches the socket)
        ns.ip(&["route", "add", "10.96.0.0/12", "via", "192.168.78.2"]);
        let mut env = ProxyEnv { c, ns, outside, proxy: usize::MAX, mode };
        env.start_proxy();
        env
    }

    fn start_proxy(&mut self) {
        self.start_proxy_with(&[]);
    }

    fn start_proxy_with(&mut self, extra: &[&str]) {
        let mode = format!("--proxy-mode={}", self.mode);
        let args: Vec<&str> =
            ["--cluster-cidr=10.244.0.0/16", &mode].into_iter().chain(extra.iter().copied()).collect();
        self.proxy = common::proxy::spawn(&self.c, &self.ns, NODE, &args);
    }

    fn proxy_log(&self) -> String {
        let text = std::fs::read_to_string(common::proxy::log_path(&self.c)).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The mode's rules as its tool prints them.
    fn rules(&self) -> String {
        match self.mode {
            "iptables" => self.ns.exec_ok("iptables-save", &[]),
            _ => self.ns.exec_ok("nft", &["list", "ruleset"]),
        }
    }

    /// `(iptables, nftables)`: the text that says the same in this mode's rules.
    fn pick(&self, texts: (&'static str, &'static str)) -> &'static str {
        if self.mode == "iptables" { texts.0 } else { texts.1 }
    }

    async fn service(&self, name: &str, spec: Value) -> Value {
        let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
        self.c.create("/api/v1/namespaces/default/services", &body).await
    }

    /// Create or replace the Service's one EndpointSlice: (ip, node, ready) each.
    async fn endpoints(&self, service: &str, eps: &[(&str, &str, bool)]) {
        let endpoints: Vec<Value> = eps
            .iter()
            .map(|(ip, node, ready)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}))
            .collect();
        let path = format!("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/{service}-1");
        let mut body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints});
        let (status, current) = self.c.get(&path).await;
        if status == StatusCode::OK {
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            let (status, answer) = self.c.put(&path, &body).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        } else {
            self.c.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", &body).await;
        }
    }
}

fn http_port() -> Value {
    json!([{"name": "http", "port": 80, "targetPort": 8080}])
}

/// Random balancing over the ready endpoints only, on the ClusterIP and the NodePort
/// (node address and 127.0.0.1); no ready endpoint means the connection is refused.
async fn cluster_ip_and_node_port_reach_ready_endpoints_only(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _b: Vec<Backend> = ["10.1.0.1", "10.1.0.2", "10.1.0.3"].iter().map(|ip| Backend::start(&env.ns, ip)).collect();
    let svc = env.service("web", json!({"type": "NodePort", "clusterIP": "10.96.0.50", "ports": http_port()})).await;
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort allocated");
    env.endpoints("web", &[("10.1.0.1", NODE, true), ("10.1.0.2", NODE, false), ("10.1.0.3", "node-b", true)]).await;
    wait_answer(&env, "10.96.0.50:80", |r| r.is_ok(), "the ClusterIP to answer").await;
    for addr in ["10.96.0.50:80".to_string(), format!("{NODE_IP}:{node_port}"), format!("127.0.0.1:{node_port}")] {
        let seen = spread(&env.ns, &addr, 40);
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(names, ["10.1.0.1", "10.1.0.3"], "{addr}: {seen:?}");
    }
    env.endpoints("web", &[("10.1.0.1", NODE, false), ("10.1.0.2", NODE, false)]).await;
    let refused = |r: &Result<String, std::io::ErrorKind>| *r == Err(std::io::ErrorKind::ConnectionRefused);
    wait_answer(&env, "10.96.0.50:80", refused, "no ready endpoint to REJECT").await;
    assert!(refused(&ask(&env.ns, &format!("{NODE_IP}:{node_port}"))));
    let save = env.rules();
    assert!(save.contains("default/web:http has no endpoints"), "{save}");
    env.endpoints("web", &[("10.1.0.2", NODE, true)]).await;
    wait_answer(&env, "10.96.0.50:80", |r| r.as_deref() == Ok("10.1.0.2"), "the endpoint turned ready").await;
}

/// ClientIP affinity: every connection from one client lands on the same endpoint.
async fn client_ip_affinity_sticks(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _b: Vec<Backend> = ["10.1.1.1", "10.1.1.2", "10.1.1.3"].iter().map(|ip| Backend::start(&env.ns, ip)).collect();
    env.service(
        "sticky",
        json!({"clusterIP": "10.96.0.51", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": http_port()}),
    )
    .await;
    env.endpoints("sticky", &[("10.1.1.1", NODE, true), ("10.1.1.2", NODE, true), ("10.1.1.3", NODE, true)]).await;
    wait_answer(&env, "10.96.0.51:80", |r| r.is_ok(), "the ClusterIP to answer").await;
    let seen = spread(&env.ns, "10.96.0.51:80", 30);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(env.rules().contains(env.pick(("--seconds 60 --reap", "timeout 1m"))));
}

/// Deleting a Service removes its chains; `--cleanup` removes everything the proxy made.
async fn stale_chains_go_and_cleanup_removes_all(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _b = Backend::start(&env.ns, "10.1.2.1");
    env.service("gone", json!({"clusterIP": "10.96.0.52", "ports": http_port()})).await;
    env.service("kept", json!({"clusterIP": "10.96.0.53", "ports": http_port()})).await;
    env.endpoints("gone", &[("10.1.2.1", NODE, true)]).await;
    wait_answer(&env, "10.96.0.52:80", |r| r.is_ok(), "the ClusterIP to answer").await;
    let before = env.rules();
    // (nftables: the service chain of default/gone's port "http" and its endpoint chains)
    let (svc, sep) =
        (env.pick((":KUBE-SVC-", "-default/gone/tcp/http {")), env.pick((":KUBE-SEP-", "-default/gone/tcp/http__")));
    assert!(before.contains(svc) && before.contains(sep), "{before}");
    assert!(before.contains("default/kept:http has no endpoints"), "{before}");
    let (status, _) = env.c.delete("/api/v1/namespaces/default/services/gone").await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + WAIT;
    while env.rules().contains(svc) {
        assert!(std::time::Instant::now() < deadline, "stale chains stay:\n{}", env.rules());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = env.rules();
    assert!(!after.contains(sep) && !after.contains("10.96.0.52"), "{after}");
    let health = http_get(&env.ns, "127.0.0.1:10256", "/healthz");
    assert!(health.starts_with("HTTP/1.0 200") && health.contains("\"lastUpdated\":\"20"), "{health}");
    let metrics = http_get(&env.ns, "127.0.0.1:10249", "/metrics");
    assert!(metrics.contains("kubeproxy_sync_proxy_rules_iptables_total "), "{metrics}");
    env.ns.kill(env.proxy);
    let out = env
        .ns
        .command(env!("CARGO_BIN_EXE_ferrokube"))
        .args(["proxy", "--cleanup"])
        .output()
        .expect("running the cleanup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // both modes' rules go, whichever mode ran
    let clean = env.ns.exec_ok("iptables-save", &[]) + &env.ns.exec_ok("nft", &["list", "ruleset"]);
    assert!(!clean.contains("KUBE-") && !clean.contains("kube-proxy"), "{clean}");
}

/// A restarted proxy rewrites its rules without flushing them: a connection made
/// before keeps working across the restart, and new connections work all along.
async fn restart_keeps_established_connections(mode: &'static str) {
    let mut env = ProxyEnv::start(mode).await;
    let _b: Vec<Backend> = ["10.1.3.1", "10.1.3.2"].iter().map(|ip| Backend::start(&env.ns, ip)).collect();
    env.service("steady", json!({"clusterIP": "10.96.0.54", "ports": http_port()})).await;
    env.endpoints("steady", &[("10.1.3.1", NODE, true), ("10.1.3.2", NODE, true)]).await;
    wait_answer(&env, "10.96.0.54:80", |r| r.is_ok(), "the ClusterIP to answer").await;
    let addr: SocketAddr = "10.96.0.54:80".parse().expect("address");
    let conn = env.ns.run_in(|| TcpStream::connect(addr)).expect("connecting");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut who = String::new();
    reader.read_line(&mut who).expect("greeting");
    env.ns.kill(env.proxy);
    assert!(ask(&env.ns, "10.96.0.54:80").is_ok(), "rules stay while the proxy is down");
    env.start_proxy();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !env.proxy_log().contains("synced rules") {
        assert!(std::time::Instant::now() < deadline, "the restarted proxy did not sync:\n{}", env.proxy_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(&conn, "still there").expect("writing after the restart");
    let mut line = String::new();
    reader.read_line(&mut line).expect("the echo after the restart");
    assert_eq!(line.trim(), format!("{} still there", who.trim()));
}

/// Rules someone else removes come back at the next `--iptables-sync-period` check with
/// no change to any Service (everything else is rewritten only hourly): the iptables
/// mode's jumps from a flushed nat table, the nftables mode's deleted table.
async fn removed_rules_come_back_at_the_next_sync_period(mode: &'static str) {
    let mut env = ProxyEnv::start(mode).await;
    env.ns.kill(env.proxy);
    env.start_proxy_with(&["--iptables-sync-period=1s"]);
    let _b = Backend::start(&env.ns, "10.1.9.1");
    env.service("back", json!({"clusterIP": "10.96.0.62", "ports": http_port()})).await;
    env.endpoints("back", &[("10.1.9.1", NODE, true)]).await;
    wait_answer(&env, "10.96.0.62:80", |r| r.is_ok(), "the ClusterIP").await;
    // periodic syncs with nothing missing write only what changed: one full sync, at start
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let log = || std::fs::read_to_string(common::proxy::log_path(&env.c)).unwrap_or_default();
    assert_eq!(log().matches("full=true").count(), 1, "{}", env.proxy_log());
    assert!(log().matches("synced rules").count() >= 4, "a sync each period:\n{}", env.proxy_log());
    match mode {
        "iptables" => env.ns.exec_ok("iptables", &["-t", "nat", "-F"]),
        _ => env.ns.exec_ok("nft", &["delete", "table", "ip", "kube-proxy"]),
    };
    assert!(ask(&env.ns, "10.96.0.62:80").is_err(), "the rules are gone:\n{}", env.rules());
    wait_answer(&env, "10.96.0.62:80", |r| r.as_deref() == Ok("10.1.9.1"), "the rules back").await;
    assert!(log().contains("our rules are gone from the kernel; rewriting everything"), "{}", env.proxy_log());
    assert_eq!(log().matches("full=true").count(), 2, "{}", env.proxy_log());
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets a healthCheckNodePort
/// from the API server, and the proxy answers on it as upstream's: 200 with this node's
/// ready endpoint count while it has some, 503 with 0 when they are all elsewhere, and
/// nothing once the Service is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_node_port_reports_local_endpoints() {
    let env = ProxyEnv::start("nftables").await;
    let svc = env
        .service(
            "hc",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.63", "externalTrafficPolicy": "Local", "ports": http_port()}),
        )
        .await;
    let hc = svc["spec"]["healthCheckNodePort"].as_u64().expect("a healthCheckNodePort");
    let addr = format!("{NODE_IP}:{hc}");
    let get = || {
        let to: SocketAddr = addr.parse().expect("address");
        let mut conn = env.ns.run_in(|| TcpStream::connect_timeout(&to, Duration::from_secs(1))).ok()?;
        write!(conn, "GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut conn, &mut answer).ok()?;
        Some(answer)
    };
    let wait_for = |want: &'static str, count: &'static str| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let got = get();
            if got.as_deref().is_some_and(|a| a.starts_with(want) && a.contains(count)) {
                return got.unwrap_or_default();
            }
            assert!(std::time::Instant::now() < deadline, "{want}: got {got:?}\n{}", env.proxy_log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    env.endpoints("hc", &[("10.1.10.1", NODE, true), ("10.1.10.2", NODE, true), ("10.1.10.3", "node-b", true)]).await;
    let ok = wait_for("HTTP/1.0 200", "\"localEndpoints\": 2");
    assert!(ok.contains("x-load-balancing-endpoint-weight: 2"), "{ok}");
    assert!(ok.contains("\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"hc\""), "{ok}");
    assert!(ok.contains("\"serviceProxyHealthy\": true"), "{ok}");
    env.endpoints("hc", &[("10.1.10.3", "node-b", true)]).await;
    wait_for("HTTP/1.0 503", "\"localEndpoints\": 0");
    env.c.delete("/api/v1/namespaces/default/services/hc").await;
    let deadline = std::time::Instant::now() + WAIT;
    while get().is_some() {
        assert!(std::time::Instant::now() < deadline, "the health check outlived its Service");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Switching a node from iptables to nftables mode: the new mode's first sync removes
/// the old mode's chains (they would catch the traffic first), and back again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_removes_the_other_modes_rules() {
    let mut env = ProxyEnv::start("iptables").await;
    let _b = Backend::start(&env.ns, "10.1.7.1");
    env.service("switch", json!({"clusterIP": "10.96.0.60", "ports": http_port()})).await;
    env.endpoints("switch", &[("10.1.7.1", NODE, true)]).await;
    wait_answer(&env, "10.96.0.60:80", |r| r.is_ok(), "the ClusterIP in iptables mode").await;
    for (mode, gone, other_tool) in
        [("nftables", "KUBE-SVC-", ["iptables-save", ""]), ("iptables", "table ip kube-proxy", ["nft", "list ruleset"])]
    {
        env.ns.kill(env.proxy);
        env.mode = mode;
        env.start_proxy();
        let other = || {
            let args: Vec<&str> = other_tool[1].split_whitespace().collect();
            env.ns.exec_ok(other_tool[0], &args)
        };
        let deadline = std::time::Instant::now() + WAIT;
        while other().contains(gone) || !env.rules().contains("10.96.0.60") {
            assert!(std::time::Instant::now() < deadline, "{mode}: the other mode's rules stay:\n{}", other());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // (iptables mode adds the jumps from the built-in chains just after its chains)
        wait_answer(&env, "10.96.0.60:80", |r| r.as_deref() == Ok("10.1.7.1"), mode).await;
    }
}

/// nftables mode: when a partial sync fails (here: someone deleted the proxy's table, so
/// the changed chains' stale neighbours and the maps are gone), the next sync is a full
/// one that lists the kernel and writes everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_failed_partial_sync_is_followed_by_a_full_one() {
    let env = ProxyEnv::start("nftables").await;
    let _b: Vec<Backend> = ["10.1.8.1", "10.1.8.2"].iter().map(|ip| Backend::start(&env.ns, ip)).collect();
    env.service("repair", json!({"clusterIP": "10.96.0.61", "ports": http_port()})).await;
    env.endpoints("repair", &[("10.1.8.1", NODE, true)]).await;
    wait_answer(&env, "10.96.0.61:80", |r| r.as_deref() == Ok("10.1.8.1"), "the first endpoint").await;
    let log = || std::fs::read_to_string(common::proxy::log_path(&env.c)).unwrap_or_default();
    // a second endpoint is an incremental sync: a netlink batch, not nft
    env.endpoints("repair", &[("10.1.8.1", NODE, true), ("10.1.8.2", NODE, true)]).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !log().contains("via=\"netlink\"") {
        assert!(std::time::Instant::now() < deadline, "no netlink sync:\n{}", env.proxy_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.ns.exec_ok("nft", &["delete", "table", "ip", "kube-proxy"]);
    env.endpoints("repair", &[("10.1.8.2", NODE, true)]).await;
    wait_answer(&env, "10.96.0.61:80", |r| r.as_deref() == Ok("10.1.8.2"), "the rewritten table").await;
    // the kernel refused the batch, nft the same transaction, and a full sync repaired it
    assert!(log().contains("netlink batch refused; trying nft"), "{}", env.proxy_log());
    assert!(log().contains("sync failed"), "the partial sync must have failed:\n{}", env.proxy_log());
}

/// internalTrafficPolicy: Local sends the ClusterIP only to this node's endpoints;
/// externalTrafficPolicy: Local sends outside clients (from another namespace, over a
/// veth) to local endpoints only, and drops them on a node with none.
async fn local_traffic_policies(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let client = &env.outside;
    let _b: Vec<Backend> = ["10.1.4.1", "10.1.4.2"].iter().map(|ip| Backend::start(&env.ns, ip)).collect();
    env.service("internal", json!({"clusterIP": "10.96.0.55", "internalTrafficPolicy": "Local", "ports": http_port()}))
        .await;
    env.endpoints("internal", &[("10.1.4.1", NODE, true), ("10.1.4.2", "node-b", true)]).await;
    let ext = env
        .service("external", json!({"type": "NodePort", "clusterIP": "10.96.0.56", "externalTrafficPolicy": "Local", "ports": http_port()}))
        .await;
    let node_port = ext["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    env.endpoints("external", &[("10.1.4.1", NODE, true), ("10.1.4.2", "node-b", true)]).await;
    wait_answer(&env, "10.96.0.55:80", |r| r.is_ok(), "the ClusterIP to answer").await;
    let seen = spread(&env.ns, "10.96.0.55:80", 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["10.1.4.1"], "{seen:?}");
    let from_outside = format!("192.168.78.1:{node_port}");
    let deadline = std::time::Instant::now() + WAIT;
    while ask(client, &from_outside).is_err() {
        assert!(std::time::Instant::now() < deadline, "the NodePort from outside:\n{}", env.rules());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = spread(client, &from_outside, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["10.1.4.1"], "{seen:?}");
    // the node itself still reaches every endpoint through the NodePort, as upstream
    let seen = spread(&env.ns, &format!("{NODE_IP}:{node_port}"), 30);
    assert_eq!(seen.len(), 2, "{seen:?}");
    env.endpoints("external", &[("10.1.4.2", "node-b", true)]).await;
    let dropped =
        |r: &Result<String, std::io::ErrorKind>| r.is_err() && *r != Err(std::io::ErrorKind::ConnectionRefused);
    let deadline = std::time::Instant::now() + WAIT;
    while !dropped(&ask(client, &from_outside)) {
        assert!(std::time::Instant::now() < deadline, "no local endpoint must drop:\n{}", env.rules());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.rules().contains("default/external:http has no local endpoints"));
}

/// A LoadBalancer Service gets a NodePort that works and, with no cloud provider, an
/// empty status.loadBalancer (pending), as upstream.
async fn load_balancer_gets_a_working_node_port_and_stays_pending(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _b = Backend::start(&env.ns, "10.1.5.1");
    let svc = env.service("lb", json!({"type": "LoadBalancer", "clusterIP": "10.96.0.57", "ports": http_port()})).await;
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort for a LoadBalancer");
    env.endpoints("lb", &[("10.1.5.1", NODE, true)]).await;
    wait_answer(&env, &format!("{NODE_IP}:{node_port}"), |r| r.as_deref() == Ok("10.1.5.1"), "the NodePort").await;
    let got = env.c.must_get("/api/v1/namespaces/default/services/lb").await;
    let ingress = &got["status"]["loadBalancer"]["ingress"];
    assert!(ingress.is_null() || ingress.as_array().is_some_and(Vec::is_empty), "{got}");
    let out = env.c.kubectl_ok(KUBECTL_VERSIONS[1], &["get", "service", "lb", "--no-headers"]);
    assert!(out.contains("<pending>"), "{out}");
}

/// Bad input: an endpoint with a malformed address is skipped (the others still serve,
/// no rule is half-written), and a slice without the Service's port (a targetPort no
/// pod declares) leaves the Service without endpoints: rejected, as upstream.
async fn bad_endpoints_are_skipped_without_breaking_the_rest(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _b = Backend::start(&env.ns, "10.1.6.1");
    env.service("odd", json!({"clusterIP": "10.96.0.58", "ports": http_port()})).await;
    env.endpoints("odd", &[("not-an-ip", NODE, true), ("10.1.6.1", NODE, true), ("300.1.2.3", NODE, true)]).await;
    env.service(
        "portless",
        json!({"clusterIP": "10.96.0.59", "ports": [{"name": "http", "port": 80, "targetPort": "missing"}]}),
    )
    .await;
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "portless-1", "labels": {"kubernetes.io/service-name": "portless"}},
        "addressType": "IPv4", "ports": [], "endpoints": [{"addresses": ["10.1.6.1"], "conditions": {"ready": true}}]});
    env.c.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", &slice).await;
    wait_answer(&env, "10.96.0.58:80", |r| r.as_deref() == Ok("10.1.6.1"), "the good endpoint").await;
    let seen = spread(&env.ns, "10.96.0.58:80", 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["10.1.6.1"], "{seen:?}");
    // the two Services may land in different syncs
    let refused = |r: &Result<String, std::io::ErrorKind>| r == &Err(std::io::ErrorKind::ConnectionRefused);
    wait_answer(&env, "10.96.0.59:80", refused, "a rejection").await;
    let save = env.rules();
    assert!(!save.contains("not-an-ip") && !save.contains("300.1.2.3"), "{save}");
    assert!(save.contains("default/portless:http has no endpoints"), "{save}");
    assert!(env.ns.alive(env.proxy), "the proxy survives bad input");
}

/// A pod with label app=web serving its own name over HTTP on port 8080 (`http`); ready
/// only when `ready` (its readiness probe fails otherwise).
fn web_pod(name: &str, ready: bool) -> Value {
    let www = format!("mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www");
    let mut probe = if ready { json!({"tcpSocket": {"port": 8080}}) } else { json!({"exec": {"command": ["false"]}}) };
    probe["periodSeconds"] = json!(1);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", www],
                "ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe}]}})
}

/// Real containers behind the proxy: a node (containerd and kubelet) inside the proxy's
/// namespace, the EndpointSlice controller publishing the pods; another pod reaches the
/// ClusterIP, the node reaches the NodePort, and only the ready pod ever answers.
async fn pods_reach_ready_pods_through_cluster_ip_and_node_port(mode: &'static str) {
    let env = ProxyEnv::start(mode).await;
    let _cm = start_controller_manager(&env.c, &[]).await;
    let node = CriNode::start_in(&env.c, NODE, &[], Some(&env.ns.path())).await;
    let svc = env
        .service(
            "web",
            json!({"type": "NodePort", "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        )
        .await;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("a clusterIP").to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    for (name, ready) in [("web-ready", true), ("web-unready", false)] {
        env.c.create("/api/v1/namespaces/default/pods", &web_pod(name, ready)).await;
    }
    let script = format!(
        "while true; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 | tail -1; sleep 0.2; done"
    );
    let client = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"nodeName": NODE, "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}});
    env.c.create("/api/v1/namespaces/default/pods", &client).await;
    let answers = eventually(Duration::from_secs(90), "the client pod to reach the Service", || async {
        let pod = env.c.must_get("/api/v1/namespaces/default/pods/client").await;
        let out = node.container_output(&pod, "main", 0);
        (out.lines().filter(|l| l.trim() == "web-ready").count() >= 5).then_some(out)
    })
    .await;
    let slices = env.c.must_get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices").await;
    let pods = env.c.must_get("/api/v1/namespaces/default/pods").await;
    assert!(!answers.contains("web-unready"), "{answers}\nslices: {slices}\npods: {pods}\nproxy:\n{}", env.proxy_log());
    for _ in 0..10 {
        let page = http_get(&env.ns, &format!("{NODE_IP}:{node_port}"), "/");
        assert!(page.ends_with("web-ready\n"), "{page}");
    }
    drop(node);
}
