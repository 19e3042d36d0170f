//! The Swagger 2.0 document at `/openapi/v2`: every path of every group-version and
//! the definitions they reach. kubectl reads it (as protobuf, see `gnostic.rs`) for
//! `explain --output=plaintext-openapiv2` and, in older versions, for the patch
//! strategies of client-side apply.

use serde_json::{Map, Value, json};

use super::closure;
use super::routes::{META, Op, Route, group_version_routes, operation_refs, response_text};
use crate::handlers::served_group_versions as group_versions;

/// Definitions clients look up although no served path returns them: the bodies of
/// subresources upstream has (eviction, binding) and the discovery documents.
const EXTRA_DEFINITIONS: &[&str] = &[
    "io.k8s.api.policy.v1.Eviction",
    "io.k8s.api.core.v1.Binding",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
    "io.k8s.apimachinery.pkg.version.Info",
];

fn definition_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/definitions/{name}") })
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = op
        .query
        .iter()
        .map(|(name, ty)| json!({"name": name, "in": "query", "type": ty, "uniqueItems": true}))
        .collect();
    if let Some(body) = &op.body {
        params.insert(0, json!({"name": "body", "in": "body", "required": true, "schema": definition_ref(body)}));
    }
    let mut responses: Map<String, Value> = op
        .responses
        .iter()
        .map(|(code, def)| {
            (code.to_string(), json!({"description": response_text(code), "schema": definition_ref(def)}))
        })
        .collect();
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let mut out = json!({
        "description": op.description,
        "consumes": op.consumes,
        "produces": op.produces,
        "schemes": ["https"],
        "tags": [op.tag],
        "operationId": op.id,
        "parameters": params,
        "responses": responses,
    });
    op.add_extensions(&mut out);
    out
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true})
}

pub fn document() -> Value {
    let mut routes: Vec<Route> = super::routes::discovery_routes();
    for (group, version) in group_versions() {
        routes.extend(group_version_routes(group, version));
    }
    let mut roots: Vec<String> = EXTRA_DEFINITIONS.iter().map(|s| s.to_string()).collect();
    roots.push(format!("{META}.DeleteOptions"));
    roots.extend(routes.iter().flat_map(|r| r.ops.iter().flat_map(operation_refs)));
    let paths: Map<String, Value> =
        routes.iter().map(|r| (r.path.clone(), r.render(operation, path_parameter))).collect();
    let definitions: Map<String, Value> = closure(roots).into_iter().map(|(k, v)| (k, v.clone())).collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::super::discovery::GIT_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}
