//! PodDisruptionBudgets: the disruption controller keeps their status, the eviction API
//! spends from it and refuses with 429 once the budget is used up, as `kubectl drain`
//! shows.

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, start_controller_manager};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "/api/v1/namespaces/default";
const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db";

async fn pod(c: &Cluster, name: &str, hold: bool) {
    let annotations = if hold { json!({"test.ferrokube.io/hold": "true"}) } else { json!({}) };
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "db"}, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    c.create(&format!("{NS}/pods"), &pod).await;
}

async fn evict(c: &Cluster, name: &str) -> (StatusCode, Value) {
    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
    c.post(&format!("{NS}/pods/{name}/eviction"), &eviction).await
}

async fn allowed(c: &Cluster, want: i64) -> Value {
    eventually(WAIT, &format!("disruptionsAllowed {want}"), || async {
        let pdb = c.must_get(PDB).await;
        (pdb["status"]["disruptionsAllowed"] == want
            && pdb["status"]["observedGeneration"] == pdb["metadata"]["generation"])
            .then_some(pdb)
    })
    .await
}

#[tokio::test]
async fn budgets_limit_evictions() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=disruption"]).await;
    for name in ["db-0", "db-1", "db-2"] {
        pod(&c, name, false).await;
    }
    pod(&c, "db-pending", true).await;
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}});
    c.create("/apis/policy/v1/namespaces/default/poddisruptionbudgets", &pdb).await;
    let pdb = allowed(&c, 1).await;
    assert_eq!(
        (pdb["status"]["currentHealthy"].as_i64(), pdb["status"]["desiredHealthy"].as_i64()),
        (Some(3), Some(2)),
        "{pdb}"
    );
    let condition = &pdb["status"]["conditions"][0];
    assert_eq!(
        (condition["type"].as_str(), condition["reason"].as_str()),
        (Some("DisruptionAllowed"), Some("SufficientPods"))
    );
    for v in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(v, &["get", "pdb", "db", "--no-headers"]);
        assert_eq!(out.split_whitespace().take(4).collect::<Vec<_>>(), ["db", "2", "N/A", "1"], "{out}");
    }

    // a pending pod does not count: it may always go
    assert_eq!(evict(&c, "db-pending").await.0, StatusCode::CREATED);
    // the one allowed disruption, then a refusal
    let (status, body) = evict(&c, "db-0").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = evict(&c, "db-1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    let cause = body["details"]["causes"][0]["message"].as_str().unwrap_or_default();
    assert!(cause.starts_with("The disruption budget db needs 2 healthy pods and has"), "{body}");
    assert_eq!(c.must_get(&format!("{NS}/pods/db-1")).await["metadata"]["deletionTimestamp"], Value::Null);

    // kubectl drain keeps being refused and gives up at its timeout
    let out = c.kubectl("1.33", &["drain", "driver-node", "--force", "--timeout=3s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"), "{stderr}");

    // a looser budget lets the next one go
    let looser = json!({"spec": {"minAvailable": 1}});
    let (status, body) = c.patch(PDB, "application/merge-patch+json", &looser).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    allowed(&c, 1).await;
    assert_eq!(evict(&c, "db-1").await.0, StatusCode::CREATED);
}
