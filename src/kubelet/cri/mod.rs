//! The real runtime: pods run as CRI sandboxes and containers (containerd). The pods
//! bound to the node are watched and each gets a worker (`worker.rs`) that converges
//! the runtime to it; housekeeping removes the sandboxes of pods that are no longer
//! ours (also those left from before a kubelet restart) and turns the node NotReady
//! while the runtime does not answer or its network is not ready.

mod backoff;
pub mod client;
mod config;
mod credentials;
pub mod exec;
pub mod labels;
mod observe;
mod pull;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1::{ListPodSandboxRequest, RemovePodSandboxRequest, StatusRequest, StopPodSandboxRequest};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use super::node::Node;
use observe::Snapshot;
pub use worker::Context;

/// How often orphans are looked for and the runtime's health is checked.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// The node's NotReady message while the runtime does not answer.
const RUNTIME_DOWN: &str = "container runtime is down";

/// The NotReady message for a runtime whose network is not ready (no CNI config yet, as
/// our containerd before the kubelet hands it the podCIDR), worded as upstream's kubelet.
fn network_problem(status: Option<&k8s_cri::v1::RuntimeStatus>) -> Option<String> {
    let network = status?.conditions.iter().find(|c| c.r#type == "NetworkReady")?;
    (!network.status).then(|| {
        format!(
            "container runtime network not ready: NetworkReady=false reason:{} message:{}",
            network.reason, network.message
        )
    })
}

type Workers = Arc<Mutex<HashMap<String, watch::Sender<Option<Pod>>>>>;

pub struct Runtime {
    ctx: Arc<Context>,
    node: Node,
    workers: Workers,
    relist: watch::Sender<Arc<Snapshot>>,
    /// The first list of pods is in: every pod of ours has a worker.
    synced: AtomicBool,
}

impl Runtime {
    pub fn new(ctx: Context, node: Node) -> Arc<Runtime> {
        let empty = Snapshot { taken: std::time::Instant::now(), pods: HashMap::new() };
        Arc::new(Runtime {
            ctx: Arc::new(ctx),
            node,
            workers: Workers::default(),
            relist: watch::Sender::new(Arc::new(empty)),
            synced: AtomicBool::new(false),
        })
    }

    /// Follow the node's pods until the process ends.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        tokio::spawn(self.clone().housekeeping());
        tokio::spawn(self.clone().relist());
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.ctx.node_name));
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => self.route(Some(pod.clone()), &pod),
                Ok(watcher::Event::Delete(pod)) => self.route(None, &pod),
                Ok(watcher::Event::InitDone) => self.synced.store(true, Ordering::SeqCst),
                Ok(watcher::Event::Init) => {}
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying with backoff"),
            }
        }
        Ok(())
    }

    /// Hand the pod (None: gone from the API) to its worker, starting one if needed.
    fn route(&self, latest: Option<Pod>, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = workers.get(&uid) {
            tx.send_replace(latest);
            return;
        }
        let (tx, rx) = watch::channel(latest);
        workers.insert(uid.clone(), tx);
        tracing::debug!(pod = %pod.name_any(), uid, "pod worker started");
        let worker = worker::Worker::new(self.ctx.clone(), uid.clone(), rx, self.relist.subscribe());
        let registry = self.workers.clone();
        tokio::spawn(async move {
            worker.run().await;
            registry.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
        });
    }

    /// Every second, everything the runtime holds, for the workers to compare with.
    async fn relist(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(worker::RELIST);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match Snapshot::take(&self.ctx.cri).await {
                Ok(snapshot) => {
                    self.relist.send_replace(Arc::new(snapshot));
                }
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "relisting the runtime"),
            }
        }
    }

    async fn housekeeping(self: Arc<Self>) {
        let mut problem: Option<String> = None;
        loop {
            tokio::time::sleep(HOUSEKEEPING).await;
            let now = self.runtime_problem().await;
            if now != problem {
                tracing::warn!(
                    ready = now.is_none(),
                    problem = now.as_deref().unwrap_or(""),
                    "container runtime status changed"
                );
                self.node.set_not_ready(now.clone()).await;
                problem = now;
            }
            if problem.as_deref() != Some(RUNTIME_DOWN)
                && self.synced.load(Ordering::SeqCst)
                && let Err(e) = self.remove_orphans().await
            {
                tracing::warn!(error = %format!("{e:#}"), "removing orphaned sandboxes");
            }
        }
    }

    /// Why the runtime keeps the node from being Ready, or None.
    async fn runtime_problem(&self) -> Option<String> {
        let mut runtime = self.ctx.cri.runtime.clone();
        let call = runtime.status(StatusRequest { verbose: false });
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(reply)) => network_problem(reply.into_inner().status.as_ref()),
            _ => Some(RUNTIME_DOWN.to_string()),
        }
    }

    /// Sandboxes whose pod has no worker: the pod was deleted while we were away.
    async fn remove_orphans(&self) -> anyhow::Result<()> {
        let mut runtime = self.ctx.cri.runtime.clone();
        let sandboxes = runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await?.into_inner().items;
        let known: HashSet<String> = self.workers.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for sandbox in sandboxes {
            let Some(uid) = sandbox.labels.get(labels::POD_UID) else { continue };
            if known.contains(uid) {
                continue;
            }
            let name = sandbox.labels.get(labels::POD_NAME).cloned().unwrap_or_default();
            tracing::info!(pod = %name, uid = %uid, sandbox = %sandbox.id, "removing an orphaned sandbox");
            runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.id.clone() }).await?;
            runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox.id.clone() }).await?;
            let pod_dir = self.ctx.root_dir.join("pods").join(uid);
            if let Err(e) = crate::kubelet::spec::volumes::teardown(&pod_dir).await {
                tracing::warn!(uid = %uid, error = %e, "tearing down an orphan's volumes");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{RuntimeCondition, RuntimeStatus};

    fn status(network_ready: bool) -> RuntimeStatus {
        let condition = |t: &str, ok: bool, reason: &str, message: &str| RuntimeCondition {
            r#type: t.into(),
            status: ok,
            reason: reason.into(),
            message: message.into(),
        };
        RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", true, "", ""),
                condition("NetworkReady", network_ready, "NetworkPluginNotReady", "cni plugin not initialized"),
            ],
        }
    }

    #[test]
    fn a_network_not_ready_is_a_not_ready_node_as_upstream_words_it() {
        assert_eq!(
            network_problem(Some(&status(false))).as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
            )
        );
        assert_eq!(network_problem(Some(&status(true))), None);
        assert_eq!(network_problem(None), None, "a runtime without conditions is taken as ready");
    }
}
