//! `ferrokube scheduler --config`: upstream's KubeSchedulerConfiguration file against the
//! real API server and etcd; flags override the file; bad files stop start-up clearly.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, free_port, json};

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
