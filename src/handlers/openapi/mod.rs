//! OpenAPI documents built from the resource table and `openapi/definitions.json`:
//! Swagger 2.0 at `/openapi/v2` (JSON, or gnostic protobuf for kubectl) and one
//! OpenAPI 3 document per group-version under `/openapi/v3`. Each carries every
//! operation with upstream's extensions and the full schemas of what they return, so
//! `kubectl explain` works and kubectl finds patch strategies and merge keys.
//! Documents are built once, on first request, and served from their bytes.

mod gnostic;
mod routes;
mod v2;
mod v3;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::status::ApiError;
use crate::handlers::served_group_versions as group_versions;
use crate::schema::schemas;

/// One serialized document and its content hash (the ETag, and `?hash=` in v3 URLs).
struct Doc {
    hash: String,
    body: Vec<u8>,
}

impl Doc {
    fn new(body: Vec<u8>) -> Doc {
        Doc { hash: content_hash(&body), body }
    }
}

/// v3 documents by path (`api/v1`, `apis/apps/v1`).
static V3: LazyLock<BTreeMap<String, Doc>> = LazyLock::new(|| {
    group_versions()
        .into_iter()
        .map(|(g, v)| {
            let path = routes::base(g, v).trim_start_matches('/').to_string();
            (path, Doc::new(serde_json::to_vec(&v3::document(g, v)).unwrap_or_default()))
        })
        .collect()
});

/// The v2 document as JSON and as protobuf.
static V2: LazyLock<(Doc, Doc)> = LazyLock::new(|| {
    let doc = v2::document();
    (Doc::new(serde_json::to_vec(&doc).unwrap_or_default()), Doc::new(gnostic::encode(&doc)))
});

/// A stable digest of a document, for client caching.
fn content_hash(bytes: &[u8]) -> String {
    // FNV-1a, twice with different seeds: collision resistance is not a concern here
    let fnv = |seed: u64| bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    format!("{:016X}{:016X}", fnv(0xcbf29ce484222325), fnv(0x84222325cbf29ce4))
}

/// The named definitions and every definition they reach through `$ref`.
fn closure(roots: impl IntoIterator<Item = String>) -> BTreeMap<String, &'static Value> {
    let definitions = schemas().definitions();
    let mut out = BTreeMap::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(definition) = definitions.get(&name) {
            collect_refs(definition, &mut todo);
            out.insert(name, definition);
        }
    }
    out
}

fn collect_refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match value.as_str() {
                    Some(target) if key == "$ref" => out.push(target.trim_start_matches("#/definitions/").to_string()),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

/// The document, or 304 when the client's `If-None-Match` names its ETag.
fn serve(headers: &HeaderMap, content_type: &'static str, doc: &'static Doc, cache: &'static str) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let wanted = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).unwrap_or("");
    if wanted.split(',').any(|tag| matches!(tag.trim(), "*") || tag.trim().trim_start_matches("W/") == etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let headers = [
        (header::CONTENT_TYPE, content_type.to_string()),
        (header::ETAG, etag),
        (header::CACHE_CONTROL, cache.to_string()),
        (header::VARY, "Accept".to_string()),
    ];
    (StatusCode::OK, headers, Bytes::from_static(&doc.body)).into_response()
}

pub async fn v3_root() -> Response {
    let paths: serde_json::Map<String, Value> = V3
        .iter()
        .map(|(path, doc)| {
            (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}))
        })
        .collect();
    axum::Json(json!({ "paths": paths })).into_response()
}

pub async fn v3_document(Path(path): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(doc) = V3.get(path.trim_matches('/')) else { return ApiError::not_found_path().into_response() };
    // A URL carrying the current hash never changes; any other may.
    let pinned = uri.query().is_some_and(|q| q.split('&').any(|p| p == format!("hash={}", doc.hash)));
    let cache = if pinned { "public, immutable" } else { "no-cache, private" };
    serve(&headers, "application/json", doc, cache)
}

/// Swagger 2.0; protobuf when the client asks for it (kubectl always does).
pub async fn v2(headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (json, protobuf) = &*V2;
    // the gnostic media type, with `@` (what kubectl sends) or `.` before the version
    if accept.contains("application/com.github.proto-openapi.spec.v2") {
        let content_type = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
        return serve(&headers, content_type, protobuf, "no-cache, private");
    }
    serve(&headers, "application/json", json, "no-cache, private")
}
