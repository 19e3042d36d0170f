//! The watch cache of one etcd key prefix (`/registry/pods/` ...): the current objects as
//! stored bytes with their resourceVersion spliced in, and a bounded ring of recent
//! events. One etcd watch feeds it (`feed.rs`); any number of watchers read the ring
//! through their own cursor, so a slow watcher costs nobody else anything and memory is
//! bounded by the ring, not by the number of watchers. Locks are never held across an
//! await: readers copy `Arc`s out and let go.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};

use crate::registry::filter::Filter;
use crate::registry::{ResourceDef, rawjson};

/// One object as the cache holds it.
pub struct Obj {
    pub key: Bytes,
    /// The stored JSON with `"resourceVersion":"<mod_revision>"` spliced into its metadata.
    pub json: Bytes,
    /// Where the resourceVersion digits start in `json`.
    rv_at: usize,
    pub mod_revision: i64,
    name: String,
    namespace: String,
    labels: Option<Map<String, Value>>,
    /// Values of the kind's field labels (`spec.nodeName`, `status.phase` ...).
    fields: Vec<(&'static str, String)>,
}

#[derive(serde::Deserialize, Default)]
struct MetaParts {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Option<Map<String, Value>>,
}

impl Obj {
    /// Parse stored bytes once: splice the resourceVersion in and pick out what
    /// selectors need. None for bytes that are not a JSON object.
    pub fn parse(res: &ResourceDef, key: &[u8], raw: &[u8], mod_revision: i64) -> Option<Obj> {
        let (json, rv_at) = match rawjson::splice_resource_version(raw, mod_revision) {
            Some(spliced) => spliced,
            None => {
                // not our layout (written by hand?): normalise through serde once
                let mut v: Value = serde_json::from_slice(raw).ok()?;
                let m = v.as_object_mut()?;
                if !m.get("metadata").is_some_and(Value::is_object) {
                    m.insert("metadata".into(), Value::Object(Map::new()));
                }
                if let Some(Value::Object(md)) = m.get_mut("metadata") {
                    md.remove("resourceVersion");
                }
                rawjson::splice_resource_version(&serde_json::to_vec(&v).ok()?, mod_revision)?
            }
        };
        let parts: MetaParts = rawjson::top_level_value(raw, b"metadata")
            .and_then(|(s, e)| serde_json::from_slice(&raw[s..e]).ok())
            .unwrap_or_default();
        let labels_wanted = res.strategy.field_labels();
        let fields = if labels_wanted.is_empty() {
            Vec::new()
        } else {
            let full: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
            labels_wanted.iter().filter_map(|l| res.strategy.field_label(&full, l).map(|v| (*l, v))).collect()
        };
        Some(Obj {
            key: Bytes::copy_from_slice(key),
            json: Bytes::from(json),
            rv_at,
            mod_revision,
            name: parts.name,
            namespace: parts.namespace,
            labels: parts.labels,
            fields,
        })
    }

    /// The JSON with another resourceVersion (a DELETED event carries the deletion's).
    pub fn json_at(&self, rv: i64) -> Bytes {
        if rv == self.mod_revision {
            return self.json.clone();
        }
        let old_len = self.mod_revision.to_string().len();
        let new = rv.to_string();
        let mut out = Vec::with_capacity(self.json.len() + 4);
        out.extend_from_slice(&self.json[..self.rv_at]);
        out.extend_from_slice(new.as_bytes());
        out.extend_from_slice(&self.json[self.rv_at + old_len..]);
        Bytes::from(out)
    }

    pub fn matches(&self, filter: &Filter) -> bool {
        filter.is_empty()
            || filter.matches_with(self.labels.as_ref(), |field| match field {
                "metadata.name" => Some(self.name.clone()),
                "metadata.namespace" => Some(self.namespace.clone()),
                other => self.fields.iter().find(|(k, _)| *k == other).map(|(_, v)| v.clone()),
            })
    }
}

/// What a watcher sees an event as, after its selector.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Added,
    Modified,
    Deleted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// One change of one key, in etcd order.
pub struct Event {
    pub rev: i64,
    pub key: Bytes,
    /// The object after the change (None: deleted).
    pub cur: Option<Arc<Obj>>,
    /// The object before it (None: created).
    pub prev: Option<Arc<Obj>>,
    /// Plain-JSON watch lines, encoded once per event and kind, shared by all watchers.
    lines: [OnceLock<Bytes>; 3],
}

impl Event {
    pub fn new(rev: i64, key: Bytes, cur: Option<Arc<Obj>>, prev: Option<Arc<Obj>>) -> Event {
        Event { rev, key, cur, prev, lines: Default::default() }
    }

    /// The object a watcher is sent for this event as `kind`: the new object for
    /// ADDED/MODIFIED, the previous one at the event's revision for DELETED (upstream's
    /// choice for deletions and for objects leaving a selector).
    pub fn object_json(&self, kind: Kind) -> Bytes {
        match (kind, &self.cur, &self.prev) {
            (Kind::Deleted, _, Some(prev)) => prev.json_at(self.rev),
            (_, Some(cur), _) => cur.json.clone(),
            (_, None, Some(prev)) => prev.json_at(self.rev),
            (_, None, None) => Bytes::from_static(b"null"),
        }
    }

    /// `{"type":"<KIND>","object":<object>}\n`, built once.
    pub fn line(&self, kind: Kind) -> Bytes {
        let slot = match kind {
            Kind::Added => &self.lines[0],
            Kind::Modified => &self.lines[1],
            Kind::Deleted => &self.lines[2],
        };
        slot.get_or_init(|| event_line(kind.as_str(), &self.object_json(kind))).clone()
    }
}

pub fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// A key range inside the cache's prefix: a namespace, one object, or everything.
#[derive(Clone, Debug)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && key < self.end.as_slice()
    }
}

/// Why a watcher cannot start or continue from where it asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    /// The revision is older than the history holds; the oldest revision one can
    /// resume from is given.
    TooOld(i64),
}

pub(super) struct Inner {
    pub objects: BTreeMap<Bytes, Arc<Obj>>,
    pub ring: VecDeque<Arc<Event>>,
    /// Sequence number of the next event appended; `ring[0]` has `next_seq - ring.len()`.
    pub next_seq: u64,
    /// Every event with a revision above `floor` is in the ring or after it.
    pub floor: i64,
    /// Revision ranges `(after, until)` a watch may not start inside (exclusive both
    /// ends): the cache re-listed there and only knows the difference, not the events.
    pub gaps: Vec<(i64, i64)>,
    /// The objects are etcd's state of the prefix at this revision.
    pub rev: i64,
    pub ready: bool,
    /// Bumped when the cache lost etcd: every watcher of an older epoch ends.
    pub epoch: u64,
}

pub struct Cache {
    pub prefix: String,
    /// The resource whose stored form lives under the prefix (field labels come from it).
    pub res: &'static ResourceDef,
    pub capacity: usize,
    pub(super) inner: RwLock<Inner>,
    /// The cache's revision, bumped after every change of it: watchers wait on this.
    pub(super) changed: watch::Sender<i64>,
    /// Someone waits for the cache to catch up: ask etcd for a progress notification.
    pub(super) progress_wanted: Notify,
    /// etcd's progress notifications on request are ordered with events (3.4.31+, 3.5.13+).
    pub(super) progress_reliable: bool,
}

/// The cache's state in one consistent cut: objects (filtered), revision, and the
/// cursor of the first event after them.
pub struct Snapshot {
    pub objects: Vec<Arc<Obj>>,
    pub rev: i64,
    pub seq: u64,
}

pub enum Read {
    /// Events from the cursor on (possibly none), the next cursor, and the cache's
    /// revision when the read reached the end of the ring.
    Events(Vec<Arc<Event>>, u64, Option<i64>),
    /// The cursor fell off the ring: this watcher was too slow.
    Lost,
}

impl Cache {
    pub fn new(prefix: String, res: &'static ResourceDef, capacity: usize, progress_reliable: bool) -> Cache {
        let inner = Inner {
            objects: BTreeMap::new(),
            ring: VecDeque::new(),
            next_seq: 0,
            floor: 0,
            gaps: Vec::new(),
            rev: 0,
            ready: false,
            epoch: 0,
        };
        Cache {
            prefix,
            res,
            capacity: capacity.max(1),
            inner: RwLock::new(inner),
            changed: watch::channel(0).0,
            progress_wanted: Notify::new(),
            progress_reliable,
        }
    }

    pub(super) fn read_lock(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_ready(&self) -> bool {
        self.read_lock().ready
    }

    pub fn revision(&self) -> i64 {
        self.read_lock().rev
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.changed.subscribe()
    }

    /// Wait until the cache has its first list (false after `timeout`).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| c.read_lock().ready).await
    }

    /// Wait until the cache has seen every change up to `rev` (false after `timeout`).
    pub async fn wait_revision(&self, rev: i64, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| {
            let inner = c.read_lock();
            inner.ready && inner.rev >= rev
        })
        .await
    }

    /// Wait until the cache is at etcd's revision `rev`, asking etcd for a progress
    /// notification when it can be trusted; false when it cannot be confirmed in time.
    pub async fn wait_fresh(&self, rev: i64, timeout: Duration) -> bool {
        if self.wait_revision(rev, Duration::ZERO).await {
            return true;
        }
        if !self.progress_reliable {
            return false;
        }
        self.progress_wanted.notify_one();
        self.wait_revision(rev, timeout).await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Cache) -> bool) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return done(self),
            }
        }
    }

    /// The current objects in `range` that pass `filter`, with the revision they are at
    /// and the cursor of the first event after them.
    pub fn snapshot(&self, range: &KeyRange, filter: &Filter) -> Snapshot {
        let inner = self.read_lock();
        let objects = range_of(&inner.objects, range).filter(|o| o.matches(filter)).cloned().collect();
        Snapshot { objects, rev: inner.rev, seq: inner.next_seq }
    }

    /// A page of objects for a LIST: at most `limit` (0: all) matching objects with keys
    /// from `start` on; returns them, the revision, the key to continue from when more
    /// match, and how many objects follow (counted only when `count_rest`).
    pub fn list(
        &self,
        range: &KeyRange,
        filter: &Filter,
        limit: usize,
        count_rest: bool,
    ) -> (Vec<Arc<Obj>>, i64, Option<Bytes>, usize) {
        let inner = self.read_lock();
        let mut items: Vec<Arc<Obj>> = Vec::new();
        let mut iter = range_of(&inner.objects, range);
        for obj in iter.by_ref() {
            if !obj.matches(filter) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                // one more matches: the page is full and continues after the last item
                let last = items[limit - 1].key.clone();
                let rest = if count_rest { 1 + iter.filter(|o| o.matches(filter)).count() } else { 0 };
                return (items, inner.rev, Some(last), rest);
            }
            items.push(obj.clone());
        }
        (items, inner.rev, None, 0)
    }

    pub fn get(&self, key: &[u8]) -> (Option<Arc<Obj>>, i64) {
        let inner = self.read_lock();
        (inner.objects.get(key).cloned(), inner.rev)
    }

    /// The cursor of the first event after revision `rev`, for a watch resuming there.
    pub fn cursor_after(&self, rev: i64) -> Result<u64, Gone> {
        let inner = self.read_lock();
        if rev < inner.floor {
            return Err(Gone::TooOld(inner.floor));
        }
        if let Some((_, until)) = inner.gaps.iter().find(|(after, until)| rev > *after && rev < *until) {
            return Err(Gone::TooOld(*until));
        }
        let first = inner.next_seq - inner.ring.len() as u64;
        let idx = inner.ring.partition_point(|e| e.rev <= rev);
        Ok(first + idx as u64)
    }

    pub fn epoch(&self) -> u64 {
        self.read_lock().epoch
    }

    /// etcd compacted everything up to `rev`: no watch can start before it any more.
    pub fn raise_floor(&self, rev: i64) {
        let mut inner = self.write_lock();
        inner.floor = inner.floor.max(rev);
    }

    /// The cache lost etcd: end every watcher (their clients re-watch or re-list, as
    /// upstream's do when its cache's watch breaks) and serve nothing until it is back.
    pub fn terminate_watchers(&self) {
        let mut inner = self.write_lock();
        inner.epoch += 1;
        inner.ready = false;
        let rev = inner.rev;
        drop(inner);
        self.changed.send_replace(rev);
    }

    /// Events from cursor `seq` on, at most `max` of them, for a watcher of `epoch`.
    pub fn read(&self, seq: u64, max: usize, epoch: u64) -> Read {
        let inner = self.read_lock();
        let first = inner.next_seq - inner.ring.len() as u64;
        if seq < first || epoch != inner.epoch {
            return Read::Lost;
        }
        let from = (seq - first) as usize;
        let to = inner.ring.len().min(from + max);
        let events: Vec<Arc<Event>> = inner.ring.range(from..to).cloned().collect();
        let at_end = (to == inner.ring.len()).then_some(inner.rev);
        Read::Events(events, first + to as u64, at_end)
    }
}

impl Inner {
    /// Append an event to the ring, evicting the oldest beyond `capacity`.
    pub fn push(&mut self, event: Event, capacity: usize) {
        self.ring.push_back(Arc::new(event));
        self.next_seq += 1;
        while self.ring.len() > capacity {
            if let Some(old) = self.ring.pop_front() {
                self.floor = self.floor.max(old.rev);
            }
        }
        let floor = self.floor;
        self.gaps.retain(|(_, until)| *until > floor);
    }
}

fn range_of<'a>(objects: &'a BTreeMap<Bytes, Arc<Obj>>, range: &KeyRange) -> impl Iterator<Item = &'a Arc<Obj>> + 'a {
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Included(&range.start), Bound::Excluded(&range.end));
    objects.range::<[u8], _>(bounds).map(|(_, v)| v)
}
