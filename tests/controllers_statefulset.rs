//! The StatefulSet controller against a real API server and etcd, the real
//! controller-manager process, and the pod driver (pods annotated `hold` are made Running
//! by the test itself, to watch the ordering).

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, events_of, eventually, set_pod_phase, set_pod_running, start_controller_manager};
use common::{Cluster, StatusCode, Value, fixture, json};

const WAIT: Duration = Duration::from_secs(60);
const SETS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn web(replicas: i32, extra: Value, held: bool) -> Value {
    let annotations = if held { json!({"test.ferrokube.io/hold": "true"}) } else { json!({}) };
    let mut set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {
            "serviceName": "nginx", "replicas": replicas,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}, "annotations": annotations},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        set["spec"][k] = v.clone();
    }
    set
}

/// Names of the set's pods that are not being deleted, sorted.
async fn pod_names(c: &Cluster) -> Vec<String> {
    let (_, list) = c.get(&format!("{PODS}?labelSelector=app%3Dnginx")).await;
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

async fn wait_pods(c: &Cluster, want: &[&str]) {
    eventually(WAIT, &format!("pods {want:?}"), || async { (pod_names(c).await == want).then_some(()) }).await;
}

async fn wait_status(c: &Cluster, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, what, || async {
        let set = c.must_get(&format!("{SETS}/web")).await;
        check(&set["status"]).then_some(set)
    })
    .await
}

async fn pod(c: &Cluster, name: &str) -> Value {
    c.must_get(&format!("{PODS}/{name}")).await
}

/// The pod, or null while it does not exist (between a deletion and its replacement).
async fn pod_or_null(c: &Cluster, name: &str) -> Value {
    let (status, pod) = c.get(&format!("{PODS}/{name}")).await;
    if status == StatusCode::OK { pod } else { Value::Null }
}

fn revision(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or_default().to_string()
}

async fn has_event(c: &Cluster, reason: &str, message: &str) -> bool {
    events_of(c, "web").await.iter().any(|(r, m)| r == reason && m == message)
}

#[tokio::test]
async fn ordered_ready_creation_scale_down_and_rolling_update_with_partition() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=statefulset"]).await;

    // OrderedReady: web-1 only once web-0 is Running and Ready
    c.create(SETS, &web(3, json!({}), true)).await;
    wait_pods(&c, &["web-0"]).await;
    wait_status(&c, "replicas 1", |s| s["replicas"] == 1).await;
    assert_eq!(pod_names(&c).await, ["web-0"], "web-1 must wait for web-0");
    let p0 = pod(&c, "web-0").await;
    let labels = &p0["metadata"]["labels"];
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert!(revision(&p0).starts_with("web-"), "{p0}");
    assert_eq!(p0["spec"]["hostname"], "web-0");
    assert_eq!(p0["spec"]["subdomain"], "nginx");
    let volume = p0["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "www").cloned().unwrap();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "www-web-0");
    let claim = c.must_get("/api/v1/namespaces/default/persistentvolumeclaims/www-web-0").await;
    assert_eq!(claim["metadata"]["labels"]["app"], "nginx");
    for (i, next) in [(0, &["web-0", "web-1"][..]), (1, &["web-0", "web-1", "web-2"][..])] {
        set_pod_running(&c, "default", &format!("web-{i}")).await;
        wait_pods(&c, next).await;
    }
    set_pod_running(&c, "default", "web-2").await;
    let set = wait_status(&c, "3 ready", |s| s["readyReplicas"] == 3 && s["availableReplicas"] == 3).await;
    let st = &set["status"];
    assert_eq!(
        (st["replicas"].clone(), st["currentReplicas"].clone(), st["updatedReplicas"].clone()),
        (json!(3), json!(3), json!(3))
    );
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    assert_eq!(st["currentRevision"].as_str(), Some(revision(&p0).as_str()));
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["collisionCount"], 0);
    assert!(has_event(&c, "SuccessfulCreate", "create Pod web-0 in StatefulSet web successful").await);
    assert!(has_event(&c, "SuccessfulCreate", "create Claim www-web-0 Pod web-0 in StatefulSet web success").await);
    let (_, revs) = c.get("/apis/apps/v1/namespaces/default/controllerrevisions").await;
    assert_eq!(revs["items"].as_array().unwrap().len(), 1);
    assert_eq!(revs["items"][0]["revision"], 1);

    // a deleted pod comes back with the same name; a failed one is replaced
    c.delete(&format!("{PODS}/web-1")).await;
    eventually(WAIT, "web-1 recreated", || async {
        let p = pod_or_null(&c, "web-1").await;
        (p["metadata"]["uid"] != json!(null)
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["phase"] == "Pending")
            .then_some(())
    })
    .await;
    set_pod_running(&c, "default", "web-1").await;
    set_pod_phase(&c, "default", "web-2", "Failed").await;
    eventually(WAIT, "web-2 recreated", || async {
        let p = pod_or_null(&c, "web-2").await;
        (p["status"]["phase"] == "Pending" && p["metadata"]["deletionTimestamp"].is_null()).then_some(())
    })
    .await;
    assert!(has_event(&c, "RecreatingFailedPod", "StatefulSet default/web is recreating failed Pod web-2").await);
    set_pod_running(&c, "default", "web-2").await;
    wait_status(&c, "3 ready again", |s| s["readyReplicas"] == 3).await;

    // rolling update with partition 1: web-2 then web-1 get the new template, web-0 keeps the old
    let old = revision(&pod(&c, "web-0").await);
    let patch = json!({"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}},
    }});
    let (s, body) = c.patch(&format!("{SETS}/web"), "application/strategic-merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for name in ["web-2", "web-1"] {
        let p = eventually(WAIT, &format!("{name} updated"), || async {
            let p = pod_or_null(&c, name).await;
            (p["spec"]["containers"][0]["image"] == "nginx:1.27" && p["metadata"]["deletionTimestamp"].is_null())
                .then_some(p)
        })
        .await;
        assert_ne!(revision(&p), old);
        assert_eq!(
            pod(&c, "web-0").await["spec"]["containers"][0]["image"],
            "nginx:1.26",
            "web-0 is below the partition"
        );
        set_pod_running(&c, "default", name).await;
    }
    let set = wait_status(&c, "2 updated", |s| s["updatedReplicas"] == 2 && s["readyReplicas"] == 3).await;
    assert_eq!(set["status"]["currentRevision"].as_str(), Some(old.as_str()));
    assert_ne!(set["status"]["updateRevision"], set["status"]["currentRevision"]);
    assert_eq!(pod(&c, "web-0").await["spec"]["containers"][0]["image"], "nginx:1.26");

    // partition 0: web-0 follows, and the update revision becomes the current one
    let patch = json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}});
    let (s, body) = c.patch(&format!("{SETS}/web"), "application/merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    eventually(WAIT, "web-0 updated", || async {
        let p = pod_or_null(&c, "web-0").await;
        (p["spec"]["containers"][0]["image"] == "nginx:1.27" && p["metadata"]["deletionTimestamp"].is_null())
            .then_some(())
    })
    .await;
    set_pod_running(&c, "default", "web-0").await;
    let set = wait_status(&c, "rollout done", |s| s["updatedReplicas"] == 3 && s["readyReplicas"] == 3).await;
    assert_eq!(set["status"]["currentRevision"], set["status"]["updateRevision"]);
    assert_eq!(set["status"]["currentReplicas"], 3);
    let out = c.kubectl_ok("1.33", &["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(out.contains("roll out complete"), "{out}");
    let out = c.kubectl_ok("1.33", &["rollout", "history", "statefulset/web"]);
    assert!(out.contains('1') && out.contains('2'), "{out}");

    // scale down to 1: from the highest ordinal, claims kept
    let scale = json!({"spec": {"replicas": 1}});
    let (s, body) = c.patch(&format!("{SETS}/web"), "application/merge-patch+json", &scale).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    wait_pods(&c, &["web-0"]).await;
    assert!(has_event(&c, "SuccessfulDelete", "delete Pod web-2 in StatefulSet web successful").await);
    let (s, _) = c.get("/api/v1/namespaces/default/persistentvolumeclaims/www-web-2").await;
    assert_eq!(s, StatusCode::OK, "claims are retained on scale down by default");
}

#[tokio::test]
async fn parallel_on_delete_retention_and_the_tutorial_manifest() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=statefulset"]).await;

    // Parallel: every pod at once, unready or not; OnDelete: a template change waits for a deletion
    let extra = json!({
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "OnDelete"},
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
    });
    c.create(SETS, &web(3, extra, true)).await;
    wait_pods(&c, &["web-0", "web-1", "web-2"]).await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}});
    let (s, body) = c.patch(&format!("{SETS}/web"), "application/strategic-merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let set = wait_status(&c, "a new update revision", |s| s["updateRevision"] != s["currentRevision"]).await;
    assert_eq!(set["status"]["updatedReplicas"], 0);
    assert_eq!(pod(&c, "web-1").await["spec"]["containers"][0]["image"], "nginx:1.26");
    c.delete(&format!("{PODS}/web-1")).await;
    eventually(WAIT, "web-1 on the new template", || async {
        let p = pod_or_null(&c, "web-1").await;
        (p["spec"]["containers"][0]["image"] == "nginx:1.27").then_some(())
    })
    .await;

    // whenScaled: Delete removes the claims of the ordinals scaled away
    let scale = json!({"spec": {"replicas": 1}});
    c.patch(&format!("{SETS}/web"), "application/merge-patch+json", &scale).await;
    wait_pods(&c, &["web-0"]).await;
    for claim in ["www-web-1", "www-web-2"] {
        c.wait_gone(&format!("/api/v1/namespaces/default/persistentvolumeclaims/{claim}")).await;
    }
    let (s, _) = c.get("/api/v1/namespaces/default/persistentvolumeclaims/www-web-0").await;
    assert_eq!(s, StatusCode::OK);

    // the tutorial's database StatefulSet, applied with kubectl
    let manifest = fixture("manifests/database-statefulset.yaml");
    c.kubectl_ok("1.33", &["apply", "-f", manifest.to_str().unwrap()]);
    let set = eventually(WAIT, "database ready", || async {
        let s = c.must_get(&format!("{SETS}/database-statefulset")).await;
        (s["status"]["readyReplicas"] == 1).then_some(s)
    })
    .await;
    assert_eq!(set["status"]["replicas"], 1);
    let p = pod(&c, "database-statefulset-0").await;
    assert_eq!(p["spec"]["subdomain"], "database");
    c.must_get("/api/v1/namespaces/default/persistentvolumeclaims/database-data-database-statefulset-0").await;

    // an orphan pod with a member's name and the selector's labels is adopted, not replaced
    let mut orphan = common::pod("adopt-0", "nginx:1.26");
    orphan["metadata"]["labels"] = json!({"app": "adopt"});
    let orphan = c.create(PODS, &orphan).await;
    let mut set = web(1, json!({"selector": {"matchLabels": {"app": "adopt"}}}), false);
    set["metadata"]["name"] = json!("adopt");
    set["spec"]["template"]["metadata"]["labels"] = json!({"app": "adopt"});
    c.create(SETS, &set).await;
    eventually(WAIT, "adopt-0 adopted", || async {
        let p = pod(&c, "adopt-0").await;
        let owner = &p["metadata"]["ownerReferences"][0];
        (owner["kind"] == "StatefulSet" && owner["name"] == "adopt").then_some(())
    })
    .await;
    assert_eq!(pod(&c, "adopt-0").await["metadata"]["uid"], orphan["metadata"]["uid"]);

    // relabelled out of the selector, it is released
    let relabel = json!({"metadata": {"labels": {"app": "elsewhere"}}});
    c.patch(&format!("{PODS}/adopt-0"), "application/merge-patch+json", &relabel).await;
    eventually(WAIT, "adopt-0 released", || async {
        let p = pod(&c, "adopt-0").await;
        p["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()).then_some(())
    })
    .await;
}
