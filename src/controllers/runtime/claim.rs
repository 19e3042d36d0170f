//! Claiming objects for a controller, as upstream's ControllerRefManager: of the
//! candidates (one namespace's pods, or ReplicaSets), a controller keeps those whose
//! controller reference is its own and which its selector still matches, adopts orphans
//! its selector matches, and releases its own that the selector no longer matches.
//! Objects controlled by someone else are never touched. Adoption and release are
//! strategic merge patches carrying the object's uid, so a recreated namesake is not
//! patched by mistake; before the first adoption the owner is re-read from the API (not
//! the cache) to be sure it still exists and is not being deleted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::bail;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Kind;

/// The controller claiming: its reference (controller, blockOwnerDeletion) and selector.
pub struct Owner<'a> {
    pub reference: OwnerReference,
    pub deleting: bool,
    pub selects: &'a (dyn Fn(&BTreeMap<String, String>) -> bool + Sync),
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set).
pub fn controller_ref<K: kube::Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// No controller claims the object (it may have other owners).
pub fn is_orphan(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.owner_references.iter().flatten().all(|r| r.controller != Some(true))
}

/// The candidates `owner` controls once adoption and release are done. `recheck` is
/// awaited once, before the first adoption, and must fail if the owner may not adopt.
pub async fn claim<K, F>(
    api: &Api<K>,
    owner: &Owner<'_>,
    candidates: Vec<Arc<K>>,
    recheck: F,
) -> anyhow::Result<Vec<Arc<K>>>
where
    K: Kind + serde::Serialize,
    F: Future<Output = anyhow::Result<()>>,
{
    let mut recheck = Some(recheck);
    let mut claimed = Vec::new();
    let mut errors = Vec::new();
    let no_labels = BTreeMap::new();
    for obj in candidates {
        let meta = obj.meta();
        let labels = meta.labels.as_ref().unwrap_or(&no_labels);
        let controller = meta.owner_references.iter().flatten().find(|r| r.controller == Some(true));
        match controller {
            Some(r) if r.uid != owner.reference.uid => {}
            Some(_) if (owner.selects)(labels) => claimed.push(obj),
            Some(_) if owner.deleting => {}
            Some(_) => {
                if let Err(e) = release(api, owner, &obj).await {
                    errors.push(e);
                }
            }
            None if owner.deleting || meta.deletion_timestamp.is_some() || !(owner.selects)(labels) => {}
            None => {
                if let Some(check) = recheck.take() {
                    check.await?;
                }
                match adopt(api, owner, &obj).await {
                    Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

fn name_of<K: Kind>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or_default()
}

/// Adds the controller reference; `None` if the object is gone.
async fn adopt<K: Kind + serde::Serialize>(api: &Api<K>, owner: &Owner<'_>, obj: &K) -> anyhow::Result<Option<K>> {
    let patch = json!({"metadata": {"ownerReferences": [owner.reference], "uid": obj.meta().uid}});
    match api.patch(name_of(obj), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(adopted) => Ok(Some(adopted)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
        Err(e) => bail!("adopting {}: {e}", name_of(obj)),
    }
}

async fn release<K: Kind + serde::Serialize>(api: &Api<K>, owner: &Owner<'_>, obj: &K) -> anyhow::Result<()> {
    let gone = json!({"$patch": "delete", "uid": owner.reference.uid});
    let patch = json!({"metadata": {"ownerReferences": [gone], "uid": obj.meta().uid}});
    match api.patch(name_of(obj), &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(()),
        // gone, or replaced by a namesake (the uid precondition): nothing left to release
        Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 || s.code == 422 => Ok(()),
        Err(e) => bail!("releasing {}: {e}", name_of(obj)),
    }
}
