//! Pure Deployment arithmetic, as upstream's deploymentutil: the pod-template hash,
//! template equality, revisions and the annotations carried between Deployment and
//! ReplicaSets, maxSurge/maxUnavailable resolution, replica sums and orderings, and
//! conditions. Nothing here talks to the API.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Upstream's limit on the length of the revision-history annotation.
const REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations that are not copied from a Deployment to its ReplicaSets (and back).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Characters of a hash, as upstream's rand.SafeEncodeString (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-32a of its JSON (and the collision count,
/// little-endian, when set), the decimal digits mapped into the safe alphabet.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(n) = collision_count {
        feed(&(n as u32).to_le_bytes());
    }
    hash.to_string().bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// The template without its `pod-template-hash` label, as JSON.
fn without_hash(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(HASH_LABEL);
        }
        if meta.labels.as_ref().is_some_and(|l| l.is_empty()) {
            meta.labels = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Equal but for the hash label (upstream's EqualIgnoreHash).
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

pub fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

pub fn d_template(d: &Deployment) -> PodTemplateSpec {
    d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter().map(revision).max().unwrap_or(0)
}

/// Copies the Deployment's own annotations onto the ReplicaSet; true if any changed.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Appends `old` to a comma-separated history, dropping the oldest entries to stay
/// within upstream's length limit.
fn push_history(history: &str, old: &str) -> Option<String> {
    let mut entries: Vec<&str> = history.split(',').filter(|s| !s.is_empty()).collect();
    entries.push(old);
    while entries.join(",").len() > REVISION_HISTORY_CHARS && entries.len() > 1 {
        entries.remove(0);
    }
    let joined = entries.join(",");
    (joined.len() <= REVISION_HISTORY_CHARS).then_some(joined)
}

/// The new ReplicaSet's annotations (upstream's SetNewReplicaSetAnnotations): the
/// Deployment's annotations, the new revision (an old revision it had moves into
/// `revision-history`: a rollback), and for a set about to be created the replica
/// annotations. True if anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = copy_annotations(d, rs);
    let old = annotation(&rs.metadata, REVISION).map(str::to_string);
    let old_number: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if old_number < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if let Some(h) = push_history(&history, &old) {
                annotations.insert(REVISION_HISTORY.into(), h);
            }
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d));
    }
    changed
}

/// The desired- and max-replicas annotations; true if they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

/// Σ spec.replicas.
pub fn spec_total(sets: &[&ReplicaSet]) -> i32 {
    sets.iter().map(|rs| rs_replicas(rs)).sum()
}

/// Σ status.replicas, readyReplicas, availableReplicas.
pub fn status_totals(sets: &[&ReplicaSet]) -> (i32, i32, i32) {
    sets.iter().map(|rs| rs_status(rs)).fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

pub fn available(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2
}

pub fn is_rolling(d: &Deployment) -> bool {
    let ty = d.spec.as_ref().and_then(|s| s.strategy.as_ref()?.type_.as_deref());
    ty.is_none_or(|t| t == "RollingUpdate")
}

/// An int or percentage of `total`, rounded up or down (upstream's
/// GetScaledValueFromIntOrPercent); a malformed value is 0.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else { return 0 };
            let scaled = p * i64::from(total);
            (if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) resolved against the replicas: surge rounds up,
/// unavailable down, and both zero becomes unavailable 1 (upstream's ResolveFenceposts).
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()?.rolling_update.clone()).unwrap_or_default();
    let pct = |v: Option<IntOrString>| v.unwrap_or(IntOrString::String("25%".into()));
    let total = replicas(d);
    let surge = scaled_value(&pct(ru.max_surge), total, true);
    let unavailable = scaled_value(&pct(ru.max_unavailable), total, false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// The new set's size for a rollout step (upstream's NewRSNewReplicas): RollingUpdate
/// grows it as far as maxSurge allows over the pods of `all` sets; Recreate at once.
pub fn new_rs_replicas(d: &Deployment, all: &[&ReplicaSet], new_current: i32) -> i32 {
    let want = replicas(d);
    if !is_rolling(d) {
        return want;
    }
    let max_total = want + max_surge(d);
    let current = spec_total(all);
    if current >= max_total {
        return new_current;
    }
    new_current + (max_total - current).min(want - new_current)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, then by name (upstream's ReplicaSetsByCreationTimestamp).
pub fn by_age(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first, then oldest (upstream's ReplicaSetsByRevision).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a).cmp(&revision(b)).then_with(|| by_age(a, b))
}

/// Larger first; on a tie newer first (scaling up) or older first (scaling down).
pub fn by_size(a: &ReplicaSet, b: &ReplicaSet, newer_first: bool) -> Ordering {
    let age = if newer_first { by_age(b, a) } else { by_age(a, b) };
    rs_replicas(b).cmp(&rs_replicas(a)).then(age)
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).is_some_and(|s| s != i32::MAX)
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Sets a condition (upstream's SetDeploymentCondition): the same status and reason is no
/// change; the same status keeps its transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(current) = condition(status, &cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// Every replica updated and available, nothing old left (upstream's DeploymentComplete).
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(surge: serde_json::Value, unavailable: serde_json::Value, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}},
        }))
        .unwrap()
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        let d = deploy(json!("25%"), json!("25%"), 10);
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        let d = deploy(json!(1), json!(0), 5);
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
        let d = deploy(json!("0%"), json!("10%"), 5);
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1), "both zero after rounding: one unavailable");
        let d = deploy(json!(0), json!(20), 5);
        assert_eq!(max_unavailable(&d), 5, "capped at replicas");
    }

    #[test]
    fn hashes_are_stable_safe_and_change_with_collisions() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)), "{h}");
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut labelled = t.clone();
        labelled.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(HASH_LABEL.into(), h);
        assert!(same_template(&t, &labelled));
    }

    #[test]
    fn rollback_keeps_the_old_revision_in_the_history() {
        let d = deploy(json!(1), json!(0), 5);
        let mut rs = ReplicaSet::default();
        rs.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        assert_eq!(annotation(&rs.metadata, REVISION), Some("3"));
        assert_eq!(annotation(&rs.metadata, REVISION_HISTORY), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut rs, 5, true));
        assert_eq!(annotation(&rs.metadata, REVISION_HISTORY), Some("1,3"));
        assert!(!set_new_rs_annotations(&d, &mut rs, 5, true));
    }
}
