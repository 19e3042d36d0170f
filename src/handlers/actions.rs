//! Create-only subresources that act on an object rather than store one: pod binding
//! and eviction (`pods.rs`) and service-account tokens (`token_request.rs`). One place
//! resolves them from the URL; discovery and OpenAPI list the same set.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;

use super::path::ResourcePath;
use super::query::Query;
use super::status::ApiResult;
use super::{AppState, pods, token_request};
use crate::admission::Admit;
use crate::auth::request::UserInfo;

/// Which action a path names.
pub enum Action {
    Bind,
    Evict,
    Token,
}

impl Action {
    /// The action a core/v1 namespaced path addresses, if any.
    pub fn of(p: &ResourcePath) -> Option<Action> {
        if !p.group.is_empty() || p.version != "v1" || p.namespace.is_none() {
            return None;
        }
        match (p.resource.as_str(), p.name.is_some(), p.subresource.as_deref()) {
            ("bindings", false, None) => Some(Action::Bind),
            ("pods", true, Some("binding")) => Some(Action::Bind),
            ("pods", true, Some("eviction")) => Some(Action::Evict),
            ("serviceaccounts", true, Some("token")) => Some(Action::Token),
            _ => None,
        }
    }

    /// Run the action (its POST: the caller refuses other verbs).
    pub async fn run(
        &self,
        state: &AppState,
        p: &ResourcePath,
        query: &Query,
        headers: &HeaderMap,
        body: &Bytes,
        user: Arc<UserInfo>,
    ) -> ApiResult<Response> {
        let (namespace, name) = (p.namespace.as_deref().unwrap_or(""), p.name.as_deref().unwrap_or(""));
        let admit = |sub| Admit::new(user.clone(), sub);
        let target = |sub| pods::Target { namespace, name, dry_run: false, admit: admit(sub) };
        let dry_run = query.dry_run()?;
        match self {
            Action::Bind => {
                pods::bind(&state.registry, pods::Target { dry_run, ..target("binding") }, headers, body).await
            }
            Action::Evict => {
                pods::evict(&state.registry, pods::Target { dry_run, ..target("eviction") }, headers, body).await
            }
            Action::Token => token_request::create(state, (namespace, name), headers, body, admit("token")).await,
        }
    }
}
