//! Who is asking and what they ask for: the identity authentication attaches to a
//! request, and the attributes authorizers decide on (upstream's `user.Info` and
//! `authorizer.Attributes`).

use std::collections::BTreeMap;

use http::Method;

use crate::handlers::path::{self, Target};

/// An authenticated (or anonymous) identity. Authentication stores it in the request's
/// extensions as `Arc<UserInfo>`; everything after reads it from there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// `system:anonymous` in group `system:unauthenticated`, as upstream names requests
    /// without credentials.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }
}

/// What a request asks to do, in the terms RBAC rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection for resources;
    /// the lower-case HTTP method for other paths.
    pub verb: String,
    /// false for non-resource paths such as `/healthz`, `/version`, `/apis`.
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// the URL path, for non-resource rules
    pub path: String,
    /// The `field=value` requirements of a list's, watch's or deletecollection's field
    /// selector (upstream's selector authorization): an authorizer may allow a request
    /// because it is limited to what these select. Empty when unlimited or unparsable.
    pub field_equals: Vec<(String, String)>,
}

impl Attributes {
    /// The attributes of one HTTP request, as upstream's request-info resolver derives them.
    pub fn of(method: &Method, uri_path: &str, query: Option<&str>) -> Attributes {
        let lower = method.as_str().to_ascii_lowercase();
        let non_resource = || Attributes { verb: lower.clone(), path: uri_path.to_string(), ..Default::default() };
        let Some(Target::Resource(p)) = path::parse(uri_path) else {
            return non_resource();
        };
        let watch_param = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
        // a WebSocket exec/attach/port-forward is a GET that creates a stream; upstream
        // (AuthorizePodWebsocketUpgradeCreatePermission) demands `create` for it as for POST
        let streams = p.group.is_empty()
            && p.resource == "pods"
            && matches!(p.subresource.as_deref(), Some("exec" | "attach" | "portforward"));
        let verb = match (method.clone(), p.name.is_some()) {
            (Method::GET, true) if streams => "create",
            (Method::GET | Method::HEAD, _) if p.watch || watch_param => "watch",
            (Method::GET | Method::HEAD, true) => "get",
            (Method::GET | Method::HEAD, false) => "list",
            (Method::POST, _) => "create",
            (Method::PUT, _) => "update",
            (Method::PATCH, _) => "patch",
            (Method::DELETE, true) => "delete",
            (Method::DELETE, false) => "deletecollection",
            _ => return non_resource(),
        };
        // a list or watch pinned to one name by its field selector is about that object,
        // as upstream's request info has it (a kubelet watches one secret this way)
        let name = match (p.name, verb) {
            (None, "list" | "watch") => selected_name(query),
            (name, _) => name,
        };
        let field_equals = match verb {
            "list" | "watch" | "deletecollection" => field_equals(query),
            _ => Vec::new(),
        };
        // a namespace is inside itself: a RoleBinding there may grant reading it
        let namespace = match (p.group.is_empty() && p.resource == "namespaces", &name) {
            (true, Some(own)) => Some(own.clone()),
            _ => p.namespace,
        };
        Attributes {
            verb: verb.to_string(),
            resource_request: true,
            api_group: p.group,
            api_version: p.version,
            namespace: namespace.unwrap_or_default(),
            resource: p.resource,
            subresource: p.subresource.unwrap_or_default(),
            name: name.unwrap_or_default(),
            path: uri_path.to_string(),
            field_equals,
        }
    }
}

/// The `field=value` requirements of the query's field selector (none if it does not parse).
fn field_equals(query: Option<&str>) -> Vec<(String, String)> {
    let Some(fields) = crate::handlers::query::Query::parse(query).ok().and_then(|q| q.field_selector().ok()) else {
        return Vec::new();
    };
    equalities(&fields)
}

/// The positive requirements of a field selector.
pub fn equalities(fields: &crate::registry::selectors::FieldSelector) -> Vec<(String, String)> {
    fields.reqs.iter().filter(|r| !r.negated).map(|r| (r.field.clone(), r.value.clone())).collect()
}

/// The name a `metadata.name=<name>` field selector requires, if it is a valid name.
fn selected_name(query: Option<&str>) -> Option<String> {
    let fields = crate::handlers::query::Query::parse(query).ok()?.field_selector().ok()?;
    let name = fields.pinned_name()?;
    (!name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])).then(|| name.to_string())
}

/// An authorizer's answer. Authorizers are asked in `--authorization-mode` order; the
/// first that allows or denies decides, and a request no one allows is forbidden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
    NoOpinion(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources_from_requests() {
        let a = Attributes::of(&Method::GET, "/api/v1/namespaces/ns/pods", Some("watch=true"));
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()), ("watch", "pods", "ns"));
        let a = Attributes::of(&Method::POST, "/api/v1/namespaces/ns/pods/p/eviction", None);
        assert_eq!((a.verb.as_str(), a.subresource.as_str(), a.name.as_str()), ("create", "eviction", "p"));
        let a = Attributes::of(&Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments", None);
        assert_eq!((a.verb.as_str(), a.api_group.as_str()), ("deletecollection", "apps"));
        let a = Attributes::of(&Method::GET, "/healthz", None);
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/healthz"));
        let a = Attributes::of(&Method::GET, "/apis/apps/v1", None);
        assert!(!a.resource_request, "discovery is a non-resource path");
        let q = Some("fieldSelector=metadata.name%3Ds1&watch=true");
        let a = Attributes::of(&Method::GET, "/api/v1/namespaces/ns/secrets", q);
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "s1"));
        let q = Some("fieldSelector=spec.nodeName%3Dn1%2Cstatus.phase%21%3DFailed");
        let a = Attributes::of(&Method::GET, "/api/v1/pods", q);
        assert_eq!(a.field_equals, [("spec.nodeName".to_string(), "n1".to_string())]);
        assert!(Attributes::of(&Method::GET, "/api/v1/namespaces/ns/pods/p", q).field_equals.is_empty(), "a get");
        let a = Attributes::of(&Method::GET, "/api/v1/namespaces/team", None);
        assert_eq!((a.resource.as_str(), a.namespace.as_str(), a.name.as_str()), ("namespaces", "team", "team"));
        let a = Attributes::of(&Method::PUT, "/api/v1/namespaces/team/status", None);
        assert_eq!((a.namespace.as_str(), a.subresource.as_str()), ("team", "status"));
    }
}
