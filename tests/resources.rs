//! Every kind in the resource table: create / get / list / update / delete by raw HTTP
//! with a minimal valid object, and the status subresource rules.

mod common;

use common::*;

/// One kind: its collection path, a minimal object, and a status only /status may write.
struct Kind {
    collection: &'static str,
    kind: &'static str,
    api_version: &'static str,
    body: Value,
    status: Option<Value>,
}

fn template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "restartPolicy": "Always"},
    })
}

fn workload(app: &str) -> Value {
    json!({"selector": {"matchLabels": {"app": app}}, "template": template(app)})
}

fn job_spec() -> Value {
    json!({"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "restartPolicy": "Never"}}})
}

fn kinds() -> Vec<Kind> {
    let k = |collection, api_version, kind, body: Value, status: Option<Value>| Kind {
        collection,
        kind,
        api_version,
        body,
        status,
    };
    vec![
        k(
            "/api/v1/namespaces",
            "v1",
            "Namespace",
            json!({}),
            Some(json!({"phase": "Active", "conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]})),
        ),
        k(
            "/api/v1/namespaces/default/pods",
            "v1",
            "Pod",
            json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}),
            Some(json!({"phase": "Running", "podIP": "10.244.0.5"})),
        ),
        k("/api/v1/nodes", "v1", "Node", json!({"spec": {}}), Some(json!({"capacity": {"cpu": "4", "pods": "110"}}))),
        k(
            "/api/v1/namespaces/default/services",
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            Some(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}})),
        ),
        k(
            "/api/v1/namespaces/default/endpoints",
            "v1",
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 80}]}]}),
            None,
        ),
        k("/api/v1/namespaces/default/configmaps", "v1", "ConfigMap", json!({"data": {"k": "v"}}), None),
        k("/api/v1/namespaces/default/secrets", "v1", "Secret", json!({"data": {"k": "dg=="}}), None),
        k("/api/v1/namespaces/default/serviceaccounts", "v1", "ServiceAccount", json!({}), None),
        k(
            "/api/v1/namespaces/default/events",
            "v1",
            "Event",
            json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Test", "message": "hello", "type": "Normal"}),
            None,
        ),
        k(
            "/api/v1/persistentvolumes",
            "v1",
            "PersistentVolume",
            json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/pv"}}}),
            Some(json!({"phase": "Available"})),
        ),
        k(
            "/api/v1/namespaces/default/persistentvolumeclaims",
            "v1",
            "PersistentVolumeClaim",
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            Some(json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}})),
        ),
        k(
            "/api/v1/namespaces/default/replicationcontrollers",
            "v1",
            "ReplicationController",
            json!({"spec": {"replicas": 1, "selector": {"app": "rc"}, "template": template("rc")}}),
            Some(json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 1})),
        ),
        k(
            "/api/v1/namespaces/default/limitranges",
            "v1",
            "LimitRange",
            json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}}),
            None,
        ),
        k(
            "/api/v1/namespaces/default/resourcequotas",
            "v1",
            "ResourceQuota",
            json!({"spec": {"hard": {"pods": "10"}}}),
            Some(json!({"hard": {"pods": "10"}, "used": {"pods": "1"}})),
        ),
        k(
            "/apis/apps/v1/namespaces/default/deployments",
            "apps/v1",
            "Deployment",
            json!({"spec": workload("deploy")}),
            Some(json!({"replicas": 1, "readyReplicas": 1, "observedGeneration": 1})),
        ),
        k(
            "/apis/apps/v1/namespaces/default/replicasets",
            "apps/v1",
            "ReplicaSet",
            json!({"spec": workload("rs")}),
            Some(json!({"replicas": 1, "fullyLabeledReplicas": 1})),
        ),
        k(
            "/apis/apps/v1/namespaces/default/statefulsets",
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"serviceName": "sts", "selector": {"matchLabels": {"app": "sts"}}, "template": template("sts")}}),
            Some(json!({"replicas": 1, "currentReplicas": 1})),
        ),
        k(
            "/apis/apps/v1/namespaces/default/daemonsets",
            "apps/v1",
            "DaemonSet",
            json!({"spec": workload("ds")}),
            Some(
                json!({"currentNumberScheduled": 2, "desiredNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1}),
            ),
        ),
        k(
            "/apis/apps/v1/namespaces/default/controllerrevisions",
            "apps/v1",
            "ControllerRevision",
            json!({"revision": 1, "data": {"spec": {"template": {}}}}),
            None,
        ),
        k(
            "/apis/batch/v1/namespaces/default/jobs",
            "batch/v1",
            "Job",
            json!({"spec": job_spec()}),
            Some(json!({"active": 1, "startTime": "2025-01-01T00:00:00Z"})),
        ),
        k(
            "/apis/batch/v1/namespaces/default/cronjobs",
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job_spec()}}}),
            Some(json!({"lastScheduleTime": "2025-01-01T00:00:00Z"})),
        ),
        k(
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            "coordination.k8s.io/v1",
            "Lease",
            json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}),
            None,
        ),
        k(
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            "networking.k8s.io/v1",
            "Ingress",
            json!({"spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
            Some(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.20"}]}})),
        ),
        k(
            "/apis/events.k8s.io/v1/namespaces/default/events",
            "events.k8s.io/v1",
            "Event",
            json!({
                "eventTime": "2025-01-01T00:00:00.000000Z",
                "reportingController": "example.com/ctl",
                "reportingInstance": "ctl-1",
                "action": "Test",
                "reason": "Tested",
                "type": "Normal",
                "note": "hello",
                "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            }),
            None,
        ),
        k(
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            "policy/v1",
            "PodDisruptionBudget",
            json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}),
            Some(json!({"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2})),
        ),
        k(
            "/apis/storage.k8s.io/v1/storageclasses",
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"provisioner": "example.com/disks"}),
            None,
        ),
        k(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.244.0.9"]}], "ports": [{"port": 80}]}),
            None,
        ),
    ]
}

fn object(kind: &Kind, name: &str) -> Value {
    let mut body = kind.body.clone();
    body["apiVersion"] = json!(kind.api_version);
    body["kind"] = json!(kind.kind);
    body["metadata"] = json!({"name": name, "labels": {"suite": "crud"}});
    body
}

/// The API server's quota loop fills a new ResourceQuota's status a moment after create
/// (as upstream's quota controller does); a read-modify-write before that races it and
/// gets 409. Wait for that first status write and return the object as it then is.
async fn settled(c: &Cluster, kind: &Kind, path: &str, created: Value) -> Value {
    if kind.kind != "ResourceQuota" {
        return created;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = c.must_get(path).await;
        if got.pointer("/status/hard").is_some() {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "quota status never written: {got}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// create / get / list / update / delete for every kind of the resource table.
#[tokio::test]
async fn crud_every_kind() {
    let c = Cluster::start().await;
    // a deleted namespace is emptied and finalized by the namespace controller
    let _cm = common::controllers::start_controller_manager(&c, &["--controllers=namespace"]).await;
    let kinds = kinds();
    assert_eq!(kinds.len(), 27, "one entry per served resource");
    for kind in &kinds {
        let name = format!("crud-{}", kind.kind.to_lowercase());
        let path = format!("{}/{name}", kind.collection);
        let what = format!("{} {}", kind.api_version, kind.kind);

        // create
        let created = c.create(kind.collection, &object(kind, &name)).await;
        let created = settled(&c, kind, &path, created).await;
        assert_eq!(created["kind"], kind.kind, "{what}: {created}");
        assert_eq!(created["apiVersion"], kind.api_version, "{what}: {created}");
        assert_eq!(created["metadata"]["name"], name.as_str(), "{what}");
        let rv: i64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(created["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36), "{what}: {created}");
        if kind.collection.contains("/namespaces/default/") {
            assert_eq!(created["metadata"]["namespace"], "default", "{what}");
        } else {
            assert!(created["metadata"].get("namespace").is_none(), "{what}: cluster-scoped with a namespace");
        }

        // get
        let got = c.must_get(&path).await;
        assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"], "{what}");
        assert_eq!(got["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"], "{what}");
        assert_eq!(got["kind"], kind.kind, "{what}");

        // list, unfiltered and by label
        let list = c.must_get(kind.collection).await;
        assert_eq!(list["kind"], format!("{}List", kind.kind), "{what}");
        assert_eq!(list["apiVersion"], kind.api_version, "{what}");
        assert!(item_names(&list).contains(&name), "{what}: {name} not listed");
        let list = c.must_get(&format!("{}?labelSelector=suite%3Dcrud", kind.collection)).await;
        assert_eq!(item_names(&list), std::slice::from_ref(&name), "{what}");
        for item in list["items"].as_array().unwrap() {
            assert_eq!(item["kind"], kind.kind, "{what}: list items carry their kind");
        }

        // update: a new label
        let mut changed = got.clone();
        changed["metadata"]["labels"]["updated"] = json!("yes");
        let (status, updated) = c.put(&path, &changed).await;
        assert_eq!(status, StatusCode::OK, "{what}: PUT {updated}");
        assert_eq!(updated["metadata"]["labels"]["updated"], "yes", "{what}");
        let new_rv: i64 = updated["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(new_rv > rv, "{what}: resourceVersion did not advance ({rv} -> {new_rv})");
        assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"], "{what}: uid changed on update");
        assert_eq!(
            updated["metadata"]["creationTimestamp"], created["metadata"]["creationTimestamp"],
            "{what}: creationTimestamp changed on update"
        );
        assert_eq!(c.must_get(&path).await["metadata"]["labels"]["updated"], "yes", "{what}");

        // patch (merge) another label
        let (status, patched) =
            c.patch(&path, "application/merge-patch+json", &json!({"metadata": {"labels": {"patched": "1"}}})).await;
        assert_eq!(status, StatusCode::OK, "{what}: PATCH {patched}");
        assert_eq!(patched["metadata"]["labels"]["patched"], "1", "{what}");
        assert_eq!(patched["metadata"]["labels"]["updated"], "yes", "{what}");

        // delete
        let (status, deleted) = c.delete(&path).await;
        assert!(matches!(status, StatusCode::OK | StatusCode::ACCEPTED), "{what}: DELETE {status} {deleted}");
        if kind.kind == "Namespace" {
            // namespaces finish deleting in the background
            c.wait_gone(&path).await;
        }
        let (status, body) = c.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: still there after delete: {body}");
        assert_eq!(status_reason(status, &body), "NotFound");
        let (status, body) = c.delete(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: second delete {body}");
    }
}

/// PUT .../status writes only the status; PUT on the main resource keeps the stored
/// status whatever the body says. Kinds without a status subresource answer 404 there.
#[tokio::test]
async fn status_subresource_for_every_kind() {
    let c = Cluster::start().await;
    for (i, kind) in kinds().into_iter().enumerate() {
        // core and events.k8s.io Events share one key space: names differ by index
        let name = format!("st-{i}-{}", kind.kind.to_lowercase());
        let path = format!("{}/{name}", kind.collection);
        let what = format!("{} {}", kind.api_version, kind.kind);
        let created = c.create(kind.collection, &object(&kind, &name)).await;

        let Some(status) = kind.status.clone() else {
            let (code, body) = c.put(&format!("{path}/status"), &created).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{what} has no status subresource: {body}");
            continue;
        };

        // /status: status changes, a label sent alongside does not
        // The quota loop may write this quota's status first (the same status, computed
        // from the one pod in the namespace): then the write conflicts, and a client reads
        // again and retries, as here.
        let mut current = created.clone();
        let (code, after) = loop {
            let mut body = current.clone();
            body["status"] = status.clone();
            body["metadata"]["labels"]["via-status"] = json!("yes");
            let (code, after) = c.put(&format!("{path}/status"), &body).await;
            if code != StatusCode::CONFLICT || kind.kind != "ResourceQuota" {
                break (code, after);
            }
            current = c.must_get(&path).await;
        };
        assert_eq!(code, StatusCode::OK, "{what}: PUT /status {after}");
        for (field, value) in status.as_object().unwrap() {
            assert_eq!(&after["status"][field], value, "{what}: status.{field} not written: {after}");
        }
        assert!(after["metadata"]["labels"].get("via-status").is_none(), "{what}: /status wrote metadata: {after}");
        let stored = c.must_get(&path).await;
        assert_eq!(stored["status"], after["status"], "{what}");
        assert!(stored["metadata"]["labels"].get("via-status").is_none(), "{what}");
        assert!(
            stored["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"],
            "{what}: a status write must advance the resourceVersion"
        );
        // GET of /status returns the object too
        let via_status = c.must_get(&format!("{path}/status")).await;
        assert_eq!(via_status["status"], stored["status"], "{what}");

        // main resource: a label changes, a status in the body does not
        let mut body = stored.clone();
        body["status"] = json!({});
        body["metadata"]["labels"]["via-main"] = json!("yes");
        let (code, after) = c.put(&path, &body).await;
        assert_eq!(code, StatusCode::OK, "{what}: PUT {after}");
        assert_eq!(after["metadata"]["labels"]["via-main"], "yes", "{what}");
        assert_eq!(after["status"], stored["status"], "{what}: PUT on the main resource changed status");
        assert_eq!(c.must_get(&path).await["status"], stored["status"], "{what}");

        // merge patch on /status
        let (code, after) = c
            .patch(
                &format!("{path}/status"),
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"patch-status": "x"}}, "status": status}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{what}: PATCH /status {after}");
        assert!(after["metadata"]["labels"].get("patch-status").is_none(), "{what}: PATCH /status wrote metadata");
    }
}
