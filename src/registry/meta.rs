//! Helpers over `metadata` of untyped objects, and the generic object-meta rules
//! every kind follows (uid, creationTimestamp, generation, resourceVersion).

use serde_json::{Map, Value, json};

pub fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    metadata(obj).and_then(|m| m.get(field)).and_then(Value::as_str).unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    metadata(obj).and_then(|m| m.get("labels")).and_then(Value::as_object)
}

/// A string at a dotted path such as `spec.nodeName`.
pub fn str_at<'a>(obj: &'a Value, path: &str) -> Option<&'a str> {
    value_at(obj, path).and_then(Value::as_str)
}

pub fn value_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, seg| v.get(seg))
}

/// Current time as upstream formats metav1.Time (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Fields the server owns on create: uid, creationTimestamp, generation, and
/// everything a client must not set (resourceVersion, deletion fields).
pub fn init_on_create(obj: &mut Value, track_generation: bool) {
    let m = metadata_mut(obj);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    m.remove("resourceVersion");
    m.remove("deletionTimestamp");
    m.remove("deletionGracePeriodSeconds");
    m.remove("selfLink");
    if track_generation {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
}

/// Keep the fields a client may not change on update (uid, creationTimestamp, ...).
pub fn carry_over_on_update(new: &mut Value, old: &Value) {
    let old_meta = metadata(old).cloned().unwrap_or_default();
    let m = metadata_mut(new);
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    m.remove("selfLink");
}

/// Bump `metadata.generation` when the spec (everything but metadata and status) changed.
pub fn bump_generation_if_spec_changed(new: &mut Value, old: &Value) {
    let changed = spec_of(new) != spec_of(old);
    if changed {
        let generation = metadata(old).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0);
        metadata_mut(new).insert("generation".into(), json!(generation + 1));
    }
}

/// Everything but metadata and status: what a generation counts.
fn spec_of(obj: &Value) -> Vec<(&String, &Value)> {
    obj.as_object()
        .map(|m| {
            m.iter().filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")).collect()
        })
        .unwrap_or_default()
}

pub fn set_resource_version(obj: &mut Value, rv: i64) {
    metadata_mut(obj).insert("resourceVersion".into(), json!(rv.to_string()));
}

/// Parse a client-given resourceVersion: it must be a decimal etcd revision.
pub fn parse_resource_version(rv: &str) -> Option<i64> {
    rv.parse::<i64>().ok().filter(|v| *v >= 0)
}
