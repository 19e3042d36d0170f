//! `ferrokube controller-manager` as a process: flags, health and metrics, leader election.
//! The controllers themselves are tested in tests/controllers_*.rs.

mod common;

use std::time::Duration;

use common::controllers::{Component, eventually, start_controller_manager, start_controller_manager_logged};
use common::{Cluster, StatusCode, json};

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

async fn leads(cm: &Component) -> bool {
    cm.get("/metrics").await.1.contains("leader_election_master_status{name=\"kube-controller-manager\"} 1")
}

/// Two replicas: one leads and runs the controllers, the other waits; when the leader
/// is killed the standby takes the Lease over and its controllers act.
#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies() {
    let c = Cluster::start().await;
    let flags = [
        "--leader-elect=true",
        "--controllers=endpoint",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let mut a = start_controller_manager_logged(&c, "cm-a.log", &flags).await;
    let mut b = start_controller_manager_logged(&c, "cm-b.log", &flags).await;
    let a_leads = eventually(Duration::from_secs(30), "a leader", || async {
        match (leads(&a).await, leads(&b).await) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if a_leads { (&mut a, &mut b) } else { (&mut b, &mut a) };
    // the standby runs no controller: it reports no work queue
    assert!(!standby.get("/metrics").await.1.contains("workqueue_depth{name=\"endpoint\"}"));
    let svc = |name: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}});
    c.create("/api/v1/namespaces/default/services", &svc("before")).await;
    eventually(Duration::from_secs(30), "endpoints from the leader", || async {
        (c.get("/api/v1/namespaces/default/endpoints/before").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    leader.child.kill().expect("kill the leader");
    let _ = leader.child.wait();
    eventually(Duration::from_secs(30), "the standby to lead", || async { leads(standby).await.then_some(()) }).await;
    c.create("/api/v1/namespaces/default/services", &svc("after")).await;
    eventually(Duration::from_secs(30), "endpoints from the new leader", || async {
        (c.get("/api/v1/namespaces/default/endpoints/after").await.0 == StatusCode::OK).then_some(())
    })
    .await;
}
