//! The DaemonSet controller (upstream's daemonset-controller): one pod per eligible node
//! (`placement.rs`), each pinned to its node by node affinity for the scheduler to bind.
//! Pods on nodes that no longer fit are deleted, failed pods replaced, duplicates
//! removed. A template change makes a ControllerRevision (`history.rs`); RollingUpdate
//! replaces old pods within maxUnavailable (delete, then create) or maxSurge (create the
//! new pod beside the old one, delete the old once the new is available); OnDelete
//! leaves old pods until someone deletes them.

mod placement;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::history::{self, REVISION_LABEL};
use super::runtime::{Ctx, Event, Informer, Recorder, WorkQueue, key_of, split_key};
use super::workload::{self, Expectations};
use placement::Fit;

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("daemonset");
    let sets = ctx.informer::<DaemonSet>();
    sets.on_change(workload::enqueue(queue.clone()));
    let pods = ctx.informer::<Pod>();
    pods.on_change(workload::enqueue_owner(queue.clone(), "DaemonSet"));
    let nodes = ctx.informer::<Node>();
    let (q, all) = (queue.clone(), sets.clone());
    nodes.on_change(move |ev| {
        if placement_may_change(ev) {
            all.list().iter().for_each(|ds| q.add(key_of(ds.as_ref())));
        }
    });
    let this = Controller {
        client: ctx.client.clone(),
        sets,
        pods,
        nodes,
        revisions: ctx.informer::<ControllerRevision>(),
        recorder: ctx.recorder("daemonset-controller"),
        expectations: Expectations::default(),
        queue: queue.clone(),
    };
    workload::run(ctx, queue, 2, this);
    Ok(())
}

/// A node came or went, or its labels, taints or schedulability changed.
fn placement_may_change(ev: &Event<Node>) -> bool {
    match ev {
        Event::Updated { old, new } => old.metadata.labels != new.metadata.labels || old.spec != new.spec,
        _ => true,
    }
}

struct Controller {
    client: Client,
    sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    recorder: Recorder,
    expectations: Expectations,
    queue: Arc<WorkQueue>,
}

/// One node as a sync sees it: how the DaemonSet fits it, and its daemon pods.
struct NodeState {
    fit: Fit,
    pods: Vec<Arc<Pod>>,
}

fn hash_of(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map_or("", String::as_str)
}

/// maxUnavailable and maxSurge against the desired count (percentages round up), at
/// least one unavailable when both come to zero.
fn budgets(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let rolling = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
    let scaled = |v: Option<&IntOrString>, default: i32| match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(p)) => {
            let pct: i32 = p.trim_end_matches('%').parse().unwrap_or(0);
            (pct * desired + 99) / 100
        }
        None => default,
    };
    let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), 0);
    let unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), 1);
    match (unavailable, surge) {
        (0, 0) => (1, 0),
        other => other,
    }
}

/// Pods of one node beyond one per revision (the oldest stays), and old-revision pods
/// beyond one when no current one (a surge) is there.
fn duplicates(pods: &[&Arc<Pod>], hash: &str) -> Vec<Arc<Pod>> {
    let (new, old): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) = pods.iter().copied().partition(|p| hash_of(p) == hash);
    let keep_old = if new.is_empty() { 1 } else { old.len() };
    new.into_iter().skip(1).chain(old.into_iter().skip(keep_old)).cloned().collect()
}

impl workload::Reconcile for Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(ds) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let (ns, _) = split_key(key);
        let selector = ds.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        // expectations before the pods: see `job::Census::settled`
        let settled = self.expectations.satisfied(key, &self.pods, ns);
        let claimed = workload::claim_pods(&self.client, &self.pods, ds.as_ref(), &selector, |_| true).await?;
        let mut collisions = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let rev_api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), ns);
        let history = history::owned(&self.revisions, ds.as_ref());
        let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let update = history::current(&rev_api, ds.as_ref(), &template, &history, &mut collisions).await?;
        let hash = history::hash_of(&update);
        let template_pod = Arc::new(placement::template_pod(&ds, &hash));
        let nodes = self.node_states(&template_pod, claimed);
        if settled {
            self.manage(key, &ds, &template_pod, &nodes, &hash).await?;
        }
        let in_use: Vec<String> = nodes.values().flat_map(|n| n.pods.iter().map(|p| hash_of(p).to_string())).collect();
        let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        history::truncate(
            &rev_api,
            &history::owned(&self.revisions, ds.as_ref()),
            &[in_use, vec![hash.clone()]].concat(),
            limit,
        )
        .await?;
        let status = self.status(&ds, &nodes, &hash, collisions);
        if ds.status.as_ref() != Some(&status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            let name = ds.metadata.name.as_deref().unwrap_or_default();
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await?;
        }
        Ok(())
    }
}

impl Controller {
    /// Every node, with the DaemonSet's fit and its live daemon pods (`pods`) on it.
    fn node_states(&self, template_pod: &Arc<Pod>, pods: Vec<Arc<Pod>>) -> BTreeMap<String, NodeState> {
        let mut states: BTreeMap<String, NodeState> = self
            .nodes
            .list()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    NodeState { fit: placement::fit(template_pod, n), pods: Vec::new() },
                )
            })
            .collect();
        for pod in pods {
            let node = placement::node_of(&pod).and_then(|n| states.get_mut(&n));
            if let Some(state) = node.filter(|_| !workload::is_terminating(&pod)) {
                state.pods.push(pod);
            }
        }
        for state in states.values_mut() {
            state.pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        }
        states
    }

    /// Create, delete and roll pods towards one up-to-date pod per fitting node.
    async fn manage(
        &self,
        key: &str,
        ds: &DaemonSet,
        template_pod: &Pod,
        nodes: &BTreeMap<String, NodeState>,
        hash: &str,
    ) -> anyhow::Result<()> {
        let (mut create, mut delete) = (Vec::new(), Vec::new());
        for (name, state) in nodes {
            let (failed, running): (Vec<_>, Vec<_>) = state.pods.iter().partition(|p| workload::phase(p) == "Failed");
            for pod in &failed {
                let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                let message = format!("Found failed daemon pod {ns}/{pod_name} on node {name}, will try to kill it");
                self.recorder.warning(ds, "FailedDaemonPod", message);
            }
            delete.extend(failed.into_iter().cloned());
            if !state.fit.may_stay {
                delete.extend(running.into_iter().cloned());
            } else if running.is_empty() && state.fit.should_run {
                create.push(name.clone());
            } else {
                delete.extend(duplicates(&running, hash));
            }
        }
        if create.is_empty() && delete.is_empty() {
            let (more_create, more_delete) = self.rollout(ds, nodes, hash);
            create = more_create;
            delete = more_delete;
        }
        self.delete_pods(key, ds, &delete).await?;
        self.create_pods(key, ds, template_pod, &create).await
    }

    /// RollingUpdate: the pods to create (surge) and delete to move nodes to `hash`.
    fn rollout(&self, ds: &DaemonSet, nodes: &BTreeMap<String, NodeState>, hash: &str) -> (Vec<String>, Vec<Arc<Pod>>) {
        let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref());
        if strategy.unwrap_or("RollingUpdate") != "RollingUpdate" {
            return (Vec::new(), Vec::new());
        }
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Timestamp::now();
        let available = |p: &Pod| workload::is_available(p, min_ready, now);
        let wanted: Vec<(&String, &NodeState)> =
            nodes.iter().filter(|(_, s)| s.fit.should_run || !s.pods.is_empty()).collect();
        let (max_unavailable, max_surge) = budgets(ds, wanted.len() as i32);
        let mut unavailable = wanted.iter().filter(|(_, s)| !s.pods.iter().any(|p| available(p))).count() as i32;
        let mut surging = wanted.iter().filter(|(_, s)| s.pods.len() > 1).count() as i32;
        let (mut create, mut delete) = (Vec::new(), Vec::new());
        for (name, state) in wanted {
            let (new, old): (Vec<_>, Vec<_>) = state.pods.iter().partition(|p| hash_of(p) == hash);
            if old.is_empty() {
                continue;
            }
            let new_available = new.iter().any(|p| available(p));
            let old_available = old.iter().any(|p| available(p));
            if new_available || !old_available {
                // the node is no worse off without them
                delete.extend(old.into_iter().cloned());
            } else if max_surge > 0 {
                if new.is_empty() && surging < max_surge {
                    create.push(name.clone());
                    surging += 1;
                }
            } else if unavailable < max_unavailable {
                delete.extend(old.into_iter().cloned());
                unavailable += 1;
            }
        }
        (create, delete)
    }

    async fn create_pods(&self, key: &str, ds: &DaemonSet, template_pod: &Pod, nodes: &[String]) -> anyhow::Result<()> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for node in nodes {
            let pod = placement::on_node(template_pod.clone(), node);
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    let name = created.metadata.name.unwrap_or_default();
                    self.expectations.created(key, &name);
                    self.recorder.normal(ds, "SuccessfulCreate", format!("Created pod: {name}"));
                }
                Err(e) => {
                    self.recorder.warning(ds, "FailedCreate", format!("Error creating: {e}"));
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &str, ds: &DaemonSet, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        workload::delete_owned_pods(&self.client, &self.recorder, &self.expectations, key, ds, pods).await
    }

    fn status(
        &self,
        ds: &DaemonSet,
        nodes: &BTreeMap<String, NodeState>,
        hash: &str,
        collisions: i32,
    ) -> DaemonSetStatus {
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Timestamp::now();
        let count = |f: &dyn Fn(&NodeState) -> bool| nodes.values().filter(|s| f(s)).count() as i32;
        let any = |s: &NodeState, f: &dyn Fn(&Pod) -> bool| s.pods.iter().any(|p| f(p));
        let desired = count(&|s| s.fit.should_run);
        let available = count(&|s| s.fit.should_run && any(s, &|p| workload::is_available(p, min_ready, now)));
        let ready = count(&|s| s.fit.should_run && any(s, &|p| workload::is_ready(p)));
        if available < ready {
            self.queue.add_after(key_of(ds), Duration::from_secs(min_ready.max(1) as u64));
        }
        DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: count(&|s| s.fit.should_run && !s.pods.is_empty()),
            number_misscheduled: count(&|s| !s.fit.should_run && !s.pods.is_empty()),
            number_ready: ready,
            number_available: Some(available),
            number_unavailable: Some(desired - available),
            updated_number_scheduled: Some(count(&|s| s.fit.should_run && any(s, &|p| hash_of(p) == hash))),
            observed_generation: ds.metadata.generation,
            collision_count: Some(collisions),
            conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        }
    }
}
