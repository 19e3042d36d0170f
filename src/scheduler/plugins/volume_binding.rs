//! VolumeBinding. A claim already bound (`spec.volumeName`) to a PersistentVolume with
//! required node affinity (a local volume) keeps the pod to the nodes those terms match.
//! An unbound claim whose StorageClass binds immediately (or that names no class) is the
//! PersistentVolume controller's to bind first: the pod waits ("pod has unbound immediate
//! PersistentVolumeClaims"). An unbound claim whose class is WaitForFirstConsumer is
//! bound with the pod: on each node, the smallest available volume that matches it (class,
//! access modes, volume mode, size, the claim's selector, the volume's node affinity), else
//! dynamic provisioning if the class has a provisioner and its allowedTopologies admit the
//! node. `plan` says what to do on the chosen node; the scheduler then writes the volume's
//! `claimRef`, or the claim's `volume.kubernetes.io/selected-node` annotation, and binds the
//! pod once the claims are bound (upstream's PreBind). Not done: volume capacity scoring,
//! CSIStorageCapacity, the `pv.kubernetes.io/bind-completed` annotation (a volumeName is
//! taken as bound).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::quantity::Quantity;
use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, PreFilter, Snapshot, Volumes};

use super::node_affinity::term_matches;
use super::volume_restrictions::{claim_keys, reject_missing_claims};
use crate::label_selector::selector_matches;

pub struct VolumeBinding;

pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The annotation that asks a provisioner for a volume reachable from this node.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner of classes whose volumes are made by hand (local volumes).
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// What binding a pod's waiting claims on one node takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (claim key, volume name): volumes to bind to the claims.
    pub bind: Vec<(String, String)>,
    /// Claim keys to provision volumes for, on this node.
    pub provision: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.bind.is_empty() && self.provision.is_empty()
    }
}

fn bound_volume(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.spec.as_ref()?.volume_name.as_deref().filter(|n| !n.is_empty())
}

/// The claim's class name: the beta annotation wins over the spec, as upstream.
fn class_name(claim: &PersistentVolumeClaim) -> &str {
    let annotated = claim.metadata.annotations.as_ref().and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"));
    annotated.map(String::as_str).or(claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref())).unwrap_or("")
}

/// The pod's unbound claims that wait for it (with their class), or why it cannot be
/// placed at all.
fn waiting_claims<'a>(
    snapshot: &'a Snapshot,
    pod: &PodInfo,
) -> Result<Vec<(String, &'a PersistentVolumeClaim, &'a StorageClass)>, String> {
    let mut waiting = Vec::new();
    let mut immediate = false;
    for key in claim_keys(&pod.pod) {
        let Some(claim) = snapshot.volumes.claims.get(&key) else { continue };
        if bound_volume(claim).is_some() {
            continue;
        }
        let name = class_name(claim);
        match snapshot.volumes.classes.get(name) {
            Some(class) if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
                waiting.push((key, claim.as_ref(), class.as_ref()))
            }
            None if !name.is_empty() => return Err(format!("storageclass.storage.k8s.io \"{name}\" not found")),
            _ => immediate = true,
        }
    }
    if immediate {
        return Err(UNBOUND_IMMEDIATE.into());
    }
    Ok(waiting)
}

fn storage(list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> i64 {
    list.and_then(|l| l.get("storage")).and_then(|q| Quantity::parse(&q.0)).map_or(0, |q| q.value())
}

/// Whether the volume may be bound to this claim on this node (upstream's
/// FindMatchingVolume checks, minus the size, which the caller compares).
fn volume_matches(pv: &PersistentVolume, key: &str, claim: &PersistentVolumeClaim, node: &NodeInfo) -> bool {
    let (Some(spec), Some(want)) = (pv.spec.as_ref(), claim.spec.as_ref()) else { return false };
    let free = match &spec.claim_ref {
        None => true,
        Some(r) => format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name.as_deref().unwrap_or("")) == key,
    };
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    let empty = BTreeMap::new();
    let labels = pv.metadata.labels.as_ref().unwrap_or(&empty);
    let affinity = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref());
    free && pv.metadata.deletion_timestamp.is_none()
        && spec.storage_class_name.as_deref().unwrap_or("") == class_name(claim)
        && want.access_modes.iter().flatten().all(|m| modes.contains(m))
        && mode(&spec.volume_mode) == mode(&want.volume_mode)
        && want.selector.as_ref().is_none_or(|s| selector_matches(s, labels))
        && affinity.is_none_or(|a| a.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Whether the class can provision a volume reachable from the node.
fn provisionable(class: &StorageClass, node: &NodeInfo) -> bool {
    let empty = BTreeMap::new();
    let labels = node.labels().unwrap_or(&empty);
    let topology_ok = class.allowed_topologies.as_deref().unwrap_or_default();
    class.provisioner != NO_PROVISIONER
        && (topology_ok.is_empty()
            || topology_ok.iter().any(|term| {
                term.match_label_expressions
                    .iter()
                    .flatten()
                    .all(|r| labels.get(&r.key).is_some_and(|v| r.values.contains(v)))
            }))
}

impl VolumeBinding {
    /// What binding the pod's waiting claims on this node takes, or why the node cannot
    /// serve them.
    pub fn plan(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<Plan, Failure> {
        let mut plan = Plan::default();
        let Ok(waiting) = waiting_claims(snapshot, pod) else { return Ok(plan) };
        let mut taken = HashSet::new();
        for (key, claim, class) in waiting {
            let size = storage(claim.spec.as_ref().and_then(|s| s.resources.as_ref()?.requests.as_ref()));
            let best = (snapshot.volumes.volumes.values())
                .filter(|pv| !taken.contains(pv.metadata.name.as_deref().unwrap_or("")))
                .filter(|pv| volume_matches(pv, &key, claim, node))
                .map(|pv| (storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())), pv))
                .filter(|(capacity, _)| *capacity >= size)
                .min_by_key(|(capacity, pv)| (*capacity, pv.metadata.name.clone()));
            match best {
                Some((_, pv)) => {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    taken.insert(name.clone());
                    plan.bind.push((key, name));
                }
                None if provisionable(class, node) => plan.provision.push(key),
                None => return Err(Failure::unresolvable(BIND_CONFLICT)),
            }
        }
        Ok(plan)
    }
}

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn pre_filter(&self, snapshot: &Snapshot, pod: &PodInfo) -> PreFilter {
        match reject_missing_claims(snapshot, pod) {
            PreFilter::AllNodes => match waiting_claims(snapshot, pod) {
                Err(why) => PreFilter::Reject(why),
                Ok(_) => PreFilter::AllNodes,
            },
            other => other,
        }
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        for key in claim_keys(&pod.pod) {
            let claim = snapshot.volumes.claims.get(&key);
            let Some(pv) = claim.and_then(|c| bound_volume(c)).and_then(|name| snapshot.volumes.volumes.get(name))
            else {
                continue;
            };
            let required = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()?.required.as_ref());
            if let Some(required) = required
                && !required.node_selector_terms.iter().any(|t| term_matches(t, node))
            {
                return Err(Failure::unresolvable(NODE_CONFLICT));
            }
        }
        self.plan(snapshot, pod, node).map(|_| ())
    }
}

/// How many of these claims are not bound yet (the scheduler's wait before binding).
pub fn unbound_claims(volumes: &Volumes, keys: &[String]) -> usize {
    keys.iter().filter(|k| volumes.claims.get(*k).is_none_or(|c| bound_volume(c).is_none())).count()
}

/// The cache's stand-ins while the writes are under way: the volume with its claimRef,
/// the claim with its selected node.
pub fn assumed(
    volumes: &Volumes,
    plan: &Plan,
    node: &str,
) -> (Vec<Arc<PersistentVolume>>, Vec<Arc<PersistentVolumeClaim>>) {
    let mut pvs = Vec::new();
    for (key, name) in &plan.bind {
        let (Some(pv), Some(claim)) = (volumes.volumes.get(name), volumes.claims.get(key)) else { continue };
        let mut pv = (**pv).clone();
        pv.spec.get_or_insert_with(Default::default).claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            ..Default::default()
        });
        pvs.push(Arc::new(pv));
    }
    let mut claims = Vec::new();
    for key in &plan.provision {
        let Some(claim) = volumes.claims.get(key) else { continue };
        let mut claim = (**claim).clone();
        claim.metadata.annotations.get_or_insert_with(Default::default).insert(SELECTED_NODE.into(), node.into());
        claims.push(Arc::new(claim));
    }
    (pvs, claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::{Value, json};

    fn claim(vols: &mut Volumes, name: &str, spec: Value) {
        let c = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        vols.claims.insert(format!("default/{name}"), Arc::new(serde_json::from_value(c).unwrap()));
    }

    fn volume(vols: &mut Volumes, name: &str, spec: Value) {
        let pv = json!({"metadata": {"name": name}, "spec": spec});
        vols.volumes.insert(name.into(), Arc::new(serde_json::from_value(pv).unwrap()));
    }

    fn class(vols: &mut Volumes, name: &str, provisioner: &str, mode: &str, extra: Value) {
        let mut c = json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode});
        for (k, v) in extra.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        vols.classes.insert(name.into(), Arc::new(serde_json::from_value(c).unwrap()));
    }

    fn on_host(host: &str) -> Value {
        json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}})
    }

    fn using(claims: &[&str]) -> PodInfo {
        let volumes: Vec<Value> =
            claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
        named_pod("default", "p", json!({"containers": [], "volumes": volumes}))
    }

    fn host(name: &str) -> NodeInfo {
        node_with(name, json!({"kubernetes.io/hostname": name, "zone": name}), json!({}), json!({}))
    }

    #[test]
    fn a_local_volume_pins_the_pod() {
        let mut vols = Volumes::default();
        claim(&mut vols, "data", json!({"accessModes": ["ReadWriteOnce"], "volumeName": "local-a"}));
        volume(&mut vols, "local-a", json!({"nodeAffinity": on_host("a")}));
        let (a, b) = (host("a"), host("b"));
        let pod = using(&["data"]);
        let verdicts = with_volumes(&[&a, &b], &vols, |s| [&a, &b].map(|n| VolumeBinding.filter(s, &pod, n).is_ok()));
        assert_eq!(verdicts, [true, false]);
        let plain = named_pod("default", "q", json!({"containers": []}));
        with_volumes(&[&b], &vols, |s| assert!(VolumeBinding.filter(s, &plain, &b).is_ok()));
    }

    #[test]
    fn unbound_claims_wait_or_bind_with_the_pod() {
        let mut vols = Volumes::default();
        class(&mut vols, "now", "example.com/csi", "Immediate", json!({}));
        class(&mut vols, "local", NO_PROVISIONER, "WaitForFirstConsumer", json!({}));
        let zone_b = json!({"allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["b"]}]}]});
        class(&mut vols, "dynamic", "example.com/csi", "WaitForFirstConsumer", zone_b);
        let want = |class: &str, size: &str| json!({"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
        claim(&mut vols, "instant", want("now", "1Gi"));
        claim(&mut vols, "plain", json!({"accessModes": ["ReadWriteOnce"]}));
        claim(&mut vols, "lost", want("gone", "1Gi"));
        claim(&mut vols, "small", want("local", "1Gi"));
        claim(&mut vols, "big", want("local", "10Gi"));
        claim(&mut vols, "dyn", want("dynamic", "1Gi"));
        let pv = |cap: &str, on: &str| {
            json!({"storageClassName": "local", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": cap},
                "nodeAffinity": on_host(on)})
        };
        volume(&mut vols, "a-5g", pv("5Gi", "a"));
        volume(&mut vols, "a-2g", pv("2Gi", "a"));
        volume(&mut vols, "b-1g", pv("1Gi", "b"));
        let (a, b, c) = (host("a"), host("b"), host("c"));
        with_volumes(&[&a, &b, &c], &vols, |s| {
            let pre = |claims: &[&str]| VolumeBinding.pre_filter(s, &using(claims));
            assert_eq!(pre(&["instant"]), PreFilter::Reject(UNBOUND_IMMEDIATE.into()));
            assert_eq!(pre(&["plain"]), PreFilter::Reject(UNBOUND_IMMEDIATE.into()), "no class: immediate");
            assert_eq!(pre(&["lost"]), PreFilter::Reject("storageclass.storage.k8s.io \"gone\" not found".into()));
            assert_eq!(pre(&["small", "dyn"]), PreFilter::AllNodes);

            let plan = |claims: &[&str], n: &NodeInfo| VolumeBinding.plan(s, &using(claims), n);
            let bind = |pairs: &[(&str, &str)]| Plan {
                bind: pairs.iter().map(|(c, v)| (format!("default/{c}"), v.to_string())).collect(),
                provision: vec![],
            };
            // the smallest volume that fits, on the volume's node; two claims, two volumes
            assert_eq!(plan(&["small"], &a), Ok(bind(&[("small", "a-2g")])));
            assert_eq!(plan(&["small", "big"], &a), Err(Failure::unresolvable(BIND_CONFLICT)), "none holds 10Gi");
            assert_eq!(plan(&["small"], &b), Ok(bind(&[("small", "b-1g")])));
            assert_eq!(plan(&["small"], &c), Err(Failure::unresolvable(BIND_CONFLICT)));
            // provisioning where the class's topology allows
            let provision = Plan { bind: vec![], provision: vec!["default/dyn".into()] };
            assert_eq!(plan(&["dyn"], &b), Ok(provision));
            assert_eq!(plan(&["dyn"], &a), Err(Failure::unresolvable(BIND_CONFLICT)));
        });
    }
}
