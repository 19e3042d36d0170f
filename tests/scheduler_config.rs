//! `ferrokube scheduler --config`: upstream's KubeSchedulerConfiguration file against the
//! real API server and etcd; flags override the file; bad files stop start-up clearly.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Value, free_port, json};

const HEAD: &str = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

/// Run the scheduler with this config file and flags; it must refuse to start, without
/// panicking. Its standard error.
fn refused(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("bad.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrokube"))
        .args(["scheduler", "--secure-port=0", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started with {yaml}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_config_files_stop_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = format!("{HEAD}profiles:\n- plugins:\n    score:\n      enabled:\n      - name: Nope\n");
    assert!(refused(dir.path(), &unknown).contains("unknown plug-in \"Nope\""));
    assert!(refused(dir.path(), "{{ not yaml").contains("not a valid KubeSchedulerConfiguration"));
    let timing = format!("{HEAD}leaderElection:\n  leaseDuration: 5s\n  renewDeadline: 10s\n");
    assert!(refused(dir.path(), &timing).contains("lease-duration must be greater"));
    let two = format!("{HEAD}profiles:\n- schedulerName: one\n- schedulerName: one\n");
    assert!(refused(dir.path(), &two).contains("duplicate schedulerName \"one\""));
    let args = format!(
        "{HEAD}profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n    args:\n      hardPodAffinityWeight: 101\n"
    );
    assert!(refused(dir.path(), &args).contains("hardPodAffinityWeight 101 must be between 0 and 100"));
}

#[tokio::test]
async fn a_config_file_names_the_profile_and_the_lease_and_flags_override_it() {
    let c = Cluster::start().await;
    let yaml = format!(
        "{HEAD}clientConnection:\n  kubeconfig: {}\nleaderElection:\n  leaderElect: true\n  resourceName: custom-lease\n  resourceNamespace: kube-system\npercentageOfNodesToScore: 50\nprofiles:\n- schedulerName: custom-scheduler\n  plugins:\n    score:\n      disabled:\n      - name: ImageLocality\n      enabled:\n      - name: NodeResourcesFit\n        weight: 4\n",
        c.kubeconfig.display()
    );
    let path = c.dir.path().join("scheduler.yaml");
    std::fs::write(&path, yaml).expect("write");
    let port = free_port().to_string();
    let config = path.display().to_string();
    // the namespace flag wins over the file's
    let args = ["scheduler", "--config", &config, "--secure-port", &port, "--leader-elect-resource-namespace=default"];
    let mut child = c.spawn_ferrokube(&args, "scheduler.log");

    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cfg-node"}});
    c.create("/api/v1/nodes", &node).await;
    let alloc = json!({"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
    c.patch("/api/v1/nodes/cfg-node/status", "application/merge-patch+json", &alloc).await;
    let mut pod = common::pod("custom", "registry.k8s.io/pause:3.10");
    pod["spec"]["schedulerName"] = json!("custom-scheduler");
    c.create("/api/v1/namespaces/default/pods", &pod).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "exited:\n{}", c.log_tail("scheduler.log"));
        let pod = c.must_get("/api/v1/namespaces/default/pods/custom").await;
        if pod["spec"]["nodeName"] == "cfg-node" {
            break;
        }
        assert!(Instant::now() < deadline, "never bound: {pod}\n{}", c.log_tail("scheduler.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = c.must_get("/apis/coordination.k8s.io/v1/namespaces/default/leases/custom-lease").await;
    assert!(lease["spec"]["holderIdentity"].is_string(), "{lease}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Poll until the pod is bound; its node.
async fn bound_node(c: &Cluster, child: &mut std::process::Child, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "exited:\n{}", c.log_tail("scheduler.log"));
        let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            return node.to_string();
        }
        assert!(Instant::now() < deadline, "{name} never bound: {pod}\n{}", c.log_tail("scheduler.log"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_profiles_with_their_own_plugin_arguments() {
    let c = Cluster::start().await;
    // the second profile packs pods (MostAllocated, weighted up) and names itself
    let yaml = format!(
        "{HEAD}clientConnection:\n  kubeconfig: {}\nleaderElection:\n  leaderElect: false\nprofiles:\n\
         - schedulerName: default-scheduler\n\
         - schedulerName: bin-packer\n  plugins:\n    score:\n      enabled:\n      - name: NodeResourcesFit\n        weight: 5\n  \
         pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n        \
         resources:\n        - name: cpu\n          weight: 1\n        - name: memory\n          weight: 1\n",
        c.kubeconfig.display()
    );
    let path = c.dir.path().join("scheduler.yaml");
    std::fs::write(&path, yaml).expect("write");
    let port = free_port().to_string();
    let config = path.display().to_string();
    let mut child = c.spawn_ferrokube(&["scheduler", "--config", &config, "--secure-port", &port], "scheduler.log");

    for name in ["a", "b"] {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
        c.create("/api/v1/nodes", &node).await;
        let alloc = json!({"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}});
        c.patch(&format!("/api/v1/nodes/{name}/status"), "application/merge-patch+json", &alloc).await;
    }
    let pod = |name: &str, scheduler: &str, cpu: &str, extra: Value| {
        let mut p = common::pod(name, "registry.k8s.io/pause:3.10");
        p["spec"]["schedulerName"] = json!(scheduler);
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": cpu}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            p["spec"][k] = v.clone();
        }
        p
    };
    // a is busier
    let on_a = json!({"nodeSelector": {"kubernetes.io/hostname": "a"}});
    c.create("/api/v1/namespaces/default/pods", &pod("busy", "default-scheduler", "1", on_a)).await;
    assert_eq!(bound_node(&c, &mut child, "busy").await, "a");
    // the packer adds to the busy node, the default profile spreads to the idle one
    c.create("/api/v1/namespaces/default/pods", &pod("packed", "bin-packer", "500m", json!({}))).await;
    assert_eq!(bound_node(&c, &mut child, "packed").await, "a");
    c.create("/api/v1/namespaces/default/pods", &pod("spread", "default-scheduler", "500m", json!({}))).await;
    assert_eq!(bound_node(&c, &mut child, "spread").await, "b");

    // each profile reports as itself (the events follow the bindings)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = c.must_get("/apis/events.k8s.io/v1/namespaces/default/events").await;
        let items = events["items"].as_array().cloned().unwrap_or_default();
        let controller = |pod: &str| {
            let e = items.iter().find(|e| e["regarding"]["name"] == pod && e["reason"] == "Scheduled");
            e.map(|e| e["reportingController"].clone())
        };
        if let (Some(packed), Some(spread)) = (controller("packed"), controller("spread")) {
            assert_eq!((packed, spread), (json!("bin-packer"), json!("default-scheduler")), "{events}");
            break;
        }
        assert!(Instant::now() < deadline, "no Scheduled events: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
