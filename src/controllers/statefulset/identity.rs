//! A StatefulSet pod's stable identity: the name `<set>-<ordinal>`, the
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index` labels,
//! hostname and subdomain (the governing Service), and its claims
//! `<template>-<set>-<ordinal>` from volumeClaimTemplates, mounted in place of the
//! template's volumes of the same name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::controllers::history::REVISION_LABEL;
use crate::controllers::workload::controller_ref;

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

/// The ordinal in a pod's name, if the name is `<set>-<number>`.
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let rest = name.strip_prefix(set_name(set))?.strip_prefix('-')?;
    rest.parse().ok().filter(|o: &i32| *o >= 0 && o.to_string() == rest)
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or_default()
}

pub fn claim_name(template: &PersistentVolumeClaim, set: &StatefulSet, ordinal: i32) -> String {
    let t = template.metadata.name.as_deref().unwrap_or_default();
    format!("{t}-{}-{ordinal}", set_name(set))
}

/// The pod of `ordinal`, from `template` (the revision it is made from).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = pod_name(set, ordinal);
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    meta.name = Some(name.clone());
    meta.generate_name = None;
    meta.namespace = set.metadata.namespace.clone();
    meta.owner_references = Some(vec![controller_ref(set)]);
    let labels = meta.labels.get_or_insert_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    spec.hostname = Some(name);
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    let volumes = spec.volumes.get_or_insert_default();
    for t in claim_templates(set) {
        let volume_name = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != volume_name);
        volumes.push(Volume {
            name: volume_name,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(t, set, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if volumes.is_empty() {
        spec.volumes = None;
    }
    Pod { metadata: meta, spec: Some(spec), status: None }
}

/// The ordinal of a claim named as one of the set's (`<template>-<set>-<ordinal>`).
pub fn claim_ordinal(set: &StatefulSet, claim: &str) -> Option<i32> {
    claim_templates(set).iter().find_map(|t| {
        let prefix = format!("{}-{}-", t.metadata.name.as_deref().unwrap_or_default(), set_name(set));
        claim.strip_prefix(&prefix)?.parse::<i32>().ok().filter(|o| *o >= 0)
    })
}

/// What `persistentVolumeClaimRetentionPolicy` says for deletion and scale-down.
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (delete(policy.and_then(|p| p.when_deleted.as_ref())), delete(policy.and_then(|p| p.when_scaled.as_ref())))
}

/// The claims of `ordinal`, labelled with the set's selector; owned by the set when they
/// are to go with it (`whenDeleted: Delete`).
pub fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector: BTreeMap<String, String> =
        set.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    let (deleted_with_set, _) = retention(set);
    claim_templates(set)
        .iter()
        .map(|t| {
            let mut claim = t.clone();
            claim.metadata.name = Some(claim_name(t, set, ordinal));
            claim.metadata.namespace = set.metadata.namespace.clone();
            claim.metadata.labels.get_or_insert_default().extend(selector.clone());
            if deleted_with_set {
                let owner = OwnerReference { controller: None, ..controller_ref(set) };
                claim.metadata.owner_references = Some(vec![owner]);
            }
            claim.status = None;
            claim
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_get_stable_names_labels_hostnames_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": []}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]},
        }))
        .unwrap();
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &template, "web-abc", 2);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        let spec = pod.spec.clone().unwrap();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-2"), Some("nginx")));
        let volume = &spec.volumes.unwrap()[0];
        assert_eq!(volume.persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-2");
        assert_eq!(ordinal_of(&set, &pod), Some(2));
        let claim = &claims(&set, 2)[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(claim.metadata.labels.as_ref().unwrap()["app"], "nginx");
    }
}
