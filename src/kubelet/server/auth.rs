//! Who may use the kubelet's API, as upstream's kubelet decides it: x509 client
//! certificates against `--client-ca-file`, bearer tokens through a TokenReview, then a
//! SubjectAccessReview on the `nodes` resource (Webhook mode) with the subresource the
//! path names. Answers are cached briefly, as upstream's webhook clients cache them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{Method, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;

use crate::auth::authn::x509::X509;
use crate::auth::authn::{Authenticate, Outcome, bearer_token};
use crate::auth::request::UserInfo;
use crate::auth::tls::ClientCaFile;
use crate::streaming::forward::status_response;

/// Upstream's webhook cache lifetimes: 2 minutes for tokens, 5 minutes for an allowed
/// and 30 seconds for a denied review.
const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);

pub struct Auth {
    pub client: kube::Client,
    pub node_name: String,
    pub x509: Option<X509>,
    pub anonymous: bool,
    /// `Webhook` (ask the API server) or `AlwaysAllow`.
    pub webhook: bool,
    tokens: Mutex<HashMap<String, (Option<UserInfo>, Instant)>>,
    decisions: Mutex<HashMap<String, (bool, Instant)>>,
}

impl Auth {
    pub fn new(
        client: kube::Client,
        node_name: String,
        ca: Option<Arc<ClientCaFile>>,
        anonymous: bool,
        webhook: bool,
    ) -> Auth {
        let x509 = ca.map(|ca| X509 { ca });
        Auth { client, node_name, x509, anonymous, webhook, tokens: Mutex::default(), decisions: Mutex::default() }
    }

    /// The caller, or None for a 401.
    async fn authenticate(&self, parts: &Parts) -> Option<UserInfo> {
        if let Some(x509) = &self.x509 {
            match x509.authenticate(parts) {
                Outcome::Authenticated(user) => return Some(user),
                Outcome::Rejected(why) => tracing::debug!(reason = why, "client certificate rejected"),
                Outcome::NoCredentials => {}
            }
        }
        match bearer_token(&parts.headers) {
            Some(token) => self.review_token(token).await,
            None => self.anonymous.then(UserInfo::anonymous),
        }
    }

    async fn review_token(&self, token: &str) -> Option<UserInfo> {
        if let Some((user, at)) = lock(&self.tokens).get(token).cloned()
            && at.elapsed() < TOKEN_TTL
        {
            return user;
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let user = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.filter(|s| s.authenticated == Some(true)).and_then(|s| s.user).map(|u| UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
            }),
            Err(e) => {
                // not cached: the API server may be back on the next request
                tracing::warn!(error = %e, "TokenReview failed");
                return None;
            }
        };
        lock(&self.tokens).insert(token.to_string(), (user.clone(), Instant::now()));
        user
    }

    async fn authorize(&self, user: &UserInfo, verb: &str, subresource: &str) -> bool {
        if !self.webhook {
            return true;
        }
        let key = format!("{}\0{}\0{verb}\0{subresource}", user.name, user.groups.join(","));
        if let Some((allowed, at)) = lock(&self.decisions).get(&key).cloned() {
            let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
            if at.elapsed() < ttl {
                return allowed;
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.to_string()),
                    name: Some(self.node_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let allowed = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                return false;
            }
        };
        lock(&self.decisions).insert(key, (allowed, Instant::now()));
        allowed
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The verb and `nodes` subresource upstream's kubelet checks for a request.
pub fn attributes(method: &Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let subresource = match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "healthz" => "healthz",
        "configz" => "configz",
        _ => "proxy",
    };
    (verb, subresource)
}

/// The middleware: 401 without an identity, 403 when the review says no.
pub async fn layer(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Some(user) = auth.authenticate(&parts).await else {
        tracing::debug!(path = parts.uri.path(), "unauthenticated request refused");
        return status_response(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    };
    let (verb, subresource) = attributes(&parts.method, parts.uri.path());
    if !auth.authorize(&user, verb, subresource).await {
        let message = format!("Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})", user.name);
        tracing::debug!(user = user.name, verb, subresource, "request forbidden");
        return status_response(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_subresources() {
        assert_eq!(attributes(&Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(attributes(&Method::GET, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(attributes(&Method::POST, "/exec/ns/pod/c"), ("create", "proxy"));
        assert_eq!(attributes(&Method::GET, "/containerLogs/ns/pod/c"), ("get", "proxy"));
        assert_eq!(attributes(&Method::GET, "/pods"), ("get", "proxy"));
        assert_eq!(attributes(&Method::GET, "/healthz"), ("get", "healthz"));
    }
}
