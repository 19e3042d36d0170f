//! `ferrokube scheduler` (kube-scheduler): a client of the API that places pending pods.
//!
//! Two watches (all pods, all nodes; `kube::runtime::watcher`, restarted with backoff on
//! errors) feed the `Cache` (nodes and the pods counted on them) and the `Queue`
//! (pending pods of this scheduler). One loop pops the next pod, runs the profile's
//! filters and scores over the cache (`framework::schedule`) and assumes the pod on the
//! chosen node, all under the cache lock; the binding, the `PodScheduled` condition and
//! the events are written by tasks of their own, so a slow API delays no decision.

mod api;
mod cache;
mod config;
mod framework;
#[cfg(test)]
mod golden;
mod http;
mod metrics;
mod plugins;
mod preemption;
mod queue;
mod resources;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::leader_election::{self, LeaderElectionArgs, LeaderElector};
use cache::{AssumedVolumes, Cache};
use framework::{FitError, PodInfo, Profile, ScheduleError, pod_key};
use metrics::{Metrics, Outcome};
use plugins::VolumeBinding;
use preemption::Candidate;

/// How long binding waits for a pod's claims to be bound (upstream's bindTimeoutSeconds).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);
use queue::Queue;

/// Whether the pod's nodeSelector and required node affinity admit the node, by the
/// scheduler's own rules (for the DaemonSet controller, which places pods as upstream's
/// does with the scheduler's predicates).
pub(crate) fn node_affinity_admits(pod: Arc<Pod>, node: Arc<Node>) -> bool {
    let mut info = framework::NodeInfo::new(node.metadata.name.as_deref().unwrap_or_default());
    info.set_node(node);
    plugins::required_matches(&PodInfo::new(pod), &info)
}

pub(crate) use plugins::tolerates;

#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// kubeconfig to reach the API server (default: the config file's
    /// clientConnection.kubeconfig, else in-cluster or $KUBECONFIG/~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file; flags given
    /// on the command line override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Schedule the pods whose spec.schedulerName is this name (default: the config's
    /// profile's schedulerName, else default-scheduler).
    #[arg(long)]
    pub scheduler_name: Option<String>,
    /// Address of the health and metrics endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// HTTPS port of /healthz, /readyz and /metrics (a self-signed certificate); 0 turns it off.
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// State shared by the watches, the scheduling loop and the HTTP endpoint. Lock order:
/// cache before queue; neither is held across an await.
pub struct Scheduler {
    /// The profiles by schedulerName.
    profiles: BTreeMap<String, Profile>,
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    wake: Notify,
    metrics: Metrics,
    pods_synced: AtomicBool,
    nodes_synced: AtomicBool,
    writer: api::Writer,
    /// Present when leader election is on; only the leader runs the scheduling loop.
    elector: Option<Arc<LeaderElector>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The pod's spec.schedulerName (the profile it belongs to).
pub fn scheduler_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler")
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::KubeSchedulerConfiguration::default(),
    };
    let mut election = leader_election::Config::defaults("kube-scheduler");
    file.apply_leader_election(&mut election)?;
    election.override_with(&args.leader_election);
    election.validate()?;
    let profiles = file.build_profiles(args.scheduler_name.as_deref()).context("building the scheduling profiles")?;
    let names: Vec<String> = profiles.iter().map(|(n, _)| n.clone()).collect();
    let kubeconfig = args.kubeconfig.clone().or_else(|| file.client_connection.kubeconfig.clone());
    let client =
        crate::cli::kube_client(kubeconfig.as_ref(), "kube-scheduler").await.context("building the API client")?;
    // the lease gets a client (a connection) of its own, as upstream's leader-election
    // clientset: thousands of bindings queued on the main one must not delay a renewal
    let elector = match election.enabled {
        true => {
            let lease_client = crate::cli::kube_client(kubeconfig.as_ref(), "kube-scheduler")
                .await
                .context("building the lease client")?;
            Some(Arc::new(LeaderElector::new(lease_client, election)?))
        }
        false => None,
    };
    let sched = Arc::new(Scheduler {
        profiles: profiles.into_iter().collect(),
        cache: Mutex::default(),
        queue: Mutex::default(),
        wake: Notify::new(),
        metrics: Metrics::new(&names),
        pods_synced: AtomicBool::new(false),
        nodes_synced: AtomicBool::new(false),
        writer: api::Writer::new(client.clone()),
        elector: elector.clone(),
    });
    if args.secure_port != 0 {
        let addr = std::net::SocketAddr::new(args.bind_address, args.secure_port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tokio::spawn(http::serve(listener, sched.clone()));
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics over HTTPS");
    }
    let nodes = sched.clone();
    tokio::spawn(inform(Api::<Node>::all(client.clone()), move |ev| nodes.node_event(ev)));
    let namespaces = sched.clone();
    tokio::spawn(inform(Api::<Namespace>::all(client.clone()), move |ev| namespaces.namespace_event(ev)));
    let claims = sched.clone();
    tokio::spawn(inform(Api::<PersistentVolumeClaim>::all(client.clone()), move |ev| claims.claim_event(ev)));
    let volumes = sched.clone();
    tokio::spawn(inform(Api::<PersistentVolume>::all(client.clone()), move |ev| volumes.volume_event(ev)));
    let classes = sched.clone();
    tokio::spawn(inform(Api::<StorageClass>::all(client.clone()), move |ev| classes.class_event(ev)));
    // the selectors of the workloads, for PodTopologySpread's system defaults
    sched.clone().inform_workloads(Api::<Service>::all(client.clone()), |s| match_labels(&s.spec.as_ref()?.selector));
    sched.clone().inform_workloads(Api::<ReplicationController>::all(client.clone()), |rc| {
        match_labels(&rc.spec.as_ref()?.selector)
    });
    sched
        .clone()
        .inform_workloads(Api::<ReplicaSet>::all(client.clone()), |rs| Some(rs.spec.as_ref()?.selector.clone()));
    sched
        .clone()
        .inform_workloads(Api::<StatefulSet>::all(client.clone()), |ss| Some(ss.spec.as_ref()?.selector.clone()));
    let budgets = sched.clone();
    tokio::spawn(inform(Api::<PodDisruptionBudget>::all(client.clone()), move |ev| budgets.budget_event(ev)));
    let pods = sched.clone();
    tokio::spawn(inform(Api::<Pod>::all(client), move |ev| pods.pod_event(ev)));
    // the counts of open event series reach the API every 30 minutes, as client-go's
    let events = sched.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(30 * 60));
        every.tick().await;
        loop {
            every.tick().await;
            events.writer.refresh_series().await;
        }
    });
    tracing::info!(profiles = ?names, "scheduler started");
    // the watches run on standbys too (a warm cache for a fast take-over); only the
    // leader pops pods, so a standby never binds
    let work = async {
        sched.clone().schedule_loop().await;
        Ok(())
    };
    LeaderElector::run_until_shutdown(elector.as_deref(), work).await
}

/// A Service's or ReplicationController's selector (a label map) as a LabelSelector.
fn match_labels(labels: &Option<std::collections::BTreeMap<String, String>>) -> Option<LabelSelector> {
    labels.clone().map(|labels| LabelSelector { match_labels: Some(labels), ..Default::default() })
}

/// What a watch reports, after re-lists are resolved into deletions.
pub enum Change<K> {
    Applied(K),
    /// The key (`namespace/name`; `/name` for cluster-scoped kinds) of a deleted object.
    Deleted(String),
    /// The first complete list is in.
    Synced,
}

/// Follow one resource with a watcher (list, then watch; re-listed with backoff after
/// errors), turning a re-list into applies plus deletions of what it no longer holds.
async fn inform<K>(api: Api<K>, mut handle: impl FnMut(Change<K>))
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // the keys of the objects as last listed or watched
    let mut known: HashSet<String> = HashSet::new();
    let mut relisted: Option<HashSet<String>> = None;
    let key = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => relisted = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                relisted.get_or_insert_with(HashSet::new).insert(key(&obj));
                known.insert(key(&obj));
                handle(Change::Applied(obj));
            }
            Ok(watcher::Event::InitDone) => {
                let listed = relisted.take().unwrap_or_default();
                for gone in known.difference(&listed) {
                    handle(Change::Deleted(gone.clone()));
                }
                known = listed;
                tracing::debug!(kind, objects = known.len(), "listed");
                handle(Change::Synced);
            }
            Ok(watcher::Event::Apply(obj)) => {
                known.insert(key(&obj));
                handle(Change::Applied(obj));
            }
            Ok(watcher::Event::Delete(obj)) => {
                known.remove(&key(&obj));
                handle(Change::Deleted(key(&obj)));
            }
            Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

impl Scheduler {
    fn ready(&self) -> bool {
        self.pods_synced.load(Ordering::Relaxed) && self.nodes_synced.load(Ordering::Relaxed)
    }

    /// Ours to place: our scheduler name, not being deleted, and no scheduling gates left
    /// (upstream's SchedulingGates plug-in keeps gated pods out of the queue).
    fn responsible(&self, pod: &Pod) -> bool {
        let spec = pod.spec.as_ref();
        let name = scheduler_name(pod);
        let gated = spec.and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty());
        self.profiles.contains_key(name) && pod.metadata.deletion_timestamp.is_none() && !gated
    }

    fn cluster_event(&self) {
        lock(&self.queue).cluster_event(Instant::now());
        self.wake.notify_one();
    }

    fn node_event(&self, change: Change<Node>) {
        match change {
            Change::Applied(node) => {
                let name = node.name_any();
                let (relevant, bad) = lock(&self.cache).apply_node(Arc::new(node));
                if !bad.is_empty() {
                    tracing::warn!(node = %name, entries = ?bad, "node allocatable has malformed quantities; counting them as zero");
                }
                if relevant {
                    tracing::debug!(node = %name, "node added or changed");
                    self.cluster_event();
                }
            }
            Change::Deleted(key) => lock(&self.cache).delete_node(key.trim_start_matches('/')),
            Change::Synced => self.nodes_synced.store(true, Ordering::Relaxed),
        }
    }

    /// Namespace labels, for pod affinity terms' namespaceSelector.
    fn namespace_event(&self, change: Change<Namespace>) {
        match change {
            Change::Applied(ns) => {
                let labels = ns.metadata.labels.clone().unwrap_or_default();
                if lock(&self.cache).apply_namespace(&ns.name_any(), labels) {
                    self.cluster_event();
                }
            }
            Change::Deleted(key) => lock(&self.cache).delete_namespace(key.trim_start_matches('/')),
            Change::Synced => {}
        }
    }

    /// Claims and volumes, for the volume plug-ins: a new or changed one may let a pod fit.
    fn claim_event(&self, change: Change<PersistentVolumeClaim>) {
        match change {
            Change::Applied(claim) => {
                let key = format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any());
                lock(&self.cache).apply_claim(key, Arc::new(claim));
                self.cluster_event();
            }
            Change::Deleted(key) => lock(&self.cache).delete_claim(&key),
            Change::Synced => {}
        }
    }

    /// Follow one kind of workload, keeping its selectors (`selector` reads one).
    fn inform_workloads<K>(self: Arc<Self>, api: Api<K>, selector: fn(&K) -> Option<LabelSelector>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let kind = K::kind(&()).to_string();
        tokio::spawn(inform(api, move |change| {
            let mut cache = lock(&self.cache);
            match change {
                Change::Applied(obj) => {
                    let ns = obj.namespace().unwrap_or_default();
                    cache.workloads.apply(&ns, format!("{kind}/{}", obj.name_any()), selector(&obj));
                }
                Change::Deleted(key) => {
                    let (ns, name) = key.split_once('/').unwrap_or_default();
                    cache.workloads.delete(ns, &format!("{kind}/{name}"));
                }
                Change::Synced => {}
            }
        }));
    }

    /// Disruption budgets, for preemption's choice of victims.
    fn budget_event(&self, change: Change<PodDisruptionBudget>) {
        let mut cache = lock(&self.cache);
        match change {
            Change::Applied(pdb) => {
                let key = format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any());
                let spec = pdb.spec.clone().unwrap_or_default();
                let status = pdb.status.clone().unwrap_or_default();
                // policy/v1: no selector selects nothing
                let Some(selector) = spec.selector else {
                    cache.budgets.delete(&key);
                    return;
                };
                let budget = framework::Budget {
                    namespace: pdb.namespace().unwrap_or_default(),
                    selector,
                    allowed: status.disruptions_allowed,
                    disrupted: status.disrupted_pods.unwrap_or_default().into_keys().collect(),
                };
                cache.budgets.apply(key, budget);
            }
            Change::Deleted(key) => cache.budgets.delete(&key),
            Change::Synced => {}
        }
    }

    fn class_event(&self, change: Change<StorageClass>) {
        self.cluster_scoped(change, Cache::apply_class, Cache::delete_class);
    }

    fn volume_event(&self, change: Change<PersistentVolume>) {
        self.cluster_scoped(change, Cache::apply_volume, Cache::delete_volume);
    }

    /// A cluster-scoped object the filters read: a new or changed one may let a pod fit.
    fn cluster_scoped<K: Resource>(
        &self,
        change: Change<K>,
        apply: fn(&mut Cache, String, Arc<K>),
        delete: fn(&mut Cache, &str),
    ) {
        match change {
            Change::Applied(obj) => {
                apply(&mut lock(&self.cache), obj.name_any(), Arc::new(obj));
                self.cluster_event();
            }
            Change::Deleted(key) => delete(&mut lock(&self.cache), key.trim_start_matches('/')),
            Change::Synced => {}
        }
    }

    fn pod_event(&self, change: Change<Pod>) {
        let pod = match change {
            Change::Synced => {
                self.pods_synced.store(true, Ordering::Relaxed);
                return;
            }
            Change::Deleted(key) => {
                lock(&self.queue).remove(&key);
                if lock(&self.cache).remove_pod(&key) {
                    self.cluster_event();
                }
                return;
            }
            Change::Applied(pod) => pod,
        };
        let key = pod_key(&pod);
        if let Some(node) = bound_node(&pod) {
            let node = node.to_string();
            lock(&self.queue).remove(&key);
            if terminal(&pod) {
                if lock(&self.cache).remove_pod(&key) {
                    self.cluster_event();
                }
            } else {
                lock(&self.cache).apply_bound_pod(Arc::new(PodInfo::new(Arc::new(pod))), &node);
            }
            return;
        }
        let ours = self.responsible(&pod) && !terminal(&pod);
        let pod = Arc::new(pod);
        let assumed = {
            let mut cache = lock(&self.cache);
            if ours {
                cache.apply_pending_pod(&pod);
            }
            cache.is_assumed(&key)
        };
        let mut queue = lock(&self.queue);
        if !assumed && ours {
            queue.add_or_update(pod, Instant::now());
            drop(queue);
            self.wake.notify_one();
        } else if !assumed {
            if queue.contains(&key) {
                tracing::debug!(pod = %key, "no longer ours to schedule");
            }
            queue.remove(&key);
        }
    }

    /// The next pod to try, waiting for one (or for a backoff to end).
    async fn pop(&self) -> queue::Popped {
        loop {
            let next_backoff = {
                let mut queue = lock(&self.queue);
                let next = queue.flush(Instant::now());
                if let Some(popped) = queue.pop() {
                    return popped;
                }
                next
            };
            // retry at least every second, as upstream flushes its backoff queue
            let wait = next_backoff.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()));
            let _ = tokio::time::timeout(wait.min(Duration::from_secs(1)), self.wake.notified()).await;
        }
    }

    async fn schedule_loop(self: Arc<Self>) {
        while !self.ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("caches synced; scheduling");
        let mut start_index = 0usize;
        loop {
            let popped = self.pop().await;
            self.schedule_one(popped, &mut start_index);
            // a burst of pods must not keep this worker from the watches and bindings
            tokio::task::yield_now().await;
        }
    }

    /// One attempt: decide and assume under the cache lock, then hand the writes to a task.
    fn schedule_one(self: &Arc<Self>, popped: queue::Popped, start_index: &mut usize) {
        let started = Instant::now();
        let info = Arc::new(PodInfo::new(popped.pod.clone()));
        let key = info.key.clone();
        let profile_name = scheduler_name(&popped.pod).to_string();
        let Some(profile) = self.profiles.get(&profile_name) else {
            lock(&self.queue).done(&key);
            return;
        };
        let mut lower_nominations = Vec::new();
        let mut volumes = None;
        let decision = {
            let mut cache = lock(&self.cache);
            for expired in cache.expire(started) {
                tracing::warn!(pod = %expired, "assumed pod never showed up bound; forgetting it");
            }
            if cache.is_counted(&key) {
                // bound by someone else while it waited in the queue
                drop(cache);
                lock(&self.queue).done(&key);
                return;
            }
            let snapshot = cache.snapshot();
            let decision = framework::schedule(profile, &snapshot, &info, start_index);
            // the claims that bind with the pod on its node (VolumeBinding's Reserve)
            let plan = match &decision {
                Ok(p) if profile.filters.iter().any(|f| f.name() == "VolumeBinding") => {
                    snapshot.node(&p.node).and_then(|n| VolumeBinding.plan(&snapshot, &info, n).ok())
                }
                _ => None,
            };
            let plan = plan.filter(|p| !p.is_empty()).map(|plan| {
                let (pvs, claims) =
                    plugins::assumed_volumes(cache.volumes(), &plan, decision.as_ref().map_or("", |p| &p.node));
                (plan, pvs, claims)
            });
            drop(snapshot);
            if let Some((plan, pvs, claims)) = plan {
                volumes = Some((plan, cache.assume_volumes(pvs, claims)));
            }
            match &decision {
                Ok(placement) => cache.assume(info.clone(), &placement.node),
                // preemption chose a node: the pod's claim on it counts from now on
                Err(ScheduleError::Fit(FitError { candidate: Some(c), .. })) => {
                    lower_nominations = cache.nominate(info.clone(), &c.node);
                }
                Err(_) => {}
            }
            decision
        };
        match decision {
            Ok(placement) => {
                lock(&self.queue).done(&key);
                tracing::debug!(pod = %key, node = %placement.node, feasible = placement.feasible, "assumed; binding");
                let sched = self.clone();
                tokio::spawn(async move { sched.bind(popped, placement.node, started, volumes).await });
            }
            Err(err) => {
                lock(&self.queue).unschedulable(&key, Instant::now());
                self.metrics.observe(&profile_name, Outcome::Unschedulable, started.elapsed());
                let message = err.to_string();
                tracing::info!(pod = %key, attempts = popped.attempts, reason = %message, "unschedulable");
                let candidate = match err {
                    ScheduleError::Fit(FitError { candidate, .. }) => {
                        self.metrics.preemption_attempt();
                        candidate
                    }
                    ScheduleError::NoNodes => None,
                };
                let sched = self.clone();
                let pod = popped.pod;
                tokio::spawn(async move {
                    let nominated = match candidate {
                        Some(c) => Some(sched.preempt(&pod, *c, lower_nominations).await),
                        None => None,
                    };
                    sched.report_failure(&pod, "Unschedulable", &message, nominated.as_deref()).await
                });
            }
        }
    }

    /// Carry out a preemption decided for `pod`: evict the victims (all at once), and end
    /// the nominations of lower-priority pods to the node. The pod waits in the queue until
    /// the victims' deletions wake it; returns the nominated node.
    async fn preempt(&self, pod: &Pod, candidate: Candidate, lower: Vec<Arc<PodInfo>>) -> String {
        let key = pod_key(pod);
        let node = candidate.node;
        let victims: Vec<&str> = candidate.victims.iter().map(|v| v.key.as_str()).collect();
        tracing::info!(pod = %key, node = %node, ?victims, "preempting");
        let evictions = candidate.victims.iter().map(|v| async {
            if let Err(e) = self.writer.preempt(&v.pod, pod, &node).await {
                tracing::warn!(pod = %key, victim = %v.key, error = %e, "cannot preempt");
            }
        });
        futures::future::join_all(evictions).await;
        for other in lower {
            if let Err(e) = self.writer.clear_nomination(&other.pod).await {
                tracing::warn!(pod = %other.key, error = %e, "cannot clear the nominated node");
            }
        }
        node
    }

    async fn bind(
        &self,
        popped: queue::Popped,
        node: String,
        started: Instant,
        volumes: Option<(plugins::VolumePlan, AssumedVolumes)>,
    ) {
        let pod = popped.pod;
        let key = pod_key(&pod);
        let (plan, assumed) = volumes.unzip();
        let volumes_bound = match &plan {
            Some(plan) => self.bind_volumes(plan, &node).await,
            None => Ok(()),
        };
        let result = match volumes_bound {
            Ok(()) => self.writer.bind(&pod, &node).await.map_err(|e| {
                let deleted = matches!(&e, kube::Error::Api(s) if s.code == 404);
                (deleted, format!("binding rejected: {e}"))
            }),
            Err(why) => Err((false, why)),
        };
        match result {
            Ok(()) => {
                lock(&self.cache).finish_binding(&key, Instant::now());
                self.metrics.observe(scheduler_name(&pod), Outcome::Scheduled, started.elapsed());
                tracing::info!(pod = %key, node = %node, "bound");
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let note = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
                if let Err(e) = self.writer.event(&pod, None, "Normal", "Scheduled", "Binding", &note).await {
                    tracing::warn!(pod = %key, error = %e, "cannot write the Scheduled event");
                }
            }
            Err((deleted, why)) => {
                // a pod the watch already shows bound (by this binding or another) stays
                let bound = {
                    let mut cache = lock(&self.cache);
                    cache.forget(&key);
                    if let Some(assumed) = assumed {
                        cache.revert_volumes(assumed);
                    }
                    cache.is_counted(&key)
                };
                self.metrics.observe(scheduler_name(&pod), Outcome::Error, started.elapsed());
                tracing::warn!(pod = %key, node = %node, error = %why, "binding failed");
                // a deleted pod is done with; anything else (a conflict with a concurrent
                // write included) is retried after backoff, until the watch shows it bound
                if !deleted && !bound {
                    lock(&self.queue).error(pod.clone(), popped.attempts, Instant::now());
                    self.report_failure(&pod, "SchedulerError", &why, None).await;
                }
            }
        }
    }

    /// Upstream's VolumeBinding PreBind: write the volumes' claimRefs and the claims'
    /// selected node, then wait (at most upstream's bindTimeoutSeconds) until the
    /// PersistentVolume controller or the provisioner has bound every claim.
    async fn bind_volumes(&self, plan: &plugins::VolumePlan, node: &str) -> Result<(), String> {
        let claim = |key: &str| lock(&self.cache).volumes().claims.get(key).cloned();
        for (key, volume) in &plan.bind {
            let Some(c) = claim(key) else { return Err(format!("claim {key} is gone")) };
            self.writer.bind_volume(volume, &c).await.map_err(|e| format!("binding volume {volume} to {key}: {e}"))?;
        }
        for key in &plan.provision {
            let Some(c) = claim(key) else { return Err(format!("claim {key} is gone")) };
            self.writer.select_node(&c, node).await.map_err(|e| format!("selecting node for {key}: {e}"))?;
        }
        let keys: Vec<String> =
            plan.bind.iter().map(|(k, _)| k.clone()).chain(plan.provision.iter().cloned()).collect();
        let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
        while plugins::unbound_claims(lock(&self.cache).volumes(), &keys) > 0 {
            if Instant::now() >= deadline {
                return Err(format!("binding volumes: timed out waiting for the claims {keys:?} to be bound"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The PodScheduled=False condition (with the nominated node, after a preemption) and
    /// a FailedScheduling event.
    async fn report_failure(&self, pod: &Pod, reason: &str, message: &str, nominated: Option<&str>) {
        let key = pod_key(pod);
        // placed by a later attempt meanwhile (or gone): the failure is old news
        let placed = lock(&self.cache).is_assumed(&key);
        if placed || !lock(&self.queue).contains(&key) {
            return;
        }
        if let Err(e) = self.writer.event(pod, None, "Warning", "FailedScheduling", "Scheduling", message).await {
            tracing::warn!(pod = %key, error = %e, "cannot write the FailedScheduling event");
        }
        if let Err(e) = self.writer.set_unschedulable(pod, reason, message, nominated).await {
            tracing::warn!(pod = %key, error = %e, "cannot set the PodScheduled condition");
        }
    }
}
