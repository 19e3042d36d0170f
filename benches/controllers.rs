//! `cargo bench --bench controllers`: how fast the release controller-manager's
//! Deployment and ReplicaSet controllers converge, and how many API requests they send.
//!
//! Starts a private etcd, the release API server and the release controller-manager
//! (`--controllers=replicaset,deployment`; no scheduler or kubelet, so pods stay Pending
//! and unbound, and are deleted at once). Then:
//!
//! 1. one Deployment scaled 0 → `BENCH_SCALE_PODS` (default 5,000) and back to 0;
//!    converged when its status counts every pod (or none) and the pods exist (or not);
//! 2. `BENCH_DEPLOYMENTS` (default 1,000) Deployments of 3 replicas created by 16
//!    clients; converged when every one reports 3 updated replicas.
//!
//! Reported per phase: seconds to converge, the controller-manager's CPU, and its API
//! requests per pod by verb (its own client counts them: `rest_client_requests_total`
//! on its /metrics). The benchmark's own polling is not counted.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Proc, client, cpu, env_usize, free_port, wait_for};

/// The controller-manager's request counts by verb.
async fn requests(metrics_url: &str) -> BTreeMap<String, u64> {
    let text = client().get(metrics_url).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter_map(|l| l.strip_prefix("rest_client_requests_total{verb=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(verb, n)| (verb.to_string(), n.trim().parse().unwrap_or(0)))
        .collect()
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}})
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.expect("get").json().await.expect("json")
}

/// Poll (every 200 ms) until `done` holds for the JSON at `url`.
async fn until(c: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !done(&get_json(c, url).await) {
        assert!(Instant::now() < deadline, "not converged in 30 min: {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Phase {
    name: String,
    secs: f64,
    cpu: f64,
    pods: usize,
    requests: BTreeMap<String, u64>,
}

/// Runs `work` and measures it against the controller-manager.
async fn phase<F: std::future::Future<Output = ()>>(name: &str, pods: usize, cm: (u32, &str), work: F) -> Phase {
    let (before, cpu_before) = (requests(cm.1).await, cpu(cm.0));
    let started = Instant::now();
    work.await;
    let secs = started.elapsed().as_secs_f64();
    let after = requests(cm.1).await;
    let requests = after.iter().map(|(v, n)| (v.clone(), n - before.get(v).copied().unwrap_or(0))).collect();
    Phase { name: name.to_string(), secs, cpu: cpu(cm.0) - cpu_before, pods, requests }
}

fn report(p: &Phase) {
    let total: u64 = p.requests.values().sum();
    let per_pod = |n: u64| n as f64 / p.pods.max(1) as f64;
    println!("\n{} ({} pods)", p.name, p.pods);
    println!("  {:<44} {:>10.1}", "seconds to converge", p.secs);
    println!("  {:<44} {:>10.2}", "controller-manager CPU seconds", p.cpu);
    println!("  {:<44} {:>10.2}", "API requests per pod (all verbs)", per_pod(total));
    for (verb, n) in &p.requests {
        println!("  {:<44} {:>10.3}", format!("  {verb} per pod ({n} in all)"), per_pod(*n));
    }
}

async fn scale(c: &reqwest::Client, url: &str, replicas: usize) {
    let patch = json!({"spec": {"replicas": replicas}});
    let r =
        c.patch(url).header("Content-Type", "application/merge-patch+json").json(&patch).send().await.expect("scale");
    assert!(r.status().is_success(), "scale: {}", r.status());
}

fn status_counts(d: &Value, n: usize) -> bool {
    let s = &d["status"];
    s["observedGeneration"] == d["metadata"]["generation"]
        && s["replicas"].as_u64().unwrap_or(0) == n as u64
        && s["updatedReplicas"].as_u64().unwrap_or(0) == n as u64
}

fn item_count(list: &Value) -> usize {
    list["items"].as_array().map_or(0, Vec::len)
}

#[tokio::main]
async fn main() {
    let scale_pods = env_usize("BENCH_SCALE_PODS", 5000);
    let deployments = env_usize("BENCH_DEPLOYMENTS", 1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cm_port = free_port();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let exe = env!("CARGO_BIN_EXE_ferrokube");
    let (_server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;
    let cm = Proc(
        Command::new(exe)
            .args(["controller-manager", &format!("--kubeconfig={}", kubeconfig.display())])
            .args(["--controllers=replicaset,deployment", "--leader-elect=false"])
            .arg(format!("--secure-port={cm_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the controller-manager"),
    );
    let metrics = format!("https://127.0.0.1:{cm_port}/metrics");
    wait_for(&metrics, "workqueue_depth{name=\"deployment\"}").await;
    let cm = (cm.0.id(), metrics.as_str());
    let c = client();
    let deploys = format!("{base}/apis/apps/v1/namespaces/default/deployments");
    let pods = format!("{base}/api/v1/namespaces/default/pods");

    let r = c.post(&deploys).json(&deployment("big", 0)).send().await.expect("create");
    assert!(r.status().is_success(), "create: {}", r.status());
    let big = format!("{deploys}/big");
    until(&c, &big, |d| status_counts(d, 0)).await;
    let up = phase("scale one Deployment 0 → N", scale_pods, cm, async {
        scale(&c, &big, scale_pods).await;
        until(&c, &big, |d| status_counts(d, scale_pods)).await;
    })
    .await;
    let down = phase("scale it back N → 0", scale_pods, cm, async {
        scale(&c, &big, 0).await;
        until(&c, &big, |d| status_counts(d, 0)).await;
        until(&c, &format!("{pods}?labelSelector=app%3Dbig"), |l| item_count(l) == 0).await;
    })
    .await;

    let ns = format!("{base}/api/v1/namespaces");
    let _ =
        c.post(&ns).json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "many"}})).send().await;
    let many = Arc::new(format!("{base}/apis/apps/v1/namespaces/many/deployments"));
    let many_phase = phase("create many Deployments × 3 replicas", deployments * 3, cm, async {
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let url = many.clone();
                tokio::spawn(async move {
                    let c = client();
                    for i in (w..deployments).step_by(16) {
                        let r = c.post(url.as_str()).json(&deployment(&format!("d-{i:04}"), 3)).send().await;
                        assert!(r.expect("create").status().is_success());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
        until(&c, &many, |l| {
            let items = l["items"].as_array().cloned().unwrap_or_default();
            items.len() == deployments && items.iter().all(|d| status_counts(d, 3))
        })
        .await;
    })
    .await;

    println!("\ncontroller benchmark: release API server + controller-manager, 2 cores shared with etcd");
    for p in [&up, &down, &many_phase] {
        report(p);
    }
}
