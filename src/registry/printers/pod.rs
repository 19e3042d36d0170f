//! Pods: the Ready / Status / Restarts summary `kubectl get pods` shows.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{AGE, NAME, Printer, age, col, deleting, int, list, name, or_none, since, text, time_at, wide};
use crate::registry::meta;

pub static POD: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready containers out of all containers of the pod."),
        col("Status", "string", "A one-word summary of the pod's state."),
        col("Restarts", "string", "Container restarts, and how long ago the last one was."),
        AGE,
        wide("IP", "string", "The pod's primary IP address."),
        wide("Node", "string", "The node the pod is bound to."),
        wide("Nominated Node", "string", "The node the scheduler nominated for a preempting pod."),
        wide("Readiness Gates", "string", "Readiness gates whose condition is True, out of all of them."),
    ],
    cells: pod_cells,
};

fn is_true(v: &Value, field: &str) -> bool {
    v.get(field).and_then(Value::as_bool).unwrap_or(false)
}

fn has_condition(status: &Value, ty: &str, reason: Option<&str>) -> Option<bool> {
    list(status, "conditions")
        .iter()
        .find(|c| text(c, "type") == ty && reason.is_none_or(|r| text(c, "reason") == r))
        .map(|c| text(c, "status") == "True")
}

/// Restart totals and the latest restart time of a group of container statuses.
#[derive(Default)]
struct Restarts {
    count: i64,
    last: Option<DateTime<Utc>>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += int(status, "restartCount");
        if let Some(t) = time_at(status, "lastState.terminated.finishedAt") {
            self.last = self.last.max(Some(t));
        }
    }
}

/// "Init:Error", "Init:Signal:9", "Init:ExitCode:1" (or without the prefix) for a
/// terminated container state.
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    match text(terminated, "reason") {
        "" if int(terminated, "signal") != 0 => format!("{prefix}Signal:{}", int(terminated, "signal")),
        "" => format!("{prefix}ExitCode:{}", int(terminated, "exitCode")),
        reason => format!("{prefix}{reason}"),
    }
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let empty = json!({});
    let spec = pod.get("spec").unwrap_or(&empty);
    let status = pod.get("status").unwrap_or(&empty);
    let phase = text(status, "phase");
    let mut reason = match text(status, "reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if has_condition(status, "PodScheduled", Some("SchedulingGated")).is_some() {
        reason = "SchedulingGated".into();
    }

    let init_specs = list(spec, "initContainers");
    let restartable =
        |name: &str| init_specs.iter().any(|c| text(c, "name") == name && text(c, "restartPolicy") == "Always");
    let sidecars = init_specs.iter().filter(|c| text(c, "restartPolicy") == "Always").count();
    let total = list(spec, "containers").len() + sidecars;
    let mut ready = 0;

    let mut all = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    for (i, c) in list(status, "initContainerStatuses").iter().enumerate() {
        let sidecar = restartable(text(c, "name"));
        all.add(c);
        if sidecar {
            sidecar_restarts.add(c);
        }
        let terminated = meta::value_at(c, "state.terminated").filter(|t| t.is_object());
        let waiting_reason = text(c, "state.waiting.reason");
        if terminated.is_some_and(|t| int(t, "exitCode") == 0) {
            continue;
        }
        if sidecar && is_true(c, "started") {
            ready += usize::from(is_true(c, "ready"));
            continue;
        }
        reason = match terminated {
            Some(t) => terminated_reason(t, "Init:"),
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                format!("Init:{waiting_reason}")
            }
            None => format!("Init:{i}/{}", init_specs.len()),
        };
        initializing = true;
        break;
    }

    let mut restarts = all;
    if !initializing || has_condition(status, "Initialized", None) == Some(true) {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for c in list(status, "containerStatuses").iter().rev() {
            restarts.add(c);
            let terminated = meta::value_at(c, "state.terminated").filter(|t| t.is_object());
            let waiting_reason = text(c, "state.waiting.reason");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if is_true(c, "ready") && meta::value_at(c, "state.running").is_some_and(Value::is_object) {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(status, "Ready", None) == Some(true) { "Running" } else { "NotReady" }.into();
        }
    }

    let deleting = deleting(pod);
    if deleting && text(status, "reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match restarts.last {
        Some(t) if restarts.count != 0 => format!("{} ({} ago)", restarts.count, since(Some(t))),
        _ => restarts.count.to_string(),
    };

    let ip = list(status, "podIPs").first().map_or_else(|| text(status, "podIP"), |p| text(p, "ip"));
    let gates = list(spec, "readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let passed =
            gates.iter().filter(|g| has_condition(status, text(g, "conditionType"), None) == Some(true)).count();
        format!("{passed}/{}", gates.len())
    };

    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(pod),
        json!(or_none(ip)),
        json!(or_none(text(spec, "nodeName"))),
        json!(or_none(text(status, "nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": spec, "status": status,
        })
    }

    fn cells(p: &Value) -> Vec<Value> {
        (POD.cells)(p)
    }

    #[test]
    fn pending_pod() {
        let p = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}), json!({"phase": "Pending"}));
        let c = cells(&p);
        assert_eq!(c.len(), POD.columns.len());
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Pending");
        assert_eq!(c[3], "0");
        assert!(c[4].as_str().unwrap().ends_with('d'), "{}", c[4]);
        assert_eq!(&c[5..], &[json!("<none>"), json!("<none>"), json!("<none>"), json!("<none>")]);
    }

    #[test]
    fn image_pull_error() {
        let p = pod(
            json!({"containers": [{"name": "c", "image": "nope"}], "nodeName": "n1"}),
            json!({
                "phase": "Pending", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "pull failed"}}}],
            }),
        );
        let c = cells(&p);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "ErrImagePull");
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn running_with_restarts_and_crash_loop() {
        let finished = (Utc::now() - chrono::Duration::seconds(300)).to_rfc3339();
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}],
                   "readinessGates": [{"conditionType": "example.com/gate"}]}),
            json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "example.com/gate", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": finished}}},
                    {"name": "b", "ready": false, "restartCount": 3,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}}},
                ],
            }),
        );
        let c = cells(&p);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3 (5m ago)");
        assert_eq!(c[8], "1/1");
    }

    #[test]
    fn completed_and_error_and_signal() {
        let done = |term: Value| {
            cells(&pod(
                json!({"containers": [{"name": "a"}]}),
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": term}}]}),
            ))[2]
                .clone()
        };
        assert_eq!(done(json!({"exitCode": 0, "reason": "Completed"})), "Completed");
        assert_eq!(done(json!({"exitCode": 1, "reason": "Error"})), "Error");
        assert_eq!(done(json!({"exitCode": 137, "signal": 9})), "Signal:9");
        assert_eq!(done(json!({"exitCode": 2})), "ExitCode:2");
    }

    #[test]
    fn init_containers() {
        let spec = json!({
            "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
        });
        // first init container still running
        let c = cells(&pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "state": {"running": {}}},
                {"name": "proxy", "state": {"waiting": {"reason": "PodInitializing"}}},
            ]}),
        ));
        assert_eq!(c[1], "0/2");
        assert_eq!(c[2], "Init:0/2");
        // init container failed
        let c = cells(&pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "restartCount": 2, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
            ]}),
        ));
        assert_eq!(c[2], "Init:Error");
        assert_eq!(c[3], "2");
        // waiting with a reason
        let c = cells(&pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ]}),
        ));
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        // initialised: the sidecar counts as a ready container
        let c = cells(&pod(
            spec,
            json!({"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "setup", "restartCount": 4, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}},
                ],
                "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}],
            }),
        ));
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1", "only sidecar restarts count once initialised");
    }

    #[test]
    fn terminating_gated_and_malformed() {
        let mut p = pod(json!({"containers": [{"name": "a"}]}), json!({"phase": "Running"}));
        p["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
        assert_eq!(cells(&p)[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(&p)[2], "Unknown");

        let gated = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(cells(&gated)[2], "SchedulingGated");

        let junk = cells(&json!({"spec": 5, "status": {"containerStatuses": "x", "initContainerStatuses": [7]}}));
        assert_eq!(junk.len(), POD.columns.len());
        assert_eq!(junk[0], "");
        assert_eq!(junk[4], "<unknown>");
    }
}
