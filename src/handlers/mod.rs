//! HTTP routes. Everything under `/api` and `/apis` goes through one generic resource
//! handler driven by the resource table; discovery and health have their own routes.

pub mod codec;
pub mod discovery;
mod duplicate_keys;
pub mod list;
pub mod openapi;
pub mod path;
pub mod pods;
pub mod query;
pub mod resource;
pub mod reviews;
pub mod scale;
pub mod status;
pub mod table;

use axum::Router;
use axum::routing::get;

use crate::registry::rest::Registry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// The watch caches, one per etcd key prefix.
    pub caches: crate::watch::Caches,
    /// `host:port` clients reach this server on, for discovery's serverAddressByClientCIDRs.
    pub advertise: String,
}

/// Every group version served: the resource table's, then the reviews'.
pub fn served_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out = crate::registry::resources::group_versions();
    for gv in reviews::group_versions() {
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(discovery::health))
        .route("/livez", get(discovery::health))
        .route("/readyz", get(discovery::ready))
        .route("/healthz/{check}", get(discovery::health))
        .route("/livez/{check}", get(discovery::health))
        .route("/readyz/{check}", get(discovery::ready))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*path}", get(openapi::v3_document))
        .fallback(resource::dispatch)
        .with_state(state)
}
