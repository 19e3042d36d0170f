//! `ferrokube kubelet --runtime=cri` with a real containerd of the test's own (see
//! `common/containerd.rs`): busybox pods run, exit, crash-loop, read their ConfigMaps and
//! Secrets, fail as upstream reports it, are deleted gracefully and survive a kubelet
//! restart, as kubectl 1.27 and 1.33 show them. The test API server signs no
//! ServiceAccount tokens, so pods opt out of the token volume
//! (`automountServiceAccountToken: false`).

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
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5, "automountServiceAccountToken": false,
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

fn with_container(name: &str, restart: &str, container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5, "automountServiceAccountToken": false,
            "containers": [container]}})
}

/// The waiting reason of the pod's first container, once it has one.
async fn wait_waiting_reason(cc: &CriCluster, name: &str, reason: &str) -> Value {
    eventually(WAIT, &format!("{name} waiting with {reason}"), || async {
        let pod = get_pod(cc, name).await;
        let status = pod["status"]["containerStatuses"][0].clone();
        (status["state"]["waiting"]["reason"] == reason).then_some(status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_are_reported_as_upstream_reports_them() {
    let cc = start_cri_cluster().await;
    let never = json!({"name": "main", "image": "example.invalid/nothing:1", "imagePullPolicy": "Never"});
    cc.cluster.create("/api/v1/namespaces/default/pods", &with_container("never", "Always", never)).await;
    let pull = json!({"name": "main", "image": "127.0.0.1:1/nothing:1", "imagePullPolicy": "IfNotPresent"});
    cc.cluster.create("/api/v1/namespaces/default/pods", &with_container("pull", "Always", pull)).await;

    wait_status(&cc, "never", "ErrImageNeverPull").await;
    let status = wait_waiting_reason(&cc, "never", "ErrImageNeverPull").await;
    assert_eq!(
        status["state"]["waiting"]["message"],
        "Container image \"example.invalid/nothing:1\" is not present with pull policy of Never",
        "{status}"
    );
    // the first attempt fails (ErrImagePull, shown until the next sync); the next ones
    // wait out the back-off
    wait_status(&cc, "pull", "ImagePullBackOff").await;
    let status = wait_waiting_reason(&cc, "pull", "ImagePullBackOff").await;
    assert_eq!(status["state"]["waiting"]["message"], "Back-off pulling image \"127.0.0.1:1/nothing:1\"", "{status}");
    let events = events_of(&cc.cluster, "pull").await;
    let failed: Vec<&str> = events.iter().filter(|(r, _)| r == "Failed").map(|(_, m)| m.as_str()).collect();
    assert!(failed.contains(&"Error: ErrImagePull"), "{events:?}");
    assert!(failed.iter().any(|m| m.starts_with("Failed to pull image \"127.0.0.1:1/nothing:1\": ")), "{events:?}");
    for reason in ["Pulling", "BackOff"] {
        assert!(events.iter().any(|(r, _)| r == reason), "no {reason} event: {events:?}");
    }
    assert_eq!(get_pod(&cc, "pull").await["status"]["phase"], "Pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_stopped_gracefully_then_removed() {
    let cc = start_cri_cluster().await;
    let script = "trap 'echo got TERM; exit 0' TERM; echo started; while :; do sleep 1; done";
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("graceful", "Always", script)).await;
    wait_status(&cc, "graceful", "Running").await;
    let pod = get_pod(&cc, "graceful").await;
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true, "{pod}");
    assert!(cc.node.shims() >= 1);
    let started = Instant::now();
    let out = cc.cluster.kubectl_ok("1.33", &["delete", "pod", "graceful", "--timeout=60s"]);
    assert!(out.contains("deleted"), "{out}");
    // the trap answers SIGTERM at once: no waiting out the 5 s grace period
    assert!(started.elapsed() < Duration::from_secs(5), "deletion took {:?}", started.elapsed());
    assert_eq!(cc.node.container_output(&pod, "main", 0), "", "the log directory is removed with the pod");
    let events = events_of(&cc.cluster, "graceful").await;
    assert!(events.iter().any(|(r, m)| r == "Killing" && m == "Stopping container main"), "{events:?}");
    eventually(WAIT, "the pod's shim to exit", || async { (cc.node.shims() == 0).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_adopts_running_pods_and_removes_orphans() {
    let mut cc = start_cri_cluster().await;
    let script = "echo up; sleep 3600";
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("keeper", "Always", script)).await;
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("goner", "Always", script)).await;
    wait_status(&cc, "keeper", "Running").await;
    wait_status(&cc, "goner", "Running").await;
    let before = get_pod(&cc, "keeper").await["status"]["containerStatuses"][0]["containerID"].clone();
    cc.node.kill_kubelet();
    // deleted while no kubelet runs: forced, so the API forgets it at once
    let (code, _) =
        cc.cluster.delete_with("/api/v1/namespaces/default/pods/goner", &json!({"gracePeriodSeconds": 0})).await;
    assert!(code.is_success());
    cc.node.start_kubelet(&cc.cluster);
    cc.node.wait_ready(&cc.cluster).await;
    eventually(WAIT, "the orphaned pod's shim to exit", || async { (cc.node.shims() == 1).then_some(()) }).await;
    let pod = get_pod(&cc, "keeper").await;
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], before, "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    assert_eq!(pod_columns(&cc, "1.27", "keeper").0, "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_not_ready_while_the_runtime_does_not_answer() {
    let cc = start_cri_cluster().await;
    cc.cluster.create("/api/v1/namespaces/default/pods", &busybox("survivor", "Always", "sleep 3600")).await;
    wait_status(&cc, "survivor", "Running").await;
    let pid = cc.node.containerd_pid().expect("containerd's pid");
    // a runtime that hangs: stopped, not gone
    // SAFETY: kill has no memory effects; the pid is containerd's
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let resume = Resume(pid);
    let ready = |node: Value| {
        let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.into_iter().find(|c| c["type"] == "Ready")
    };
    let condition = eventually(WAIT, "the node to be NotReady", || async {
        ready(cc.cluster.must_get("/api/v1/nodes/node-1").await).filter(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(condition["message"], "container runtime is down", "{condition}");
    assert_eq!(condition["reason"], "KubeletNotReady", "{condition}");
    drop(resume);
    cc.node.wait_ready(&cc.cluster).await;
    wait_status(&cc, "survivor", "Running").await;
    assert_eq!(get_pod(&cc, "survivor").await["status"]["containerStatuses"][0]["restartCount"], 0);
}

/// SIGCONT on drop, so a failing test does not leave containerd stopped.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: as above
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_configmap_key_is_a_create_container_config_error() {
    let cc = start_cri_cluster().await;
    cc.cluster.create("/api/v1/namespaces/default/configmaps", &common::configmap("settings", json!({"a": "1"}))).await;
    let container = json!({"name": "main", "image": "busybox", "command": ["sh", "-c", "echo $B; sleep 3600"],
        "env": [{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "b"}}}]});
    cc.cluster.create("/api/v1/namespaces/default/pods", &with_container("nokey", "Always", container)).await;
    wait_status(&cc, "nokey", "CreateContainerConfigError").await;
    let status = wait_waiting_reason(&cc, "nokey", "CreateContainerConfigError").await;
    assert_eq!(status["state"]["waiting"]["message"], "couldn't find key b in ConfigMap default/settings", "{status}");
    // the key appears: the container starts
    let patch = json!({"data": {"b": "2"}});
    let (code, _) = cc
        .cluster
        .patch("/api/v1/namespaces/default/configmaps/settings", "application/merge-patch+json", &patch)
        .await;
    assert!(code.is_success());
    wait_status(&cc, "nokey", "Running").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_volumes_come_from_configmaps_and_secrets() {
    let cc = start_cri_cluster().await;
    let config = common::configmap("app-config", json!({"greeting": "hello", "config.txt": "from a volume"}));
    cc.cluster.create("/api/v1/namespaces/default/configmaps", &config).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
        "stringData": {"password": "s3cret"}});
    cc.cluster.create("/api/v1/namespaces/default/secrets", &secret).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
            "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}}],
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo greeting=$GREETING; echo password=$PASSWORD; cat /etc/app/config.txt; echo"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]}]}});
    cc.cluster.create("/api/v1/namespaces/default/pods", &pod).await;
    wait_status(&cc, "reader", "Completed").await;
    let pod = get_pod(&cc, "reader").await;
    assert_eq!(cc.node.container_output(&pod, "main", 0), "greeting=hello\npassword=s3cret\nfrom a volume\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_probe_flips_ready() {
    let cc = start_cri_cluster().await;
    let container = json!({"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 3600"],
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}});
    cc.cluster.create("/api/v1/namespaces/default/pods", &with_container("probed", "Always", container)).await;
    wait_status(&cc, "probed", "Running").await;
    let ready = |cc: &CriCluster| {
        let out = cc.cluster.kubectl("1.33", &["get", "pod", "probed", "--no-headers"]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(ready(&cc), "0/1");
    let pod = get_pod(&cc, "probed").await;
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_string();
    let exec = |cmd: &str| {
        let out = std::process::Command::new("ctr")
            .args(["-a", cc.node.endpoint.trim_start_matches("unix://"), "-n", "k8s.io", "tasks", "exec", "--exec-id"])
            .arg(format!("t{}", fastrand_id()))
            .args([&id, "sh", "-c", cmd])
            .output()
            .expect("ctr");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    exec("touch /tmp/ready");
    eventually(WAIT, "the pod to be ready", || async { (ready(&cc) == "1/1").then_some(()) }).await;
    let pod = get_pod(&cc, "probed").await;
    let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"), "{conditions:?}");
    exec("rm /tmp/ready");
    eventually(WAIT, "the pod to be unready", || async { (ready(&cc) == "0/1").then_some(()) }).await;
}

fn fastrand_id() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_first_in_order() {
    let cc = start_cri_cluster().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "staged"},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
            "initContainers": [
                {"name": "first", "image": "busybox", "command": ["sh", "-c", "sleep 2; echo first"]},
                {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo second"]}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo main"]}]}});
    cc.cluster.create("/api/v1/namespaces/default/pods", &pod).await;
    wait_status(&cc, "staged", "Init:0/2").await;
    wait_status(&cc, "staged", "Completed").await;
    let pod = get_pod(&cc, "staged").await;
    let inits = pod["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    assert_eq!(inits.len(), 2, "{pod}");
    for init in &inits {
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    }
    let finished = |s: &Value| s["state"]["terminated"]["finishedAt"].as_str().unwrap_or_default().to_string();
    let started = |s: &Value| s["state"]["terminated"]["startedAt"].as_str().unwrap_or_default().to_string();
    assert!(finished(&inits[0]) <= started(&inits[1]), "{inits:?}");
    assert_eq!(cc.node.container_output(&pod, "first", 0), "first\n");
    assert_eq!(cc.node.container_output(&pod, "main", 0), "main\n");
    assert_eq!(pod["status"]["phase"], "Succeeded");
}
