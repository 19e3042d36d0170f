//! Decoding request bodies through the k8s-openapi types, so that a body is checked
//! against the real Kubernetes schema: wrong value types are rejected as upstream's
//! decoder rejects them, and fields the schema does not declare are found and reported
//! (strict field validation) or dropped (as upstream's decoder drops them).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Round-trips a JSON object through its typed form.
pub type Decoder = fn(&Value) -> Result<Value, String>;

pub fn decoder<T: DeserializeOwned + Serialize>(raw: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// For a kind served in a version the Kubernetes schemas no longer carry (kept for old
/// clients): the body as sent, with no fields to check.
pub fn untyped(raw: &Value) -> Result<Value, String> {
    Ok(raw.clone())
}

/// Paths of fields present in `raw` but absent from the typed round-trip `decoded`:
/// the fields the schema does not know. Null values are ignored (they decode to absent).
pub fn unknown_fields(raw: &Value, decoded: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(raw, decoded, &mut String::new(), &mut out);
    out
}

fn walk(raw: &Value, decoded: &Value, path: &mut String, out: &mut Vec<String>) {
    match (raw, decoded) {
        (Value::Object(r), Value::Object(d)) => {
            for (key, rv) in r {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match d.get(key) {
                    Some(dv) => walk(rv, dv, path, out),
                    None if rv.is_null() => {}
                    // free-form maps (labels, data ...) keep every key, so a missing key
                    // here is one the schema dropped.
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(r), Value::Array(d)) => {
            for (i, (rv, dv)) in r.iter().zip(d.iter()).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(rv, dv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_fields_the_schema_does_not_declare() {
        let raw = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","bogus":1},"data":{"k":"v"},"extra":{"x":1}});
        let decoded = decoder::<k8s_openapi::api::core::v1::ConfigMap>(&raw).unwrap();
        let mut unknown = unknown_fields(&raw, &decoded);
        unknown.sort();
        assert_eq!(unknown, vec!["extra".to_string(), "metadata.bogus".to_string()]);
    }

    #[test]
    fn rejects_wrong_types() {
        let raw =
            json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a"},"spec":{"replicas":"three"}});
        let err = decoder::<k8s_openapi::api::apps::v1::Deployment>(&raw).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }
}
