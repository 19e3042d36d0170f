//! The namespace controller: empties a terminating namespace of every namespaced
//! resource the API serves (found through discovery), reports what is left in the
//! namespace's conditions as upstream (NamespaceContentRemaining,
//! NamespaceFinalizersRemaining, and the three "no failure" ones), and once nothing is
//! left removes the `kubernetes` finalizer through `namespaces/<name>/finalize`, after
//! which the API server deletes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use super::runtime::{Ctx, Informer, WorkQueue, discovery, is_not_found};

const FINALIZER: &str = "kubernetes";
/// How long a discovery result is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(30);

struct Deleter {
    client: Client,
    namespaces: Arc<Informer<Namespace>>,
    queue: Arc<WorkQueue>,
    resources: Mutex<Option<(Instant, Vec<ApiResource>)>>,
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("namespace");
    let d = Arc::new(Deleter {
        client: ctx.client.clone(),
        namespaces: ctx.informer::<Namespace>(),
        queue: queue.clone(),
        resources: Mutex::default(),
    });
    let q = queue.clone();
    d.namespaces.on_change(move |ev| {
        if ev.object().metadata.deletion_timestamp.is_some() {
            q.add(ev.object().name_any());
        }
    });
    ctx.run_workers(queue, 10, move |name| {
        let d = d.clone();
        async move { d.sync(&name).await }
    });
    Ok(())
}

/// What one pass found still in the namespace: instances per resource, and the
/// finalizers holding them.
#[derive(Default)]
struct Remaining {
    by_resource: BTreeMap<String, usize>,
    by_finalizer: BTreeMap<String, usize>,
}

impl Deleter {
    async fn namespaced_resources(&self) -> anyhow::Result<Vec<ApiResource>> {
        let mut cached = self.resources.lock().await;
        if let Some((at, list)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(list.clone());
        }
        let found = discovery::deletable_resources(&self.client).await.context("discovering resources")?;
        let list: Vec<ApiResource> =
            found.into_iter().filter(|(_, namespaced)| *namespaced).map(|(ar, _)| ar).collect();
        *cached = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(ns) = self.namespaces.get(name) else { return Ok(()) };
        let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let remaining = self.delete_contents(name).await?;
        self.report(&ns, &remaining).await;
        if !remaining.by_resource.is_empty() {
            // graceful deletions and finalizers take their time: look again soon
            self.queue.add_after(name.to_string(), Duration::from_secs(1));
            return Ok(());
        }
        let kept: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": kept}});
        let request = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body)?)?;
        match self.client.request::<serde_json::Value>(request).await {
            Ok(_) => tracing::info!(namespace = name, "namespace emptied; finalized"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).context("finalizing the namespace"),
        }
        Ok(())
    }

    /// Delete everything in the namespace; what is still there afterwards.
    async fn delete_contents(&self, ns: &str) -> anyhow::Result<Remaining> {
        let mut remaining = Remaining::default();
        for ar in self.namespaced_resources().await? {
            let api: Api<PartialObjectMeta<DynamicObject>> = Api::namespaced_with(self.client.clone(), ns, &ar);
            let items = match api.list_metadata(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {} in {ns}", ar.plural)),
            };
            for item in items {
                if item.metadata.deletion_timestamp.is_none() {
                    let objects: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
                    match objects.delete(&item.name_any(), &DeleteParams::background()).await {
                        // only an object that came back marked (finalizers, a graceful pod) is left
                        Ok(done) => match done.left() {
                            Some(o) if o.metadata.deletion_timestamp.is_some() => {}
                            _ => continue,
                        },
                        Err(e) if is_not_found(&e) => continue,
                        Err(e) => {
                            return Err(e).with_context(|| format!("deleting {} {ns}/{}", ar.plural, item.name_any()));
                        }
                    }
                }
                let resource =
                    if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
                *remaining.by_resource.entry(resource).or_default() += 1;
                for f in item.metadata.finalizers.iter().flatten() {
                    *remaining.by_finalizer.entry(f.clone()).or_default() += 1;
                }
            }
        }
        Ok(remaining)
    }

    /// The namespace's deletion conditions, as `kubectl describe namespace` shows them.
    async fn report(&self, ns: &Namespace, remaining: &Remaining) {
        let now = Time(Timestamp::now());
        let content = match remaining.by_resource.is_empty() {
            true => ("False", "ContentRemoved", "All content successfully removed".to_string()),
            false => {
                let parts: Vec<String> =
                    remaining.by_resource.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
                ("True", "SomeResourcesRemain", format!("Some resources are remaining: {}", parts.join(", ")))
            }
        };
        let finalizers = match remaining.by_finalizer.is_empty() {
            true => ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished".to_string()),
            false => {
                let parts: Vec<String> =
                    remaining.by_finalizer.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
                (
                    "True",
                    "SomeFinalizersRemain",
                    format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
                )
            }
        };
        let conditions = [
            (
                "NamespaceDeletionDiscoveryFailure",
                ("False", "ResourcesDiscovered", "All resources successfully discovered".to_string()),
            ),
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                ("False", "ParsedGroupVersions", "All legacy kube types successfully parsed".to_string()),
            ),
            (
                "NamespaceDeletionContentFailure",
                (
                    "False",
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization".to_string(),
                ),
            ),
            ("NamespaceContentRemaining", content),
            ("NamespaceFinalizersRemaining", finalizers),
        ];
        let current = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let list: Vec<serde_json::Value> = conditions
            .iter()
            .map(|(type_, (status, reason, message))| {
                let old = current.iter().find(|c| c.type_ == *type_);
                let since = old.filter(|c| c.status == *status).and_then(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.clone());
                json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
            })
            .collect();
        let unchanged = conditions.iter().all(|(type_, (status, reason, message))| {
            current.iter().any(|c| {
                c.type_ == *type_
                    && c.status == *status
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str())
            })
        });
        if unchanged {
            return;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": list}});
        if let Err(e) = api.patch_status(&ns.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(namespace = %ns.name_any(), error = %e, "cannot write the deletion conditions");
        }
    }
}
