//! PersistentVolume binding and the local-path provisioner: static volumes bind to
//! fitting claims, the default class provisions directories, released volumes are
//! reclaimed by their policy, WaitForFirstConsumer waits for the scheduler's node.

mod common;

use std::time::Duration;

use common::controllers::{eventually, start_controller_manager};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CLAIMS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";

async fn start(c: &Cluster) -> (common::controllers::Component, std::path::PathBuf) {
    let dir = c.dir.path().join("local-path");
    let flag = format!("--local-path-dir={}", dir.display());
    let cm =
        start_controller_manager(c, &["--controllers=persistentvolume-binder,local-path-provisioner", &flag]).await;
    (cm, dir)
}

fn claim(name: &str, size: &str, class: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})
}

async fn bound(c: &Cluster, name: &str) -> Value {
    let path = format!("{CLAIMS}/{name}");
    eventually(WAIT, &format!("{name} to bind"), || async {
        let pvc = c.must_get(&path).await;
        (pvc["status"]["phase"] == "Bound").then_some(pvc)
    })
    .await
}

#[tokio::test]
async fn static_volumes_bind_to_the_smallest_fit_and_are_released() {
    let c = Cluster::start().await;
    let (_cm, _) = start(&c).await;
    for (name, size) in [("pv-big", "5Gi"), ("pv-small", "1Gi"), ("pv-tiny", "100Mi")] {
        let pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": format!("/tmp/{name}")}},
        });
        c.create("/api/v1/persistentvolumes", &pv).await;
    }
    c.create(CLAIMS, &claim("data", "500Mi", Some("manual"))).await;
    let pvc = bound(&c, "data").await;
    assert_eq!(pvc["spec"]["volumeName"], "pv-small", "{pvc}");
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
    let pv = c.must_get("/api/v1/persistentvolumes/pv-small").await;
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    for v in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(v, &["get", "pvc", "data"]);
        assert!(out.contains("Bound") && out.contains("pv-small"), "{out}");
    }
    c.delete(&format!("{CLAIMS}/data")).await;
    eventually(WAIT, "the volume to be released", || async {
        let pv = c.must_get("/api/v1/persistentvolumes/pv-small").await;
        (pv["status"]["phase"] == "Released").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_default_class_provisions_local_paths_and_deletes_them() {
    let c = Cluster::start().await;
    let (_cm, dir) = start(&c).await;
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "ferrokube.io/local-path",
    });
    c.create("/apis/storage.k8s.io/v1/storageclasses", &class).await;
    for v in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(v, &["get", "storageclass"]);
        assert!(out.contains("standard (default)") && out.contains("Delete") && out.contains("Immediate"), "{out}");
    }
    // DefaultStorageClass gives a claim that names no class the default one
    let created = c.create(CLAIMS, &claim("www", "1Gi", None)).await;
    assert_eq!(created["spec"]["storageClassName"], "standard", "{created}");
    let pvc = bound(&c, "www").await;
    let volume = pvc["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = c.must_get(&format!("/api/v1/persistentvolumes/{volume}")).await;
    let path = pv["spec"]["hostPath"]["path"].as_str().unwrap().to_string();
    assert!(path.starts_with(&dir.display().to_string()), "{pv}");
    assert!(std::path::Path::new(&path).is_dir(), "{path} was not made");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");

    c.delete(&format!("{CLAIMS}/www")).await;
    c.wait_gone(&format!("/api/v1/persistentvolumes/{volume}")).await;
    eventually(WAIT, "the directory to be removed", || async { (!std::path::Path::new(&path).exists()).then_some(()) })
        .await;
}

#[tokio::test]
async fn wait_for_first_consumer_waits_for_the_selected_node() {
    let c = Cluster::start().await;
    let (_cm, _) = start(&c).await;
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
        "provisioner": "ferrokube.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
    });
    c.create("/apis/storage.k8s.io/v1/storageclasses", &class).await;
    c.create(CLAIMS, &claim("late", "1Gi", Some("local"))).await;
    eventually(WAIT, "the WaitForFirstConsumer event", || async {
        let (_, events) = c.get("/api/v1/namespaces/default/events").await;
        let found = events["items"].as_array().into_iter().flatten().any(|e| e["reason"] == "WaitForFirstConsumer");
        found.then_some(())
    })
    .await;
    let pvc = c.must_get(&format!("{CLAIMS}/late")).await;
    assert_eq!(pvc["status"]["phase"], "Pending", "{pvc}");
    // the scheduler's choice
    let pick = json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-7"}}});
    let (status, body) = c.patch(&format!("{CLAIMS}/late"), "application/merge-patch+json", &pick).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pvc = bound(&c, "late").await;
    let pv = c.must_get(&format!("/api/v1/persistentvolumes/{}", pvc["spec"]["volumeName"].as_str().unwrap())).await;
    let term = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(term["values"], json!(["node-7"]), "{pv}");
}
