//! HTTP routes. Everything under `/api` and `/apis` goes through one generic resource
//! handler driven by the resource table; discovery and health have their own routes.

pub mod actions;
pub mod codec;
pub mod discovery;
mod disruption;
mod duplicate_keys;
pub mod kubelet_proxy;
pub mod list;
pub mod openapi;
pub mod path;
pub mod pods;
pub mod query;
pub mod resource;
pub mod reviews;
pub mod scale;
mod service_proxy;
pub mod status;
pub mod table;
pub mod token_request;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::audit;
use crate::auth::authz::{self, Authorizer, Chain};
use crate::auth::rbac::Rbac;
use crate::auth::request::{Attributes, Decision};
use crate::registry::rest::Registry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// The watch caches, one per etcd key prefix.
    pub caches: crate::watch::Caches,
    /// `host:port` clients reach this server on, for discovery's serverAddressByClientCIDRs.
    pub advertise: String,
    /// The `--authorization-mode` chain (and the RBAC evaluator behind it).
    pub authz: Arc<Chain>,
    /// The RBAC evaluator, whatever the modes: escalation checks on RBAC writes use it.
    pub rbac: Arc<Rbac>,
    /// Signs TokenRequests; None without `--service-account-signing-key-file`.
    pub signer: Option<Arc<crate::auth::sa_token::Signer>>,
    /// The ServiceAccount issuer's discovery documents; None unless the issuer is an
    /// https URL and tokens are verified.
    pub sa_discovery: Option<Arc<crate::auth::sa_discovery::Documents>>,
    /// The request authenticators, for TokenReview.
    pub authn: Arc<crate::auth::authn::Authenticator>,
    /// How pods/log, pods/exec … and nodes/proxy reach kubelets.
    pub kubelet: Arc<kubelet_proxy::KubeletClient>,
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
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/openid/v1/jwks", get(discovery::openid_jwks))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.authz.clone(), authorize))
        .with_state(state)
}

/// Everything else under /api and /apis: the proxy subresources need the whole request
/// (its upgrade), the generic handler the rest.
async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    if let Some(path::Target::Resource(p)) = path::parse(req.uri().path())
        && let Some(sub) = kubelet_proxy::Sub::of(&p)
    {
        return kubelet_proxy::handle(&state, p, sub, req).await;
    }
    axum::handler::Handler::call(resource::dispatch, req, state).await
}

/// Authorization, after authentication: ask the chain about the request's attributes;
/// 403 unless it is allowed. The identity is left in the extensions for the handlers.
async fn authorize(State(chain): State<Arc<Chain>>, mut req: Request, next: Next) -> Response {
    let user = authz::user_of(req.extensions());
    if !chain.allows_everything() {
        let attrs = Attributes::of(req.method(), req.uri().path(), req.uri().query());
        match chain.authorize(&user, &attrs) {
            Decision::Allow => {}
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                audit::note_authorization(req.extensions(), false, &reason);
                return authz::forbidden(&user, &attrs, &reason).into_response();
            }
        }
    }
    audit::note_authorization(req.extensions(), true, "");
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::request::UserInfo;

    /// A stand-in for RBAC that never has an opinion.
    struct Silent;
    impl Authorizer for Silent {
        fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
            Decision::NoOpinion(String::new())
        }
    }

    async fn status_of(modes: &[&str], user: Option<UserInfo>) -> (http::StatusCode, serde_json::Value) {
        let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
        let backends = authz::Backends { rbac: Arc::new(Silent), node: Arc::new(Silent) };
        let chain = Arc::new(Chain::new(&modes, backends).expect("modes"));
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(chain, authorize));
        let mut req = http::Request::get("/api/v1/namespaces/default/pods").body(Body::empty()).expect("request");
        if let Some(user) = user {
            req.extensions_mut().insert(Arc::new(user));
        }
        let resp = app.oneshot(req).await.expect("response");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn refused_requests_get_upstreams_403() {
        let bob = UserInfo { name: "bob".into(), groups: vec!["system:authenticated".into()], ..Default::default() };
        let (status, body) = status_of(&["AlwaysDeny"], Some(bob.clone())).await;
        assert_eq!(status, http::StatusCode::FORBIDDEN);
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(
            body["message"],
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\": Everything is forbidden."
        );
        assert_eq!(status_of(&["Node", "RBAC"], Some(bob.clone())).await.0, http::StatusCode::FORBIDDEN);
        assert_eq!(status_of(&["AlwaysAllow"], Some(bob)).await.0, http::StatusCode::OK);
        // no identity yet (no authenticator): the development superuser, in system:masters
        assert_eq!(status_of(&["AlwaysDeny"], None).await.0, http::StatusCode::OK);
    }
}
