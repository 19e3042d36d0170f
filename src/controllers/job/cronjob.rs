//! The CronJob controller (upstream's cronjob-controller v2): each sync reconciles
//! `status.active` with the CronJob's Jobs, starts the Job of the most recent missed
//! schedule time (honouring suspend, startingDeadlineSeconds and concurrencyPolicy),
//! prunes finished Jobs beyond the history limits, and requeues the CronJob for its next
//! schedule time — no polling. Jobs are named `<cronjob>-<minutes since the epoch>`, so a
//! schedule time is never run twice. Bad schedules or time zones are Warning events.

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, Client};

use super::is_finished;
use crate::controllers::runtime::informer::controller_of;
use crate::controllers::runtime::{Ctx, Informer, Recorder, WorkQueue, events, key_of, split_key};
use crate::controllers::workload::{self, controller_ref};
use crate::cron::{self, Schedule};

/// The annotation on a CronJob's Job: its schedule time, in the CronJob's zone.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed start times beyond which a warning is given (upstream's).
const TOO_MANY_MISSED: usize = 100;

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("cronjob");
    let cronjobs = ctx.informer::<CronJob>();
    let jobs = ctx.informer::<Job>();
    cronjobs.on_change(workload::enqueue(queue.clone()));
    let q = queue.clone();
    jobs.on_change(move |ev| {
        let job = ev.object();
        if let Some(owner) = controller_of(job.as_ref(), "CronJob") {
            q.add(format!("{}/{}", job.metadata.namespace.as_deref().unwrap_or_default(), owner.name));
        }
    });
    let this = Controller {
        client: ctx.client.clone(),
        cronjobs,
        jobs,
        recorder: ctx.recorder("cronjob-controller"),
        queue: queue.clone(),
    };
    workload::run(ctx, queue, 5, this);
    Ok(())
}

struct Controller {
    client: Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    recorder: Recorder,
    queue: Arc<WorkQueue>,
}

/// `<cronjob>-<minutes since the epoch of the schedule time>`.
fn job_name(cj: &CronJob, at: Timestamp) -> String {
    format!("{}-{}", cj.metadata.name.as_deref().unwrap_or_default(), at.as_second().div_euclid(60))
}

/// Go's RFC 3339 rendering of `at` in `tz`: `Z` for a zero offset, else `+hh:mm`.
fn rfc3339(at: Timestamp, tz: &TimeZone) -> String {
    let zoned = at.to_zoned(tz.clone());
    match zoned.offset().seconds() {
        0 => zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        _ => zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    }
}

/// The most recent schedule time in (earliest, now], and how many were missed; the
/// earliest is the last schedule time (or creation), no earlier than the starting deadline.
fn most_recent(cj: &CronJob, schedule: &Schedule, tz: &TimeZone, now: Timestamp) -> (Option<Timestamp>, usize) {
    let status = cj.status.as_ref();
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = status.and_then(|s| s.last_schedule_time.as_ref()).map_or(created, |t| t.0);
    if let Some(deadline) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds) {
        let floor = Timestamp::from_second(now.as_second() - deadline).unwrap_or(now);
        earliest = earliest.max(floor);
    }
    let (mut last, mut missed) = (None, 0);
    let mut t = earliest;
    while let Some(next) = schedule.next(t, tz).filter(|n| *n <= now) {
        (last, missed, t) = (Some(next), missed + 1, next);
        if missed > TOO_MANY_MISSED {
            return (latest_since(schedule, tz, earliest, now).or(last), missed);
        }
    }
    (last, missed)
}

/// The latest schedule time in (earliest, now], looked for in growing windows before
/// `now`, so a CronJob stopped for years does not walk every minute since.
fn latest_since(schedule: &Schedule, tz: &TimeZone, earliest: Timestamp, now: Timestamp) -> Option<Timestamp> {
    const DAY: i64 = 86_400;
    for back in [3_600, DAY, 32 * DAY, 367 * DAY, 5 * 367 * DAY] {
        let from = Timestamp::from_second(now.as_second() - back).ok()?.max(earliest);
        let (mut t, mut found) = (from, None);
        while let Some(next) = schedule.next(t, tz).filter(|n| *n <= now) {
            (found, t) = (Some(next), next);
        }
        if found.is_some() {
            return found;
        }
    }
    None
}

impl workload::Reconcile for Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(cj) = self.cronjobs.get(key) else { return Ok(()) };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let (ns, _) = split_key(key);
        let children: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(ns)
            .into_iter()
            .filter(|j| controller_of(j.as_ref(), "CronJob").is_some_and(|o| Some(&o.uid) == cj.metadata.uid.as_ref()))
            .collect();
        let mut status = cj.status.clone().unwrap_or_default();
        self.reconcile_active(&cj, &children, &mut status);
        let mut working = (*cj).clone();
        working.status = Some(status.clone());
        if let Some(next) = self.maybe_start(&working, &mut status).await? {
            let wait = next.as_second() - Timestamp::now().as_second();
            self.queue.add_after(key.to_string(), Duration::from_millis(wait.max(0) as u64 * 1000 + 100));
        }
        status.active = status.active.filter(|a| !a.is_empty());
        if Some(&status) != cj.status.as_ref() && (cj.status.is_some() || status != Default::default()) {
            // a replace, not a patch: written over a newer status it would undo, it conflicts
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), ns);
            let name = cj.metadata.name.as_deref().unwrap_or_default();
            let mut updated = (*cj).clone();
            updated.status = Some(status);
            api.replace_status(name, &PostParams::default(), &updated).await?;
        }
        self.prune_history(&cj, &children).await
    }
}

impl Controller {
    /// Drop finished and vanished Jobs from `active`, noting the last success.
    fn reconcile_active(
        &self,
        cj: &CronJob,
        children: &[Arc<Job>],
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    ) {
        let mut active = status.active.take().unwrap_or_default();
        for job in children {
            let uid = job.metadata.uid.as_ref();
            let listed = active.iter().any(|r| r.uid.as_ref() == uid);
            let name = job.metadata.name.as_deref().unwrap_or_default();
            if listed && is_finished(job) {
                active.retain(|r| r.uid.as_ref() != uid);
                let condition = if super::has_condition(job, "Complete") { "Complete" } else { "Failed" };
                self.recorder.normal(
                    cj,
                    "SawCompletedJob",
                    format!("Saw completed job: {name}, condition: {condition}"),
                );
                if condition == "Complete" {
                    let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0) > status.last_successful_time.as_ref().map(|t| t.0) {
                        status.last_successful_time = done;
                    }
                }
            } else if !listed && !is_finished(job) {
                self.recorder.warning(
                    cj,
                    "UnexpectedJob",
                    format!("Saw a job that the controller did not create or forgot: {name}"),
                );
            }
        }
        let missing: Vec<ObjectReference> =
            active.iter().filter(|r| !children.iter().any(|j| j.metadata.uid == r.uid)).cloned().collect();
        for r in missing {
            self.recorder.normal(
                cj,
                "MissingJob",
                format!("Active job went missing: {}", r.name.clone().unwrap_or_default()),
            );
            active.retain(|a| a.uid != r.uid);
        }
        status.active = Some(active);
    }

    /// Start the Job of the most recent schedule time if it is due; returns the next
    /// schedule time to wake up for (None when there is nothing to wait for).
    async fn maybe_start(
        &self,
        cj: &CronJob,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    ) -> anyhow::Result<Option<Timestamp>> {
        let Some(spec) = cj.spec.as_ref() else { return Ok(None) };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let tz = match spec.time_zone.as_deref().map(cron::time_zone).transpose() {
            Ok(tz) => tz.unwrap_or_else(TimeZone::system),
            Err(e) => {
                let zone = spec.time_zone.clone().unwrap_or_default();
                self.recorder.warning(cj, "UnknownTimeZone", format!("invalid timeZone: {zone:?}: {e}"));
                return Ok(None);
            }
        };
        let schedule = match cron::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.recorder.warning(cj, "UnparseableSchedule", message);
                return Ok(None);
            }
        };
        let now = Timestamp::now();
        let next = schedule.next(now, &tz);
        if next.is_none() {
            // parses, but no time matches (30 February): upstream's InvalidSchedule
            let message = format!("invalid schedule: {} : no time in the next five years matches it", spec.schedule);
            self.recorder.warning(cj, "InvalidSchedule", message);
        }
        let (due, missed) = most_recent(cj, &schedule, &tz, now);
        let Some(due) = due else { return Ok(next) };
        if missed > TOO_MANY_MISSED {
            let message = format!(
                "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
            );
            self.recorder.warning(cj, "TooManyMissedTimes", message);
        }
        let name = job_name(cj, due);
        let active = status.active.get_or_insert_default();
        let already = active.iter().any(|r| r.name.as_deref() == Some(name.as_str()))
            || status.last_schedule_time.as_ref().is_some_and(|t| t.0 == due);
        if already {
            return Ok(next);
        }
        if let Some(deadline) = spec.starting_deadline_seconds
            && due.as_second() + deadline < now.as_second()
        {
            // upstream's message: the time in UTC, Go's RFC1123Z
            let at = due.to_zoned(TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S +0000").to_string();
            self.recorder.warning(cj, "MissSchedule", format!("Missed scheduled time to start a job: {at}"));
            return Ok(next);
        }
        match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => {
                let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.recorder.normal(cj, "JobAlreadyActive", message);
                return Ok(next);
            }
            "Replace" => {
                for r in std::mem::take(active) {
                    self.delete_job(cj, r.name.as_deref().unwrap_or_default()).await?;
                }
            }
            _ => {}
        }
        if let Some(job) = self.create_job(cj, due, &tz).await? {
            status.active.get_or_insert_default().push(events::reference(&job));
            status.last_schedule_time = Some(Time(due));
        }
        Ok(next)
    }

    /// Create the Job of schedule time `at`; None if a Job of that name already exists
    /// (made by someone else, or one being deleted), as upstream leaves it be.
    async fn create_job(&self, cj: &CronJob, at: Timestamp, tz: &TimeZone) -> anyhow::Result<Option<Job>> {
        let ns = cj.metadata.namespace.as_deref().unwrap_or_default();
        let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert(SCHEDULED_AT.into(), rfc3339(at, tz));
        let job = Job {
            metadata: ObjectMeta {
                name: Some(job_name(cj, at)),
                namespace: Some(ns.to_string()),
                labels: meta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(cj)]),
                ..Default::default()
            },
            spec: Some(template.spec.unwrap_or_default()),
            status: None,
        };
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        match api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                let name = created.metadata.name.as_deref().unwrap_or_default();
                self.recorder.normal(cj, "SuccessfulCreate", format!("Created job {name}"));
                Ok(Some(created))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::info!(cronjob = key_of(cj), job = job.metadata.name, "Job already exists");
                Ok(None)
            }
            Err(e) => {
                self.recorder.warning(cj, "FailedCreate", format!("Error creating job: {e}"));
                Err(e.into())
            }
        }
    }

    async fn delete_job(&self, cj: &CronJob, name: &str) -> anyhow::Result<()> {
        let ns = cj.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match api.delete(name, &dp).await {
            Ok(_) => {
                self.recorder.normal(cj, "SuccessfulDelete", format!("Deleted job {name}"));
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => {
                self.recorder.warning(cj, "FailedDelete", format!("Deleted job: {e}"));
                Err(e.into())
            }
        }
    }

    /// Delete the oldest finished Jobs beyond successfulJobsHistoryLimit/failedJobsHistoryLimit.
    async fn prune_history(&self, cj: &CronJob, children: &[Arc<Job>]) -> anyhow::Result<()> {
        let spec = cj.spec.as_ref();
        let limits = [
            ("Complete", spec.and_then(|s| s.successful_jobs_history_limit)),
            ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
        ];
        for (condition, limit) in limits {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = children.iter().filter(|j| super::has_condition(j, condition)).collect();
            done.sort_by_key(|j| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0));
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            for job in done.into_iter().take(excess) {
                if job.metadata.deletion_timestamp.is_none() {
                    self.delete_job(cj, job.metadata.name.as_deref().unwrap_or_default()).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cronjob(schedule: &str, created: &str, last: Option<&str>, deadline: Option<i64>) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "hello", "creationTimestamp": created},
            "spec": {"schedule": schedule, "startingDeadlineSeconds": deadline, "jobTemplate": {}},
            "status": {"lastScheduleTime": last},
        }))
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_recent_missed_time_since_the_last_run_or_the_deadline() {
        let s = cron::parse("*/10 * * * *").unwrap();
        let now = ts("2024-01-01T11:05:00Z");
        let cj = cronjob("", "2024-01-01T10:00:00Z", None, None);
        assert_eq!(most_recent(&cj, &s, &TimeZone::UTC, now), (Some(ts("2024-01-01T11:00:00Z")), 6));
        let cj = cronjob("", "2024-01-01T10:00:00Z", Some("2024-01-01T11:00:00Z"), None);
        assert_eq!(most_recent(&cj, &s, &TimeZone::UTC, now), (None, 0));
        let cj = cronjob("", "2024-01-01T10:00:00Z", None, Some(1200));
        assert_eq!(most_recent(&cj, &s, &TimeZone::UTC, now), (Some(ts("2024-01-01T11:00:00Z")), 2));
        // stopped for a year: the latest time all the same, and a count past the warning
        let every_minute = cron::parse("* * * * *").unwrap();
        let cj = cronjob("", "2023-01-01T10:00:00Z", None, None);
        let (last, missed) = most_recent(&cj, &every_minute, &TimeZone::UTC, now);
        assert_eq!(last, Some(ts("2024-01-01T11:05:00Z")));
        assert!(missed > TOO_MANY_MISSED);
    }

    #[test]
    fn scheduled_timestamps_read_as_go_writes_them() {
        let at = ts("2024-01-01T11:00:00Z");
        assert_eq!(rfc3339(at, &TimeZone::UTC), "2024-01-01T11:00:00Z");
        let berlin = cron::time_zone("Europe/Berlin").unwrap();
        assert_eq!(rfc3339(at, &berlin), "2024-01-01T12:00:00+01:00");
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        let cj = cronjob("", "2024-01-01T10:00:00Z", None, None);
        assert_eq!(job_name(&cj, ts("2024-01-01T11:00:00Z")), "hello-28401780");
    }
}
