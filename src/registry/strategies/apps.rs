//! Strategies of the workload kinds (apps/v1, batch/v1) and Ingress.

use serde_json::{Value, json};

use super::core::{child, default_field, default_pod_spec, validate_pod_spec};
use crate::handlers::status::FieldError;
use crate::registry::strategy::Strategy;
use crate::registry::validation::validate_selector_matches_template;

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec, false);
    }
}

fn validate_workload(obj: &Value, errs: &mut Vec<FieldError>) {
    validate_selector_matches_template(obj, errs);
    validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", errs);
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        errs.push(FieldError::invalid("spec.replicas", &json!(r), "must be greater than or equal to 0"));
    }
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let (n, o) = (new.pointer("/spec/selector"), old.pointer("/spec/selector"));
    if n != o {
        errs.push(FieldError::immutable("spec.selector", n.unwrap_or(&Value::Null)));
    }
}

/// A workload kind: pod template + selector, with its own spec defaults.
pub struct Workload {
    defaults: fn(&mut Value),
    extra_validation: fn(&Value, &mut Vec<FieldError>),
}

impl Strategy for Workload {
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        (self.defaults)(child(obj, "spec"));
        default_template(obj);
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_workload(obj, &mut errs);
        (self.extra_validation)(obj, &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        errs
    }
}

fn no_extra(_: &Value, _: &mut Vec<FieldError>) {}

pub static DEPLOYMENT: Workload = Workload {
    defaults: |spec| {
        default_field(spec, "replicas", json!(1));
        default_field(spec, "strategy", json!({}));
        let strategy = &mut spec["strategy"];
        default_field(strategy, "type", json!("RollingUpdate"));
        if strategy["type"] == "RollingUpdate" {
            let ru = child(strategy, "rollingUpdate");
            default_field(ru, "maxUnavailable", json!("25%"));
            default_field(ru, "maxSurge", json!("25%"));
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(spec, "progressDeadlineSeconds", json!(600));
    },
    extra_validation: |obj, errs| {
        let ty = obj.pointer("/spec/strategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate");
        if !["Recreate", "RollingUpdate"].contains(&ty) {
            errs.push(FieldError::unsupported("spec.strategy.type", ty, &["Recreate", "RollingUpdate"]));
        }
        if ty == "Recreate" && obj.pointer("/spec/strategy/rollingUpdate").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
    },
};

pub static REPLICA_SET: Workload =
    Workload { defaults: |spec| default_field(spec, "replicas", json!(1)), extra_validation: no_extra };

pub static STATEFUL_SET: Workload = Workload {
    defaults: |spec| {
        default_field(spec, "replicas", json!(1));
        default_field(spec, "podManagementPolicy", json!("OrderedReady"));
        default_field(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            default_field(child(&mut spec["updateStrategy"], "rollingUpdate"), "partition", json!(0));
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
        default_field(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        for t in spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut).into_iter().flatten() {
            default_field(child(t, "spec"), "volumeMode", json!("Filesystem"));
            default_field(t, "status", json!({"phase": "Pending"}));
            default_field(t, "apiVersion", json!("v1"));
            default_field(t, "kind", json!("PersistentVolumeClaim"));
        }
    },
    extra_validation: no_extra,
};

pub static DAEMON_SET: Workload = Workload {
    defaults: |spec| {
        default_field(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            let ru = child(&mut spec["updateStrategy"], "rollingUpdate");
            default_field(ru, "maxUnavailable", json!(1));
            default_field(ru, "maxSurge", json!(0));
        }
        default_field(spec, "revisionHistoryLimit", json!(10));
    },
    extra_validation: no_extra,
};

/// Jobs: the server generates the selector from the job's uid (unless manualSelector).
pub struct JobStrategy;
pub static JOB: JobStrategy = JobStrategy;

pub fn default_job_spec(spec: &mut Value) {
    let both_unset =
        spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null);
    if both_unset {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default_field(spec, "parallelism", json!(1));
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(pod_spec) = spec.pointer_mut("/template/spec") {
        default_pod_spec(pod_spec, false);
    }
}

fn validate_job_template(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let pod = spec.and_then(|s| s.pointer("/template/spec"));
    validate_pod_spec(pod, &format!("{path}.template.spec"), errs);
    let restart = pod.and_then(|p| p.get("restartPolicy")).and_then(Value::as_str).unwrap_or("Always");
    if !["OnFailure", "Never"].contains(&restart) {
        errs.push(FieldError::unsupported(
            format!("{path}.template.spec.restartPolicy"),
            restart,
            &["OnFailure", "Never"],
        ));
    }
}

impl Strategy for JobStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_job_spec(child(obj, "spec"));
        let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
        let uid = crate::registry::meta::meta_str(obj, "uid").to_string();
        let name = crate::registry::meta::name(obj).to_string();
        if !manual && !uid.is_empty() && obj.pointer("/spec/selector").is_none_or(Value::is_null) {
            obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let template = child(&mut obj["spec"], "template");
            let labels = child(child(template, "metadata"), "labels");
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                default_field(labels, k, json!(v));
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_job_template(obj.get("spec"), "spec", &mut errs);
        for field in ["parallelism", "completions", "backoffLimit"] {
            if let Some(v) = obj["spec"].get(field).and_then(Value::as_i64).filter(|v| *v < 0) {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    &json!(v),
                    "must be greater than or equal to 0",
                ));
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        selector_immutable(new, old, &mut errs);
        if new.pointer("/spec/template") != old.pointer("/spec/template")
            && old.pointer("/spec/suspend") != Some(&json!(true))
        {
            errs.push(FieldError::immutable("spec.template", new.pointer("/spec/template").unwrap_or(&Value::Null)));
        }
        errs
    }
    fn field_labels(&self) -> &'static [&'static str] {
        &["status.successful"]
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        (label == "status.successful")
            .then(|| obj.pointer("/status/succeeded").and_then(Value::as_i64).unwrap_or(0).to_string())
    }
}

pub struct CronJobStrategy;
pub static CRON_JOB: CronJobStrategy = CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        let spec = child(obj, "spec");
        default_field(spec, "concurrencyPolicy", json!("Allow"));
        default_field(spec, "suspend", json!(false));
        default_field(spec, "successfulJobsHistoryLimit", json!(3));
        default_field(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(job_spec) = spec.pointer_mut("/jobTemplate/spec") {
            // only the pod template and counts; the selector comes when a job is made
            let both_unset = job_spec.get("completions").is_none() && job_spec.get("parallelism").is_none();
            default_field(job_spec, "backoffLimit", json!(6));
            default_field(job_spec, "completionMode", json!("NonIndexed"));
            default_field(job_spec, "suspend", json!(false));
            default_field(job_spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            if both_unset {
                job_spec["completions"] = json!(1);
                job_spec["parallelism"] = json!(1);
            }
            if let Some(pod_spec) = job_spec.pointer_mut("/template/spec") {
                default_pod_spec(pod_spec, false);
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_schedule(obj, &mut errs);
        let name = crate::registry::meta::name(obj);
        if name.len() > 52 {
            errs.push(FieldError::invalid("metadata.name", &json!(name), "must be no more than 52 characters"));
        }
        let policy = obj.pointer("/spec/concurrencyPolicy").and_then(Value::as_str).unwrap_or("Allow");
        if !["Allow", "Forbid", "Replace"].contains(&policy) {
            errs.push(FieldError::unsupported("spec.concurrencyPolicy", policy, &["Allow", "Forbid", "Replace"]));
        }
        validate_job_template(obj.pointer("/spec/jobTemplate/spec"), "spec.jobTemplate.spec", &mut errs);
        errs
    }
}

/// spec.schedule and spec.timeZone as upstream validates them: a standard cron schedule
/// (`crate::cron`) without a `TZ=`/`CRON_TZ=` prefix, and a known IANA zone.
fn validate_schedule(obj: &Value, errs: &mut Vec<FieldError>) {
    let schedule = obj.pointer("/spec/schedule").and_then(Value::as_str).unwrap_or_default();
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if schedule.contains("TZ") {
        let msg = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";
        errs.push(FieldError::invalid("spec.schedule", &json!(schedule), msg));
    } else if let Err(e) = crate::cron::parse(schedule) {
        errs.push(FieldError::invalid("spec.schedule", &json!(schedule), &e));
    }
    let Some(zone) = obj.pointer("/spec/timeZone").and_then(Value::as_str) else { return };
    let problem = match zone {
        "" => Some("timeZone must be nil or non-empty string".to_string()),
        z if z.eq_ignore_ascii_case("local") => {
            Some("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".to_string())
        }
        z => crate::cron::time_zone(z).err().map(|_| format!("unknown time zone {z}")),
    };
    if let Some(msg) = problem {
        errs.push(FieldError::invalid("spec.timeZone", &json!(zone), &msg));
    }
}

pub struct IngressStrategy;
pub static INGRESS: IngressStrategy = IngressStrategy;

impl Strategy for IngressStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let rules = obj.pointer("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
        if rules.is_empty() && obj.pointer("/spec/defaultBackend").is_none() {
            errs.push(FieldError::invalid(
                "spec",
                &json!(obj.get("spec")),
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            for (j, path) in rule.pointer("/http/paths").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let at = format!("spec.rules[{i}].http.paths[{j}]");
                match path.get("pathType").and_then(Value::as_str) {
                    None => errs.push(FieldError::required(format!("{at}.pathType"), "pathType must be specified")),
                    Some(t) if !["Exact", "Prefix", "ImplementationSpecific"].contains(&t) => {
                        errs.push(FieldError::unsupported(
                            format!("{at}.pathType"),
                            t,
                            &["Exact", "ImplementationSpecific", "Prefix"],
                        ))
                    }
                    _ => {}
                }
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let errors = |schedule: &str, zone: Option<&str>| {
            let mut errs = Vec::new();
            validate_schedule(&json!({"spec": {"schedule": schedule, "timeZone": zone}}), &mut errs);
            errs.len()
        };
        for ok in ["* * * * *", "*/5 0 1-3 * MON-FRI", "@hourly"] {
            assert_eq!(errors(ok, None), 0, "{ok}");
        }
        for bad in ["", "* * * *", "*/0 * * * *", "@sometimes", "TZ=UTC 0 0 * * *", "CRON_TZ=UTC 0 0 * * *"] {
            assert_eq!(errors(bad, None), 1, "{bad}");
        }
        assert_eq!(errors("@daily", Some("Europe/Paris")), 0);
        for zone in ["", "Local", "Nowhere/Special"] {
            assert_eq!(errors("@daily", Some(zone)), 1, "{zone}");
        }
    }
}
