//! The `/scale` subresource: an autoscaling/v1 Scale view of `spec.replicas` for
//! deployments, replica sets, stateful sets and replication controllers.

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::codec::{self, Output};
use super::status::{ApiError, ApiResult};
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, meta};

/// The selector of a workload as the label-selector string Scale carries.
fn selector_string(obj: &Value) -> String {
    let sel = obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    // replication controllers have a plain map; the apps kinds a LabelSelector
    let (labels, exprs) = match sel.get("matchLabels").or(sel.get("matchExpressions")) {
        Some(_) => (sel.get("matchLabels").cloned(), sel.get("matchExpressions").cloned()),
        None => (Some(sel.clone()), None),
    };
    let mut parts: Vec<String> = labels
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default();
    for e in exprs.as_ref().and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

fn to_scale(obj: &Value) -> Value {
    let m = meta::metadata(obj).cloned().unwrap_or_default();
    let mut metadata = json!({});
    for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = m.get(field) {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(obj),
        },
    })
}

/// The object a scale request addresses.
pub struct Target<'a> {
    pub res: &'static ResourceDef,
    pub namespace: &'a str,
    pub name: &'a str,
}

pub async fn handle(
    reg: &Registry,
    target: Target<'_>,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
    opts: &WriteOpts,
) -> ApiResult<Response> {
    let Target { res, namespace: ns, name } = target;
    let current = reg.get(res, ns, name).await?;
    let scale = to_scale(&current);
    let desired = match *method {
        Method::GET => return Ok(codec::respond(StatusCode::OK, Output::Json, &scale)),
        Method::PUT => codec::parse_body(headers, &body)?,
        Method::PATCH => patched(scale, headers, &body)?,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let replicas = desired
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas must be an integer"))?;
    if replicas < 0 {
        let cause = crate::handlers::status::FieldError::invalid(
            "spec.replicas",
            &json!(replicas),
            "must be greater than or equal to 0",
        );
        return Err(ApiError::invalid("autoscaling", "Scale", name, vec![cause]));
    }
    let mut updated = current.clone();
    updated["spec"]["replicas"] = json!(replicas);
    // a resourceVersion in the Scale is a precondition on the object
    let rv = meta::meta_str(&desired, "resourceVersion");
    if rv.is_empty() {
        meta::metadata_mut(&mut updated).remove("resourceVersion");
    } else {
        meta::metadata_mut(&mut updated).insert("resourceVersion".into(), json!(rv));
    }
    let written = reg.update(res, ns, name, updated, Part::Main, opts).await?;
    Ok(codec::respond(StatusCode::OK, Output::Json, &to_scale(&written)))
}

fn patched(mut scale: Value, headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/json-patch+json" => {
            let p: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut scale, &p).map_err(|e| ApiError::new_invalid_patch(&e.to_string()))?;
        }
        "application/strategic-merge-patch+json" => {
            scale = crate::patch::strategic_merge(&scale, body, "autoscaling", "v1", "Scale")?;
        }
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::merge(&mut scale, &p);
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    }
    Ok(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_as_strings() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}});
        assert_eq!(selector_string(&d), "app=web,tier in (a,b)");
        let rc = json!({"spec": {"selector": {"app": "web"}}});
        assert_eq!(selector_string(&rc), "app=web");
    }
}
