//! `cargo bench --bench apiserver`: ferrokube against raw etcd on the same etcd, in one run.
//!
//! Starts a private etcd and the release server, then measures
//! - raw etcd create-if-absent transactions of 1 KiB values (the transaction a create needs),
//! - creates/s of 1 KiB ConfigMaps and of small Pods through the API, 1 and 16 clients,
//! - updates/s of Deployments, 16 clients each on its own Deployment: PUT of the whole
//!   object against a strategic merge PATCH of one annotation and a server-side apply of
//!   the whole configuration with that annotation changed, in the same run,
//! - what authentication and authorization cost: the same creates through a second
//!   server run with Node,RBAC, a token file and a client CA (`auth.rs`),
//! - p50/p90 latency of a LIST of 10,000 pods (JSON, and as a Table),
//! - the server's resident memory with 10,000 pods stored,
//! - LIST of those pods from the watch cache (resourceVersion=0) and from etcd
//!   (resourceVersionMatch=Exact) in the same run,
//! - watch fan-out: N pod watchers (default 1,000) while 1,000 pods are created: the
//!   time from the last write until every watcher has every event, and the server's
//!   memory per idle watcher.
//!
//! Figures are printed as a table with the ratio to raw etcd; nothing is asserted, since
//! machines are noisy. `BENCH_CREATES`, `BENCH_UPDATES`, `BENCH_PODS`, `BENCH_WATCHERS`
//! and `BENCH_WATCH_PODS` scale the run.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;

#[path = "apiserver/auth.rs"]
mod auth;

/// Makes the HTTP client each simulated client uses (one connection each).
type NewClient = Arc<dyn Fn() -> reqwest::Client + Send + Sync>;

mod common;
use common::{Proc, env_usize, free_port};

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let creates = env_usize("BENCH_CREATES", 2000);
    let updates = env_usize("BENCH_UPDATES", 2000);
    let pods = env_usize("BENCH_PODS", 10_000);
    let watchers = env_usize("BENCH_WATCHERS", 1000);
    let watch_pods = env_usize("BENCH_WATCH_PODS", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let server = spawn_server(&etcd_url, api_port, &dir.path().join("certs"), &[]);
    let base = format!("https://127.0.0.1:{api_port}");
    wait_ready(&base).await;

    println!("ferrokube benchmark (same etcd, same run; {creates} creates per row)\n");
    println!("{:<44} {:>12} {:>10}", "measurement", "value", "vs etcd");
    let mut etcd = etcd_client::Client::connect([etcd_url.as_str()], None).await.expect("etcd");
    let value = vec![b'x'; 1024];
    let pid = server.0.id();
    for clients in [1usize, 16] {
        let raw = raw_etcd_rate(&mut etcd, &value, creates, clients).await;
        row(&format!("raw etcd create txn, 1 KiB, {clients} client(s)"), raw, "/s", None);
        let cpu = cpu_seconds(pid);
        let cm = api_create_rate(&base, creates, clients, "configmaps", configmap).await;
        let cm_cpu = (cpu_seconds(pid) - cpu) / creates as f64 * 1e6;
        row(&format!("ConfigMap 1 KiB creates, {clients} client(s)"), cm, "/s", Some(cm / raw));
        let cpu = cpu_seconds(pid);
        let pod = api_create_rate(&base, creates, clients, "pods", small_pod).await;
        let pod_cpu = (cpu_seconds(pid) - cpu) / creates as f64 * 1e6;
        row(&format!("Pod creates, {clients} client(s)"), pod, "/s", Some(pod / raw));
        row("  server CPU per ConfigMap create", cm_cpu, " us", None);
        row("  server CPU per Pod create", pod_cpu, " us", None);
    }

    auth::auth_cost(&etcd_url, dir.path(), &base, pid, creates).await;

    update_rates(&base, updates, 16).await;

    fill_pods(&base, pods).await;
    row(&format!("server RSS with {pods} pods stored"), rss_mb(server.0.id()), " MB", None);
    let client = http_client();
    let raw = raw_range_ms(&mut etcd, "/registry/pods/bench-list/").await;
    row(&format!("raw etcd range of the {pods} pod keys p50"), raw, " ms", None);
    let url = format!("{base}/api/v1/namespaces/bench-list/pods");
    let (p50, p90, bytes) = list_latency(&client, &url, None).await;
    row(&format!("LIST {pods} pods p50 (JSON, {} MB)", bytes / 1_000_000), p50, " ms", None);
    row(&format!("LIST {pods} pods p90 (JSON)"), p90, " ms", None);
    let (t50, _, _) = list_latency(&client, &url, Some("application/json;as=Table;v=v1;g=meta.k8s.io")).await;
    row(&format!("LIST {pods} pods p50 (Table)"), t50, " ms", None);
    let at: serde_json::Value =
        client.get(format!("{url}?limit=1")).send().await.expect("list").json().await.expect("json");
    let at = at["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let exact = format!("{url}?resourceVersion={at}&resourceVersionMatch=Exact");
    let (from_etcd, _, _) = list_latency(&client, &exact, None).await;
    row(&format!("LIST {pods} pods p50, from etcd (Exact)"), from_etcd, " ms", None);
    // the ratio here is to the list from etcd above
    let (cached, _, _) = list_latency(&client, &format!("{url}?resourceVersion=0"), None).await;
    row(&format!("LIST {pods} pods p50, watch cache (rv=0)"), cached, " ms", Some(cached / from_etcd));
    tokio::time::sleep(Duration::from_secs(2)).await;
    row("server RSS after the lists, 2 s later", rss_mb(server.0.id()), " MB", None);
    watch_fanout(&base, server.0.id(), watchers, watch_pods).await;
}

/// `watchers` pod watchers (HTTP/2, 50 streams per connection) while `n` pods are
/// created: how long after the last write every watcher has every event, and what an
/// idle watcher costs the server.
async fn watch_fanout(base: &str, pid: u32, watchers: usize, n: usize) {
    let ns = "bench-watch";
    let client = http_client();
    ensure_namespace(&client, base, ns).await;
    let url = format!("{base}/api/v1/namespaces/{ns}/pods");
    let list: serde_json::Value = client.get(&url).send().await.expect("list").json().await.expect("json");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mb(pid);
    let conns: Vec<reqwest::Client> = (0..watchers.div_ceil(50).max(1)).map(|_| http_client()).collect();
    let mut streams = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let watch = format!("{url}?watch=1&resourceVersion={rv}");
        let resp = conns[i % conns.len()].get(watch).send().await.expect("watch");
        assert!(resp.status().is_success(), "watch: {}", resp.status());
        streams.push(resp);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_watcher_kb = (rss_mb(pid) - before) * 1024.0 / watchers as f64;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut resp| {
            tokio::spawn(async move {
                let mut lines = 0;
                while lines < n {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => lines += chunk.iter().filter(|b| **b == b'\n').count(),
                        _ => break,
                    }
                }
                (lines, Instant::now())
            })
        })
        .collect();
    let rate = api_create_rate_in(base, ns, n, 16, small_pod).await;
    let last_write = Instant::now();
    let (mut complete, mut last_seen) = (0, last_write);
    for r in readers {
        let (lines, at) = r.await.expect("reader");
        complete += usize::from(lines >= n);
        last_seen = last_seen.max(at);
    }
    println!();
    row(&format!("Pod creates with {watchers} watchers, 16 clients"), rate, "/s", None);
    row(&format!("watchers that got all {n} events"), complete as f64, "", None);
    row("last write -> every watcher has every event", (last_seen - last_write).as_secs_f64() * 1000.0, " ms", None);
    row("server RSS per idle watcher", per_watcher_kb, " KB", None);
}

/// The release server on `port`, quiet, with `extra` flags.
fn spawn_server(etcd_url: &str, port: u16, cert_dir: &std::path::Path, extra: &[String]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_ferrokube"))
            .args(["apiserver", &format!("--etcd-servers={etcd_url}"), &format!("--secure-port={port}")])
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server"),
    )
}

fn row(label: &str, value: f64, unit: &str, ratio: Option<f64>) {
    let ratio = ratio.map(|r| format!("{:.0} %", r * 100.0)).unwrap_or_default();
    println!("{label:<44} {:>9.1}{unit:<3} {ratio:>10}", value);
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client")
}

async fn wait_ready(base: &str) {
    let client = http_client();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server not ready");
}

async fn raw_etcd_rate(etcd: &mut etcd_client::Client, value: &[u8], n: usize, clients: usize) -> f64 {
    let run = format!("{}", fastrand::u64(..));
    let kv = etcd.kv_client();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (mut kv, value, run) = (kv.clone(), value.to_vec(), run.clone());
            tokio::spawn(async move {
                for i in (c..n).step_by(clients) {
                    let key = format!("/bench/raw/{run}/{i}");
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
                        .or_else([TxnOp::get(key.as_str(), None)]);
                    kv.txn(txn).await.expect("txn");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// How a bench client changes its Deployment.
#[derive(Clone, Copy)]
enum Write {
    Put,
    StrategicPatch,
    Apply,
}

/// PUT against strategic-merge PATCH and server-side apply of Deployments, each client
/// updating its own.
async fn update_rates(base: &str, n: usize, clients: usize) {
    let client = http_client();
    let ns = "bench-update";
    ensure_namespace(&client, base, ns).await;
    let url = format!("{base}/apis/apps/v1/namespaces/{ns}/deployments");
    for c in 0..clients {
        let r = client.post(&url).json(&bench_deployment(&format!("d-{c}"))).send().await.expect("create");
        assert!(r.status().is_success(), "deployment create failed: {}", r.status());
    }
    let put = update_rate(&url, n, clients, Write::Put).await;
    row(&format!("Deployment PUT updates, {clients} clients"), put, "/s", None);
    // the ratios here are to the PUT rate above
    let patch = update_rate(&url, n, clients, Write::StrategicPatch).await;
    row(&format!("Deployment strategic PATCHes, {clients} clients"), patch, "/s", Some(patch / put));
    let apply = update_rate(&url, n, clients, Write::Apply).await;
    row(&format!("Deployment server-side applies, {clients} clients"), apply, "/s", Some(apply / put));
}

/// Updates per second, `clients` clients each bumping an annotation on its own
/// Deployment, by PUT of the object it last got back, by a strategic merge patch, or by
/// a forced server-side apply of its whole configuration.
async fn update_rate(url: &str, n: usize, clients: usize, how: Write) -> f64 {
    let client = http_client();
    let mut objects = Vec::with_capacity(clients);
    for c in 0..clients {
        let one = format!("{url}/d-{c}");
        let obj: serde_json::Value = client.get(&one).send().await.expect("get").json().await.expect("json");
        objects.push((one, obj));
    }
    let started = Instant::now();
    let tasks: Vec<_> = objects
        .into_iter()
        .enumerate()
        .map(|(c, (one, mut obj))| {
            tokio::spawn(async move {
                let client = http_client();
                for i in (c..n).step_by(clients) {
                    let req = match how {
                        Write::StrategicPatch => {
                            let body = json!({"metadata": {"annotations": {"bench/n": i.to_string()}}});
                            let smp = "application/strategic-merge-patch+json";
                            client.patch(&one).header("content-type", smp).body(body.to_string())
                        }
                        Write::Apply => {
                            let mut config = bench_deployment(one.rsplit('/').next().unwrap_or_default());
                            config["metadata"]["annotations"]["bench/n"] = json!(i.to_string());
                            let apply = "application/apply-patch+yaml";
                            let url = format!("{one}?fieldManager=bench&force=true");
                            client.patch(url).header("content-type", apply).body(config.to_string())
                        }
                        Write::Put => {
                            obj["metadata"]["annotations"]["bench/n"] = json!(i.to_string());
                            client.put(&one).json(&obj)
                        }
                    };
                    let r = req.send().await.expect("update");
                    assert!(r.status().is_success(), "update failed: {}", r.status());
                    obj = r.json().await.expect("json");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn bench_deployment(name: &str) -> serde_json::Value {
    let pod = small_pod(name);
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "annotations": {"bench/n": "0"}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bench"}},
                    "template": {"metadata": {"labels": {"app": "bench"}}, "spec": pod["spec"].clone()}}})
}

fn configmap(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
           "data": {"payload": "x".repeat(1024 - 120)}})
}

fn small_pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}})
}

async fn ensure_namespace(client: &reqwest::Client, base: &str, ns: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let _ = client.post(format!("{base}/api/v1/namespaces")).json(&body).send().await;
}

async fn api_create_rate(
    base: &str,
    n: usize,
    clients: usize,
    resource: &str,
    make: fn(&str) -> serde_json::Value,
) -> f64 {
    let ns = format!("bench-{resource}-{clients}");
    ensure_namespace(&http_client(), base, &ns).await;
    create_rate(format!("{base}/api/v1/namespaces/{ns}/{resource}"), n, clients, make).await
}

/// Pods created per second into `ns` by `clients` clients.
async fn api_create_rate_in(
    base: &str,
    ns: &str,
    n: usize,
    clients: usize,
    make: fn(&str) -> serde_json::Value,
) -> f64 {
    create_rate(format!("{base}/api/v1/namespaces/{ns}/pods"), n, clients, make).await
}

async fn create_rate(url: String, n: usize, clients: usize, make: fn(&str) -> serde_json::Value) -> f64 {
    create_rate_with(url, n, clients, make, Arc::new(http_client)).await
}

/// Objects created per second at `url` by `clients` clients made by `new_client`.
async fn create_rate_with(
    url: String,
    n: usize,
    clients: usize,
    make: fn(&str) -> serde_json::Value,
    new_client: NewClient,
) -> f64 {
    let url = Arc::new(url);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (url, new_client) = (url.clone(), new_client.clone());
            tokio::spawn(async move {
                // one connection per client, as separate controllers would have
                let client = new_client();
                for i in (c..n).step_by(clients) {
                    let r = client.post(url.as_str()).json(&make(&format!("obj-{i}"))).send().await.expect("post");
                    assert!(r.status().is_success(), "create failed: {}", r.status());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn fill_pods(base: &str, n: usize) {
    let client = http_client();
    ensure_namespace(&client, base, "bench-list").await;
    let url = Arc::new(format!("{base}/api/v1/namespaces/bench-list/pods"));
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http_client();
                for i in (c..n).step_by(16) {
                    let _ = client.post(url.as_str()).json(&small_pod(&format!("pod-{i:05}"))).send().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
}

async fn list_latency(client: &reqwest::Client, url: &str, accept: Option<&str>) -> (f64, f64, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..15 {
        let started = Instant::now();
        let mut req = client.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let body = req.send().await.expect("list").bytes().await.expect("body");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times[times.len() * 9 / 10], bytes)
}

/// User plus system CPU time of a process, from /proc (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the ")" that closes the command name; utime and stime are 14 and 15
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// p50 of reading a key range straight from etcd: the floor for an uncached LIST.
async fn raw_range_ms(etcd: &mut etcd_client::Client, prefix: &str) -> f64 {
    let mut kv = etcd.kv_client().max_decoding_message_size(512 << 20);
    let mut times = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        let opts = etcd_client::GetOptions::new().with_prefix();
        kv.get(prefix, Some(opts)).await.expect("range");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
