//! Serving (TLS, HTTP/2, the generated certificate), discovery, health and Table output,
//! checked over raw HTTPS.

mod common;

use common::*;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// HTTPS with ALPN h2 and HTTP/1.1; the serving certificate is generated into
/// --cert-dir on first start and reused, byte for byte, after a restart; objects
/// written before the restart are still there; losing etcd makes the server unready
/// (503) until etcd is back.
#[tokio::test]
async fn serving_tls_http2_and_certificate_reuse() {
    let mut c = Cluster::start().await;

    // reqwest with rustls offers h2 through ALPN: the server must pick it
    let r = c.call(Method::GET, "/version", Body::None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, reqwest::Version::HTTP_2, "ALPN did not negotiate h2");
    // and a client offering only http/1.1 still gets served
    let h1 =
        reqwest::Client::builder().use_rustls_tls().danger_accept_invalid_certs(true).http1_only().build().unwrap();
    let resp = h1.get(c.url("/api/v1/namespaces")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["kind"], "NamespaceList");
    // plain HTTP on the TLS port is not served
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/version", c.port)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plain HTTP answered");

    // the generated certificate and key
    let cert_path = c.cert_dir.join("apiserver.crt");
    let key_path = c.cert_dir.join("apiserver.key");
    let cert = std::fs::read(&cert_path).expect("apiserver.crt generated in --cert-dir");
    let key = std::fs::read(&key_path).expect("apiserver.key generated in --cert-dir");
    assert!(String::from_utf8_lossy(&cert).contains("BEGIN CERTIFICATE"));
    assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "the private key is readable by others: {mode:o}");
    }
    // the kubeconfig points at this server
    let kubeconfig = std::fs::read_to_string(&c.kubeconfig).unwrap();
    assert!(kubeconfig.contains(&format!("https://127.0.0.1:{}", c.port)), "{kubeconfig}");

    c.create("/api/v1/namespaces/default/configmaps", &configmap("survivor", json!({"k": "v"}))).await;
    c.stop_server();
    c.start_server().await;
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert, "the certificate was regenerated on restart");
    assert_eq!(std::fs::read(&key_path).unwrap(), key, "the key was regenerated on restart");
    let cm = c.must_get("/api/v1/namespaces/default/configmaps/survivor").await;
    assert_eq!(cm["data"]["k"], "v");
    // bootstrap on restart leaves the built-in objects alone (no error, no duplicates)
    let ns = c.must_get("/api/v1/namespaces").await;
    assert_eq!(item_names(&ns), ["default", "kube-node-lease", "kube-public", "kube-system"]);

    // etcd going away: not ready, and requests fail with a 503 Status, not a hang;
    // an open watch ends so its client re-lists
    let watch = c.http.get(c.url("/api/v1/namespaces/default/configmaps?watch=1")).send().await.unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    c.stop_etcd();
    let rest = tokio::time::timeout(std::time::Duration::from_secs(60), watch.text())
        .await
        .expect("a watch stayed open, silent, after etcd went away")
        .unwrap_or_default();
    for line in rest.lines() {
        let ev: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(matches!(ev["type"].as_str(), Some("ADDED" | "ERROR")), "{line}");
    }
    let r = c.call(Method::GET, "/readyz", Body::None, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    let r = c.call(Method::GET, "/api/v1/namespaces/default/configmaps/survivor", Body::None, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(status_reason(r.status, &r.json), "ServiceUnavailable");
    let r = c.call(Method::GET, "/livez", Body::None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "liveness does not depend on etcd");
    // and coming back: the server reconnects by itself
    c.restart_etcd().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c.call(Method::GET, "/readyz", Body::None, &[]).await.status != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the server never reconnected to etcd");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(c.must_get("/api/v1/namespaces/default/configmaps/survivor").await["data"]["k"], "v");
}

/// /version, /api, /apis, group-version resource lists, aggregated discovery v2 and
/// v2beta1, and the health endpoints.
#[tokio::test]
async fn discovery_and_health() {
    let c = Cluster::start().await;

    let v = c.must_get("/version").await;
    assert_eq!((v["major"].as_str(), v["minor"].as_str()), (Some("1"), Some("33")), "{v}");
    assert!(v["gitVersion"].as_str().unwrap_or_default().starts_with("v1.33"), "{v}");

    let api = c.must_get("/api").await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], json!(["v1"]));
    assert!(api["serverAddressByClientCIDRs"].as_array().is_some_and(|a| !a.is_empty()), "{api}");

    let apis = c.must_get("/apis").await;
    assert_eq!(apis["kind"], "APIGroupList");
    let groups: Vec<&str> = apis["groups"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    for g in ["apps", "batch", "coordination.k8s.io", "networking.k8s.io", "events.k8s.io"] {
        assert!(groups.contains(&g), "group {g} missing from /apis: {groups:?}");
    }
    for g in apis["groups"].as_array().unwrap() {
        assert_eq!(g["preferredVersion"]["groupVersion"], format!("{}/v1", g["name"].as_str().unwrap()), "{g}");
    }
    let apps = c.must_get("/apis/apps").await;
    assert_eq!((apps["kind"].as_str(), apps["name"].as_str()), (Some("APIGroup"), Some("apps")));
    assert_eq!(c.get("/apis/nosuch.example.com").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/apis/apps/v2").await.0, StatusCode::NOT_FOUND);

    let core = c.must_get("/api/v1").await;
    assert_eq!((core["kind"].as_str(), core["groupVersion"].as_str()), (Some("APIResourceList"), Some("v1")));
    let find = |list: &Value, name: &str| -> Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from {}", list["groupVersion"]))
    };
    let all_verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    for (name, kind, short, namespaced) in [
        ("pods", "Pod", Some("po"), true),
        ("services", "Service", Some("svc"), true),
        ("configmaps", "ConfigMap", Some("cm"), true),
        ("namespaces", "Namespace", Some("ns"), false),
        ("nodes", "Node", Some("no"), false),
        ("secrets", "Secret", None, true),
        ("persistentvolumeclaims", "PersistentVolumeClaim", Some("pvc"), true),
        ("replicationcontrollers", "ReplicationController", Some("rc"), true),
    ] {
        let r = find(&core, name);
        assert_eq!(r["kind"], kind, "{r}");
        assert_eq!(r["namespaced"], namespaced, "{r}");
        if let Some(s) = short {
            assert!(r["shortNames"].as_array().is_some_and(|a| a.contains(&json!(s))), "{r}");
        }
        for verb in ["create", "delete", "get", "list", "patch", "update", "watch"] {
            assert!(r["verbs"].as_array().unwrap().contains(&json!(verb)), "{name} lacks {verb}: {r}");
        }
    }
    assert_eq!(find(&core, "configmaps")["verbs"], all_verbs);
    assert!(find(&core, "pods")["categories"].as_array().is_some_and(|c| c.contains(&json!("all"))));
    assert_eq!(find(&core, "pods/status")["verbs"], json!(["get", "patch", "update"]));

    let appsv1 = c.must_get("/apis/apps/v1").await;
    assert_eq!(appsv1["groupVersion"], "apps/v1");
    let deploy = find(&appsv1, "deployments");
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(deploy["verbs"], all_verbs);
    assert!(deploy["shortNames"].as_array().is_some_and(|a| a.contains(&json!("deploy"))), "{deploy}");
    assert!(deploy["categories"].as_array().is_some_and(|a| a.contains(&json!("all"))), "{deploy}");
    find(&appsv1, "deployments/status");
    for (gv, name) in [
        ("batch/v1", "cronjobs"),
        ("coordination.k8s.io/v1", "leases"),
        ("networking.k8s.io/v1", "ingresses"),
        ("events.k8s.io/v1", "events"),
    ] {
        find(&c.must_get(&format!("/apis/{gv}")).await, name);
    }

    // aggregated discovery, both versions; the Content-Type names what was served
    for version in ["v2", "v2beta1"] {
        let accept = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
        for path in ["/api", "/apis"] {
            let r = c.call(Method::GET, path, Body::None, &[("accept", accept.as_str())]).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            let ct = r.header("content-type").replace(' ', "");
            assert_eq!(ct, accept, "{path} {version}");
            assert_eq!(r.json["kind"], "APIGroupDiscoveryList");
            assert_eq!(r.json["apiVersion"], format!("apidiscovery.k8s.io/{version}"));
            let items = r.json["items"].as_array().unwrap();
            assert!(!items.is_empty());
            let resources: Vec<&Value> = items
                .iter()
                .flat_map(|g| g["versions"].as_array().unwrap())
                .flat_map(|v| v["resources"].as_array().unwrap())
                .collect();
            let wanted = if path == "/api" { "pods" } else { "deployments" };
            let r = resources.iter().find(|r| r["resource"] == wanted).unwrap_or_else(|| panic!("{wanted}"));
            assert_eq!(r["scope"], "Namespaced");
            assert!(r["responseKind"]["kind"].is_string(), "{r}");
            assert!(r["verbs"].as_array().is_some_and(|v| v.contains(&json!("watch"))), "{r}");
        }
    }
    // an Accept listing aggregated discovery after plain JSON still gets served
    let mixed = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let r = c.call(Method::GET, "/apis", Body::None, &[("accept", mixed)]).await;
    assert_eq!(r.json["kind"], "APIGroupDiscoveryList");

    for path in ["/healthz", "/livez", "/readyz", "/healthz/ping", "/readyz/etcd"] {
        let r = c.call(Method::GET, path, Body::None, &[]).await;
        assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ok"), "{path}");
    }
}

fn column_names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no columnDefinitions: {table}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_table_shape(table: &Value, what: &str) {
    assert_eq!(table["kind"], "Table", "{what}: {table}");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1", "{what}");
    let cols = column_names(table);
    assert_eq!(cols.first().map(String::as_str), Some("Name"), "{what}: first column {cols:?}");
    assert_eq!(table["columnDefinitions"][0]["format"], "name", "{what}");
    for row in table["rows"].as_array().unwrap() {
        assert_eq!(row["cells"].as_array().map(Vec::len), Some(cols.len()), "{what}: row {row} vs columns {cols:?}");
    }
}

/// Accept: ...;as=Table returns meta.k8s.io/v1 Tables for lists and single objects of
/// every kind, with includeObject None / Metadata / Object.
#[tokio::test]
async fn table_output() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces/default/pods", &pod("web", "nginx:1.25")).await;
    c.create("/api/v1/namespaces/default/configmaps", &configmap("cfg", json!({"a": "b"}))).await;
    c.create("/apis/apps/v1/namespaces/default/deployments", &deployment("dep", "dep")).await;
    let table_get = |path: String| {
        let c = &c;
        async move {
            let r = c.call(Method::GET, &path, Body::None, &[("accept", TABLE)]).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            r.json
        }
    };

    for path in [
        "/api/v1/namespaces",
        "/api/v1/namespaces/default/pods",
        "/api/v1/pods",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/configmaps",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/nodes",
        "/apis/batch/v1/jobs",
    ] {
        let t = table_get(path.to_string()).await;
        assert_table_shape(&t, path);
        assert!(t["metadata"]["resourceVersion"].is_string(), "{path}: {t}");
    }

    // a list's rows carry PartialObjectMetadata by default
    let t = table_get("/api/v1/namespaces/default/pods".into()).await;
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cells"][0], "web");
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(rows[0]["object"]["metadata"]["name"], "web");

    // one object
    let t = table_get("/api/v1/namespaces/default/configmaps/cfg".into()).await;
    assert_table_shape(&t, "one configmap");
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(t["rows"][0]["cells"][0], "cfg");

    let t = table_get("/api/v1/namespaces/default/pods?includeObject=None".into()).await;
    assert!(t["rows"][0].get("object").is_none_or(Value::is_null), "includeObject=None: {t}");
    let t = table_get("/apis/apps/v1/namespaces/default/deployments/dep?includeObject=Object".into()).await;
    assert_eq!(t["rows"][0]["object"]["kind"], "Deployment", "{t}");
    assert_eq!(t["rows"][0]["object"]["spec"]["replicas"], 1, "{t}");
    let r = c
        .call(Method::GET, "/api/v1/namespaces/default/pods?includeObject=Bogus", Body::None, &[("accept", TABLE)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // the Accept kubectl sends: Table first, JSON as fallback
    let kubectl_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let r = c.call(Method::GET, "/api/v1/namespaces/default/pods", Body::None, &[("accept", kubectl_accept)]).await;
    assert_eq!(r.json["kind"], "Table");
    // a missing object is a 404 Status, not a Table
    let r = c.call(Method::GET, "/api/v1/namespaces/default/pods/nope", Body::None, &[("accept", TABLE)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(status_reason(r.status, &r.json), "NotFound");

    // PartialObjectMetadataList
    let pom = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    let r = c.call(Method::GET, "/api/v1/namespaces/default/configmaps", Body::None, &[("accept", pom)]).await;
    assert_eq!(r.json["kind"], "PartialObjectMetadataList", "{}", r.text);
    assert_eq!(r.json["items"][0]["metadata"]["name"], "cfg");
    assert!(r.json["items"][0].get("data").is_none());
}

/// The pod columns kubectl users know: NAME READY STATUS RESTARTS AGE, and with
/// -o wide also IP NODE NOMINATED NODE READINESS GATES (upstream's pod printer).
#[tokio::test]
async fn pod_table_columns_match_upstream() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces/default/pods", &pod("web", "nginx:1.25")).await;
    let r = c.call(Method::GET, "/api/v1/namespaces/default/pods", Body::None, &[("accept", TABLE)]).await;
    assert_table_shape(&r.json, "pods");
    let defs = r.json["columnDefinitions"].as_array().unwrap();
    let normal: Vec<&str> = defs.iter().filter(|d| d["priority"] == 0).filter_map(|d| d["name"].as_str()).collect();
    let wide: Vec<&str> = defs.iter().filter(|d| d["priority"] != 0).filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(normal, ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
    let cells = r.json["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(cells[1], "0/1", "READY of a pod with one container that is not running");
    assert_eq!(cells[2], "Pending");

    let out = c.kubectl_ok("1.33", &["get", "pods"]);
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{out}");
    let out = c.kubectl_ok("1.33", &["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"],
        "{out}"
    );
}
