//! Authentication and RBAC together: real identities from a token file, refused with
//! upstream's 403 until a binding grants them, impersonation judged by RBAC, and
//! escalation refused over the network; stock kubectl 1.27 and 1.33.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// bob has no bindings; eve may impersonate (granted below); the harness's token is admin.
fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens.csv");
    let text = format!("{DEV_TOKEN},admin,0,system:masters\nbob-token,bob,1,\neve-token,eve,2,\n");
    std::fs::write(&path, text).unwrap();
    path
}

/// A kubeconfig for the cluster that authenticates with `token`.
fn kubeconfig(c: &Cluster, token: &str) -> std::path::PathBuf {
    c.token_kubeconfig(token, token)
}

async fn as_user(
    c: &Cluster,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req =
        reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap().request(method, c.url(path));
    req = req.bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn rolebinding(name: &str, role: &str, user: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
}

#[tokio::test]
async fn tokens_and_rbac_over_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let tokens_flag = format!("--token-auth-file={}", tokens.display());
    let c = Cluster::start_with(&[&tokens_flag, "--authorization-mode=Node,RBAC"]).await;
    let pods = "/api/v1/namespaces/default/pods";

    // no binding: refused with upstream's wording
    let (code, body) = as_user(&c, "bob-token", reqwest::Method::GET, pods, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    // discovery and health are open to every authenticated user, as upstream's bootstrap policy
    assert_eq!(as_user(&c, "bob-token", reqwest::Method::GET, "/apis", None).await.0, StatusCode::OK);
    assert_eq!(as_user(&c, "bob-token", reqwest::Method::GET, "/healthz", None).await.0, StatusCode::OK);

    // view in default: reads there, nothing else
    c.create(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
        &rolebinding("bob-view", "view", "bob"),
    )
    .await;
    let mut listed = StatusCode::FORBIDDEN;
    for _ in 0..50 {
        listed = as_user(&c, "bob-token", reqwest::Method::GET, pods, None).await.0;
        if listed == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed, StatusCode::OK, "the binding did not take effect");
    let cm = configmap("x", json!({"a": "b"}));
    let (code, _) =
        as_user(&c, "bob-token", reqwest::Method::POST, "/api/v1/namespaces/default/configmaps", Some(&cm)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "view cannot create");
    let (code, _) = as_user(&c, "bob-token", reqwest::Method::GET, "/api/v1/namespaces/kube-system/pods", None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "the binding is for default only");

    // bob may write RoleBindings in default, but grants only what he holds: view, not edit
    // (escalation prevention), by POST and by server-side apply alike
    let writer = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "binding-writer"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
                   "verbs": ["create", "get", "patch", "update"]}]});
    c.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", &writer).await;
    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
    c.create(bindings, &rolebinding("bob-writes", "binding-writer", "bob")).await;
    let mut status = StatusCode::FORBIDDEN;
    for _ in 0..50 {
        let body = rolebinding("carol-view", "view", "carol");
        status = as_user(&c, "bob-token", reqwest::Method::POST, bindings, Some(&body)).await.0;
        if status == StatusCode::CREATED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::CREATED, "bob could not grant view, which he holds");
    let edit = rolebinding("bob-edit", "edit", "bob");
    let (code, body) = as_user(&c, "bob-token", reqwest::Method::POST, bindings, Some(&edit)).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("not currently held"), "{body}");
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let applied = client
        .patch(c.url(&format!("{bindings}/bob-edit?fieldManager=bob")))
        .bearer_auth("bob-token")
        .header("content-type", "application/apply-patch+yaml")
        .body(edit.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), StatusCode::FORBIDDEN, "server-side apply escalated");
    assert_eq!(c.get(&format!("{bindings}/bob-edit")).await.0, StatusCode::NOT_FOUND);

    // eve may impersonate bob only once RBAC grants it; kubectl --as is then judged as bob
    for version in KUBECTL_VERSIONS {
        let eve = kubeconfig(&c, "eve-token");
        let eve = eve.to_str().unwrap();
        // discovery first, as eve herself (every authenticated user may): kubectl reports a
        // refused discovery request only as "unknown"
        c.kubectl_ok(version, &["--kubeconfig", eve, "api-resources"]);
        let out = c.kubectl(version, &["--kubeconfig", eve, "get", "pods", "--as=bob"]);
        assert!(!out.status.success(), "{version}: eve impersonated without permission");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(r#"User "eve" cannot impersonate resource "users""#), "{version}: {err}");
    }
    let impersonator = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "impersonate-bob"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}]});
    c.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", &impersonator).await;
    let mut crb = rolebinding("eve-impersonates", "impersonate-bob", "eve");
    crb["kind"] = json!("ClusterRoleBinding");
    c.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", &crb).await;
    for version in KUBECTL_VERSIONS {
        let eve = kubeconfig(&c, "eve-token");
        let eve = eve.to_str().unwrap();
        let mut ok = false;
        for _ in 0..50 {
            if c.kubectl(version, &["--kubeconfig", eve, "get", "pods", "--as=bob"]).status.success() {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(ok, "{version}: eve could not act as bob");
        // can-i exits 1 for "no"
        let out = c.kubectl(version, &["--kubeconfig", eve, "auth", "can-i", "create", "configmaps", "--as=bob"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "{version}");
        assert_eq!(out.status.code(), Some(1), "{version}");
        let out = c.kubectl_ok(version, &["--kubeconfig", eve, "auth", "can-i", "list", "pods", "--as=bob"]);
        assert_eq!(out.trim(), "yes", "{version}");
        let out = c.kubectl(version, &["--kubeconfig", eve, "get", "pods", "-n", "kube-system", "--as=bob"]);
        assert!(!out.status.success(), "{version}: bob read kube-system through eve");
    }
}
