//! VolumeZone: a pod whose bound claims' PersistentVolumes carry zone or region labels
//! (`topology.kubernetes.io/zone`, `…/region`, or the `failure-domain.beta.kubernetes.io`
//! forms; several values joined by `__`) fits only nodes with one of those values. A node
//! without any zone or region label is not constrained, as upstream.

use std::collections::BTreeMap;

use crate::scheduler::framework::{Failure, FilterPlugin, NodeInfo, PodInfo, Snapshot};

use super::volume_restrictions::claim_keys;

pub struct VolumeZone;

pub const REASON: &str = "node(s) had no available volume zone";

const ZONE: &str = "topology.kubernetes.io/zone";
const REGION: &str = "topology.kubernetes.io/region";
const BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
const BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const TOPOLOGY_LABELS: [&str; 4] = [ZONE, REGION, BETA_ZONE, BETA_REGION];

/// The GA form of a beta label (a volume labelled the old way matches a node labelled
/// the new way).
fn to_ga(key: &str) -> &str {
    match key {
        BETA_ZONE => ZONE,
        BETA_REGION => REGION,
        other => other,
    }
}

impl FilterPlugin for VolumeZone {
    fn name(&self) -> &'static str {
        "VolumeZone"
    }

    fn filter(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> Result<(), Failure> {
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        if !TOPOLOGY_LABELS.iter().any(|k| labels.contains_key(*k)) {
            return Ok(());
        }
        for key in claim_keys(&pod.pod) {
            let claim = snapshot.volumes.claims.get(&key);
            let bound = claim.and_then(|c| c.spec.as_ref()?.volume_name.as_deref()).filter(|n| !n.is_empty());
            let Some(pv) = bound.and_then(|name| snapshot.volumes.volumes.get(name)) else { continue };
            for (k, values) in
                pv.metadata.labels.iter().flatten().filter(|(k, _)| TOPOLOGY_LABELS.contains(&k.as_str()))
            {
                let value = labels.get(k).or_else(|| labels.get(to_ga(k)));
                if !value.is_some_and(|v| values.split("__").any(|z| z == v)) {
                    return Err(Failure::unresolvable(REASON));
                }
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
    fn volume_zones_against_node_zones() {
        let mut vols = Volumes::default();
        let claim = json!({"metadata": {"name": "data", "namespace": "default"}, "spec": {"volumeName": "pv"}});
        vols.claims.insert("default/data".into(), Arc::new(serde_json::from_value(claim).unwrap()));
        let pv = json!({"metadata": {"name": "pv", "labels": {BETA_ZONE: "a__b", "other": "x"}}, "spec": {}});
        vols.volumes.insert("pv".into(), Arc::new(serde_json::from_value(pv).unwrap()));
        let zoned = |name: &str, zone: &str| node_with(name, json!({ZONE: zone}), json!({}), json!({}));
        let (a, b, c) = (zoned("a", "a"), zoned("b", "b"), zoned("c", "c"));
        let bare = node_with("bare", json!({}), json!({}), json!({}));
        let pod = named_pod(
            "default",
            "p",
            json!({"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}),
        );
        let verdicts = with_volumes(&[&a, &b, &c, &bare], &vols, |s| {
            [&a, &b, &c, &bare].map(|n| VolumeZone.filter(s, &pod, n).is_ok())
        });
        assert_eq!(verdicts, [true, true, false, true]);
    }
}
