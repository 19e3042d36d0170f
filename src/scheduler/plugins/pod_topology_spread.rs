//! PodTopologySpread: `topologySpreadConstraints`. Each constraint counts the pods its
//! selector matches (in the pod's namespace, not being deleted) per value of its
//! topology key, over the nodes that carry every constraint's key and pass its inclusion
//! policies (nodeAffinityPolicy: Honor by default, the node must satisfy the pod's
//! nodeSelector and required node affinity; nodeTaintsPolicy: Ignore by default, Honor
//! leaves out nodes with taints the pod does not tolerate). `matchLabelKeys` add the
//! pod's own values of those labels to the selector.
//!
//! `DoNotSchedule` (filter): placing the pod in a domain must not make it exceed the
//! least populated domain by more than maxSkew; with fewer domains than minDomains the
//! least count is taken as 0. `ScheduleAnyway` (score): fewer matching pods in the node's
//! domains is better, each constraint's count weighted by log(number of domains + 2)
//! plus maxSkew − 1, normalized so the emptiest node scores 100.
//!
//! A pod without constraints of its own is scored by upstream's system defaults
//! (hostname maxSkew 3 and zone maxSkew 5, ScheduleAnyway) with the selectors of the
//! Services, ReplicationControllers, ReplicaSets and StatefulSets matching it put together
//! (none: no defaults); as upstream, nodes lacking a key are then scored, not ignored.
//!
//! Counts are worked out once per cycle.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::node_affinity::required_matches;
use super::taint_toleration::TaintToleration;
use crate::label_selector::selector_matches;
use crate::scheduler::framework::{
    Failure, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, PreScore, ScorePlugin, Snapshot,
};

/// pluginConfig's PodTopologySpreadArgs: the constraints of pods without their own.
pub struct PodTopologySpread {
    pub defaults: Defaults,
}

pub enum Defaults {
    /// Upstream's system defaults (defaultingType System).
    System,
    /// defaultingType List: these (without selectors; the workloads' is used).
    List(Vec<TopologySpreadConstraint>),
}

impl Default for PodTopologySpread {
    fn default() -> PodTopologySpread {
        PodTopologySpread { defaults: Defaults::System }
    }
}

pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const LABEL_REASON: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";
const FILTER_STATE: &str = "PodTopologySpread/filter";
const SCORE_STATE: &str = "PodTopologySpread/score";

/// One constraint with upstream's defaults applied and matchLabelKeys merged.
#[derive(Debug)]
struct Constraint {
    max_skew: i64,
    key: String,
    /// None matches nothing (a constraint without labelSelector).
    selector: Option<LabelSelector>,
    min_domains: i64,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &Pod) -> Constraint {
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let own: Vec<LabelSelectorRequirement> = (c.match_label_keys.iter().flatten())
            .filter_map(|k| {
                let value = labels.get(k)?;
                Some(LabelSelectorRequirement {
                    key: k.clone(),
                    operator: "In".into(),
                    values: Some(vec![value.clone()]),
                })
            })
            .collect();
        let selector = match (c.label_selector.clone(), own.is_empty()) {
            (selector, true) => selector,
            // as upstream, the pod's own labels stand even where there is no selector
            (selector, false) => {
                let mut s = selector.unwrap_or_default();
                s.match_expressions.get_or_insert_with(Vec::new).extend(own);
                Some(s)
            }
        };
        Constraint {
            max_skew: c.max_skew as i64,
            key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.map_or(1, i64::from),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn selects(&self, pod: &Pod) -> bool {
        let empty = BTreeMap::new();
        self.selector.as_ref().is_some_and(|s| selector_matches(s, pod.metadata.labels.as_ref().unwrap_or(&empty)))
    }

    /// The matching pods on a node: the pod's namespace, not being deleted.
    fn count(&self, node: &NodeInfo, namespace: Option<&str>) -> i64 {
        let matching = node.pods.values().map(|p| &p.pod).filter(|p| {
            p.metadata.deletion_timestamp.is_none() && p.metadata.namespace.as_deref() == namespace && self.selects(p)
        });
        matching.count() as i64
    }

    fn includes(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_node_affinity || required_matches(pod, node))
            && (!self.honor_taints || TaintToleration.filter(snapshot, pod, node).is_ok())
    }
}

/// The pod's constraints with this whenUnsatisfiable; for a pod with none, the default
/// ones with the selector of its workloads. The flag: whether they are the system defaults.
fn constraints(defaults: &Defaults, snapshot: &Snapshot, pod: &PodInfo, action: &str) -> (Vec<Constraint>, bool) {
    let own = pod.spec().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or_default();
    if !own.is_empty() {
        let matching = own.iter().filter(|c| c.when_unsatisfiable == action);
        return (matching.map(|c| Constraint::new(c, &pod.pod)).collect(), false);
    }
    let system = [(HOSTNAME, 3), (ZONE, 5)].map(|(key, max_skew)| TopologySpreadConstraint {
        max_skew,
        topology_key: key.into(),
        when_unsatisfiable: SCHEDULE_ANYWAY.into(),
        ..Default::default()
    });
    let (list, is_system) = match defaults {
        Defaults::System => (&system[..], true),
        Defaults::List(list) => (&list[..], false),
    };
    let wanted: Vec<&TopologySpreadConstraint> = list.iter().filter(|c| c.when_unsatisfiable == action).collect();
    if wanted.is_empty() {
        return (Vec::new(), false);
    }
    let Some(selector) = snapshot.workloads.default_selector(&pod.pod) else { return (Vec::new(), false) };
    let with_selector = wanted.into_iter().map(|c| {
        let c = TopologySpreadConstraint { label_selector: Some(selector.clone()), ..c.clone() };
        Constraint::new(&c, &pod.pod)
    });
    (with_selector.collect(), is_system)
}

fn has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| node.labels().is_some_and(|l| l.contains_key(&c.key)))
}

fn value<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.labels().and_then(|l| l.get(key))
}

/// Per constraint: value → matching pods, over the nodes that count (`require_all`: only
/// nodes with every constraint's key).
fn domain_counts(
    snapshot: &Snapshot,
    pod: &PodInfo,
    constraints: &[Constraint],
    require_all: bool,
    mut wanted: impl FnMut(usize, &str) -> bool,
) -> Vec<HashMap<String, i64>> {
    let namespace = pod.pod.metadata.namespace.as_deref();
    let mut counts = vec![HashMap::new(); constraints.len()];
    for node in snapshot.nodes.iter().filter(|n| !require_all || has_all_keys(n, constraints)) {
        for (i, c) in constraints.iter().enumerate() {
            let Some(v) = value(node, &c.key) else { continue };
            if !wanted(i, v) || !c.includes(snapshot, pod, node) {
                continue;
            }
            *counts[i].entry(v.clone()).or_insert(0) += c.count(node, namespace);
        }
    }
    counts
}

struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    /// The global minimum each constraint's skew is measured from.
    minimum: Vec<i64>,
}

fn filter_state(defaults: &Defaults, snapshot: &Snapshot, pod: &PodInfo) -> FilterState {
    let (constraints, _) = constraints(defaults, snapshot, pod, "DoNotSchedule");
    let counts = domain_counts(snapshot, pod, &constraints, true, |_, _| true);
    let minimum = constraints
        .iter()
        .zip(&counts)
        .map(
            |(c, counts)| {
                if (counts.len() as i64) < c.min_domains { 0 } else { counts.values().copied().min().unwrap_or(0) }
            },
        )
        .collect();
    FilterState { constraints, counts, minimum }
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let own = pod.spec().and_then(|s| s.topology_spread_constraints.as_ref()).is_some_and(|c| !c.is_empty());
        if !own && matches!(self.defaults, Defaults::System) {
            // the system defaults never filter
            return Ok(());
        }
        let state =
            snapshot.cycle.get_or_insert_with(FILTER_STATE, pod, || filter_state(&self.defaults, snapshot, pod));
        for (i, c) in state.constraints.iter().enumerate() {
            let Some(v) = value(node, &c.key) else { return Err(Failure::unresolvable(LABEL_REASON)) };
            let matching = state.counts[i].get(v).copied().unwrap_or(0);
            let skew = matching + i64::from(c.selects(&pod.pod)) - state.minimum[i];
            if skew > c.max_skew {
                return Err(Failure::unschedulable(vec![REASON.into()]));
            }
        }
        Ok(())
    }
}

struct ScoreState {
    constraints: Vec<Constraint>,
    /// Per constraint (but the hostname ones, counted per node): the feasible nodes'
    /// domains and their counts.
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    /// Feasible nodes lacking a constraint's key: not scored.
    ignored: HashSet<String>,
}

fn score_state(defaults: &Defaults, snapshot: &Snapshot, pod: &PodInfo, feasible: &[&NodeInfo]) -> ScoreState {
    let (constraints, system_defaults) = constraints(defaults, snapshot, pod, SCHEDULE_ANYWAY);
    // the system defaults do not need every key on a node (a node without one is a
    // domain of its own, "", for the weights)
    let require_all = !system_defaults;
    let mut ignored = HashSet::new();
    let mut domains: Vec<HashSet<&str>> = vec![HashSet::new(); constraints.len()];
    for node in feasible {
        if require_all && !has_all_keys(node, &constraints) {
            ignored.insert(node.name.clone());
            continue;
        }
        for (i, c) in constraints.iter().enumerate().filter(|(_, c)| c.key != HOSTNAME) {
            domains[i].insert(value(node, &c.key).map_or("", String::as_str));
        }
    }
    let weights = constraints
        .iter()
        .zip(&domains)
        .map(|(c, d)| {
            let size = if c.key == HOSTNAME { feasible.len() - ignored.len() } else { d.len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    let counts = domain_counts(snapshot, pod, &constraints, require_all, |i, v| domains[i].contains(v));
    ScoreState { constraints, counts, weights, ignored }
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_score(&self, snapshot: &Snapshot, pod: &PodInfo, feasible: &[&NodeInfo]) -> PreScore {
        let state = snapshot.cycle.insert(SCORE_STATE, pod, score_state(&self.defaults, snapshot, pod, feasible));
        if state.constraints.is_empty() { PreScore::Skip } else { PreScore::Score }
    }

    /// The weighted matching counts of the node's domains; −1 for a node lacking a key
    /// (normalized to 0).
    fn score(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let state = snapshot
            .cycle
            .get_or_insert_with(SCORE_STATE, pod, || score_state(&self.defaults, snapshot, pod, &snapshot.nodes));
        if state.ignored.contains(&node.name) {
            return -1;
        }
        let namespace = pod.pod.metadata.namespace.as_deref();
        let mut score = 0.0;
        for (i, c) in state.constraints.iter().enumerate() {
            let Some(v) = value(node, &c.key) else { continue };
            let count =
                if c.key == HOSTNAME { c.count(node, namespace) } else { state.counts[i].get(v).copied().unwrap_or(0) };
            score += count as f64 * state.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Upstream's: (max + min − score) × 100 / max over the scored nodes, so the fewest
    /// matching pods score highest; all 0 score 100; unscored nodes 0.
    fn normalize(&self, scores: &mut [i64]) {
        let scored = || scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = (scored().min().unwrap_or(0), scored().max().unwrap_or(0));
        for s in scores.iter_mut() {
            *s = match *s {
                s if s < 0 => 0,
                _ if max == 0 => MAX_NODE_SCORE,
                s => MAX_NODE_SCORE * (max + min - s) / max,
            };
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
        node_with(name, json!({"zone": zone, HOSTNAME: name}), json!({}), json!({}))
    }

    fn spread_pod(name: &str, labels: Value, extra: Value) -> Arc<PodInfo> {
        let mut spec = json!({"containers": [{"name": "c"}]});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec}))
        .expect("a pod");
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    fn constraint(key: &str, max_skew: i32, when: &str) -> Value {
        json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}})
    }

    fn web(name: &str) -> Arc<PodInfo> {
        spread_pod(name, json!({"app": "web"}), json!({}))
    }

    fn verdicts(nodes: &[&NodeInfo], pod: &PodInfo) -> Vec<Vec<String>> {
        filter_each(&PodTopologySpread::default(), nodes, pod)
    }

    #[test]
    fn max_skew_over_zones() {
        let (mut a1, a2, mut b1) = (zone_node("a1", "a"), zone_node("a2", "a"), zone_node("b1", "b"));
        a1.add_pod(web("w1"));
        a1.add_pod(web("w2"));
        b1.add_pod(web("w3"));
        let pod = spread_pod(
            "w4",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [
            constraint("zone", 1, "DoNotSchedule")]}),
        );
        // zone a holds 2, b 1: a third in a would make the skew 2
        let skew = vec![REASON.to_string()];
        assert_eq!(verdicts(&[&a1, &a2, &b1], &pod), vec![skew.clone(), skew, vec![]]);
        // a pod the selector does not match adds nothing to the skew
        let other = spread_pod(
            "x",
            json!({"app": "x"}),
            json!({"topologySpreadConstraints": [
            constraint("zone", 1, "DoNotSchedule")]}),
        );
        assert!(verdicts(&[&a1, &a2, &b1], &other).iter().all(Vec::is_empty));
        // a node without the key
        let bare = node_with("bare", json!({}), json!({}), json!({}));
        assert_eq!(verdicts(&[&a1, &bare], &pod)[1], vec![LABEL_REASON.to_string()]);
        // ScheduleAnyway constraints do not filter
        let soft = spread_pod(
            "w5",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [
            constraint("zone", 1, "ScheduleAnyway")]}),
        );
        assert!(verdicts(&[&a1, &b1], &soft).iter().all(Vec::is_empty));
    }

    #[test]
    fn min_domains_and_inclusion_policies() {
        let (mut a1, b1) = (zone_node("a1", "a"), zone_node("b1", "b"));
        a1.add_pod(web("w1"));
        let mut c = constraint("zone", 1, "DoNotSchedule");
        c["minDomains"] = json!(3);
        let pod = spread_pod("w2", json!({"app": "web"}), json!({"topologySpreadConstraints": [c]}));
        // two domains of the three wanted: the minimum counts as 0, so a (1 + 1) is too much
        assert_eq!(verdicts(&[&a1, &b1], &pod), vec![vec![REASON.to_string()], vec![]]);

        // nodeAffinityPolicy Honor (default): a node the pod may not use does not count,
        // so zone b is not a domain and zone a's count is the minimum
        let selected = json!({"nodeSelector": {"zone": "a"},
            "topologySpreadConstraints": [constraint("zone", 1, "DoNotSchedule")]});
        let pod = spread_pod("w3", json!({"app": "web"}), selected.clone());
        assert!(verdicts(&[&a1, &b1], &pod)[0].is_empty());
        let mut ignore = selected;
        ignore["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
        let pod = spread_pod("w4", json!({"app": "web"}), ignore);
        assert_eq!(verdicts(&[&a1, &b1], &pod)[0], vec![REASON.to_string()]);

        // nodeTaintsPolicy Honor: a tainted node's domain does not count
        let tainted = node_with(
            "t1",
            json!({"zone": "t", HOSTNAME: "t1"}),
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            json!({}),
        );
        let taints = |policy: Option<&str>| {
            let mut c = constraint("zone", 1, "DoNotSchedule");
            if let Some(p) = policy {
                c["nodeTaintsPolicy"] = json!(p);
            }
            spread_pod("w5", json!({"app": "web"}), json!({"topologySpreadConstraints": [c]}))
        };
        // Honor: zone t does not count, a (1) is the only domain and its own minimum;
        // Ignore (default): t's 0 is the minimum, and a second pod in a is one too many
        assert!(verdicts(&[&a1, &tainted], &taints(Some("Honor")))[0].is_empty());
        assert_eq!(verdicts(&[&a1, &tainted], &taints(None))[0], vec![REASON.to_string()]);
    }

    #[test]
    fn match_label_keys_narrow_the_selector() {
        let mut a1 = zone_node("a1", "a");
        let b1 = zone_node("b1", "b");
        // two pods of an older revision in zone a
        a1.add_pod(spread_pod("old-1", json!({"app": "web", "rev": "1"}), json!({})));
        a1.add_pod(spread_pod("old-2", json!({"app": "web", "rev": "1"}), json!({})));
        let mut c = constraint("zone", 1, "DoNotSchedule");
        c["matchLabelKeys"] = json!(["rev"]);
        let pod =
            spread_pod("new", json!({"app": "web", "rev": "2"}), json!({"topologySpreadConstraints": [c.clone()]}));
        assert!(verdicts(&[&a1, &b1], &pod).iter().all(Vec::is_empty), "the old revision does not count");
        let old = spread_pod("old-3", json!({"app": "web", "rev": "1"}), json!({"topologySpreadConstraints": [c]}));
        assert_eq!(verdicts(&[&a1, &b1], &old)[0], vec![REASON.to_string()]);
    }

    #[test]
    fn schedule_anyway_scores_the_emptier_domains() {
        let (mut a1, a2, mut b1, c1) =
            (zone_node("a1", "a"), zone_node("a2", "a"), zone_node("b1", "b"), zone_node("c1", "c"));
        a1.add_pod(web("w1"));
        a1.add_pod(web("w2"));
        b1.add_pod(web("w3"));
        let bare = node_with("bare", json!({}), json!({}), json!({}));
        let pod = spread_pod(
            "w4",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [
            constraint("zone", 1, "ScheduleAnyway"), constraint(HOSTNAME, 1, "ScheduleAnyway")]}),
        );
        let nodes = [&a1, &a2, &b1, &c1, &bare];
        let mut scores = with_snapshot(&nodes, |s| {
            assert_eq!(PodTopologySpread::default().pre_score(s, &pod, &nodes), PreScore::Score);
            nodes.iter().map(|n| PodTopologySpread::default().score(s, &pod, n)).collect::<Vec<_>>()
        });
        // zones: 3 domains → weight ln 5 ≈ 1.609; hosts: 4 scored nodes → ln 6 ≈ 1.792
        // a1: 2×1.609 + 2×1.792 = 6.80 → 7; a2: 3.22 → 3; b1: 1.61 + 1.79 → 3; c1: 0
        assert_eq!(scores, vec![7, 3, 3, 0, -1]);
        PodTopologySpread::default().normalize(&mut scores);
        // (7 + 0 − s) × 100 / 7
        assert_eq!(scores, vec![0, 57, 57, 100, 0]);
        let plain = web("w5");
        with_snapshot(&nodes, |s| {
            assert_eq!(PodTopologySpread::default().pre_score(s, &plain, &nodes), PreScore::Skip)
        });
    }

    #[test]
    fn system_defaults_use_the_workloads_selectors() {
        let zoned = |name: &str, zone: &str| node_with(name, json!({ZONE: zone, HOSTNAME: name}), json!({}), json!({}));
        let (mut a1, b1) = (zoned("a1", "a"), zoned("b1", "b"));
        let bare = node_with("bare", json!({HOSTNAME: "bare"}), json!({}), json!({}));
        a1.add_pod(web("w1"));
        a1.add_pod(web("w2"));
        let mut workloads = crate::scheduler::framework::Workloads::default();
        let selector = |v: Value| serde_json::from_value(v).ok();
        workloads.apply("default", "Service/web".into(), selector(json!({"matchLabels": {"app": "web"}})));
        workloads.apply("default", "ReplicaSet/web-1".into(), selector(json!({"matchLabels": {"rev": "1"}})));
        // a Service without selector adds nothing; another namespace's does not count
        workloads.apply("default", "Service/headless".into(), selector(json!({})));
        workloads.apply("other", "Service/db".into(), selector(json!({"matchLabels": {"app": "web"}})));
        let pod = web("w3");
        assert_eq!(workloads.default_selector(&pod.pod), selector(json!({"matchLabels": {"app": "web"}})));
        let rev = spread_pod("w4", json!({"app": "web", "rev": "1"}), json!({}));
        let both = selector(json!({"matchLabels": {"app": "web", "rev": "1"}}));
        assert_eq!(workloads.default_selector(&rev.pod), both);
        assert_eq!(workloads.default_selector(&spread_pod("x", json!({"app": "x"}), json!({})).pod), None);

        let nodes = [&a1, &b1, &bare];
        let scores = snapshot_of(&nodes, &Default::default(), &Default::default(), &workloads, |s| {
            assert_eq!(PodTopologySpread::default().pre_score(s, &pod, &nodes), PreScore::Score);
            nodes.iter().map(|n| PodTopologySpread::default().score(s, &pod, n)).collect::<Vec<_>>()
        });
        // hostname (maxSkew 3): 3 nodes, weight ln 5; zone (maxSkew 5): domains a, b and
        // "" (bare), weight ln 5; a1: 2×1.609 + 2 + 2×1.609 + 4 = 12.4; b1: 6; bare: no
        // zone label, so only its hostname part: 2 — and it is scored, not ignored
        assert_eq!(scores, vec![12, 6, 2]);
        with_snapshot(&nodes, |s| assert_eq!(PodTopologySpread::default().pre_score(s, &pod, &nodes), PreScore::Skip));
    }

    #[test]
    fn listed_default_constraints_filter_too() {
        let (mut a1, b1) = (zone_node("a1", "a"), zone_node("b1", "b"));
        a1.add_pod(web("w1"));
        let mut workloads = crate::scheduler::framework::Workloads::default();
        let selector = serde_json::from_value(json!({"matchLabels": {"app": "web"}})).ok();
        workloads.apply("default", "ReplicaSet/web".into(), selector);
        let list = vec![
            serde_json::from_value(json!({"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule"}))
            .unwrap(),
        ];
        let plugin = PodTopologySpread { defaults: Defaults::List(list) };
        let pod = web("w2");
        let verdicts = snapshot_of(&[&a1, &b1], &Default::default(), &Default::default(), &workloads, |s| {
            [&a1, &b1].map(|n| plugin.filter(s, &pod, n).is_ok())
        });
        // zone a has one: a second there is a skew of 2
        assert_eq!(verdicts, [false, true]);
        // the system defaults never filter
        let system = snapshot_of(&[&a1], &Default::default(), &Default::default(), &workloads, |s| {
            PodTopologySpread::default().filter(s, &pod, &a1).is_ok()
        });
        assert!(system);
    }
}
