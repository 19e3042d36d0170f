//! `cargo bench --bench kubelet`: pod startup latency on one real node — from the pod's
//! creation to the kubelet reporting it Running — for `BENCH_KUBELET_PODS` (default 100)
//! busybox pods, plus how long deleting them all takes.
//!
//! Starts a private etcd, the API server, a containerd of its own (`ferrokube containerd`,
//! state under a temp dir, its own bridge) and `ferrokube kubelet --runtime=cri`. Pods
//! are created already bound (`spec.nodeName`), so scheduling is not measured, and the
//! image is local, so pulling is not either (upstream's SLO excludes it too). Pods are
//! created in two rounds: a burst (all at once by 8 concurrent clients), then paced at
//! `BENCH_KUBELET_QPS` pods a second (default 5; 0 skips it), as upstream's density test
//! measures its startup SLO at a fixed creation rate. Phases are polled every 50 ms.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Proc, client, env_log, env_usize};

/// The containerd launcher: SIGTERM on drop so it removes the pods and cleans up.
struct Launcher(Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        // SAFETY: the child is ours and not yet reaped
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn term_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}")},
        "spec": {"nodeName": "bench-node", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn phases(c: &reqwest::Client, url: &str) -> HashMap<String, String> {
    let list: Value = c.get(url).send().await.expect("list").json().await.expect("json");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
            (name, p["status"]["phase"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

async fn wait_node_ready(c: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.get(format!("{base}/api/v1/nodes/bench-node")).send().await
            && let Ok(node) = r.json::<Value>().await
            && node["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the node never became Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() {
    let count = env_usize("BENCH_KUBELET_PODS", 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = &common::ferrokube_exe();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let (_server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;
    let data = dir.path().join("containerd");
    let started = Instant::now();
    let mut containerd = Launcher(
        term_with_parent(Command::new(exe).args(["containerd", "--remove-pods-on-exit", "--bridge", "fkbench0"]))
            .args(["--subnet", "10.199.0.0/16", "--data-dir", data.to_str().expect("utf-8")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(env_log("BENCH_CONTAINERD_LOG"))
            .spawn()
            .expect("start ferrokube containerd"),
    );
    // "containerd ready: …" once the images are in
    let stdout = containerd.0.stdout.take().expect("stdout");
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    });
    let line = ready.await.expect("reader").expect("containerd's output");
    assert!(line.starts_with("containerd ready"), "containerd did not start: {line:?}");
    let containerd_ready = started.elapsed();
    let socket = data.join("containerd.sock");
    let _kubelet = Proc(
        Command::new(exe)
            .args(["kubelet", "--runtime=cri", "--node-name=bench-node"])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--container-runtime-endpoint=unix://{}", socket.display()))
            .arg(format!("--root-dir={}", dir.path().join("kubelet").display()))
            .arg(format!("--pod-logs-dir={}", dir.path().join("pods").display()))
            .env("RUST_LOG", std::env::var("BENCH_KUBELET_RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(env_log("BENCH_KUBELET_LOG"))
            .spawn()
            .expect("start the kubelet"),
    );
    let c = client();
    wait_node_ready(&c, &base).await;
    println!(
        "\nkubelet benchmark: {count} busybox pods on one node (containerd 1.6, 2 cores shared with etcd and the API server)"
    );
    println!(
        "  containerd ready (images built and imported) {:.2} s after its start; the node Ready {:.2} s after",
        containerd_ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let pods_url = format!("{base}/api/v1/namespaces/default/pods");
    run_round(&c, &pods_url, "burst", count, None).await;
    let qps = env_usize("BENCH_KUBELET_QPS", 5);
    if qps > 0 {
        run_round(&c, &pods_url, &format!("paced at {qps} pods/s"), count, Some(qps)).await;
    }
}

/// Create `count` pods, all at once over 8 clients, or one every 1/`qps` s (as
/// upstream's density test paces creations); when each create was sent.
async fn create_pods(c: reqwest::Client, url: String, count: usize, qps: Option<usize>) -> HashMap<String, Instant> {
    let created: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let shared = (c, url, created.clone());
    let create = move |i: usize| {
        let (c, url, created) = shared.clone();
        async move {
            let at = Instant::now();
            let r = c.post(&url).json(&pod(i)).send().await.expect("create");
            assert!(r.status().is_success(), "create p{i}: {}", r.status());
            created.lock().unwrap().insert(format!("p{i}"), at);
        }
    };
    let tasks: Vec<_> = match qps {
        None => (0..8)
            .map(|w| {
                let create = create.clone();
                tokio::spawn(async move {
                    for i in (w..count).step_by(8) {
                        create(i).await;
                    }
                })
            })
            .collect(),
        Some(qps) => {
            let t0 = tokio::time::Instant::now();
            (0..count)
                .map(|i| {
                    let (create, at) = (create.clone(), t0 + Duration::from_secs_f64(i as f64 / qps as f64));
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        create(i).await;
                    })
                })
                .collect()
        }
    };
    for t in tasks {
        t.await.expect("creator");
    }
    created.lock().unwrap().clone()
}

/// One round: create the pods, poll their phases every 50 ms until all run, print
/// creation → Running percentiles, then delete them all and wait until they are gone.
async fn run_round(c: &reqwest::Client, pods_url: &str, mode: &str, count: usize, qps: Option<usize>) {
    let t0 = Instant::now();
    let creating = tokio::spawn(create_pods(c.clone(), pods_url.to_string(), count, qps));
    let mut running: HashMap<String, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while running.len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} pods ran in 10 minutes", running.len());
        for (name, phase) in phases(c, pods_url).await {
            if phase == "Running" {
                running.entry(name).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = creating.await.expect("creators");
    let all_running = t0.elapsed();
    let mut latencies: Vec<f64> =
        running.iter().map(|(name, at)| at.duration_since(created[name]).as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    println!("\n  {mode}:");
    println!(
        "  creation → Running, ms    p50 {:>7.0}   p90 {:>7.0}   p99 {:>7.0}   max {:>7.0}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "  all {count} Running after {:.2} s ({:.1} pods/s)",
        all_running.as_secs_f64(),
        count as f64 / all_running.as_secs_f64()
    );

    let t1 = Instant::now();
    let r = c.delete(pods_url).send().await.expect("delete collection");
    assert!(r.status().is_success(), "delete collection: {}", r.status());
    loop {
        if phases(c, pods_url).await.is_empty() {
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(600), "pods not gone in 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  all {count} deleted (graceful, then removed by the kubelet) in {:.2} s", t1.elapsed().as_secs_f64());
}
