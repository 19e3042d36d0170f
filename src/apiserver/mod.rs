//! `ferrokube apiserver`: flags, start-up (etcd connection, bootstrap objects, TLS),
//! and the accept loop serving HTTP/1.1 and HTTP/2 over rustls.

pub mod kubernetes_endpoints;
pub mod quota_status;
pub mod service_accounts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::admission;
use crate::audit;
use crate::auth::authn::bootstrap_token::BootstrapTokens;
use crate::auth::authn::service_account::ServiceAccountTokens;
use crate::auth::authn::token_file::TokenFile;
use crate::auth::authn::x509::X509;
use crate::auth::authn::{self, Authenticate, Authenticator};
use crate::auth::authz::node::NodeAuthorizer;
use crate::auth::authz::{Authorizer, Backends, Chain};
use crate::auth::rbac::{Rbac, aggregation, bootstrap};
use crate::auth::sa_discovery;
use crate::auth::sa_token::{self, Signer, Verifier};
use crate::auth::tls::{self, PeerCertificates};
use crate::handlers::{self, AppState};
use crate::registry::allocator::Allocator;
use crate::registry::encryption::Encryption;
use crate::registry::keys::KeySpace;
use crate::registry::namespaces;
use crate::registry::rest::Registry;
use crate::registry::store::Store;
use crate::watch::Caches;

#[derive(Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// etcd endpoints, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,
    /// Key prefix of every object in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: std::net::IpAddr,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The address published as the `kubernetes` Service's endpoint (default: the bind
    /// address, or this machine's address when bound to every address).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Where a generated serving certificate is kept.
    #[arg(long, default_value = "/var/run/kubernetes")]
    pub cert_dir: PathBuf,
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// `cert,key` or `cert,key:name1,name2`: a certificate served to clients asking for
    /// these names by SNI (default: the names in the certificate). Repeatable.
    #[arg(long, value_name = "CERT,KEY[:NAMES]")]
    pub tls_sni_cert_key: Vec<tls::SniCert>,
    /// Client certificates signed by these CAs authenticate as CN (user) and O (groups).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Static bearer tokens, CSV: token,user,uid,"group1,group2".
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Requests without credentials act as system:anonymous (default true); false: 401.
    /// With none of these authentication flags, every request acts as system:admin.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: Option<bool>,
    /// PEM private key (RSA, or EC P-256 in PKCS#8) that signs ServiceAccount tokens.
    #[arg(long, requires = "service_account_issuer")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// PEM public or private keys that verify ServiceAccount tokens (default: the
    /// signing key). Repeatable.
    #[arg(long)]
    pub service_account_key_file: Vec<PathBuf>,
    /// Issuer (`iss`) of ServiceAccount tokens; the first signs, all are accepted. Repeatable.
    #[arg(long)]
    pub service_account_issuer: Vec<String>,
    /// Audiences the API accepts in ServiceAccount tokens (default: the first issuer).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// The longest token a TokenRequest gets (a Go duration such as `24h`); longer
    /// requests are cut to it.
    #[arg(long, value_parser = parse_go_duration)]
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// Where the issuer's discovery document says the key set is (default:
    /// `https://<this server>/openid/v1/jwks`).
    #[arg(long)]
    pub service_account_jwks_uri: Option<String>,
    /// Bootstrap tokens (Secrets of type bootstrap.kubernetes.io/token in kube-system)
    /// authenticate as system:bootstrap:<id>.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false)]
    pub enable_bootstrap_token_auth: bool,
    /// Service ClusterIPs are allocated from this range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: ipnet::Ipv4Net,
    /// Write a kubeconfig for this server to PATH once it serves.
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Client certificate the API server presents to kubelets (pods/log, exec, nodes/proxy).
    #[arg(long, requires = "kubelet_client_key")]
    pub kubelet_client_certificate: Option<PathBuf>,
    #[arg(long, requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA that kubelets' serving certificates are verified against (default: not verified).
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// Which node address reaches its kubelet, by preference, comma separated.
    #[arg(long, value_delimiter = ',', default_value = crate::handlers::kubelet_proxy::DEFAULT_ADDRESS_TYPES)]
    pub kubelet_preferred_address_types: Vec<String>,
    /// Events each resource's watch cache keeps for watches resuming at a resourceVersion.
    #[arg(long, default_value_t = crate::watch::caches::DEFAULT_HISTORY)]
    pub watch_cache_history: usize,
    /// EncryptionConfiguration (apiserver.config.k8s.io/v1): which resources are encrypted
    /// in etcd, with which providers (aescbc, aesgcm, secretbox, identity).
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    /// Audit policy (audit.k8s.io/v1 Policy); auditing needs it and --audit-log-path.
    #[arg(long)]
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go as JSON lines; `-` is standard output.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs kept (0: all).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Days a rotated audit log is kept (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// Authorizers asked in order, comma separated: AlwaysAllow, AlwaysDeny, Node, RBAC.
    #[arg(long, value_delimiter = ',', default_value = "AlwaysAllow")]
    pub authorization_mode: Vec<String>,
    /// Admission plug-ins to enable besides the default ones (NamespaceLifecycle,
    /// LimitRanger, ServiceAccount, NodeRestriction, ResourceQuota), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plug-ins to turn off, even default ones, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
}

pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    // a bad plug-in name stops the server before anything else
    admission::enabled_names(&args.enable_admission_plugins, &args.disable_admission_plugins)?;
    let keys = KeySpace::new(&args.etcd_prefix);
    let auditor = auditor(&args)?;
    let encryption = args.encryption_provider_config.as_deref().map(|p| Encryption::load(p, &keys)).transpose()?;
    let mut store = connect_etcd(&args.etcd_servers).await?;
    if let Some(encryption) = encryption {
        store = store.with_encryption(encryption);
    }
    let alloc = Allocator::new(args.service_cluster_ip_range, keys.clone());
    let progress_ordered = etcd_progress_ordered(&store).await;
    let caches = Caches::new(store.clone(), keys.clone(), args.watch_cache_history, progress_ordered);
    let registry = Registry::new(store, keys, alloc);
    let admission_ctx =
        admission::Context { registry: registry.clone(), caches: caches.clone(), quota: Arc::default() };
    let chain = admission::Chain::new(&admission_ctx, &args.enable_admission_plugins, &args.disable_admission_plugins)?;
    tracing::info!(plugins = ?chain.names(), "admission");
    let rbac = Arc::new(Rbac::new(caches.clone()));
    let node = Arc::new(NodeAuthorizer::new(caches.clone()));
    let authz = Arc::new(Chain::new(&args.authorization_mode, Backends { rbac: rbac.clone(), node })?);
    tracing::info!(modes = ?args.authorization_mode, "authorization");
    namespaces::bootstrap(&registry, args.secure_port)
        .await
        .map_err(|e| anyhow::anyhow!("creating the built-in objects: {}", e.message))?;
    bootstrap::ensure(&registry)
        .await
        .map_err(|e| anyhow::anyhow!("creating the RBAC bootstrap policy: {}", e.message))?;

    let tls_opts = tls_options(&args)?;
    let tls = tls::Tls::new(&tls_opts)?;
    tls.spawn_reloader();
    let addr = SocketAddr::new(args.bind_address, args.secure_port);
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let published = kubernetes_endpoints::advertise_ip(args.advertise_address, local.ip());
    let advertise = SocketAddr::new(published, local.port()).to_string();
    caches.start_all();
    tokio::spawn(kubernetes_endpoints::run(registry.clone(), published, local.port()));
    // bootstrap objects are the server's own; requests are admitted from here on
    let _ = registry.admission.set(chain);
    // ClusterRole aggregation belongs to the controller-manager; run here until it exists
    tokio::spawn(aggregation::run(registry.clone(), caches.clone()));
    // so are the default ServiceAccounts, the root CA ConfigMaps and quota usage
    let root_ca = root_ca_bundle(&args, &tls_opts);
    // not fatal: an object that cannot be read (say, stored under a key no longer
    // configured) must not keep the API up; the controller keeps retrying
    if let Err(e) = service_accounts::ensure_all(&registry, &root_ca).await {
        tracing::warn!(error = %e.message, "creating the default service accounts and root CA bundles");
    }
    tokio::spawn(service_accounts::run(admission_ctx.clone(), root_ca));
    tokio::spawn(quota_status::run(admission_ctx));
    let sa = service_account_tokens(&args, &caches, &advertise)?;
    let bootstrap_tokens = args.enable_bootstrap_token_auth.then(|| BootstrapTokens { caches: caches.clone() });
    let authn = Arc::new(authenticator(&args, tls.client_ca.clone(), sa.authn, bootstrap_tokens, authz.clone())?);
    let (signer, sa_discovery) = (sa.signer, sa.discovery);
    let kubelet = Arc::new(kubelet_client(&args)?);
    let state = AppState {
        registry,
        caches,
        advertise: advertise.clone(),
        authz,
        rbac,
        signer,
        sa_discovery,
        authn: authn.clone(),
        kubelet,
    };
    let mut app = handlers::router(state);
    if let Some(auditor) = &auditor {
        app = app.layer(axum::middleware::from_fn_with_state(auditor.clone(), audit::layer));
    }
    let mut app = app.layer(axum::middleware::from_fn_with_state(authn, authn::layer));
    if let Some(auditor) = &auditor {
        app = app.layer(axum::middleware::from_fn_with_state(auditor.clone(), audit::received));
    }
    tracing::info!(address = %local, etcd = ?args.etcd_servers, "serving the Kubernetes API");
    if let Some(path) = &args.write_kubeconfig {
        let creds = crate::kubeconfig::Credentials::DevToken;
        crate::kubeconfig::write(path, &format!("https://{advertise}"), "ferrokube", &creds)?;
        tracing::info!(path = %path.display(), "wrote kubeconfig");
    }
    serve(listener, tls, app, auditor.is_some()).await
}

/// The auditor the audit flags configure: both the policy and the log are needed.
fn auditor(args: &ApiserverArgs) -> anyhow::Result<Option<Arc<audit::Auditor>>> {
    let (policy, path) = match (&args.audit_policy_file, &args.audit_log_path) {
        (Some(policy), Some(path)) => (policy, path),
        (None, None) => return Ok(None),
        _ => {
            tracing::warn!("auditing needs both --audit-policy-file and --audit-log-path: no audit log");
            return Ok(None);
        }
    };
    let log = audit::sink::LogOptions {
        path: path.clone(),
        max_size_mb: args.audit_log_maxsize,
        max_backup: args.audit_log_maxbackup,
        max_age_days: args.audit_log_maxage,
    };
    let auditor = audit::Auditor::load(policy, &log)?;
    tracing::info!(policy = %policy.display(), log = %path.display(), "audit log");
    Ok(Some(Arc::new(auditor)))
}

/// What pods are told to trust (`kube-root-ca.crt`): the client CA bundle when there is
/// one (a cluster CA), else the serving certificate.
fn root_ca_bundle(args: &ApiserverArgs, tls: &tls::TlsOptions) -> String {
    let path = args.client_ca_file.as_ref().unwrap_or(&tls.serving.cert);
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "reading the root CA bundle for kube-root-ca.crt");
        String::new()
    })
}

fn tls_options(args: &ApiserverArgs) -> anyhow::Result<tls::TlsOptions> {
    let serving = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => tls::CertPaths { cert: cert.clone(), key: key.clone() },
        _ => tls::ensure_serving_cert(&args.cert_dir, &[args.bind_address.to_string()])?,
    };
    Ok(tls::TlsOptions { serving, sni: args.tls_sni_cert_key.clone(), client_ca: args.client_ca_file.clone() })
}

/// The authenticators the flags configure, in upstream's order; with no authentication
/// flag at all, the development identity for everyone (see `Authenticator::dev`).
/// `authz` decides who may impersonate whom.
fn authenticator(
    args: &ApiserverArgs,
    client_ca: Option<Arc<tls::ClientCaFile>>,
    sa_tokens: Option<ServiceAccountTokens>,
    bootstrap_tokens: Option<BootstrapTokens>,
    authz: Arc<Chain>,
) -> anyhow::Result<Authenticator> {
    let authz: Arc<dyn Authorizer> = authz;
    let configured =
        client_ca.is_some() || args.token_auth_file.is_some() || sa_tokens.is_some() || bootstrap_tokens.is_some();
    if !configured && args.anonymous_auth.is_none() {
        tracing::warn!("no authentication flags: every request acts as system:admin in system:masters");
        return Ok(Authenticator::dev(authz));
    }
    let mut chain: Vec<Box<dyn Authenticate>> = Vec::new();
    if let Some(ca) = client_ca {
        chain.push(Box::new(X509 { ca }));
    }
    if let Some(path) = &args.token_auth_file {
        chain.push(Box::new(TokenFile::load(path)?));
    }
    if let Some(sa) = sa_tokens {
        chain.push(Box::new(sa));
    }
    if let Some(bootstrap) = bootstrap_tokens {
        chain.push(Box::new(bootstrap));
    }
    Ok(Authenticator::new(chain, args.anonymous_auth.unwrap_or(true), authz))
}

/// What the `--service-account-*` flags configure; nothing without key flags.
#[derive(Default)]
struct ServiceAccountSetup {
    /// Signs TokenRequests.
    signer: Option<Arc<Signer>>,
    /// Authenticates ServiceAccount tokens.
    authn: Option<ServiceAccountTokens>,
    /// The issuer's discovery documents (an https issuer only).
    discovery: Option<Arc<sa_discovery::Documents>>,
}

fn service_account_tokens(
    args: &ApiserverArgs,
    caches: &Caches,
    advertise: &str,
) -> anyhow::Result<ServiceAccountSetup> {
    let mut key_files = args.service_account_key_file.clone();
    if key_files.is_empty() {
        key_files.extend(args.service_account_signing_key_file.clone());
    }
    if key_files.is_empty() {
        return Ok(ServiceAccountSetup::default());
    }
    anyhow::ensure!(!args.service_account_issuer.is_empty(), "--service-account-issuer is required to verify tokens");
    let audiences = if args.api_audiences.is_empty() {
        args.service_account_issuer[..1].to_vec()
    } else {
        args.api_audiences.clone()
    };
    let signer = match &args.service_account_signing_key_file {
        Some(path) => {
            let issuer = args.service_account_issuer[0].clone();
            let mut signer = Signer::load(path, issuer, audiences.clone())?;
            signer.max_seconds = args.service_account_max_token_expiration.map(|d| d.as_secs() as i64);
            Some(Arc::new(signer))
        }
        None => None,
    };
    let mut keys = Vec::new();
    for path in &key_files {
        keys.extend(sa_token::load_verify_keys(path)?);
    }
    let verifier = Verifier::new(keys, args.service_account_issuer.clone(), audiences);
    tracing::info!(issuers = ?verifier.issuers, audiences = ?verifier.audiences, "service account tokens");
    let issuer = &args.service_account_issuer[0];
    let discovery = sa_discovery::is_discoverable(issuer).then(|| {
        let jwks_uri =
            args.service_account_jwks_uri.clone().unwrap_or_else(|| format!("https://{advertise}/openid/v1/jwks"));
        Arc::new(sa_discovery::Documents::new(issuer, &jwks_uri, verifier.jwks()))
    });
    let authn = Some(ServiceAccountTokens { verifier, caches: caches.clone() });
    Ok(ServiceAccountSetup { signer, authn, discovery })
}

/// A Go duration as upstream's flags take them: `90s`, `1h30m`, `24h`.
pub(crate) fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut total = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("an empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        total += number * scale;
        rest = &rest[unit..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Connect to etcd, retrying while it starts; logs progress every attempt.
async fn connect_etcd(endpoints: &[String]) -> anyhow::Result<Store> {
    let mut last = None;
    for attempt in 1..=60 {
        match Store::connect(endpoints).await {
            Ok(store) => match store.current_revision().await {
                Ok(rev) => {
                    tracing::info!(revision = rev, "connected to etcd");
                    return Ok(store);
                }
                Err(e) => last = Some(anyhow::anyhow!(e.message)),
            },
            Err(e) => last = Some(e),
        }
        tracing::info!(attempt, "waiting for etcd");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd unreachable"))).context("connecting to etcd")
}

/// Whether etcd orders requested progress notifications with events (see
/// `watch::caches::progress_ordered`); consistent reads wait on the cache only then.
async fn etcd_progress_ordered(store: &Store) -> bool {
    match store.client().status().await {
        Ok(status) => {
            let ordered = crate::watch::caches::progress_ordered(status.version());
            tracing::info!(version = status.version(), progress_ordered = ordered, "etcd version");
            ordered
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read etcd's version; not relying on progress notifications");
            false
        }
    }
}

/// Accept connections and serve them; `audit` adds each request's peer address.
async fn serve(listener: TcpListener, tls: Arc<tls::Tls>, app: axum::Router, audit: bool) -> anyhow::Result<()> {
    let shutdown = crate::cli::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // the client's certificate chain goes with each request to x509 authentication
            let peer_certs = tls.get_ref().1.peer_certificates().map(PeerCertificates::new);
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                if let Some(certs) = &peer_certs {
                    req.extensions_mut().insert(certs.clone());
                }
                if audit {
                    req.extensions_mut().insert(audit::RemoteAddr(peer));
                }
                app.clone().oneshot(req)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn kubelet_client(args: &ApiserverArgs) -> anyhow::Result<handlers::kubelet_proxy::KubeletClient> {
    let cert_key = args.kubelet_client_certificate.clone().zip(args.kubelet_client_key.clone());
    let ca = args.kubelet_certificate_authority.clone();
    handlers::kubelet_proxy::KubeletClient::new(cert_key, ca, &args.kubelet_preferred_address_types)
        .context("the kubelet client (--kubelet-client-certificate, --kubelet-certificate-authority)")
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5_400)));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("10d").is_err(), "Go has no day unit");
        assert!(parse_go_duration("h").is_err());
    }
}
