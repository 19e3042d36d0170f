//! The pod status a kubelet reports, computed from what the runtime holds (`Observed`),
//! the reasons containers wait (image pull, config errors, crash-loop back-off) and the
//! probes' verdicts, in the shape kubectl reads: phase as upstream's getPhase,
//! conditions, container statuses with state/lastState, restart counts and ids.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::observe::{Instance, Observed};

/// Why a container is not running, when the runtime cannot say (it never started).
pub type Waiting = HashMap<String, (String, String)>;

/// What the worker knows beyond the runtime's state.
pub struct Inputs<'a> {
    pub observed: &'a Observed,
    pub waiting: &'a Waiting,
    /// container id → (ready, started) from its probes; absent (no prober yet): ready and
    /// started follow running for containers without such probes, else false.
    pub probes: &'a HashMap<String, (bool, bool)>,
    pub host_ip: &'a str,
    /// The pod's IP (the sandbox's, or the node's with hostNetwork).
    pub pod_ip: &'a str,
}

fn time(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    Timestamp::from_nanosecond(nanos as i128)
        .map(|t| json!(t.round(jiff::Unit::Second).unwrap_or(t).to_string()))
        .unwrap_or(Value::Null)
}

fn terminated(i: &Instance) -> Value {
    let reason = match (i.reason.as_str(), i.exit_code) {
        ("", 0) => "Completed",
        ("", _) => "Error",
        (r, _) => r,
    };
    let mut t = json!({
        "exitCode": i.exit_code, "reason": reason,
        "startedAt": time(i.started_at), "finishedAt": time(i.finished_at),
        "containerID": format!("containerd://{}", i.id),
    });
    if !i.message.is_empty() {
        t["message"] = json!(i.message);
    }
    json!({"terminated": t})
}

fn waiting(reason: &str, message: &str) -> Value {
    match message {
        "" => json!({"waiting": {"reason": reason}}),
        m => json!({"waiting": {"reason": reason, "message": m}}),
    }
}

/// One entry of containerStatuses/initContainerStatuses.
fn container_status(c: &Container, input: &Inputs, init: bool, default_wait: &str) -> Value {
    let latest = input.observed.latest(&c.name);
    // before its prober reports, a container is ready (started) only if it has no
    // readiness (startup) probe, as upstream: else Services would send it traffic early
    let unprobed = (c.readiness_probe.is_none(), c.startup_probe.is_none());
    let (ready_probe, started_probe) = latest.and_then(|i| input.probes.get(&i.id).copied()).unwrap_or(unprobed);
    let override_wait = input.waiting.get(&c.name).filter(|_| !latest.is_some_and(|i| i.running()));
    let (state, last) = match (override_wait, latest) {
        (Some((reason, message)), latest) => (waiting(reason, message), latest.filter(|i| i.exited()).map(terminated)),
        (None, Some(i)) if i.running() => {
            (json!({"running": {"startedAt": time(i.started_at)}}), input.observed.previous(&c.name).map(terminated))
        }
        (None, Some(i)) if i.exited() => (terminated(i), input.observed.previous(&c.name).map(terminated)),
        (None, Some(_)) => (waiting("ContainerCreating", ""), input.observed.previous(&c.name).map(terminated)),
        (None, None) => (waiting(default_wait, ""), None),
    };
    let running = latest.is_some_and(|i| i.running()) && override_wait.is_none();
    let ready = match init {
        true => latest.is_some_and(|i| i.exited() && i.exit_code == 0),
        false => running && ready_probe && started_probe,
    };
    let image = latest.map(|i| i.image.clone()).filter(|i| !i.is_empty()).or_else(|| c.image.clone());
    let mut status = json!({
        "name": c.name, "image": image.unwrap_or_default(),
        "imageID": latest.map(|i| i.image_ref.clone()).unwrap_or_default(),
        "ready": ready, "restartCount": latest.map(|i| i.attempt).unwrap_or(0),
        "started": running && started_probe,
        "state": state, "lastState": last.unwrap_or_else(|| json!({})),
    });
    if let Some(i) = latest {
        status["containerID"] = json!(format!("containerd://{}", i.id));
    }
    status
}

/// Upstream's getPhase over the container statuses.
fn phase(pod: &Pod, init_done: bool, init_failed: bool, statuses: &[Value]) -> &'static str {
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
    if init_failed && policy == "Never" {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        if s["state"]["running"].is_object() {
            running += 1;
        } else if s["state"]["terminated"].is_object() {
            stopped += 1;
            if s["state"]["terminated"]["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"]["terminated"].is_object() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped == 0 => "Pending",
        _ if policy == "Always" => "Running",
        _ if stopped == succeeded => "Succeeded",
        _ if policy == "Never" => "Failed",
        _ => "Running",
    }
}

/// The status sub-object for `pods/<n>/status`, without times that only move when
/// something changed (so "changed" can be decided by comparing it to the last one).
pub fn pod_status(pod: &Pod, input: &Inputs) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let sandbox_ready = input.observed.sandbox.as_ref().is_some_and(|s| s.ready);
    let default_wait = if sandbox_ready { "PodInitializing" } else { "ContainerCreating" };
    let init_statuses: Vec<Value> = inits.iter().map(|c| container_status(c, input, true, default_wait)).collect();
    let init_done = init_statuses.iter().all(|s| s["state"]["terminated"]["exitCode"] == 0);
    let init_failed =
        init_statuses.iter().any(|s| s["state"]["terminated"]["exitCode"].as_i64().is_some_and(|c| c != 0));
    let main_wait = if inits.is_empty() || init_done { "ContainerCreating" } else { "PodInitializing" };
    let statuses: Vec<Value> = spec.containers.iter().map(|c| container_status(c, input, false, main_wait)).collect();
    let phase = phase(pod, init_done, init_failed, &statuses);
    let unready: Vec<&str> =
        statuses.iter().filter(|s| s["ready"] != true).filter_map(|s| s["name"].as_str()).collect();
    let incomplete: Vec<&str> =
        init_statuses.iter().filter(|s| s["ready"] != true).filter_map(|s| s["name"].as_str()).collect();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let ready_condition = |type_: &str| match () {
        _ if terminal => json!({"type": type_, "status": "False", "reason": "PodCompleted"}),
        _ if !unready.is_empty() => json!({"type": type_, "status": "False", "reason": "ContainersNotReady",
            "message": format!("containers with unready status: [{}]", unready.join(" "))}),
        _ => json!({"type": type_, "status": "True"}),
    };
    let initialized = match () {
        _ if terminal && inits.is_empty() => json!({"type": "Initialized", "status": "True"}),
        _ if incomplete.is_empty() => json!({"type": "Initialized", "status": "True"}),
        _ => json!({"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
            "message": format!("containers with incomplete status: [{}]", incomplete.join(" "))}),
    };
    let conditions = vec![
        json!({"type": "PodReadyToStartContainers", "status": if sandbox_ready { "True" } else { "False" }}),
        initialized,
        ready_condition("Ready"),
        ready_condition("ContainersReady"),
    ];
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": input.host_ip, "hostIPs": [{"ip": input.host_ip}],
        "containerStatuses": statuses,
        "qosClass": crate::kubelet::spec::linux::qos_class(pod),
    });
    if !input.pod_ip.is_empty() {
        status["podIP"] = json!(input.pod_ip);
        status["podIPs"] = json!([{"ip": input.pod_ip}]);
    }
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    status
}

/// Give each condition its lastTransitionTime: the current one's when its status did not
/// change, now otherwise; keep PodScheduled (the scheduler's) as it is.
pub fn with_transition_times(mut status: Value, current: Option<&Value>) -> Value {
    let now = Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default();
    let old: Vec<Value> = current.and_then(|s| s["conditions"].as_array().cloned()).unwrap_or_default();
    let find = |type_: &str| old.iter().find(|c| c["type"] == type_).cloned();
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions.iter_mut() {
            let before = c["type"].as_str().and_then(find);
            let at = match &before {
                Some(b) if b["status"] == c["status"] => b["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            c["lastTransitionTime"] = at;
            c["lastProbeTime"] = Value::Null;
        }
        let scheduled = find("PodScheduled")
            .unwrap_or_else(|| json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}));
        conditions.push(scheduled);
    }
    let start = current.map(|s| s["startTime"].clone()).filter(|t| t.is_string()).unwrap_or_else(|| json!(now));
    status["startTime"] = start;
    status
}
