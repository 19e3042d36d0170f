//! Authentication and TLS against the real server: client certificates, static tokens,
//! anonymous requests, impersonation and `kubectl auth whoami` with stock kubectl; TLS
//! versions, SNI and serving certificate reload.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA that issues client and serving certificates into its own directory.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Sign `params` and write `<name>.crt` / `<name>.key`; returns (cert, key) paths.
    fn issue(&self, name: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let paths = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        // the key first: a reloading server sees a new key with the old cert as a mismatch
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        std::fs::write(&paths.0, cert.pem()).unwrap();
        paths
    }

    /// A client certificate for `user` in `groups` (at most two).
    fn client(&self, user: &str, groups: &[&str]) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, user);
        // rcgen keeps one value per attribute type: the second O goes in by its OID
        let types = [DnType::OrganizationName, DnType::CustomDnType(vec![2, 5, 4, 10])];
        for (ty, group) in types.into_iter().zip(groups) {
            params.distinguished_name.push(ty, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(user, params)
    }

    fn server(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        self.issue(name, params)
    }
}

/// Client certificate parameters valid only between two dates (year, month, day).
fn valid_between(user: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    params
}

/// PEM with the certificate and key, as reqwest's Identity takes them.
fn identity(paths: &(PathBuf, PathBuf)) -> reqwest::Identity {
    let mut pem = std::fs::read(&paths.0).unwrap();
    pem.extend(std::fs::read(&paths.1).unwrap());
    reqwest::Identity::from_pem(&pem).unwrap()
}

fn client(identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().use_rustls_tls().danger_accept_invalid_certs(true);
    if let Some(id) = identity {
        builder = builder.identity(id);
    }
    builder.build().unwrap()
}

const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

fn review_body() -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
}

/// POST a SelfSubjectReview with `client` (and maybe a bearer token): status and body.
async fn whoami(c: &Cluster, client: &reqwest::Client, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = client.post(c.url(WHOAMI)).json(&review_body());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_unauthorized(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(status_reason(status, body), "Unauthorized");
    assert_eq!(body["message"], "Unauthorized", "no detail leaks: {body}");
}

/// A kubeconfig for the cluster's server with `user` (YAML under `user:`).
fn kubeconfig(c: &Cluster, name: &str, user: &str) -> PathBuf {
    let path = c.dir.path().join(format!("kubeconfig-{name}"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        c.base
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `kubectl auth whoami -o json`'s userInfo.
fn kubectl_whoami(c: &Cluster, version: &str, kubeconfig: &Path, extra: &[&str]) -> Value {
    let config = kubeconfig.to_str().unwrap();
    let mut args = vec!["--kubeconfig", config, "auth", "whoami", "-o", "json"];
    args.extend_from_slice(extra);
    let out = c.kubectl_ok(version, &args);
    let review: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    review["status"]["userInfo"].clone()
}

fn groups(info: &Value) -> Vec<&str> {
    info["groups"].as_array().map(|g| g.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// A token file with the harness's admin token and `carol`.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.csv");
    let text = format!("{DEV_TOKEN},admin,0,system:masters\ncarol-token,carol,1001,\"devs,qa\"\n");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn client_certificates_tokens_anonymous_and_impersonation() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "client-ca");
    let alice = pki.client("alice", &["devs", "ops"]);
    let tokens = token_file(dir.path());
    let c = Cluster::start_with(&[
        &format!("--client-ca-file={}", pki.ca_file().display()),
        &format!("--token-auth-file={}", tokens.display()),
    ])
    .await;

    let cert_user = format!("    client-certificate: {}\n    client-key: {}\n", alice.0.display(), alice.1.display());
    let cert_config = kubeconfig(&c, "alice", &cert_user);
    let token_config = kubeconfig(&c, "carol", "    token: carol-token\n");
    // basic auth is no credential ferrokube (or upstream) accepts, so this is anonymous;
    // a user with no credentials at all would make kubectl prompt for them
    let anonymous_config = kubeconfig(&c, "anonymous", "    username: nobody\n    password: none\n");
    for version in KUBECTL_VERSIONS {
        let info = kubectl_whoami(&c, version, &cert_config, &[]);
        assert_eq!(info["username"], "alice", "kubectl {version}: {info}");
        assert_eq!(groups(&info), ["devs", "ops", "system:authenticated"], "kubectl {version}");

        let info = kubectl_whoami(&c, version, &token_config, &[]);
        assert_eq!((info["username"].as_str(), info["uid"].as_str()), (Some("carol"), Some("1001")), "{info}");
        assert_eq!(groups(&info), ["devs", "qa", "system:authenticated"], "kubectl {version}");

        let info = kubectl_whoami(&c, version, &anonymous_config, &[]);
        assert_eq!(info["username"], "system:anonymous", "kubectl {version}: {info}");
        assert_eq!(groups(&info), ["system:unauthenticated"], "kubectl {version}");

        let info = kubectl_whoami(&c, version, &c.kubeconfig, &["--as=bob", "--as-group=devs"]);
        assert_eq!(info["username"], "bob", "kubectl {version}: {info}");
        assert_eq!(groups(&info), ["devs", "system:authenticated"], "kubectl {version}");
    }

    // every impersonation header, raw: uid, repeated groups, percent-encoded extra keys
    let headers = [
        ("impersonate-user", "dave"),
        ("impersonate-uid", "42"),
        ("impersonate-group", "a"),
        ("impersonate-group", "b"),
        ("impersonate-extra-scopes%2Fread", "x"),
    ];
    let review = c.call(Method::POST, WHOAMI, common::Body::Json(&review_body()), &headers).await;
    let info = &review.json["status"]["userInfo"];
    assert_eq!((info["username"].as_str(), info["uid"].as_str()), (Some("dave"), Some("42")), "{info}");
    assert_eq!(groups(info), ["a", "b", "system:authenticated"]);
    assert_eq!(info["extra"], json!({"scopes/read": ["x"]}));
    let headers = [("impersonate-group", "a")];
    let r = c.call(Method::POST, WHOAMI, common::Body::Json(&review_body()), &headers).await;
    assert_eq!(status_reason(r.status, &r.json), "BadRequest", "groups without a user");

    let (status, body) = whoami(&c, &client(Some(identity(&alice))), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["kind"].as_str(), body["apiVersion"].as_str()),
        (Some("SelfSubjectReview"), Some("authentication.k8s.io/v1"))
    );
    // a failing token does not spoil a good certificate: the first success wins
    let (status, body) = whoami(&c, &client(Some(identity(&alice))), Some("forged")).await;
    assert_eq!((status, body["status"]["userInfo"]["username"].as_str()), (StatusCode::CREATED, Some("alice")));

    // a replaced client CA file is used without a restart: the new CA's certificates
    // start working, the old CA's stop
    let next = Pki::new(dir.path(), "next-client-ca");
    let erin = next.client("erin", &[]);
    std::fs::copy(next.ca_file(), pki.ca_file()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = whoami(&c, &client(Some(identity(&erin))), None).await;
        if status == StatusCode::CREATED {
            assert_eq!(body["status"]["userInfo"]["username"], "erin");
            break;
        }
        assert!(Instant::now() < deadline, "the new client CA was not used: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = whoami(&c, &client(Some(identity(&alice))), None).await;
    assert_unauthorized(status, &body);
}

#[tokio::test]
async fn bad_credentials_are_401_without_detail() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "client-ca");
    let other = Pki::new(dir.path(), "other-ca");
    let stranger = other.client("mallory", &["system:masters"]);
    let expired = pki.issue("old", valid_between("old", (2020, 1, 1), (2021, 1, 1)));
    let not_yet_valid = pki.issue("early", valid_between("early", (2100, 1, 1), (2101, 1, 1)));
    let tokens = token_file(dir.path());
    let c = Cluster::start_with(&[
        &format!("--client-ca-file={}", pki.ca_file().display()),
        &format!("--token-auth-file={}", tokens.display()),
        "--anonymous-auth=false",
    ])
    .await;

    let (status, body) = whoami(&c, &client(None), Some("forged-token")).await;
    assert_unauthorized(status, &body);
    let (status, body) = whoami(&c, &client(Some(identity(&stranger))), None).await;
    assert_unauthorized(status, &body);
    for cert in [&expired, &not_yet_valid] {
        let (status, body) = whoami(&c, &client(Some(identity(cert))), None).await;
        assert_unauthorized(status, &body);
    }
    // malformed or foreign Authorization headers are no credentials: 401 with anonymous off
    for header in ["Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "bearer\tx", "Bearer  x"] {
        let resp = client(None).get(c.url("/api")).header("authorization", header).send().await.unwrap();
        let status = resp.status();
        assert_unauthorized(status, &resp.json().await.unwrap());
    }
    // anonymous requests are off: no credentials is 401 too, even for discovery
    for path in ["/api", "/version", WHOAMI] {
        let resp = client(None).get(c.url(path)).send().await.unwrap();
        let status = resp.status();
        assert_unauthorized(status, &resp.json().await.unwrap());
    }
    let (status, body) = whoami(&c, &client(None), Some("carol-token")).await;
    assert_eq!((status, body["status"]["userInfo"]["username"].as_str()), (StatusCode::CREATED, Some("carol")));

    let config = kubeconfig(&c, "forged", "    token: forged-token\n");
    for version in KUBECTL_VERSIONS {
        let out = c.kubectl(version, &["--kubeconfig", config.to_str().unwrap(), "get", "namespaces"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // client-go words a 401 during discovery as a request for credentials
        let refused = stderr.contains("Unauthorized") || stderr.contains("provide credentials");
        assert!(!out.status.success() && refused, "kubectl {version}: {stderr}");
    }
}

#[tokio::test]
async fn whoami_is_discovered_and_create_only() {
    let c = Cluster::start().await;
    let listed = c.must_get("/apis").await;
    let auth = listed["groups"].as_array().unwrap().iter().find(|g| g["name"] == "authentication.k8s.io");
    assert_eq!(auth.expect("authentication.k8s.io in /apis")["preferredVersion"]["version"], "v1");
    for version in ["v1", "v1beta1"] {
        let list = c.must_get(&format!("/apis/authentication.k8s.io/{version}")).await;
        let names: Vec<&str> =
            list["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
        let want: &[&str] =
            if version == "v1" { &["selfsubjectreviews", "tokenreviews"] } else { &["selfsubjectreviews"] };
        assert_eq!(names, want, "{version}");
    }
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let aggregated = c.call(Method::GET, "/apis", common::Body::None, &[("accept", accept)]).await.json;
    let text = aggregated.to_string();
    assert!(text.contains(r#""resource":"selfsubjectreviews""#), "{text}");
    let (status, body) = c.get(WHOAMI).await;
    assert_eq!(status_reason(status, &body), "MethodNotAllowed");
    // without authentication flags every request is the development admin
    let info = kubectl_whoami(&c, "1.33", &c.kubeconfig, &[]);
    assert_eq!(info["username"], "system:admin", "{info}");
    assert_eq!(groups(&info), ["system:masters", "system:authenticated"]);
}

/// A client that verifies the server against `ca` and connects to `host` at the
/// cluster's port, TLS versions limited by `tweak`.
fn verifying_client(
    c: &Cluster,
    ca: &str,
    host: &str,
    tweak: fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> reqwest::Client {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", c.port).parse().unwrap();
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(host, addr)
        .timeout(Duration::from_secs(10));
    tweak(builder).build().unwrap()
}

async fn reaches(c: &Cluster, ca: &str, host: &str) -> Result<(), String> {
    let client = verifying_client(c, ca, host, |b| b);
    let url = format!("https://{host}:{}/version", c.port);
    client.get(url).send().await.map(|_| ()).map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn tls_versions_sni_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "serving-ca");
    let serving = pki.server("default", &["localhost", "127.0.0.1"]);
    let named = pki.server("named", &["other.example"]);
    let wild = pki.server("wild", &["*.wild.example"]);
    let c = Cluster::start_with(&[
        &format!("--tls-cert-file={}", serving.0.display()),
        &format!("--tls-private-key-file={}", serving.1.display()),
        &format!("--tls-sni-cert-key={},{}:other.example", named.0.display(), named.1.display()),
        &format!("--tls-sni-cert-key={},{}", wild.0.display(), wild.1.display()),
    ])
    .await;
    let ca = pki.ca_pem();

    // TLS 1.2 and 1.3 both work; below 1.2 is refused
    let tls12 = verifying_client(&c, &ca, "localhost", |b| b.max_tls_version(reqwest::tls::Version::TLS_1_2));
    let tls13 = verifying_client(&c, &ca, "localhost", |b| b.min_tls_version(reqwest::tls::Version::TLS_1_3));
    for client in [tls12, tls13] {
        let resp = client.get(format!("https://localhost:{}/version", c.port)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    for old in ["-tls1", "-tls1_1"] {
        assert!(!openssl_handshake(c.port, old), "{old} must be refused");
    }
    assert!(openssl_handshake(c.port, "-tls1_2"), "openssl itself can connect with TLS 1.2");

    // SNI: each name gets the certificate that carries it (the client checks the name)
    for host in ["localhost", "other.example", "a.wild.example"] {
        reaches(&c, &ca, host).await.unwrap_or_else(|e| panic!("{host}: {e}"));
    }

    // replacing the serving files changes what new connections get, without a restart
    let next = Pki::new(dir.path(), "next-ca");
    let renewed = next.server("default", &["localhost"]);
    std::fs::copy(&renewed.1, &serving.1).unwrap();
    std::fs::copy(&renewed.0, &serving.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = reaches(&c, &next.ca_pem(), "localhost").await {
        assert!(Instant::now() < deadline, "the new certificate was not served: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reaches(&c, &ca, "other.example").await.expect("SNI certificates are unaffected");
}

/// Whether `openssl s_client` completes a handshake with `version` (e.g. `-tls1_1`);
/// security level 0 lets openssl itself offer the old versions.
fn openssl_handshake(port: u16, version: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}
