//! ControllerRevisions, the template history of StatefulSets and DaemonSets (upstream's
//! controller_history): one revision per distinct pod template, named
//! `<owner>-<hash>`, its `data` the patch that restores the template, numbered in order of
//! use. The hash (FNV-1a 32 of the data and `collisionCount`, in upstream's
//! consonant-and-digit alphabet) is what pods carry in `controller-revision-hash`; a name
//! taken by a revision with other data is a collision, answered by counting one up.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use super::runtime::Informer;
use super::runtime::informer::controller_of;
use super::workload::controller_ref;

/// The pod label naming the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The revision's own label holding its hash.
const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// upstream's rand.SafeEncodeString alphabet: no vowels, no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

fn fnv32a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The hash of a revision's data, salted with the collision count when there is one.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if collision_count > 0 {
        bytes.extend(collision_count.to_string().bytes());
    }
    safe_encode(&fnv32a(bytes).to_string())
}

/// The revision data of a template: `{"spec":{"template":{..., "$patch":"replace"}}}`.
pub fn data_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// The owner's revisions, oldest first.
pub fn owned<K: Resource<DynamicType = ()>>(
    revisions: &Informer<ControllerRevision>,
    owner: &K,
) -> Vec<Arc<ControllerRevision>> {
    let ns = owner.meta().namespace.as_deref().unwrap_or_default();
    let kind = K::kind(&());
    let mut out: Vec<_> = revisions
        .list_namespace(ns)
        .into_iter()
        .filter(|r| controller_of(r.as_ref(), &kind).is_some_and(|o| Some(&o.uid) == owner.meta().uid.as_ref()))
        .collect();
    out.sort_by_key(|r| r.revision);
    out
}

/// The hash a revision was named with.
pub fn hash_of(rev: &ControllerRevision) -> String {
    rev.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned().unwrap_or_default()
}

/// The revision for the owner's current template: an existing one with the same data
/// (renumbered to come last), or a new one. `collision_count` may grow.
pub async fn current<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    history: &[Arc<ControllerRevision>],
    collision_count: &mut i32,
) -> anyhow::Result<ControllerRevision> {
    let data = data_of(template);
    let next = history.last().map_or(1, |r| r.revision + 1);
    if let Some(same) = history.iter().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)) {
        if Some(same) == history.last() {
            return Ok((**same).clone());
        }
        let name = same.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({"revision": next});
        return Ok(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?);
    }
    loop {
        let hash = hash(&data, *collision_count);
        let owner_name = owner.meta().name.as_deref().unwrap_or_default();
        let mut labels: BTreeMap<String, String> =
            template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("{owner_name}-{hash}")),
                namespace: owner.meta().namespace.clone(),
                labels: Some(labels),
                owner_references: Some(vec![controller_ref(owner)]),
                ..Default::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: next,
        };
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(rev.metadata.name.as_deref().unwrap_or_default()).await?;
                if existing.data.as_ref().map(|d| &d.0) == Some(&data) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Delete the oldest revisions no pod uses, beyond `limit`.
pub async fn truncate(
    api: &Api<ControllerRevision>,
    history: &[Arc<ControllerRevision>],
    in_use: &[String],
    limit: i32,
) -> anyhow::Result<()> {
    let unused: Vec<_> = history
        .iter()
        .filter(|r| !in_use.iter().any(|u| Some(u) == r.metadata.name.as_ref() || *u == hash_of(r)))
        .collect();
    let excess = unused.len().saturating_sub(limit.max(0) as usize);
    for rev in unused.into_iter().take(excess) {
        let name = rev.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_safe_and_salted_by_collisions() {
        let data = json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}}}}});
        let h = hash(&data, 0);
        assert_eq!(h, hash(&data, 0));
        assert_ne!(h, hash(&data, 1));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert_eq!(fnv32a(*b"a"), 0xe40c_292c);
    }

    #[test]
    fn data_round_trips_to_the_template() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let rev = ControllerRevision { data: Some(RawExtension(data_of(&t))), ..Default::default() };
        assert_eq!(template_of(&rev), Some(t));
    }
}
