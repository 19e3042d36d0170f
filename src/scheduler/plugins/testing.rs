//! Helpers for the plug-ins' unit tests: objects from JSON, one-node snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::scheduler::framework::{
    FilterPlugin, NodeInfo, Nominated, PodInfo, PreScore, ScorePlugin, Snapshot, Volumes, Workloads,
};

pub fn pod_info(spec: Value) -> PodInfo {
    named_pod("default", "p", spec)
}

pub fn named_pod(namespace: &str, name: &str, spec: Value) -> PodInfo {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}))
        .expect("a pod");
    PodInfo::new(Arc::new(pod))
}

/// A node with labels from `meta_labels` (an object), the given spec and status.
pub fn node_with(name: &str, labels: Value, spec: Value, status: Value) -> NodeInfo {
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec, "status": status}))
            .expect("a node");
    let mut info = NodeInfo::new(name);
    info.set_node(Arc::new(node));
    info
}

pub fn node(name: &str, spec: Value, status: Value) -> NodeInfo {
    node_with(name, json!({}), spec, status)
}

/// A node with this much allocatable cpu and memory (and 110 pods).
pub fn sized_node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
    node(name, json!({}), json!({"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}))
}

/// Run `f` on a snapshot of these nodes (no images, no namespace labels).
pub fn with_snapshot<R>(nodes: &[&NodeInfo], f: impl FnOnce(&Snapshot) -> R) -> R {
    with_volumes(nodes, &Volumes::default(), f)
}

/// Run `f` on a snapshot of these nodes and claims and volumes.
pub fn with_volumes<R>(nodes: &[&NodeInfo], volumes: &Volumes, f: impl FnOnce(&Snapshot) -> R) -> R {
    snapshot_of(nodes, volumes, &Nominated::default(), &Workloads::default(), f)
}

/// Run `f` on a snapshot of these nodes with these nominated pods.
pub fn with_nominated<R>(nodes: &[&NodeInfo], nominated: &Nominated, f: impl FnOnce(&Snapshot) -> R) -> R {
    snapshot_of(nodes, &Volumes::default(), nominated, &Workloads::default(), f)
}

/// Run `f` on a snapshot of these nodes, claims and volumes, nominated pods and workloads.
pub fn snapshot_of<R>(
    nodes: &[&NodeInfo],
    volumes: &Volumes,
    nominated: &Nominated,
    workloads: &Workloads,
    f: impl FnOnce(&Snapshot) -> R,
) -> R {
    let (images, namespaces) = (HashMap::new(), HashMap::new());
    let snapshot = Snapshot {
        nodes: nodes.to_vec(),
        image_nodes: &images,
        namespaces: &namespaces,
        volumes,
        nominated,
        workloads,
        cycle: Default::default(),
    };
    f(&snapshot)
}

pub fn filter_reasons(plugin: &dyn FilterPlugin, pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    with_snapshot(&[node], |snapshot| plugin.filter(snapshot, pod, node).err().map(|f| f.reasons).unwrap_or_default())
}

/// The filter's reasons on each node of a snapshot of these nodes (empty: fits).
pub fn filter_each(plugin: &dyn FilterPlugin, nodes: &[&NodeInfo], pod: &PodInfo) -> Vec<Vec<String>> {
    with_snapshot(nodes, |s| {
        nodes.iter().map(|n| plugin.filter(s, pod, n).err().map(|f| f.reasons).unwrap_or_default()).collect()
    })
}

/// The raw score of a one-node cluster.
pub fn raw_score(plugin: &dyn ScorePlugin, pod: &PodInfo, node: &NodeInfo) -> i64 {
    with_snapshot(&[node], |snapshot| match plugin.pre_score(snapshot, pod, &[node]) {
        PreScore::Score => plugin.score(snapshot, pod, node),
        PreScore::Skip => 0,
    })
}
