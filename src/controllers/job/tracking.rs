//! Counting a Job's finished pods exactly once, as upstream's finalizer-based tracking:
//! a finished pod's uid is first recorded in `status.uncountedTerminatedPods`, then its
//! `batch.kubernetes.io/job-tracking` finalizer is removed, then the uids are folded into
//! `status.succeeded`/`failed` (and `completedIndexes`). A crash between the steps
//! repeats a step, never a count. A pod being deleted before it finished counts as failed
//! (podReplacementPolicy TerminatingOrFailed), unless the Job deleted it on purpose.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::policy::{self, Verdict};
use super::{Controller, TRACKING_FINALIZER, has_condition_in, indexes, is_finished, set_condition};
use crate::controllers::workload;

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

/// The uids recorded but not yet counted.
#[derive(Default)]
struct Uncounted {
    succeeded: Vec<String>,
    failed: Vec<String>,
}

impl Uncounted {
    fn of(status: &JobStatus) -> Uncounted {
        let u = status.uncounted_terminated_pods.clone().unwrap_or_default();
        Uncounted { succeeded: u.succeeded.unwrap_or_default(), failed: u.failed.unwrap_or_default() }
    }

    fn holds(&self, uid: &str) -> bool {
        self.succeeded.iter().chain(&self.failed).any(|u| u == uid)
    }

    fn is_empty(&self) -> bool {
        self.succeeded.is_empty() && self.failed.is_empty()
    }

    fn into_status(self) -> UncountedTerminatedPods {
        UncountedTerminatedPods { succeeded: Some(self.succeeded), failed: Some(self.failed) }
    }
}

/// Whether a pod deleted before it finished counts as a failure: not when the Job
/// itself deleted it because it is suspended or already succeeding.
fn deleted_pods_count(job: &Job, status: &JobStatus) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) != Some(true) && !has_condition_in(status, "SuccessCriteriaMet")
}

impl Controller {
    /// Record, release and count the Job's newly finished pods; returns the Job as written.
    pub(super) async fn track(&self, api: &Api<Job>, mut job: Job, pods: &[Arc<Pod>]) -> anyhow::Result<Job> {
        let mut status = job.status.clone().unwrap_or_default();
        let mut uncounted = Uncounted::of(&status);
        let mut release = Vec::new();
        let mut fail_job = None;
        let recorded = (uncounted.succeeded.len(), uncounted.failed.len());
        let count_deleted = deleted_pods_count(&job, &status);
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if uncounted.holds(&uid) || is_finished(&job) {
                release.push(pod.clone());
                continue;
            }
            let failed = workload::phase(pod) == "Failed"
                || (workload::is_terminating(pod) && !workload::is_terminal(pod) && count_deleted);
            if workload::phase(pod) == "Succeeded" {
                uncounted.succeeded.push(uid);
            } else if failed {
                let rules = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref());
                match policy::judge(rules, pod) {
                    Verdict::Ignore => {}
                    Verdict::Count | Verdict::FailIndex => uncounted.failed.push(uid),
                    Verdict::FailJob(message) => {
                        uncounted.failed.push(uid);
                        fail_job.get_or_insert(message);
                    }
                }
            } else if workload::is_terminating(pod) {
                // deleted by the Job (suspended or done): nothing to count
            } else {
                continue;
            }
            release.push(pod.clone());
        }
        if (uncounted.succeeded.len(), uncounted.failed.len()) != recorded || fail_job.is_some() {
            if let Some(message) = fail_job.filter(|_| !has_condition_in(&status, "FailureTarget")) {
                set_condition(&mut status, "FailureTarget", "True", "PodFailurePolicy", &message);
            }
            status.uncounted_terminated_pods = Some(Uncounted::into_status(std::mem::take(&mut uncounted)));
            job.status = Some(status);
            job = write_status(api, &job).await?;
            status = job.status.clone().unwrap_or_default();
            uncounted = Uncounted::of(&status);
        }
        for pod in &release {
            self.release(pod).await?;
        }
        if uncounted.is_empty() {
            return Ok(job);
        }
        fold(&mut status, uncounted, &job, pods);
        job.status = Some(status);
        write_status(api, &job).await
    }

    /// The Job `key` is gone (deleted in the background): its pods are counted by no
    /// one, so their tracking finalizers go, as upstream's orphan pod cleanup.
    pub(super) async fn release_orphans(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = crate::controllers::runtime::split_key(key);
        let orphans = self.pods.list_namespace(ns).into_iter().filter(|p| {
            has_finalizer(p)
                && crate::controllers::runtime::informer::controller_of(p.as_ref(), "Job")
                    .is_some_and(|o| o.name == name)
        });
        for pod in orphans {
            self.release(&pod).await?;
        }
        Ok(())
    }

    /// Remove the tracking finalizer (a gone pod needs nothing).
    async fn release(&self, pod: &Pod) -> anyhow::Result<()> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let rest: Vec<&String> =
            pod.metadata.finalizers.iter().flatten().filter(|f| *f != TRACKING_FINALIZER).collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": pod.metadata.resource_version}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Move the recorded uids into the counts.
fn fold(status: &mut JobStatus, uncounted: Uncounted, job: &Job, pods: &[Arc<Pod>]) {
    let indexed = job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed");
    if indexed {
        let mut done: BTreeSet<i32> = indexes::parse(status.completed_indexes.as_deref().unwrap_or_default());
        let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
        for uid in &uncounted.succeeded {
            let pod = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
            done.extend(pod.and_then(|p| indexes::of(p)).filter(|i| *i < completions));
        }
        status.succeeded = Some(done.len() as i32);
        status.completed_indexes = Some(indexes::format(&done));
    } else {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + uncounted.succeeded.len() as i32);
    }
    if let Some(limit) = job.spec.as_ref().and_then(|s| s.backoff_limit_per_index).filter(|_| indexed) {
        let mut failed = indexes::parse(status.failed_indexes.as_deref().unwrap_or_default());
        let rules = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref());
        for uid in &uncounted.failed {
            let Some(pod) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) else { continue };
            let exhausted = indexes::failures_before(pod) + 1 > limit;
            if exhausted || policy::judge(rules, pod) == Verdict::FailIndex {
                failed.extend(indexes::of(pod));
            }
        }
        status.failed_indexes = Some(indexes::format(&failed));
    }
    status.failed = Some(status.failed.unwrap_or(0) + uncounted.failed.len() as i32);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
}

async fn write_status(api: &Api<Job>, job: &Job) -> anyhow::Result<Job> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    Ok(api.replace_status(name, &PostParams::default(), job).await?)
}
