//! metav1.LabelSelector against a label map, as upstream's LabelSelectorAsSelector: every
//! matchLabels pair and every expression must hold; an empty selector matches everything;
//! an expression with an unknown operator or malformed values matches nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

fn requirement_holds(req: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(|v| values.contains(v)),
        "NotIn" => !values.is_empty() && value.is_none_or(|v| !values.contains(v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        _ => false,
    }
}

pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|r| requirement_holds(r, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_expressions() {
        let labels: BTreeMap<String, String> =
            [("app", "web"), ("tier", "front")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        let expr = |op: &str, key: &str, values: serde_json::Value| {
            sel(json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]}))
        };
        assert!(selector_matches(&sel(json!({})), &labels), "empty matches everything");
        assert!(selector_matches(&sel(json!({"matchLabels": {"app": "web"}})), &labels));
        assert!(!selector_matches(&sel(json!({"matchLabels": {"app": "db"}})), &labels));
        assert!(selector_matches(&expr("In", "tier", json!(["front", "back"])), &labels));
        assert!(!selector_matches(&expr("In", "tier", json!([])), &labels));
        assert!(selector_matches(&expr("NotIn", "missing", json!(["x"])), &labels));
        assert!(!selector_matches(&expr("NotIn", "app", json!(["web"])), &labels));
        assert!(selector_matches(&expr("Exists", "app", json!([])), &labels));
        assert!(selector_matches(&expr("DoesNotExist", "zone", json!([])), &labels));
        assert!(!selector_matches(&expr("Gt", "app", json!(["1"])), &labels));
    }
}
