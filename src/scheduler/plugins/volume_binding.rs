//! VolumeBinding, the part for claims already bound: a claim whose `spec.volumeName`
//! names a PersistentVolume with required node affinity (a local volume) keeps the pod
//! to the nodes those terms match. Not done: binding unbound claims (finding or
//! provisioning volumes, WaitForFirstConsumer, the StorageClass binding modes), the
//! `pv.kubernetes.io/bind-completed` annotation (a volumeName is taken as bound), and
//! volume capacity scoring.

use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, PreFilter, Snapshot};

use super::node_affinity::term_matches;
use super::volume_restrictions::{claim_keys, reject_missing_claims};

pub struct VolumeBinding;

pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn pre_filter(&self, snapshot: &Snapshot, pod: &PodInfo) -> PreFilter {
        reject_missing_claims(snapshot, pod)
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        for key in claim_keys(&pod.pod) {
            let claim = snapshot.volumes.claims.get(&key);
            let bound = claim.and_then(|c| c.spec.as_ref()?.volume_name.as_deref()).filter(|n| !n.is_empty());
            let Some(pv) = bound.and_then(|name| snapshot.volumes.volumes.get(name)) else { continue };
            let required = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()?.required.as_ref());
            if let Some(required) = required
                && !required.node_selector_terms.iter().any(|t| term_matches(t, node))
            {
                return Err(Failure::unresolvable(NODE_CONFLICT));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::Volumes;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn a_local_volume_pins_the_pod() {
        let mut vols = Volumes::default();
        let claim = json!({"metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "local-a"}});
        vols.claims.insert("default/data".into(), Arc::new(serde_json::from_value(claim).unwrap()));
        let pv = json!({"metadata": {"name": "local-a"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}});
        vols.volumes.insert("local-a".into(), Arc::new(serde_json::from_value(pv).unwrap()));
        let a = node_with("a", json!({"kubernetes.io/hostname": "a"}), json!({}), json!({}));
        let b = node_with("b", json!({"kubernetes.io/hostname": "b"}), json!({}), json!({}));
        let pod = named_pod(
            "default",
            "p",
            json!({"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}),
        );
        let verdicts = with_volumes(&[&a, &b], &vols, |s| [&a, &b].map(|n| VolumeBinding.filter(s, &pod, n).is_ok()));
        assert_eq!(verdicts, [true, false]);
        let plain = named_pod("default", "q", json!({"containers": []}));
        with_volumes(&[&b], &vols, |s| assert!(VolumeBinding.filter(s, &plain, &b).is_ok()));
    }
}
