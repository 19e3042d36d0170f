//! TaintToleration: a node's NoSchedule and NoExecute taints keep out pods that do not
//! tolerate them; PreferNoSchedule taints only lower the score (reverse-normalized count
//! of untolerated ones).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Snapshot, default_normalize};

pub struct TaintToleration;

/// Upstream's ToleratesTaint: the effect (if set) and key (if set) must match; `Exists`
/// tolerates any value, `Equal` (or no operator) the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node.as_ref().and_then(|n| n.spec.as_ref()).and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.spec().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let tols = tolerations(pod);
        let untolerated = taints(node)
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|taint| !tols.iter().any(|t| tolerates(t, taint)));
        match untolerated {
            None => Ok(()),
            Some(t) => Err(Failure::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// The number of PreferNoSchedule taints the pod's PreferNoSchedule (or effect-less)
    /// tolerations leave untolerated.
    fn score(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| matches!(t.effect.as_deref(), None | Some("") | Some("PreferNoSchedule")))
            .collect();
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;

    fn tainted(taints: serde_json::Value) -> NodeInfo {
        node("n", json!({"taints": taints}), json!({}))
    }

    fn with_tolerations(tols: serde_json::Value) -> PodInfo {
        pod_info(json!({"containers": [{"name": "c"}], "tolerations": tols}))
    }

    #[test]
    fn toleration_matching() {
        let taint = |k: &str, v: &str, e: &str| Taint {
            key: k.into(),
            value: Some(v.into()),
            effect: e.into(),
            ..Default::default()
        };
        let tol = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
        let t = taint("k", "v", "NoSchedule");
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &t));
        assert!(tolerates(&tol(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"})), &t));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &t));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "v", "effect": "NoExecute"})), &t));
        assert!(tolerates(&tol(json!({"key": "k", "operator": "Exists"})), &t));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &t));
        assert!(!tolerates(&tol(json!({"key": "j", "operator": "Exists"})), &t));
        assert!(!tolerates(&tol(json!({"key": "k", "operator": "Lt", "value": "v"})), &t));
        assert!(tolerates(&tol(json!({"key": "e", "operator": "Equal"})), &taint("e", "", "NoExecute")));
    }

    #[test]
    fn filter_names_the_first_untolerated_hard_taint() {
        let n = tainted(json!([
            {"key": "soft", "effect": "PreferNoSchedule"},
            {"key": "a", "value": "1", "effect": "NoSchedule"},
            {"key": "b", "effect": "NoExecute"},
        ]));
        let none = with_tolerations(json!([]));
        assert_eq!(filter_reasons(&TaintToleration, &none, &n), vec!["node(s) had untolerated taint {a: 1}"]);
        let some = with_tolerations(json!([{"key": "a", "operator": "Exists"}]));
        assert_eq!(filter_reasons(&TaintToleration, &some, &n), vec!["node(s) had untolerated taint {b: }"]);
        let all = with_tolerations(json!([{"operator": "Exists"}]));
        assert!(filter_reasons(&TaintToleration, &all, &n).is_empty());
    }

    #[test]
    fn prefer_no_schedule_scores() {
        let n = tainted(json!([
            {"key": "x", "effect": "PreferNoSchedule"},
            {"key": "y", "effect": "PreferNoSchedule"},
            {"key": "z", "effect": "NoSchedule"},
        ]));
        let p = with_tolerations(
            json!([{"key": "x", "operator": "Exists"}, {"key": "y", "operator": "Exists", "effect": "NoSchedule"}]),
        );
        assert_eq!(raw_score(&TaintToleration, &p, &n), 1);
        let mut scores = vec![1, 0, 2];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![50, 100, 0]);
    }
}
