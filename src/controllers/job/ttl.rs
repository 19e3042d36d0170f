//! The TTL-after-finished controller (upstream's ttl-after-finished-controller): a
//! finished Job with `ttlSecondsAfterFinished` is deleted that long after it finished
//! (its completion time, else the Complete/Failed condition's transition), with
//! foreground propagation so its pods go first, as upstream. The Job is read fresh
//! from the API before deleting, and deleted only if unchanged, so a TTL just extended
//! is honoured. The wait is a delayed requeue, not polling.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::{Api, Client};

use super::is_finished;
use crate::controllers::runtime::{Ctx, Informer, WorkQueue, key_of, split_key};
use crate::controllers::workload;

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("ttl_after_finished");
    let jobs = ctx.informer::<Job>();
    let q = queue.clone();
    jobs.on_change(move |ev| {
        let job = ev.object();
        if job.metadata.deletion_timestamp.is_none() && expires_at(job).is_some() {
            q.add(key_of(job.as_ref()));
        }
    });
    workload::run(ctx, queue.clone(), 5, Controller { client: ctx.client.clone(), jobs, queue });
    Ok(())
}

struct Controller {
    client: Client,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue>,
}

/// When a finished Job with a TTL is due for deletion.
fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    if !is_finished(job) {
        return None;
    }
    let status = job.status.as_ref()?;
    let finished_condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref());
    let finished = status.completion_time.as_ref().or(finished_condition)?.0;
    Timestamp::from_second(finished.as_second() + i64::from(ttl)).ok()
}

impl workload::Reconcile for Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some(cached) = self.jobs.get(key) else { return Ok(()) };
        if !self.due(key, &cached) {
            return Ok(());
        }
        let (ns, name) = split_key(key);
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let Some(fresh) = api.get_opt(name).await? else { return Ok(()) };
        if fresh.metadata.deletion_timestamp.is_some() || !self.due(key, &fresh) {
            return Ok(());
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: fresh.metadata.uid.clone(),
                resource_version: fresh.metadata.resource_version.clone(),
            }),
            ..Default::default()
        };
        tracing::info!(job = key, "deleting a finished Job whose TTL expired");
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Controller {
    /// Whether the Job's TTL has run out; if it is yet to, come back then.
    fn due(&self, key: &str, job: &Job) -> bool {
        let Some(at) = expires_at(job) else { return false };
        let left = at.as_second() - Timestamp::now().as_second();
        if left > 0 {
            self.queue.add_after(key.to_string(), Duration::from_secs(left as u64));
            return false;
        }
        true
    }
}
