//! PersistentVolume binding and ferrokube's local-path provisioner.
//!
//! **Binder** (upstream's persistentvolume-binder), per claim: a Pending claim binds to
//! the smallest Available volume of its class that is big enough, offers its access
//! modes and volume mode and matches its selector (or to the volume its
//! `spec.volumeName` names, or that is pre-bound to it by `claimRef`). The volume is
//! bound first (claimRef, phase Bound), then the claim (volumeName, phase Bound,
//! capacity, access modes), each marked `pv.kubernetes.io/bind-completed`. With no
//! volume and a class whose provisioner can make one, the claim is annotated
//! `volume.kubernetes.io/storage-provisioner` and waits; a WaitForFirstConsumer class
//! waits for the scheduler's `volume.kubernetes.io/selected-node` first. A volume whose
//! claim is gone is Released, and deleted if its reclaim policy says Delete.
//!
//! **Local-path provisioner** (`ferrokube.io/local-path`, the default class of
//! `ferrokube up`): a directory under `--local-path-dir` per claim, exposed as a
//! hostPath volume (limited to the selected node, when there is one) pre-bound to the
//! claim; removed again when the volume is deleted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::runtime::{Ctx, Informer, Recorder, is_conflict, is_not_found, key_of};
use crate::quantity::Quantity;

pub const LOCAL_PATH_PROVISIONER: &str = "ferrokube.io/local-path";
const PROVISIONER_ANNOTATION: &str = "volume.kubernetes.io/storage-provisioner";
const BETA_PROVISIONER_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-provisioner";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

struct Volumes {
    client: Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
    recorder: Recorder,
}

fn request(claim: &PersistentVolumeClaim) -> Quantity {
    let requests = claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref());
    requests.and_then(|r| r.get("storage")).and_then(|q| Quantity::parse(&q.0)).unwrap_or_default()
}

fn capacity(pv: &PersistentVolume) -> Quantity {
    let cap = pv.spec.as_ref().and_then(|s| s.capacity.as_ref());
    cap.and_then(|c| c.get("storage")).and_then(|q| Quantity::parse(&q.0)).unwrap_or_default()
}

fn class_of_claim(claim: &PersistentVolumeClaim) -> String {
    claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default()
}

fn class_of_volume(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default()
}

fn phase_of_volume(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn claim_ref_matches(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<bool> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    let same_name = r.name.as_deref() == claim.metadata.name.as_deref()
        && r.namespace.as_deref() == claim.metadata.namespace.as_deref();
    let same_uid = r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref());
    Some(same_name && same_uid)
}

/// Whether the volume can serve the claim (ignoring who it is bound to).
fn fits(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let (Some(pv_spec), Some(spec)) = (pv.spec.as_ref(), claim.spec.as_ref()) else { return false };
    let modes_ok =
        spec.access_modes.iter().flatten().all(|m| pv_spec.access_modes.iter().flatten().any(|have| have == m));
    let mode = |m: Option<&String>| m.map(String::as_str).unwrap_or("Filesystem").to_string();
    let volume_mode_ok = mode(pv_spec.volume_mode.as_ref()) == mode(spec.volume_mode.as_ref());
    let labels = pv.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec.selector.as_ref().is_none_or(|s| crate::label_selector::selector_matches(s, &labels));
    class_of_volume(pv) == class_of_claim(claim)
        && capacity(pv) >= request(claim)
        && modes_ok
        && volume_mode_ok
        && selector_ok
        && pv.metadata.deletion_timestamp.is_none()
}

pub fn start_binder(ctx: &Ctx) -> anyhow::Result<()> {
    let v = Arc::new(Volumes {
        client: ctx.client.clone(),
        claims: ctx.informer::<PersistentVolumeClaim>(),
        volumes: ctx.informer::<PersistentVolume>(),
        classes: ctx.informer::<StorageClass>(),
        recorder: ctx.recorder("persistentvolume-controller"),
    });
    let claims = ctx.queue("persistentvolume_claims");
    let volumes = ctx.queue("persistentvolume_volumes");
    let (q, qv) = (claims.clone(), volumes.clone());
    v.claims.on_change(move |ev| {
        q.add(key_of(ev.object().as_ref()));
        // a claim that goes releases its volume
        if let Some(volume) = ev.object().spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) {
            qv.add(volume);
        }
    });
    let (q, qv) = (claims.clone(), volumes.clone());
    v.volumes.on_change(move |ev| {
        qv.add(ev.object().name_any());
        // a new or freed volume may be what a pending claim waits for
        if let Some(r) = ev.object().spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            q.add(format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()));
        }
    });
    let (vc, vv) = (v.clone(), v);
    ctx.run_workers(claims, 5, move |key| {
        let v = vc.clone();
        async move { v.sync_claim(&key).await }
    });
    ctx.run_workers(volumes, 5, move |name| {
        let v = vv.clone();
        async move { v.sync_volume(&name).await }
    });
    Ok(())
}

impl Volumes {
    async fn sync_claim(&self, key: &str) -> anyhow::Result<()> {
        let Some(claim) = self.claims.get(key) else { return Ok(()) };
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase == "Bound" || claim.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        match self.find_volume(&claim) {
            Some(pv) => self.bind(&pv, &claim).await,
            None => self.await_provisioning(&claim).await,
        }
    }

    /// The volume for a claim: the one it names, one pre-bound to it, else the smallest fit.
    fn find_volume(&self, claim: &PersistentVolumeClaim) -> Option<Arc<PersistentVolume>> {
        let all = self.volumes.list();
        if let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|n| !n.is_empty()) {
            return all.into_iter().find(|pv| pv.name_any() == name && claim_ref_matches(pv, claim) != Some(false));
        }
        if let Some(pv) = all.iter().find(|pv| claim_ref_matches(pv, claim) == Some(true) && fits(pv, claim)) {
            return Some(pv.clone());
        }
        let mut candidates: Vec<&Arc<PersistentVolume>> = all
            .iter()
            .filter(|pv| {
                claim_ref_matches(pv, claim).is_none()
                    && matches!(phase_of_volume(pv), "Available" | "Pending")
                    && fits(pv, claim)
            })
            .collect();
        candidates.sort_by_key(|pv| capacity(pv));
        candidates.first().map(|pv| (*pv).clone())
    }

    async fn bind(&self, pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let ns = claim.namespace().unwrap_or_default();
        let claim_ref = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: claim.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..Default::default()
        };
        if claim_ref_matches(pv, claim) != Some(true)
            || pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()?.uid.clone()).is_none()
        {
            let patch = json!({
                "metadata": {"resourceVersion": pv.metadata.resource_version, "annotations": {BOUND_BY_CONTROLLER: "yes"}},
                "spec": {"claimRef": claim_ref},
            });
            pvs.patch(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("binding the volume")?;
        }
        if phase_of_volume(pv) != "Bound" {
            let status = json!({"status": {"phase": "Bound"}});
            pvs.patch_status(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let mut annotations = BTreeMap::from([(BIND_COMPLETED, "yes")]);
        if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty) {
            annotations.insert(BOUND_BY_CONTROLLER, "yes");
        }
        let patch = json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv.name_any()}});
        claims
            .patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("binding the claim")?;
        let pv_spec = pv.spec.clone().unwrap_or_default();
        let status =
            json!({"status": {"phase": "Bound", "accessModes": pv_spec.access_modes, "capacity": pv_spec.capacity}});
        claims.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        tracing::info!(claim = %key_of(claim), volume = %pv.name_any(), "bound");
        Ok(())
    }

    /// No volume fits: hand the claim to its class's provisioner (after the scheduler
    /// picked a node, for WaitForFirstConsumer classes).
    async fn await_provisioning(&self, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
        let class_name = class_of_claim(claim);
        let Some(class) = Some(class_name.as_str()).filter(|c| !c.is_empty()).and_then(|c| self.classes.get(c)) else {
            return Ok(());
        };
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
            && !annotations.contains_key(SELECTED_NODE)
        {
            self.recorder.normal(
                claim,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            );
            return Ok(());
        }
        if annotations.get(PROVISIONER_ANNOTATION) == Some(&class.provisioner) {
            return Ok(());
        }
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {
            PROVISIONER_ANNOTATION: class.provisioner, BETA_PROVISIONER_ANNOTATION: class.provisioner,
        }}});
        api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let note = format!(
            "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
            class.provisioner
        );
        self.recorder.normal(claim, "ExternalProvisioning", note);
        Ok(())
    }

    /// A bound volume whose claim is gone is Released, then reclaimed by its policy; an
    /// unbound one is Available.
    async fn sync_volume(&self, name: &str) -> anyhow::Result<()> {
        let Some(pv) = self.volumes.get(name) else { return Ok(()) };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            if phase_of_volume(&pv) != "Available" {
                let status = json!({"status": {"phase": "Available"}});
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
            }
            return Ok(());
        };
        let key = format!(
            "{}/{}",
            claim_ref.namespace.clone().unwrap_or_default(),
            claim_ref.name.clone().unwrap_or_default()
        );
        let claim = self.claims.get(&key);
        let claim_alive = claim
            .as_ref()
            .is_some_and(|c| claim_ref.uid.as_deref().is_none_or(|u| Some(u) == c.metadata.uid.as_deref()));
        // a volume pre-bound by its provisioner has a claim: the claim sync binds it
        if claim_alive || claim_ref.uid.is_none() {
            return Ok(());
        }
        // the claim may only be missing from a lagging informer: ask
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), claim_ref.namespace.as_deref().unwrap_or_default());
        if let Some(c) = claims.get_opt(claim_ref.name.as_deref().unwrap_or_default()).await?
            && c.metadata.uid == claim_ref.uid
        {
            return Ok(());
        }
        if phase_of_volume(&pv) != "Released" {
            let status = json!({"status": {"phase": "Released"}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
            tracing::info!(volume = name, "claim gone; released");
        }
        let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
        if policy == "Delete" && pv.metadata.deletion_timestamp.is_none() {
            match api.delete(name, &DeleteParams::default()).await {
                Err(e) if !is_not_found(&e) => return Err(e).context("deleting a released volume"),
                _ => tracing::info!(volume = name, "released volume deleted (reclaim policy Delete)"),
            }
        }
        Ok(())
    }
}

// ---- local-path provisioner ----

struct LocalPath {
    client: Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    classes: Arc<Informer<StorageClass>>,
    dir: PathBuf,
    recorder: Recorder,
}

pub fn start_local_path(ctx: &Ctx) -> anyhow::Result<()> {
    let lp = Arc::new(LocalPath {
        client: ctx.client.clone(),
        claims: ctx.informer::<PersistentVolumeClaim>(),
        classes: ctx.informer::<StorageClass>(),
        dir: ctx.settings.local_path_dir.clone(),
        recorder: ctx.recorder(LOCAL_PATH_PROVISIONER),
    });
    let volumes = ctx.informer::<PersistentVolume>();
    let queue = ctx.queue("local_path_provisioner");
    let q = queue.clone();
    lp.claims.on_change(move |ev| q.add(format!("claim:{}", key_of(ev.object().as_ref()))));
    let q = queue.clone();
    volumes.on_change(move |ev| {
        if let super::runtime::Event::Updated { new, .. } | super::runtime::Event::Added(new) = ev
            && new.metadata.annotations.as_ref().and_then(|a| a.get(PROVISIONED_BY)).map(String::as_str)
                == Some(LOCAL_PATH_PROVISIONER)
            && new.metadata.deletion_timestamp.is_some()
        {
            q.add(format!("volume:{}", new.name_any()));
        }
        if let super::runtime::Event::Deleted(old) = ev
            && old.metadata.annotations.as_ref().and_then(|a| a.get(PROVISIONED_BY)).map(String::as_str)
                == Some(LOCAL_PATH_PROVISIONER)
        {
            q.add(format!("volume:{}", old.name_any()));
        }
    });
    ctx.run_workers(queue, 2, move |item| {
        let lp = lp.clone();
        async move {
            match item.split_once(':') {
                Some(("claim", key)) => lp.provision(key).await,
                Some(("volume", name)) => lp.remove(name),
                _ => Ok(()),
            }
        }
    });
    Ok(())
}

impl LocalPath {
    async fn provision(&self, key: &str) -> anyhow::Result<()> {
        let Some(claim) = self.claims.get(key) else { return Ok(()) };
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
        if bound || annotations.get(PROVISIONER_ANNOTATION).map(String::as_str) != Some(LOCAL_PATH_PROVISIONER) {
            return Ok(());
        }
        let Some(class) = self.classes.get(&class_of_claim(&claim)) else { return Ok(()) };
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let name = format!("pvc-{uid}");
        let path = self.dir.join(format!("{name}_{}_{}", claim.namespace().unwrap_or_default(), claim.name_any()));
        if let Err(e) = std::fs::create_dir_all(&path) {
            let why = format!(
                "failed to provision volume with StorageClass \"{}\": creating {}: {e}",
                class.name_any(),
                path.display()
            );
            self.recorder.warning(claim.as_ref(), "ProvisioningFailed", why.clone());
            anyhow::bail!(why);
        }
        let node_affinity = annotations.get(SELECTED_NODE).map(|node| VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/hostname".into(),
                        operator: "In".into(),
                        values: Some(vec![node.clone()]),
                    }]),
                    match_fields: None,
                }],
            }),
        });
        let spec = claim.spec.clone().unwrap_or_default();
        let storage = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(BTreeMap::from([(PROVISIONED_BY.to_string(), LOCAL_PATH_PROVISIONER.to_string())])),
                finalizers: None,
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: spec.access_modes.clone(),
                capacity: storage.map(|q| BTreeMap::from([("storage".to_string(), q)])),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    name: claim.metadata.name.clone(),
                    namespace: claim.metadata.namespace.clone(),
                    uid: claim.metadata.uid.clone(),
                    ..Default::default()
                }),
                host_path: Some(HostPathVolumeSource {
                    path: path.display().to_string(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                node_affinity,
                persistent_volume_reclaim_policy: class.reclaim_policy.clone().or_else(|| Some("Delete".into())),
                storage_class_name: Some(class.name_any()),
                volume_mode: spec.volume_mode.clone(),
                ..Default::default()
            }),
            status: None,
        };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                tracing::info!(claim = key, volume = %name, path = %path.display(), "provisioned");
                self.recorder.normal(
                    claim.as_ref(),
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {name}"),
                );
                Ok(())
            }
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).context("creating the volume"),
        }
    }

    /// The directory of a deleted local-path volume goes with it.
    fn remove(&self, name: &str) -> anyhow::Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(()) };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("{name}_")) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
                tracing::info!(volume = name, "local path removed");
            }
        }
        Ok(())
    }
}
