//! `ferrokube kubelet --runtime=cri` with a real containerd of the test's own (see
//! `common/containerd.rs`): busybox pods run, exit, crash-loop, read their ConfigMaps and
//! Secrets, fail as upstream reports it, are deleted gracefully and survive a kubelet
//! restart, as kubectl 1.27 and 1.33 show them.

mod common;

use std::time::{Duration, Instant};

use common::containerd::{CriCluster, start_cri_cluster};
use common::controllers::{events_of, eventually};
use common::{KUBECTL_VERSIONS, Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// The STATUS and RESTARTS columns of `kubectl get pod NAME` with kubectl `v`.
fn pod_columns(cc: &CriCluster, v: &str, name: &str) -> (String, String) {
    let out = cc.cluster.kubectl(v, &["get", "pod", name, "--no-headers"]);
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    (cols.get(2).unwrap_or(&"").to_string(), cols.get(3).unwrap_or(&"").to_string())
}

async fn wait_status(cc: &CriCluster, name: &str, want: &str) {
    for v in KUBECTL_VERSIONS {
        eventually(WAIT, &format!("{name} to show {want} (kubectl {v})"), || async {
            (pod_columns(cc, v, name).0 == want).then_some(())
        })
        .await;
    }
}

async fn get_pod(cc: &CriCluster, name: &str) -> Value {
    cc.cluster.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await
}

fn busybox(name: &str, restart: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busybox_pod_writes_output_and_completes() {
    let cc = start_cri_cluster().await;
    let node = cc.cluster.must_get("/api/v1/nodes/node-1").await;
    let runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap_or_default().to_string();
    assert!(runtime.starts_with("containerd://1."), "{node}");
    let created = Instant::now();
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("hello", "Never", "echo hello from busybox")).await;
    wait_status(&cc, "hello", "Completed").await;
    eprintln!("hello Completed {:?} after creation", created.elapsed());
    let pod = get_pod(&cc, "hello").await;
    let status = &pod["status"];
    assert_eq!(status["phase"], "Succeeded", "{status}");
    let main = &status["containerStatuses"][0];
    assert_eq!(main["state"]["terminated"]["exitCode"], 0, "{main}");
    assert_eq!(main["state"]["terminated"]["reason"], "Completed", "{main}");
    assert!(main["containerID"].as_str().unwrap_or_default().starts_with("containerd://"), "{main}");
    assert!(main["imageID"].as_str().is_some_and(|i| !i.is_empty()), "{main}");
    assert!(status["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{status}");
    assert_eq!(status["qosClass"], "BestEffort", "{status}");
    let types: Vec<&str> = status["conditions"].as_array().unwrap().iter().filter_map(|c| c["type"].as_str()).collect();
    for t in ["PodScheduled", "PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"] {
        assert!(types.contains(&t), "{t} missing: {status}");
    }
    assert_eq!(cc.node.container_output(&pod, "main", 0), "hello from busybox\n");
    let reasons: Vec<String> = events_of(&cc.cluster, "hello").await.into_iter().map(|(r, _)| r).collect();
    for r in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|x| x == r), "event {r} missing: {reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_container_under_always_crash_loops() {
    let cc = start_cri_cluster().await;
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("crash", "Always", "echo dying; exit 1")).await;
    wait_status(&cc, "crash", "CrashLoopBackOff").await;
    let (_, restarts) = pod_columns(&cc, "1.33", "crash");
    let count: u32 = restarts.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0);
    assert!(count >= 1, "restarts {restarts:?}");
    let pod = get_pod(&cc, "crash").await;
    let main = &pod["status"]["containerStatuses"][0];
    assert_eq!(main["state"]["waiting"]["reason"], "CrashLoopBackOff", "{main}");
    assert!(
        main["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("back-off 10s restarting failed container=main pod=crash_default("),
        "{main}"
    );
    assert_eq!(main["lastState"]["terminated"]["exitCode"], 1, "{main}");
    assert_eq!(main["lastState"]["terminated"]["reason"], "Error", "{main}");
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    let events = events_of(&cc.cluster, "crash").await;
    assert!(events.iter().any(|(r, _)| r == "BackOff"), "{events:?}");
}
