//! ClusterRole aggregation: a ClusterRole with an aggregationRule gets the rules of every
//! ClusterRole its selectors match. Upstream runs this in the controller-manager; until
//! ferrokube has one, the API server runs this loop itself, driven by the ClusterRole
//! watch cache.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::rules_of;
use crate::registry::filter::Filter;
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin, meta};
use crate::watch::Caches;

/// One metav1.LabelSelector term against a label map.
fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let equal = sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten();
    let all_equal = equal.into_iter().all(|(k, v)| label(k) == v.as_str());
    let exprs = sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten();
    let all_exprs = exprs.into_iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        match (e.get("operator").and_then(Value::as_str).unwrap_or(""), label(key)) {
            ("In", Some(v)) => values.contains(&v),
            ("NotIn", v) => v.is_none_or(|v| !values.contains(&v)),
            ("Exists", v) => v.is_some(),
            ("DoesNotExist", v) => v.is_none(),
            _ => false,
        }
    });
    // an empty selector matches nothing here, as upstream's aggregator skips it
    let empty = sel.as_object().is_none_or(|m| m.values().all(|v| v.is_null() || v == &json!({}) || v == &json!([])));
    !empty && all_equal && all_exprs
}

/// The rules `role` should have: those of every other ClusterRole matched by one of its
/// selectors, in name order, each rule once.
fn aggregated_rules(role: &Value, all: &[Value]) -> Vec<Value> {
    let selectors = role.pointer("/aggregationRule/clusterRoleSelectors").and_then(Value::as_array);
    let mut out: Vec<Value> = Vec::new();
    for other in all.iter().filter(|o| meta::name(o) != meta::name(role)) {
        let labels = meta::labels(other).cloned().unwrap_or_default();
        if !selectors.into_iter().flatten().any(|s| selector_matches(s, &labels)) {
            continue;
        }
        for r in rules_of(other) {
            let r = serde_json::to_value(r).unwrap_or_default();
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

fn cluster_roles() -> &'static ResourceDef {
    builtin(super::GROUP, "v1", "clusterroles")
}

/// Recompute aggregated roles in memory until nothing changes, so a chain (view into
/// edit into admin) settles in one pass; returns the indices of the roles that changed.
fn settle(all: &mut [Value]) -> Vec<usize> {
    let aggregated: Vec<usize> =
        (0..all.len()).filter(|&i| all[i].get("aggregationRule").is_some_and(|a| !a.is_null())).collect();
    let mut changed = Vec::new();
    // each round settles at least one more link of the longest chain
    for _ in 0..=aggregated.len() {
        let mut moved = false;
        for &i in &aggregated {
            let rules = aggregated_rules(&all[i], all);
            let current: Vec<Value> =
                rules_of(&all[i]).into_iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
            if current != rules {
                all[i]["rules"] = json!(rules);
                moved = true;
                if !changed.contains(&i) {
                    changed.push(i);
                }
            }
        }
        if !moved {
            break;
        }
    }
    changed
}

/// Bring every aggregated ClusterRole up to date once; returns how many were written.
pub async fn reconcile(reg: &Registry, caches: &Caches) -> usize {
    let res = cluster_roles();
    let snapshot = caches.get(res).snapshot(&caches.range(res, "", None), &Filter::everything(res));
    let mut all: Vec<Value> = snapshot.objects.iter().filter_map(|o| serde_json::from_slice(&o.json).ok()).collect();
    let mut written = 0;
    for i in settle(&mut all) {
        let role = all[i].clone();
        let name = meta::name(&role).to_string();
        // the resourceVersion read is the precondition: a conflict is retried next round
        match reg.update(res, "", &name, role, Part::Main, &WriteOpts::default()).await {
            Ok(_) => written += 1,
            Err(e) => tracing::debug!(role = name, error = %e.message, "aggregating ClusterRole"),
        }
    }
    written
}

/// Reconcile whenever a ClusterRole changed (a lost race changed one too, so it is
/// retried); the timeout only guards against a missed notification.
pub async fn run(reg: Registry, caches: Caches) {
    let cache = caches.get(cluster_roles());
    let mut changed = cache.subscribe();
    let mut seen = Vec::new();
    loop {
        let snapshot = cache.snapshot(&caches.range(cluster_roles(), "", None), &Filter::everything(cluster_roles()));
        let fingerprint: Vec<i64> = snapshot.objects.iter().map(|o| o.mod_revision).collect();
        if cache.is_ready() && fingerprint != seen {
            reconcile(&reg, &caches).await;
            seen = fingerprint;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), changed.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
    }

    #[test]
    fn selected_rules_once_each_never_from_itself() {
        let get = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let list = json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]});
        let target = json!({"metadata": {"name": "t", "labels": {"x": "1"}}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"x": "1"}},
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
        ]}});
        let all = vec![
            target.clone(),
            role("a", json!({"x": "1"}), json!([get.clone()])),
            role("b", json!({"tier": "b"}), json!([get.clone(), list.clone()])),
            role("c", json!({"tier": "c"}), json!([{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}])),
        ];
        assert_eq!(aggregated_rules(&target, &all), vec![get, list]);
        assert!(!selector_matches(&json!({}), &Map::new()), "an empty selector matches nothing");
        let absent = json!({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&absent, &Map::new()));
    }

    #[test]
    fn chains_settle_in_one_pass() {
        // each role gathers the roles labelled to-<its name>
        let aggregating = |name: &str, labels: Value| {
            json!({"metadata": {"name": name, "labels": labels},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("to-{name}"): "true"}}]}})
        };
        let get = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        let mut all = vec![
            aggregating("admin", json!({})),
            aggregating("edit", json!({"to-admin": "true"})),
            aggregating("view", json!({"to-edit": "true"})),
            role("source", json!({"to-view": "true"}), json!([get.clone()])),
        ];
        let mut changed = settle(&mut all);
        changed.sort_unstable();
        assert_eq!(changed, vec![0, 1, 2]);
        assert_eq!(all[0]["rules"], json!([get]));
        assert!(settle(&mut all).is_empty(), "settled");
    }
}
