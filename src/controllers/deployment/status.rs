//! Deployment status and conditions, as upstream's progress.go and sync.go: replica
//! counts summed over the ReplicaSets; Available (MinimumReplicasAvailable when at
//! least `replicas - maxUnavailable` pods are available); Progressing, whose
//! lastUpdateTime moves whenever the rollout makes progress and which turns
//! ProgressDeadlineExceeded once `progressDeadlineSeconds` pass without any (the
//! Deployment is requeued for that moment); DeploymentPaused/DeploymentResumed; and a
//! ReplicaFailure copied from the ReplicaSets.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::jiff::Timestamp;

use super::util::{self, condition, new_condition, set_condition};
use super::{Controller, key_of};

const PROGRESSING: &str = "Progressing";
const AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";

fn all<'a>(new: Option<&'a ReplicaSet>, old: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    old.iter().chain(new).collect()
}

/// Counts and the Available condition (upstream's calculateStatus).
fn calculate(d: &Deployment, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
    let sets = all(new, old);
    let (actual, ready, available) = util::status_totals(&sets);
    let total = util::spec_total(&sets);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual),
        updated_replicas: Some(new.map(|rs| util::status_totals(&[rs]).0).unwrap_or(0)),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions,
        terminating_replicas: current.terminating_replicas,
    };
    let cond = match available >= util::replicas(d) - util::max_unavailable(d) {
        true => new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        ),
        false => new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        ),
    };
    set_condition(&mut status, cond);
    status
}

/// More pods updated, fewer old, more ready or more available than last written.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_left = n(old.replicas) - n(old.updated_replicas);
    let new_left = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_left < old_left
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// The time left before the progress deadline passes (negative: passed).
fn deadline_in(d: &Deployment, status: &DeploymentStatus) -> Option<i64> {
    let seconds = d.spec.as_ref()?.progress_deadline_seconds?;
    let since = condition(status, PROGRESSING)?.last_update_time.as_ref()?.0;
    Some(since.as_millisecond() + i64::from(seconds) * 1000 - Timestamp::now().as_millisecond())
}

fn timed_out(d: &Deployment, status: &DeploymentStatus) -> bool {
    let Some(cond) = condition(status, PROGRESSING).filter(|_| util::has_progress_deadline(d)) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(AVAILABLE_REASON) => false,
        Some(TIMED_OUT) => true,
        _ => deadline_in(d, status).is_some_and(|ms| ms < 0),
    }
}

/// "ReplicaSet \"x\" <what>", or about the Deployment when there is no new set.
fn about(d: &Deployment, new: Option<&ReplicaSet>, what: &str) -> String {
    match new {
        Some(rs) => format!("ReplicaSet {:?} {what}", rs.metadata.name.as_deref().unwrap_or_default()),
        None => format!("Deployment {:?} {what}", d.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// The Progressing condition after this sync (upstream's syncRolloutStatus).
fn progress(d: &Deployment, new: Option<&ReplicaSet>, status: &mut DeploymentStatus) {
    if !util::has_progress_deadline(d) {
        util::remove_condition(status, PROGRESSING);
        return;
    }
    let current = condition(status, PROGRESSING).cloned();
    let done = status.replicas == status.updated_replicas
        && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(AVAILABLE_REASON));
    if done {
        return;
    }
    if util::complete(d, status) {
        let message = about(d, new, "has successfully progressed.");
        set_condition(status, new_condition(PROGRESSING, "True", AVAILABLE_REASON, message));
    } else if progressing(d, status) {
        let mut cond = new_condition(PROGRESSING, "True", "ReplicaSetUpdated", about(d, new, "is progressing."));
        if let Some(c) = current.filter(|c| c.status == "True") {
            cond.last_transition_time = c.last_transition_time;
        }
        // a fresh lastUpdateTime: the deadline starts over
        util::remove_condition(status, PROGRESSING);
        status.conditions.get_or_insert_with(Vec::new).push(cond);
    } else if timed_out(d, status) {
        let message = about(d, new, "has timed out progressing.");
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT, message));
    }
}

/// The ReplicaFailure of the new set, else of any set, as a Deployment condition.
fn replica_failure(new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        let conds = rs.status.as_ref()?.conditions.as_ref()?;
        conds.iter().find(|c| c.type_ == "ReplicaFailure").cloned()
    };
    let c = new.and_then(failure).or_else(|| old.iter().find_map(failure))?;
    Some(DeploymentCondition {
        type_: c.type_,
        status: c.status,
        reason: c.reason,
        message: c.message,
        last_update_time: c.last_transition_time.clone(),
        last_transition_time: c.last_transition_time,
    })
}

impl Controller {
    /// Status after a rollout step: counts, conditions, and a requeue for the progress
    /// deadline while the rollout is under way.
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let mut status = calculate(d, new, old);
        progress(d, new, &mut status);
        match replica_failure(new, old) {
            Some(cond) => set_condition(&mut status, cond),
            None => util::remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&status) {
            self.requeue_for_deadline(d, &status);
            return Ok(());
        }
        self.write_status(d, status).await
    }

    /// Status when only scaling (paused, resized, being deleted): counts and Available.
    pub(super) async fn sync_status(
        &self,
        d: &mut Deployment,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let status = calculate(d, new, old);
        self.write_status(d, status).await
    }

    pub(super) async fn sync_status_only(&self, d: &mut Deployment, sets: Vec<ReplicaSet>) -> anyhow::Result<()> {
        let (new, old) = self.new_and_old(d, sets, false).await?;
        self.sync_status(d, new.as_ref(), &old).await
    }

    /// Progressing says DeploymentPaused while paused, DeploymentResumed once resumed
    /// (a deadline already exceeded is kept).
    pub(super) async fn note_pause(&self, d: &mut Deployment) -> anyhow::Result<()> {
        if !util::has_progress_deadline(d) {
            return Ok(());
        }
        let status = d.status.clone().unwrap_or_default();
        let reason = condition(&status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return Ok(());
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let cond = match (paused, reason.as_deref()) {
            (true, r) if r != Some("DeploymentPaused") => {
                new_condition(PROGRESSING, "Unknown", "DeploymentPaused", "Deployment is paused".into())
            }
            (false, Some("DeploymentPaused")) => {
                new_condition(PROGRESSING, "Unknown", "DeploymentResumed", "Deployment is resumed".into())
            }
            _ => return Ok(()),
        };
        self.set_condition(d, cond).await
    }

    /// Look again when the progress deadline passes, unless done or already timed out.
    fn requeue_for_deadline(&self, d: &Deployment, status: &DeploymentStatus) {
        let reason = condition(status, PROGRESSING).and_then(|c| c.reason.as_deref());
        if reason.is_none() || reason == Some(TIMED_OUT) || util::complete(d, status) {
            return;
        }
        if let Some(ms) = deadline_in(d, status) {
            let after = Duration::from_millis(ms.max(0) as u64) + Duration::from_millis(100);
            self.queue.add_after(key_of(d), after);
        }
    }
}
