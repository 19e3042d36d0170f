//! The garbage collector (controller-manager `--controllers=garbagecollector`) with the
//! API server's Foreground and Orphan deletion marks: ConfigMaps stand in for owners and
//! dependents (any kind may own any other), deleted through raw HTTP and stock kubectl.

mod common;

use std::time::Duration;

use common::controllers::{eventually, start_controller_manager};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn owner(c: &Cluster, name: &str) -> Value {
    c.create(CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})).await
}

fn owner_ref(o: &Value, block: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": block,
    })
}

async fn dependent(c: &Cluster, name: &str, owners: Vec<Value>, finalizers: &[&str]) -> Value {
    let meta = json!({"name": name, "ownerReferences": owners, "finalizers": finalizers});
    c.create(CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})).await
}

async fn gone(c: &Cluster, name: &str) {
    let path = format!("{CMS}/{name}");
    eventually(WAIT, &format!("{name} to be deleted"), || async {
        (c.get(&path).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}

#[tokio::test]
async fn background_deletion_removes_dependents_of_a_deleted_owner() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector"]).await;
    let o = owner(&c, "bg-owner").await;
    dependent(&c, "bg-dep-1", vec![owner_ref(&o, true)], &[]).await;
    dependent(&c, "bg-dep-2", vec![owner_ref(&o, false)], &[]).await;
    let (status, _) = c.delete(&format!("{CMS}/bg-owner")).await;
    assert_eq!(status, StatusCode::OK);
    gone(&c, "bg-dep-1").await;
    gone(&c, "bg-dep-2").await;
    // an object whose owner never existed (a stale uid) goes too
    let stale = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "nobody", "uid": "0000-stale"});
    dependent(&c, "bg-dep-3", vec![stale], &[]).await;
    gone(&c, "bg-dep-3").await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_and_drops_their_owner_references() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector"]).await;
    let o = owner(&c, "or-owner").await;
    dependent(&c, "or-dep", vec![owner_ref(&o, true)], &[]).await;
    let (status, marked) = c.delete_with(&format!("{CMS}/or-owner"), &json!({"propagationPolicy": "Orphan"})).await;
    assert_eq!(status, StatusCode::OK, "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]), "{marked}");
    gone(&c, "or-owner").await;
    let dep = c.must_get(&format!("{CMS}/or-dep")).await;
    assert!(dep["metadata"]["ownerReferences"].as_array().is_none_or(|a| a.is_empty()), "{dep}");
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector"]).await;
    let o = owner(&c, "fg-owner").await;
    // the dependent's own finalizer keeps it (being deleted) until the test lets go
    dependent(&c, "fg-dep", vec![owner_ref(&o, true)], &["test.ferrokube.io/hold"]).await;
    let (status, marked) = c.delete_with(&format!("{CMS}/fg-owner"), &json!({"propagationPolicy": "Foreground"})).await;
    assert_eq!(status, StatusCode::OK, "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{marked}");
    let dep_path = format!("{CMS}/fg-dep");
    eventually(WAIT, "the dependent to be marked for deletion", || async {
        let dep = c.must_get(&dep_path).await;
        (!dep["metadata"]["deletionTimestamp"].is_null()).then_some(())
    })
    .await;
    // the owner waits while a blocking dependent exists
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = c.must_get(&format!("{CMS}/fg-owner")).await;
    assert!(!still["metadata"]["deletionTimestamp"].is_null(), "{still}");
    let release = json!({"metadata": {"finalizers": null}});
    let (status, body) = c.patch(&dep_path, "application/merge-patch+json", &release).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gone(&c, "fg-dep").await;
    gone(&c, "fg-owner").await;
}

#[tokio::test]
async fn dangling_references_next_to_a_live_owner_are_removed() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector"]).await;
    let live = owner(&c, "live-owner").await;
    let doomed = owner(&c, "doomed-owner").await;
    let mut second = owner_ref(&doomed, false);
    second["controller"] = json!(false);
    dependent(&c, "two-owners", vec![owner_ref(&live, false), second], &[]).await;
    c.delete(&format!("{CMS}/doomed-owner")).await;
    let path = format!("{CMS}/two-owners");
    eventually(WAIT, "the dangling reference to go", || async {
        let dep = c.must_get(&path).await;
        (dep["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_cascade_flags() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector"]).await;
    for v in KUBECTL_VERSIONS {
        let tag = v.replace('.', "-");
        let o = owner(&c, &format!("k-orphan-{tag}")).await;
        dependent(&c, &format!("k-orphan-dep-{tag}"), vec![owner_ref(&o, true)], &[]).await;
        c.kubectl_ok(v, &["delete", "configmap", &format!("k-orphan-{tag}"), "--cascade=orphan"]);
        let o = owner(&c, &format!("k-fg-{tag}")).await;
        dependent(&c, &format!("k-fg-dep-{tag}"), vec![owner_ref(&o, true)], &[]).await;
        c.kubectl_ok(v, &["delete", "configmap", &format!("k-fg-{tag}"), "--cascade=foreground"]);
        // kubectl waited for the owner; the foreground dependent went first
        assert_eq!(c.get(&format!("{CMS}/k-fg-dep-{tag}")).await.0, StatusCode::NOT_FOUND);
        let kept = c.must_get(&format!("{CMS}/k-orphan-dep-{tag}")).await;
        assert!(kept["metadata"]["ownerReferences"].as_array().is_none_or(|a| a.is_empty()), "{kept}");
    }
}

/// The three cascade modes on a real Deployment, its ReplicaSet and pods (bound and
/// started by the test's pod driver), with the workload controllers running. kubectl
/// blocks its thread: the driver needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_cascade_in_all_three_modes() {
    let c = Cluster::start().await;
    let _driver = common::controllers::PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=garbagecollector,deployment,replicaset"]).await;
    let v = "1.33";
    let pods_of = |app: &'static str| {
        let c = &c;
        async move {
            let (_, list) = c.get(&format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}")).await;
            list["items"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    let sets_of = |app: &'static str| {
        let c = &c;
        async move {
            let (_, list) =
                c.get(&format!("/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3D{app}")).await;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    for app in ["bg", "orphan", "fg"] {
        c.kubectl_ok(v, &["create", "deployment", app, "--image=nginx", "--replicas=2"]);
        c.kubectl_ok(v, &["rollout", "status", &format!("deployment/{app}"), "--timeout=60s"]);
    }
    // background (kubectl's default): the ReplicaSet and pods follow
    c.kubectl_ok(v, &["delete", "deployment", "bg"]);
    eventually(WAIT, "bg's ReplicaSet and pods to go", || async {
        (sets_of("bg").await.is_empty() && pods_of("bg").await == 0).then_some(())
    })
    .await;
    // orphan: the ReplicaSet and its pods stay, without an owner
    c.kubectl_ok(v, &["delete", "deployment", "orphan", "--cascade=orphan"]);
    let sets = eventually(WAIT, "orphan's ReplicaSet to lose its owner", || async {
        let sets = sets_of("orphan").await;
        sets.iter().all(|s| s["metadata"]["ownerReferences"].as_array().is_none_or(|o| o.is_empty())).then_some(sets)
    })
    .await;
    assert_eq!(sets.len(), 1);
    assert_eq!(pods_of("orphan").await, 2);
    // foreground: kubectl waits until the pods and the ReplicaSet are gone
    c.kubectl_ok(v, &["delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s"]);
    assert!(sets_of("fg").await.is_empty());
    eventually(WAIT, "fg's pods to go", || async { (pods_of("fg").await == 0).then_some(()) }).await;
}
