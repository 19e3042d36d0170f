//! The scheduler's picture of the cluster, fed by the pod and node watches: one
//! `NodeInfo` per node with the pods counted on it, and the assumed pods — placed by
//! this scheduler but not yet seen bound by the watch — so that they count at once.
//!
//! An assumed pod is confirmed when the watch shows it bound (wherever that is), and
//! forgotten when its binding fails, or `ASSUMED_TTL` after a binding that succeeded but
//! never showed up (a missed event must not hold resources for ever). Bound: one entry
//! per node and per non-terminal bound or assumed pod.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::framework::{NodeInfo, Nominated, PodInfo, Snapshot, Volumes, Workloads, pod_key};

/// How long an assumed pod whose binding succeeded may wait for the watch.
pub const ASSUMED_TTL: Duration = Duration::from_secs(30);

struct Assumed {
    /// None while the binding is in flight.
    expires: Option<Instant>,
}

#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// pod key → the node it is counted on.
    pod_nodes: HashMap<String, String>,
    assumed: HashMap<String, Assumed>,
    /// image name → how many nodes have it.
    image_nodes: HashMap<String, usize>,
    /// namespace → its labels.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    volumes: Volumes,
    nominated: Nominated,
    pub workloads: Workloads,
}

/// (replaced, assumed) pairs of `assume_volumes`.
#[derive(Default)]
pub struct AssumedVolumes {
    volumes: Vec<(Arc<PersistentVolume>, Arc<PersistentVolume>)>,
    claims: Vec<(Arc<PersistentVolumeClaim>, Arc<PersistentVolumeClaim>)>,
}

fn pod_key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

fn nominated_node(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Whether a node update can let a waiting pod fit: anything but heartbeats and
/// conditions (labels, spec, allocatable, images).
fn relevant_node_change(old: &Node, new: &Node) -> bool {
    let alloc = |n: &Node| n.status.as_ref().map(|s| (s.allocatable.clone(), s.images.clone()));
    old.metadata.labels != new.metadata.labels || old.spec != new.spec || alloc(old) != alloc(new)
}

impl Cache {
    fn count_images(&mut self, info: &NodeInfo, sign: isize) {
        for name in info.images.keys() {
            let n = self.image_nodes.entry(name.clone()).or_default();
            *n = n.saturating_add_signed(sign);
            if *n == 0 {
                self.image_nodes.remove(name);
            }
        }
    }

    /// A node was added or changed: (whether waiting pods should be retried, allocatable
    /// entries that did not parse).
    pub fn apply_node(&mut self, node: Arc<Node>) -> (bool, Vec<String>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut info = self.nodes.remove(&name).unwrap_or_else(|| NodeInfo::new(&name));
        let relevant = info.node.as_ref().is_none_or(|old| relevant_node_change(old, &node));
        self.count_images(&info, -1);
        let bad = info.set_node(node);
        self.count_images(&info, 1);
        self.nodes.insert(name, info);
        (relevant, bad)
    }

    pub fn delete_node(&mut self, name: &str) {
        let Some(mut info) = self.nodes.remove(name) else { return };
        self.count_images(&info, -1);
        // its pods still count until they are deleted; keep them on a node-less entry
        if !info.pods.is_empty() {
            info.node = None;
            info.images.clear();
            self.nodes.insert(name.to_string(), info);
        }
    }

    fn remove_from_node(&mut self, key: &str) -> bool {
        let Some(node) = self.pod_nodes.remove(key) else { return false };
        if let Some(info) = self.nodes.get_mut(&node) {
            info.remove_pod(key);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
        true
    }

    fn add_to_node(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_from_node(&pod.key);
        self.pod_nodes.insert(pod.key.clone(), node.to_string());
        self.nodes.entry(node.to_string()).or_insert_with(|| NodeInfo::new(node)).add_pod(pod);
    }

    /// The watch shows a pod bound to `node` (and not terminal): count it there; this
    /// confirms an assumption and ends a nomination.
    pub fn apply_bound_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.assumed.remove(&pod.key);
        self.nominated.remove(&pod.key);
        self.add_to_node(pod, node);
    }

    /// A pod is gone (deleted, or finished): returns whether it was counted on a node.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        self.nominated.remove(key);
        self.remove_from_node(key)
    }

    /// A pending pod of this scheduler as the watch shows it: its
    /// `status.nominatedNodeName` is its nomination. A version without one keeps a
    /// nomination this scheduler made that the watch has not shown yet, but ends one the
    /// previous version had (someone cleared it), as upstream's nominator.
    pub fn apply_pending_pod(&mut self, pod: &Arc<Pod>) {
        let key = pod_key(pod);
        match nominated_node(pod) {
            Some(node) if self.nominated.node_of(&key) != Some(node) => {
                self.nominated.add(Arc::new(PodInfo::new(pod.clone())), node)
            }
            Some(_) => {}
            None => {
                if self.nominated.pod(&key).is_some_and(|p| nominated_node(&p.pod).is_some()) {
                    self.nominated.remove(&key);
                }
            }
        }
    }

    /// Nominate a pod to the node where preemption makes room for it; returns the pods of
    /// lower priority nominated there before, whose nominations end (upstream clears them
    /// so they look elsewhere at once).
    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: &str) -> Vec<Arc<PodInfo>> {
        let lower: Vec<String> =
            self.nominated.on_node(node).filter(|p| p.priority < pod.priority).map(|p| p.key.clone()).collect();
        self.nominated.add(pod, node);
        lower.iter().filter_map(|key| self.nominated.remove(key)).collect()
    }

    /// Whether the pod counts on some node (bound or assumed).
    pub fn is_counted(&self, key: &str) -> bool {
        self.pod_nodes.contains_key(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains_key(key)
    }

    /// Count a pod on the node chosen for it while its binding is under way (its
    /// nomination, if any, is over).
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.nominated.remove(&pod.key);
        self.assumed.insert(pod.key.clone(), Assumed { expires: None });
        self.add_to_node(pod, node);
    }

    /// The binding succeeded: the watch should show it soon.
    pub fn finish_binding(&mut self, key: &str, now: Instant) {
        if let Some(a) = self.assumed.get_mut(key) {
            a.expires = Some(now + ASSUMED_TTL);
        }
    }

    /// The binding failed: the pod no longer counts.
    pub fn forget(&mut self, key: &str) {
        if self.assumed.remove(key).is_some() {
            self.remove_from_node(key);
        }
    }

    /// Drop assumptions the watch never confirmed; returns their keys.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> =
            self.assumed.iter().filter(|(_, a)| a.expires.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        for key in &expired {
            self.forget(key);
        }
        expired
    }

    /// A namespace was added or changed: whether its labels changed (pod affinity terms
    /// may select namespaces by label).
    pub fn apply_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) -> bool {
        self.namespaces.insert(name.to_string(), labels.clone()) != Some(labels)
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// A claim was added or changed (key `namespace/name`).
    pub fn apply_claim(&mut self, key: String, claim: Arc<PersistentVolumeClaim>) {
        self.volumes.claims.insert(key, claim);
    }

    pub fn delete_claim(&mut self, key: &str) {
        self.volumes.claims.remove(key);
    }

    pub fn apply_volume(&mut self, name: String, volume: Arc<PersistentVolume>) {
        self.volumes.volumes.insert(name, volume);
    }

    pub fn delete_volume(&mut self, name: &str) {
        self.volumes.volumes.remove(name);
    }

    pub fn apply_class(&mut self, name: String, class: Arc<StorageClass>) {
        self.volumes.classes.insert(name, class);
    }

    pub fn delete_class(&mut self, name: &str) {
        self.volumes.classes.remove(name);
    }

    /// Volumes and claims as a pod's volume binding will leave them, counted at once (so
    /// the next pod does not pick the same volume); the watch brings the real ones.
    /// Returns what they replace, for `revert_volumes`.
    pub fn assume_volumes(
        &mut self,
        pvs: Vec<Arc<PersistentVolume>>,
        claims: Vec<Arc<PersistentVolumeClaim>>,
    ) -> AssumedVolumes {
        let mut before = AssumedVolumes::default();
        for pv in pvs {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let old = self.volumes.volumes.insert(name, pv.clone());
            before.volumes.extend(old.map(|old| (old, pv)));
        }
        for claim in claims {
            let key = pod_key_of(&claim.metadata);
            let old = self.volumes.claims.insert(key, claim.clone());
            before.claims.extend(old.map(|old| (old, claim)));
        }
        before
    }

    /// The writes failed: put back what `assume_volumes` replaced, where the watch has not
    /// brought a newer version meanwhile.
    pub fn revert_volumes(&mut self, assumed: AssumedVolumes) {
        for (old, ours) in assumed.volumes {
            let name = old.metadata.name.clone().unwrap_or_default();
            if self.volumes.volumes.get(&name).is_some_and(|now| Arc::ptr_eq(now, &ours)) {
                self.volumes.volumes.insert(name, old);
            }
        }
        for (old, ours) in assumed.claims {
            let key = pod_key_of(&old.metadata);
            if self.volumes.claims.get(&key).is_some_and(|now| Arc::ptr_eq(now, &ours)) {
                self.volumes.claims.insert(key, old);
            }
        }
    }

    /// The cycle's view: the nodes the watch shows, by name.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            nodes: self.nodes.values().filter(|n| n.node.is_some()).collect(),
            image_nodes: &self.image_nodes,
            namespaces: &self.namespaces,
            volumes: &self.volumes,
            nominated: &self.nominated,
            workloads: &self.workloads,
            cycle: Default::default(),
        }
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::named_pod;
    use serde_json::json;

    fn node(name: &str, images: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "2", "memory": "2Gi", "pods": "10"}, "images": images}}))
            .unwrap(),
        )
    }

    fn pod(name: &str, cpu: &str) -> Arc<PodInfo> {
        Arc::new(named_pod("d", name, json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]})))
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::default();
        c.apply_node(node("n", json!([])));
        c.assume(pod("a", "1"), "n");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 1000);
        c.forget("d/a");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 0);

        c.assume(pod("b", "500m"), "n");
        c.apply_bound_pod(pod("b", "500m"), "n");
        assert!(!c.is_assumed("d/b"));
        c.forget("d/b");
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 500, "a confirmed pod is not forgotten");
        assert!(c.remove_pod("d/b"));
        assert_eq!(c.node("n").unwrap().pods.len(), 0);
    }

    #[test]
    fn assumptions_expire_after_a_binding_the_watch_never_shows() {
        let mut c = Cache::default();
        c.apply_node(node("n", json!([])));
        let t0 = Instant::now();
        c.assume(pod("a", "1"), "n");
        assert!(c.expire(t0 + ASSUMED_TTL * 10).is_empty(), "in-flight bindings do not expire");
        c.finish_binding("d/a", t0);
        assert_eq!(c.expire(t0 + ASSUMED_TTL), vec!["d/a".to_string()]);
        assert_eq!(c.node("n").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn image_counts_and_node_changes() {
        let mut c = Cache::default();
        let img = json!([{"names": ["app:1"], "sizeBytes": 1000}]);
        assert!(c.apply_node(node("a", img.clone())).0);
        c.apply_node(node("b", img.clone()));
        assert_eq!(c.snapshot().image_nodes["app:1"], 2);
        assert!(!c.apply_node(node("a", img)).0, "an identical update wakes nobody");
        c.delete_node("a");
        assert_eq!(c.snapshot().image_nodes["app:1"], 1);
        c.apply_bound_pod(pod("x", "1"), "ghost");
        assert_eq!(c.snapshot().nodes.len(), 1, "a node known only from its pods is not schedulable");
    }
}
