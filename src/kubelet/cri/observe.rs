//! What the runtime holds for one pod, found by its uid label (the relist that stands
//! in for PLEG: containerd 1.6 has no event stream). A container's status only changes
//! with its state, so it is asked for again only when the listed state changed.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use k8s_cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStatusRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandbox, PodSandboxFilter, PodSandboxState, PodSandboxStatusRequest,
};

use super::client::Cri;
use super::labels;

/// One run of a container (CRI calls it an attempt; the API its restart count).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub attempt: u32,
    pub state: ContainerState,
    /// Nanoseconds since the epoch; 0 when not (yet) known.
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image: String,
    pub image_ref: String,
}

impl Instance {
    pub fn running(&self) -> bool {
        self.state == ContainerState::ContainerRunning
    }

    pub fn exited(&self) -> bool {
        matches!(self.state, ContainerState::ContainerExited | ContainerState::ContainerUnknown)
    }
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub ready: bool,
    pub attempt: u32,
    pub ip: String,
}

#[derive(Debug, Default)]
pub struct Observed {
    /// The newest sandbox of the pod.
    pub sandbox: Option<Sandbox>,
    /// Every sandbox of the pod, newest last.
    pub sandbox_ids: Vec<String>,
    /// Per container name, its runs by attempt, the newest last.
    pub containers: HashMap<String, Vec<Instance>>,
}

impl Observed {
    pub fn latest(&self, name: &str) -> Option<&Instance> {
        self.containers.get(name).and_then(|runs| runs.last())
    }

    /// The run before the newest (lastState while the newest runs).
    pub fn previous(&self, name: &str) -> Option<&Instance> {
        self.containers.get(name).and_then(|runs| runs.len().checked_sub(2).map(|i| &runs[i]))
    }
}

/// The relist of one pod, with what is worth remembering between relists.
#[derive(Default)]
pub struct Observer {
    /// Container statuses as last asked; asked again when the listed state differs.
    known: HashMap<String, Instance>,
    sandbox_ips: HashMap<String, String>,
}

/// A pod's runtime objects as listed: its sandboxes and containers.
#[derive(Debug, Default, Clone)]
pub struct Listed {
    pub sandboxes: Vec<PodSandbox>,
    pub containers: Vec<Container>,
}

/// Every pod's runtime objects, by uid, from one ListPodSandbox and one ListContainers
/// (the kubelet's periodic relist: two calls a second however many pods run).
pub struct Snapshot {
    pub taken: Instant,
    pub pods: HashMap<String, Listed>,
}

impl Snapshot {
    pub async fn take(cri: &Cri) -> anyhow::Result<Snapshot> {
        let taken = Instant::now();
        let mut runtime = cri.runtime.clone();
        let sandboxes = runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await?.into_inner().items;
        let containers = runtime.list_containers(ListContainersRequest { filter: None }).await?.into_inner().containers;
        let mut pods: HashMap<String, Listed> = HashMap::new();
        for s in sandboxes {
            if let Some(uid) = s.labels.get(labels::POD_UID) {
                pods.entry(uid.clone()).or_default().sandboxes.push(s);
            }
        }
        for c in containers {
            if let Some(uid) = c.labels.get(labels::POD_UID) {
                pods.entry(uid.clone()).or_default().containers.push(c);
            }
        }
        Ok(Snapshot { taken, pods })
    }
}

impl Observer {
    /// List one pod's objects now (after acting on them, when a snapshot would be stale).
    pub async fn observe(&mut self, cri: &Cri, uid: &str) -> anyhow::Result<Observed> {
        let mut runtime = cri.runtime.clone();
        let filter = PodSandboxFilter { label_selector: labels::by_uid(uid), ..Default::default() };
        let sandboxes = runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
            .await
            .context("ListPodSandbox")?
            .into_inner()
            .items;
        let filter = ContainerFilter { label_selector: labels::by_uid(uid), ..Default::default() };
        let containers = runtime
            .list_containers(ListContainersRequest { filter: Some(filter) })
            .await
            .context("ListContainers")?
            .into_inner()
            .containers;
        self.build(cri, Listed { sandboxes, containers }).await
    }

    /// What the listed objects amount to, asking the runtime only about containers whose
    /// state changed since last asked and sandboxes not seen before.
    pub async fn build(&mut self, cri: &Cri, listed: Listed) -> anyhow::Result<Observed> {
        let Listed { mut sandboxes, containers } = listed;
        sandboxes.sort_by_key(|s| s.created_at);
        let mut observed =
            Observed { sandbox_ids: sandboxes.iter().map(|s| s.id.clone()).collect(), ..Default::default() };
        if let Some(newest) = sandboxes.last() {
            let ready = newest.state == PodSandboxState::SandboxReady as i32;
            let ip = self.sandbox_ip(cri, &newest.id, ready).await?;
            let attempt = newest.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            observed.sandbox = Some(Sandbox { id: newest.id.clone(), ready, attempt, ip });
        }
        for c in containers {
            let Some(name) = c.labels.get(labels::CONTAINER_NAME).cloned() else { continue };
            let instance = match self.known.get(&c.id) {
                Some(known) if known.state as i32 == c.state => known.clone(),
                _ => self.status(cri, &c.id).await?,
            };
            observed.containers.entry(name).or_default().push(instance);
        }
        for runs in observed.containers.values_mut() {
            runs.sort_by_key(|i| (i.attempt, i.started_at));
        }
        // forget what the runtime no longer has
        self.known.retain(|id, _| observed.containers.values().flatten().any(|i| &i.id == id));
        Ok(observed)
    }

    async fn sandbox_ip(&mut self, cri: &Cri, id: &str, ready: bool) -> anyhow::Result<String> {
        if let Some(ip) = self.sandbox_ips.get(id) {
            return Ok(ip.clone());
        }
        if !ready {
            return Ok(String::new());
        }
        let status = cri
            .runtime
            .clone()
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: false })
            .await
            .context("PodSandboxStatus")?
            .into_inner()
            .status;
        let ip = status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        self.sandbox_ips.insert(id.to_string(), ip.clone());
        Ok(ip)
    }

    async fn status(&mut self, cri: &Cri, id: &str) -> anyhow::Result<Instance> {
        let request = ContainerStatusRequest { container_id: id.to_string(), verbose: false };
        let s = cri
            .runtime
            .clone()
            .container_status(request)
            .await
            .context("ContainerStatus")?
            .into_inner()
            .status
            .with_context(|| format!("no status for container {id}"))?;
        let instance = Instance {
            id: s.id,
            attempt: s.metadata.map(|m| m.attempt).unwrap_or(0),
            state: ContainerState::try_from(s.state).unwrap_or(ContainerState::ContainerUnknown),
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason,
            message: s.message,
            image: s.image.map(|i| i.image).unwrap_or_default(),
            image_ref: s.image_ref,
        };
        self.known.insert(id.to_string(), instance.clone());
        Ok(instance)
    }
}
