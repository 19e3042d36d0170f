//! /healthz, /livez, /readyz and /metrics over HTTPS, as upstream's port 10259, with a
//! self-signed certificate made at start in memory (upstream also generates one when
//! given none). No authentication: the endpoint binds to loopback by default.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::{Scheduler, lock};

fn acceptor() -> anyhow::Result<TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "kube-scheduler");
    let cert = params.self_signed(&key)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn router(sched: Arc<Scheduler>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(sched)
}

async fn readyz(State(sched): State<Arc<Scheduler>>) -> impl IntoResponse {
    if sched.ready() { (StatusCode::OK, "ok") } else { (StatusCode::INTERNAL_SERVER_ERROR, "informers not synced") }
}

async fn metrics(State(sched): State<Arc<Scheduler>>) -> impl IntoResponse {
    let pending = lock(&sched.queue).counts();
    let mut text = sched.metrics.render(pending);
    if let Some(e) = &sched.elector {
        text.push_str(&e.render_metric());
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn serve(listener: TcpListener, sched: Arc<Scheduler>) {
    let acceptor = match acceptor() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the serving certificate; no health endpoint");
            return;
        }
    };
    let app = router(sched);
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
