//! The one etcd watch behind a cache: a paginated list at one revision, then an etcd
//! watch (prev_kv, progress_notify) applying every event in order. On start-up the etcd
//! watch begins some revisions *before* the list, so the ring also holds recent history
//! and clients resuming after a server restart keep their stream. A lost connection
//! resumes where it stopped; when etcd compacted past that point the cache re-lists and
//! appends the difference as ADDED/MODIFIED/DELETED events, so its watchers lose nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchOptions};

use super::cache::{Cache, Event, Obj};
use crate::registry::keys::prefix_end;
use crate::registry::store::Store;

/// Keys read per round of the initial list.
const LIST_PAGE: i64 = 2000;
/// How often the feeder asks etcd for a progress notification while idle (only where
/// etcd orders those with events).
const PROGRESS_TICK: Duration = Duration::from_secs(2);
/// Failed attempts to watch etcd after which the cache ends its watchers.
const LOST_AFTER: u32 = 3;

/// Run the cache's feed for the life of the server.
pub async fn run(cache: Arc<Cache>, store: Store) {
    let mut first = true;
    let mut backoff = Backoff::default();
    loop {
        let (objects, list_rev) = match list_all(&cache, &store).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(prefix = cache.prefix, error = %e, "watch cache list failed");
                backoff.wait().await;
                continue;
            }
        };
        backoff.reset();
        // history from before the list: as many revisions as the ring holds events
        let start = if first { (list_rev - cache.capacity as i64 + 1).max(1) } else { list_rev + 1 };
        install(&cache, objects, list_rev, start, first);
        first = false;
        watch_from(&cache, &store, start, list_rev).await;
        tracing::warn!(prefix = cache.prefix, "watch cache re-listing after etcd compaction");
    }
}

/// The whole prefix at one revision, read in pages.
async fn list_all(cache: &Cache, store: &Store) -> Result<(BTreeMap<Bytes, Arc<Obj>>, i64), String> {
    let mut objects = BTreeMap::new();
    let mut rev = 0;
    let mut start: Option<Vec<u8>> = None;
    loop {
        let page = store.list_raw(&cache.prefix, start.as_deref(), LIST_PAGE, rev).await.map_err(|e| e.message)?;
        rev = page.revision;
        let last = page.items.last().map(|s| s.key.clone());
        for s in page.items {
            if let Some(obj) = parse(cache, store, &s.key, &s.value, s.mod_revision) {
                objects.insert(obj.key.clone(), Arc::new(obj));
            }
        }
        match last {
            Some(mut key) if page.more => {
                key.push(0);
                start = Some(key);
            }
            _ => return Ok((objects, rev)),
        }
    }
}

/// Install a list: the first one as is; a later one as the difference to what the cache
/// held, appended as events so that watchers carry on.
fn install(cache: &Cache, objects: BTreeMap<Bytes, Arc<Obj>>, list_rev: i64, start: i64, first: bool) {
    let mut inner = cache.write_lock();
    if first {
        inner.objects = objects;
        inner.floor = start - 1;
    } else {
        let old = std::mem::replace(&mut inner.objects, objects);
        let mut diff: Vec<Event> = Vec::new();
        for (key, new) in &inner.objects {
            match old.get(key) {
                None => diff.push(Event::new(new.mod_revision, key.clone(), Some(new.clone()), None)),
                Some(o) if o.mod_revision != new.mod_revision => {
                    diff.push(Event::new(new.mod_revision, key.clone(), Some(new.clone()), Some(o.clone())));
                }
                Some(_) => {}
            }
        }
        for (key, o) in &old {
            if !inner.objects.contains_key(key) {
                diff.push(Event::new(list_rev, key.clone(), None, Some(o.clone())));
            }
        }
        diff.sort_by_key(|e| e.rev);
        let old_rev = inner.rev;
        tracing::info!(
            prefix = cache.prefix,
            changes = diff.len(),
            from = old_rev,
            to = list_rev,
            "watch cache re-listed"
        );
        for event in diff {
            inner.push(event, cache.capacity);
        }
        if list_rev > old_rev + 1 {
            inner.gaps.push((old_rev, list_rev));
        }
    }
    inner.rev = list_rev;
    inner.ready = true;
    let count = inner.objects.len();
    drop(inner);
    tracing::debug!(prefix = cache.prefix, objects = count, revision = list_rev, "watch cache listed");
    cache.changed.send_replace(list_rev);
}

/// Follow etcd from revision `next` until a compaction makes a re-list necessary.
async fn watch_from(cache: &Cache, store: &Store, mut next: i64, list_rev: i64) {
    let mut backoff = Backoff::default();
    // consecutive failures to keep a watch on etcd; after a few the cache gives up its
    // watchers so that their clients notice
    let mut failures = 0u32;
    let client = store.client().watch_client().max_decoding_message_size(512 * 1024 * 1024);
    loop {
        let options = WatchOptions::new()
            .with_range(prefix_end(&cache.prefix))
            .with_start_revision(next)
            .with_prev_key()
            .with_progress_notify();
        let mut stream = match client.clone().watch(cache.prefix.as_str(), Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                if failures < LOST_AFTER {
                    tracing::warn!(prefix = cache.prefix, error = %e, "watch cache cannot open its etcd watch");
                } else {
                    tracing::debug!(prefix = cache.prefix, error = %e, "watch cache cannot open its etcd watch");
                }
                failures += 1;
                if failures == LOST_AFTER {
                    cache.terminate_watchers();
                }
                backoff.wait().await;
                continue;
            }
        };
        let mut watch_id = None;
        let mut ticker = tokio::time::interval(PROGRESS_TICK);
        loop {
            let msg = tokio::select! {
                msg = stream.message() => msg,
                _ = cache.progress_wanted.notified(), if cache.progress_reliable => {
                    let _ = stream.request_progress().await;
                    continue;
                }
                _ = ticker.tick(), if cache.progress_reliable => {
                    let _ = stream.request_progress().await;
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(prefix = cache.prefix, error = %e, next, "watch cache lost its etcd watch");
                    break;
                }
            };
            let compacted = resp.compact_revision();
            if compacted > 0 {
                if next <= list_rev && compacted <= list_rev + 1 {
                    // compacted while catching up on history: keep the history from there
                    restart_history(cache, compacted);
                    next = compacted;
                    break;
                }
                return;
            }
            if resp.canceled() {
                tracing::warn!(
                    prefix = cache.prefix,
                    reason = resp.cancel_reason(),
                    "etcd cancelled the cache's watch"
                );
                break;
            }
            if resp.created() {
                watch_id = Some(resp.watch_id());
                if failures >= LOST_AFTER {
                    set_ready(cache);
                }
                failures = 0;
                continue;
            }
            if resp.events().is_empty() {
                // a progress notification: everything up to its revision was sent; only
                // etcd's periodic one (on our watch id) is ordered with events on 3.4
                let ordered = Some(resp.watch_id()) == watch_id || (resp.watch_id() == -1 && cache.progress_reliable);
                if let Some(rev) = resp.header().map(|h| h.revision()).filter(|_| ordered) {
                    advance(cache, rev);
                    next = next.max(rev + 1);
                }
                continue;
            }
            next = next.max(apply(cache, store, resp.events()) + 1);
            backoff.reset();
        }
        failures += 1;
        if failures == LOST_AFTER {
            cache.terminate_watchers();
        }
        backoff.wait().await;
    }
}

/// Back on etcd after losing it, with the history intact.
fn set_ready(cache: &Cache) {
    let mut inner = cache.write_lock();
    inner.ready = true;
    let rev = inner.rev;
    drop(inner);
    cache.changed.send_replace(rev);
}

/// The history before `compacted` is gone from etcd: drop what the ring has of it.
fn restart_history(cache: &Cache, compacted: i64) {
    let mut inner = cache.write_lock();
    inner.ring.clear();
    inner.floor = inner.floor.max(compacted - 1);
}

fn advance(cache: &Cache, rev: i64) {
    let mut inner = cache.write_lock();
    if rev <= inner.rev {
        return;
    }
    inner.rev = rev;
    drop(inner);
    cache.changed.send_replace(rev);
}

/// A stored value as a cache object: decrypted if its prefix is encrypted (one that does
/// not decrypt is logged and left out, like one that does not parse).
fn parse(cache: &Cache, store: &Store, key: &[u8], value: &[u8], rev: i64) -> Option<Obj> {
    match store.open_bytes(key, value) {
        Ok(plain) => Obj::parse(cache.res, key, &plain, rev),
        Err(error) => {
            tracing::error!(key = %String::from_utf8_lossy(key), rev, error, "watch cache cannot decrypt a value; skipped");
            None
        }
    }
}

/// Apply one batch of etcd events; returns the last revision.
fn apply(cache: &Cache, store: &Store, events: &[etcd_client::Event]) -> i64 {
    let parse = |kv: &etcd_client::KeyValue| parse(cache, store, kv.key(), kv.value(), kv.mod_revision()).map(Arc::new);
    let mut inner = cache.write_lock();
    let mut last = 0;
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let rev = kv.mod_revision();
        last = rev;
        let key = Bytes::copy_from_slice(kv.key());
        let is_put = ev.event_type() == EventType::Put;
        if rev <= inner.rev {
            // history from before the list: the objects already include it
            let prev = ev.prev_kv().and_then(parse);
            let cur = if is_put { parse(kv) } else { None };
            if cur.is_some() || prev.is_some() {
                inner.push(Event::new(rev, key, cur, prev), cache.capacity);
            }
            continue;
        }
        let prev = inner.objects.get(&key).cloned().or_else(|| ev.prev_kv().and_then(parse));
        let cur = if is_put { parse(kv) } else { None };
        match &cur {
            Some(obj) => inner.objects.insert(key.clone(), obj.clone()),
            None => inner.objects.remove(&key),
        };
        inner.rev = rev;
        if cur.is_some() || prev.is_some() {
            inner.push(Event::new(rev, key, cur, prev), cache.capacity);
        }
    }
    let rev = inner.rev;
    drop(inner);
    cache.changed.send_replace(rev);
    last
}

/// Exponential back-off between reconnects: 100 ms doubling to 5 s.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    async fn wait(&mut self) {
        let ms = (100u64 << self.0.min(6)).min(5000);
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}
