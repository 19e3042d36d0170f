//! ServiceAccount tokens against the real server: `kubectl create token` and whoami with
//! stock kubectl, tokens bound to pods and secrets losing their power when those go,
//! recreated accounts, legacy secret tokens, bad tokens (expired, foreign key, wrong
//! audience) answering a bare 401, RBAC granting a service account by binding, the
//! longest token lifetime, and the issuer's OpenID discovery documents and key set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISSUER: &str = "https://ferrokube.test";
const NS: &str = "/api/v1/namespaces/default";

/// An RSA key by openssl (rcgen cannot generate RSA); PKCS#8 PEM at `path`.
fn rsa_key(path: &Path) -> PathBuf {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(path)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    path.to_path_buf()
}

/// An EC P-256 key (PKCS#8) at `path`; also its public key next to it.
fn ec_key(path: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(path, key.serialize_pem()).unwrap();
    let public = path.with_extension("pub");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    (path.to_path_buf(), public)
}

/// The harness's admin token, so it can set the cluster up under any authorization mode.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.csv");
    std::fs::write(&path, format!("{DEV_TOKEN},admin,0,system:masters\n")).unwrap();
    path
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sign `claims` the way a token issuer would, with any key.
fn mint(key_pem: &Path, alg: Algorithm, claims: &Value) -> String {
    let pem = std::fs::read(key_pem).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

/// Bound-token claims for default/default with the given uid, audience and expiry.
fn bound_claims(uid: &str, aud: &str, exp: i64) -> Value {
    json!({"iss": ISSUER, "sub": "system:serviceaccount:default:default", "aud": [aud], "exp": exp,
           "iat": now() - 10, "nbf": now() - 10,
           "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "default", "uid": uid}}})
}

fn service_account(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
}

async fn uid_of(c: &Cluster, path: &str) -> String {
    c.must_get(path).await["metadata"]["uid"].as_str().unwrap().to_string()
}

/// POST a TokenRequest for `sa`; the status and the answer.
async fn token_request(c: &Cluster, sa: &str, spec: Value) -> (StatusCode, Value) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    c.post(&format!("{NS}/serviceaccounts/{sa}/token"), &body).await
}

async fn issued(c: &Cluster, sa: &str, spec: Value) -> String {
    let (status, body) = token_request(c, sa, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["status"]["token"].as_str().unwrap().to_string()
}

/// A request with `token` only (not the harness's admin token).
async fn as_token(c: &Cluster, method: Method, path: &str, body: Option<&Value>, token: &str) -> (StatusCode, Value) {
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let mut req = client.request(method, c.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// SelfSubjectReview with `token`: status and userInfo.
async fn whoami(c: &Cluster, token: &str) -> (StatusCode, Value) {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let path = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let (status, body) = as_token(c, Method::POST, path, Some(&review), token).await;
    (status, body["status"]["userInfo"].clone())
}

fn assert_unauthorized(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
}

/// Poll until `token` is refused (the watch caches see a deletion a moment later).
async fn until_refused(c: &Cluster, token: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = whoami(c, token).await;
        if status == StatusCode::UNAUTHORIZED {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still accepted ({status})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kubectl_create_token_bound_tokens_and_bad_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key(&dir.path().join("sa.key"));
    let tokens = token_file(dir.path());
    let flags = [
        format!("--token-auth-file={}", tokens.display()),
        format!("--service-account-signing-key-file={}", key.display()),
        format!("--service-account-key-file={}", key.display()),
        format!("--service-account-issuer={ISSUER}"),
    ];
    let c = Cluster::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // the server creates the default account itself; whoever is first
    let (status, _) = c.post(&format!("{NS}/serviceaccounts"), &service_account("default")).await;
    assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{status}");
    let sa_uid = uid_of(&c, &format!("{NS}/serviceaccounts/default")).await;

    for version in KUBECTL_VERSIONS {
        let token = c.kubectl_ok(version, &["create", "token", "default", "--duration=10m"]).trim().to_string();
        let config = c.token_kubeconfig(version, &token);
        let out = c.kubectl_ok(version, &["--kubeconfig", config.to_str().unwrap(), "auth", "whoami", "-o", "json"]);
        let info: Value = serde_json::from_str(&out).unwrap();
        let info = &info["status"]["userInfo"];
        assert_eq!(info["username"], "system:serviceaccount:default:default", "kubectl {version}: {info}");
        assert_eq!(info["uid"], sa_uid.as_str());
        let groups = json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]);
        assert_eq!(info["groups"], groups);
    }

    // upstream's floor on lifetimes; the default lifetime is an hour
    let (status, body) = token_request(&c, "default", json!({"expirationSeconds": 599})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, body) = token_request(&c, "default", json!({})).await;
    assert_eq!(body["spec"]["expirationSeconds"], 3600, "{body}");
    assert_eq!(body["spec"]["audiences"], json!([ISSUER]));
    let (status, _) = token_request(&c, "nobody", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    pod_bound(&c).await;
    secret_bound_and_legacy(&c, &key, &sa_uid).await;
    bad_tokens(&c, dir.path(), &key, &sa_uid).await;
    recreated_account(&c).await;

    // the RSA key is published under the id every token names
    let jwks = c.must_get("/openid/v1/jwks").await;
    let token = issued(&c, "default", json!({})).await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.expect("a key id");
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str(), "{jwks}");
    assert_eq!((&jwks["keys"][0]["kty"], &jwks["keys"][0]["e"]), (&json!("RSA"), &json!("AQAB")), "{jwks}");
}

/// A pod-bound token names the pod in extra and dies with the pod.
async fn pod_bound(c: &Cluster) {
    let mut pod = pod("p1", "nginx");
    pod["spec"]["serviceAccountName"] = json!("default");
    c.create(&format!("{NS}/pods"), &pod).await;
    let pod_uid = uid_of(c, &format!("{NS}/pods/p1")).await;
    let token =
        issued(c, "default", json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1"}})).await;
    let (status, info) = whoami(c, &token).await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(info["extra"]["authentication.kubernetes.io/pod-name"], json!(["p1"]));
    assert_eq!(info["extra"]["authentication.kubernetes.io/pod-uid"], json!([pod_uid]));
    // a stale uid in the reference is a conflict
    let stale = json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p1", "uid": "stale"}});
    assert_eq!(token_request(c, "default", stale).await.0, StatusCode::CONFLICT);
    c.delete_with(&format!("{NS}/pods/p1"), &json!({"gracePeriodSeconds": 0})).await;
    c.wait_gone(&format!("{NS}/pods/p1")).await;
    until_refused(c, &token, "token bound to a deleted pod").await;
}

/// Secret-bound tokens and legacy secret tokens last as long as the secret.
async fn secret_bound_and_legacy(c: &Cluster, key: &Path, sa_uid: &str) {
    let legacy = mint(
        key,
        Algorithm::RS256,
        &json!({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:default:default",
                "kubernetes.io/serviceaccount/namespace": "default",
                "kubernetes.io/serviceaccount/secret.name": "legacy",
                "kubernetes.io/serviceaccount/service-account.name": "default",
                "kubernetes.io/serviceaccount/service-account.uid": sa_uid}),
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy"},
                        "type": "Opaque", "data": {"token": STANDARD.encode(&legacy)}});
    c.create(&format!("{NS}/secrets"), &secret).await;
    let bound = issued(c, "default", json!({"boundObjectRef": {"kind": "Secret", "name": "legacy"}})).await;
    for token in [&legacy, &bound] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while whoami(c, token).await.0 != StatusCode::CREATED {
            assert!(Instant::now() < deadline, "secret token never accepted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(whoami(c, token).await.1["username"], "system:serviceaccount:default:default");
    }
    c.delete(&format!("{NS}/secrets/legacy")).await;
    until_refused(c, &legacy, "legacy token of a deleted secret").await;
    until_refused(c, &bound, "token bound to a deleted secret").await;
}

/// Expired, foreign, wrongly addressed and malformed tokens: a bare 401.
async fn bad_tokens(c: &Cluster, dir: &Path, key: &Path, sa_uid: &str) {
    let good = mint(key, Algorithm::RS256, &bound_claims(sa_uid, ISSUER, now() + 600));
    assert_eq!(whoami(c, &good).await.0, StatusCode::CREATED, "a token minted with the key works");
    let other = rsa_key(&dir.join("other.key"));
    let cases = [
        ("expired", mint(key, Algorithm::RS256, &bound_claims(sa_uid, ISSUER, now() - 120))),
        ("another key", mint(&other, Algorithm::RS256, &bound_claims(sa_uid, ISSUER, now() + 600))),
        ("wrong audience", mint(key, Algorithm::RS256, &bound_claims(sa_uid, "https://elsewhere", now() + 600))),
        ("malformed", format!("{}x", &good[..good.len() - 4])),
        ("shaped like a JWT", "a.b.c".into()),
        ("not a JWT at all", "garbage".into()),
    ];
    for (what, token) in cases {
        let (status, body) = as_token(c, Method::GET, "/api/v1/pods", None, &token).await;
        assert_unauthorized(status, &body, what);
        assert_eq!(body["message"], "Unauthorized", "{what}: no detail leaks: {body}");
    }
}

/// A token for an account deleted and created again (a new uid) is refused.
async fn recreated_account(c: &Cluster) {
    c.create(&format!("{NS}/serviceaccounts"), &service_account("builder")).await;
    let token = issued(c, "builder", json!({})).await;
    assert_eq!(whoami(c, &token).await.0, StatusCode::CREATED);
    c.delete(&format!("{NS}/serviceaccounts/builder")).await;
    c.create(&format!("{NS}/serviceaccounts"), &service_account("builder")).await;
    until_refused(c, &token, "token of a recreated service account").await;
    let fresh = issued(c, "builder", json!({})).await;
    assert_eq!(whoami(c, &fresh).await.0, StatusCode::CREATED, "a new token for the new account works");
}

#[tokio::test]
async fn ec_keys_audiences_and_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = ec_key(&dir.path().join("sa-ec.key"));
    let tokens = token_file(dir.path());
    let flags = [
        format!("--token-auth-file={}", tokens.display()),
        format!("--service-account-signing-key-file={}", key.display()),
        format!("--service-account-key-file={}", public.display()),
        format!("--service-account-issuer={ISSUER}"),
        "--api-audiences=api-a,api-b".to_string(),
        "--authorization-mode=RBAC".to_string(),
        "--service-account-max-token-expiration=30m".to_string(),
    ];
    let c = Cluster::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    c.create(&format!("{NS}/serviceaccounts"), &service_account("reader")).await;
    let token = issued(&c, "reader", json!({})).await;
    let (status, info) = whoami(&c, &token).await;
    assert_eq!((status, &info["username"]), (StatusCode::CREATED, &json!("system:serviceaccount:default:reader")));
    // a token for an audience the API does not accept is not an API credential
    let foreign = issued(&c, "reader", json!({"audiences": ["vault"]})).await;
    assert_eq!(whoami(&c, &foreign).await.0, StatusCode::UNAUTHORIZED);

    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(as_token(&c, Method::GET, pods, None, &token).await.0, StatusCode::FORBIDDEN);
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]});
    c.create("/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", &binding).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while as_token(&c, Method::GET, pods, None, &token).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the RoleBinding never granted list pods");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other_ns = "/api/v1/namespaces/kube-system/pods";
    assert_eq!(as_token(&c, Method::GET, other_ns, None, &token).await.0, StatusCode::FORBIDDEN);

    // longer than --service-account-max-token-expiration: cut to it
    let (_, body) = token_request(&c, "reader", json!({"expirationSeconds": 7200})).await;
    assert_eq!(body["spec"]["expirationSeconds"], 1800, "{body}");
    issuer_discovery(&c, &token).await;
}

/// Any service account reads the issuer's discovery documents (upstream's
/// system:service-account-issuer-discovery binding); the key set verifies its token.
async fn issuer_discovery(c: &Cluster, token: &str) {
    let (status, config) = as_token(c, Method::GET, "/.well-known/openid-configuration", None, token).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["issuer"], ISSUER);
    assert!(config["jwks_uri"].as_str().unwrap().ends_with("/openid/v1/jwks"), "{config}");
    assert_eq!(config["id_token_signing_alg_values_supported"], json!(["ES256"]));
    let (status, jwks) = as_token(c, Method::GET, "/openid/v1/jwks", None, token).await;
    assert_eq!(status, StatusCode::OK, "{jwks}");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).expect("a JWK set");
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.expect("tokens name their key");
    let jwk = set.find(&kid).unwrap_or_else(|| panic!("no key {kid} in {jwks}"));
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&["api-a"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("the published key verifies the token");
    let anonymous = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let status = anonymous.get(c.url("/openid/v1/jwks")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN, "anonymous users are not bound to issuer discovery");
}
