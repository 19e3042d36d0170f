//! /healthz, /livez, /readyz and /metrics over HTTPS (`crate::serving`), as upstream's
//! port 10259.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;
use tokio::net::TcpListener;

use super::{Scheduler, lock};

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
    crate::serving::serve_https(listener, router(sched), "kube-scheduler").await
}
