//! What authentication and authorization cost a write: ConfigMap creates through a
//! second server on the same etcd (under its own key prefix) that runs as a secured
//! cluster does (`--authorization-mode=Node,RBAC`, a token file, a client CA), by a user
//! whom a RoleBinding to `edit` allows, once with a bearer token and once with a client
//! certificate; against the dev server (no authentication, no authorization) in the
//! same rounds. Rounds alternate so drift on a noisy machine hits every row alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;

use super::{
    NewClient, Proc, configmap, cpu_seconds, create_rate_with, ensure_namespace, free_port, http_client, row,
    spawn_server, wait_ready,
};

const ADMIN_TOKEN: &str = "bench-admin-token";
const USER_TOKEN: &str = "bench-user-token";
const USER: &str = "bench-user";
const ROUNDS: usize = 3;

/// The secured server and the ways a client reaches it.
struct Secured {
    proc: Proc,
    base: String,
    /// a client presenting the user's certificate
    cert_client: NewClient,
}

pub async fn auth_cost(etcd_url: &str, dir: &Path, dev_base: &str, dev_pid: u32, creates: usize) {
    let secured = start_secured(etcd_url, dir).await;
    let token_client: NewClient = Arc::new(|| bearer_client(USER_TOKEN));
    let dev_client: NewClient = Arc::new(http_client);
    let per_round = (creates / ROUNDS).max(1);
    let (mut dev, mut token, mut cert) = (Totals::default(), Totals::default(), Totals::default());
    for round in 0..ROUNDS {
        let ns = format!("bench-auth-{round}");
        ensure_namespace(&http_client(), dev_base, &ns).await;
        let url = format!("{dev_base}/api/v1/namespaces/{ns}/configmaps");
        dev.add(dev_pid, per_round, || create_rate_with(url, per_round, 16, configmap, dev_client.clone())).await;
        for (how, totals, client) in [("t", &mut token, &token_client), ("c", &mut cert, &secured.cert_client)] {
            let ns = format!("bench-auth-{how}{round}");
            grant_edit(&secured.base, &ns).await;
            let url = format!("{}/api/v1/namespaces/{ns}/configmaps", secured.base);
            totals
                .add(secured.proc.0.id(), per_round, || create_rate_with(url, per_round, 16, configmap, client.clone()))
                .await;
        }
    }
    println!();
    dev.report("ConfigMap creates, 16 clients, no auth", None);
    token.report("  bearer token + Node,RBAC", Some(&dev));
    cert.report("  client certificate + Node,RBAC", Some(&dev));
}

/// Creates and server CPU summed over the rounds.
#[derive(Default)]
struct Totals {
    creates: usize,
    seconds: f64,
    cpu: f64,
}

impl Totals {
    async fn add<F: std::future::Future<Output = f64>>(&mut self, pid: u32, n: usize, run: impl FnOnce() -> F) {
        let cpu = cpu_seconds(pid);
        let rate = run().await;
        self.cpu += cpu_seconds(pid) - cpu;
        self.creates += n;
        self.seconds += n as f64 / rate;
    }

    fn rate(&self) -> f64 {
        self.creates as f64 / self.seconds
    }

    fn cpu_us(&self) -> f64 {
        self.cpu / self.creates as f64 * 1e6
    }

    fn report(&self, label: &str, base: Option<&Totals>) {
        let ratio = |f: fn(&Totals) -> f64| base.map(|b| f(self) / f(b));
        row(label, self.rate(), "/s", ratio(Totals::rate));
        row("    server CPU per create", self.cpu_us(), " us", ratio(Totals::cpu_us));
    }
}

async fn start_secured(etcd_url: &str, dir: &Path) -> Secured {
    let dir = dir.join("secured");
    std::fs::create_dir_all(&dir).expect("dir");
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, format!("{ADMIN_TOKEN},bench-admin,1000,\"system:masters\"\n{USER_TOKEN},{USER},1001\n"))
        .expect("token file");
    let (ca, identity) = client_pki(&dir);
    let port = free_port();
    let flags = [
        "--etcd-prefix=/bench-secured".to_string(),
        "--authorization-mode=Node,RBAC".to_string(),
        format!("--token-auth-file={}", tokens.display()),
        format!("--client-ca-file={}", ca.display()),
    ];
    let proc = spawn_server(etcd_url, port, &dir.join("certs"), &flags);
    let base = format!("https://127.0.0.1:{port}");
    wait_ready(&base).await;
    let cert_client: NewClient = Arc::new(move || {
        reqwest::Client::builder().danger_accept_invalid_certs(true).identity(identity.clone()).build().expect("client")
    });
    Secured { proc, base, cert_client }
}

/// A client CA (written to `dir/ca.crt`) and a client certificate for the bench user.
fn client_pki(dir: &Path) -> (std::path::PathBuf, reqwest::Identity) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, "bench-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).expect("ca file");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, USER);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("client cert");
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    (ca_file, reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"))
}

fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().expect("header"));
    reqwest::Client::builder().danger_accept_invalid_certs(true).default_headers(headers).build().expect("client")
}

/// Namespace `ns` on the secured server with a RoleBinding of `edit` to the bench user,
/// waited for until the authorizer has seen it.
async fn grant_edit(base: &str, ns: &str) {
    let admin = bearer_client(ADMIN_TOKEN);
    ensure_namespace(&admin, base, ns).await;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bench-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    });
    let url = format!("{base}/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings");
    let r = admin.post(url).json(&binding).send().await.expect("rolebinding");
    assert!(r.status().is_success(), "rolebinding: {}", r.status());
    let user = bearer_client(USER_TOKEN);
    let list = format!("{base}/api/v1/namespaces/{ns}/configmaps?limit=1");
    for _ in 0..200 {
        if user.get(&list).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the RoleBinding in {ns} never took effect");
}
