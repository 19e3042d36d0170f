//! Probe and lifecycle-hook execution for running containers, with upstream's
//! semantics: startup → liveness/readiness gating, initialDelaySeconds, periodSeconds,
//! timeoutSeconds, success/failure thresholds; exec, httpGet, tcpSocket and grpc checks.

mod grpc;
mod http;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// One attempt's outcome; `Err` is the prober's own error (upstream discards those).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure(String),
}

/// What a check runs against.
#[derive(Clone)]
struct Target {
    pod_ip: String,
    container: Container,
    container_id: String,
    exec: Arc<dyn ExecInContainer>,
}

pub fn spawn_prober(
    _pod: &Pod,
    container: &Container,
    pod_ip: String,
    container_id: String,
    exec: Arc<dyn ExecInContainer>,
) -> Prober {
    let has_startup = container.startup_probe.is_some();
    let has_readiness = container.readiness_probe.is_some();
    // without a startup probe the container counts as started; without a readiness
    // probe it is ready once started
    let initial = ProbeState { started: !has_startup, ready: !has_startup && !has_readiness };
    let (state_tx, state) = watch::channel(initial);
    let (liveness_tx, liveness_failed) = mpsc::channel(1);
    let target = Target { pod_ip, container: container.clone(), container_id, exec };
    let state_tx = Arc::new(state_tx);
    let probes = [
        (Kind::Startup, &container.startup_probe),
        (Kind::Liveness, &container.liveness_probe),
        (Kind::Readiness, &container.readiness_probe),
    ];
    let tasks = probes
        .into_iter()
        .filter_map(|(kind, p)| p.clone().map(|p| (kind, p)))
        .map(|(kind, probe)| {
            let worker =
                Worker { kind, probe, target: target.clone(), state: state_tx.clone(), failed: liveness_tx.clone() };
            tokio::spawn(worker.run())
        })
        .collect();
    Prober { state, liveness_failed, tasks }
}

struct Worker {
    kind: Kind,
    probe: Probe,
    target: Target,
    state: Arc<watch::Sender<ProbeState>>,
    failed: mpsc::Sender<String>,
}

/// A probe's unit of time; unit tests run the same schedules 50 times faster.
#[cfg(not(test))]
const SECOND: Duration = Duration::from_secs(1);
#[cfg(test)]
const SECOND: Duration = Duration::from_millis(20);

/// Upstream's defaults for a probe's timing and thresholds.
struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn timing(p: &Probe) -> Timing {
    let secs = |v: Option<i32>, default: i32| SECOND * v.unwrap_or(default).max(0) as u32;
    let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(SECOND),
        timeout: secs(p.timeout_seconds, 1).max(SECOND),
        success_threshold: count(p.success_threshold, 1),
        failure_threshold: count(p.failure_threshold, 3),
    }
}

impl Worker {
    async fn run(self) {
        let t = timing(&self.probe);
        tokio::time::sleep(t.initial_delay).await;
        let mut last: Option<bool> = None;
        let mut run = 0u32;
        loop {
            let gated = self.kind != Kind::Startup && !self.state.borrow().started;
            if !gated && let Some(outcome) = self.attempt(t.timeout).await {
                let ok = outcome == Outcome::Success;
                run = if last == Some(ok) { run + 1 } else { 1 };
                last = Some(ok);
                let threshold = if ok { t.success_threshold } else { t.failure_threshold };
                if run >= threshold && self.apply(&outcome) {
                    return;
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }

    /// One check, or None when the prober itself failed (upstream keeps the old result).
    async fn attempt(&self, timeout: Duration) -> Option<Outcome> {
        let outcome = check(&self.probe, &self.target, timeout).await;
        match &outcome {
            Ok(Outcome::Failure(message)) => {
                tracing::debug!(probe = self.kind.label(), container = %self.target.container.name, %message, "probe failed")
            }
            Err(error) => {
                tracing::warn!(probe = self.kind.label(), container = %self.target.container.name, %error, "probe errored")
            }
            Ok(Outcome::Success) => {}
        }
        outcome.ok()
    }

    /// Record a result that met its threshold; true when this worker is done.
    fn apply(&self, outcome: &Outcome) -> bool {
        match (self.kind, outcome) {
            (Kind::Startup, Outcome::Success) => {
                let has_readiness = self.target.container.readiness_probe.is_some();
                self.state.send_modify(|s| {
                    s.started = true;
                    s.ready |= !has_readiness;
                });
                true
            }
            (Kind::Readiness, outcome) => {
                let ready = *outcome == Outcome::Success;
                self.state.send_if_modified(|s| std::mem::replace(&mut s.ready, ready) != ready);
                false
            }
            (Kind::Liveness, Outcome::Success) => false,
            (kind, Outcome::Failure(message)) => {
                // liveness or startup: the container is restarted; this worker holds
                let _ = self.failed.try_send(format!("{} probe failed: {message}", kind.label()));
                true
            }
        }
    }
}

/// Run one probe attempt against the container.
async fn check(probe: &Probe, t: &Target, timeout: Duration) -> Result<Outcome, String> {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return run_exec(t.exec.as_ref(), &t.container_id, cmd, timeout).await;
    }
    if let Some(h) = &probe.http_get {
        let port = resolve_port(&h.port, &t.container)?;
        let target = http_target(h, &t.pod_ip, port);
        return Ok(match http::within(timeout, &format!("Get {:?}", target.url()), http::get(&target)).await {
            Ok(status) if (200..400).contains(&status) => Outcome::Success,
            Ok(status) => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
            Err(e) => Outcome::Failure(e),
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, &t.container)?;
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| t.pod_ip.clone());
        return Ok(tcp_check(&host, port, timeout).await);
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("invalid grpc port {}", g.port))?;
        return Ok(grpc_check(&t.pod_ip, port, g.service.as_deref().unwrap_or(""), timeout).await);
    }
    Err("probe has no handler".into())
}

async fn run_exec(
    exec: &dyn ExecInContainer,
    id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<Outcome, String> {
    let shown = cmd.join(" ");
    match exec.exec_sync(id, cmd, timeout).await {
        Ok((0, _)) => Ok(Outcome::Success),
        Ok((_, output)) => Ok(Outcome::Failure(String::from_utf8_lossy(&output).trim_end().to_string())),
        Err(e) if is_timeout(&e) => Ok(Outcome::Failure(format!("command {shown:?} timed out"))),
        Err(e) => Err(format!("exec {shown:?}: {e:#}")),
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_lowercase();
    ["timeout", "timed out", "deadline"].iter().any(|w| text.contains(w))
}

async fn tcp_check(host: &str, port: u16, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(http::dial_error(host, port, &e)),
        Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// A port by number, or by the name of one of the container's ports.
fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s} in {}", c.name))?,
        },
    };
    u16::try_from(number).ok().filter(|n| *n > 0).ok_or_else(|| format!("invalid port number: {number}"))
}

fn http_target(h: &k8s_openapi::api::core::v1::HTTPGetAction, pod_ip: &str, port: u16) -> http::Target {
    let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    http::Target {
        https: h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
        host: h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string()),
        port,
        path: if path.starts_with('/') { path } else { format!("/{path}") },
        headers: h.http_headers.iter().flatten().map(|hd| (hd.name.clone(), hd.value.clone())).collect(),
    }
}

/// gRPC health checking (grpc.health.v1.Health/Check): SERVING is success.
async fn grpc_check(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, grpc::check(host, port, service)).await {
        Ok(Ok(1)) => Outcome::Success,
        Ok(Ok(status)) => {
            Outcome::Failure(format!("service unhealthy (responded with \"{}\")", grpc::status_name(status)))
        }
        Ok(Err(e)) => Outcome::Failure(e),
        Err(_) => Outcome::Failure(format!("timeout: health rpc did not complete within {timeout:?}")),
    }
}

/// postStart / preStop: Ok or the failure message (FailedPostStartHook / FailedPreStopHook).
pub async fn run_hook(
    handler: &LifecycleHandler,
    pod_ip: &str,
    container_id: &str,
    exec: &dyn ExecInContainer,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let shown = cmd.join(" ");
        return match tokio::time::timeout(timeout, exec.exec_sync(container_id, cmd.clone(), timeout)).await {
            Ok(Ok((0, _))) => Ok(()),
            Ok(Ok((code, output))) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) failed - error: command '{shown}' exited with {code}: {}",
                String::from_utf8_lossy(&output).trim_end()
            )),
            Ok(Err(e)) => Err(format!("Exec lifecycle hook ({cmd:?}) failed - error: {e:#}")),
            Err(_) => Err(format!("Exec lifecycle hook ({cmd:?}) failed - error: timed out after {timeout:?}")),
        };
    }
    if let Some(h) = &handler.http_get {
        let port = match &h.port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port number: {n}"))?,
            IntOrString::String(s) => s.parse().map_err(|_| format!("invalid port: {s}"))?,
        };
        let target = http_target(h, pod_ip, port);
        let url = target.url();
        return match http::within(timeout, &format!("Get {url:?}"), http::get(&target)).await {
            Ok(status) if (200..400).contains(&status) => Ok(()),
            Ok(status) => Err(format!("HTTP lifecycle hook ({}) failed - error: HTTP status {status}", target.path)),
            Err(e) => Err(format!("HTTP lifecycle hook ({}) failed - error: {e}", target.path)),
        };
    }
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Err("lifecycle hook has no handler".into())
}

#[cfg(test)]
mod tests;
