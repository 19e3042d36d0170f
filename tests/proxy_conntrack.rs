//! `ferrokube proxy` clears conntrack entries that would black-hole a UDP Service's
//! datagrams (`src/proxy/conntrack.rs`). The proxy runs in a network namespace of the
//! test's own (`common/netns.rs`), whose conntrack table is its own too; backends are UDP
//! echo servers on extra addresses of its `lo`, and the client sends every datagram from
//! one fixed source port, as a resolver reusing its socket does, so each datagram after
//! the first rides the same conntrack entry unless the proxy deletes it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::NetNs;
use common::{Cluster, StatusCode, Value, json};

const NODE: &str = "node-a";
/// Shorter than conntrack's UDP timeouts (30 s, 120 s once both ways were seen), which
/// the polling keeps renewing anyway: only a deleted entry lets the answer change.
const WAIT: Duration = Duration::from_secs(20);

/// A UDP server inside the namespace on `ip:5353` answering every datagram with its own
/// address: a task of the test's runtime, ended when dropped.
struct EchoServer(tokio::task::JoinHandle<()>);

impl EchoServer {
    fn start(ns: &NetNs, ip: &str) -> EchoServer {
        ns.add_local_address(&format!("{ip}/32"));
        let addr: SocketAddr = format!("{ip}:5353").parse().expect("server address");
        let socket = ns.run_in(|| UdpSocket::bind(addr).expect("binding a UDP server"));
        socket.set_nonblocking(true).expect("a non-blocking server socket");
        let socket = tokio::net::UdpSocket::from_std(socket).expect("the server socket in tokio");
        let name = ip.to_string();
        EchoServer(tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(name.as_bytes(), from).await;
            }
        }))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client: a socket inside the namespace bound to one source port for all its
/// datagrams.
struct Client(UdpSocket);

impl Client {
    fn new(ns: &NetNs, source_port: u16) -> Client {
        let socket = ns.run_in(|| UdpSocket::bind(("0.0.0.0", source_port)).expect("binding the client"));
        socket.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
        Client(socket)
    }

    /// One datagram to `to`: the answering server's address, or what went wrong.
    fn ask(&self, to: &str) -> Result<String, std::io::ErrorKind> {
        // blocking: the runtime's other worker keeps serving the echo servers meanwhile
        tokio::task::block_in_place(|| {
            self.0.send_to(b"who?", to).map_err(|e| e.kind())?;
            let mut buf = [0u8; 64];
            let (n, _) = self.0.recv_from(&mut buf).map_err(|e| e.kind())?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    }
}

/// A cluster, the node's namespace (API relayed in) with `ferrokube proxy` inside, and a
/// second namespace on a veth that the service range is routed to, as to a node's default
/// gateway: a datagram no rule DNATs leaves there and is lost.
struct Env {
    c: Cluster,
    ns: NetNs,
    _gateway: NetNs,
    /// The running proxy's handle (`ns.kill`).
    proxy: usize,
    mode: String,
}

impl Env {
    async fn start(mode: &str) -> Env {
        let c = Cluster::start().await;
        let ns = NetNs::new();
        ns.relay_host_port(c.port);
        let gateway = NetNs::new();
        ns.veth_to(&gateway, "192.168.79.1/24", "192.168.79.2/24");
        ns.ip(&["route", "add", "10.96.0.0/12", "via", "192.168.79.2"]);
        let mut env = Env { c, ns, _gateway: gateway, proxy: 0, mode: mode.to_string() };
        env.start_proxy();
        env.wait_log("synced rules").await;
        env
    }

    fn start_proxy(&mut self) {
        let mode = format!("--proxy-mode={}", self.mode);
        let quiet = ["--healthz-bind-address=0.0.0.0:0", "--metrics-bind-address=127.0.0.1:0", &mode];
        self.proxy = common::proxy::spawn(&self.c, &self.ns, NODE, &quiet);
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(common::proxy::log_path(&self.c)).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.proxy_log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the proxy log:\n{}", self.proxy_log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The namespace's conntrack entries to `ip` (`conntrack -L` output).
    fn entries_to(&self, ip: &str) -> String {
        let out = self.ns.exec("conntrack", &["-L", "-p", "udp", "--orig-dst", ip]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn udp_service(&self, name: &str, cluster_ip: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": cluster_ip,
                "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}});
        self.c.create("/api/v1/namespaces/default/services", &body).await;
    }

    /// Create or replace (server-side apply) the Service's one EndpointSlice, every
    /// endpoint ready.
    async fn endpoints(&self, service: &str, ips: &[&str]) {
        let endpoints: Vec<Value> =
            ips.iter().map(|ip| json!({"addresses": [ip], "nodeName": NODE, "conditions": {"ready": true}})).collect();
        let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-1"), "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints});
        let path = format!(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/{service}-1?fieldManager=test&force=true"
        );
        let (status, answer) = self.c.patch(&path, "application/apply-patch+yaml", &body).await;
        assert!(status == StatusCode::OK || status == StatusCode::CREATED, "{status}: {answer}");
    }

    /// A UDP Service `name` at `cluster_ip` with the one endpoint `endpoint`, and a client
    /// (source port `port + 1`) whose flow is DNATed to it: a probe from `port` first waits
    /// for the rules, so the client's flow is DNATed from its first datagram.
    async fn dnatted_flow(&self, name: &str, cluster_ip: &str, endpoint: &str, port: u16) -> Client {
        self.udp_service(name, cluster_ip).await;
        self.endpoints(name, &[endpoint]).await;
        let to = format!("{cluster_ip}:53");
        let probe = Client::new(&self.ns, port);
        self.wait_answer(&probe, &to, |r| r.as_deref() == Ok(endpoint)).await;
        let client = Client::new(&self.ns, port + 1);
        assert_eq!(client.ask(&to).as_deref(), Ok(endpoint));
        let entries = self.entries_to(cluster_ip);
        assert!(entries.contains(&format!("src={endpoint} ")), "the flow is DNATed to {endpoint}: {entries}");
        client
    }

    /// Ask from `client` until `want` holds for the answer.
    async fn wait_answer(&self, client: &Client, to: &str, want: impl Fn(&Result<String, std::io::ErrorKind>) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = client.ask(to);
            if want(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{to} still gives {got:?}\nconntrack:\n{}\nproxy log:\n{}",
                self.ns.exec("conntrack", &["-L"]).stdout.escape_ascii(),
                self.proxy_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

crate::both_proxy_modes!(
    a_flow_to_a_removed_endpoint_moves_to_the_new_one,
    a_flow_to_an_endpoint_removed_while_the_proxy_was_down_moves_after_its_restart,
    a_flow_from_before_the_endpoints_reaches_them_once_they_appear
);

/// The endpoint behind a flow goes (its slice now names another): the next datagram
/// from the same source port reaches the new endpoint, though the old server still
/// answers at its address.
async fn a_flow_to_a_removed_endpoint_moves_to_the_new_one(mode: &str) {
    let env = Env::start(mode).await;
    let (_old, _new) = (EchoServer::start(&env.ns, "10.1.7.1"), EchoServer::start(&env.ns, "10.1.7.2"));
    let client = env.dnatted_flow("dns", "10.96.0.70", "10.1.7.1", 40069).await;
    env.endpoints("dns", &["10.1.7.2"]).await;
    env.wait_answer(&client, "10.96.0.70:53", |r| r.as_deref() == Ok("10.1.7.2")).await;
    assert!(env.proxy_log().contains("cleared stale conntrack entries"));
}

/// The endpoint behind a flow goes while the proxy is down (its rules still DNAT there):
/// the restarted proxy has no earlier state to compare with, so it checks the kernel's
/// entries, and the next datagram from the same source port reaches the new endpoint.
async fn a_flow_to_an_endpoint_removed_while_the_proxy_was_down_moves_after_its_restart(mode: &str) {
    let mut env = Env::start(mode).await;
    let (_old, _new) = (EchoServer::start(&env.ns, "10.1.9.1"), EchoServer::start(&env.ns, "10.1.9.2"));
    let client = env.dnatted_flow("away", "10.96.0.72", "10.1.9.1", 40072).await;
    env.ns.kill(env.proxy);
    env.endpoints("away", &["10.1.9.2"]).await;
    // the proxy is away: nothing moves the flow
    assert_eq!(client.ask("10.96.0.72:53").as_deref(), Ok("10.1.9.1"));
    let before = env.proxy_log().matches("synced rules").count();
    env.start_proxy();
    let deadline = Instant::now() + WAIT;
    while env.proxy_log().matches("synced rules").count() <= before {
        assert!(Instant::now() < deadline, "the restarted proxy did not sync:\n{}", env.proxy_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_answer(&client, "10.96.0.72:53", |r| r.as_deref() == Ok("10.1.9.2")).await;
}

/// A datagram sent before the Service had endpoints (here: before any rule for it
/// existed, so it left undisturbed and made an entry without NAT), then REJECTed while
/// the Service has none: once an endpoint appears, the next datagram from the same
/// source port reaches it.
async fn a_flow_from_before_the_endpoints_reaches_them_once_they_appear(mode: &str) {
    let env = Env::start(mode).await;
    let _server = EchoServer::start(&env.ns, "10.1.8.1");
    let client = Client::new(&env.ns, 40071);
    assert!(client.ask("10.96.0.71:53").is_err(), "nothing answers yet");
    let entry = env.entries_to("10.96.0.71");
    assert!(entry.contains("[UNREPLIED] src=10.96.0.71"), "an entry without NAT: {entry}");
    env.udp_service("late", "10.96.0.71").await;
    let rejected = |r: &Result<String, std::io::ErrorKind>| {
        r.as_ref().is_err_and(|e| !matches!(e, std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    env.wait_answer(&client, "10.96.0.71:53", rejected).await;
    env.endpoints("late", &["10.1.8.1"]).await;
    env.wait_answer(&client, "10.96.0.71:53", |r| r.as_deref() == Ok("10.1.8.1")).await;
}
