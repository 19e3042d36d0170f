//! `cargo bench --bench proxy`: how fast `ferrokube proxy` programs the packet filter
//! for `BENCH_PROXY_SERVICES` (default 1,000) Services × `BENCH_PROXY_ENDPOINTS` (default
//! 10) endpoints from scratch, and then applies one endpoint change among them, in
//! `BENCH_PROXY_MODE` (`iptables`, `nftables`, `nftables-nft` or `all`, the default:
//! each in a fresh namespace, then the ratios). `nftables-nft` is the nftables mode with
//! every sync sent through the `nft` tool (`FERROKUBE_NFT_APPLY=nft`) instead of
//! incremental ones as netlink batches. `BENCH_PROXY_PROTOCOL=UDP` makes the
//! ports UDP, so each sync is followed by the stale-conntrack clean-up, whose time the
//! proxy's log gives too.
//!
//! A private etcd and API server hold the objects; the proxy runs in a network namespace
//! of the bench's own (`tests/common/netns.rs`, the API relayed in), so the host's rules
//! are never touched. Its own log gives each sync's rule-building and iptables-restore
//! times; the bench adds the wall time from the change's write to the sync that applied
//! it. The first sync starts after the informers have listed everything, so the listing
//! is reported apart.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;

use common::{client, env_usize};

/// One "synced rules" line of the proxy's log, as key=value fields.
struct Sync {
    at: Instant,
    fields: Vec<(String, String)>,
}

impl Sync {
    fn get(&self, key: &str) -> &str {
        self.fields.iter().find(|(k, _)| k == key).map_or("?", |(_, v)| v.as_str())
    }
}

fn parse(line: &str, message: &str) -> Option<Sync> {
    let at = Instant::now();
    let rest = line.split_once(message)?.1;
    let fields = rest.split_whitespace().filter_map(|f| f.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
    Some(Sync { at, fields })
}

async fn create_all(base: &str, services: usize, endpoints: usize) {
    let c = client();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (c, base) = (c.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (worker..services).step_by(8) {
                let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": protocol()}]}});
                let r = c.post(format!("{base}/api/v1/namespaces/default/services")).json(&svc).send().await;
                assert!(r.is_ok_and(|r| r.status().is_success()), "creating svc-{i}");
                let r = c
                    .post(format!("{base}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"))
                    .json(&slice(i, endpoints, 0))
                    .send()
                    .await;
                assert!(r.is_ok_and(|r| r.status().is_success()), "creating the slice of svc-{i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a creating task");
    }
}

/// The EndpointSlice of service `i`: `n` ready endpoints; `generation` shifts the first
/// address so a new one replaces it.
fn slice(i: usize, n: usize, generation: usize) -> Value {
    let endpoints: Vec<Value> = (0..n)
        .map(|e| {
            let host = if e == 0 { 200 + generation % 50 } else { e };
            json!({"addresses": [format!("10.{}.{}.{host}", 100 + i / 250, i % 250)], "nodeName": "bench-node",
                   "conditions": {"ready": true}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": protocol()}], "endpoints": endpoints})
}

/// The Services' protocol (`BENCH_PROXY_PROTOCOL`, TCP unless told).
fn protocol() -> String {
    std::env::var("BENCH_PROXY_PROTOCOL").unwrap_or_else(|_| "TCP".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What one mode measured: the full sync's and a change's median wall times (ms).
struct Figures {
    full: f64,
    change: f64,
}

/// The proxy in `mode`, in a namespace of its own, against the API at `base`.
fn start_proxy(ns: &netns::NetNs, mode: &str, kubeconfig: &std::path::Path) -> std::process::Child {
    let (mode, apply) = match mode {
        "nftables-nft" => ("nftables", "nft"),
        other => (other, "netlink"),
    };
    ns.command(common::ferrokube_exe())
        .args([
            "proxy",
            "--hostname-override=bench-node",
            "--cluster-cidr=10.244.0.0/16",
            "--iptables-min-sync-period=0s",
        ])
        .arg(format!("--proxy-mode={mode}"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("FERROKUBE_NFT_APPLY", apply)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the proxy")
}

/// The sync lines of the proxy's log, and when the informers had listed everything.
fn follow(proxy: &mut std::process::Child) -> (mpsc::Receiver<Sync>, mpsc::Receiver<Instant>) {
    let (tx, rx) = mpsc::channel();
    let (listed_tx, listed_rx) = mpsc::channel();
    let stderr = proxy.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("informers synced") {
                let _ = listed_tx.send(Instant::now());
            }
            if let Some(s) = parse(&line, "synced rules") {
                let _ = tx.send(s);
            }
            if let Some(s) = parse(&line, "cleared stale conntrack entries") {
                println!(
                    "  conntrack clean-up: {} filters, {} matched, {} entries deleted, in {} ms",
                    s.get("filters"),
                    s.get("matched"),
                    s.get("deleted"),
                    s.get("took_ms")
                );
            }
        }
    });
    (rx, listed_rx)
}

/// The full sync and `changes` endpoint changes in `mode`; `round` keeps each mode's
/// changes distinct from the previous mode's.
async fn measure(
    mode: &str,
    base: &str,
    kubeconfig: &std::path::Path,
    shape: (usize, usize, usize),
    round: usize,
) -> Figures {
    let (services, endpoints, changes) = shape;
    let ns = netns::NetNs::new();
    let port: u16 = base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the API port");
    ns.relay_host_port(port);
    let mut proxy = start_proxy(&ns, mode, kubeconfig);
    let started = Instant::now();
    let (rx, listed_rx) = follow(&mut proxy);
    let wait = Duration::from_secs(120);
    let first = rx.recv_timeout(wait).expect("the first sync");
    let listed = listed_rx.recv_timeout(wait).expect("the informers' sync");
    let full = (first.at - listed).as_secs_f64() * 1000.0;
    println!(
        "[{mode}] full sync from scratch: {full:.0} ms after the informers listed (list {:.0} ms); \
         rules built in {} ms, applied in {} ms; {} rules, {} chains, {} bytes",
        (listed - started).as_secs_f64() * 1000.0,
        first.get("build_ms"),
        first.get("restore_ms"),
        first.get("rules"),
        first.get("chains_written"),
        first.get("bytes"),
    );
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {}

    let c = client();
    let (mut walls, mut restores, mut builds, mut snapshots) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 1..=changes {
        let i = (n * 7919) % services;
        let path = format!("{base}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/svc-{i}-1");
        let current: Value = c.get(&path).send().await.expect("get").json().await.expect("json");
        let mut body = slice(i, endpoints, round * changes + n);
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        let sent = Instant::now();
        let r = c.put(&path).json(&body).send().await.expect("put");
        assert!(r.status().is_success(), "updating svc-{i}'s slice: {}", r.status());
        let s = rx.recv_timeout(wait).expect("the sync of the change");
        walls.push((s.at - sent).as_secs_f64() * 1000.0);
        restores.push(s.get("restore_ms").parse().unwrap_or(f64::NAN));
        builds.push(s.get("build_ms").parse().unwrap_or(f64::NAN));
        snapshots.push(s.get("snapshot_ms").parse().unwrap_or(f64::NAN));
        if n == 1 {
            println!(
                "[{mode}] one endpoint change: {} chains written, {} deleted, {} bytes",
                s.get("chains_written"),
                s.get("chains_deleted"),
                s.get("bytes")
            );
        }
    }
    let change = median(walls);
    println!(
        "[{mode}] one endpoint change (median of {changes}): {change:.0} ms from the API write to applied; \
         rules built in {:.0} ms ({:.0} ms of it listing the service ports), applied in {:.0} ms",
        median(builds),
        median(snapshots),
        median(restores)
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    Figures { full, change }
}

#[tokio::main]
async fn main() {
    let services = env_usize("BENCH_PROXY_SERVICES", 1000);
    let endpoints = env_usize("BENCH_PROXY_ENDPOINTS", 10);
    let changes = env_usize("BENCH_PROXY_CHANGES", 10);
    let modes: &[&str] = match std::env::var("BENCH_PROXY_MODE").as_deref() {
        Ok("iptables") => &["iptables"],
        Ok("nftables") => &["nftables"],
        Ok("nftables-nft") => &["nftables-nft"],
        _ => &["iptables", "nftables", "nftables-nft"],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = &common::ferrokube_exe();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let (_server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;
    let t = Instant::now();
    create_all(&base, services, endpoints).await;
    println!(
        "\nproxy benchmark: {services} Services × {endpoints} endpoints (created in {:.1}s)",
        t.elapsed().as_secs_f64()
    );
    let mut figures = Vec::new();
    for (round, mode) in modes.iter().enumerate() {
        figures.push(measure(mode, &base, &kubeconfig, (services, endpoints, changes), round).await);
    }
    if let [ipt, nft, via_nft] = figures.as_slice() {
        println!("nftables/iptables: full sync {:.2}, one change {:.2}", nft.full / ipt.full, nft.change / ipt.change);
        println!(
            "nftables netlink/nft tool: full sync {:.2}, one change {:.2}",
            nft.full / via_nft.full,
            nft.change / via_nft.change
        );
    }
}
