//! The Job controller (upstream's job-controller), the CronJob controller (`cronjob.rs`)
//! and the TTL-after-finished controller (`ttl.rs`).
//!
//! A Job's pods carry the `batch.kubernetes.io/job-tracking` finalizer until the Job has
//! counted them (`tracking.rs`), so a pod deleted or garbage-collected early is never lost
//! from `status.succeeded`/`failed`. Each sync then decides, in upstream's order: failed
//! (podFailurePolicy FailJob, backoffLimit, activeDeadlineSeconds), complete, suspended,
//! or running — creating or deleting pods to reach `parallelism`.

mod cronjob;
mod indexes;
mod pods;
mod policy;
mod tracking;
mod ttl;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use super::runtime::{Ctx, Informer, Recorder, WorkQueue, split_key};
use super::workload::{self, Expectations};

pub use cronjob::start as start_cronjob;
pub use ttl::start as start_ttl_after_finished;

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("job");
    let jobs = ctx.informer::<Job>();
    let pods = ctx.informer::<Pod>();
    jobs.on_change(workload::enqueue(queue.clone()));
    pods.on_change(workload::enqueue_owner(queue.clone(), "Job"));
    let this = Controller {
        client: ctx.client.clone(),
        jobs,
        pods,
        recorder: ctx.recorder("job-controller"),
        expectations: Expectations::default(),
        queue: queue.clone(),
    };
    workload::run(ctx, queue, 5, this);
    Ok(())
}

struct Controller {
    client: Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    recorder: Recorder,
    expectations: Expectations,
    queue: Arc<WorkQueue>,
}

/// Whether the Job has the condition `type_` with status True.
pub fn has_condition(job: &Job, type_: &str) -> bool {
    conditions(job).iter().any(|c| c.type_ == type_ && c.status == "True")
}

fn conditions(job: &Job) -> &[JobCondition] {
    job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default()
}

/// Complete or Failed: upstream's IsJobFinished.
pub fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

/// Set a condition, keeping its transition time when its status does not change; one
/// already so (same status, reason and message) is left alone, probe time included.
fn set_condition(status: &mut JobStatus, type_: &str, value: &str, reason: &str, message: &str) {
    let now = Time(Timestamp::now());
    let list = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
            return;
        }
        if c.status != value {
            c.last_transition_time = Some(now.clone());
        }
        c.status = value.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = Some(now);
        return;
    }
    list.push(JobCondition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

/// What a sync found about the Job's pods after counting the finished ones.
struct Census {
    active: Vec<Arc<Pod>>,
    terminating: usize,
    /// The pods this controller made or deleted were all in the cache before the pods
    /// were read (checked first: checked after, a pod arriving in between would be
    /// neither expected nor seen, and made twice).
    settled: bool,
}

impl workload::Reconcile for Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, _) = split_key(key);
        let Some(job) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return self.release_orphans(key).await;
        };
        let settled = self.expectations.satisfied(key, &self.pods, ns);
        let pods = workload::owned_pods(&self.pods, job.as_ref());
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let mut job = self.track(&api, (*job).clone(), &pods).await?;
        // a Job being deleted only has its pods counted, never new ones made
        if is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let census = Census {
            active: pods.iter().filter(|p| workload::is_active(p)).cloned().collect(),
            terminating: pods.iter().filter(|p| workload::is_terminating(p) && !workload::is_terminal(p)).count(),
            settled,
        };
        let before = job.status.clone();
        let mut status = job.status.take().unwrap_or_default();
        self.decide(key, &job, &mut status, &census, &pods).await?;
        status.active = Some(census.active.len() as i32);
        status.ready = Some(census.active.iter().filter(|p| workload::is_ready(p)).count() as i32);
        status.terminating = Some(census.terminating as i32);
        job.status = Some(status);
        if job.status != before {
            let name = job.metadata.name.clone().unwrap_or_default();
            api.replace_status(&name, &PostParams::default(), &job).await?;
        }
        Ok(())
    }
}

impl Controller {
    /// Failed, complete, suspended or running: the one that applies, acted on.
    async fn decide(
        &self,
        key: &str,
        job: &Job,
        status: &mut JobStatus,
        census: &Census,
        pods: &[Arc<Pod>],
    ) -> anyhow::Result<()> {
        if let Some((reason, message)) = self.failure(job, status, &census.active) {
            set_condition(status, "FailureTarget", "True", &reason, &message);
            self.delete_pods(key, job, &census.active).await?;
            if census.terminating == 0 && census.active.is_empty() {
                set_condition(status, "Failed", "True", &reason, &message);
                self.recorder.warning(job, &reason, message);
            }
            return Ok(());
        }
        if let Some((reason, message)) = pods::success(job, status, census.active.len()) {
            set_condition(status, "SuccessCriteriaMet", "True", &reason, &message);
            self.delete_pods(key, job, &census.active).await?;
            if census.terminating == 0 && census.active.is_empty() {
                set_condition(status, "Complete", "True", &reason, &message);
                status.completion_time = Some(Time(Timestamp::now()));
                self.recorder.normal(job, "Completed", "Job completed");
            }
            return Ok(());
        }
        let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
        if suspended {
            self.delete_pods(key, job, &census.active).await?;
            if !has_condition_in(status, "Suspended") {
                set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended");
                self.recorder.normal(job, "Suspended", "Job suspended");
            }
            status.start_time = None;
            return Ok(());
        }
        if has_condition_in(status, "Suspended") {
            set_condition(status, "Suspended", "False", "JobResumed", "Job resumed");
            self.recorder.normal(job, "Resumed", "Job resumed");
        }
        let start = status.start_time.get_or_insert_with(|| Time(Timestamp::now())).0;
        if let Some(deadline) = job.spec.as_ref().and_then(|s| s.active_deadline_seconds) {
            let left = deadline - (Timestamp::now().as_second() - start.as_second());
            self.queue.add_after(key.to_string(), Duration::from_secs(left.max(0) as u64 + 1));
        }
        self.scale(key, job, status, census, pods).await
    }

    /// Why the Job fails now, if it does: an earlier FailureTarget, a FailJob rule (set by
    /// `track`), the backoff limit (failed pods, plus the container restarts of running
    /// pods when they restart OnFailure), or the deadline.
    fn failure(&self, job: &Job, status: &JobStatus, active: &[Arc<Pod>]) -> Option<(String, String)> {
        let spec = job.spec.as_ref()?;
        let earlier = status.conditions.iter().flatten().find(|c| c.type_ == "FailureTarget" && c.status == "True");
        if let Some(c) = earlier {
            return Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()));
        }
        let on_failure = spec.template.spec.as_ref().and_then(|p| p.restart_policy.as_deref()) == Some("OnFailure");
        let restarts: i32 = match on_failure {
            true => active.iter().map(|p| restart_count(p)).sum(),
            false => 0,
        };
        if let Some(why) = failed_indexes(job, status) {
            return Some(why);
        }
        let per_index = spec.backoff_limit_per_index.is_some();
        if !per_index && status.failed.unwrap_or(0) + restarts > spec.backoff_limit.unwrap_or(6) {
            return Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
        }
        let started = status.start_time.as_ref()?;
        let deadline = spec.active_deadline_seconds?;
        (spec.suspend != Some(true) && Timestamp::now().as_second() - started.0.as_second() >= deadline)
            .then(|| ("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()))
    }
}

/// With backoffLimitPerIndex: failed when more indexes failed than maxFailedIndexes, or
/// when every index is done and some failed.
fn failed_indexes(job: &Job, status: &JobStatus) -> Option<(String, String)> {
    let spec = job.spec.as_ref()?;
    spec.backoff_limit_per_index?;
    let failed = indexes::parse(status.failed_indexes.as_deref().unwrap_or_default()).len() as i32;
    if spec.max_failed_indexes.is_some_and(|max| failed > max) {
        let message = "Job has exceeded the specified maximal number of failed indexes";
        return Some(("MaxFailedIndexesExceeded".into(), message.into()));
    }
    let completed = indexes::parse(status.completed_indexes.as_deref().unwrap_or_default()).len() as i32;
    (failed > 0 && failed + completed >= spec.completions.unwrap_or(0))
        .then(|| ("FailedIndexes".into(), "Job has failed indexes".into()))
}

/// The restarts of all the pod's containers (init containers included).
fn restart_count(pod: &Pod) -> i32 {
    let Some(status) = pod.status.as_ref() else { return 0 };
    let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    all.map(|c| c.restart_count).sum()
}

fn has_condition_in(status: &JobStatus, type_: &str) -> bool {
    status.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == "True")
}
