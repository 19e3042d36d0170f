//! The namespace controller with the API server's half of namespace deletion: a
//! deleted namespace turns Terminating, the controller empties it (waiting for the
//! contents' finalizers) and finalizes it, then the namespace goes.

mod common;

use common::controllers::start_controller_manager;
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, configmap, json, namespace};

/// Deleting a namespace marks it Terminating, refuses new objects in it, and removes
/// it only after its contents are gone, including those waiting on finalizers.
#[tokio::test]
async fn namespace_deletion_waits_for_finalized_contents() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=namespace"]).await;
    // a namespace goes away with its contents
    c.create("/api/v1/namespaces", &namespace("doomed")).await;
    c.create("/api/v1/namespaces/doomed/configmaps", &configmap("inside", json!({}))).await;
    let (status, ns) = c.delete("/api/v1/namespaces/doomed").await;
    assert_eq!(status, StatusCode::OK, "{ns}");
    c.wait_gone("/api/v1/namespaces/doomed").await;
    assert!(c.etcd_keys("/registry/configmaps/doomed/").await.is_empty(), "namespace contents outlived it");

    // contents are deleted before the namespace (compared by etcd's deletion revisions)
    c.create("/api/v1/namespaces", &namespace("holding")).await;
    let mut inside = configmap("inside", json!({}));
    inside["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.create("/api/v1/namespaces/holding/configmaps", &inside).await;
    let before = c.etcd_revision().await;
    let (status, body) = c.delete("/api/v1/namespaces/holding").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["phase"], "Terminating", "{body}");
    let (status, body) = c.post("/api/v1/namespaces/holding/configmaps", &configmap("late", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "created in a terminating namespace: {body}");
    // the namespace's cleanup marks the configmap for deletion
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let inside = c.must_get("/api/v1/namespaces/holding/configmaps/inside").await;
        if inside["metadata"]["deletionTimestamp"].is_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "namespace cleanup never marked its contents: {inside}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = c
        .patch(
            "/api/v1/namespaces/holding/configmaps/inside",
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.wait_gone("/api/v1/namespaces/holding").await;
    let cm_gone = c.etcd_deleted_at("/registry/configmaps/holding/inside", before).await.expect("configmap deleted");
    let ns_gone = c.etcd_deleted_at("/registry/namespaces/holding", before).await.expect("namespace deleted");
    assert!(
        cm_gone < ns_gone,
        "the namespace was deleted (revision {ns_gone}) while a configmap in it still waited on a finalizer (deleted at {cm_gone})"
    );
}

#[tokio::test]
async fn without_the_controller_a_namespace_stays_terminating_until_finalized() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("stuck")).await;
    let (status, body) = c.delete("/api/v1/namespaces/stuck").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["finalizers"], json!(["kubernetes"]), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ns = c.must_get("/api/v1/namespaces/stuck").await;
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns}");
    // what the namespace controller does once the namespace is empty
    let finalize =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "stuck"}, "spec": {"finalizers": []}});
    let (status, body) = c.put("/api/v1/namespaces/stuck/finalize", &finalize).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.wait_gone("/api/v1/namespaces/stuck").await;
}

#[tokio::test]
async fn kubectl_sees_the_deletion_conditions() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=namespace"]).await;
    for v in KUBECTL_VERSIONS {
        let ns = format!("held-{}", v.replace('.', "-"));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;
        let mut held = configmap("held", json!({}));
        held["metadata"]["finalizers"] = json!(["example.com/hold"]);
        c.create(&format!("/api/v1/namespaces/{ns}/configmaps"), &held).await;
        c.kubectl_ok(v, &["delete", "namespace", &ns, "--wait=false"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = c.kubectl_ok(v, &["describe", "namespace", &ns]);
            if out.contains("NamespaceFinalizersRemaining") && out.contains("example.com/hold in 1 resource instances")
            {
                assert!(out.contains("Terminating"), "{out}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no deletion conditions: {out}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let release = json!({"metadata": {"finalizers": null}});
        c.patch(&format!("/api/v1/namespaces/{ns}/configmaps/held"), "application/merge-patch+json", &release).await;
        c.kubectl_ok(v, &["wait", "--for=delete", &format!("namespace/{ns}"), "--timeout=30s"]);
    }
}
