//! `cargo bench --bench scheduler`: how fast the release `ferrokube scheduler` places pods.
//!
//! Starts a private etcd, the release API server and the release scheduler (a separate
//! process, leader election on as by default), creates `BENCH_NODES` nodes (default 1,000;
//! objects with allocatable, no kubelet), then `BENCH_SCHED_PODS` pending pods (default
//! 10,000) with 16 concurrent clients, and follows the pods with a watch. Reported:
//! pods scheduled per second, from the first create to the last binding seen on the
//! watch, and p50/p99 of creation → binding, each pod's time measured on the client
//! from the end of its create request to the arrival of the watch event that shows it
//! bound (creationTimestamp has whole seconds only), plus the scheduler's CPU time.
//! Then a backlog: `BENCH_SCHED_PODS` more pods created while no scheduler runs, and a
//! fresh scheduler started: its throughput with a full queue (as upstream's
//! scheduler_perf measures), which the first phase cannot show when the scheduler
//! keeps up with the creates. Last, on a fresh cluster, the fake kubelet
//! (`ferrokube kubelet --runtime=fake --fake-nodes=BENCH_FAKE_NODES`, default 1,000; 0
//! skips it) registers its nodes and runs the same number of pods: creation → bound and
//! → Running, to see whether the kubelet keeps up with the scheduler.
//! `BENCH_FAKE_ONLY=1` runs that phase alone; `BENCH_FERROKUBE=PATH` runs another
//! ferrokube binary. `BENCH_SCHED_LOG=FILE` / `BENCH_SERVER_LOG=FILE` / `BENCH_KUBELET_LOG=FILE` keep the
//! schedulers' / the API server's / the fake kubelet's warnings.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::{Proc, client, cpu, env_usize as env_or, free_port as port, wait_for};

/// Run `n` jobs over 16 clients; `job(client, i)`.
async fn fan_out<F, Fut>(n: usize, job: F)
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let job = Arc::new(job);
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let job = job.clone();
            tokio::spawn(async move {
                let c = client();
                for i in (w..n).step_by(16) {
                    job(c.clone(), i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Where the schedulers' warnings go: `$BENCH_SCHED_LOG`, else nowhere.
fn log_file() -> Stdio {
    common::env_log("BENCH_SCHED_LOG")
}

/// The release scheduler, waited for until it is synced and leading.
async fn start_scheduler(exe: &str, kubeconfig: &std::path::Path, port: u16) -> Proc {
    let scheduler = Proc(
        Command::new(exe)
            .args(["scheduler", &format!("--kubeconfig={}", kubeconfig.display())])
            .arg(format!("--secure-port={port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file())
            .spawn()
            .expect("start the scheduler"),
    );
    let base = format!("https://127.0.0.1:{port}");
    wait_for(&format!("{base}/readyz"), "ok").await;
    wait_for(&format!("{base}/metrics"), "leader_election_master_status{name=\"kube-scheduler\"} 1").await;
    scheduler
}

/// When each pod was first seen bound, and first seen Running.
#[derive(Default)]
struct Seen {
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// A watch on the namespace's pods from now: a task ending when `pods` pods were seen
/// bound (or, with `until_running`, Running), with when each was.
async fn watch_pods(
    c: &reqwest::Client,
    pods_url: &str,
    pods: usize,
    until_running: bool,
) -> tokio::task::JoinHandle<Seen> {
    let list: serde_json::Value = c.get(pods_url).send().await.expect("list").json().await.expect("json");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let mut watch = c.get(format!("{pods_url}?watch=1&resourceVersion={rv}")).send().await.expect("watch");
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut buf = Vec::new();
        while if until_running { seen.running.len() } else { seen.bound.len() } < pods {
            let Ok(Some(chunk)) = watch.chunk().await else { panic!("the watch ended") };
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
                let obj = &ev["object"];
                let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                if obj["status"]["phase"] == "Running" {
                    seen.running.entry(name.clone()).or_insert(now);
                }
                if obj["spec"]["nodeName"].is_string() {
                    seen.bound.entry(name).or_insert(now);
                }
            }
        }
        seen
    })
}

async fn watch_bindings(
    c: &reqwest::Client,
    pods_url: &str,
    pods: usize,
) -> tokio::task::JoinHandle<HashMap<String, Instant>> {
    let seen = watch_pods(c, pods_url, pods, false).await;
    tokio::spawn(async move { seen.await.expect("watch").bound })
}

/// Milliseconds from `from` to `to` for each pod in both, sorted.
fn latencies(from: &HashMap<String, Instant>, to: &HashMap<String, Instant>) -> Vec<f64> {
    let mut ms: Vec<f64> = to
        .iter()
        .filter_map(|(name, at)| Some(at.saturating_duration_since(*from.get(name)?).as_secs_f64() * 1000.0))
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn bench_pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

async fn create_namespace(base: &str, ns: &str) {
    let _ = client()
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .send()
        .await;
}

/// Create `n` pods in `ns` with 16 clients; when each create returned.
async fn create_pods(base: &str, ns: &str, n: usize) -> HashMap<String, Instant> {
    create_namespace(base, ns).await;
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (url, created) = (Arc::new(format!("{base}/api/v1/namespaces/{ns}/pods")), created_at.clone());
    fan_out(n, move |c, i| {
        let (url, created) = (url.clone(), created.clone());
        async move {
            let name = format!("pod-{i:05}");
            let r = c.post(url.as_str()).json(&bench_pod(&name)).send().await.expect("create pod");
            assert!(r.status().is_success(), "pod create: {}", r.status());
            created.lock().expect("lock").insert(name, Instant::now());
        }
    })
    .await;
    created_at.lock().expect("lock").clone()
}

#[tokio::main]
async fn main() {
    let nodes = env_or("BENCH_NODES", 1000);
    let pods = env_or("BENCH_SCHED_PODS", 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let sched_port = port();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let etcd_pid = _etcd.0.id();
    let exe = &common::ferrokube_exe();
    if std::env::var_os("BENCH_FAKE_ONLY").is_some() {
        fake_kubelet_phase(exe, pods, &[]).await;
        return;
    }
    let (server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;

    let started = Instant::now();
    let nodes_url = Arc::new(format!("{base}/api/v1/nodes"));
    let b = Arc::new(base.clone());
    fan_out(nodes, move |c, i| {
        let (url, base) = (nodes_url.clone(), b.clone());
        async move {
            let name = format!("node-{i:05}");
            let node = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}}});
            let r = c.post(url.as_str()).json(&node).send().await.expect("create node");
            assert!(r.status().is_success(), "node create: {}", r.status());
            let alloc = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
            let r = c
                .patch(format!("{base}/api/v1/nodes/{name}/status"))
                .header("Content-Type", "application/merge-patch+json")
                .json(&json!({"status": {"allocatable": alloc, "capacity": alloc}}))
                .send()
                .await
                .expect("node status");
            assert!(r.status().is_success(), "node status: {}", r.status());
        }
    })
    .await;
    println!("created {nodes} nodes in {:.1} s", started.elapsed().as_secs_f64());

    let scheduler = start_scheduler(exe, &kubeconfig, sched_port).await;
    // phase 1: the scheduler places pods while they are being created
    let c = client();
    let pods_url = format!("{base}/api/v1/namespaces/bench-sched/pods");
    create_namespace(&base, "bench-sched").await;
    let watcher = watch_bindings(&c, &pods_url, pods).await;
    let sched_pid = scheduler.0.id();
    let cpu_before = cpu(sched_pid);
    let first_create = Instant::now();
    let created_at = create_pods(&base, "bench-sched", pods).await;
    let create_secs = first_create.elapsed().as_secs_f64();
    let bound_at =
        tokio::time::timeout(Duration::from_secs(1800), watcher).await.expect("bound in 30 min").expect("watch");
    let last_bound = bound_at.values().max().copied().unwrap_or(first_create);
    let total = (last_bound - first_create).as_secs_f64();
    let latencies = latencies(&created_at, &bound_at);
    let sched_cpu = cpu(sched_pid) - cpu_before;

    // phase 2: a backlog of pods created while no scheduler runs, placed by a fresh one
    // (the first releases its lease on SIGTERM, so the second leads at once)
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sched_pid as i32, libc::SIGTERM) };
    let mut scheduler = scheduler;
    let _ = scheduler.0.wait();
    drop(scheduler);
    let backlog_url = format!("{base}/api/v1/namespaces/bench-backlog/pods");
    create_pods(&base, "bench-backlog", pods).await;
    let watcher = watch_bindings(&c, &backlog_url, pods).await;
    let sched_started = Instant::now();
    let (server_cpu, etcd_cpu) = (cpu(server.0.id()), cpu(etcd_pid));
    let scheduler = start_scheduler(exe, &kubeconfig, sched_port).await;
    let backlog_sched_pid = scheduler.0.id();
    let leading = Instant::now();
    let bound_at =
        tokio::time::timeout(Duration::from_secs(1800), watcher).await.expect("bound in 30 min").expect("watch");
    let last_bound = bound_at.values().max().copied().unwrap_or(leading);
    let first_bound = bound_at.values().min().copied().unwrap_or(leading);
    let per_pod = |secs: f64| format!("{:.2}", secs * 1000.0 / pods as f64);
    let cpu_split = [
        ("  scheduler", per_pod(cpu(backlog_sched_pid))),
        ("  API server", per_pod(cpu(server.0.id()) - server_cpu)),
        ("  etcd", per_pod(cpu(etcd_pid) - etcd_cpu)),
    ];
    drop(scheduler);

    println!("\nscheduler benchmark: {nodes} nodes, {pods} pods, 16 creating clients\n");
    println!("{:<52} {:>10}", "pods created per second", format!("{:.0}", pods as f64 / create_secs));
    println!(
        "{:<52} {:>10}",
        "pods scheduled per second (first create → last bind)",
        format!("{:.0}", pods as f64 / total)
    );
    println!("{:<52} {:>10}", "create → bound p50 (ms)", format!("{:.0}", percentile(&latencies, 0.5)));
    println!("{:<52} {:>10}", "create → bound p99 (ms)", format!("{:.0}", percentile(&latencies, 0.99)));
    println!("{:<52} {:>10}", "create → bound max (ms)", format!("{:.0}", latencies.last().copied().unwrap_or(0.0)));
    println!("{:<52} {:>10}", "scheduler CPU per pod (ms)", format!("{:.2}", sched_cpu * 1000.0 / pods as f64));
    println!("\nbacklog: {pods} pending pods, then a fresh scheduler\n");
    println!(
        "{:<52} {:>10}",
        "start → synced and leading (ms)",
        format!("{:.0}", (leading - sched_started).as_secs_f64() * 1000.0)
    );
    println!(
        "{:<52} {:>10}",
        "pods scheduled per second (first → last bind)",
        format!("{:.0}", pods as f64 / (last_bound - first_bound).as_secs_f64())
    );
    println!(
        "{:<52} {:>10}",
        "pods scheduled per second (start → last bind)",
        format!("{:.0}", pods as f64 / (last_bound - sched_started).as_secs_f64())
    );
    println!("CPU per pod placed from the backlog (ms; 2 cores shared):");
    for (who, ms) in cpu_split {
        println!("{who:<52} {ms:>10}");
    }
    drop((server, _etcd));
    fake_kubelet_phase(exe, pods, &latencies).await;
}

/// The fake kubelet playing `nodes` nodes of 32 CPUs and 128 GiB, its pods Running at
/// once (`--fake-start-delay=0s`).
fn start_fake_kubelet(exe: &str, dir: &std::path::Path, kubeconfig: &std::path::Path, nodes: usize) -> Proc {
    Proc(
        Command::new(exe)
            .args(["kubelet", "--runtime=fake", "--node-name=node", "--port=0", "--fake-start-delay=0s"])
            .args(["--fake-cpu=32", "--fake-memory=128Gi"])
            .arg(format!("--fake-nodes={nodes}"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--pod-logs-dir={}", dir.join("pod-logs").display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            // `BENCH_KUBELET_LOG=FILE` keeps its warnings
            .stderr(common::env_log("BENCH_KUBELET_LOG"))
            .spawn()
            .expect("start the fake kubelet"),
    )
}

/// Wait until `nodes` nodes report Ready.
async fn wait_nodes_ready(base: &str, nodes: usize) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let list: serde_json::Value =
            c.get(format!("{base}/api/v1/nodes")).send().await.expect("list nodes").json().await.expect("json");
        let ready = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|n| {
                        n["status"]["conditions"]
                            .as_array()
                            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready >= nodes {
            return;
        }
        assert!(Instant::now() < deadline, "only {ready} of {nodes} fake nodes Ready after 10 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Phase 3, on a cluster of its own: `BENCH_FAKE_NODES` nodes (default 1,000) played by
/// one `ferrokube kubelet --runtime=fake`, then `pods` pods created as in phase 1 with
/// the scheduler running; creation → bound and creation → Running from the same watch,
/// against phase 1's scheduler-only `sched_only` latencies. `BENCH_FAKE_NODES=0` skips it.
async fn fake_kubelet_phase(exe: &str, pods: usize, sched_only: &[f64]) {
    let nodes = env_or("BENCH_FAKE_NODES", 1000);
    if nodes == 0 {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (etcd, etcd_url) = common::start_etcd(dir.path());
    let (server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;
    let started = Instant::now();
    let kubelet = start_fake_kubelet(exe, dir.path(), &kubeconfig, nodes);
    wait_nodes_ready(&base, nodes).await;
    let registered = started.elapsed().as_secs_f64();
    let scheduler = start_scheduler(exe, &kubeconfig, port()).await;

    let c = client();
    let pods_url = format!("{base}/api/v1/namespaces/bench-fake/pods");
    create_namespace(&base, "bench-fake").await;
    let watcher = watch_pods(&c, &pods_url, pods, true).await;
    let (kubelet_cpu, server_cpu, etcd_cpu) = (cpu(kubelet.0.id()), cpu(server.0.id()), cpu(etcd.0.id()));
    let first_create = Instant::now();
    let created_at = create_pods(&base, "bench-fake", pods).await;
    let seen =
        tokio::time::timeout(Duration::from_secs(1800), watcher).await.expect("Running in 30 min").expect("watch");
    let rate = |at: &HashMap<String, Instant>| {
        let last = at.values().max().copied().unwrap_or(first_create);
        format!("{:.0}", pods as f64 / (last - first_create).as_secs_f64())
    };
    let per_pod = |secs: f64| format!("{:.2}", secs * 1000.0 / pods as f64);
    let to_bound = latencies(&created_at, &seen.bound);
    let to_running = latencies(&created_at, &seen.running);
    let bound_to_running = latencies(&seen.bound, &seen.running);
    let rows = [
        ("nodes registered and Ready (s)", format!("{registered:.1}")),
        ("pods scheduled per second (first create → last bind)", rate(&seen.bound)),
        ("pods Running per second (first create → last Running)", rate(&seen.running)),
        ("create → bound p50 / p99 (ms), phase 1 without kubelet", p50_p99(sched_only)),
        ("create → bound p50 / p99 (ms)", p50_p99(&to_bound)),
        ("create → Running p50 / p99 (ms)", p50_p99(&to_running)),
        ("bound → Running p50 / p99 (ms)", p50_p99(&bound_to_running)),
        ("fake kubelet CPU per pod (ms)", per_pod(cpu(kubelet.0.id()) - kubelet_cpu)),
        ("API server CPU per pod (ms)", per_pod(cpu(server.0.id()) - server_cpu)),
        ("etcd CPU per pod (ms)", per_pod(cpu(etcd.0.id()) - etcd_cpu)),
    ];
    drop((scheduler, kubelet));
    println!("\nfake kubelet: {nodes} nodes in one process, {pods} pods, start delay 0, its own cluster\n");
    for (what, value) in rows {
        println!("{what:<56} {value:>12}");
    }
}

fn p50_p99(sorted: &[f64]) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    format!("{:.0} / {:.0}", percentile(sorted, 0.5), percentile(sorted, 0.99))
}
