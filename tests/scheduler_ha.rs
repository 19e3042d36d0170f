//! Two `ferrokube scheduler` replicas against one real API server and etcd: exactly one
//! holds the `kube-system/kube-scheduler` Lease and binds, every pod is bound once, and
//! when the leader is SIGKILLed the standby takes the Lease over and schedules. A leader
//! whose Lease is taken from it exits non-zero, as upstream's scheduler does.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{Cluster, StatusCode, Value, free_port, json};

const DEADLINE: Duration = Duration::from_secs(60);
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler";

struct Replica {
    child: Child,
    port: u16,
    log: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn https() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client")
}

/// A scheduler with short lease timings, waited for until its caches are synced.
async fn replica(c: &Cluster, log: &str) -> Replica {
    let port = free_port();
    let kubeconfig = c.kubeconfig.display().to_string();
    let args = [
        "scheduler",
        "--kubeconfig",
        &kubeconfig,
        "--secure-port",
        &port.to_string(),
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let mut r = Replica { child: c.spawn_ferrokube(&args, log), port, log: log.to_string() };
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(r.child.try_wait().expect("wait").is_none(), "{log} exited:\n{}", c.log_tail(log));
        if let Ok(resp) = https().get(format!("https://127.0.0.1:{port}/readyz")).send().await
            && resp.status() == StatusCode::OK
        {
            return r;
        }
        assert!(Instant::now() < deadline, "{log} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a metric line (labels included) on this replica's /metrics; None when
/// the replica does not answer.
async fn metric(r: &Replica, line: &str) -> Option<f64> {
    let text = https().get(format!("https://127.0.0.1:{}/metrics", r.port)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

const MASTER: &str = "leader_election_master_status{name=\"kube-scheduler\"}";
const SCHEDULED: &str = "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}";

/// Poll until exactly one of the live replicas reports itself leader; its index.
async fn wait_single_leader(c: &Cluster, replicas: &mut [&mut Replica]) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter_mut().enumerate() {
            if r.child.try_wait().expect("wait").is_some() {
                continue;
            }
            if metric(r, MASTER).await == Some(1.0) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        let lease = c.get(LEASE).await.1;
        assert!(Instant::now() < deadline, "no replica became leader; lease: {lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node(c: &Cluster, name: &str) {
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
    c.create("/api/v1/nodes", &body).await;
    let alloc = json!({"cpu": "8", "memory": "16Gi", "pods": "110"});
    let status = json!({"status": {"allocatable": alloc, "capacity": alloc}});
    let (code, body) = c.patch(&format!("/api/v1/nodes/{name}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

async fn create_pods(c: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let mut pod = common::pod(&name, "registry.k8s.io/pause:3.10");
        pod["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
        c.create("/api/v1/namespaces/default/pods", &pod).await;
        names.push(name);
    }
    names
}

async fn wait_all_bound(c: &Cluster, names: &[String]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = c.must_get("/api/v1/namespaces/default/pods").await;
        let pending: Vec<&str> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| names.iter().any(|n| p["metadata"]["name"] == n.as_str()) && !p["spec"]["nodeName"].is_string())
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "never bound: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until every pod has a Scheduled event; then each must have exactly one.
async fn assert_scheduled_once(c: &Cluster, names: &[String]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = c.must_get("/apis/events.k8s.io/v1/namespaces/default/events").await;
        let count = |name: &str| {
            list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e: &&Value| e["reason"] == "Scheduled" && e["regarding"]["name"] == name)
                .count()
        };
        if names.iter().all(|n| count(n) >= 1) {
            for n in names {
                assert_eq!(count(n), 1, "pod {n} has {} Scheduled events", count(n));
            }
            return;
        }
        assert!(Instant::now() < deadline, "some pods have no Scheduled event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn one_leader_binds_and_the_standby_takes_over() {
    let c = Cluster::start().await;
    for n in ["ha-node-a", "ha-node-b"] {
        node(&c, n).await;
    }
    let mut a = replica(&c, "scheduler-a.log").await;
    let mut b = replica(&c, "scheduler-b.log").await;
    let first = wait_single_leader(&c, &mut [&mut a, &mut b]).await;
    let lease = c.must_get(LEASE).await;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string();
    let (host, id) = holder.rsplit_once('_').unwrap_or_default();
    assert!(!host.is_empty() && id.len() == 36, "holderIdentity {holder} is not <hostname>_<uuid>");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3, "{lease}");

    let before = create_pods(&c, "before", 20).await;
    wait_all_bound(&c, &before).await;
    assert_scheduled_once(&c, &before).await;
    let (leader, standby) = if first == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert_eq!(metric(standby, SCHEDULED).await, Some(0.0), "the standby bound pods");
    assert_eq!(metric(standby, MASTER).await, Some(0.0));

    // SIGKILL: no release, the standby must wait the lease out
    leader.child.kill().expect("kill");
    leader.child.wait().expect("wait");
    let after = create_pods(&c, "after", 10).await;
    wait_single_leader(&c, &mut [standby]).await;
    wait_all_bound(&c, &after).await;
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert_scheduled_once(&c, &all).await;
    let lease = c.must_get(LEASE).await;
    assert_ne!(lease["spec"]["holderIdentity"], holder.as_str(), "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");

    // someone else takes the Lease: the leader cannot renew and exits non-zero
    let deadline = Instant::now() + DEADLINE;
    loop {
        // the leader renews concurrently: retry on a conflict
        let mut stolen = c.must_get(LEASE).await;
        stolen["spec"]["holderIdentity"] = json!("intruder_0");
        stolen["spec"]["leaseDurationSeconds"] = json!(3600);
        let (code, body) = c.put(LEASE, &stolen).await;
        if code == StatusCode::OK {
            break;
        }
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(Instant::now() < deadline, "cannot take the lease");
    }
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = standby.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the leader kept running without its lease:\n{}", c.log_tail(&standby.log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", c.log_tail(&standby.log));
}

#[tokio::test]
async fn a_cleanly_stopped_leader_releases_the_lease() {
    let c = Cluster::start().await;
    let mut a = replica(&c, "scheduler-a.log").await;
    wait_single_leader(&c, &mut [&mut a]).await;
    // SIGTERM: the leader gives the Lease up on its way out
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    let status = a.child.wait().expect("wait");
    assert!(status.success(), "{}", c.log_tail(&a.log));
    let lease = c.must_get(LEASE).await;
    assert!(lease["spec"]["holderIdentity"].as_str().unwrap_or_default().is_empty(), "{lease}");
    // a successor acquires at once, without waiting out the old holder's lease
    let mut b = replica(&c, "scheduler-b.log").await;
    wait_single_leader(&c, &mut [&mut b]).await;
}
