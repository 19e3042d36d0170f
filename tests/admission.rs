//! Admission plug-ins through the real server: NamespaceLifecycle, ServiceAccount,
//! LimitRanger, ResourceQuota, NodeRestriction and Priority, the enable/disable flags.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// The name of the pod's token volume (kube-api-access-*), if any.
fn token_volume(pod: &Value) -> Option<String> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_string)
}

#[tokio::test]
async fn namespace_lifecycle() {
    let c = Cluster::start().await;
    let (status, body) = c.post("/api/v1/namespaces/nowhere/configmaps", &configmap("x", json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(message(&body), "namespaces \"nowhere\" not found");

    for ns in ["kube-system", "default", "kube-public"] {
        let (status, body) = c.delete(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(message(&body), format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted"));
    }
    let out = c.kubectl("1.33", &["delete", "namespace", "kube-system"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("this namespace may not be deleted"));

    // a configmap with a finalizer keeps the namespace terminating
    c.create("/api/v1/namespaces", &namespace("ending")).await;
    let mut held = configmap("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    c.create("/api/v1/namespaces/ending/configmaps", &held).await;
    let (status, _) = c.delete("/api/v1/namespaces/ending").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = c.post("/api/v1/namespaces/ending/configmaps", &configmap("late", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "configmaps \"late\" is forbidden: unable to create new content in namespace ending because it is being terminated"
    );
    // release it so the namespace goes
    let unhold = json!({"metadata": {"finalizers": null}});
    c.patch("/api/v1/namespaces/ending/configmaps/held", "application/merge-patch+json", &unhold).await;
}

#[tokio::test]
async fn service_account_defaults_and_token_volume() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let ns = format!("sa-{}", version.replace('.', "-"));
        // at once after the namespace: the default account may not exist yet
        c.kubectl_ok(version, &["create", "namespace", &ns]);
        c.kubectl_ok(version, &["-n", &ns, "run", "p", "--image=nginx"]);
        let pod = c.must_get(&format!("/api/v1/namespaces/{ns}/pods/p")).await;
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let volume_name = token_volume(&pod).expect("a kube-api-access volume");
        assert_eq!(volume_name.len(), "kube-api-access-".len() + 5);
        let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == volume_name.as_str());
        let sources = &volume.unwrap()["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"], json!({"expirationSeconds": 3607, "path": "token"}));
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.namespace");
        let mount = &pod["spec"]["containers"][0]["volumeMounts"][0];
        assert_eq!(mount, &json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_PATH}));
        // the account and the root CA are there too
        c.must_get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/default")).await;
        let out = c.kubectl_ok(version, &["-n", &ns, "get", "serviceaccount", "default", "-o", "name"]);
        assert_eq!(out.trim(), "serviceaccount/default");
    }
    // the root CA bundle is published in every namespace
    let cm = wait_for(&c, "/api/v1/namespaces/default/configmaps/kube-root-ca.crt").await;
    assert!(cm["data"]["ca.crt"].as_str().unwrap().contains("BEGIN CERTIFICATE"), "{cm}");

    let pods = "/api/v1/namespaces/default/pods";
    let mut opted_out = pod("no-token", "nginx");
    opted_out["spec"]["automountServiceAccountToken"] = json!(false);
    let created = c.create(pods, &opted_out).await;
    assert_eq!(token_volume(&created), None);
    assert!(created["spec"]["containers"][0].get("volumeMounts").is_none(), "{created}");

    // an account that opts out
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet"}, "automountServiceAccountToken": false});
    c.create("/api/v1/namespaces/default/serviceaccounts", &sa).await;
    let mut quiet = pod("quiet", "nginx");
    quiet["spec"]["serviceAccountName"] = json!("quiet");
    assert_eq!(token_volume(&c.create(pods, &quiet).await), None);

    let mut ghost = pod("ghost", "nginx");
    ghost["spec"]["serviceAccountName"] = json!("nobody");
    let (status, body) = c.post(pods, &ghost).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"ghost\" is forbidden: error looking up service account default/nobody: serviceaccount \"nobody\" not found"
    );
}

/// GET `path` until it exists (the in-server controllers create some objects).
async fn wait_for(c: &Cluster, path: &str) -> Value {
    for _ in 0..100 {
        let (status, body) = c.get(path).await;
        if status == StatusCode::OK {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never appeared");
}

#[tokio::test]
async fn plugins_can_be_disabled_and_unknown_names_stop_the_server() {
    let c = Cluster::start_with(&["--disable-admission-plugins=ServiceAccount"]).await;
    let created = c.create("/api/v1/namespaces/default/pods", &pod("plain", "nginx")).await;
    assert_eq!(token_volume(&created), None);
    assert!(created["spec"].get("volumes").is_none(), "{created}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrokube"))
        .args(["apiserver", "--enable-admission-plugins=NamespaceLifecycle,AlwaysPullImagez"])
        .output()
        .expect("running ferrokube");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown admission plugin \"AlwaysPullImagez\""), "{stderr}");
}

/// As `node` (its bearer token): method, path, JSON body.
async fn as_node(c: &Cluster, token: &str, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let (ct, bytes) = match method {
        reqwest::Method::PATCH => ("application/merge-patch+json", serde_json::to_vec(body).unwrap()),
        _ => ("application/json", serde_json::to_vec(body).unwrap()),
    };
    let body = if body.is_null() { Body::None } else { Body::Raw(ct, bytes) };
    let r = c.call(method, path, body, &[("authorization", &auth)]).await;
    (r.status, r.json)
}

#[tokio::test]
async fn node_restriction() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    let lines = format!(
        "{DEV_TOKEN},admin,0,system:masters\nn1-token,system:node:n1,1,system:nodes\nn2-token,system:node:n2,2,system:nodes\n"
    );
    std::fs::write(&tokens, lines).unwrap();
    let flag = format!("--token-auth-file={}", tokens.display());
    let c = Cluster::start_with(&[&flag, "--authorization-mode=Node,RBAC"]).await;
    for n in ["n1", "n2"] {
        c.create("/api/v1/nodes", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}})).await;
        let mut p = pod(&format!("on-{n}"), "nginx");
        p["spec"]["nodeName"] = json!(n);
        c.create("/api/v1/namespaces/default/pods", &p).await;
    }
    use reqwest::Method;
    let n1 = |method, path: &str, body: Value| {
        let path = path.to_string();
        let c = &c;
        async move { as_node(c, "n1-token", method, &path, &body).await }
    };
    // its own node: status and harmless labels
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (status, body) = n1(Method::PATCH, "/api/v1/nodes/n1/status", ready).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        n1(Method::PATCH, "/api/v1/nodes/n1", json!({"metadata": {"labels": {"example.com/team": "a"}}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // labels that steer workloads, taints: refused by admission
    let steer = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/foo": "bar"}}});
    let (status, body) = n1(Method::PATCH, "/api/v1/nodes/n1", steer).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/foo"
    );
    let taint = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    let (status, body) = n1(Method::PATCH, "/api/v1/nodes/n1", taint).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(message(&body), "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints");
    // another node: refused (by the Node authorizer or admission)
    let (status, body) = n1(Method::PATCH, "/api/v1/nodes/n2", json!({"metadata": {"labels": {"x": "y"}}})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // pods: status only of its own, delete only its own, create only mirror pods
    let phase = json!({"status": {"phase": "Running"}});
    let (status, body) = n1(Method::PATCH, "/api/v1/namespaces/default/pods/on-n1/status", phase.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = n1(Method::PATCH, "/api/v1/namespaces/default/pods/on-n2/status", phase).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"on-n2\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let (status, body) = n1(Method::DELETE, "/api/v1/namespaces/default/pods/on-n2", Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"on-n2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself"
    );
    let mut plain = pod("sneaky", "nginx");
    plain["spec"]["nodeName"] = json!("n1");
    let (status, body) = n1(Method::POST, "/api/v1/namespaces/default/pods", plain).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"sneaky\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
    );
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "on-n2"}});
    let (status, body) = n1(Method::POST, "/api/v1/namespaces/default/pods/on-n2/eviction", eviction).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // everyone else is untouched by the plug-in: the admin labels n1 freely
    let steer = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/foo": "bar"}}});
    let (status, body) = c.patch("/api/v1/nodes/n1", "application/merge-patch+json", &steer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn quota(name: &str, hard: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}})
}

/// GET the quota until `status.used[key]` is `want`.
async fn wait_used(c: &Cluster, path: &str, key: &str, want: &str) -> Value {
    for _ in 0..200 {
        let q = c.must_get(path).await;
        if q["status"]["used"][key] == want {
            return q;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path}: status.used.{key} never became {want}: {}", c.must_get(path).await);
}

#[tokio::test]
async fn resource_quota_counts_and_refuses() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("q")).await;
    let quotas = "/api/v1/namespaces/q/resourcequotas";
    c.create(quotas, &quota("pods-2", json!({"pods": "2", "count/configmaps": "10"}))).await;
    let pods = "/api/v1/namespaces/q/pods";
    c.create(pods, &pod("p1", "nginx")).await;
    c.create(pods, &pod("p2", "nginx")).await;
    let (status, body) = c.post(pods, &pod("p3", "nginx")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"p3\" is forbidden: exceeded quota: pods-2, requested: pods=1, used: pods=2, limited: pods=2"
    );
    wait_used(&c, &format!("{quotas}/pods-2"), "pods", "2").await;
    for version in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(version, &["-n", "q", "get", "resourcequota", "pods-2"]);
        assert!(out.contains("pods: 2/2"), "kubectl {version}: {out}");
        let out = c.kubectl_ok(version, &["-n", "q", "describe", "quota", "pods-2"]);
        let pods_line = out.lines().find(|l| l.starts_with("pods")).unwrap_or_default().to_string();
        assert_eq!(pods_line.split_whitespace().collect::<Vec<_>>(), ["pods", "2", "2"], "kubectl {version}: {out}");
    }
    let out = c.kubectl("1.33", &["-n", "q", "run", "p4", "--image=nginx"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeded quota: pods-2"), "{out:?}");

    // a deletion gives the unit back
    c.delete(&format!("{pods}/p1")).await;
    wait_used(&c, &format!("{quotas}/pods-2"), "pods", "1").await;
    c.create(pods, &pod("p3", "nginx")).await;
    // the kube-root-ca.crt ConfigMap counts too, so at least 1 of 10
    let q = c.must_get(&format!("{quotas}/pods-2")).await;
    assert_eq!(q["status"]["hard"]["pods"], "2");

    // compute quotas need every container to state what it asks for
    c.create("/api/v1/namespaces", &namespace("q2")).await;
    let compute = quota("cpu", json!({"requests.cpu": "1", "limits.memory": "1Gi"}));
    c.create("/api/v1/namespaces/q2/resourcequotas", &compute).await;
    let (status, body) = c.post("/api/v1/namespaces/q2/pods", &pod("greedy", "nginx")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods \"greedy\" is forbidden: failed quota: cpu: must specify limits.memory for: c; requests.cpu for: c"
    );
}

#[tokio::test]
async fn resource_quota_holds_under_concurrent_creates() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("race")).await;
    c.create("/api/v1/namespaces/race/resourcequotas", &quota("three", json!({"pods": "3"}))).await;
    let creates = (0..10).map(|i| {
        let c = &c;
        async move { c.post("/api/v1/namespaces/race/pods", &pod(&format!("p{i}"), "nginx")).await }
    });
    let results = futures::future::join_all(creates).await;
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 3, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            message(body).contains("exceeded quota: three, requested: pods=1, used: pods=3, limited: pods=3"),
            "{body}"
        );
    }
    let (_, list) = c.get("/api/v1/namespaces/race/pods").await;
    assert_eq!(item_names(&list).len(), 3);
}

#[tokio::test]
async fn limit_ranger_defaults_and_bounds() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("lr")).await;
    let range = json!({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
        "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
            "max": {"cpu": "1"},
            "min": {"memory": "32Mi"},
        }]},
    });
    let stored = c.create("/api/v1/namespaces/lr/limitranges", &range).await;
    // upstream's LimitRange defaulting: the default limit from max where none is given
    assert_eq!(stored["spec"]["limits"][0]["default"], json!({"cpu": "500m", "memory": "128Mi"}));
    let pods = "/api/v1/namespaces/lr/pods";
    // at once: a LimitRange just created applies to the next pod
    let defaulted = c.create(pods, &pod("defaulted", "nginx")).await;
    let resources = &defaulted["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "64Mi"}), "{defaulted}");
    assert_eq!(resources["limits"], json!({"cpu": "500m", "memory": "128Mi"}), "{defaulted}");
    assert_eq!(
        defaulted["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    let mut big = pod("big", "nginx");
    big["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let (status, body) = c.post(pods, &big).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(message(&body), "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2");

    let mut small = pod("small", "nginx");
    small["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "16Mi"}});
    let out = c.kubectl_stdin("1.33", &["create", "-n", "lr", "-f", "-"], &small.to_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("minimum memory usage per Container is 32Mi, but request is 16Mi"), "{stderr}");
}

#[tokio::test]
async fn limit_range_defaulting_as_upstream() {
    let c = Cluster::start().await;
    let range = json!({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "bounds"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "32Mi"}}]},
    });
    let stored = c.create("/api/v1/namespaces/default/limitranges", &range).await;
    let item = &stored["spec"]["limits"][0];
    assert_eq!(item["default"], json!({"cpu": "2"}), "{stored}");
    assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "32Mi"}), "{stored}");
    let created = c.create("/api/v1/namespaces/default/pods", &pod("bounded", "nginx")).await;
    let resources = &created["spec"]["containers"][0]["resources"];
    assert_eq!(resources, &json!({"limits": {"cpu": "2"}, "requests": {"cpu": "2", "memory": "32Mi"}}));
}

fn priority_class(name: &str, value: i64, global_default: bool) -> Value {
    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
           "value": value, "globalDefault": global_default})
}

const CLASSES: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// Priority: the system classes exist, a pod's priority comes from its class (or the
/// global default), a pod may not state another, and one default at most.
#[tokio::test]
async fn priority_classes_give_pods_their_priority() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(version, &["get", "pc"]);
        assert!(out.contains("PREEMPTIONPOLICY") && out.contains("GLOBAL-DEFAULT"), "kubectl {version}: {out}");
        assert!(out.contains("system-node-critical") && out.contains("2000001000"), "kubectl {version}: {out}");
        assert!(out.contains("system-cluster-critical"), "kubectl {version}: {out}");
    }
    c.create(CLASSES, &priority_class("high", 1000, false)).await;
    let mut high = pod("urgent", "nginx");
    high["spec"]["priorityClassName"] = json!("high");
    let (status, body) = c.post(PODS, &high).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (&body["spec"]["priority"], &body["spec"]["preemptionPolicy"]),
        (&json!(1000), &json!("PreemptLowerPriority"))
    );

    let plain = c.create(PODS, &pod("plain", "nginx")).await;
    assert_eq!(plain["spec"]["priority"], 0, "no default class: 0");
    let mut unknown = pod("unknown", "nginx");
    unknown["spec"]["priorityClassName"] = json!("nope");
    let (status, body) = c.post(PODS, &unknown).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(message(&body), "pods \"unknown\" is forbidden: no PriorityClass with name nope was found");
    high["metadata"]["name"] = json!("claims-more");
    high["spec"]["priority"] = json!(5);
    let (status, body) = c.post(PODS, &high).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("the integer value of priority (5) must not be provided in pod spec"), "{body}");

    // the global default applies to pods that name no class
    c.create(CLASSES, &priority_class("everyday", 10, true)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut attempt = 0;
    let defaulted = loop {
        attempt += 1;
        let made = c.create(PODS, &pod(&format!("later-{attempt}"), "nginx")).await;
        if made["spec"]["priority"] == 10 || std::time::Instant::now() > deadline {
            break made;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&defaulted["spec"]["priority"], &defaulted["spec"]["priorityClassName"]),
        (&json!(10), &json!("everyday"))
    );
    let (status, body) = c.post(CLASSES, &priority_class("another-default", 20, true)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(message(&body).contains("PriorityClass everyday is already marked as default"), "{body}");

    // user classes stay below the system's; values cannot change
    let (status, body) = c.post(CLASSES, &priority_class("too-high", 2_000_000_000, false)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = c.post(CLASSES, &priority_class("system-mine", 1, false)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) =
        c.patch(&format!("{CLASSES}/high"), "application/merge-patch+json", &json!({"value": 1})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
