//! Probe and lifecycle-hook execution for running containers.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::sync::{mpsc, watch};

/// Runs a command in a container (CRI ExecSync); the pod workers implement it.
pub trait ExecInContainer: Send + Sync + 'static {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, anyhow::Result<(i32, Vec<u8>)>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    pub started: bool,
    pub ready: bool,
}

/// Runs startup → liveness/readiness probes for one running container with upstream's
/// semantics. Dropping the Prober stops it.
pub struct Prober {
    pub state: watch::Receiver<ProbeState>,
    /// message for the Killing/Unhealthy event
    pub liveness_failed: mpsc::Receiver<String>,
    _task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(task) = self._task.take() {
            task.abort();
        }
    }
}

pub fn spawn_prober(
    _pod: &Pod,
    container: &Container,
    _pod_ip: String,
    _container_id: String,
    _exec: Arc<dyn ExecInContainer>,
) -> Prober {
    let (_state_tx, state) = watch::channel(ProbeState { started: true, ready: container.readiness_probe.is_none() });
    let (_liveness_tx, liveness_failed) = mpsc::channel(1);
    Prober { state, liveness_failed, _task: None }
}

/// postStart / preStop: Ok or the failure message (FailedPostStartHook / FailedPreStopHook).
pub async fn run_hook(
    _handler: &LifecycleHandler,
    _pod_ip: &str,
    _container_id: &str,
    _exec: &dyn ExecInContainer,
    _timeout: Duration,
) -> Result<(), String> {
    Ok(())
}
