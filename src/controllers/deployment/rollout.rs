//! Moving pods from the old ReplicaSets to the new one, as upstream's rolling.go,
//! recreate.go and sync.go:
//!
//! - RollingUpdate grows the new set up to `replicas + maxSurge` pods in all, and shrinks
//!   old sets (unhealthy pods first) while at least `replicas - maxUnavailable` stay
//!   available; each step waits for the ReplicaSets' status to move.
//! - Recreate scales every old set to zero, waits until their pods are gone, then
//!   creates (or scales up) the new set.
//! - A scaling event (`spec.replicas` changed, or paused) resizes without rolling: one
//!   active set takes the new size; during a rollout every active set gets its
//!   proportion of the change (by the max-replicas annotation), the rounding leftover
//!   going to the largest.
//! - Old sets beyond `revisionHistoryLimit` with no pods are deleted, lowest revision first.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{DeleteParams, PostParams};

use super::Controller;
use super::util::{self, rs_replicas};
use crate::controllers::replicaset::{api_error, pods};

fn name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

fn all<'a>(new: Option<&'a ReplicaSet>, old: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    old.iter().chain(new).collect()
}

impl Controller {
    pub(super) async fn rollout_rolling(&self, d: &mut Deployment, sets: Vec<ReplicaSet>) -> anyhow::Result<()> {
        let (new, mut old) = self.new_and_old(d, sets, true).await?;
        let mut new = new.ok_or_else(|| anyhow::anyhow!("no new replica set"))?;
        if self.reconcile_new(d, &mut new, &old).await? || self.reconcile_old(d, &new, &mut old).await? {
            return self.sync_rollout_status(d, Some(&new), &old).await;
        }
        if util::complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, Some(&new), &old).await
    }

    pub(super) async fn rollout_recreate(&self, d: &mut Deployment, sets: Vec<ReplicaSet>) -> anyhow::Result<()> {
        let (new, mut old) = self.new_and_old(d, sets.clone(), false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled |= self.scale_if_needed(d, rs, 0).await?;
        }
        if scaled || self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(d, new.as_ref(), &old).await;
        }
        let mut new = match new {
            Some(rs) => rs,
            None => self.new_and_old(d, sets, true).await?.0.ok_or_else(|| anyhow::anyhow!("no new replica set"))?,
        };
        self.scale_if_needed(d, &mut new, util::replicas(d)).await?;
        if util::complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, Some(&new), &old).await
    }

    /// Paused, or a scaling event: resize only, then write status.
    pub(super) async fn scale_only(&self, d: &mut Deployment, sets: Vec<ReplicaSet>) -> anyhow::Result<()> {
        let (mut new, mut old) = self.new_and_old(d, sets, false).await?;
        self.scale(d, new.as_mut(), &mut old).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, new.as_ref(), &old).await
    }

    /// Some active set was sized for another `spec.replicas` (its desired-replicas
    /// annotation says so).
    pub(super) fn is_scaling_event(&self, d: &Deployment, sets: &[ReplicaSet]) -> bool {
        let want = util::replicas(d).to_string();
        sets.iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| util::annotation(&rs.metadata, util::DESIRED_REPLICAS).is_some_and(|desired| desired != want))
    }

    async fn reconcile_new(&self, d: &Deployment, new: &mut ReplicaSet, old: &[ReplicaSet]) -> anyhow::Result<bool> {
        let (want, have) = (util::replicas(d), rs_replicas(new));
        if have == want {
            return Ok(false);
        }
        let target = match have > want {
            true => want,
            false => util::new_rs_replicas(d, &all(Some(new), old), have),
        };
        self.scale_if_needed(d, new, target).await
    }

    async fn reconcile_old(&self, d: &Deployment, new: &ReplicaSet, old: &mut [ReplicaSet]) -> anyhow::Result<bool> {
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        if util::spec_total(&old_refs) == 0 {
            return Ok(false);
        }
        let all_pods = util::spec_total(&all(Some(new), old));
        let min_available = util::replicas(d) - util::max_unavailable(d);
        let new_unavailable = rs_replicas(new) - util::available(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(util::by_age);
        let cleaned = self.scale_down_unhealthy(d, old, max_scaled_down).await?;
        let scaled = self.scale_down_available(d, new, old).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Shrinks old sets by their unavailable pods, oldest set first, at most `max` in all.
    async fn scale_down_unhealthy(&self, d: &Deployment, old: &mut [ReplicaSet], max: i32) -> anyhow::Result<i32> {
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max {
                break;
            }
            let (size, available) = (rs_replicas(rs), util::available(rs));
            if size == 0 || size == available {
                continue;
            }
            let down = (max - total).min(size - available);
            self.scale_if_needed(d, rs, size - down).await?;
            total += down;
        }
        Ok(total)
    }

    /// Shrinks old sets, oldest first, by as many pods as are available beyond
    /// `replicas - maxUnavailable`.
    async fn scale_down_available(
        &self,
        d: &Deployment,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> anyhow::Result<i32> {
        let min_available = util::replicas(d) - util::max_unavailable(d);
        let available = util::status_totals(&all(Some(new), old)).2;
        if available <= min_available {
            return Ok(0);
        }
        let budget = available - min_available;
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= budget {
                break;
            }
            let size = rs_replicas(rs);
            if size == 0 {
                continue;
            }
            let down = size.min(budget - total);
            self.scale_if_needed(d, rs, size - down).await?;
            total += down;
        }
        Ok(total)
    }

    /// Pods of the old sets still exist (terminating ones count): Recreate must wait.
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let old_refs: Vec<&ReplicaSet> = old.iter().collect();
        if util::status_totals(&old_refs).0 > 0 {
            return true;
        }
        let new_uid = new.and_then(|rs| rs.metadata.uid.clone());
        let old_uids: Vec<&String> = old.iter().filter_map(|rs| rs.metadata.uid.as_ref()).collect();
        let Some(ns) = old.first().and_then(|rs| rs.metadata.namespace.as_deref()) else { return false };
        self.pods.list_namespace(ns).iter().any(|p| {
            let owner = crate::controllers::runtime::informer::controller_of(p.as_ref(), "ReplicaSet");
            owner.is_some_and(|r| old_uids.contains(&&r.uid) && Some(&r.uid) != new_uid.as_ref())
                && !matches!(pods::phase(p), "Succeeded" | "Failed")
        })
    }

    /// Resizes one set unless it already has that size, recording the event.
    async fn scale_if_needed(&self, d: &Deployment, rs: &mut ReplicaSet, size: i32) -> anyhow::Result<bool> {
        if rs_replicas(rs) == size {
            return Ok(false);
        }
        self.scale_set(d, rs, size).await
    }

    /// Sets a set's size and replica annotations (writing only if either changed);
    /// true if the size changed. `rs` takes the written object.
    async fn scale_set(&self, d: &Deployment, rs: &mut ReplicaSet, size: i32) -> anyhow::Result<bool> {
        let before = rs_replicas(rs);
        let mut next = rs.clone();
        let annotated =
            util::set_replicas_annotations(&mut next, util::replicas(d), util::replicas(d) + util::max_surge(d));
        if before == size && !annotated {
            return Ok(false);
        }
        next.spec.get_or_insert_with(Default::default).replicas = Some(size);
        *rs = self.rs_api(d).replace(&name(rs), &PostParams::default(), &next).await.map_err(api_error("scaling"))?;
        if before != size {
            let direction = if before < size { "up" } else { "down" };
            let message = format!("Scaled {direction} replica set {} from {before} to {size}", name(rs));
            self.recorder.normal(d, "ScalingReplicaSet", message);
        }
        Ok(before != size)
    }

    /// Upstream's scale(): see the module doc.
    async fn scale(&self, d: &Deployment, new: Option<&mut ReplicaSet>, old: &mut [ReplicaSet]) -> anyhow::Result<()> {
        let want = util::replicas(d);
        old.sort_by(|a, b| util::by_age(b, a));
        let has_new = new.is_some();
        let mut sets: Vec<&mut ReplicaSet> = new.into_iter().chain(old.iter_mut()).collect();
        let active: Vec<usize> = (0..sets.len()).filter(|i| rs_replicas(sets[*i]) > 0).collect();
        // one active set, or none (then the newest): it takes the whole size
        let single = match active.len() {
            0 if !sets.is_empty() => Some(0),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = single {
            self.scale_if_needed(d, sets[i], want).await?;
            return Ok(());
        }
        if has_new && saturated(d, sets[0]) {
            for i in active.into_iter().filter(|i| *i != 0) {
                self.scale_if_needed(d, sets[i], 0).await?;
            }
            return Ok(());
        }
        if !util::is_rolling(d) {
            return Ok(());
        }
        let mut active: Vec<&mut ReplicaSet> = sets.into_iter().filter(|rs| rs_replicas(rs) > 0).collect();
        let sizes = proportional_sizes(d, &mut active);
        for (rs, size) in active.into_iter().zip(sizes) {
            self.scale_set(d, rs, size).await?;
        }
        Ok(())
    }

    /// Deletes old sets with no pods beyond `revisionHistoryLimit`, oldest revision first.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> anyhow::Result<()> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let mut cleanable: Vec<&ReplicaSet> =
            old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| util::by_revision(a, b));
        for rs in cleanable.into_iter().take(excess as usize) {
            let status = rs.status.clone().unwrap_or_default();
            let observed = status.observed_generation.unwrap_or(0);
            if status.replicas != 0 || rs_replicas(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed {
                continue;
            }
            match self.rs_api(d).delete(&name(rs), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(api_error("deleting an old replica set")(e)),
            }
        }
        Ok(())
    }
}

/// The new set has every replica, available, for the current size.
fn saturated(d: &Deployment, new: &ReplicaSet) -> bool {
    let want = util::replicas(d);
    util::annotation(&new.metadata, util::DESIRED_REPLICAS) == Some(want.to_string().as_str())
        && rs_replicas(new) == want
        && util::available(new) == want
}

/// Each active set's new size when the Deployment is resized mid-rollout (upstream's
/// proportional scaling); sorts `active` in the order the leftover is handed out.
fn proportional_sizes(d: &Deployment, active: &mut [&mut ReplicaSet]) -> Vec<i32> {
    let want = util::replicas(d);
    let current: i32 = active.iter().map(|rs| rs_replicas(rs)).sum();
    let allowed = if want > 0 { want + util::max_surge(d) } else { 0 };
    let to_add = allowed - current;
    active.sort_by(|a, b| util::by_size(a, b, to_add > 0));
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
    for rs in active.iter() {
        let share = proportion(d, rs, to_add, added);
        added += share;
        sizes.push(rs_replicas(rs) + share);
    }
    if to_add != 0
        && added != to_add
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    sizes
}

/// A set's share of `to_add` (negative when shrinking), within what is left.
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(d, rs);
    let left = to_add - added;
    if to_add > 0 { fraction.min(left) } else { fraction.max(left) }
}

/// How much a set would grow (shrink) if the Deployment's whole new size were spread in
/// proportion to the size it had when it was last sized (max-replicas annotation).
fn fraction(d: &Deployment, rs: &ReplicaSet) -> i32 {
    let want = util::replicas(d);
    if want == 0 {
        return -rs_replicas(rs);
    }
    let total = want + util::max_surge(d);
    let annotated = util::annotation(&rs.metadata, util::MAX_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated <= 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(total) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(name: &str, replicas: i32, max: i32, created: &str) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created,
                "annotations": {util::MAX_REPLICAS: max.to_string()}},
            "spec": {"replicas": replicas, "selector": {}},
        }))
        .unwrap()
    }

    #[test]
    fn a_resize_mid_rollout_is_shared_in_proportion() {
        // upstream's example: 10 replicas, maxSurge 3 → 13 pods as 8 old + 5 new; scaled to 15 (+5)
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 15, "selector": {}, "template": {},
                "strategy": {"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}},
        }))
        .unwrap();
        let (mut old, mut new) = (rs("old", 8, 13, "2020-01-01T00:00:00Z"), rs("new", 5, 13, "2020-01-02T00:00:00Z"));
        let mut active = vec![&mut new, &mut old];
        let sizes = proportional_sizes(&d, &mut active);
        let named: Vec<(String, i32)> = active.iter().map(|r| name(r)).zip(sizes).collect();
        assert_eq!(named, [("old".to_string(), 11), ("new".to_string(), 7)]);
    }
}
