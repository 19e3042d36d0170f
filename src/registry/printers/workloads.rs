//! Workload controllers: replication controllers, apps/v1 kinds, jobs and cron jobs.

use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS, IMAGES, NAME, Printer, SELECTOR, age, col, containers_and_images, deleting, format_label_selector,
    format_labels, human_duration, int, list, name, selector_string, since, text, time_at,
};
use crate::registry::meta;

/// spec.replicas, which defaulting sets to 1 when a client leaves it out.
fn desired_replicas(obj: &Value) -> i64 {
    meta::value_at(obj, "spec.replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// `cells` followed by the wide Containers and Images cells of the pod template at
/// `template` (a dotted path) and, when given, the Selector cell.
fn with_template(mut cells: Vec<Value>, obj: &Value, template: &str, selector: Option<String>) -> Vec<Value> {
    let (names, images) = containers_and_images(meta::value_at(obj, &format!("{template}.spec")));
    cells.extend([json!(names), json!(images)]);
    cells.extend(selector.map(Value::String));
    cells
}

/// The Selector cell for the metav1.LabelSelector at `path`.
fn selector_at(obj: &Value, path: &str) -> Option<String> {
    Some(format_label_selector(meta::value_at(obj, path)))
}

/// "ready/desired" pods.
fn ready_of_desired(obj: &Value) -> Value {
    json!(format!("{}/{}", int(obj, "status.readyReplicas"), desired_replicas(obj)))
}

/// Desired / Current / Ready, then the wide template and selector cells: the layout
/// replication controllers and replica sets share.
fn replica_cells(obj: &Value, selector: Option<String>) -> Vec<Value> {
    let counts = vec![
        name(obj),
        json!(desired_replicas(obj)),
        json!(int(obj, "status.replicas")),
        json!(int(obj, "status.readyReplicas")),
        age(obj),
    ];
    with_template(counts, obj, "spec.template", selector)
}

pub static REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Number of pods the controller is asked to run."),
        col("Current", "integer", "Number of pods the controller currently runs."),
        col("Ready", "integer", "Number of the controller's pods that are ready."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o| replica_cells(o, Some(format_labels(meta::value_at(o, "spec.selector")))),
};

pub static REPLICA_SET: Printer =
    Printer { columns: REPLICATION_CONTROLLER.columns, cells: |o| replica_cells(o, selector_at(o, "spec.selector")) };

pub static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready pods out of the desired number."),
        col("Up-to-date", "string", "Number of pods running the latest pod template."),
        col("Available", "string", "Number of pods available to serve."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o| {
        let selector = selector_string(meta::value_at(o, "spec.selector")).unwrap_or_else(|| "<invalid>".into());
        let counts = vec![
            name(o),
            ready_of_desired(o),
            json!(int(o, "status.updatedReplicas")),
            json!(int(o, "status.availableReplicas")),
            age(o),
        ];
        with_template(counts, o, "spec.template", Some(selector))
    },
};

pub static STATEFUL_SET: Printer = Printer {
    columns: &[NAME, col("Ready", "string", "Ready pods out of the desired number."), AGE, CONTAINERS, IMAGES],
    cells: |o| with_template(vec![name(o), ready_of_desired(o), age(o)], o, "spec.template", None),
};

pub static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Number of nodes that should run the daemon pod."),
        col("Current", "integer", "Number of nodes running at least one daemon pod."),
        col("Ready", "integer", "Number of nodes whose daemon pod is ready."),
        col("Up-to-date", "integer", "Number of nodes running the latest pod template."),
        col("Available", "integer", "Number of nodes whose daemon pod is available."),
        col("Node Selector", "string", "Node labels the daemon pods are restricted to."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o| {
        let counts = vec![
            name(o),
            json!(int(o, "status.desiredNumberScheduled")),
            json!(int(o, "status.currentNumberScheduled")),
            json!(int(o, "status.numberReady")),
            json!(int(o, "status.updatedNumberScheduled")),
            json!(int(o, "status.numberAvailable")),
            json!(format_labels(meta::value_at(o, "spec.template.spec.nodeSelector"))),
            age(o),
        ];
        with_template(counts, o, "spec.template", selector_at(o, "spec.selector"))
    },
};

pub static CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "kind.group/name of the object that owns the revision."),
        col("Revision", "string", "Revision number of the stored state."),
        AGE,
    ],
    cells: |o| vec![name(o), json!(revision_controller(o)), json!(int(o, "revision")), age(o)],
};

/// The controlling owner as `kind.group/name` (lowercased kind and group), `<none>`.
fn revision_controller(obj: &Value) -> String {
    let owners = meta::metadata(obj).and_then(|m| m.get("ownerReferences")).and_then(Value::as_array);
    let Some(owner) = owners.into_iter().flatten().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".into();
    };
    let api_version = text(owner, "apiVersion");
    let group = match api_version.split('/').collect::<Vec<_>>()[..] {
        [_version] => "",
        [group, _version] => group,
        _ => return "<none>".into(),
    };
    let (kind, owner_name) = (text(owner, "kind"), text(owner, "name"));
    match (kind, group) {
        ("", "") => owner_name.to_string(),
        (kind, "") => format!("{}/{owner_name}", kind.to_lowercase()),
        (kind, group) => format!("{}.{}/{owner_name}", kind.to_lowercase(), group.to_lowercase()),
    }
}

pub static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Complete, Failed, Terminating, Suspended, FailureTarget or Running."),
        col("Completions", "string", "Succeeded pods out of the completions wanted."),
        col("Duration", "string", "How long the job ran, or has been running."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: job_cells,
};

/// Whether the job's first condition of type `ty` is True.
fn job_condition(job: &Value, ty: &str) -> bool {
    list(job, "status.conditions").iter().find(|c| text(c, "type") == ty).is_some_and(|c| text(c, "status") == "True")
}

fn job_cells(job: &Value) -> Vec<Value> {
    let succeeded = int(job, "status.succeeded");
    let completions = match meta::value_at(job, "spec.completions").and_then(Value::as_i64) {
        Some(wanted) => format!("{succeeded}/{wanted}"),
        None => match int(job, "spec.parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time_at(job, "status.startTime"), time_at(job, "status.completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start)),
        (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if deleting(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let cells = vec![name(job), json!(status), json!(completions), json!(duration), age(job)];
    with_template(cells, job, "spec.template", selector_at(job, "spec.selector"))
}

pub static CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", "Cron schedule of the job runs."),
        col("Timezone", "string", "Time zone the schedule is read in."),
        col("Suspend", "boolean", "Whether new runs are held back."),
        col("Active", "integer", "Number of jobs of this cron job now running."),
        col("Last Schedule", "string", "Time since a job was last scheduled."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o| {
        let suspend = match meta::value_at(o, "spec.suspend").and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let last = time_at(o, "status.lastScheduleTime").map_or_else(|| "<none>".into(), |t| since(Some(t)));
        let cells = vec![
            name(o),
            json!(text(o, "spec.schedule")),
            json!(meta::str_at(o, "spec.timeZone").unwrap_or("<none>")),
            json!(suspend),
            json!(list(o, "status.active").len()),
            json!(last),
            age(o),
        ];
        with_template(cells, o, "spec.jobTemplate.spec.template", selector_at(o, "spec.jobTemplate.spec.selector"))
    },
};

pub static POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        col("Min Available", "string", "The fewest pods that must stay available."),
        col("Max Unavailable", "string", "The most pods that may be unavailable."),
        col("Allowed Disruptions", "integer", "How many pods may be evicted now."),
        AGE,
    ],
    cells: |o| {
        let shown = |field: &str| match o.pointer(&format!("/spec/{field}")) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => "N/A".to_string(),
        };
        let allowed = o.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
        vec![name(o), json!(shown("minAvailable")), json!(shown("maxUnavailable")), json!(allowed), age(o)]
    },
};

#[cfg(test)]
mod tests {
    use super::super::{ago, test_object};
    use super::*;

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}})
    }

    #[test]
    fn deployments() {
        let d = test_object(
            "web",
            json!({"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
                   "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
        );
        let c = (DEPLOYMENT.cells)(&d);
        assert_eq!(c[..4], [json!("web"), json!("2/3"), json!(3), json!(2)]);
        assert_eq!(c[5..], [json!("web,log"), json!("nginx:1.27,busybox"), json!("app=web")]);
        let bad =
            test_object("x", json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}}));
        let c = (DEPLOYMENT.cells)(&bad);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[7], "<invalid>");
    }

    #[test]
    fn replica_sets_and_controllers() {
        let rs = test_object(
            "web-5d",
            json!({"spec": {"replicas": 2, "template": template(),
                            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d"}}},
                   "status": {"replicas": 2, "readyReplicas": 1}}),
        );
        let c = (REPLICA_SET.cells)(&rs);
        assert_eq!(c[..4], [json!("web-5d"), json!(2), json!(2), json!(1)]);
        assert_eq!(c[7], "app=web,pod-template-hash=5d");

        let rc = test_object("legacy", json!({"spec": {"replicas": 0, "selector": {"app": "legacy"}}}));
        let c = (REPLICATION_CONTROLLER.cells)(&rc);
        assert_eq!(c[1..4], [json!(0), json!(0), json!(0)]);
        assert_eq!(c[5..], [json!(""), json!(""), json!("app=legacy")]);
    }

    #[test]
    fn stateful_and_daemon_sets() {
        let sts =
            test_object("db", json!({"spec": {"replicas": 3, "template": template()}, "status": {"readyReplicas": 1}}));
        let c = (STATEFUL_SET.cells)(&sts);
        assert_eq!(c[1], "1/3");
        assert_eq!(c[3..], [json!("web,log"), json!("nginx:1.27,busybox")]);

        let mut t = template();
        t["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = test_object(
            "agent",
            json!({"spec": {"template": t, "selector": {"matchLabels": {"app": "agent"}}},
                   "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                              "updatedNumberScheduled": 3, "numberAvailable": 2}}),
        );
        let c = (DAEMON_SET.cells)(&ds);
        assert_eq!(c[1..7], [json!(3), json!(3), json!(2), json!(3), json!(2), json!("kubernetes.io/os=linux")]);
        assert_eq!(c[10], "app=agent");
        assert_eq!((DAEMON_SET.cells)(&test_object("x", json!({})))[6], "<none>");
    }

    #[test]
    fn controller_revisions() {
        let mut cr = test_object("db-7f", json!({"revision": 2}));
        cr["metadata"]["ownerReferences"] = json!([
            {"apiVersion": "v1", "kind": "Pod", "name": "other", "controller": false},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true},
        ]);
        assert_eq!((CONTROLLER_REVISION.cells)(&cr)[1..3], [json!("statefulset.apps/db"), json!(2)]);
        cr["metadata"]["ownerReferences"][1]["apiVersion"] = json!("v1");
        assert_eq!((CONTROLLER_REVISION.cells)(&cr)[1], "statefulset/db");
        cr["metadata"]["ownerReferences"] = json!([]);
        assert_eq!((CONTROLLER_REVISION.cells)(&cr)[1], "<none>");
    }

    #[test]
    fn jobs() {
        let done = test_object(
            "pi",
            json!({"spec": {"completions": 1, "parallelism": 1, "template": template(),
                            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}},
                   "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z",
                              "completionTime": "2024-01-01T00:02:05Z",
                              "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                             {"type": "Complete", "status": "True"}]}}),
        );
        let c = (JOB.cells)(&done);
        assert_eq!(c[1..4], [json!("Complete"), json!("1/1"), json!("2m5s")]);
        assert_eq!(
            c[5..],
            [json!("web,log"), json!("nginx:1.27,busybox"), json!("batch.kubernetes.io/controller-uid=u1")]
        );

        let running = test_object(
            "work",
            json!({"spec": {"parallelism": 3}, "status": {"startTime": ago(20 * 60), "active": 3}}),
        );
        assert_eq!((JOB.cells)(&running)[1..4], [json!("Running"), json!("0/1 of 3"), json!("20m")]);

        let suspended = test_object(
            "later",
            json!({"spec": {"completions": 5, "suspend": true},
                   "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
        );
        assert_eq!((JOB.cells)(&suspended)[1..4], [json!("Suspended"), json!("0/5"), json!("")]);

        let mut failed =
            test_object("bad", json!({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}));
        assert_eq!((JOB.cells)(&failed)[1..3], [json!("FailureTarget"), json!("0/1")]);
        failed["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!((JOB.cells)(&failed)[1], "Terminating");
        failed["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
        assert_eq!((JOB.cells)(&failed)[1], "Failed");
    }

    #[test]
    fn cron_jobs() {
        let cj = test_object(
            "backup",
            json!({"spec": {"schedule": "*/5 * * * *", "suspend": false,
                            "jobTemplate": {"spec": {"template": template()}}},
                   "status": {}}),
        );
        let c = (CRON_JOB.cells)(&cj);
        assert_eq!(
            c[..6],
            [json!("backup"), json!("*/5 * * * *"), json!("<none>"), json!("False"), json!(0), json!("<none>")]
        );
        assert_eq!(c[7..], [json!("web,log"), json!("nginx:1.27,busybox"), json!("<none>")]);

        let cj = test_object(
            "report",
            json!({"spec": {"schedule": "0 3 * * *", "timeZone": "Europe/Paris", "suspend": true},
                   "status": {"active": [{"name": "report-1"}], "lastScheduleTime": ago(40 * 60)}}),
        );
        assert_eq!((CRON_JOB.cells)(&cj)[2..6], [json!("Europe/Paris"), json!("True"), json!(1), json!("40m")]);
        assert_eq!((CRON_JOB.cells)(&test_object("x", json!({})))[3], "<unset>");
    }
}
