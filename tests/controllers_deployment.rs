//! The ReplicaSet, ReplicationController and Deployment controllers (issue 7), run as
//! the real `ferrokube controller-manager` against a real API server and etcd; the pod
//! driver stands in for the scheduler and kubelet (pods annotated
//! `test.ferrokube.io/hold: "true"` stay Pending and unready).

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, start_controller_manager};
use common::{Cluster, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(60);
const RS_PATH: &str = "/apis/apps/v1/namespaces/default/replicasets";
const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";

async fn start() -> (Cluster, common::controllers::Component, PodDriver) {
    let c = Cluster::start().await;
    let cm = start_controller_manager(&c, &["--controllers=replicaset,replicationcontroller,deployment"]).await;
    let driver = PodDriver::start(&c).await;
    (c, cm, driver)
}

fn replica_set(name: &str, app: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    })
}

/// The pods with label `app`, not being deleted.
async fn live_pods(c: &Cluster, app: &str) -> Vec<Value> {
    let (_, list) = c.get(&format!("{PODS}?labelSelector=app%3D{app}")).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn controller_of(pod: &Value) -> Option<String> {
    let refs = pod["metadata"]["ownerReferences"].as_array()?;
    refs.iter().find(|r| r["controller"] == true).map(|r| r["name"].as_str().unwrap_or_default().to_string())
}

async fn scale_rs(c: &Cluster, name: &str, replicas: i64) {
    let patch = json!({"spec": {"replicas": replicas}});
    let (s, body) = c.patch(&format!("{RS_PATH}/{name}"), "application/merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Wait until `path`'s status has these values (and observedGeneration its generation).
async fn wait_status(c: &Cluster, path: &str, want: &[(&str, i64)]) -> Value {
    let what = format!("{path} status {want:?}");
    eventually(WAIT, &what, || async {
        let obj = c.must_get(path).await;
        let status = &obj["status"];
        let ok = want.iter().all(|(k, v)| status[*k].as_i64().unwrap_or(0) == *v)
            && status["observedGeneration"] == obj["metadata"]["generation"];
        ok.then_some(obj)
    })
    .await
}

async fn events_for(c: &Cluster, object: &str) -> Vec<(String, String)> {
    let (_, list) =
        c.get(&format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{object}")).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let field = |e: &Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
    items.iter().map(|e| (field(e, "reason"), field(e, "message"))).collect()
}

async fn wait_event(c: &Cluster, object: &str, reason: &str, message_part: &str) {
    let what = format!("event {reason} {message_part:?} on {object}");
    eventually(WAIT, &what, || async {
        let events = events_for(c, object).await;
        events.iter().any(|(r, m)| r == reason && m.contains(message_part)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicaset_scales_up_and_down_deleting_unready_pods_first() {
    let (c, _cm, _driver) = start().await;
    c.create(RS_PATH, &replica_set("fe", "fe", 3)).await;
    let path = format!("{RS_PATH}/fe");
    wait_status(
        &c,
        &path,
        &[("replicas", 3), ("readyReplicas", 3), ("availableReplicas", 3), ("fullyLabeledReplicas", 3)],
    )
    .await;
    let pods = live_pods(&c, "fe").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p["metadata"]["generateName"], "fe-");
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!((r["kind"].as_str(), r["name"].as_str()), (Some("ReplicaSet"), Some("fe")));
        assert_eq!((&r["controller"], &r["blockOwnerDeletion"]), (&json!(true), &json!(true)));
    }
    wait_event(&c, "fe", "SuccessfulCreate", "Created pod: fe-").await;

    // two more pods that will never be ready
    let hold =
        json!({"spec": {"replicas": 5, "template": {"metadata": {"annotations": {"test.ferrokube.io/hold": "true"}}}}});
    let (s, body) = c.patch(&path, "application/merge-patch+json", &hold).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    wait_status(&c, &path, &[("replicas", 5), ("readyReplicas", 3), ("availableReplicas", 3)]).await;
    let held: Vec<String> =
        live_pods(&c, "fe").await.iter().filter(|p| p["status"]["phase"] == "Pending").map(name).collect();
    assert_eq!(held.len(), 2, "two held pods");

    scale_rs(&c, "fe", 3).await;
    wait_status(&c, &path, &[("replicas", 3), ("readyReplicas", 3)]).await;
    let left: Vec<String> = live_pods(&c, "fe").await.iter().map(name).collect();
    assert!(held.iter().all(|h| !left.contains(h)), "the unready pods {held:?} go first; left {left:?}");
    wait_event(&c, "fe", "SuccessfulDelete", &format!("Deleted pod: {}", held[0])).await;

    scale_rs(&c, "fe", 0).await;
    wait_status(&c, &path, &[("replicas", 0), ("readyReplicas", 0)]).await;
    eventually(WAIT, "no pods", || async { live_pods(&c, "fe").await.is_empty().then_some(()) }).await;
}

#[tokio::test]
async fn replicaset_adopts_orphans_releases_strays_and_leaves_others_pods() {
    let (c, _cm, _driver) = start().await;
    let mut orphan = common::pod("orphan", "busybox");
    orphan["metadata"]["labels"] = json!({"app": "ad"});
    c.create(PODS, &orphan).await;
    // controlled by someone else: never adopted, never counted
    let mut foreign = common::pod("foreign", "busybox");
    foreign["metadata"]["labels"] = json!({"app": "ad"});
    foreign["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "00000000-0000-0000-0000-000000000001",
        "controller": true,
    }]);
    c.create(PODS, &foreign).await;

    c.create(RS_PATH, &replica_set("ad", "ad", 2)).await;
    let path = format!("{RS_PATH}/ad");
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2)]).await;
    let orphan = c.must_get(&format!("{PODS}/orphan")).await;
    assert_eq!(controller_of(&orphan).as_deref(), Some("ad"), "adopted: {orphan}");
    let foreign = c.must_get(&format!("{PODS}/foreign")).await;
    assert_eq!(controller_of(&foreign).as_deref(), Some("other"));
    let owned: Vec<Value> =
        live_pods(&c, "ad").await.into_iter().filter(|p| controller_of(p).as_deref() == Some("ad")).collect();
    assert_eq!(owned.len(), 2, "the orphan plus one new pod");

    // a pod relabelled out of the selector is released and replaced
    let relabel = json!({"metadata": {"labels": {"app": "gone"}}});
    let (s, body) = c.patch(&format!("{PODS}/orphan"), "application/merge-patch+json", &relabel).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    eventually(WAIT, "the relabelled pod released", || async {
        let pod = c.must_get(&format!("{PODS}/orphan")).await;
        controller_of(&pod).is_none().then_some(())
    })
    .await;
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2)]).await;
}

#[tokio::test]
async fn replication_controller_keeps_its_replicas() {
    let (c, _cm, _driver) = start().await;
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc"},
        "spec": {
            "replicas": 2, "selector": {"app": "rc"}, "minReadySeconds": 1,
            "template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    });
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    c.create(rcs, &rc).await;
    let path = format!("{rcs}/rc");
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2), ("availableReplicas", 2)]).await;
    let victim = name(&live_pods(&c, "rc").await[0]);
    c.delete(&format!("{PODS}/{victim}")).await;
    eventually(WAIT, "a replacement pod", || async {
        let pods = live_pods(&c, "rc").await;
        (pods.len() == 2 && pods.iter().all(|p| name(p) != victim)).then_some(())
    })
    .await;
    wait_event(&c, "rc", "SuccessfulCreate", "Created pod: rc-").await;
}

#[tokio::test]
async fn replicaset_reports_quota_refusals_as_replica_failure() {
    let (c, _cm, _driver) = start().await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
    c.create("/api/v1/namespaces/default/resourcequotas", &quota).await;
    c.create(RS_PATH, &replica_set("qq", "qq", 3)).await;
    let path = format!("{RS_PATH}/qq");
    let rs = eventually(WAIT, "the ReplicaFailure condition", || async {
        let rs = c.must_get(&path).await;
        let conds = rs["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conds.iter().any(|c| c["type"] == "ReplicaFailure" && c["reason"] == "FailedCreate").then_some(rs)
    })
    .await;
    assert!(rs["status"]["conditions"][0]["message"].as_str().unwrap_or_default().contains("exceeded quota"), "{rs}");
    wait_event(&c, "qq", "FailedCreate", "exceeded quota").await;
    // the quota raised: the set catches up and the condition goes
    let raise = json!({"spec": {"hard": {"pods": "10"}}});
    c.patch("/api/v1/namespaces/default/resourcequotas/q", "application/merge-patch+json", &raise).await;
    let rs = wait_status(&c, &path, &[("replicas", 3), ("readyReplicas", 3)]).await;
    assert!(rs["status"]["conditions"].is_null(), "{rs}");
}
