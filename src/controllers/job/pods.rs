//! A running Job's pods: how many it wants (parallelism, the completions left, the
//! pending indexes of an Indexed Job), making them from the template with the tracking
//! finalizer and index, deleting extras, and waiting out the failure backoff (10 s
//! doubling to 6 min, upstream's) before replacing failed pods.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use super::{Census, Controller, TRACKING_FINALIZER, indexes};
use crate::controllers::workload;

const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

fn indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref().and_then(|s| s.completions)
}

/// Whether the Job has succeeded, and why (the SuccessCriteriaMet reason and message):
/// an earlier verdict, a `successPolicy` rule of an Indexed Job, or enough completions —
/// without `completions`, one success and no pod left running.
pub(super) fn success(job: &Job, status: &JobStatus, active: usize) -> Option<(String, String)> {
    let earlier = status.conditions.iter().flatten().find(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True");
    if let Some(c) = earlier {
        return Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()));
    }
    if let Some(i) = matched_success_rule(job, status) {
        return Some(("SuccessPolicy".into(), format!("Matched rules at index {i}")));
    }
    let succeeded = status.succeeded.unwrap_or(0);
    let done = match completions(job) {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active == 0,
    };
    done.then(|| ("CompletionsReached".into(), "Reached expected number of succeeded pods".into()))
}

/// The first `successPolicy` rule the completed indexes satisfy: all of its
/// `succeededIndexes`, or `succeededCount` of them (of any index without a list).
fn matched_success_rule(job: &Job, status: &JobStatus) -> Option<usize> {
    let rules = job.spec.as_ref()?.success_policy.as_ref()?.rules.iter();
    let done = indexes::parse(status.completed_indexes.as_deref().unwrap_or_default());
    rules.enumerate().find_map(|(i, rule)| {
        let wanted = rule.succeeded_indexes.as_deref().map(indexes::parse);
        let hits = wanted.as_ref().map_or(done.len(), |w| w.intersection(&done).count());
        let ok = match (&wanted, rule.succeeded_count) {
            (Some(w), None) => !w.is_empty() && hits == w.len(),
            (_, Some(n)) => hits >= n.max(0) as usize,
            (None, None) => false,
        };
        ok.then_some(i)
    })
}

/// The indexes of an Indexed Job that are neither complete nor running.
fn pending_indexes(job: &Job, status: &JobStatus, active: &[Arc<Pod>]) -> Vec<i32> {
    let mut done = indexes::parse(status.completed_indexes.as_deref().unwrap_or_default());
    done.extend(indexes::parse(status.failed_indexes.as_deref().unwrap_or_default()));
    let running: BTreeSet<i32> = active.iter().filter_map(|p| indexes::of(p)).collect();
    (0..completions(job).unwrap_or(0)).filter(|i| !done.contains(i) && !running.contains(i)).collect()
}

/// Active pods beyond what the Job wants: duplicate or out-of-range indexes, then the
/// surplus over `want`, unready and newest first.
fn surplus(job: &Job, active: &[Arc<Pod>], want: usize) -> Vec<Arc<Pod>> {
    let mut keep: Vec<Arc<Pod>> = active.to_vec();
    keep.sort_by_key(|p| {
        (workload::is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)))
    });
    keep.reverse();
    let mut out = Vec::new();
    if indexed(job) {
        let mut seen = BTreeSet::new();
        let limit = completions(job).unwrap_or(0);
        let (kept, dropped): (Vec<_>, Vec<_>) =
            keep.into_iter().partition(|p| indexes::of(p).is_some_and(|i| i < limit && seen.insert(i)));
        keep = kept;
        out = dropped;
    }
    out.extend(keep.into_iter().skip(want));
    out
}

/// How long to wait before replacing failed pods, if at all.
fn backoff_left(status: &JobStatus, pods: &[Arc<Pod>]) -> Option<Duration> {
    let failed = status.failed.unwrap_or(0);
    if failed == 0 {
        return None;
    }
    let last = pods
        .iter()
        .filter(|p| workload::phase(p) == "Failed")
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max()?;
    let delay = BACKOFF_BASE.saturating_mul(1 << (failed - 1).min(6)).min(BACKOFF_MAX);
    let since = Timestamp::now().duration_since(last).as_secs();
    let left = delay.as_secs() as i64 - since;
    (left > 0).then(|| Duration::from_secs(left as u64))
}

/// With backoffLimitPerIndex, how many pods of `index` have failed (their counts carried on).
fn index_failures(job: &Job, index: Option<i32>, pods: &[Arc<Pod>]) -> Option<i32> {
    job.spec.as_ref()?.backoff_limit_per_index?;
    let failed = pods.iter().filter(|p| workload::phase(p) == "Failed" && indexes::of(p) == index);
    Some(failed.map(|p| indexes::failures_before(p) + 1).max().unwrap_or(0))
}

/// A pod of the Job: its template, owned and tracked, with its completion index (and,
/// with backoffLimitPerIndex, the failures of that index so far).
fn new_pod(job: &Job, index: Option<i32>, failures: Option<i32>) -> Pod {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    meta.name = None;
    meta.generate_name = Some(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    meta.namespace = job.metadata.namespace.clone();
    meta.owner_references = Some(vec![workload::controller_ref(job)]);
    meta.finalizers = Some(vec![TRACKING_FINALIZER.to_string()]);
    if let Some(n) = failures {
        meta.annotations.get_or_insert_default().insert(indexes::FAILURE_COUNT_KEY.into(), n.to_string());
    }
    if let Some(i) = index {
        meta.annotations.get_or_insert_default().insert(indexes::INDEX_KEY.into(), i.to_string());
        meta.labels.get_or_insert_default().insert(indexes::INDEX_KEY.into(), i.to_string());
        spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{}']", indexes::INDEX_KEY),
                    api_version: None,
                }),
                ..Default::default()
            }),
            value: None,
        };
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            c.env.get_or_insert_default().push(env.clone());
        }
    }
    Pod { metadata: meta, spec: Some(spec), status: None }
}

impl Controller {
    /// Create or delete pods towards `parallelism` (and the completions left).
    pub(super) async fn scale(
        &self,
        key: &str,
        job: &Job,
        status: &JobStatus,
        census: &Census,
        pods: &[Arc<Pod>],
    ) -> anyhow::Result<()> {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        if !census.settled {
            return Ok(());
        }
        let parallelism = job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1).max(0) as usize;
        let succeeded = status.succeeded.unwrap_or(0);
        let want = match (indexed(job), completions(job)) {
            (true, _) => parallelism,
            (false, Some(c)) => parallelism.min((c - succeeded).max(0) as usize),
            (false, None) if succeeded > 0 => 0,
            (false, None) => parallelism,
        };
        let extra = surplus(job, &census.active, want);
        if !extra.is_empty() {
            return self.delete_pods(key, job, &extra).await;
        }
        let slots = want.saturating_sub(census.active.len());
        let new: Vec<Option<i32>> = match indexed(job) {
            true => pending_indexes(job, status, &census.active).into_iter().take(slots).map(Some).collect(),
            false => vec![None; slots],
        };
        if new.is_empty() {
            return Ok(());
        }
        if let Some(wait) = backoff_left(status, pods) {
            self.queue.add_after(key.to_string(), wait);
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for index in new {
            let failures = index_failures(job, index, pods);
            let pod = api.create(&PostParams::default(), &new_pod(job, index, failures)).await?;
            let name = pod.metadata.name.unwrap_or_default();
            self.expectations.created(key, &name);
            self.recorder.normal(job, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        Ok(())
    }

    /// Delete pods of the Job (each only if it is still the pod seen).
    pub(super) async fn delete_pods(&self, key: &str, job: &Job, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        workload::delete_owned_pods(&self.client, &self.recorder, &self.expectations, key, job, pods).await
    }
}
