//! Authentication: the first step of every request. Authenticators are tried in
//! upstream's order (x509 client certificates, then bearer tokens: the token file,
//! ServiceAccount tokens, bootstrap tokens); the first that recognizes the request names
//! the user. Credentials that no one accepts (a bearer token included) answer 401;
//! a request with no credentials is `system:anonymous` where `--anonymous-auth` allows.
//! Impersonation headers are applied after. The identity is left in the request's
//! extensions as `Arc<UserInfo>` for authorization and the handlers.

pub mod bootstrap_token;
pub mod impersonate;
pub mod parse;
pub mod service_account;
pub mod token_file;
pub mod x509;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::request::Parts;

use super::authz::Authorizer;
use super::request::UserInfo;
use crate::handlers::status::ApiError;

pub const AUTHENTICATED: &str = "system:authenticated";

/// What one authenticator makes of a request.
pub enum Outcome {
    Authenticated(UserInfo),
    /// It carried credentials of this kind and they failed (the reason is only logged).
    Rejected(String),
    /// It carried no credentials of this kind.
    NoCredentials,
}

pub trait Authenticate: Send + Sync {
    fn authenticate(&self, req: &Parts) -> Outcome;
}

pub struct Authenticator {
    /// Empty: no authenticator flag was given (see `Authenticator::dev`).
    chain: Vec<Box<dyn Authenticate>>,
    anonymous: bool,
    /// Without any authentication flag every request is this user, so a dev cluster
    /// (and its kubeconfig's placeholder token) works as before authentication existed.
    dev_user: Option<UserInfo>,
    authorizer: Arc<dyn Authorizer>,
}

impl Authenticator {
    /// The authenticators in upstream's order; `anonymous` is `--anonymous-auth`.
    pub fn new(chain: Vec<Box<dyn Authenticate>>, anonymous: bool, authorizer: Arc<dyn Authorizer>) -> Self {
        Authenticator { chain, anonymous, dev_user: None, authorizer }
    }

    /// No authentication configured: everyone is `system:admin` in `system:masters`
    /// (the group upstream's bootstrap policy makes cluster-admin).
    pub fn dev(authorizer: Arc<dyn Authorizer>) -> Self {
        let user = UserInfo {
            name: "system:admin".into(),
            groups: vec!["system:masters".into(), AUTHENTICATED.into()],
            ..Default::default()
        };
        Authenticator { chain: Vec::new(), anonymous: false, dev_user: Some(user), authorizer }
    }

    /// Who sent the request; None means 401.
    pub fn authenticate(&self, req: &Parts) -> Option<UserInfo> {
        if let Some(user) = &self.dev_user {
            return Some(user.clone());
        }
        let mut rejected = false;
        for authenticator in &self.chain {
            match authenticator.authenticate(req) {
                Outcome::Authenticated(user) => return Some(with_authenticated_group(user)),
                Outcome::Rejected(why) => {
                    tracing::debug!(path = req.uri.path(), reason = why, "authentication failed");
                    rejected = true;
                }
                Outcome::NoCredentials => {}
            }
        }
        // a bearer token nobody accepts is a bad credential even when no authenticator
        // claimed it (upstream: "invalid bearer token"), never an anonymous request
        if !rejected && bearer_token(&req.headers).is_some() {
            tracing::debug!(path = req.uri.path(), "authentication failed: no authenticator accepts the bearer token");
            rejected = true;
        }
        (!rejected && self.anonymous).then(UserInfo::anonymous)
    }
}

fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    if !user.groups.iter().any(|g| g == AUTHENTICATED) {
        user.groups.push(AUTHENTICATED.into());
    }
    user
}

impl Authenticator {
    /// Who a bearer token names (TokenReview), after the same authenticators a request's
    /// token goes through; never the development admin, who holds no token.
    pub fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        if self.dev_user.is_some() || token.is_empty() {
            return None;
        }
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        let (mut parts, _) = http::Request::new(()).into_parts();
        parts.headers.insert(http::header::AUTHORIZATION, value);
        let user = self.authenticate(&parts)?;
        // an anonymous answer is no authentication of the token
        (user.name != "system:anonymous").then_some(user)
    }
}

/// The token of an `Authorization: Bearer <token>` header; any other scheme is no token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    parse::bearer(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}

/// The axum middleware: authenticate, apply impersonation, pass the identity on.
pub async fn layer(State(authn): State<Arc<Authenticator>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(user) = authn.authenticate(&parts) else {
        return ApiError::unauthorized().into_response();
    };
    // the credentials have served their purpose; nothing after needs (or may log) them
    parts.headers.remove(http::header::AUTHORIZATION);
    // the audit log names who impersonates as well as whom
    let impersonator = parts.headers.contains_key(impersonate::USER).then(|| Arc::new(user.clone()));
    let user = match impersonate::apply(authn.authorizer.as_ref(), user, &mut parts.headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    if let Some(original) = impersonator {
        parts.extensions.insert(crate::audit::ImpersonatedBy(original));
    }
    parts.extensions.insert(Arc::new(user));
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authz::AlwaysAllow;

    struct Fixed(fn() -> Outcome);
    impl Authenticate for Fixed {
        fn authenticate(&self, _: &Parts) -> Outcome {
            (self.0)()
        }
    }

    fn parts(auth: Option<&str>) -> Parts {
        let mut req = http::Request::builder().uri("/api");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn authn(chain: Vec<Box<dyn Authenticate>>, anonymous: bool) -> Authenticator {
        Authenticator::new(chain, anonymous, Arc::new(AlwaysAllow))
    }

    #[test]
    fn first_success_wins_failures_are_401_absence_is_anonymous() {
        let alice = || Outcome::Authenticated(UserInfo { name: "alice".into(), ..Default::default() });
        let bad = || Outcome::Rejected("nope".into());
        let none = || Outcome::NoCredentials;
        let user = authn(vec![Box::new(Fixed(bad)), Box::new(Fixed(alice))], true).authenticate(&parts(None));
        assert_eq!(user.unwrap().groups, [AUTHENTICATED], "a later authenticator may still accept");
        assert!(authn(vec![Box::new(Fixed(bad)), Box::new(Fixed(none))], true).authenticate(&parts(None)).is_none());
        let anon = authn(vec![Box::new(Fixed(none))], true).authenticate(&parts(None));
        assert_eq!(anon, Some(UserInfo::anonymous()));
        assert!(authn(vec![Box::new(Fixed(none))], false).authenticate(&parts(None)).is_none());
        let unclaimed = authn(vec![Box::new(Fixed(none))], true).authenticate(&parts(Some("Bearer nobodys")));
        assert!(unclaimed.is_none(), "a bearer token no one accepts is a 401, not anonymous");
    }

    #[test]
    fn bearer_tokens() {
        let token = |h: &str| bearer_token(&parts(Some(h)).headers).map(str::to_string);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
    }
}
