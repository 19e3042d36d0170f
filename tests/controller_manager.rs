//! `ferrokube controller-manager` as a process: flags, health and metrics, leader election.
//! The controllers themselves are tested in tests/controllers_*.rs.

mod common;

use std::time::Duration;

use common::controllers::{eventually, start_controller_manager};
use common::{Cluster, StatusCode};

#[tokio::test]
async fn serves_health_and_per_controller_metrics() {
    let c = Cluster::start().await;
    let cm = start_controller_manager(&c, &["--controllers=*"]).await;
    assert_eq!(cm.get("/healthz").await, (StatusCode::OK, "ok".to_string()));
    let text = eventually(Duration::from_secs(30), "controller metrics", || async {
        let (status, text) = cm.get("/metrics").await;
        (status == StatusCode::OK && text.contains("workqueue_depth{name=")).then_some(text)
    })
    .await;
    assert!(text.contains("controller_sync_duration_seconds_count{controller="), "{text}");
    assert!(text.contains("controller_sync_errors_total{controller="), "{text}");
}

#[tokio::test]
async fn unknown_controller_names_stop_start_up() {
    let c = Cluster::start().await;
    let kubeconfig = c.kubeconfig.display().to_string();
    let mut child = c.spawn_ferrokube(
        &["controller-manager", "--kubeconfig", &kubeconfig, "--controllers=*,no-such-controller"],
        "cm-bad.log",
    );
    let status = child.wait().expect("wait");
    assert!(!status.success());
    assert!(
        c.log_tail("cm-bad.log").contains("\"no-such-controller\" is not a known controller"),
        "{}",
        c.log_tail("cm-bad.log")
    );
}

#[tokio::test]
async fn leader_election_holds_the_kube_controller_manager_lease() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--leader-elect=true"]).await;
    let holder = eventually(Duration::from_secs(30), "the lease", || async {
        let (status, lease) =
            c.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager").await;
        (status == StatusCode::OK).then(|| lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(!holder.is_empty());
}
