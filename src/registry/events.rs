//! events.k8s.io/v1 Events are stored as core/v1 Events (one key space, as upstream),
//! so they are converted field by field on the way in and out.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field) pairs that differ only in name.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(map) = obj.as_object() else { return obj.clone() };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMES
            .iter()
            .find_map(|(ev, core)| if to_core { (k == ev).then_some(*core) } else { (k == core).then_some(*ev) });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// events.k8s.io/v1 → stored core/v1.
pub fn to_core(obj: &Value) -> Value {
    rename(obj, "v1", true)
}

/// stored core/v1 → events.k8s.io/v1.
pub fn from_core(obj: &Value) -> Value {
    rename(obj, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let ev =
            json!({"apiVersion":"events.k8s.io/v1","kind":"Event","note":"hi","regarding":{"name":"p"},"reason":"X"});
        let core = to_core(&ev);
        assert_eq!(core["message"], "hi");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(from_core(&core), ev);
    }
}
