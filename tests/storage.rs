//! What lands in etcd and how: upstream's key layout, JSON values, resourceVersion as
//! etcd's mod_revision, optimistic concurrency, server-owned metadata, and LIST
//! (pagination, history, selectors), all read back from the real etcd.

mod common;

use common::*;

fn rv_of(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion: {obj}"))
        .parse()
        .unwrap_or_else(|_| panic!("resourceVersion is not an integer: {obj}"))
}

/// Keys are upstream's, values are JSON without a resourceVersion, and every served
/// resourceVersion is the key's etcd mod_revision; built-in objects exist after start.
#[tokio::test]
async fn etcd_layout_and_resource_versions() {
    let c = Cluster::start().await;

    // built-in namespaces and the kubernetes service, in etcd and through the API
    let ns_keys = c.etcd_keys("/registry/namespaces/").await;
    assert_eq!(
        ns_keys,
        [
            "/registry/namespaces/default",
            "/registry/namespaces/kube-node-lease",
            "/registry/namespaces/kube-public",
            "/registry/namespaces/kube-system"
        ]
    );
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = c.must_get(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(obj["status"]["phase"], "Active", "{obj}");
        assert_eq!(obj["metadata"]["labels"]["kubernetes.io/metadata.name"], ns, "{obj}");
    }
    let kubernetes = c.must_get("/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1", "{kubernetes}");
    assert!(c.etcd_get("/registry/services/specs/default/kubernetes").await.is_some());

    let created = [
        ("/api/v1/namespaces/default/pods", pod("p1", "nginx:1.25"), "/registry/pods/default/p1"),
        (
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}),
            "/registry/minions/node-1",
        ),
        ("/api/v1/namespaces/default/services", service("svc1", 80), "/registry/services/specs/default/svc1"),
        (
            "/api/v1/namespaces/default/endpoints",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "svc1"}}),
            "/registry/services/endpoints/default/svc1",
        ),
        ("/apis/apps/v1/namespaces/default/deployments", deployment("d1", "d1"), "/registry/deployments/default/d1"),
        ("/api/v1/namespaces", namespace("team-a"), "/registry/namespaces/team-a"),
        (
            "/api/v1/namespaces/default/replicationcontrollers",
            json!({
                "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc1"},
                "spec": {"selector": {"app": "rc1"}, "template": {"metadata": {"labels": {"app": "rc1"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            }),
            "/registry/controllers/default/rc1",
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing1"},
                "spec": {"defaultBackend": {"service": {"name": "svc1", "port": {"number": 80}}}},
            }),
            "/registry/ingress/default/ing1",
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "ev1"},
                "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "x.io/c",
                "reportingInstance": "c-1", "action": "Act", "reason": "Why", "type": "Normal",
                "note": "a note", "regarding": {"kind": "Pod", "name": "p1", "namespace": "default"},
            }),
            "/registry/events/default/ev1",
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            configmap("cm1", json!({"k": "v"})),
            "/registry/configmaps/default/cm1",
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"k": "dg=="}}),
            "/registry/secrets/default/s1",
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "node-1"}}),
            "/registry/leases/kube-node-lease/node-1",
        ),
    ];
    for (collection, body, key) in &created {
        let obj = c.create(collection, body).await;
        let (value, mod_revision) = c.etcd_get(key).await.unwrap_or_else(|| panic!("{key} not in etcd"));
        let stored: Value = serde_json::from_slice(&value).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"));
        assert_eq!(stored["metadata"]["name"], obj["metadata"]["name"], "{key}");
        assert_eq!(stored["metadata"]["uid"], obj["metadata"]["uid"], "{key}");
        assert!(stored["metadata"].get("resourceVersion").is_none(), "{key}: a stored resourceVersion: {stored}");
        assert_eq!(rv_of(&obj), mod_revision, "{key}: create answered a resourceVersion other than etcd's");
        let name = obj["metadata"]["name"].as_str().unwrap();
        let got = c.must_get(&format!("{collection}/{name}")).await;
        assert_eq!(rv_of(&got), mod_revision, "{key}: GET resourceVersion != mod_revision");
    }
    // events.k8s.io events are stored as core/v1 events, visible through both APIs
    let (value, _) = c.etcd_get("/registry/events/default/ev1").await.unwrap();
    let stored: Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(stored["apiVersion"], "v1", "{stored}");
    assert_eq!(stored["involvedObject"]["name"], "p1", "{stored}");
    let core = c.must_get("/api/v1/namespaces/default/events/ev1").await;
    assert_eq!((core["apiVersion"].as_str(), core["message"].as_str()), (Some("v1"), Some("a note")), "{core}");
    let ev = c.must_get("/apis/events.k8s.io/v1/namespaces/default/events/ev1").await;
    assert_eq!((ev["apiVersion"].as_str(), ev["note"].as_str()), (Some("events.k8s.io/v1"), Some("a note")), "{ev}");

    // a Service's cluster IP is recorded as an IPAddress under /registry/ipaddresses
    let svc = c.must_get("/api/v1/namespaces/default/services/svc1").await;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    let (value, _) = c.etcd_get(&format!("/registry/ipaddresses/{ip}")).await.expect("IPAddress key");
    let ipaddr: Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(ipaddr["spec"]["parentRef"]["name"], "svc1", "{ipaddr}");

    // list items carry their own mod_revision; the list its read revision
    let list = c.must_get("/api/v1/namespaces/default/configmaps").await;
    for item in list["items"].as_array().unwrap() {
        let key = format!("/registry/configmaps/default/{}", item["metadata"]["name"].as_str().unwrap());
        assert_eq!(rv_of(item), c.etcd_get(&key).await.unwrap().1, "{key}");
    }
    let list_rv: i64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(list_rv >= c.etcd_get("/registry/configmaps/default/cm1").await.unwrap().1);

    // update and delete move the revision as etcd does
    let mut cm = c.must_get("/api/v1/namespaces/default/configmaps/cm1").await;
    cm["data"]["k"] = json!("v2");
    let (status, updated) = c.put("/api/v1/namespaces/default/configmaps/cm1", &cm).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let (value, mod_revision) = c.etcd_get("/registry/configmaps/default/cm1").await.unwrap();
    assert_eq!(rv_of(&updated), mod_revision);
    assert_eq!(serde_json::from_slice::<Value>(&value).unwrap()["data"]["k"], "v2");
    // a no-op update writes nothing and keeps the resourceVersion
    let (status, same) = c.put("/api/v1/namespaces/default/configmaps/cm1", &updated).await;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(rv_of(&same), mod_revision, "a no-op update changed the resourceVersion");
    assert_eq!(c.etcd_get("/registry/configmaps/default/cm1").await.unwrap().1, mod_revision);

    let (status, _) = c.delete("/api/v1/namespaces/default/configmaps/cm1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(c.etcd_get("/registry/configmaps/default/cm1").await.is_none(), "the key outlived the delete");
}

/// 409 AlreadyExists, 409 Conflict on stale resourceVersions and delete preconditions,
/// server-owned uid/creationTimestamp/generation, generateName, and 404 for a missing
/// namespace.
#[tokio::test]
async fn optimistic_concurrency_and_server_owned_metadata() {
    let c = Cluster::start().await;
    let cms = "/api/v1/namespaces/default/configmaps";

    // create twice
    let first = c.create(cms, &configmap("dup", json!({"a": "1"}))).await;
    let (status, body) = c.post(cms, &configmap("dup", json!({"a": "2"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(status_reason(status, &body), "AlreadyExists");
    assert_eq!(body["details"]["name"], "dup", "{body}");
    assert_eq!(body["details"]["kind"], "configmaps", "{body}");
    assert_eq!(c.must_get(&format!("{cms}/dup")).await["data"]["a"], "1", "the second create overwrote");

    // uid and creationTimestamp are the server's, whatever the client sends
    let mut forged = configmap("forged", json!({}));
    forged["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    forged["metadata"]["creationTimestamp"] = json!("2001-01-01T00:00:00Z");
    let obj = c.create(cms, &forged).await;
    assert_ne!(obj["metadata"]["uid"], "00000000-0000-0000-0000-000000000000");
    assert_ne!(obj["metadata"]["creationTimestamp"], "2001-01-01T00:00:00Z");
    let ts = obj["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(ts.len() == 20 && ts.ends_with('Z') && ts.contains('T'), "creationTimestamp {ts}");
    assert!(first["metadata"]["uid"] != obj["metadata"]["uid"]);

    // update with a stale resourceVersion
    let mut v1 = c.must_get(&format!("{cms}/dup")).await;
    v1["data"]["a"] = json!("changed");
    let (status, v2) = c.put(&format!("{cms}/dup"), &v1).await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    v1["data"]["a"] = json!("stale write");
    let (status, body) = c.put(&format!("{cms}/dup"), &v1).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(status_reason(status, &body), "Conflict");
    assert_eq!(c.must_get(&format!("{cms}/dup")).await["data"]["a"], "changed");
    // a merge patch pinning a stale resourceVersion is a conflict too
    let stale = v1["metadata"]["resourceVersion"].clone();
    let (status, body) = c
        .patch(
            &format!("{cms}/dup"),
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": stale}, "data": {"a": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // without a resourceVersion an update is unconditional
    let mut unconditional = v2.clone();
    unconditional["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    unconditional["data"]["a"] = json!("forced");
    let (status, body) = c.put(&format!("{cms}/dup"), &unconditional).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // a uid in the body is a precondition: it must be the object's
    let mut other_uid = c.must_get(&format!("{cms}/dup")).await;
    other_uid["metadata"]["uid"] = json!("11111111-2222-3333-4444-555555555555");
    other_uid["data"]["a"] = json!("wrong object");
    let (status, body) = c.put(&format!("{cms}/dup"), &other_uid).await;
    assert_eq!(status, StatusCode::CONFLICT, "an update carrying another object's uid: {body}");
    assert_eq!(status_reason(status, &body), "Conflict");
    assert_eq!(c.must_get(&format!("{cms}/dup")).await["data"]["a"], "forced");
    let (status, body) = c
        .patch(
            &format!("{cms}/dup"),
            "application/merge-patch+json",
            &json!({"metadata": {"uid": "11111111-2222-3333-4444-555555555555"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a patch changing the uid: {body}");
    // the name in the body must match the URL
    let (status, body) = c.put(&format!("{cms}/other-name"), &unconditional).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // updating something that does not exist
    let (status, body) = c.put(&format!("{cms}/missing"), &configmap("missing", json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // concurrent writers without a resourceVersion never see a conflict: 40 merge
    // patches, each adding its own key, all land
    c.create(cms, &configmap("hot", json!({}))).await;
    let patches: Vec<_> = (0..40)
        .map(|i| {
            let c = &c;
            async move {
                let patch = json!({"data": {format!("k{i}"): "v"}});
                c.patch(&format!("{cms}/hot"), "application/merge-patch+json", &patch).await
            }
        })
        .collect();
    for (status, body) in futures::future::join_all(patches).await {
        assert_eq!(status, StatusCode::OK, "a concurrent patch failed: {body}");
    }
    let hot = c.must_get(&format!("{cms}/hot")).await;
    assert_eq!(hot["data"].as_object().map(|d| d.len()), Some(40), "lost patches: {hot}");
    // and 20 unconditional PUTs all succeed (last writer wins)
    let puts: Vec<_> = (0..20)
        .map(|i| {
            let c = &c;
            async move { c.put(&format!("{cms}/hot"), &configmap("hot", json!({"writer": i.to_string()}))).await }
        })
        .collect();
    for (status, body) in futures::future::join_all(puts).await {
        assert_eq!(status, StatusCode::OK, "a concurrent unconditional update failed: {body}");
    }

    // delete preconditions
    let current = c.must_get(&format!("{cms}/dup")).await;
    for precondition in [json!({"resourceVersion": "1"}), json!({"uid": "not-the-uid"})] {
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": precondition});
        let (status, body) = c.delete_with(&format!("{cms}/dup"), &options).await;
        assert_eq!(status, StatusCode::CONFLICT, "{precondition}: {body}");
        assert_eq!(status_reason(status, &body), "Conflict");
    }
    assert!(c.etcd_get("/registry/configmaps/default/dup").await.is_some(), "deleted despite a failed precondition");
    let (status, body) = c
        .delete_with(
            &format!("{cms}/dup"),
            &json!({"preconditions": {"uid": current["metadata"]["uid"], "resourceVersion": current["metadata"]["resourceVersion"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(c.etcd_get("/registry/configmaps/default/dup").await.is_none());
    // dryRun deletes nothing
    let (status, _) = c.delete(&format!("{cms}/forged?dryRun=All")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(c.etcd_get("/registry/configmaps/default/forged").await.is_some(), "dryRun=All deleted the object");

    // generation: 1 on create, bumped by spec changes only
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let d = c.create(deps, &deployment("gen", "gen")).await;
    assert_eq!(d["metadata"]["generation"], 1, "{d}");
    let mut d2 = d.clone();
    d2["metadata"]["labels"] = json!({"just": "metadata"});
    let (_, d2) = c.put(&format!("{deps}/gen"), &d2).await;
    assert_eq!(d2["metadata"]["generation"], 1, "a label change bumped generation: {d2}");
    let mut d3 = d2.clone();
    d3["spec"]["replicas"] = json!(3);
    let (_, d3) = c.put(&format!("{deps}/gen"), &d3).await;
    assert_eq!(d3["metadata"]["generation"], 2, "a spec change did not bump generation: {d3}");
    let mut st = d3.clone();
    st["status"] = json!({"replicas": 3, "observedGeneration": 2});
    let (status, st) = c.put(&format!("{deps}/gen/status"), &st).await;
    assert_eq!(status, StatusCode::OK, "{st}");
    assert_eq!(st["metadata"]["generation"], 2, "a status write bumped generation: {st}");
    let (_, patched) =
        c.patch(&format!("{deps}/gen"), "application/merge-patch+json", &json!({"spec": {"replicas": 4}})).await;
    assert_eq!(patched["metadata"]["generation"], 3, "{patched}");
    // a client cannot set generation
    let mut forged = patched.clone();
    forged["metadata"]["generation"] = json!(99);
    let (_, forged) = c.put(&format!("{deps}/gen"), &forged).await;
    assert_eq!(forged["metadata"]["generation"], 3, "{forged}");
    // configmaps do not track generation
    assert!(obj["metadata"].get("generation").is_none(), "{obj}");

    // generateName
    let mut generated = Vec::new();
    for _ in 0..3 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}});
        let obj = c.create(cms, &body).await;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with("gen-") && name.len() == "gen-".len() + 5, "generated name {name}");
        assert_eq!(obj["metadata"]["generateName"], "gen-");
        assert!(c.etcd_get(&format!("/registry/configmaps/default/{name}")).await.is_some());
        generated.push(name);
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 3, "generateName produced duplicates");
    let (status, body) =
        c.post(cms, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "Bad_"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = c.post(cms, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no name and no generateName: {body}");
    assert!(cause_fields(&body).contains(&"metadata.name".to_string()), "{body}");

    // a namespace that does not exist
    let (status, body) = c.post("/api/v1/namespaces/nowhere/configmaps", &configmap("x", json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(status_reason(status, &body), "NotFound");
    assert_eq!(body["details"]["name"], "nowhere", "{body}");
    assert_eq!(body["details"]["kind"], "namespaces", "{body}");
    assert!(c.etcd_keys("/registry/configmaps/nowhere/").await.is_empty());
    // the body's namespace must agree with the URL's
    let mut elsewhere = configmap("x", json!({}));
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    let (status, body) = c.post(cms, &elsewhere).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = c.delete("/api/v1/namespaces/default").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "deleting the default namespace: {body}");

    // a cluster-scoped object sent with a namespace: upstream drops the namespace
    let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-ns", "namespace": "default"}});
    let (status, body) = c.post("/api/v1/nodes", &node).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["metadata"].get("namespace").is_none(), "{body}");
    node["metadata"]["labels"] = json!({"x": "y"});
    let (status, body) = c.put("/api/v1/nodes/node-ns", &node).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["metadata"].get("namespace").is_none(), "{body}");
}

/// Finalizers hold a deletion: DELETE only marks the object (deletionTimestamp), and
/// the update that removes the last finalizer completes the deletion, as upstream.
#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let key = "/registry/configmaps/default/held";
    let mut held = configmap("held", json!({"k": "v"}));
    held["metadata"]["finalizers"] = json!(["example.com/first", "example.com/second"]);
    c.create(cms, &held).await;

    let (status, marked) = c.delete(&format!("{cms}/held")).await;
    assert!(matches!(status, StatusCode::OK | StatusCode::ACCEPTED), "{marked}");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    let stored = c.must_get(&format!("{cms}/held")).await;
    assert!(stored["metadata"]["deletionTimestamp"].is_string(), "{stored}");
    assert!(c.etcd_get(key).await.is_some());
    // a second DELETE changes nothing
    let (status, again) = c.delete(&format!("{cms}/held")).await;
    assert!(matches!(status, StatusCode::OK | StatusCode::ACCEPTED), "{again}");
    assert_eq!(again["metadata"]["deletionTimestamp"], stored["metadata"]["deletionTimestamp"]);
    // removing one of two finalizers leaves it marked
    let (status, body) = c
        .patch(
            &format!("{cms}/held"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": ["example.com/second"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(c.etcd_get(key).await.is_some(), "deleted while a finalizer remained");
    // removing the last one completes the deletion
    let mut last = c.must_get(&format!("{cms}/held")).await;
    last["metadata"]["finalizers"] = json!([]);
    let (status, body) = c.put(&format!("{cms}/held"), &last).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(c.etcd_get(key).await.is_none(), "the object outlived its last finalizer");
    assert_eq!(c.get(&format!("{cms}/held")).await.0, StatusCode::NOT_FOUND);

    // the same through a merge patch setting finalizers to null
    let mut held = configmap("held2", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/only"]);
    c.create(cms, &held).await;
    c.delete(&format!("{cms}/held2")).await;
    let (status, body) = c
        .patch(&format!("{cms}/held2"), "application/merge-patch+json", &json!({"metadata": {"finalizers": null}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(c.get(&format!("{cms}/held2")).await.0, StatusCode::NOT_FOUND);

    // an object not being deleted just loses the finalizer
    let mut kept = configmap("kept", json!({}));
    kept["metadata"]["finalizers"] = json!(["example.com/only"]);
    c.create(cms, &kept).await;
    let (status, body) = c
        .patch(&format!("{cms}/kept"), "application/merge-patch+json", &json!({"metadata": {"finalizers": null}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(c.etcd_get("/registry/configmaps/default/kept").await.is_some());
}

/// limit/continue paging over a consistent snapshot, 410 after compaction, reading an
/// old revision exactly, label and field selectors, and all-namespace lists.
#[tokio::test]
async fn lists_paginate_select_and_read_history() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("paged")).await;
    let cms = "/api/v1/namespaces/paged/configmaps";
    // the server publishes its root CA bundle in every namespace: let it arrive first
    while c.get(&format!("{cms}/kube-root-ca.crt")).await.0 != StatusCode::OK {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for i in 0..25 {
        c.create(cms, &configmap(&format!("cm-{i:02}"), json!({"i": i.to_string()}))).await;
    }

    // three pages of 10, 10 and 6 (cm-00 … cm-24, kube-root-ca.crt)
    let page1 = c.must_get(&format!("{cms}?limit=10")).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 10);
    assert_eq!(page1["metadata"]["remainingItemCount"], 16, "{}", page1["metadata"]);
    let token1 = page1["metadata"]["continue"].as_str().expect("a continue token").to_string();
    let snapshot = page1["metadata"]["resourceVersion"].clone();
    // written after page 1: a consistent list must not show it
    c.create(cms, &configmap("cm-late", json!({}))).await;
    let page2 = c.must_get(&format!("{cms}?limit=10&continue={token1}")).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 10);
    assert_eq!(page2["metadata"]["remainingItemCount"], 6, "{}", page2["metadata"]);
    assert_eq!(page2["metadata"]["resourceVersion"], snapshot, "pages are read at one revision");
    let token2 = page2["metadata"]["continue"].as_str().expect("a second continue token").to_string();
    let page3 = c.must_get(&format!("{cms}?limit=10&continue={token2}")).await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 6);
    assert!(page3["metadata"].get("continue").is_none_or(|t| t == ""), "{}", page3["metadata"]);
    assert!(page3["metadata"].get("remainingItemCount").is_none(), "{}", page3["metadata"]);
    let mut names: Vec<String> = [&page1, &page2, &page3].iter().flat_map(|p| item_names(p)).collect();
    let mut expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    expected.push("kube-root-ca.crt".into());
    assert_eq!(names, expected, "pages out of order, overlapping or missing items");
    names.dedup();
    assert_eq!(names.len(), 26);
    // the new object is there for a fresh list
    assert_eq!(c.must_get(cms).await["items"].as_array().unwrap().len(), 27);
    // limit with a selector still pages by matching items
    let sel = c.must_get(&format!("{cms}?limit=3&fieldSelector=metadata.name%21%3Dcm-00")).await;
    assert_eq!(item_names(&sel), ["cm-01", "cm-02", "cm-03"]);
    // continue together with a resourceVersion is refused
    let (status, body) = c.get(&format!("{cms}?limit=10&continue={token1}&resourceVersion=5")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // compaction past a token's revision: 410 Expired
    c.create(cms, &configmap("cm-after", json!({}))).await;
    let now = c.etcd_revision().await;
    c.etcd_compact(now).await;
    let (status, body) = c.get(&format!("{cms}?limit=10&continue={token1}")).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(status_reason(status, &body), "Expired");
    // and a fresh list still works after compaction
    assert_eq!(c.must_get(&format!("{cms}?limit=10")).await["items"].as_array().unwrap().len(), 10);

    // resourceVersionMatch=Exact reads the old state
    let old = c.create(cms, &configmap("history", json!({"v": "one"}))).await;
    let mut newer = old.clone();
    newer["data"]["v"] = json!("two");
    assert_eq!(c.put(&format!("{cms}/history"), &newer).await.0, StatusCode::OK);
    let old_rv = old["metadata"]["resourceVersion"].as_str().unwrap();
    let at_old = c
        .must_get(&format!(
            "{cms}?resourceVersion={old_rv}&resourceVersionMatch=Exact&fieldSelector=metadata.name%3Dhistory"
        ))
        .await;
    assert_eq!(at_old["items"][0]["data"]["v"], "one", "{at_old}");
    assert_eq!(at_old["metadata"]["resourceVersion"], old_rv);
    let all_old = c.must_get(&format!("{cms}?resourceVersion={old_rv}&resourceVersionMatch=Exact")).await;
    let hist: Vec<&Value> =
        all_old["items"].as_array().unwrap().iter().filter(|i| i["metadata"]["name"] == "history").collect();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["data"]["v"], "one");
    let current = c.must_get(&format!("{cms}?fieldSelector=metadata.name%3Dhistory")).await;
    assert_eq!(current["items"][0]["data"]["v"], "two");
    // an Exact read below the compaction is gone, one above the current revision too new
    let (status, body) = c.get(&format!("{cms}?resourceVersion=2&resourceVersionMatch=Exact")).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    let (status, body) = c.get(&format!("{cms}?resourceVersion=99999999&resourceVersionMatch=Exact")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "a future resourceVersion: {body}");
    let (status, body) = c.get(&format!("{cms}?resourceVersionMatch=Exact")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // label selectors
    let pods = "/api/v1/namespaces/default/pods";
    for (name, labels) in [
        ("web-1", json!({"app": "web", "tier": "front"})),
        ("web-2", json!({"app": "web", "tier": "back"})),
        ("db-1", json!({"app": "db", "tier": "back"})),
        ("bare", json!({})),
    ] {
        let mut p = pod(name, "nginx:1.25");
        p["metadata"]["labels"] = labels;
        c.create(pods, &p).await;
    }
    for (selector, want) in [
        ("app=web", vec!["web-1", "web-2"]),
        ("app==web", vec!["web-1", "web-2"]),
        ("app!=web", vec!["bare", "db-1"]),
        ("app=web,tier=back", vec!["web-2"]),
        ("tier in (front,back)", vec!["db-1", "web-1", "web-2"]),
        ("tier notin (front)", vec!["bare", "db-1", "web-2"]),
        ("app in (db),tier", vec!["db-1"]),
        ("app", vec!["db-1", "web-1", "web-2"]),
        ("!app", vec!["bare"]),
        ("app=nothing", vec![]),
    ] {
        let q: String = url_encode(selector);
        let list = c.must_get(&format!("{pods}?labelSelector={q}")).await;
        assert_eq!(item_names(&list), want, "labelSelector {selector}");
    }

    // field selectors: metadata.name, spec.nodeName and status.phase for pods
    let mut on_node = pod("scheduled", "nginx:1.25");
    on_node["spec"]["nodeName"] = json!("node-a");
    let scheduled = c.create(pods, &on_node).await;
    let mut running = scheduled.clone();
    running["status"] = json!({"phase": "Running"});
    assert_eq!(c.put(&format!("{pods}/scheduled/status"), &running).await.0, StatusCode::OK);
    for (selector, want) in [
        ("metadata.name=web-1", vec!["web-1"]),
        ("metadata.name!=web-1", vec!["bare", "db-1", "scheduled", "web-2"]),
        ("spec.nodeName=node-a", vec!["scheduled"]),
        ("spec.nodeName=", vec!["bare", "db-1", "web-1", "web-2"]),
        ("status.phase=Running", vec!["scheduled"]),
        ("status.phase=Pending", vec!["bare", "db-1", "web-1", "web-2"]),
        ("status.phase!=Pending,spec.nodeName=node-a", vec!["scheduled"]),
        ("metadata.namespace=default,metadata.name=db-1", vec!["db-1"]),
    ] {
        let list = c.must_get(&format!("{pods}?fieldSelector={}", url_encode(selector))).await;
        assert_eq!(item_names(&list), want, "fieldSelector {selector}");
    }
    // label and field selector together
    let both = c.must_get(&format!("{pods}?labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dweb-2")).await;
    assert_eq!(item_names(&both), ["web-2"]);
    // an unsupported field label is a 400
    for bad in ["spec.bogus=x", "status.podIP.x=1", "data.k=v"] {
        let (status, body) = c.get(&format!("{pods}?fieldSelector={}", url_encode(bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "fieldSelector {bad}: {body}");
        assert_eq!(status_reason(status, &body), "BadRequest");
    }
    let (status, _) = c.get(&format!("{cms}?fieldSelector=status.phase%3DRunning")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "configmaps have no status.phase field label");

    // all namespaces
    c.create("/api/v1/namespaces/paged/pods", &pod("elsewhere", "nginx:1.25")).await;
    let all = c.must_get("/api/v1/pods").await;
    assert_eq!(all["kind"], "PodList");
    let mut where_: Vec<(String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["metadata"]["namespace"].as_str().unwrap().to_string(), p["metadata"]["name"].as_str().unwrap().into())
        })
        .collect();
    where_.sort();
    assert_eq!(where_.len(), 6, "{where_:?}");
    assert!(where_.contains(&("paged".into(), "elsewhere".into())), "{where_:?}");
    assert!(where_.contains(&("default".into(), "web-1".into())), "{where_:?}");
    let across = c.must_get("/api/v1/pods?fieldSelector=metadata.namespace%3Dpaged").await;
    assert_eq!(item_names(&across), ["elsewhere"]);
    let page = c.must_get("/api/v1/configmaps?limit=5").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert!(page["metadata"]["continue"].is_string());
}

/// The `kubernetes` Service's endpoints name the advertise address and secure port,
/// in etcd under upstream's keys, and come back when deleted; a server advertising
/// loopback (every other test's) publishes none.
#[tokio::test]
async fn kubernetes_service_endpoints_follow_the_advertise_address() {
    let c = Cluster::start_with(&["--advertise-address=10.1.2.3"]).await;
    let slice_path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes";
    let endpoints_path = "/api/v1/namespaces/default/endpoints/kubernetes";
    let port = c.port;
    let slice = eventually_get(&c, slice_path).await;
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.1.2.3"]), "{slice}");
    assert_eq!(slice["ports"], json!([{"name": "https", "port": port, "protocol": "TCP"}]), "{slice}");
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes", "{slice}");
    let endpoints = eventually_get(&c, endpoints_path).await;
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "10.1.2.3", "{endpoints}");
    assert!(c.etcd_get("/registry/services/endpoints/default/kubernetes").await.is_some());
    assert!(c.etcd_get("/registry/endpointslices/default/kubernetes").await.is_some());

    let (code, _) = c.delete(slice_path).await;
    assert_eq!(code, StatusCode::OK);
    let again = eventually_get(&c, slice_path).await;
    assert_ne!(again["metadata"]["uid"], slice["metadata"]["uid"], "{again}");

    let loopback = Cluster::start().await;
    let (code, _) = loopback.get(endpoints_path).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

/// GET `path` until it exists (the reconciler writes at start, then every 10 s).
async fn eventually_get(c: &Cluster, path: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = c.get(path).await;
        if code == StatusCode::OK {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{path} never appeared: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
