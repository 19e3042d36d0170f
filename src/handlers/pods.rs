//! Pod subresources that act rather than store (dispatched by `handlers::actions`):
//! `pods/binding` (how a scheduler places a pod; also the legacy `bindings` collection)
//! and `pods/eviction` (policy/v1 Eviction, what `kubectl drain` calls).

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::codec::{self, Output};
use super::status::{ApiError, ApiResult, FieldError};
use crate::admission::Admit;
use crate::registry::rest::{DeleteOpts, Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin, meta};

/// What one of these requests addresses: the pod's namespace and the name on the URL
/// (empty for the `bindings` collection, where the body names the pod).
pub struct Target<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub dry_run: bool,
    /// The requester, for admission (the action is admitted as a create of its subresource).
    pub admit: Admit,
}

fn pods() -> &'static ResourceDef {
    builtin("", "v1", "pods")
}

/// The answer upstream gives a successful binding or eviction: a bare Success Status.
fn success() -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    codec::respond(StatusCode::CREATED, Output::Json, &status)
}

/// The name a body carries must match the URL's, as upstream checks for both kinds.
fn body_name<'a>(body: &'a Value, url_name: &'a str, kind: &str) -> ApiResult<&'a str> {
    let name = meta::name(body);
    if url_name.is_empty() {
        return Ok(name);
    }
    if name != url_name {
        return Err(ApiError::bad_request(format!("name in URL does not match name in {kind} object")));
    }
    Ok(url_name)
}

/// POST pods/{name}/binding or bindings: set spec.nodeName and the PodScheduled
/// condition in one write. A pod already bound, or being deleted, is a Conflict.
pub async fn bind(reg: &Registry, target: Target<'_>, headers: &HeaderMap, body: &Bytes) -> ApiResult<Response> {
    let mut binding = codec::parse_body(headers, body)?;
    let name = body_name(&binding, target.name, "Binding")?.to_string();
    let res = pods();
    reg.admit_action(res, target.namespace, &name, Some(&target.admit), &mut binding, target.dry_run).await?;
    let name = name.as_str();
    let node = validate_binding(&binding, name)?;
    let mut pod = reg.get(res, target.namespace, name).await?;
    let why = if meta::metadata(&pod).is_some_and(|m| m.contains_key("deletionTimestamp")) {
        Some(format!("pod {name} is being deleted, cannot be assigned to a host"))
    } else {
        match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            Some(bound) if !bound.is_empty() => Some(format!("pod {name} is already assigned to node {bound:?}")),
            _ => None,
        }
    };
    if let Some(why) = why {
        return Err(ApiError::conflict("", "pods", name, &why));
    }
    let uid = meta::meta_str(&binding, "uid");
    if !uid.is_empty() && uid != meta::meta_str(&pod, "uid") {
        let why = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta::meta_str(&pod, "uid")
        );
        return Err(ApiError::conflict("", "pods", name, &why));
    }
    pod["spec"]["nodeName"] = json!(node);
    copy_annotations(&binding, &mut pod);
    set_scheduled_condition(&mut pod);
    // the resourceVersion read above is the precondition: a pod bound meanwhile conflicts
    // as upstream's binding storage, this write records no field manager
    let opts = WriteOpts { dry_run: target.dry_run, manager: None, admit: None };
    reg.update(res, target.namespace, name, pod, Part::Whole, &opts).await?;
    Ok(success())
}

fn validate_binding<'a>(binding: &'a Value, name: &str) -> ApiResult<&'a str> {
    let kind = binding.pointer("/target/kind").and_then(Value::as_str).unwrap_or("");
    let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    if !kind.is_empty() && kind != "Node" {
        causes.push(FieldError::unsupported("target.kind", kind, &["Node", "<empty>"]));
    }
    if node.is_empty() {
        causes.push(FieldError::required("target.name", ""));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", name, causes));
    }
    Ok(node)
}

fn copy_annotations(binding: &Value, pod: &mut Value) {
    let Some(extra) = meta::metadata(binding).and_then(|m| m.get("annotations")).and_then(Value::as_object) else {
        return;
    };
    let annotations = meta::metadata_mut(pod).entry("annotations").or_insert_with(|| json!({}));
    if let Some(map) = annotations.as_object_mut() {
        map.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

fn set_scheduled_condition(pod: &mut Value) {
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now_rfc3339()});
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = pod["status"].as_object_mut().map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conditions {
        list.retain(|c| c["type"] != "PodScheduled");
        list.push(condition);
    }
}

/// POST pods/{name}/eviction: delete the pod with the eviction's DeleteOptions.
/// PodDisruptionBudgets are not served yet, so no budget can refuse an eviction.
pub async fn evict(reg: &Registry, target: Target<'_>, headers: &HeaderMap, body: &Bytes) -> ApiResult<Response> {
    let mut eviction = codec::parse_body(headers, body)?;
    let name = body_name(&eviction, target.name, "Eviction")?.to_string();
    reg.admit_action(pods(), target.namespace, &name, Some(&target.admit), &mut eviction, target.dry_run).await?;
    let name = name.as_str();
    let mut opts = DeleteOpts { dry_run: target.dry_run, ..Default::default() };
    if let Some(options) = eviction.get("deleteOptions").filter(|v| v.is_object()) {
        opts.merge_body(options)?;
    }
    reg.delete(pods(), target.namespace, name, &opts).await?;
    Ok(success())
}
