//! InterPodAffinity: the pod's required affinity terms need a matching pod in the node's
//! topology domain (unless the pod is the first of a group that matches its own terms and
//! no matching pod exists anywhere), its required anti-affinity terms need none, and the
//! node must not sit in a domain where an existing pod's required anti-affinity selects
//! this pod (symmetry). Scores: preferred terms of the pod (existing pods matching them),
//! and the existing pods' required affinity (hard weight 1), preferred affinity and
//! preferred anti-affinity terms matching the pod, summed per topology domain and scaled
//! from the lowest (0) to the highest (100).
//!
//! A term selects pods in its `namespaces` and in the namespaces its `namespaceSelector`
//! matches (by the namespaces' labels); with neither, the namespace of the pod it is
//! written in. A term without labelSelector selects nothing. The counts are worked out
//! once per cycle (upstream's PreFilter/PreScore), from the nodes holding pods with
//! affinity where that suffices. matchLabelKeys/mismatchLabelKeys narrow a term by the
//! labels of the pod it is written in.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
};

use crate::label_selector::selector_matches;
use crate::scheduler::framework::{
    Failure, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, PreScore, ScorePlugin, Snapshot,
};

/// pluginConfig's InterPodAffinityArgs.
pub struct InterPodAffinity {
    /// The score weight of an existing pod's required affinity term matching the pod.
    pub hard_pod_affinity_weight: i64,
    /// Whether the existing pods' preferred terms are left out of the score.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for InterPodAffinity {
    fn default() -> InterPodAffinity {
        InterPodAffinity { hard_pod_affinity_weight: 1, ignore_preferred_terms_of_existing_pods: false }
    }
}

pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY_REASON: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

const FILTER_STATE: &str = "InterPodAffinity/filter";
const SCORE_STATE: &str = "InterPodAffinity/score";

fn affinity(pod: &Pod) -> Option<&Affinity> {
    pod.spec.as_ref().and_then(|s| s.affinity.as_ref())
}

fn pod_affinity(pod: &Pod) -> Option<&PodAffinity> {
    affinity(pod).and_then(|a| a.pod_affinity.as_ref())
}

fn pod_anti_affinity(pod: &Pod) -> Option<&PodAntiAffinity> {
    affinity(pod).and_then(|a| a.pod_anti_affinity.as_ref())
}

fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod_affinity(pod).and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default()
}

fn required_anti_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    let terms = pod_anti_affinity(pod).and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref());
    terms.unwrap_or_default()
}

fn preferred_affinity(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    let terms = pod_affinity(pod).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref());
    terms.unwrap_or_default()
}

fn preferred_anti_affinity(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    let terms = pod_anti_affinity(pod).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref());
    terms.unwrap_or_default()
}

/// Whether the pod has any pod affinity or anti-affinity term.
pub fn has_pod_affinity(pod: &Pod) -> bool {
    !(required_affinity(pod).is_empty()
        && required_anti_affinity(pod).is_empty()
        && preferred_affinity(pod).is_empty()
        && preferred_anti_affinity(pod).is_empty())
}

pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    !required_anti_affinity(pod).is_empty()
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("")
}

/// Whether `term`, written in the pod `owner`, selects `pod`. Its matchLabelKeys and
/// mismatchLabelKeys stand for `key In [owner's value]` and `key NotIn [owner's value]`
/// for the keys the owner has, as upstream's API server merges them into the
/// labelSelector when the owner is created (ferrokube's does not, so the scheduler does).
fn term_selects(term: &PodAffinityTerm, owner: &Pod, pod: &Pod, snapshot: &Snapshot) -> bool {
    let (ns, owner_ns) = (namespace(pod), namespace(owner));
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let empty = BTreeMap::new();
    let in_scope = match &term.namespace_selector {
        None if listed.is_empty() => ns == owner_ns,
        selector => {
            listed.iter().any(|n| n == ns)
                || selector.as_ref().is_some_and(|s| selector_matches(s, snapshot.namespaces.get(ns).unwrap_or(&empty)))
        }
    };
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let owner_labels = owner.metadata.labels.as_ref().unwrap_or(&empty);
    let same = |keys: &Option<Vec<String>>, want: bool| {
        keys.iter().flatten().all(|k| owner_labels.get(k).is_none_or(|v| (labels.get(k) == Some(v)) == want))
    };
    in_scope
        && term.label_selector.as_ref().is_some_and(|s| selector_matches(s, labels))
        && same(&term.match_label_keys, true)
        && same(&term.mismatch_label_keys, false)
}

/// Topology key → value → a count or score.
#[derive(Debug, Default)]
struct Domains(HashMap<String, HashMap<String, i64>>);

impl Domains {
    fn add(&mut self, key: &str, node: &NodeInfo, delta: i64) {
        let Some(value) = node.labels().and_then(|l| l.get(key)) else { return };
        let values = match self.0.get_mut(key) {
            Some(values) => values,
            None => self.0.entry(key.to_string()).or_default(),
        };
        match values.get_mut(value) {
            Some(n) => *n += delta,
            None => {
                values.insert(value.clone(), delta);
            }
        }
    }

    fn get(&self, key: &str, node: &NodeInfo) -> i64 {
        let value = node.labels().and_then(|l| l.get(key));
        value.and_then(|v| self.0.get(key)?.get(v)).copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.values().all(|values| values.is_empty())
    }

    /// The sum over every topology key of the node's domain.
    fn total(&self, node: &NodeInfo) -> i64 {
        self.0.keys().map(|key| self.get(key, node)).sum()
    }
}

/// The PreFilter counts: existing pods matching all of the pod's required affinity terms,
/// matching its required anti-affinity terms, and existing pods whose required
/// anti-affinity terms select the pod; each in the domains of their nodes.
#[derive(Debug, Default)]
struct FilterState {
    affinity: Domains,
    anti_affinity: Domains,
    existing_anti_affinity: Domains,
}

fn filter_state(snapshot: &Snapshot, pod: &PodInfo) -> FilterState {
    let (affinity, anti) = (required_affinity(&pod.pod), required_anti_affinity(&pod.pod));
    let mut state = FilterState::default();
    for node in &snapshot.nodes {
        if node.pods_with_required_anti_affinity > 0 {
            for existing in node.pods.values() {
                for term in required_anti_affinity(&existing.pod) {
                    if term_selects(term, &existing.pod, &pod.pod, snapshot) {
                        state.existing_anti_affinity.add(&term.topology_key, node, 1);
                    }
                }
            }
        }
        if affinity.is_empty() && anti.is_empty() {
            continue;
        }
        for existing in node.pods.values() {
            if !affinity.is_empty() && affinity.iter().all(|t| term_selects(t, &pod.pod, &existing.pod, snapshot)) {
                for term in affinity {
                    state.affinity.add(&term.topology_key, node, 1);
                }
            }
            for term in anti.iter().filter(|t| term_selects(t, &pod.pod, &existing.pod, snapshot)) {
                state.anti_affinity.add(&term.topology_key, node, 1);
            }
        }
    }
    state
}

fn node_has_label(node: &NodeInfo, key: &str) -> bool {
    node.labels().is_some_and(|l| l.contains_key(key))
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let state = snapshot.cycle.get_or_insert_with(FILTER_STATE, pod, || filter_state(snapshot, pod));
        let affinity = required_affinity(&pod.pod);
        if affinity.iter().any(|t| !node_has_label(node, &t.topology_key)) {
            return Err(Failure::unresolvable(AFFINITY_REASON));
        }
        let found = affinity.iter().all(|t| state.affinity.get(&t.topology_key, node) > 0);
        // the first pod of a group whose terms select itself may go anywhere, as long as no
        // pod matching them exists yet
        let first_of_group =
            || state.affinity.is_empty() && affinity.iter().all(|t| term_selects(t, &pod.pod, &pod.pod, snapshot));
        if !found && !first_of_group() {
            return Err(Failure::unresolvable(AFFINITY_REASON));
        }
        if required_anti_affinity(&pod.pod).iter().any(|t| state.anti_affinity.get(&t.topology_key, node) > 0) {
            return Err(Failure::unschedulable(vec![ANTI_AFFINITY_REASON.into()]));
        }
        let labels = node.labels().into_iter().flatten();
        if !state.existing_anti_affinity.is_empty()
            && labels.into_iter().any(|(k, v)| state.existing_anti_affinity.0.get(k).and_then(|m| m.get(v)) > Some(&0))
        {
            return Err(Failure::unschedulable(vec![EXISTING_ANTI_AFFINITY_REASON.into()]));
        }
        Ok(())
    }
}

/// The PreScore sums: for each existing pod, the weights of the pod's preferred terms it
/// matches (anti-affinity negative), and of its own terms that select the pod.
fn score_state(args: &InterPodAffinity, snapshot: &Snapshot, pod: &PodInfo) -> Domains {
    let (preferred, preferred_anti) = (preferred_affinity(&pod.pod), preferred_anti_affinity(&pod.pod));
    let has_constraints = !preferred.is_empty() || !preferred_anti.is_empty();
    let mut scores = Domains::default();
    for node in &snapshot.nodes {
        if node.labels().is_none_or(|l| l.is_empty()) || (!has_constraints && node.pods_with_affinity == 0) {
            continue;
        }
        for existing in node.pods.values() {
            let other = &existing.pod;
            for (terms, sign) in [(preferred, 1), (preferred_anti, -1)] {
                for t in terms.iter().filter(|t| term_selects(&t.pod_affinity_term, &pod.pod, other, snapshot)) {
                    scores.add(&t.pod_affinity_term.topology_key, node, sign * t.weight as i64);
                }
            }
            if args.hard_pod_affinity_weight > 0 {
                for t in required_affinity(other).iter().filter(|t| term_selects(t, other, &pod.pod, snapshot)) {
                    scores.add(&t.topology_key, node, args.hard_pod_affinity_weight);
                }
            }
            if args.ignore_preferred_terms_of_existing_pods {
                continue;
            }
            for (terms, sign) in [(preferred_affinity(other), 1), (preferred_anti_affinity(other), -1)] {
                for t in terms.iter().filter(|t| term_selects(&t.pod_affinity_term, other, &pod.pod, snapshot)) {
                    scores.add(&t.pod_affinity_term.topology_key, node, sign * t.weight as i64);
                }
            }
        }
    }
    scores
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_score(&self, snapshot: &Snapshot, pod: &PodInfo, _feasible: &[&NodeInfo]) -> PreScore {
        snapshot.cycle.insert(SCORE_STATE, pod, score_state(self, snapshot, pod));
        PreScore::Score
    }

    fn score(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        snapshot.cycle.get_or_insert_with(SCORE_STATE, pod, || score_state(self, snapshot, pod)).total(node)
    }

    /// Upstream's: the lowest sum scores 0, the highest 100; all equal, all 0.
    fn normalize(&self, scores: &mut [i64]) {
        let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else { return };
        for s in scores.iter_mut() {
            *s = if max > min { MAX_NODE_SCORE * (*s - min) / (max - min) } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn zone_node(name: &str, zone: &str) -> NodeInfo {
        node_with(name, json!({"zone": zone, "kubernetes.io/hostname": name}), json!({}), json!({}))
    }

    fn labelled_pod(name: &str, labels: Value, affinity: Value) -> Arc<PodInfo> {
        pod_in("default", name, labels, affinity)
    }

    fn pod_in(namespace: &str, name: &str, labels: Value, affinity: Value) -> Arc<PodInfo> {
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "c"}], "affinity": affinity},
        }))
        .expect("a pod");
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    fn term(key: &str, app: &str) -> Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}})
    }

    fn required(kind: &str, terms: Value) -> Value {
        json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
    }

    /// The filter's verdict on each node (empty: fits).
    fn verdicts(nodes: &[&NodeInfo], pod: &PodInfo) -> Vec<Vec<String>> {
        filter_each(&InterPodAffinity::default(), nodes, pod)
    }

    #[test]
    fn required_affinity_follows_the_topology_domain() {
        let (mut a1, a2, b1) = (zone_node("a1", "a"), zone_node("a2", "a"), zone_node("b1", "b"));
        a1.add_pod(labelled_pod("db", json!({"app": "db"}), json!({})));
        let pod = labelled_pod("web", json!({"app": "web"}), required("podAffinity", json!([term("zone", "db")])));
        assert_eq!(verdicts(&[&a1, &a2, &b1], &pod), vec![vec![], vec![], vec![AFFINITY_REASON.to_string()]]);
        let by_host =
            labelled_pod("web", json!({}), required("podAffinity", json!([term("kubernetes.io/hostname", "db")])));
        assert_eq!(verdicts(&[&a1, &a2], &by_host), vec![vec![], vec![AFFINITY_REASON.to_string()]]);
        let missing_key = labelled_pod("web", json!({}), required("podAffinity", json!([term("rack", "db")])));
        assert_eq!(verdicts(&[&a1], &missing_key), vec![vec![AFFINITY_REASON.to_string()]]);
        // another namespace's pod is not selected unless the term names it
        let mut other = zone_node("o", "c");
        other.add_pod(pod_in("other", "db", json!({"app": "db"}), json!({})));
        let mut t = term("zone", "db");
        t["namespaces"] = json!(["other"]);
        let pod = labelled_pod("web", json!({}), required("podAffinity", json!([t])));
        assert_eq!(verdicts(&[&a1, &other], &pod), vec![vec![AFFINITY_REASON.to_string()], vec![]]);
    }

    #[test]
    fn match_and_mismatch_label_keys_narrow_a_term_by_its_pod() {
        // tenant t1's web pod on a1, t2's on b1
        let (mut a1, mut b1) = (zone_node("a1", "a"), zone_node("b1", "b"));
        a1.add_pod(labelled_pod("web-t1", json!({"app": "web", "tenant": "t1"}), json!({})));
        b1.add_pod(labelled_pod("web-t2", json!({"app": "web", "tenant": "t2"}), json!({})));
        let with_keys = |field: &str| {
            let mut t = term("zone", "web");
            t[field] = json!(["tenant"]);
            t
        };
        // affinity to web pods of the same tenant only: t1's zone
        let same = labelled_pod(
            "cache",
            json!({"tenant": "t1"}),
            required("podAffinity", json!([with_keys("matchLabelKeys")])),
        );
        assert_eq!(verdicts(&[&a1, &b1], &same), vec![vec![], vec![AFFINITY_REASON.to_string()]]);
        // anti-affinity to web pods of other tenants: away from t2's zone
        let apart = labelled_pod(
            "cache",
            json!({"tenant": "t1"}),
            required("podAntiAffinity", json!([with_keys("mismatchLabelKeys")])),
        );
        assert_eq!(verdicts(&[&a1, &b1], &apart), vec![vec![], vec![ANTI_AFFINITY_REASON.to_string()]]);
        // a key the pod lacks adds nothing: both web pods count
        let unlabelled =
            labelled_pod("cache", json!({}), required("podAffinity", json!([with_keys("matchLabelKeys")])));
        assert!(verdicts(&[&a1, &b1], &unlabelled).iter().all(Vec::is_empty));
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_goes_anywhere() {
        let (a, b) = (zone_node("a", "a"), zone_node("b", "b"));
        let first = labelled_pod("w0", json!({"app": "web"}), required("podAffinity", json!([term("zone", "web")])));
        assert_eq!(verdicts(&[&a, &b], &first), vec![Vec::<String>::new(), vec![]]);
        // not when the pod does not match its own terms
        let stranger = labelled_pod("x", json!({"app": "x"}), required("podAffinity", json!([term("zone", "web")])));
        assert_eq!(verdicts(&[&a], &stranger), vec![vec![AFFINITY_REASON.to_string()]]);
        // once one exists, the rest follow it
        let mut a = a;
        a.add_pod(first.clone());
        let second = labelled_pod("w1", json!({"app": "web"}), required("podAffinity", json!([term("zone", "web")])));
        assert_eq!(verdicts(&[&a, &b], &second), vec![vec![], vec![AFFINITY_REASON.to_string()]]);
    }

    #[test]
    fn anti_affinity_both_ways() {
        let (mut a1, a2, b1) = (zone_node("a1", "a"), zone_node("a2", "a"), zone_node("b1", "b"));
        a1.add_pod(labelled_pod("db", json!({"app": "db"}), json!({})));
        let pod = labelled_pod("web", json!({}), required("podAntiAffinity", json!([term("zone", "db")])));
        let anti = vec![ANTI_AFFINITY_REASON.to_string()];
        assert_eq!(verdicts(&[&a1, &a2, &b1], &pod), vec![anti.clone(), anti, vec![]]);
        // an existing pod that keeps "db" pods out of its host
        let (mut h1, h2) = (zone_node("h1", "a"), zone_node("h2", "a"));
        h1.add_pod(labelled_pod(
            "guard",
            json!({}),
            required("podAntiAffinity", json!([term("kubernetes.io/hostname", "db")])),
        ));
        let db = labelled_pod("db2", json!({"app": "db"}), json!({}));
        assert_eq!(verdicts(&[&h1, &h2], &db), vec![vec![EXISTING_ANTI_AFFINITY_REASON.to_string()], vec![]]);
        let other = labelled_pod("cache", json!({"app": "cache"}), json!({}));
        assert_eq!(verdicts(&[&h1, &h2], &other), vec![Vec::<String>::new(), vec![]]);
    }

    #[test]
    fn namespace_selectors_use_namespace_labels() {
        let mut n = zone_node("n", "a");
        n.add_pod(pod_in("team-a", "db", json!({"app": "db"}), json!({})));
        let mut t = term("zone", "db");
        t["namespaceSelector"] = json!({"matchLabels": {"team": "a"}});
        let pod = labelled_pod("web", json!({}), required("podAffinity", json!([t])));
        let (images, mut namespaces) = (HashMap::new(), HashMap::new());
        let check = |namespaces: &HashMap<String, BTreeMap<String, String>>| {
            let s = Snapshot {
                nodes: vec![&n],
                image_nodes: &images,
                namespaces,
                volumes: &Default::default(),
                nominated: &Default::default(),
                workloads: &Default::default(),
                cycle: Default::default(),
            };
            InterPodAffinity::default().filter(&s, &pod, &n).is_ok()
        };
        assert!(!check(&namespaces), "the namespace has no labels yet");
        namespaces.insert("team-a".to_string(), [("team".to_string(), "a".to_string())].into());
        assert!(check(&namespaces));
        let mut all = term("zone", "db");
        all["namespaceSelector"] = json!({});
        let pod = labelled_pod("web", json!({}), required("podAffinity", json!([all])));
        assert!(verdicts(&[&n], &pod)[0].is_empty(), "an empty namespaceSelector selects every namespace");
    }

    #[test]
    fn preferred_terms_and_existing_pods_terms_score() {
        let (mut a, mut b, c) = (zone_node("a", "a"), zone_node("b", "b"), zone_node("c", "c"));
        a.add_pod(labelled_pod("db", json!({"app": "db"}), json!({})));
        b.add_pod(labelled_pod("cache", json!({"app": "cache"}), json!({})));
        // an existing pod that requires "web" pods in its zone: hard weight 1
        b.add_pod(labelled_pod("sidecar", json!({}), required("podAffinity", json!([term("zone", "web")]))));
        let pod = labelled_pod(
            "web",
            json!({"app": "web"}),
            json!({
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term("zone", "db")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": term("zone", "cache")}]},
            }),
        );
        let nodes = [&a, &b, &c];
        let mut scores = with_snapshot(&nodes, |s| {
            InterPodAffinity::default().pre_score(s, &pod, &nodes);
            nodes.iter().map(|n| InterPodAffinity::default().score(s, &pod, n)).collect::<Vec<_>>()
        });
        assert_eq!(scores, vec![10, -4, 0]);
        InterPodAffinity::default().normalize(&mut scores);
        assert_eq!(scores, vec![100, 0, 28]);
        let mut same = vec![3, 3];
        InterPodAffinity::default().normalize(&mut same);
        assert_eq!(same, vec![0, 0]);
    }
}
