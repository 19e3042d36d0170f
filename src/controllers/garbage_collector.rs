//! The garbage collector: deletes objects whose owners are gone and carries out the
//! Foreground and Orphan deletions the API server marks with finalizers.
//!
//! As upstream, it follows every listable, deletable resource the API serves (found
//! through discovery; events excepted) with a metadata-only watch, and keeps a graph of
//! uid → (resource, name, owner references, deletion state) with a reverse index from
//! owner uid to dependents. Each uid is synced from the work queue:
//!
//! - an object marked with the `orphan` finalizer has its uid removed from every
//!   dependent's ownerReferences, then loses the finalizer;
//! - an object marked with `foregroundDeletion` has its dependents deleted (those that
//!   block owner deletion, in the foreground themselves) and loses the finalizer once no
//!   blocking dependent is left;
//! - any other object with owners is deleted when none of its owners exists (checked
//!   against the API when the graph does not know the owner, since a watch may lag), in
//!   the foreground when an owner waits for it; dangling references next to a live owner
//!   are removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;

use super::runtime::{Ctx, WorkQueue, is_conflict, is_not_found};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// What the graph knows of one object.
#[derive(Clone, Debug)]
struct Node {
    resource: Arc<Resource>,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
    resource_version: String,
}

impl Node {
    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// A resource the collector follows.
#[derive(Debug)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid → uids of the objects that name it.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Record an object; returns the uids whose sync may change because of it.
    fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        let mut touched = vec![uid.clone()];
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            // an owner waiting for its dependents learns of each change to them
            touched.push(o.uid.clone());
        }
        if node.deleting {
            touched.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        }
        self.nodes.insert(uid, node);
        touched
    }

    /// Forget an object; returns its dependents and owners, whose sync may now act.
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self.dependents.get(uid).into_iter().flatten().cloned().collect();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                touched.push(o.uid.clone());
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(uid);
                }
            }
        }
        touched
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        let uids = self.dependents.get(uid).into_iter().flatten();
        uids.filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone()))).collect()
    }
}

struct Collector {
    client: Client,
    graph: RwLock<Graph>,
    /// kind (apiVersion/kind) → resource, to look owners up.
    by_kind: RwLock<HashMap<(String, String), Arc<Resource>>>,
    queue: Arc<WorkQueue>,
    synced: Mutex<(usize, usize)>,
}

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("garbage_collector");
    let gc = Arc::new(Collector {
        client: ctx.client.clone(),
        graph: RwLock::default(),
        by_kind: RwLock::default(),
        queue: queue.clone(),
        // (watches started, watches listed); usize::MAX until discovery is done
        synced: Mutex::new((usize::MAX, 0)),
    });
    let check = gc.clone();
    ctx.informers.add_sync_check(move || {
        let (started, listed) = *check.synced.lock().unwrap_or_else(|e| e.into_inner());
        started == listed
    });
    tokio::spawn(gc.clone().discover_and_watch());
    ctx.run_workers(queue, 20, move |uid| {
        let gc = gc.clone();
        async move { gc.sync(&uid).await }
    });
    Ok(())
}

impl Collector {
    async fn discover_and_watch(self: Arc<Self>) {
        let resources: Vec<Arc<Resource>> = loop {
            match super::runtime::discovery::deletable_resources(&self.client).await {
                // events are never owned: not worth a watch
                Ok(found) => {
                    break found
                        .into_iter()
                        .filter(|(ar, _)| ar.plural != "events")
                        .map(|(ar, namespaced)| Arc::new(Resource { ar, namespaced }))
                        .collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector: discovery failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }
        };
        {
            let mut by_kind = self.by_kind.write().unwrap_or_else(|e| e.into_inner());
            for r in &resources {
                by_kind.insert((r.ar.api_version.clone(), r.ar.kind.clone()), r.clone());
            }
        }
        tracing::info!(resources = resources.len(), "garbage collector: following resources");
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = (resources.len(), 0);
        for r in resources {
            tokio::spawn(self.clone().watch(r));
        }
    }

    async fn watch(self: Arc<Self>, resource: Arc<Resource>) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &resource.ar);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listed_once = false;
        let mut seen: HashSet<String> = HashSet::new();
        let mut relist: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(m)) => {
                    if let Some(uid) = self.apply(&resource, m.metadata) {
                        relist.insert(uid);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    for gone in seen.difference(&relist) {
                        self.forget(gone);
                    }
                    seen = std::mem::take(&mut relist);
                    if !listed_once {
                        listed_once = true;
                        self.synced.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
                    }
                }
                Ok(watcher::Event::Apply(m)) => {
                    if let Some(uid) = self.apply(&resource, m.metadata) {
                        seen.insert(uid);
                    }
                }
                Ok(watcher::Event::Delete(m)) => {
                    if let Some(uid) = m.metadata.uid {
                        seen.remove(&uid);
                        self.forget(&uid);
                    }
                }
                Err(e) => {
                    tracing::debug!(resource = %resource.ar.plural, error = %e, "garbage collector watch failed; retrying")
                }
            }
        }
    }

    fn apply(
        &self,
        resource: &Arc<Resource>,
        meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Option<String> {
        let uid = meta.uid?;
        let node = Node {
            resource: resource.clone(),
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            owners: meta.owner_references.unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.unwrap_or_default(),
            resource_version: meta.resource_version.unwrap_or_default(),
        };
        // objects with neither owners nor a pending GC finalizer need no sync of their own
        let interesting = !node.owners.is_empty() || node.has(FOREGROUND) || node.has(ORPHAN);
        let touched = self.graph.write().unwrap_or_else(|e| e.into_inner()).upsert(uid.clone(), node);
        for (i, t) in touched.into_iter().enumerate() {
            if i > 0 || interesting {
                self.queue.add(t);
            }
        }
        Some(uid)
    }

    fn forget(&self, uid: &str) {
        let touched = self.graph.write().unwrap_or_else(|e| e.into_inner()).remove(uid);
        for t in touched {
            self.queue.add(t);
        }
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph.read().unwrap_or_else(|e| e.into_inner()).nodes.get(uid).cloned()
    }

    fn api(&self, resource: &Resource, namespace: &str) -> Api<DynamicObject> {
        match resource.namespaced {
            true => Api::namespaced_with(self.client.clone(), namespace, &resource.ar),
            false => Api::all_with(self.client.clone(), &resource.ar),
        }
    }

    async fn sync(&self, uid: &str) -> anyhow::Result<()> {
        let Some(node) = self.node(uid) else { return Ok(()) };
        if node.deleting && node.has(ORPHAN) {
            return self.orphan_dependents(uid, &node).await;
        }
        if node.deleting && node.has(FOREGROUND) {
            return self.delete_dependents(uid, &node).await;
        }
        if node.owners.is_empty() || node.deleting {
            return Ok(());
        }
        self.check_owners(uid, &node).await
    }

    /// Remove `uid` from every dependent's owners, then the `orphan` finalizer.
    async fn orphan_dependents(&self, uid: &str, node: &Node) -> anyhow::Result<()> {
        let dependents = self.graph.read().unwrap_or_else(|e| e.into_inner()).dependents_of(uid);
        for (dep_uid, dep) in dependents {
            let kept: Vec<&OwnerReference> = dep.owners.iter().filter(|o| o.uid != uid).collect();
            self.set_owners(&dep_uid, &dep, &kept).await?;
        }
        tracing::info!(object = %node.name, kind = %node.resource.ar.kind, "dependents orphaned");
        self.remove_finalizer(node, ORPHAN).await
    }

    /// Delete the dependents of an object deleted in the foreground; drop its finalizer
    /// once none that blocks it is left.
    async fn delete_dependents(&self, uid: &str, node: &Node) -> anyhow::Result<()> {
        let dependents = self.graph.read().unwrap_or_else(|e| e.into_inner()).dependents_of(uid);
        let mut blocking = 0;
        for (dep_uid, dep) in &dependents {
            let blocks = dep.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !dep.deleting {
                let policy = if blocks { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
                self.delete(dep_uid, dep, policy).await?;
            }
        }
        if blocking > 0 {
            // each dependent's deletion requeues this owner
            return Ok(());
        }
        self.remove_finalizer(node, FOREGROUND).await
    }

    /// Delete an object none of whose owners exists; drop references to missing owners
    /// next to a live one.
    async fn check_owners(&self, uid: &str, node: &Node) -> anyhow::Result<()> {
        let mut live = Vec::new();
        let mut waiting = false;
        for owner in &node.owners {
            match self.owner_state(node, owner).await? {
                OwnerState::Absent => {}
                OwnerState::Present { deleting_foreground } => {
                    if deleting_foreground && owner.block_owner_deletion == Some(true) {
                        waiting = true;
                    }
                    live.push(owner);
                }
            }
        }
        if live.len() == node.owners.len() && !waiting {
            return Ok(());
        }
        if live.is_empty() {
            tracing::info!(object = %node.name, namespace = %node.namespace, kind = %node.resource.ar.kind, "owners gone; deleting");
            return self.delete(uid, node, PropagationPolicy::Background).await;
        }
        if waiting && live.iter().all(|o| self.owner_waits(o)) {
            // every remaining owner is being deleted in the foreground, waiting on this
            return self.delete(uid, node, PropagationPolicy::Foreground).await;
        }
        if live.len() < node.owners.len() {
            return self.set_owners(uid, node, &live).await;
        }
        Ok(())
    }

    fn owner_waits(&self, owner: &OwnerReference) -> bool {
        self.node(&owner.uid).is_some_and(|n| n.deleting && n.has(FOREGROUND))
    }

    async fn owner_state(&self, node: &Node, owner: &OwnerReference) -> anyhow::Result<OwnerState> {
        if let Some(o) = self.node(&owner.uid) {
            return Ok(OwnerState::Present { deleting_foreground: o.deleting && o.has(FOREGROUND) });
        }
        // not in the graph: the watch may not have caught up; ask the API
        let resource = {
            let by_kind = self.by_kind.read().unwrap_or_else(|e| e.into_inner());
            by_kind.get(&(owner.api_version.clone(), owner.kind.clone())).cloned()
        };
        let Some(resource) = resource else {
            // a kind the API does not serve cannot own anything
            return Ok(OwnerState::Absent);
        };
        let ns = if resource.namespaced { node.namespace.as_str() } else { "" };
        match self.api(&resource, ns).get_metadata_opt(&owner.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                let foreground = o.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                Ok(OwnerState::Present { deleting_foreground: o.metadata.deletion_timestamp.is_some() && foreground })
            }
            _ => Ok(OwnerState::Absent),
        }
    }

    async fn delete(&self, uid: &str, node: &Node, policy: PropagationPolicy) -> anyhow::Result<()> {
        let params = DeleteParams { propagation_policy: Some(policy), ..DeleteParams::default() }
            .preconditions(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None });
        match self.api(&node.resource, &node.namespace).delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {} {}", node.resource.ar.kind, node.name)),
        }
    }

    async fn set_owners(&self, uid: &str, node: &Node, owners: &[&OwnerReference]) -> anyhow::Result<()> {
        // the uid makes the patch fail on an object re-created under the same name
        let patch = json!({"metadata": {"ownerReferences": owners, "uid": uid}});
        self.patch_metadata(node, &patch, "updating the owners of").await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> anyhow::Result<()> {
        let kept: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": node.resource_version}});
        self.patch_metadata(node, &patch, &format!("removing the {finalizer} finalizer of")).await
    }

    /// A metadata merge patch; an object already gone needs none.
    async fn patch_metadata(&self, node: &Node, patch: &serde_json::Value, doing: &str) -> anyhow::Result<()> {
        let api = self.api(&node.resource, &node.namespace);
        match api.patch_metadata(&node.name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("{doing} {} {}", node.resource.ar.kind, node.name)),
        }
    }
}

enum OwnerState {
    Absent,
    Present { deleting_foreground: bool },
}
