//! Node lifecycle, node IPAM and pod garbage collection.
//!
//! **Node lifecycle** (every `--node-monitor-period`): a node is healthy while its
//! kubelet renews its Lease in `kube-node-lease` or posts its Ready heartbeat. As
//! upstream, staleness is judged by when *this process* last saw either change (immune
//! to clock skew): after `--node-monitor-grace-period` without news, every condition of
//! the node turns Unknown ("Kubelet stopped posting node status."), its pods are marked
//! not Ready (so endpoints drop them), and it gets the `unreachable` taints. Taints
//! follow conditions as upstream's TaintNodesByCondition and taint-based eviction:
//! Ready=False → `not-ready`, Ready=Unknown → `unreachable` (NoSchedule and NoExecute),
//! pressure conditions and `spec.unschedulable` → their NoSchedule taints.
//!
//! **Taint eviction**: a pod on a node with NoExecute taints it does not tolerate is
//! deleted at once; one tolerating them for `tolerationSeconds` is deleted that long
//! after the taint was added (the DefaultTolerationSeconds admission plug-in gives
//! every pod 300 s for not-ready and unreachable). A `DisruptionTarget` condition
//! (reason `DeletionByTaintManager`) is written first, as upstream.
//!
//! **IPAM** (`--allocate-node-cidrs --cluster-cidr`): each node without a pod CIDR gets
//! the next free `/--node-cidr-mask-size` block.
//!
//! **Pod GC**: pods bound to a node that does not exist, and terminating pods that were
//! never scheduled, are deleted for good.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::runtime::{Ctx, Informer, Recorder, is_not_found};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NODE_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// How long a new node may take to post its first status (upstream's 1 minute).
const STARTUP_GRACE: Duration = Duration::from_secs(60);

struct Lifecycle {
    client: Client,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    leases: Arc<Informer<Lease>>,
    grace: Duration,
    recorder: Recorder,
    /// node → (the heartbeat last seen: lease renewTime and Ready heartbeat, when it
    /// changed as this process saw it).
    health: Mutex<HashMap<String, (String, Instant)>>,
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let lc = Arc::new(Lifecycle {
        client: ctx.client.clone(),
        nodes: ctx.informer::<Node>(),
        pods: ctx.informer::<Pod>(),
        leases: ctx.informer::<Lease>(),
        grace: ctx.settings.node_monitor_grace_period,
        recorder: ctx.recorder("node-controller"),
        health: Mutex::default(),
    });
    let period = ctx.settings.node_monitor_period;
    ctx.run_loop("node_lifecycle", period, move || {
        let lc = lc.clone();
        async move { lc.monitor().await }
    });
    Ok(())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl Lifecycle {
    /// The node's heartbeat as a string that changes whenever the kubelet reports in.
    fn heartbeat(&self, node: &Node) -> String {
        let lease = self.leases.get_in("kube-node-lease", &node.name_any());
        let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0.to_string()));
        let ready = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0.to_string()));
        format!("{}|{}", renewed.unwrap_or_default(), ready.unwrap_or_default())
    }

    /// Whether the node's kubelet has gone quiet for longer than the grace period.
    fn stale(&self, node: &Node) -> bool {
        let beat = self.heartbeat(node);
        let now = Instant::now();
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let entry = health.entry(node.name_any()).or_insert_with(|| (beat.clone(), now));
        if entry.0 != beat {
            *entry = (beat, now);
        }
        let never_reported = condition(node, "Ready").is_none();
        let grace = if never_reported { STARTUP_GRACE.max(self.grace) } else { self.grace };
        now.duration_since(entry.1) > grace
    }

    async fn monitor(&self) -> anyhow::Result<()> {
        let nodes = self.nodes.list();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.health.lock().unwrap_or_else(|e| e.into_inner()).retain(|n, _| names.contains(n));
        let mut pods_by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.list() {
            if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                pods_by_node.entry(n).or_default().push(pod);
            }
        }
        for node in nodes {
            let pods = pods_by_node.remove(&node.name_any()).unwrap_or_default();
            if let Err(e) = self.check(&node, &pods).await {
                tracing::warn!(node = %node.name_any(), error = %format!("{e:#}"), "node lifecycle");
            }
        }
        Ok(())
    }

    async fn check(&self, node: &Node, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let ready_before = condition(node, "Ready").map(|c| c.status.clone());
        if self.stale(node) && ready_before.as_deref() != Some("Unknown") {
            self.mark_unknown(&api, node).await?;
            self.recorder.normal(node, "NodeNotReady", format!("Node {} status is now: NodeNotReady", node.name_any()));
            for pod in pods {
                self.mark_pod_not_ready(pod).await;
            }
            // the taints follow from the written conditions on the next pass
            return Ok(());
        }
        self.sync_taints(&api, node).await?;
        self.evict(node, pods).await;
        Ok(())
    }

    async fn mark_unknown(&self, api: &Api<Node>, node: &Node) -> anyhow::Result<()> {
        let never = condition(node, "Ready").is_none();
        let (reason, message) = match never {
            true => ("NodeStatusNeverUpdated", "Kubelet never posted node status."),
            false => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
        };
        let t = now();
        let conditions: Vec<NodeCondition> = NODE_CONDITIONS
            .iter()
            .map(|type_| {
                let old = condition(node, type_);
                NodeCondition {
                    type_: type_.to_string(),
                    status: "Unknown".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_heartbeat_time: old.and_then(|c| c.last_heartbeat_time.clone()).or_else(|| Some(t.clone())),
                    last_transition_time: Some(t.clone()),
                }
            })
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        api.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .context("marking the node's conditions Unknown")?;
        tracing::info!(node = %node.name_any(), "kubelet stopped posting node status; conditions Unknown");
        Ok(())
    }

    async fn mark_pod_not_ready(&self, pod: &Pod) {
        let ready = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        if !ready.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True") {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch =
            json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}]}});
        if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "cannot mark the pod not ready");
        }
    }

    /// The taints the node's conditions call for, with the node's other taints kept.
    async fn sync_taints(&self, api: &Api<Node>, node: &Node) -> anyhow::Result<()> {
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let wanted = condition_taints(node);
        let managed = |t: &Taint| managed_taint(&t.key);
        let mut next: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
        for (key, effect) in &wanted {
            // a taint already there keeps its timeAdded (eviction counts from it)
            let existing = current.iter().find(|t| &t.key == key && &t.effect == effect);
            next.push(existing.cloned().unwrap_or_else(|| Taint {
                key: key.clone(),
                effect: effect.clone(),
                value: None,
                time_added: (effect == "NoExecute").then(now),
            }));
        }
        let key = |t: &Taint| (t.key.clone(), t.effect.clone());
        let before: BTreeMap<_, _> = current.iter().map(|t| (key(t), ())).collect();
        let after: BTreeMap<_, _> = next.iter().map(|t| (key(t), ())).collect();
        if before == after {
            return Ok(());
        }
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": next}});
        api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.context("updating taints")?;
        tracing::info!(node = %node.name_any(), taints = ?after.keys().collect::<Vec<_>>(), "taints updated");
        Ok(())
    }

    /// Delete the pods that no longer tolerate the node's NoExecute taints.
    async fn evict(&self, node: &Node, pods: &[Arc<Pod>]) {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return;
        }
        let now = Timestamp::now();
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
            let Some(deadline) = eviction_deadline(&taints, &tolerations) else { continue };
            if deadline.is_none_or(|d| d <= now) {
                self.evict_pod(node, pod).await;
            }
        }
    }

    async fn evict_pod(&self, node: &Node, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now(),
        }]}});
        let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&condition)).await;
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pod = %pod.name_any(), namespace = %ns, node = %node.name_any(), "evicted for a NoExecute taint");
                self.recorder.normal(
                    pod,
                    "TaintManagerEviction",
                    format!("Marking for deletion Pod {ns}/{}", pod.name_any()),
                );
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "cannot evict"),
        }
    }
}

/// Taint keys this controller owns (and so may remove).
fn managed_taint(key: &str) -> bool {
    matches!(
        key,
        NOT_READY
            | UNREACHABLE
            | "node.kubernetes.io/memory-pressure"
            | "node.kubernetes.io/disk-pressure"
            | "node.kubernetes.io/pid-pressure"
            | "node.kubernetes.io/network-unavailable"
            | "node.kubernetes.io/unschedulable"
    )
}

/// (key, effect) of every taint the node's conditions call for.
fn condition_taints(node: &Node) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut both = |key: &str| {
        out.push((key.to_string(), "NoSchedule".to_string()));
        out.push((key.to_string(), "NoExecute".to_string()));
    };
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => both(NOT_READY),
        Some("Unknown") => both(UNREACHABLE),
        Some(_) => {}
        // a node that never reported is not ready
        None => out.push((NOT_READY.to_string(), "NoSchedule".to_string())),
    }
    for (cond, key) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        ("NetworkUnavailable", "node.kubernetes.io/network-unavailable"),
    ] {
        if condition(node, cond).is_some_and(|c| c.status == "True") {
            out.push((key.to_string(), "NoSchedule".to_string()));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push(("node.kubernetes.io/unschedulable".to_string(), "NoSchedule".to_string()));
    }
    out
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match t.operator.as_deref() {
        Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    };
    effect_ok && key_ok
}

/// When the pod must go: None = it may stay; Some(None) = now; Some(Some(t)) = at t
/// (the earliest taint time plus the shortest tolerationSeconds among the taints).
fn eviction_deadline(taints: &[Taint], tolerations: &[Toleration]) -> Option<Option<Timestamp>> {
    let mut deadline: Option<Timestamp> = None;
    let mut bounded = false;
    for taint in taints {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(None);
        }
        // the toleration allowing the longest stay counts; one without seconds is forever
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching.iter().filter_map(|t| t.toleration_seconds).max().unwrap_or(0).max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
        let at = added.checked_add(Duration::from_secs(seconds as u64)).unwrap_or(added);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
        bounded = true;
    }
    bounded.then_some(deadline)
}

// ---- node IPAM ----

pub fn start_ipam(ctx: &Ctx) -> anyhow::Result<()> {
    let Some(cidr) = ctx.settings.cluster_cidr else {
        tracing::info!("node IPAM: --allocate-node-cidrs is off; not allocating pod CIDRs");
        return Ok(());
    };
    let mask = ctx.settings.node_cidr_mask_size;
    if mask < cidr.prefix_len() || mask > cidr.max_prefix_len() {
        anyhow::bail!("--node-cidr-mask-size {mask} does not fit in --cluster-cidr {cidr}");
    }
    let nodes = ctx.informer::<Node>();
    let queue = ctx.queue("node_ipam");
    let q = queue.clone();
    nodes.on_change(move |ev| {
        if ev.object().spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none() {
            q.add(ev.object().name_any());
        }
    });
    let client = ctx.client.clone();
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    ctx.run_workers(queue, 1, move |name| {
        let (nodes, client, lock) = (nodes.clone(), client.clone(), lock.clone());
        async move {
            // one allocation at a time: two nodes must not get the same block
            let _held = lock.lock().await;
            allocate(&nodes, &client, &name, cidr, mask).await
        }
    });
    Ok(())
}

async fn allocate(
    nodes: &Informer<Node>,
    client: &Client,
    name: &str,
    cidr: ipnet::IpNet,
    mask: u8,
) -> anyhow::Result<()> {
    let Some(node) = nodes.get(name) else { return Ok(()) };
    if node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some() {
        return Ok(());
    }
    let api: Api<Node> = Api::all(client.clone());
    // the informer may lag behind our own last allocation: read the truth
    let taken: HashSet<String> =
        api.list(&Default::default()).await?.items.iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.clone()).collect();
    let subnets = cidr.subnets(mask).context("splitting the cluster CIDR")?;
    let Some(free) = subnets.map(|s| s.to_string()).find(|s| !taken.contains(s)) else {
        anyhow::bail!("no pod CIDR left in {cidr} for node {name}");
    };
    let patch = json!({"spec": {"podCIDR": free, "podCIDRs": [free]}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.context("setting the pod CIDR")?;
    tracing::info!(node = name, cidr = %free, "pod CIDR allocated");
    Ok(())
}

// ---- pod garbage collection ----

pub fn start_podgc(ctx: &Ctx) -> anyhow::Result<()> {
    let (nodes, pods, client) = (ctx.informer::<Node>(), ctx.informer::<Pod>(), ctx.client.clone());
    ctx.run_loop("pod_gc", Duration::from_secs(20), move || {
        let (nodes, pods, client) = (nodes.clone(), pods.clone(), client.clone());
        async move { collect_pods(&nodes, &pods, &client).await }
    });
    Ok(())
}

async fn collect_pods(nodes: &Informer<Node>, pods: &Informer<Pod>, client: &Client) -> anyhow::Result<()> {
    let node_names: HashSet<String> = nodes.list().iter().map(|n| n.name_any()).collect();
    for pod in pods.list() {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let orphaned = node.as_ref().is_some_and(|n| !node_names.contains(n));
        let unscheduled_terminating = node.is_none() && pod.metadata.deletion_timestamp.is_some();
        if !orphaned && !unscheduled_terminating {
            continue;
        }
        // the informer may not have seen a new node yet: ask before deleting
        if let Some(n) = &node
            && Api::<Node>::all(client.clone()).get_opt(n).await?.is_some()
        {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => tracing::info!(pod = %pod.name_any(), node = ?node, "garbage-collected an orphaned pod"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).context("deleting an orphaned pod"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, secs_ago: i64) -> Taint {
        let added = Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs_ago)).unwrap();
        Taint { key: key.into(), effect: "NoExecute".into(), value: None, time_added: Some(Time(added)) }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let taints = [taint(UNREACHABLE, 10)];
        assert_eq!(eviction_deadline(&taints, &[]), Some(None), "no toleration: now");
        assert_eq!(eviction_deadline(&taints, &[toleration(UNREACHABLE, None)]), None, "forever");
        let due = eviction_deadline(&taints, &[toleration(UNREACHABLE, Some(5))]).unwrap().unwrap();
        assert!(due <= Timestamp::now(), "5 s after a taint 10 s old has passed");
        let later = eviction_deadline(&taints, &[toleration(UNREACHABLE, Some(300))]).unwrap().unwrap();
        assert!(later > Timestamp::now());
    }
}
