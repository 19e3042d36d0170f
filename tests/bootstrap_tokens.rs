//! Bootstrap tokens against the real server (`--enable-bootstrap-token-auth`): Secrets in
//! kube-system back `<id>.<secret>` bearer tokens; valid ones are `system:bootstrap:<id>`
//! (whoami with stock kubectl), expired, unknown, wrong or unusable ones a bare 401, and
//! RBAC grants a token exactly what a binding of its groups allows.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The harness's admin token, so it can set the cluster up under RBAC.
fn token_file(dir: &Path) -> String {
    let path = dir.join("tokens.csv");
    std::fs::write(&path, format!("{DEV_TOKEN},admin,0,system:masters\n")).unwrap();
    format!("--token-auth-file={}", path.display())
}

/// A bootstrap token Secret as kubeadm writes it; `extra` adds or overrides data.
fn token_secret(id: &str, secret: &str, extra: &[(&str, &str)]) -> Value {
    let mut data = json!({"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true"});
    for (k, v) in extra {
        data[*k] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
           "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
           "stringData": data})
}

/// GET `path` with `token` (and nothing else): status and body.
async fn get_as(c: &Cluster, token: &str, path: &str) -> (StatusCode, Value) {
    let r = c.call(Method::GET, path, Body::None, &[("authorization", &format!("Bearer {token}"))]).await;
    (r.status, r.json)
}

async fn post_as(c: &Cluster, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let r = c.call(Method::POST, path, Body::Json(body), &[("authorization", &auth)]).await;
    (r.status, r.json)
}

/// The SelfSubjectReview's userInfo for `token`, or the failure.
async fn whoami(c: &Cluster, token: &str) -> (StatusCode, Value) {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let (status, body) = post_as(c, token, "/apis/authentication.k8s.io/v1/selfsubjectreviews", &review).await;
    (status, if status == StatusCode::CREATED { body["status"]["userInfo"].clone() } else { body })
}

/// Poll until `token` gets `want` from whoami (the secret reached, or left, the cache).
async fn wait_whoami(c: &Cluster, token: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = whoami(c, token).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{token}: still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_unauthorized(what: &str, (status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["message"], "Unauthorized", "{what}: no detail leaks: {body}");
}

#[tokio::test]
async fn bootstrap_tokens_authenticate_as_their_secrets_say() {
    let dir = tempfile::tempdir().unwrap();
    let flags =
        [token_file(dir.path()), "--enable-bootstrap-token-auth".into(), "--authorization-mode=Node,RBAC".into()];
    let c = Cluster::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let hour = chrono::Duration::hours(1);
    let past = (chrono::Utc::now() - hour).to_rfc3339();
    let future = (chrono::Utc::now() + hour).to_rfc3339();
    let groups = format!("{NODE_TOKEN_GROUP},system:bootstrappers:extra");
    let secrets = [
        token_secret("abcdef", "0123456789abcdef", &[("auth-extra-groups", &groups), ("expiration", &future)]),
        token_secret("exp001", "0123456789abcdef", &[("expiration", &past)]),
        token_secret("nouse1", "0123456789abcdef", &[("usage-bootstrap-authentication", "false")]),
        token_secret("badgrp", "0123456789abcdef", &[("auth-extra-groups", "system:masters")]),
        // created last: once it works, the cache has seen every secret above
        token_secret("last01", "0123456789abcdef", &[]),
    ];
    for s in &secrets {
        c.create(SECRETS, s).await;
    }
    wait_whoami(&c, "last01.0123456789abcdef", StatusCode::CREATED).await;

    let (status, user) = whoami(&c, "abcdef.0123456789abcdef").await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["username"], "system:bootstrap:abcdef");
    let want = json!(["system:bootstrappers", "system:bootstrappers:extra", NODE_TOKEN_GROUP, "system:authenticated"]);
    assert_eq!(user["groups"], want);
    let (_, plain) = whoami(&c, "last01.0123456789abcdef").await;
    assert_eq!(plain["groups"], json!(["system:bootstrappers", "system:authenticated"]));

    for (what, token) in [
        ("wrong secret", "abcdef.0123456789abcdee"),
        ("unknown id", "zzzzzz.0123456789abcdef"),
        ("expired", "exp001.0123456789abcdef"),
        ("usage not enabled", "nouse1.0123456789abcdef"),
        ("a group outside system:bootstrappers:", "badgrp.0123456789abcdef"),
        ("not a bootstrap token at all", "abcdef-0123456789abcdef"),
    ] {
        assert_unauthorized(what, whoami(&c, token).await);
    }

    // stock kubectl sees the same identity
    let config = c.token_kubeconfig("bootstrap", "abcdef.0123456789abcdef");
    let config = config.to_str().unwrap();
    for version in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(version, &["--kubeconfig", config, "auth", "whoami", "-o", "json"]);
        let review: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(review["status"]["userInfo"]["username"], "system:bootstrap:abcdef", "{version}");
    }

    // RBAC: nothing but discovery until a binding of the token's group grants more, and
    // then exactly what it grants
    let token = "abcdef.0123456789abcdef";
    let configmaps = "/api/v1/namespaces/default/configmaps";
    assert_eq!(get_as(&c, token, configmaps).await.0, StatusCode::FORBIDDEN);
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]});
    c.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", &role).await;
    let binding = |name: &str, role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": NODE_TOKEN_GROUP}]})
    };
    let bindings = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
    // kubeadm's binding for joining nodes: the upstream role system:node-bootstrapper
    c.create(bindings, &binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper")).await;
    c.create(bindings, &binding("bootstrap-read-configmaps", "read-configmaps")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_as(&c, token, configmaps).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the binding never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(get_as(&c, token, &format!("{configmaps}/kube-root-ca.crt")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get_as(&c, token, "/api/v1/namespaces/default/secrets").await.0, StatusCode::FORBIDDEN);
    assert_eq!(get_as(&c, token, SECRETS).await.0, StatusCode::FORBIDDEN, "its own secret neither");
    let (status, body) = post_as(&c, token, configmaps, &configmap("no", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let review = |verb: &str, group: &str, resource: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource}}})
    };
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (_, csr) =
        post_as(&c, token, ssar, &review("create", "certificates.k8s.io", "certificatesigningrequests")).await;
    assert_eq!(csr["status"]["allowed"], true, "{csr}");
    let (_, pods) = post_as(&c, token, ssar, &review("list", "", "pods")).await;
    assert_eq!(pods["status"]["allowed"], false, "{pods}");
    // the token without the group gets none of it
    assert_eq!(get_as(&c, "last01.0123456789abcdef", configmaps).await.0, StatusCode::FORBIDDEN);

    // deleting the secret revokes the token
    let (status, _) = c.delete(&format!("{SECRETS}/bootstrap-token-abcdef")).await;
    assert_eq!(status, StatusCode::OK);
    wait_whoami(&c, token, StatusCode::UNAUTHORIZED).await;
}

/// Without the flag the same secret is no credential: its token is a 401.
#[tokio::test]
async fn bootstrap_tokens_need_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [token_file(dir.path()), "--authorization-mode=Node,RBAC".into()];
    let c = Cluster::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    c.create(SECRETS, &token_secret("abcdef", "0123456789abcdef", &[])).await;
    // resourceVersion=0 reads the watch cache: once it has the secret, so would the authenticator
    let cached = format!("{SECRETS}/bootstrap-token-abcdef?resourceVersion=0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(&cached).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the secret never reached the cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_unauthorized("flag off", whoami(&c, "abcdef.0123456789abcdef").await);
}
