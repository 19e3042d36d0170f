//! The registry of watch caches: one per etcd key prefix, so resources sharing a key
//! space (core and events.k8s.io events) share a cache. Created at start for every
//! resource in the table, or on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::cache::{Cache, KeyRange};
use super::feed;
use crate::registry::filter::Filter;
use crate::registry::keys::{KeySpace, prefix_end};
use crate::registry::store::Store;
use crate::registry::{ResourceDef, all_resources};

/// Events each cache keeps for watches resuming at a resourceVersion.
pub const DEFAULT_HISTORY: usize = 10_000;

#[derive(Clone)]
pub struct Caches {
    inner: Arc<Shared>,
}

struct Shared {
    store: Store,
    keys: KeySpace,
    history: usize,
    progress_reliable: bool,
    caches: Mutex<HashMap<String, Arc<Cache>>>,
}

impl Caches {
    pub fn new(store: Store, keys: KeySpace, history: usize, progress_reliable: bool) -> Caches {
        let shared = Shared { store, keys, history, progress_reliable, caches: Mutex::default() };
        Caches { inner: Arc::new(shared) }
    }

    /// Start a cache for every resource in the table.
    pub fn start_all(&self) {
        for res in all_resources().iter().filter(|r| !r.review) {
            self.get(res);
        }
    }

    /// The cache of `res`'s key prefix, started if it was not yet.
    pub fn get(&self, res: &'static ResourceDef) -> Arc<Cache> {
        let prefix = self.inner.keys.collection(res, "");
        let mut caches = self.inner.caches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cache) = caches.get(&prefix) {
            return cache.clone();
        }
        // selectors are matched on the stored form: the resource stored as served
        let stored_as =
            all_resources().iter().find(|r| r.etcd_resource == res.etcd_resource && r.storage.is_none()).unwrap_or(res);
        let cache = Arc::new(Cache::new(prefix.clone(), stored_as, self.inner.history, self.inner.progress_reliable));
        caches.insert(prefix, cache.clone());
        tokio::spawn(feed::run(cache.clone(), self.inner.store.clone()));
        cache
    }

    /// One object as the cache holds it, decoded (None: not in the cache).
    pub fn object(&self, res: &'static ResourceDef, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let key = self.range(res, namespace, Some(name)).start;
        let (obj, _) = self.get(res).get(&key);
        serde_json::from_slice(&obj?.json).ok()
    }

    /// Every object of `res` in `namespace` ("": all) as the cache holds them, decoded.
    pub fn objects(&self, res: &'static ResourceDef, namespace: &str) -> Vec<serde_json::Value> {
        let range = self.range(res, namespace, None);
        let (items, ..) = self.get(res).list(&range, &Filter::everything(res), 0, false);
        items.iter().filter_map(|o| serde_json::from_slice(&o.json).ok()).collect()
    }

    /// The key range a request covers: one object, a namespace, or the whole prefix.
    pub fn range(&self, res: &ResourceDef, namespace: &str, name: Option<&str>) -> KeyRange {
        if let Some(name) = name
            && (!res.namespaced || !namespace.is_empty())
        {
            let start = self.inner.keys.object(res, namespace, name).into_bytes();
            let mut end = start.clone();
            end.push(0);
            return KeyRange { start, end };
        }
        let prefix = self.inner.keys.collection(res, namespace);
        KeyRange { end: prefix_end(&prefix), start: prefix.into_bytes() }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// Whether an etcd version answers progress requests in order with events: the fix
/// landed in 3.4.31 and 3.5.13 (upstream Kubernetes checks the same versions before it
/// serves consistent reads from its cache).
pub fn progress_ordered(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

#[cfg(test)]
mod tests {
    use super::progress_ordered;

    #[test]
    fn etcd_versions_with_ordered_progress() {
        assert!(!progress_ordered("3.4.23"));
        assert!(progress_ordered("3.4.31"));
        assert!(!progress_ordered("3.5.9"));
        assert!(progress_ordered("3.5.13"));
        assert!(progress_ordered("3.6.0"));
        assert!(!progress_ordered("garbage"));
    }
}
