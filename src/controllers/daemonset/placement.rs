//! Where a DaemonSet's pods belong, as upstream decides it: a node must pass the pod's
//! nodeSelector and required node affinity (the scheduler's own predicates) and its
//! NoSchedule/NoExecute taints must be tolerated — with the tolerations every daemon pod
//! gets (not-ready and unreachable NoExecute; disk, memory and PID pressure and
//! unschedulable NoSchedule; network-unavailable for host-network pods). A NoSchedule
//! taint keeps new pods off but lets a running one stay. Each pod is pinned to its node
//! by a required node affinity on `metadata.name` (matchFields), for the scheduler to bind.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Toleration,
};

use crate::controllers::history::REVISION_LABEL;
use crate::controllers::workload::controller_ref;
use crate::scheduler::{node_affinity_admits, tolerates};

/// The deprecated label with the DaemonSet's generation, still set by upstream.
const GENERATION_LABEL: &str = "pod-template-generation";

/// Whether a node should get a daemon pod, and whether one there may stay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub should_run: bool,
    pub may_stay: bool,
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".into()),
        effect: Some(effect.to_string()),
        ..Default::default()
    }
}

/// Add upstream's daemon tolerations the pod does not already have (by key and effect).
fn add_daemon_tolerations(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else { return };
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_default();
    for t in wanted {
        if !list.iter().any(|have| have.key == t.key && have.effect == t.effect) {
            list.push(t);
        }
    }
}

/// The DaemonSet's pod, not yet placed: template, owner, revision labels, tolerations.
pub fn template_pod(ds: &DaemonSet, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or_default()));
    meta.namespace = ds.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref(ds)]);
    let labels = meta.labels.get_or_insert_default();
    labels.insert(REVISION_LABEL.into(), hash.to_string());
    labels.insert(GENERATION_LABEL.into(), ds.metadata.generation.unwrap_or(0).to_string());
    let mut pod = Pod { metadata: meta, spec: template.spec, status: None };
    add_daemon_tolerations(&mut pod);
    pod
}

/// The pod pinned to `node`: its required node affinity replaced by `metadata.name In [node]`.
pub fn on_node(mut pod: Pod, node: &str) -> Pod {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    let spec = pod.spec.get_or_insert_default();
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
    pod
}

/// The node a daemon pod is on, or is pinned to while unscheduled.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let required =
        spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
    let fields = required.node_selector_terms.first()?.match_fields.as_ref()?;
    let pinned = fields.iter().find(|r| r.key == "metadata.name" && r.operator == "In")?;
    pinned.values.as_ref()?.first().cloned()
}

/// How `pod` (the template pod) fits `node`.
pub fn fit(pod: &Arc<Pod>, node: &Arc<Node>) -> Fit {
    if !node_affinity_admits(pod.clone(), node.clone()) {
        return Fit { should_run: false, may_stay: false };
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let mut fit = Fit { should_run: true, may_stay: true };
    for taint in taints.iter().filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t))) {
        match taint.effect.as_str() {
            "NoExecute" => fit = Fit { should_run: false, may_stay: false },
            "NoSchedule" => fit.should_run = false,
            _ => {}
        }
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds() -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [],
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"}]}}},
        }))
        .unwrap()
    }

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}))
                .unwrap(),
        )
    }

    #[test]
    fn selectors_taints_and_the_automatic_tolerations() {
        let pod = Arc::new(template_pod(&ds(), "abc"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!((labels[REVISION_LABEL].as_str(), labels[GENERATION_LABEL].as_str()), ("abc", "3"));
        let ssd = json!({"disk": "ssd"});
        assert_eq!(fit(&pod, &node(json!({}), json!([]))), Fit { should_run: false, may_stay: false });
        assert_eq!(fit(&pod, &node(ssd.clone(), json!([]))), Fit { should_run: true, may_stay: true });
        let tolerated = json!([{"key": "dedicated", "value": "agents", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]);
        assert_eq!(fit(&pod, &node(ssd.clone(), tolerated)), Fit { should_run: true, may_stay: true });
        let no_schedule = json!([{"key": "gpu", "effect": "NoSchedule"}]);
        assert_eq!(fit(&pod, &node(ssd.clone(), no_schedule)), Fit { should_run: false, may_stay: true });
        let no_execute = json!([{"key": "gpu", "effect": "NoExecute"}]);
        assert_eq!(fit(&pod, &node(ssd, no_execute)), Fit { should_run: false, may_stay: false });
    }

    #[test]
    fn pods_are_pinned_by_match_fields() {
        let pod = on_node(template_pod(&ds(), "abc"), "n7");
        assert_eq!(node_of(&pod).as_deref(), Some("n7"));
        let term = &pod
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(term.match_fields.as_ref().unwrap()[0].key, "metadata.name");
    }
}
