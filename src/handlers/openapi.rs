//! OpenAPI v3 documents built from the resource table: one per group-version, listing
//! every operation with upstream's `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind` extensions and query parameters. kubectl reads
//! these to learn that the server validates fields itself (`fieldValidation`).
//! The full schemas (for `kubectl explain` and patch strategies) come with the patch and
//! OpenAPI work (issue 4).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::status::ApiError;
use crate::registry::resources::group_versions;
use crate::registry::{ResourceDef, all_resources};

/// Serialized documents by path (`api/v1`, `apis/apps/v1`), with their hash.
static DOCUMENTS: LazyLock<BTreeMap<String, (String, Vec<u8>)>> = LazyLock::new(|| {
    group_versions()
        .into_iter()
        .map(|(g, v)| {
            let path = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
            let body = serde_json::to_vec(&document(g, v)).unwrap_or_default();
            (path, (content_hash(&body), body))
        })
        .collect()
});

/// A stable digest of the document, used in `serverRelativeURL` for client caching.
fn content_hash(bytes: &[u8]) -> String {
    // FNV-1a, twice with different seeds: collision resistance is not a concern here
    let fnv = |seed: u64| bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    format!("{:016X}{:016X}", fnv(0xcbf29ce484222325), fnv(0x84222325cbf29ce4))
}

pub async fn v3_root() -> Response {
    let paths: serde_json::Map<String, Value> = DOCUMENTS
        .iter()
        .map(|(path, (hash, _))| {
            (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}))
        })
        .collect();
    axum::Json(json!({ "paths": paths })).into_response()
}

pub async fn v3_document(Path(path): Path<String>) -> Response {
    match DOCUMENTS.get(path.trim_matches('/')) {
        Some((hash, body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::ETAG, format!("\"{hash}\"")),
                (header::CACHE_CONTROL, "public, immutable".to_string()),
            ],
            body.clone(),
        )
            .into_response(),
        None => ApiError::not_found_path().into_response(),
    }
}

fn gvk(r: &ResourceDef) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

/// Schema name as upstream's: io.k8s.api.<pkg>.<version>.<Kind>.
fn schema_name(r: &ResourceDef) -> String {
    let pkg = match r.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

fn query_param(name: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": ty}, "uniqueItems": true})
}

fn operation(r: &ResourceDef, action: &str, params: &[(&str, &str)], body: bool, list: bool) -> Value {
    let schema = format!("#/components/schemas/{}", schema_name(r));
    let response_schema = if list { json!({"type": "object"}) } else { json!({"$ref": schema}) };
    let mut op = json!({
        "tags": [format!("{}{}", if r.group.is_empty() { "core" } else { r.group }, r.version)],
        "operationId": format!("{action}{}", r.kind),
        "parameters": params.iter().map(|(n, t)| query_param(n, t)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if body {
        op["requestBody"] = json!({"content": {"*/*": {"schema": {"$ref": schema}}}, "required": true});
    }
    op
}

const WRITE_PARAMS: &[(&str, &str)] =
    &[("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string")];
const PATCH_PARAMS: &[(&str, &str)] =
    &[("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string"), ("force", "boolean")];
const LIST_PARAMS: &[(&str, &str)] = &[
    ("allowWatchBookmarks", "boolean"),
    ("continue", "string"),
    ("fieldSelector", "string"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("sendInitialEvents", "boolean"),
    ("timeoutSeconds", "integer"),
    ("watch", "boolean"),
];

fn document(group: &str, version: &str) -> Value {
    let base = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in all_resources().iter().filter(|r| r.group == group && r.version == version) {
        let scope = if r.namespaced { format!("{base}/namespaces/{{namespace}}") } else { base.clone() };
        let collection = format!("{scope}/{}", r.plural);
        let mut coll = json!({
            "get": operation(r, "list", LIST_PARAMS, false, true),
            "post": operation(r, "post", WRITE_PARAMS, true, false),
        });
        if r.allows("deletecollection") {
            coll["delete"] = operation(r, "deletecollection", LIST_PARAMS, false, false);
        }
        paths.insert(collection.clone(), coll);
        let item = json!({
            "get": operation(r, "get", &[], false, false),
            "put": operation(r, "put", WRITE_PARAMS, true, false),
            "patch": operation(r, "patch", PATCH_PARAMS, true, false),
            "delete": operation(r, "delete", &[("dryRun", "string"), ("gracePeriodSeconds", "integer"), ("propagationPolicy", "string")], false, false),
        });
        paths.insert(format!("{collection}/{{name}}"), item);
        if r.has_status {
            let status = json!({
                "get": operation(r, "get", &[], false, false),
                "put": operation(r, "put", WRITE_PARAMS, true, false),
                "patch": operation(r, "patch", PATCH_PARAMS, true, false),
            });
            paths.insert(format!("{collection}/{{name}}/status"), status);
        }
        if r.namespaced {
            paths
                .insert(format!("{base}/{}", r.plural), json!({"get": operation(r, "list", LIST_PARAMS, false, true)}));
        }
        schemas.insert(
            schema_name(r),
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [gvk(r)],
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// OpenAPI v2, as little as clients need until the generated documents land: kubectl
/// 1.27 fetches it (protobuf first) before `apply` and falls back to its built-in
/// types when a kind has no schema here.
pub async fn v2(headers: http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("protobuf") {
        let content_type = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
        return (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], v2_protobuf()).into_response();
    }
    axum::Json(json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::discovery::GIT_VERSION},
        "paths": {},
        "definitions": {},
    }))
    .into_response()
}

/// gnostic's openapi.v2.Document: swagger (1), info (2: title 1, version 2),
/// paths (8) and definitions (9), the latter two empty.
fn v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, super::discovery::GIT_VERSION.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    field(&mut doc, 9, &[]);
    doc
}
