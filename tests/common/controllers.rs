//! For controller tests: the real `ferrokube controller-manager` process, and a pod
//! driver standing in for the scheduler and the kubelet (issue 7 allows pod phases to be
//! driven by a test helper): it binds unbound pods to a node of its own, reports bound
//! pods Running and Ready, and finishes the deletion of terminating pods, as a kubelet
//! would. Pods annotated `test.ferrokube.io/hold: "true"` are bound but left Pending,
//! so a test can keep them unready; `set_pod_phase` ends a pod as a container exit would.
//! Pods pinned to a node by node affinity (DaemonSet pods) are bound to that node, and
//! pods on any node named `driver-node…` are started, so a test can add nodes of its own.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use super::{Cluster, StatusCode, Value, free_port, json};

/// A companion process, killed on drop (its log tail printed if the test failed).
pub struct Component {
    pub child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl Drop for Component {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let name = self.log.file_name().unwrap_or_default().to_string_lossy().to_string();
            eprintln!("---- {name} (tail) ----\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Component {
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET a path of the component's HTTPS endpoint: status and body (503 and the
    /// error while it does not listen yet).
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
        match client.get(format!("https://127.0.0.1:{}{path}", self.port)).send().await {
            Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Start `ferrokube controller-manager` (no leader election unless `extra` asks for it)
/// and wait for its /healthz.
pub async fn start_controller_manager(c: &Cluster, extra: &[&str]) -> Component {
    start_controller_manager_logged(c, "controller-manager.log", extra).await
}

/// `start_controller_manager` with its output in `log` (for several replicas).
pub async fn start_controller_manager_logged(c: &Cluster, log: &str, extra: &[&str]) -> Component {
    let port = free_port();
    let kubeconfig = c.kubeconfig.display().to_string();
    let port_s = port.to_string();
    let mut args = vec!["controller-manager", "--kubeconfig", &kubeconfig, "--secure-port", &port_s];
    if !extra.iter().any(|a| a.starts_with("--leader-elect")) {
        args.push("--leader-elect=false");
    }
    args.extend_from_slice(extra);
    let child = c.spawn_ferrokube(&args, log);
    let mut cm = Component { child, log: c.dir.path().join(log), port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(cm.alive(), "the controller-manager exited:\n{}", c.log_tail(log));
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client");
        if let Ok(r) = client.get(format!("https://127.0.0.1:{port}/healthz")).send().await
            && r.status() == StatusCode::OK
        {
            return cm;
        }
        assert!(Instant::now() < deadline, "the controller-manager never answered /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node the pod driver binds pods to.
pub const DRIVER_NODE: &str = "driver-node";

/// Binds, starts and finishes deleting pods until dropped (a background task).
pub struct PodDriver {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodDriver {
    pub async fn start(c: &Cluster) -> PodDriver {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": DRIVER_NODE, "labels": {"kubernetes.io/hostname": DRIVER_NODE}},
        });
        let (status, body) = c.post("/api/v1/nodes", &node).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "creating the node: {body}");
        let ready = json!({"status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "driver"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }});
        let (status, body) =
            c.patch(&format!("/api/v1/nodes/{DRIVER_NODE}/status"), "application/merge-patch+json", &ready).await;
        assert_eq!(status, StatusCode::OK, "node status: {body}");
        let (http, base) = (c.http.clone(), c.base.clone());
        let task = tokio::spawn(async move {
            let mut next_ip = 2u32;
            loop {
                drive_once(&http, &base, &mut next_ip).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PodDriver { task }
    }
}

async fn drive_once(http: &reqwest::Client, base: &str, next_ip: &mut u32) {
    let Ok(resp) = http.get(format!("{base}/api/v1/pods")).send().await else { return };
    let Ok(list) = resp.json::<Value>().await else { return };
    for pod in list["items"].as_array().into_iter().flatten() {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let path = format!("{base}/api/v1/namespaces/{ns}/pods/{name}");
        let uid = pod["metadata"]["uid"].clone();
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            let opts = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
            let _ = http.delete(&path).json(&opts).send().await;
            continue;
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if node.is_empty() {
            let target = pinned_node(pod).unwrap_or(DRIVER_NODE);
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target},
            });
            let _ = http.post(format!("{path}/binding")).json(&binding).send().await;
            continue;
        }
        let held = pod["metadata"]["annotations"]["test.ferrokube.io/hold"] == "true";
        if !node.starts_with(DRIVER_NODE) || held || pod["status"]["phase"] != "Pending" {
            continue;
        }
        let ip = format!("10.244.{}.{}", *next_ip / 250, *next_ip % 250 + 2);
        *next_ip += 1;
        let _ = http
            .patch(format!("{path}/status"))
            .header("content-type", "application/merge-patch+json")
            .json(&running_status(pod, &ip))
            .send()
            .await;
    }
}

/// The node a pod's required node affinity pins it to (`metadata.name In [node]`, as
/// DaemonSet pods are), which the driver binds it to.
fn pinned_node(pod: &Value) -> Option<&str> {
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    let field = &terms["nodeSelectorTerms"][0]["matchFields"][0];
    (field["key"] == "metadata.name" && field["operator"] == "In").then(|| field["values"][0].as_str()).flatten()
}

fn now() -> String {
    seconds_ago(0)
}

/// The time `secs` seconds ago, as RFC 3339 in UTC (whole seconds).
pub fn seconds_ago(secs: u64) -> String {
    let t = std::time::SystemTime::now() - Duration::from_secs(secs);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86400;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    // civil date from days since the epoch (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// A Running pod, every container started and ready, as a kubelet reports it.
fn running_status(pod: &Value, ip: &str) -> Value {
    let t = now();
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": t}},
            })
        })
        .collect();
    let cond = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": t});
    json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": t,
        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
        "containerStatuses": containers,
    }})
}

/// Report a (held) pod Running and Ready, as the driver does for the pods it starts.
pub async fn set_pod_running(c: &Cluster, ns: &str, name: &str) {
    let pod = c.must_get(&format!("/api/v1/namespaces/{ns}/pods/{name}")).await;
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status");
    let (s, body) = c.patch(&path, "application/merge-patch+json", &running_status(&pod, "10.244.9.9")).await;
    assert_eq!(s, StatusCode::OK, "setting {ns}/{name} Running: {body}");
}

/// End a pod as its containers' exit would: `Succeeded` (exit 0) or `Failed` (exit 1).
pub async fn set_pod_phase(c: &Cluster, ns: &str, name: &str, phase: &str) {
    let t = now();
    let (code, reason) = if phase == "Succeeded" { (0, "Completed") } else { (1, "Error") };
    let pod = c.must_get(&format!("/api/v1/namespaces/{ns}/pods/{name}")).await;
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ct| {
            json!({
                "name": ct["name"], "image": ct["image"], "imageID": "", "ready": false, "started": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t}},
            })
        })
        .collect();
    let cond = |type_: &str, s: &str| json!({"type": type_, "status": s, "lastTransitionTime": t});
    let status = json!({"status": {
        "phase": phase,
        "conditions": [cond("PodScheduled", "True"), cond("Initialized", "True"), cond("ContainersReady", "False"), cond("Ready", "False")],
        "containerStatuses": containers,
    }});
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/status");
    let (s, body) = c.patch(&path, "application/merge-patch+json", &status).await;
    assert_eq!(s, StatusCode::OK, "setting {ns}/{name} {phase}: {body}");
}

/// Poll `check` (every 100 ms) until it returns Some, or panic with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reasons and messages of the events about the object `name` in `default`.
pub async fn events_of(c: &Cluster, name: &str) -> Vec<(String, String)> {
    let (_, list) =
        c.get(&format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name}")).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let text = |e: &Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
    items.iter().map(|e| (text(e, "reason"), text(e, "message"))).collect()
}

/// Wait (a minute at most) for an event `reason` about `name` in `default`; its message.
pub async fn wait_event(c: &Cluster, name: &str, reason: &str) -> String {
    eventually(Duration::from_secs(60), &format!("event {reason} of {name}"), || async {
        events_of(c, name).await.into_iter().find(|(r, _)| r == reason).map(|(_, m)| m)
    })
    .await
}

/// Start `ferrokube scheduler` (no leader election) and wait for its /readyz.
pub async fn start_scheduler(c: &Cluster) -> Component {
    let port = free_port();
    let kubeconfig = c.kubeconfig.display().to_string();
    let port_s = port.to_string();
    let args = ["scheduler", "--kubeconfig", &kubeconfig, "--secure-port", &port_s, "--leader-elect=false"];
    let mut s =
        Component { child: c.spawn_ferrokube(&args, "scheduler.log"), log: c.dir.path().join("scheduler.log"), port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(s.alive(), "the scheduler exited:\n{}", c.log_tail("scheduler.log"));
        if s.get("/readyz").await.0 == StatusCode::OK {
            return s;
        }
        assert!(Instant::now() < deadline, "the scheduler never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
