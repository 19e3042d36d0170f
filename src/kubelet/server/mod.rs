//! The kubelet's HTTPS API on `--address:--port` (10250): `/healthz`, `/pods`,
//! `/containerLogs`, `/exec`, `/attach`, `/portForward`, `/run`, `/stats/summary` and
//! `/metrics/resource`. The API server's `pods/log`, `pods/exec` … and `nodes/proxy`
//! reach the node through it. Callers are authenticated and authorized as upstream's
//! kubelet does it (`auth.rs`); the runtime is reached through CRI only (`runtime.rs`),
//! so the pod workers are not involved.

mod auth;
mod logs;
mod routes;
mod runtime;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::auth::tls::{CertPaths, PeerCertificates, Tls, TlsOptions};
use crate::kubelet::cri::client::Cri;

/// The flags of the kubelet's server (upstream's names and defaults).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The address the kubelet's API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: std::net::IpAddr,
    /// The port of the kubelet's API (0: do not serve it).
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// The serving certificate (default: a self-signed one under <root-dir>/pki).
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle that client certificates (the API server's) are verified against.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Requests without credentials are system:anonymous (else 401).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: bool,
    /// `Webhook` (SubjectAccessReview to the API server) or `AlwaysAllow`.
    #[arg(long, default_value = "Webhook")]
    pub authorization_mode: String,
}

/// What the handlers share.
pub struct Kubelet {
    pub client: kube::Client,
    pub node_name: String,
    pub pod_logs_dir: PathBuf,
    /// None with the fake runtime: only /healthz, /pods and logs on disk answer.
    pub cri: Option<Cri>,
}

/// Serve the API in the background; a failure to start is logged, not fatal, so the node
/// keeps running its pods. A port in use is waited for (several fake kubelets on one
/// machine should use `--port=0`).
pub fn spawn(args: ServerArgs, root_dir: PathBuf, kubelet: Kubelet) {
    if args.port == 0 {
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = serve(&args, &root_dir, kubelet).await {
            tracing::error!(error = format!("{e:#}"), "the kubelet API is not served");
        }
    });
}

/// Serve the API until the process ends. Errors only at start (a port in use, a bad
/// certificate); the caller decides whether that is fatal.
pub async fn serve(args: &ServerArgs, root_dir: &Path, kubelet: Kubelet) -> anyhow::Result<()> {
    let webhook = match args.authorization_mode.as_str() {
        "Webhook" => true,
        "AlwaysAllow" => false,
        other => anyhow::bail!("--authorization-mode={other}: only Webhook and AlwaysAllow exist"),
    };
    let serving = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => CertPaths { cert: cert.clone(), key: key.clone() },
        _ => self_signed(&root_dir.join("pki"), &kubelet.node_name)?,
    };
    let tls = Tls::new(&TlsOptions { serving, sni: Vec::new(), client_ca: args.client_ca_file.clone() })?;
    tls.spawn_reloader();
    let auth = auth::Auth::new(
        kubelet.client.clone(),
        kubelet.node_name.clone(),
        tls.client_ca.clone(),
        args.anonymous_auth,
        webhook,
    );
    let app =
        routes::router(Arc::new(kubelet)).layer(axum::middleware::from_fn_with_state(Arc::new(auth), auth::layer));
    let addr = SocketAddr::new(args.address, args.port);
    let listener = bind_when_free(addr).await?;
    tracing::info!(%addr, "serving the kubelet API");
    accept(listener, tls, app).await;
    Ok(())
}

/// Bind the API's port, waiting while another process holds it (a kubelet being
/// replaced, a test's): the node would otherwise run without logs or exec until restarted.
async fn bind_when_free(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut wait = Duration::from_secs(1);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::warn!(%addr, retry_in = ?wait, "the kubelet API's port is in use; waiting for it");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e).with_context(|| format!("binding the kubelet API to {addr}")),
        }
    }
}

async fn accept(listener: TcpListener, tls: Arc<Tls>, app: axum::Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (tls.acceptor(), app.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            // the client's certificate goes with each request to x509 authentication
            let peer_certs = tls.get_ref().1.peer_certificates().map(PeerCertificates::new);
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                if let Some(certs) = &peer_certs {
                    req.extensions_mut().insert(certs.clone());
                }
                app.clone().oneshot(req)
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

/// `kubelet.crt`/`kubelet.key` in `dir`, made once and kept, as upstream's kubelet makes
/// its self-signed serving certificate when given none.
fn self_signed(dir: &Path, node_name: &str) -> anyhow::Result<CertPaths> {
    let paths = CertPaths { cert: dir.join("kubelet.crt"), key: dir.join("kubelet.key") };
    if paths.cert.exists() && paths.key.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let host = crate::certs::hostname();
    let mut names = vec![node_name.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
    if !names.contains(&host) {
        names.push(host.clone());
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("{host}@{}", chrono::Utc::now().timestamp()));
    let cert = params.self_signed(&key)?;
    std::fs::write(&paths.cert, cert.pem())?;
    crate::auth::tls::write_private(&paths.key, &key.serialize_pem())?;
    tracing::info!(cert = %paths.cert.display(), "generated the kubelet's self-signed serving certificate");
    Ok(paths)
}
