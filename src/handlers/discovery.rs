//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`, aggregated
//! discovery v2 and v2beta1), `/version`, the health endpoints, and the ServiceAccount
//! issuer's OpenID documents.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use super::status::ApiError;
use crate::registry::resources::group_versions;
use crate::registry::{ResourceDef, all_resources};

pub const KUBE_VERSION: (&str, &str) = ("1", "33");
pub const GIT_VERSION: &str = "v1.33.0";

pub async fn version() -> Response {
    let body = json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "emulationMajor": KUBE_VERSION.0,
        "emulationMinor": KUBE_VERSION.1,
        "minCompatibilityMajor": KUBE_VERSION.0,
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": concat!("ferrokube-", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": format!("linux/{}", go_arch()),
    });
    axum::Json(body).into_response()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn health() -> &'static str {
    "ok"
}

/// Ready once etcd answers.
pub async fn ready(State(state): State<AppState>) -> Response {
    match state.registry.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("[-]etcd failed: {}\nreadyz check failed", e.message))
            .into_response(),
    }
}

/// Which aggregated discovery version (if any) the Accept header asks for.
fn aggregated_version(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for range in accept.split(',') {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") || !params.contains(&"as=APIGroupDiscoveryList") {
            continue;
        }
        if !params.contains(&"g=apidiscovery.k8s.io") {
            continue;
        }
        if params.contains(&"v=v2") {
            return Some("v2");
        }
        if params.contains(&"v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn aggregated_response(version: &str, groups: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": groups,
    });
    let content_type = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], serde_json::to_vec(&body).unwrap_or_default())
        .into_response()
}

fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceDef> {
    let (group, version) = (group.to_string(), version.to_string());
    all_resources().iter().filter(move |r| r.group == group && r.version == version)
}

/// Create-only subresources that act on an object rather than store one (served by
/// `handlers::pods`): (resource, subresource, response group, version, kind).
const ACTION_SUBRESOURCES: &[(&str, &str, &str, &str, &str)] = &[
    ("pods", "binding", "", "v1", "Binding"),
    ("pods", "eviction", "policy", "v1", "Eviction"),
    ("serviceaccounts", "token", "authentication.k8s.io", "v1", "TokenRequest"),
];

fn action_subresources(
    r: &ResourceDef,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str, &'static str, &'static str)> {
    let (group, plural) = (r.group, r.plural);
    ACTION_SUBRESOURCES.iter().filter(move |a| group.is_empty() && a.0 == plural)
}

/// The legacy create-only `bindings` collection of core/v1, the older form of pods/binding.
fn bindings_resource() -> Value {
    json!({"name": "bindings", "singularName": "binding", "namespaced": true, "kind": "Binding", "verbs": ["create"]})
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let mut resources: Vec<Value> = resources_of(g, v).map(aggregated_resource).collect();
            if g.is_empty() {
                let kind = json!({"group": "", "version": "v1", "kind": "Binding"});
                let scope = "Namespaced";
                resources.push(json!({"resource": "bindings", "responseKind": kind, "scope": scope, "singularResource": "binding", "verbs": ["create"]}));
            }
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut item = json!({"metadata": {}, "versions": versions});
    if !group.is_empty() {
        item["metadata"]["name"] = json!(group);
    }
    item
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let mut v = json!({
        "resource": r.plural,
        "responseKind": kind,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    let mut subresources = Vec::new();
    if r.has_status {
        subresources.push(json!({"subresource": "status", "responseKind": kind, "verbs": r.status_verbs()}));
    }
    if r.has_scale {
        let scale_kind = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
        subresources.push(json!({"subresource": "scale", "responseKind": scale_kind, "verbs": r.status_verbs()}));
    }
    for (_, sub, group, version, kind) in action_subresources(r) {
        let kind = json!({"group": group, "version": version, "kind": kind});
        subresources.push(json!({"subresource": sub, "responseKind": kind, "verbs": ["create"]}));
    }
    if !subresources.is_empty() {
        v["subresources"] = json!(subresources);
    }
    v
}

pub async fn api_versions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated_version(&headers) {
        return aggregated_response(v, vec![aggregated_group("")]);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise}],
    }))
    .into_response()
}

fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

fn group_object(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(json!({}));
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub async fn api_groups(headers: HeaderMap) -> Response {
    if let Some(v) = aggregated_version(&headers) {
        return aggregated_response(v, named_groups().into_iter().map(aggregated_group).collect());
    }
    let groups: Vec<Value> = named_groups().into_iter().map(group_object).collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})).into_response()
}

/// `/apis/<group>`
pub fn api_group(group: &str) -> Result<Response, ApiError> {
    if !named_groups().contains(&group) {
        return Err(ApiError::not_found_path());
    }
    let mut g = group_object(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(axum::Json(g).into_response())
}

/// `/api/v1` and `/apis/<group>/<version>`: the APIResourceList.
pub fn resource_list(group: &str, version: &str) -> Result<Response, ApiError> {
    let mut resources = Vec::new();
    for r in resources_of(group, version) {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": r.status_verbs(),
            }));
        }
        if r.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": r.status_verbs(),
            }));
        }
        for (_, sub, group, version, kind) in action_subresources(r) {
            let mut entry = json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": true, "kind": kind, "verbs": ["create"]});
            if !group.is_empty() {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
    }
    if group.is_empty() && !resources.is_empty() {
        resources.push(bindings_resource());
    }
    if resources.is_empty() {
        return Err(ApiError::not_found_path());
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
        .into_response())
}

/// `/.well-known/openid-configuration`: the ServiceAccount issuer's provider configuration.
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    issuer_document(&state, "application/json", |d| d.configuration.clone())
}

/// `/openid/v1/jwks`: the keys that verify ServiceAccount tokens.
pub async fn openid_jwks(State(state): State<AppState>) -> Response {
    issuer_document(&state, "application/jwk-set+json", |d| d.jwks.clone())
}

fn issuer_document(
    state: &AppState,
    content_type: &'static str,
    pick: fn(&crate::auth::sa_discovery::Documents) -> Vec<u8>,
) -> Response {
    let Some(docs) = &state.sa_discovery else {
        return ApiError::not_found_path().into_response();
    };
    let headers = [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")];
    (headers, pick(docs)).into_response()
}
