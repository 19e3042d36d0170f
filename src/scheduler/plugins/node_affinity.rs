//! NodeAffinity: spec.nodeSelector and the required node affinity (terms ORed, each
//! term's expressions and fields ANDed) must match the node; preferred terms add their
//! weights to the score. Operators In, NotIn, Exists, DoesNotExist, Gt, Lt on labels;
//! In and NotIn on the field `metadata.name`. A malformed requirement matches nothing,
//! as upstream's lazy-error selector does.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::scheduler::framework::{
    Failure, FilterPlugin, NodeInfo, PodInfo, PreFilter, ScorePlugin, Snapshot, default_normalize,
};

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";
pub const CONFLICT: &str = "pod affinity terms conflict";

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let single_int = || match values {
        [v] => v.parse::<i64>().ok(),
        _ => None,
    };
    match req.operator.as_str() {
        "In" => !values.is_empty() && value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !values.is_empty() && !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => values.is_empty() && value.is_some(),
        "DoesNotExist" => values.is_empty() && value.is_none(),
        "Gt" | "Lt" => {
            let (Some(bound), Some(actual)) = (single_int(), value.and_then(|v| v.parse::<i64>().ok())) else {
                return false;
            };
            if req.operator == "Gt" { actual > bound } else { actual < bound }
        }
        _ => false,
    }
}

/// One term: every label expression and every field expression holds; an empty term
/// matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = node.labels().unwrap_or(&empty);
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(&node.name))
        })
}

/// The pod's nodeSelector and required node affinity hold on the node.
pub fn required_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec() else { return true };
    if let Some(selector) = &spec.node_selector {
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node)),
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// Required terms that all name nodes (`metadata.name In`, as a DaemonSet pod's do)
    /// narrow the search to those nodes; terms whose names cannot all hold reject the pod.
    fn pre_filter(&self, _: &Snapshot, pod: &PodInfo) -> PreFilter {
        let terms = pod
            .spec()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default();
        if terms.is_empty() {
            return PreFilter::AllNodes;
        }
        let mut names = BTreeSet::new();
        for term in terms {
            let mut term_names: Option<BTreeSet<String>> = None;
            for r in term.match_fields.iter().flatten().filter(|r| r.key == "metadata.name" && r.operator == "In") {
                let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                term_names = Some(match term_names {
                    None => values,
                    Some(prev) => prev.intersection(&values).cloned().collect(),
                });
            }
            // a term without a name requirement lets any node through (terms are ORed)
            let Some(term_names) = term_names else { return PreFilter::AllNodes };
            names.extend(term_names);
        }
        if names.is_empty() { PreFilter::Reject(CONFLICT.into()) } else { PreFilter::Only(names) }
    }

    fn filter(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        if required_matches(pod, node) { Ok(()) } else { Err(Failure::unresolvable(REASON)) }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The sum of the weights of the preferred terms the node matches.
    fn score(&self, _: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .spec()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default();
        preferred.iter().filter(|t| t.weight != 0 && term_matches(&t.preference, node)).map(|t| t.weight as i64).sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::{Value, json};

    fn labelled(labels: Value) -> NodeInfo {
        node_with("node-1", labels, json!({}), json!({}))
    }

    fn required(terms: Value) -> PodInfo {
        pod_info(json!({"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
    }

    fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
        filter_reasons(&NodeAffinity, pod, node).is_empty()
    }

    #[test]
    fn node_selector() {
        let n = labelled(json!({"disk": "ssd", "zone": "a"}));
        assert!(fits(&pod_info(json!({"containers": [], "nodeSelector": {"disk": "ssd"}})), &n));
        let miss = pod_info(json!({"containers": [], "nodeSelector": {"disk": "ssd", "zone": "b"}}));
        assert_eq!(filter_reasons(&NodeAffinity, &miss, &n), vec![REASON]);
    }

    #[test]
    fn every_operator() {
        let n = labelled(json!({"disk": "ssd", "cores": "8"}));
        let expr = |key: &str, op: &str, values: Value| {
            required(json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]))
        };
        let cases = [
            (expr("disk", "In", json!(["ssd", "nvme"])), true),
            (expr("disk", "In", json!(["hdd"])), false),
            (expr("disk", "NotIn", json!(["hdd"])), true),
            (expr("missing", "NotIn", json!(["x"])), true),
            (expr("disk", "NotIn", json!(["ssd"])), false),
            (expr("disk", "Exists", json!([])), true),
            (expr("missing", "Exists", json!([])), false),
            (expr("missing", "DoesNotExist", json!([])), true),
            (expr("disk", "DoesNotExist", json!([])), false),
            (expr("cores", "Gt", json!(["4"])), true),
            (expr("cores", "Gt", json!(["8"])), false),
            (expr("cores", "Lt", json!(["16"])), true),
            (expr("disk", "Gt", json!(["1"])), false),
            (expr("cores", "Gt", json!(["x"])), false),
            (expr("disk", "Bogus", json!(["ssd"])), false),
        ];
        for (i, (pod, want)) in cases.iter().enumerate() {
            assert_eq!(fits(pod, &n), *want, "case {i}");
        }
    }

    #[test]
    fn terms_are_ored_and_fields_match_the_name() {
        let n = labelled(json!({"disk": "ssd"}));
        let by_name =
            required(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}]));
        assert!(fits(&by_name, &n));
        let other =
            required(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}]));
        assert!(!fits(&other, &n));
        let ored = required(json!([
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]},
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
        ]));
        assert!(fits(&ored, &n));
        assert!(!fits(&required(json!([])), &n), "no terms match nothing");
        assert!(!fits(&required(json!([{}])), &n), "an empty term matches nothing");
    }

    #[test]
    fn node_name_fields_narrow_the_search() {
        let by_field = |terms: Value| with_snapshot(&[], |s| NodeAffinity.pre_filter(s, &required(terms)));
        let field = |op: &str, values: Value| json!({"matchFields": [{"key": "metadata.name", "operator": op, "values": values}]});
        let names = |n: &[&str]| PreFilter::Only(n.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            by_field(json!([field("In", json!(["a", "b"])), field("In", json!(["c"]))])),
            names(&["a", "b", "c"])
        );
        let both = json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["a", "b"]},
            {"key": "metadata.name", "operator": "In", "values": ["b", "c"]}]}]);
        assert_eq!(by_field(both), names(&["b"]));
        let disjoint = json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["a"]},
            {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]);
        assert_eq!(by_field(disjoint), PreFilter::Reject(CONFLICT.into()));
        let with_labels =
            json!([field("In", json!(["a"])), {"matchExpressions": [{"key": "x", "operator": "Exists"}]}]);
        assert_eq!(by_field(with_labels), PreFilter::AllNodes);
        assert_eq!(by_field(json!([field("NotIn", json!(["a"]))])), PreFilter::AllNodes);
    }

    #[test]
    fn preferred_terms_add_weights() {
        let n = labelled(json!({"disk": "ssd", "zone": "a"}));
        let pod = pod_info(
            json!({"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 3, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 7, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
            ]}}}),
        );
        assert_eq!(raw_score(&NodeAffinity, &pod, &n), 8);
    }
}
