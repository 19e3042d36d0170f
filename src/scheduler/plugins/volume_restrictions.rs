//! VolumeRestrictions: a pod whose ReadWriteOncePod claim another scheduled pod already
//! uses fits nowhere; the same GCE PD (unless every mount is read-only), AWS EBS volume,
//! iSCSI IQN or RBD image (unless read-only) cannot be used twice on a node. A claim the
//! scheduler has not seen rejects the pod before any node is looked at, as upstream's
//! PreFilter.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, PreFilter, Snapshot};

pub struct VolumeRestrictions;

pub const DISK_CONFLICT: &str = "node(s) had no available disk";
pub const RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

const FILTER_STATE: &str = "VolumeRestrictions/filter";

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec.as_ref().and_then(|s| s.volumes.as_deref()).unwrap_or_default()
}

/// The `namespace/name` keys of the claims a pod's volumes name.
pub fn claim_keys(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    volumes(pod).iter().filter_map(move |v| Some(format!("{ns}/{}", v.persistent_volume_claim.as_ref()?.claim_name)))
}

/// Reject a pod naming a claim the scheduler does not know, with upstream's lister error.
pub fn reject_missing_claims(snapshot: &Snapshot, pod: &PodInfo) -> PreFilter {
    let Some(missing) = claim_keys(&pod.pod).find(|k| !snapshot.volumes.claims.contains_key(k)) else {
        return PreFilter::AllNodes;
    };
    let name = missing.split_once('/').map_or(missing.as_str(), |(_, n)| n);
    PreFilter::Reject(format!("persistentvolumeclaim \"{name}\" not found"))
}

fn conflicts(v: &Volume, other: &Volume) -> bool {
    if let (Some(a), Some(b)) = (&v.gce_persistent_disk, &other.gce_persistent_disk) {
        return a.pd_name == b.pd_name && !(a.read_only == Some(true) && b.read_only == Some(true));
    }
    if let (Some(a), Some(b)) = (&v.aws_elastic_block_store, &other.aws_elastic_block_store) {
        return a.volume_id == b.volume_id;
    }
    if let (Some(a), Some(b)) = (&v.iscsi, &other.iscsi) {
        return a.iqn == b.iqn && !(a.read_only == Some(true) && b.read_only == Some(true));
    }
    if let (Some(a), Some(b)) = (&v.rbd, &other.rbd) {
        let shared_monitor = a.monitors.iter().any(|m| b.monitors.contains(m));
        return shared_monitor
            && a.pool == b.pool
            && a.image == b.image
            && !(a.read_only == Some(true) && b.read_only == Some(true));
    }
    false
}

/// Whether another scheduled pod uses one of the pod's ReadWriteOncePod claims.
fn rwop_in_use(snapshot: &Snapshot, pod: &PodInfo) -> bool {
    let rwop: HashSet<String> = claim_keys(&pod.pod)
        .filter(|k| {
            let modes = snapshot.volumes.claims.get(k).and_then(|c| c.spec.as_ref()?.access_modes.clone());
            modes.is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"))
        })
        .collect();
    if rwop.is_empty() {
        return false;
    }
    let others = snapshot.nodes.iter().flat_map(|n| n.pods.values()).filter(|p| p.key != pod.key);
    others.into_iter().any(|p| claim_keys(&p.pod).any(|k| rwop.contains(&k)))
}

impl FilterPlugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        "VolumeRestrictions"
    }

    fn pre_filter(&self, snapshot: &Snapshot, pod: &PodInfo) -> PreFilter {
        reject_missing_claims(snapshot, pod)
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let own = volumes(&pod.pod);
        // only these kinds can conflict (a pod's token and config volumes never do)
        let disks: Vec<&Volume> = own
            .iter()
            .filter(|v| {
                v.gce_persistent_disk.is_some()
                    || v.aws_elastic_block_store.is_some()
                    || v.rbd.is_some()
                    || v.iscsi.is_some()
            })
            .collect();
        let on_node = node.pods.values().flat_map(|p| volumes(&p.pod));
        if !disks.is_empty() && on_node.into_iter().any(|other| disks.iter().any(|v| conflicts(v, other))) {
            return Err(Failure::unschedulable(vec![DISK_CONFLICT.into()]));
        }
        if own.iter().any(|v| v.persistent_volume_claim.is_some())
            && *snapshot.cycle.get_or_insert_with(FILTER_STATE, pod, || rwop_in_use(snapshot, pod))
        {
            return Err(Failure::unschedulable(vec![RWOP_CONFLICT.into()]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::Volumes;
    use crate::scheduler::plugins::testing::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn claims(list: &[(&str, &str)]) -> Volumes {
        let mut v = Volumes::default();
        for (name, mode) in list {
            let claim = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"accessModes": [mode]}}))
            .unwrap();
            v.claims.insert(format!("default/{name}"), Arc::new(claim));
        }
        v
    }

    fn using(name: &str, volumes: Value) -> Arc<PodInfo> {
        Arc::new(named_pod("default", name, json!({"containers": [], "volumes": volumes})))
    }

    fn claim(claim: &str) -> Value {
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])
    }

    #[test]
    fn read_write_once_pod_claims_are_used_once() {
        let vols = claims(&[("solo", "ReadWriteOncePod"), ("shared", "ReadWriteOnce")]);
        let (mut a, b) = (node("a", json!({}), json!({})), node("b", json!({}), json!({})));
        a.add_pod(using("first", claim("solo")));
        a.add_pod(using("rwo", claim("shared")));
        let second = using("second", claim("solo"));
        let reasons = with_volumes(&[&a, &b], &vols, |s| {
            [&a, &b].map(|n| VolumeRestrictions.filter(s, &second, n).err().map(|f| f.reasons).unwrap_or_default())
        });
        assert_eq!(reasons, [vec![RWOP_CONFLICT.to_string()], vec![RWOP_CONFLICT.to_string()]]);
        let rwo = using("rwo-2", claim("shared"));
        with_volumes(&[&a, &b], &vols, |s| assert!(VolumeRestrictions.filter(s, &rwo, &a).is_ok()));
        // a claim nobody has seen
        let ghost = using("ghost", claim("nope"));
        let verdict = with_volumes(&[&a], &vols, |s| VolumeRestrictions.pre_filter(s, &ghost));
        assert_eq!(verdict, PreFilter::Reject("persistentvolumeclaim \"nope\" not found".into()));
    }

    #[test]
    fn disks_used_twice_on_a_node() {
        let mut n = node("n", json!({}), json!({}));
        n.add_pod(using("a", json!([{"name": "d", "gcePersistentDisk": {"pdName": "disk", "readOnly": true}}])));
        n.add_pod(using("b", json!([{"name": "e", "awsElasticBlockStore": {"volumeID": "vol-1"}}])));
        let ro = using("c", json!([{"name": "d", "gcePersistentDisk": {"pdName": "disk", "readOnly": true}}]));
        assert!(filter_reasons(&VolumeRestrictions, &ro, &n).is_empty(), "read-only twice is fine");
        let rw = using("d", json!([{"name": "d", "gcePersistentDisk": {"pdName": "disk"}}]));
        assert_eq!(filter_reasons(&VolumeRestrictions, &rw, &n), vec![DISK_CONFLICT]);
        let ebs = using("e", json!([{"name": "e", "awsElasticBlockStore": {"volumeID": "vol-1"}}]));
        assert_eq!(filter_reasons(&VolumeRestrictions, &ebs, &n), vec![DISK_CONFLICT]);
    }
}
