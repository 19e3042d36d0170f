//! Shared informers, as client-go's: one list+watch per resource for the whole process
//! (`kube::runtime::watcher`, re-listed with backoff after errors), an in-memory store of
//! the objects, and handlers that every controller interested in the kind registers.
//! Handlers see added, updated (old and new) and deleted objects; a re-list is turned
//! into updates plus deletions of what it no longer holds, so no change is lost. A handler
//! must be quick (it only enqueues keys): it runs on the informer's task.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// The bounds of a kind an informer can follow.
pub trait Kind: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K> Kind for K where K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}

/// What a handler is told.
pub enum Event<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

impl<K> Event<'_, K> {
    /// The object as it is now (for a deletion, as it was last seen).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Event::Added(o) | Event::Deleted(o) => o,
            Event::Updated { new, .. } => new,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Event<K>) + Send + Sync>;

/// `namespace/name` (`name` alone for cluster-scoped objects): the store's and the
/// work queues' key, as client-go's MetaNamespaceKeyFunc.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    match obj.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Split a key into (namespace, name); the namespace is empty for cluster-scoped objects.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

pub struct Informer<K> {
    /// By key (`namespace/name`), so one namespace's objects are one range.
    objects: RwLock<BTreeMap<String, Arc<K>>>,
    handlers: Mutex<Vec<Arc<Handler<K>>>>,
    synced: AtomicBool,
    started: AtomicBool,
}

impl<K: Kind> Informer<K> {
    fn new() -> Informer<K> {
        Informer {
            objects: RwLock::default(),
            handlers: Mutex::default(),
            synced: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }
    }

    /// Register a handler. Objects already in the store are replayed to it as additions,
    /// so a handler added late misses nothing.
    pub fn on_change(&self, handler: impl Fn(&Event<K>) + Send + Sync + 'static) {
        let handler: Arc<Handler<K>> = Arc::new(Box::new(handler));
        let mut handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        for obj in self.list() {
            handler(&Event::Added(&obj));
        }
        handlers.push(handler);
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub fn get_in(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        match namespace {
            "" => self.get(name),
            ns => self.get(&format!("{ns}/{name}")),
        }
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("{namespace}/");
        objects.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(_, o)| o.clone()).collect()
    }

    pub fn has_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn notify(&self, event: &Event<K>) {
        let handlers: Vec<_> = self.handlers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for h in handlers {
            h(event);
        }
    }

    fn apply(&self, obj: K) {
        let obj = Arc::new(obj);
        let key = key_of(obj.as_ref());
        let old = self.objects.write().unwrap_or_else(|e| e.into_inner()).insert(key, obj.clone());
        match old {
            // an unchanged object (a re-list) is no news
            Some(old) if old.meta().resource_version == obj.meta().resource_version => {}
            Some(old) => self.notify(&Event::Updated { old: &old, new: &obj }),
            None => self.notify(&Event::Added(&obj)),
        }
    }

    fn delete(&self, key: &str) {
        let old = self.objects.write().unwrap_or_else(|e| e.into_inner()).remove(key);
        if let Some(old) = old {
            self.notify(&Event::Deleted(&old));
        }
    }

    async fn run(self: Arc<Self>, api: Api<K>) {
        let kind = K::kind(&()).to_string();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut relisted: Option<Vec<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relisted = Some(Vec::new()),
                Ok(watcher::Event::InitApply(obj)) => {
                    relisted.get_or_insert_with(Vec::new).push(key_of(&obj));
                    self.apply(obj);
                }
                Ok(watcher::Event::InitDone) => {
                    let listed: std::collections::HashSet<String> =
                        relisted.take().unwrap_or_default().into_iter().collect();
                    let gone: Vec<String> = {
                        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
                        objects.keys().filter(|k| !listed.contains(*k)).cloned().collect()
                    };
                    for key in gone {
                        self.delete(&key);
                    }
                    tracing::debug!(kind, objects = listed.len(), "listed");
                    self.synced.store(true, Ordering::Release);
                }
                Ok(watcher::Event::Apply(obj)) => self.apply(obj),
                Ok(watcher::Event::Delete(obj)) => self.delete(&key_of(&obj)),
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
    }
}

/// The process's informers, one per kind, made on first use and started by `start`.
pub struct Informers {
    client: Client,
    by_kind: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    sync_checks: Mutex<Vec<Box<dyn Fn() -> bool + Send + Sync>>>,
}

impl Informers {
    pub fn new(client: Client) -> Informers {
        Informers { client, by_kind: Mutex::default(), starters: Mutex::default(), sync_checks: Mutex::default() }
    }

    pub fn get<K: Kind>(&self) -> Arc<Informer<K>> {
        let mut by_kind = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = by_kind.get(&TypeId::of::<K>()) {
            return existing.clone().downcast::<Informer<K>>().expect("informer map holds one type per TypeId");
        }
        let informer = Arc::new(Informer::<K>::new());
        by_kind.insert(TypeId::of::<K>(), informer.clone());
        let inf = informer.clone();
        self.sync_checks.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(move || inf.has_synced()));
        let (inf, client) = (informer.clone(), self.client.clone());
        self.starters.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(move || {
            if !inf.started.swap(true, Ordering::AcqRel) {
                tokio::spawn(inf.run(Api::<K>::all(client)));
            }
        }));
        informer
    }

    /// Count another source of state (say, the garbage collector's own watches) in
    /// `wait_synced`.
    pub fn add_sync_check(&self, synced: impl Fn() -> bool + Send + Sync + 'static) {
        self.sync_checks.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(synced));
    }

    /// Wait until every informer made so far has its first complete list.
    pub async fn wait_synced(&self) {
        loop {
            let all = self.sync_checks.lock().unwrap_or_else(|e| e.into_inner()).iter().all(|synced| synced());
            if all {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Start every informer made so far (and none twice).
    pub fn start(&self) {
        let starters: Vec<_> = self.starters.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for start in starters {
            start();
        }
    }
}

/// The name of the object's owner of this kind that is its controller, if any.
pub fn controller_of<'a, K: Resource>(
    obj: &'a K,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    obj.meta().owner_references.as_ref()?.iter().find(|r| r.controller == Some(true) && r.kind == kind)
}
