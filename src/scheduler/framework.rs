//! The scheduling framework: what plug-ins see (`PodInfo`, `NodeInfo`, the cycle's
//! `Snapshot`), the two plug-in traits (filter; score with its normalization), the default
//! profile, and one scheduling decision: filter every node (or upstream's share of a
//! large cluster), score the feasible ones, pick the best (ties at random), or explain
//! the failure the way upstream's FitError does.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::plugins;
use super::preemption::{self, Candidate};
use super::resources::{self, Resources};

/// The highest score a plug-in gives a node (upstream's MaxNodeScore).
pub const MAX_NODE_SCORE: i64 = 100;

/// A host port a pod takes: (host IP, protocol, port), with upstream's defaults applied
/// (0.0.0.0, TCP).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

/// A pod and what the plug-ins need of it, computed once.
#[derive(Debug)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    pub pod: Arc<Pod>,
    /// Requests for fitting (upstream's PodRequests).
    pub requests: Resources,
    /// Requests with scoring's defaults for containers that ask for no cpu/memory.
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let key = pod_key(&pod);
        let mut host_ports = Vec::new();
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            for p in c.ports.iter().flatten().filter(|p| p.host_port.unwrap_or(0) > 0) {
                host_ports.push(HostPort {
                    ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                    protocol: p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into()),
                    port: p.host_port.unwrap_or(0),
                });
            }
        }
        PodInfo {
            key,
            requests: resources::pod_requests(&pod, false),
            non_zero: resources::pod_requests(&pod, true),
            host_ports,
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            pod,
        }
    }

    pub fn spec(&self) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        self.pod.spec.as_ref()
    }
}

pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or(""))
}

/// One node and the pods the scheduler counts on it (bound and assumed).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// None while pods name a node the watch has not shown (or no longer shows).
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub allowed_pods: i64,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: BTreeMap<String, Arc<PodInfo>>,
    pub used_ports: HashSet<HostPort>,
    /// Image name → size in bytes, from node.status.images (every name of each image).
    pub images: HashMap<String, i64>,
    /// How many of `pods` have any pod affinity or anti-affinity, and how many a required
    /// anti-affinity (upstream's PodsWithAffinity and PodsWithRequiredAntiAffinity), so
    /// InterPodAffinity can pass over the other nodes.
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo { name: name.to_string(), ..Default::default() }
    }

    /// Take a new version of the node object; returns the allocatable entries that did
    /// not parse (they count as zero).
    pub fn set_node(&mut self, node: Arc<Node>) -> Vec<String> {
        let status = node.status.as_ref();
        let (alloc, bad, pods) = resources::parse_list(status.and_then(|s| s.allocatable.as_ref()));
        self.allocatable = alloc;
        self.allowed_pods = pods.unwrap_or(0);
        self.images.clear();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in image.names.iter().flatten() {
                self.images.insert(name.clone(), image.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(node);
        bad
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.remove_pod(&pod.key);
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods_with_affinity += usize::from(plugins::has_pod_affinity(&pod.pod));
        self.pods_with_required_anti_affinity += usize::from(plugins::has_required_anti_affinity(&pod.pod));
        self.pods.insert(pod.key.clone(), pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(pod) = self.pods.remove(key) else { return false };
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        self.pods_with_affinity -= usize::from(plugins::has_pod_affinity(&pod.pod));
        self.pods_with_required_anti_affinity -= usize::from(plugins::has_required_anti_affinity(&pod.pod));
        for port in &pod.host_ports {
            // another pod may hold the same port (a conflict the scheduler did not make)
            if !self.pods.values().any(|p| p.host_ports.contains(port)) {
                self.used_ports.remove(port);
            }
        }
        true
    }

    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }
}

/// The cluster as one scheduling cycle sees it.
pub struct Snapshot<'a> {
    /// Nodes in a stable order (by name).
    pub nodes: Vec<&'a NodeInfo>,
    /// Image name → number of nodes that have it.
    pub image_nodes: &'a HashMap<String, usize>,
    /// Namespace name → its labels (for pod affinity terms' namespaceSelector).
    pub namespaces: &'a HashMap<String, BTreeMap<String, String>>,
    pub volumes: &'a Volumes,
    /// Pods waiting for the room their preemption made (nominated nodes).
    pub nominated: &'a Nominated,
    /// The selectors of the workloads pods belong to (PodTopologySpread's defaults).
    pub workloads: &'a Workloads,
    /// What plug-ins worked out once for the pod of this cycle (upstream's CycleState).
    pub cycle: CycleState,
}

impl<'a> Snapshot<'a> {
    /// The same cluster with one node replaced (preemption's trials), and a fresh cycle
    /// state, so the plug-ins count the pods of the replacement.
    pub fn with_node<'b>(&'b self, node: &'b NodeInfo) -> Snapshot<'b> {
        Snapshot {
            nodes: self.nodes.iter().map(|n| if n.name == node.name { node } else { *n }).collect(),
            image_nodes: self.image_nodes,
            namespaces: self.namespaces,
            volumes: self.volumes,
            nominated: self.nominated,
            workloads: self.workloads,
            cycle: CycleState::default(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&'a NodeInfo> {
        self.nodes.binary_search_by(|n| n.name.as_str().cmp(name)).ok().map(|i| self.nodes[i])
    }
}

/// The selectors of the Services, ReplicationControllers, ReplicaSets and StatefulSets,
/// by namespace and `kind/name`: what upstream's DefaultSelector combines into the
/// selector of PodTopologySpread's system default constraints. Empty selectors are not
/// kept (a Service's matches every pod but adds no label; a controller's matches none).
#[derive(Default)]
pub struct Workloads {
    by_namespace: HashMap<String, BTreeMap<String, LabelSelector>>,
}

impl Workloads {
    pub fn apply(&mut self, namespace: &str, key: String, selector: Option<LabelSelector>) {
        let empty = |s: &LabelSelector| {
            s.match_labels.as_ref().is_none_or(|l| l.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        };
        match selector.filter(|s| !empty(s)) {
            Some(s) => {
                self.by_namespace.entry(namespace.to_string()).or_default().insert(key, s);
            }
            None => self.delete(namespace, &key),
        }
    }

    pub fn delete(&mut self, namespace: &str, key: &str) {
        if let Some(all) = self.by_namespace.get_mut(namespace) {
            all.remove(key);
            if all.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
    }

    /// Every requirement of the selectors in the pod's namespace that match its labels,
    /// together (upstream's DefaultSelector); None when there are none.
    pub fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let labels = pod.metadata.labels.as_ref().filter(|l| !l.is_empty())?;
        let all = self.by_namespace.get(pod.metadata.namespace.as_deref().unwrap_or_default())?;
        let mut merged = LabelSelector::default();
        for s in all.values().filter(|s| plugins::selector_matches(s, labels)) {
            if let Some(l) = s.match_labels.as_ref().filter(|l| !l.is_empty()) {
                merged.match_labels.get_or_insert_with(BTreeMap::new).extend(l.clone());
            }
            if let Some(e) = s.match_expressions.as_ref().filter(|e| !e.is_empty()) {
                merged.match_expressions.get_or_insert_with(Vec::new).extend(e.iter().cloned());
            }
        }
        (merged != LabelSelector::default()).then_some(merged)
    }
}

/// Pending pods nominated to a node by preemption (upstream's nominator): their
/// `status.nominatedNodeName`, or this scheduler's own nomination before the watch shows
/// it. Bound: one entry per nominated pending pod.
#[derive(Default)]
pub struct Nominated {
    by_node: HashMap<String, BTreeMap<String, Arc<PodInfo>>>,
    node_of: HashMap<String, String>,
}

impl Nominated {
    pub fn add(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove(&pod.key);
        self.node_of.insert(pod.key.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().insert(pod.key.clone(), pod);
    }

    pub fn remove(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.node_of.remove(key)?;
        let pods = self.by_node.get_mut(&node)?;
        let pod = pods.remove(key);
        if pods.is_empty() {
            self.by_node.remove(&node);
        }
        pod
    }

    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.node_of.get(key).map(String::as_str)
    }

    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        self.by_node.get(self.node_of.get(key)?)?.get(key)
    }

    pub fn on_node(&self, node: &str) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.by_node.get(node).into_iter().flat_map(|pods| pods.values())
    }
}

/// PersistentVolumeClaims (by `namespace/name`), PersistentVolumes and StorageClasses (by
/// name), as the watches show them.
#[derive(Default)]
pub struct Volumes {
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    /// StorageClasses by name.
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// Per-cycle state of the plug-ins (PreFilter/PreScore results), each entry tied to the
/// pod it was computed for: an entry for another pod is stale and is recomputed, so a
/// snapshot may serve several pods in turn.
#[derive(Default)]
pub struct CycleState {
    entries: RefCell<HashMap<&'static str, (Arc<Pod>, StateValue)>>,
}

type StateValue = Arc<dyn Any + Send + Sync>;

impl CycleState {
    /// The entry `key` for this pod, if there is a current one.
    pub fn get<T: Any + Send + Sync>(&self, key: &'static str, pod: &PodInfo) -> Option<Arc<T>> {
        let entries = self.entries.borrow();
        let (owner, value) = entries.get(key)?;
        if !Arc::ptr_eq(owner, &pod.pod) {
            return None;
        }
        value.clone().downcast::<T>().ok()
    }

    /// Replace the entry `key` with a value computed for this pod.
    pub fn insert<T: Any + Send + Sync>(&self, key: &'static str, pod: &PodInfo, value: T) -> Arc<T> {
        let value = Arc::new(value);
        self.entries.borrow_mut().insert(key, (pod.pod.clone(), value.clone()));
        value
    }

    /// The entry `key` for this pod, computed on first use.
    pub fn get_or_insert_with<T: Any + Send + Sync>(
        &self,
        key: &'static str,
        pod: &PodInfo,
        compute: impl FnOnce() -> T,
    ) -> Arc<T> {
        match self.get(key, pod) {
            Some(value) => value,
            None => self.insert(key, pod, compute()),
        }
    }
}

/// Why a node does not fit: upstream's Unschedulable (preemption might help) or
/// UnschedulableAndUnresolvable (it cannot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub resolvable: bool,
    pub reasons: Vec<String>,
}

impl Failure {
    pub fn unschedulable(reasons: Vec<String>) -> Failure {
        Failure { resolvable: true, reasons }
    }
    pub fn unresolvable(reason: impl Into<String>) -> Failure {
        Failure { resolvable: false, reasons: vec![reason.into()] }
    }
}

/// What a filter plug-in says of a pod before any node is looked at (upstream's
/// PreFilter): nothing, only these nodes are worth filtering, or no node can do.
#[derive(Debug, PartialEq, Eq)]
pub enum PreFilter {
    AllNodes,
    Only(BTreeSet<String>),
    Reject(String),
}

pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self, _snapshot: &Snapshot, _pod: &PodInfo) -> PreFilter {
        PreFilter::AllNodes
    }
    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure>;
}

#[derive(Debug, PartialEq, Eq)]
pub enum PreScore {
    Score,
    Skip,
}

pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Work out, once per cycle, what scoring the feasible nodes needs (upstream's
    /// PreScore); plug-ins keep it in `snapshot.cycle`. `Skip`: the plug-in has nothing
    /// to say of this pod and scores every node 0, unnormalized.
    fn pre_score(&self, _snapshot: &Snapshot, _pod: &PodInfo, _feasible: &[&NodeInfo]) -> PreScore {
        PreScore::Score
    }
    /// The raw score of one feasible node.
    fn score(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Bring the raw scores of all feasible nodes to 0..=MAX_NODE_SCORE.
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// The plug-ins of one scheduler profile, in upstream's order, scores with their weights.
pub struct Profile {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<(Box<dyn ScorePlugin>, i64)>,
    /// Whether the PostFilter, DefaultPreemption, runs.
    pub preemption: bool,
    /// The share of a large cluster's nodes to find feasible (0: upstream's adaptive one).
    pub percentage_of_nodes_to_score: usize,
}

impl Profile {
    /// Upstream's default plug-ins (pkg/scheduler/apis/config/v1/default_plugins.go) that
    /// ferrokube has so far.
    pub fn default_plugins() -> Profile {
        use plugins::*;
        Profile {
            filters: vec![
                Box::new(NodeUnschedulable),
                Box::new(NodeName),
                Box::new(TaintToleration),
                Box::new(NodeAffinity),
                Box::new(NodePorts),
                Box::new(NodeResourcesFit::default()),
                Box::new(VolumeRestrictions),
                Box::new(VolumeBinding),
                Box::new(VolumeZone),
                Box::new(PodTopologySpread::default()),
                Box::new(InterPodAffinity::default()),
            ],
            scores: vec![
                (Box::new(TaintToleration), 3),
                (Box::new(NodeAffinity), 2),
                (Box::new(NodeResourcesFit::default()), 1),
                (Box::new(PodTopologySpread::default()), 2),
                (Box::new(InterPodAffinity::default()), 2),
                (Box::new(BalancedAllocation), 1),
                (Box::new(ImageLocality), 1),
            ],
            preemption: true,
            percentage_of_nodes_to_score: 0,
        }
    }

    /// Whether the pod fits the node, counting there first the pods nominated to it with
    /// at least its priority, so that a lower-priority pod cannot take the room preemption
    /// made; then, as upstream's RunFilterPluginsWithNominatedPods, without them (a
    /// nominated pod may never come, and the pod must not rely on it, e.g. for affinity).
    /// The cycle's spread and affinity counts do not include the nominated pods.
    pub fn fits(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let mut ahead = snapshot
            .nominated
            .on_node(&node.name)
            .filter(|p| p.key != pod.key && p.priority >= pod.priority)
            .peekable();
        if ahead.peek().is_some() {
            let mut with = node.clone();
            ahead.for_each(|p| with.add_pod(p.clone()));
            self.filter(snapshot, pod, &with)?;
        }
        self.filter(snapshot, pod, node)
    }

    /// Run the filters on one node, stopping at the first that rejects it (as upstream).
    pub fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        self.filters.iter().try_for_each(|f| {
            f.filter(snapshot, pod, node).inspect_err(|failure| {
                tracing::trace!(pod = %pod.key, node = %node.name, plugin = f.name(), reasons = ?failure.reasons, "filtered out");
            })
        })
    }
}

/// Why no node was chosen.
#[derive(Debug)]
pub enum ScheduleError {
    NoNodes,
    Fit(FitError),
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ScheduleError::NoNodes => f.write_str("no nodes available to schedule pods"),
            ScheduleError::Fit(e) => f.write_str(&e.message()),
        }
    }
}

/// Every node rejected the pod: the reasons by node, and what preemption would say.
#[derive(Debug)]
pub struct FitError {
    pub num_nodes: usize,
    pub by_node: BTreeMap<String, Failure>,
    /// A PreFilter's rejection, which stands for every node in the message.
    pub pre_filter: Option<String>,
    /// The PostFilter (preemption) message, when there is an honest one to give.
    pub post_filter: Option<String>,
    /// Where preemption would make room, and whom it would evict.
    pub candidate: Option<Box<Candidate>>,
}

/// "0/N nodes are available: <count reason, sorted as strings>."
pub fn histogram_message(num_nodes: usize, failures: impl Iterator<Item = String>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reason in failures {
        *counts.entry(reason).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    let mut msg = format!("0/{num_nodes} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

impl FitError {
    /// Upstream's FitError text.
    pub fn message(&self) -> String {
        let mut msg = match &self.pre_filter {
            Some(rejection) => format!("0/{} nodes are available: {rejection}.", self.num_nodes),
            None => histogram_message(self.num_nodes, self.by_node.values().flat_map(|f| f.reasons.iter().cloned())),
        };
        if let Some(post) = &self.post_filter {
            msg.push(' ');
            msg.push_str(post);
        }
        msg
    }
}

/// How many feasible nodes to look for before scoring (upstream's
/// numFeasibleNodesToFind with the adaptive percentage): all of a small cluster.
pub fn feasible_nodes_to_find(num_nodes: usize, configured: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if num_nodes < MIN_FEASIBLE {
        return num_nodes;
    }
    if configured >= 100 {
        return num_nodes;
    }
    let adaptive = 50usize.saturating_sub(num_nodes / 125).max(5);
    let percentage = if configured > 0 { configured } else { adaptive };
    (num_nodes * percentage / 100).max(MIN_FEASIBLE)
}

/// The outcome of one decision.
#[derive(Debug)]
pub struct Placement {
    pub node: String,
    pub feasible: usize,
}

/// One scheduling decision. `start` rotates where filtering begins, as upstream's
/// nextStartNodeIndex does, so a large cluster's nodes share the load.
pub fn schedule(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    start: &mut usize,
) -> Result<Placement, ScheduleError> {
    let n = snapshot.nodes.len();
    if n == 0 {
        return Err(ScheduleError::NoNodes);
    }
    let mut by_node = BTreeMap::new();
    let only = match pre_filter(profile, snapshot, pod) {
        Ok(only) => only,
        Err(rejection) => {
            for node in &snapshot.nodes {
                by_node.insert(node.name.clone(), Failure::unresolvable(rejection.clone()));
            }
            return Err(fit_error(profile, snapshot, pod, by_node, Some(rejection)));
        }
    };
    // a pod that preempted tries its nominated node first, alone (upstream's
    // evaluateNominatedNode), so it takes the room made for it
    if let Some(node) = snapshot.nominated.node_of(&pod.key).and_then(|name| snapshot.node(name))
        && only.as_ref().is_none_or(|(names, _)| names.contains(&node.name))
        && profile.fits(snapshot, pod, node).is_ok()
    {
        return Ok(Placement { node: node.name.clone(), feasible: 1 });
    }
    let candidates =
        only.as_ref().map_or(n, |(names, _)| snapshot.nodes.iter().filter(|n| names.contains(&n.name)).count());
    let want = feasible_nodes_to_find(candidates, profile.percentage_of_nodes_to_score);
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut visited = 0;
    for i in 0..n {
        let node = snapshot.nodes[(*start + i) % n];
        visited += 1;
        if let Some((names, absent)) = &only
            && !names.contains(&node.name)
        {
            by_node.insert(node.name.clone(), absent.clone());
            continue;
        }
        match profile.fits(snapshot, pod, node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(failure) => {
                by_node.insert(node.name.clone(), failure);
            }
        }
    }
    *start = (*start + visited) % n;
    if feasible.is_empty() {
        return Err(fit_error(profile, snapshot, pod, by_node, None));
    }
    if feasible.len() == 1 {
        return Ok(Placement { node: feasible[0].name.clone(), feasible: 1 });
    }
    let totals = score(profile, snapshot, pod, &feasible);
    Ok(Placement { node: select_host(&feasible, &totals), feasible: feasible.len() })
}

/// No node fits: run preemption (the PostFilter) and say why, as upstream does. A pod
/// that can preempt gets the message without a preemption part.
fn fit_error(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    by_node: BTreeMap<String, Failure>,
    pre_filter: Option<String>,
) -> ScheduleError {
    let (candidate, post_filter) = match profile.preemption {
        false => (None, None),
        true => match preemption::post_filter(profile, snapshot, pod, &by_node) {
            Ok(candidate) => (Some(Box::new(candidate)), None),
            Err(message) => (None, Some(message)),
        },
    };
    ScheduleError::Fit(FitError { num_nodes: snapshot.nodes.len(), by_node, pre_filter, post_filter, candidate })
}

/// The PreFilters together: the node names every narrowing plug-in allows (with the
/// failure recorded for the others, naming those plug-ins as upstream), or the first
/// rejection.
fn pre_filter(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
) -> Result<Option<(BTreeSet<String>, Failure)>, String> {
    let mut only: Option<BTreeSet<String>> = None;
    let mut narrowing = BTreeSet::new();
    for f in &profile.filters {
        match f.pre_filter(snapshot, pod) {
            PreFilter::AllNodes => {}
            PreFilter::Reject(why) => return Err(why),
            PreFilter::Only(names) => {
                narrowing.insert(f.name());
                only = Some(match only {
                    None => names,
                    Some(prev) => prev.intersection(&names).cloned().collect(),
                });
            }
        }
    }
    let plugins: Vec<&str> = narrowing.into_iter().collect();
    let absent = Failure::unresolvable(format!("node(s) didn't satisfy plugin(s) [{}]", plugins.join(" ")));
    Ok(only.map(|names| (names, absent)))
}

/// The weighted sum of every score plug-in's normalized scores, per feasible node.
pub fn score(profile: &Profile, snapshot: &Snapshot, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
    let mut totals = vec![0i64; feasible.len()];
    for (plugin, weight) in &profile.scores {
        if plugin.pre_score(snapshot, pod, feasible) == PreScore::Skip {
            continue;
        }
        let mut scores: Vec<i64> = feasible.iter().map(|node| plugin.score(snapshot, pod, node)).collect();
        plugin.normalize(&mut scores);
        tracing::trace!(pod = %pod.key, plugin = plugin.name(), ?scores, "scored");
        for (total, s) in totals.iter_mut().zip(scores) {
            *total += s * weight;
        }
    }
    totals
}

/// The node with the highest total; among equals, each is equally likely (reservoir
/// sampling, as upstream's selectHost).
fn select_host(feasible: &[&NodeInfo], totals: &[i64]) -> String {
    let mut best = 0;
    let mut ties = 1u32;
    for i in 1..feasible.len() {
        if totals[i] > totals[best] {
            best = i;
            ties = 1;
        } else if totals[i] == totals[best] {
            ties += 1;
            if fastrand::u32(0..ties) == 0 {
                best = i;
            }
        }
    }
    feasible[best].name.clone()
}

/// Upstream's DefaultNormalizeScore: scale to 0..=MAX_NODE_SCORE by the highest score;
/// `reverse` turns the best into the lowest.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let scaled = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_reads_like_upstreams() {
        let by_node = BTreeMap::from([
            ("a".to_string(), Failure::unschedulable(vec!["Insufficient cpu".into()])),
            ("b".to_string(), Failure::unresolvable("node(s) had untolerated taint {k: v}")),
            ("c".to_string(), Failure::unresolvable("node(s) had untolerated taint {k: v}")),
        ]);
        let post = Some("preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.".to_string());
        let e = FitError { num_nodes: 3, by_node, pre_filter: None, post_filter: post, candidate: None };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn feasible_share_of_large_clusters() {
        assert_eq!(feasible_nodes_to_find(50, 0), 50);
        assert_eq!(feasible_nodes_to_find(100, 0), 100);
        assert_eq!(feasible_nodes_to_find(1000, 0), 420);
        assert_eq!(feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(feasible_nodes_to_find(6000, 0), 300);
    }

    #[test]
    fn normalization() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 4];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 75, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }
}
