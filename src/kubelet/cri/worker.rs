//! One task per pod (by uid) converging the runtime to the pod: every second, or at once
//! when the pod changes, it relists the pod's sandbox and containers, creates what is
//! missing (sandbox, then init containers in order, then containers), restarts what
//! exited as restartPolicy says (with crash-loop back-off), follows probes, and reports
//! the status when it changed. A pod being deleted is stopped gracefully and then
//! deleted for good; a pod gone from the API is removed from the runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    CreateContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::client::Cri;
use super::config::{self, ContainerParams, SandboxParams};
use super::exec::CriExec;
use super::observe::{Instance, Observed, Observer, Sandbox, Snapshot};
use super::pull::{Note, Puller};
use super::status::{self, Inputs, Waiting};
use crate::controllers::runtime::events::{Recorder, reference};
use crate::kubelet::spec::probes::{self, Prober};
use crate::kubelet::spec::volumes::{self, PodVolumes};
use crate::kubelet::spec::{ConfigError, PodFacts};

/// How often the node-wide relist runs (upstream's PLEG period).
pub const RELIST: Duration = Duration::from_secs(1);
/// How often configMap/secret/downwardAPI volume contents are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);
/// The longest a postStart hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What every worker shares.
pub struct Context {
    pub cri: Cri,
    pub client: Client,
    pub recorder: Recorder,
    pub node_name: String,
    pub host_ip: String,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub exec: Arc<CriExec>,
}

pub struct Worker {
    ctx: Arc<Context>,
    pod: watch::Receiver<Option<Pod>>,
    /// The node-wide relist, every second.
    relist: watch::Receiver<Arc<Snapshot>>,
    /// When this worker last changed the pod's runtime objects (older snapshots are stale).
    acted_at: Instant,
    uid: String,
    observer: Observer,
    puller: Puller,
    waiting: Waiting,
    restarts: HashMap<String, Backoff>,
    /// Per running container id.
    probers: HashMap<String, Prober>,
    volumes: Option<(PodVolumes, Instant)>,
    /// The status last written (without its times), to write only changes.
    reported: Option<Value>,
    /// The pod reached Succeeded or Failed: nothing is started again.
    finished: bool,
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

impl Worker {
    pub fn new(
        ctx: Arc<Context>,
        uid: String,
        pod: watch::Receiver<Option<Pod>>,
        relist: watch::Receiver<Arc<Snapshot>>,
    ) -> Worker {
        Worker {
            ctx,
            pod,
            relist,
            acted_at: Instant::now(),
            uid,
            observer: Observer::default(),
            puller: Puller::default(),
            waiting: Waiting::default(),
            restarts: HashMap::new(),
            probers: HashMap::new(),
            volumes: None,
            reported: None,
            finished: false,
        }
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.root_dir.join("pods").join(&self.uid)
    }

    /// Until the pod is gone from the API and the runtime (or the kubelet stops).
    pub async fn run(mut self) {
        loop {
            let pod = self.pod.borrow_and_update().clone();
            let done = match pod {
                None => self.remove_from_runtime(None, 2).await,
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => self.terminate(&pod).await,
                Some(pod) => {
                    if let Err(e) = self.sync(&pod).await {
                        tracing::warn!(pod = %pod.name_any(), uid = %self.uid, error = %format!("{e:#}"), "syncing the pod");
                    }
                    false
                }
            };
            if done {
                return;
            }
            tokio::select! {
                changed = self.pod.changed() => if changed.is_err() { return },
                changed = self.relist.changed() => if changed.is_err() { return },
                // the relist may stall (a hung runtime): look for ourselves now and then
                _ = tokio::time::sleep(RELIST * 5) => self.acted_at = Instant::now(),
            }
        }
    }

    fn event(&self, pod: &Pod, container: Option<(&str, bool)>, warning: bool, reason: &str, message: String) {
        let mut regarding: ObjectReference = reference(pod);
        if let Some((name, init)) = container {
            let field = if init { "initContainers" } else { "containers" };
            regarding.field_path = Some(format!("spec.{field}{{{name}}}"));
        }
        self.ctx.recorder.record(regarding, if warning { "Warning" } else { "Normal" }, reason, message);
    }

    async fn sync(&mut self, pod: &Pod) -> anyhow::Result<()> {
        if terminal(pod) || self.finished {
            self.finished = true;
            self.probers.clear();
            return self.stop_sandboxes().await;
        }
        let observed = self.current().await?;
        let sandbox = match &observed.sandbox {
            Some(s) if s.ready => s.clone(),
            old => {
                let attempt = old.as_ref().map(|s| s.attempt + 1).unwrap_or(0);
                self.run_sandbox(pod, attempt).await?
            }
        };
        let acted = match self.ensure_volumes(pod, &sandbox).await {
            Ok(()) => self.converge(pod, &observed, &sandbox).await,
            Err(e) => {
                self.event(pod, None, true, "FailedMount", e.to_string());
                false
            }
        };
        let observed = match acted {
            true => {
                self.acted_at = Instant::now();
                self.observer.observe(&self.ctx.cri, &self.uid).await?
            }
            false => observed,
        };
        self.probers.retain(|id, _| observed.containers.values().flatten().any(|i| &i.id == id && i.running()));
        let phase = self.report(pod, &observed).await?;
        if phase == "Succeeded" || phase == "Failed" {
            tracing::info!(pod = %pod.name_any(), phase, "pod finished; stopping its sandbox");
            self.finished = true;
            self.probers.clear();
            self.stop_sandboxes().await?;
        }
        Ok(())
    }

    /// The pod's runtime objects: from the node-wide relist unless it predates our last
    /// action, else listed now.
    async fn current(&mut self) -> anyhow::Result<Observed> {
        let snapshot = self.relist.borrow_and_update().clone();
        if snapshot.taken <= self.acted_at {
            return self.observer.observe(&self.ctx.cri, &self.uid).await;
        }
        let listed = snapshot.pods.get(&self.uid).cloned().unwrap_or_default();
        self.observer.build(&self.ctx.cri, listed).await
    }

    fn sandbox_params(&self) -> SandboxParams<'_> {
        SandboxParams {
            pod_logs_dir: &self.ctx.pod_logs_dir,
            cluster_dns: &self.ctx.cluster_dns,
            cluster_domain: &self.ctx.cluster_domain,
        }
    }

    async fn run_sandbox(&mut self, pod: &Pod, attempt: u32) -> anyhow::Result<Sandbox> {
        let started = Instant::now();
        let config = config::sandbox(pod, attempt, &self.sandbox_params());
        tokio::fs::create_dir_all(&config.log_directory).await?;
        let request = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        let id = match self.ctx.cri.runtime.clone().run_pod_sandbox(request).await {
            Ok(reply) => reply.into_inner().pod_sandbox_id,
            Err(e) => {
                let message = format!("Failed to create pod sandbox: {}", e.message());
                self.event(pod, None, true, "FailedCreatePodSandBox", message.clone());
                anyhow::bail!(message);
            }
        };
        let observed = self.observer.observe(&self.ctx.cri, &self.uid).await?;
        let sandbox =
            observed.sandbox.filter(|s| s.id == id).unwrap_or(Sandbox { id, ready: true, attempt, ip: String::new() });
        tracing::info!(pod = %pod.name_any(), sandbox = %sandbox.id, ip = %sandbox.ip, attempt,
            elapsed_ms = started.elapsed().as_millis() as u64, "sandbox running");
        self.volumes = None;
        Ok(sandbox)
    }

    fn facts(&self, pod: &Pod, sandbox: &Sandbox) -> PodFacts {
        let ip = if host_network(pod) { self.ctx.host_ip.clone() } else { sandbox.ip.clone() };
        PodFacts { node_name: self.ctx.node_name.clone(), host_ip: self.ctx.host_ip.clone(), pod_ips: vec![ip] }
    }

    async fn ensure_volumes(&mut self, pod: &Pod, sandbox: &Sandbox) -> Result<(), ConfigError> {
        if self.volumes.as_ref().is_some_and(|(_, at)| at.elapsed() < VOLUME_REFRESH) {
            return Ok(());
        }
        let facts = self.facts(pod, sandbox);
        let prepared = PodVolumes::prepare(&self.ctx.client, pod, &facts, &self.pod_dir()).await?;
        self.volumes = Some((prepared, Instant::now()));
        Ok(())
    }

    /// Start or restart what should run; true when something was created or stopped.
    async fn converge(&mut self, pod: &Pod, observed: &Observed, sandbox: &Sandbox) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod);
        for c in spec.init_containers.iter().flatten() {
            match observed.latest(&c.name) {
                None => return self.start(pod, c, sandbox, 0, true).await,
                Some(i) if !i.exited() => return false,
                Some(i) if i.exit_code == 0 => continue,
                Some(_) if policy == "Never" => return false,
                Some(i) => return self.restart(pod, c, sandbox, i, true).await,
            }
        }
        let mut acted = false;
        for c in &spec.containers {
            acted |= match observed.latest(&c.name) {
                None => self.start(pod, c, sandbox, 0, false).await,
                Some(i) if i.running() => self.follow_probes(pod, c, i, sandbox).await,
                Some(i) if i.exited() && should_restart(&policy, i.exit_code) => {
                    self.restart(pod, c, sandbox, i, false).await
                }
                Some(_) => false,
            };
        }
        acted
    }

    /// Restart an exited container unless it is in crash-loop back-off.
    async fn restart(&mut self, pod: &Pod, c: &Container, sandbox: &Sandbox, last: &Instance, init: bool) -> bool {
        let now = Instant::now();
        let backoff = self.restarts.entry(c.name.clone()).or_default();
        if backoff.waiting(now) {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.delay().as_secs(),
                c.name,
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
                self.uid
            );
            self.waiting.insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
            let event = format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                c.name,
                pod.name_any(),
                pod.namespace().unwrap_or_default(),
                self.uid
            );
            self.event(pod, Some((&c.name, init)), true, "BackOff", event);
            return false;
        }
        let ran = Duration::from_nanos(last.finished_at.saturating_sub(last.started_at).max(0) as u64);
        backoff.failed(now, ran);
        self.start(pod, c, sandbox, last.attempt + 1, init).await
    }

    fn emit(&self, pod: &Pod, c: &Container, init: bool, notes: Vec<Note>) {
        for (warning, reason, message) in notes {
            self.event(pod, Some((&c.name, init)), warning, reason, message);
        }
    }

    /// Pull, create and start one run of a container; true once it exists.
    async fn start(&mut self, pod: &Pod, c: &Container, sandbox: &Sandbox, attempt: u32, init: bool) -> bool {
        let started = Instant::now();
        let mut notes = Vec::new();
        let pulled = self.puller.ensure((&self.ctx.cri, &self.ctx.client, pod), c, &mut notes).await;
        self.emit(pod, c, init, notes);
        let image_ref = match pulled {
            Ok(r) => r,
            Err((reason, message)) => {
                self.waiting.insert(c.name.clone(), (reason, message));
                return false;
            }
        };
        let config = match self.container_config(pod, c, sandbox, &image_ref, attempt).await {
            Ok(config) => config,
            Err(e) => return self.failed_to_start(pod, c, init, "CreateContainerConfigError", e.to_string(), false),
        };
        let log_dir = config::log_directory(&self.ctx.pod_logs_dir, pod).join(&c.name);
        if let Err(e) = tokio::fs::create_dir_all(&log_dir).await {
            tracing::warn!(dir = %log_dir.display(), error = %e, "creating the container log directory");
        }
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            // the full sandbox config again: containerd reads it on every create
            sandbox_config: Some(config::sandbox(pod, sandbox.attempt, &self.sandbox_params())),
        };
        let id = match self.ctx.cri.runtime.clone().create_container(request).await {
            Ok(reply) => reply.into_inner().container_id,
            Err(e) => {
                return self.failed_to_start(pod, c, init, "CreateContainerError", e.message().to_string(), false);
            }
        };
        self.event(pod, Some((&c.name, init)), false, "Created", format!("Created container {}", c.name));
        let request = StartContainerRequest { container_id: id.clone() };
        if let Err(e) = self.ctx.cri.runtime.clone().start_container(request).await {
            return self.failed_to_start(pod, c, init, "RunContainerError", e.message().to_string(), true);
        }
        self.waiting.remove(&c.name);
        self.event(pod, Some((&c.name, init)), false, "Started", format!("Started container {}", c.name));
        tracing::info!(pod = %pod.name_any(), container = %c.name, id = %id, attempt,
            elapsed_ms = started.elapsed().as_millis() as u64, "container started");
        self.post_start(pod, c, sandbox, &id).await;
        true
    }

    fn failed_to_start(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        reason: &str,
        message: String,
        exists: bool,
    ) -> bool {
        tracing::info!(pod = %pod.name_any(), container = %c.name, reason, %message, "container did not start");
        self.event(pod, Some((&c.name, init)), true, "Failed", format!("Error: {message}"));
        self.waiting.insert(c.name.clone(), (reason.to_string(), message));
        exists
    }

    async fn container_config(
        &self,
        pod: &Pod,
        c: &Container,
        sandbox: &Sandbox,
        image_ref: &str,
        attempt: u32,
    ) -> Result<k8s_cri::v1::ContainerConfig, ConfigError> {
        let Some((volumes, _)) = &self.volumes else {
            return Err(ConfigError("the pod's volumes are not ready".into()));
        };
        let (uid, username) = self.image_user(image_ref).await;
        crate::kubelet::spec::linux::verify_run_as_non_root(pod, c, uid, &username)?;
        let facts = self.facts(pod, sandbox);
        let params = ContainerParams { client: &self.ctx.client, facts: &facts, volumes, image_ref, attempt };
        config::container(pod, c, &params).await
    }

    /// The user the image runs as (uid, or name), for the runAsNonRoot check.
    async fn image_user(&self, image_ref: &str) -> (Option<i64>, String) {
        let spec = k8s_cri::v1::ImageSpec { image: image_ref.to_string(), ..Default::default() };
        let request = k8s_cri::v1::ImageStatusRequest { image: Some(spec), verbose: false };
        match self.ctx.cri.image.clone().image_status(request).await {
            Ok(reply) => reply.into_inner().image.map(|i| (i.uid.map(|u| u.value), i.username)).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(image = image_ref, error = %e.message(), "reading the image's user");
                (None, String::new())
            }
        }
    }

    /// postStart: a failed hook kills the container (restartPolicy decides what follows).
    async fn post_start(&mut self, pod: &Pod, c: &Container, sandbox: &Sandbox, id: &str) {
        let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) else { return };
        let ip = self.facts(pod, sandbox).pod_ips.join("");
        if let Err(message) = probes::run_hook(&handler, &ip, id, self.ctx.exec.as_ref(), HOOK_TIMEOUT).await {
            self.event(pod, Some((&c.name, false)), true, "FailedPostStartHook", message);
            self.stop_container(pod, &c.name, id, grace_period(pod)).await;
        }
    }

    /// Start probing a running container; restart it when its liveness probe fails.
    async fn follow_probes(&mut self, pod: &Pod, c: &Container, i: &Instance, sandbox: &Sandbox) -> bool {
        let ip = self.facts(pod, sandbox).pod_ips.join("");
        let exec = self.ctx.exec.clone();
        let prober =
            self.probers.entry(i.id.clone()).or_insert_with(|| probes::spawn_prober(pod, c, ip, i.id.clone(), exec));
        let Ok(message) = prober.liveness_failed.try_recv() else { return false };
        self.event(pod, Some((&c.name, false)), true, "Unhealthy", message);
        self.event(
            pod,
            Some((&c.name, false)),
            false,
            "Killing",
            format!("Container {} failed liveness probe, will be restarted", c.name),
        );
        self.probers.remove(&i.id);
        self.stop_container(pod, &c.name, &i.id, grace_period(pod)).await;
        true
    }

    async fn stop_container(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let request = StopContainerRequest { container_id: id.to_string(), timeout: grace };
        if let Err(e) = self.ctx.cri.runtime.clone().stop_container(request).await {
            tracing::warn!(pod = %pod.name_any(), container = name, error = %e.message(), "stopping a container");
        }
    }

    /// Write the status when it differs from the last written; returns the phase.
    async fn report(&mut self, pod: &Pod, observed: &Observed) -> anyhow::Result<String> {
        let probes: HashMap<String, (bool, bool)> = self
            .probers
            .iter()
            .map(|(id, p)| {
                let s = *p.state.borrow();
                (id.clone(), (s.ready, s.started))
            })
            .collect();
        let sandbox_ip = observed.sandbox.as_ref().filter(|s| s.ready).map(|s| s.ip.clone()).unwrap_or_default();
        let pod_ip = if host_network(pod) { self.ctx.host_ip.clone() } else { sandbox_ip };
        let inputs =
            Inputs { observed, waiting: &self.waiting, probes: &probes, host_ip: &self.ctx.host_ip, pod_ip: &pod_ip };
        let computed = status::pod_status(pod, &inputs);
        let phase = computed["phase"].as_str().unwrap_or_default().to_string();
        if self.reported.as_ref() == Some(&computed) {
            return Ok(phase);
        }
        let current = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let full = status::with_transition_times(computed.clone(), current.as_ref());
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": full}))).await?;
        tracing::debug!(pod = %pod.name_any(), phase, "status written");
        self.reported = Some(computed);
        Ok(phase)
    }

    async fn stop_sandboxes(&mut self) -> anyhow::Result<()> {
        let observed = self.observer.observe(&self.ctx.cri, &self.uid).await?;
        if let Some(s) = observed.sandbox.filter(|s| s.ready) {
            self.ctx.cri.runtime.clone().stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: s.id }).await?;
        }
        Ok(())
    }

    /// Graceful deletion: preStop hooks and SIGTERM within the grace period, the sandbox
    /// and volumes removed, then the pod deleted for good. True when finished.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let grace = grace_period(pod);
        if !self.remove_from_runtime(Some(pod), grace).await {
            return false;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "the final delete; retrying");
                false
            }
        }
    }

    /// Stop the containers (running preStop hooks when the pod is known), remove the
    /// sandboxes, tear down the volumes and logs. True when nothing is left.
    async fn remove_from_runtime(&mut self, pod: Option<&Pod>, grace: i64) -> bool {
        self.probers.clear();
        let observed = match self.observer.observe(&self.ctx.cri, &self.uid).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(uid = %self.uid, error = %format!("{e:#}"), "listing the pod's containers to stop them");
                return false;
            }
        };
        if let Some(pod) = pod {
            let stops = observed
                .containers
                .iter()
                .filter_map(|(name, runs)| runs.last().filter(|i| i.running()).map(|i| (name.clone(), i.id.clone())))
                .map(|(name, id)| self.stop_gracefully(pod, name, id, grace, &observed));
            futures::future::join_all(stops).await;
        }
        let mut runtime = self.ctx.cri.runtime.clone();
        for id in &observed.sandbox_ids {
            let stopped = runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
            let removed = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await;
            if let Some(e) = stopped.err().or(removed.err()) {
                tracing::warn!(uid = %self.uid, sandbox = %id, error = %e.message(), "removing a sandbox; retrying");
                return false;
            }
        }
        if let Err(e) = volumes::teardown(&self.pod_dir()).await {
            tracing::warn!(uid = %self.uid, error = %e, "tearing down the pod's volumes; retrying");
            return false;
        }
        if let Some(pod) = pod {
            let _ = tokio::fs::remove_dir_all(config::log_directory(&self.ctx.pod_logs_dir, pod)).await;
        }
        tracing::info!(uid = %self.uid, sandboxes = observed.sandbox_ids.len(), "pod removed from the runtime");
        true
    }

    async fn stop_gracefully(&self, pod: &Pod, name: String, id: String, grace: i64, observed: &Observed) {
        let started = Instant::now();
        let spec = pod.spec.clone().unwrap_or_default();
        let container = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name);
        let init = spec.init_containers.iter().flatten().any(|c| c.name == name);
        if let Some(handler) = container.and_then(|c| c.lifecycle.as_ref()?.pre_stop.clone()) {
            let ip = observed.sandbox.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
            let limit = Duration::from_secs(grace.max(0) as u64);
            if let Err(message) = probes::run_hook(&handler, &ip, &id, self.ctx.exec.as_ref(), limit).await {
                self.event(pod, Some((&name, init)), true, "FailedPreStopHook", message);
            }
        }
        self.event(pod, Some((&name, init)), false, "Killing", format!("Stopping container {name}"));
        // a preStop hook that used the whole grace period still leaves SIGTERM 2 s (upstream's)
        let left = (grace - started.elapsed().as_secs() as i64).max(if grace > 0 { 2 } else { 0 });
        self.stop_container(pod, &name, &id, left).await;
    }
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    policy == "Always" || (policy == "OnFailure" && exit_code != 0)
}

/// The deletion's grace period, else the pod's terminationGracePeriodSeconds (30).
fn grace_period(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0)
}
