//! WATCH, served from the watch cache: every watcher reads the cache's event ring through
//! its own cursor, filters by key range and selectors (an object entering a selection is
//! ADDED, one leaving it DELETED), and writes JSON lines (or Table rows). Plain JSON
//! event lines are encoded once per event and shared by every watcher.
//!
//! Start modes, as upstream: resourceVersion unset → a consistent snapshot as ADDED, then
//! changes; "0" → the cache's snapshot, then changes; N → every change after N (410 when
//! the history no longer reaches back to N, a "Too large resource version" error when N
//! is in the future). WatchList (`sendInitialEvents=true`) ends the snapshot with a
//! BOOKMARK annotated `k8s.io/initial-events-end`; `allowWatchBookmarks` adds periodic
//! BOOKMARKs while the stream is idle.

pub mod cache;
pub mod caches;
mod feed;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use caches::Caches;

use self::cache::{Cache, Event, Gone, KeyRange, Kind, Obj, Read, event_line};
use crate::handlers::codec::Output;
use crate::handlers::status::{ApiError, ApiResult};
use crate::handlers::table::{self, IncludeObject};
use crate::registry::ResourceDef;
use crate::registry::filter::Filter;
use crate::registry::rest::Registry;

/// The resourceVersion a watch or list asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rv {
    Unset,
    Zero,
    At(i64),
}

pub struct WatchRequest {
    pub res: &'static ResourceDef,
    pub namespace: String,
    pub filter: Filter,
    pub rv: Rv,
    /// Send the current objects as ADDED first.
    pub initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    pub timeout: Duration,
    pub output: Output,
    pub include: IncludeObject,
}

/// Lines buffered per watcher on their way to the connection.
const CHANNEL_DEPTH: usize = 64;
/// Events a watcher takes from the ring at a time.
const READ_BATCH: usize = 256;
/// An idle watcher that allows bookmarks gets one this often.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(3);
/// How long a request waits for a new cache's first list.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long a consistent read waits for the cache to catch up with etcd before it reads
/// etcd instead.
pub const FRESH_WAIT: Duration = Duration::from_secs(1);
/// How long a request for a future resourceVersion waits before "too large".
pub const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

type Sink = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Serve a watch. Where it starts is settled before the response headers go out, so a
/// client that has them may rely on seeing every change made from then on.
pub async fn serve(caches: Caches, req: WatchRequest) -> Response {
    let cache = caches.get(req.res);
    let started = begin(&caches, &cache, &req).await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let run = async {
            match started {
                Ok((start, epoch, range)) => run_watch(&cache, &req, &tx, start, epoch, range).await,
                Err(e) => {
                    let _ = tx.send(Ok(error_line(&e))).await;
                }
            }
        };
        if tokio::time::timeout(req.timeout, run).await.is_err() {
            tracing::debug!(resource = req.res.plural, "watch reached its timeout");
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}

/// Where a watcher starts: the objects to send as ADDED, the revision they are at
/// (events up to it are not sent), and the cursor into the cache's ring.
struct Start {
    initial: Vec<Arc<Obj>>,
    rev: i64,
    seq: u64,
}

/// Wait for the cache and resolve the start (errors go out as an ERROR event, as
/// upstream reports watch errors once the request was accepted).
async fn begin(caches: &Caches, cache: &Cache, req: &WatchRequest) -> ApiResult<(Start, u64, KeyRange)> {
    if !cache.wait_ready(READY_WAIT).await {
        return Err(ApiError::unavailable("the watch cache is not ready yet"));
    }
    let epoch = cache.epoch();
    let range = caches.range(req.res, &req.namespace, req.filter.pinned_name());
    let start = start(caches, cache, req, &range).await?;
    Ok((start, epoch, range))
}

async fn run_watch(cache: &Cache, req: &WatchRequest, tx: &Sink, start: Start, epoch: u64, range: KeyRange) {
    let mut w = Watcher { req, range, first: true, tx, min_rev: start.rev, last_rv: start.rev, epoch };
    for obj in &start.initial {
        let line = w.added(obj);
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
    if req.initial_events && req.bookmarks && w.send(w.bookmark(start.rev, true)).await.is_err() {
        return;
    }
    drop(start.initial);
    w.follow(cache, start.seq).await;
}

/// Resolve the request's start mode against the cache (and etcd, where the cache
/// cannot vouch for a revision).
async fn start(caches: &Caches, cache: &Cache, req: &WatchRequest, range: &KeyRange) -> ApiResult<Start> {
    let from_cache = |initial: bool| {
        let snap = cache.snapshot(range, &req.filter);
        Start { initial: if initial { snap.objects } else { Vec::new() }, rev: snap.rev, seq: snap.seq }
    };
    match req.rv {
        Rv::Zero => Ok(from_cache(req.initial_events)),
        Rv::Unset => {
            let current = caches.store().current_revision().await?;
            if cache.wait_fresh(current, FRESH_WAIT).await {
                Ok(from_cache(req.initial_events))
            } else if req.initial_events {
                snapshot_from_etcd(caches, cache, req, range).await
            } else {
                after(cache, current)
            }
        }
        Rv::At(n) => {
            if cache.revision() < n {
                wait_for_revision(caches, cache, n).await?;
            }
            if !req.initial_events {
                // the cache's history may reach back further than etcd's: a compacted
                // revision is gone for watches as it is for lists. Asked of etcd even when
                // the cache has not yet seen past `n`: its feed may lag the compaction.
                if let Some(compacted) = caches.store().compacted_after(n).await? {
                    cache.raise_floor(compacted - 1);
                }
                return after(cache, n);
            }
            if cache.wait_fresh(n, FRESH_WAIT).await {
                Ok(from_cache(true))
            } else {
                snapshot_from_etcd(caches, cache, req, range).await
            }
        }
    }
}

/// Start after revision `rev`: every later event, nothing before.
fn after(cache: &Cache, rev: i64) -> ApiResult<Start> {
    match cache.cursor_after(rev) {
        Ok(seq) => Ok(Start { initial: Vec::new(), rev, seq }),
        Err(Gone::TooOld(oldest)) => Err(ApiError::expired(format!("too old resource version: {rev} ({oldest})"))),
    }
}

/// A revision beyond the cache: fine once etcd has it (the cache then skips what comes
/// before it); a revision etcd has not reached after a few seconds is "too large".
async fn wait_for_revision(caches: &Caches, cache: &Cache, rev: i64) -> ApiResult<()> {
    let deadline = Instant::now() + TOO_LARGE_WAIT;
    loop {
        let current = caches.store().current_revision().await?;
        if rev <= current {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(crate::handlers::list::too_large(rev, current));
        }
        cache.wait_revision(rev, Duration::from_millis(250)).await;
    }
}

/// The current objects read from etcd, for when the cache cannot confirm it is current.
async fn snapshot_from_etcd(caches: &Caches, cache: &Cache, req: &WatchRequest, range: &KeyRange) -> ApiResult<Start> {
    let prefix = String::from_utf8_lossy(&range.start).into_owned();
    let page = caches.store().list(&prefix, None, 0, 0).await?;
    let initial = page
        .items
        .iter()
        .filter(|s| range.contains(&s.key))
        .filter_map(|s| Obj::parse(cache.res, &s.key, &s.value, s.mod_revision))
        .filter(|o| o.matches(&req.filter))
        .map(Arc::new)
        .collect();
    let mut start = after(cache, page.revision)?;
    start.initial = initial;
    Ok(start)
}

struct Watcher<'a> {
    req: &'a WatchRequest,
    range: KeyRange,
    /// The next Table event carries the column definitions.
    first: bool,
    tx: &'a Sink,
    /// Events at or before this revision were part of the start state.
    min_rev: i64,
    /// The newest revision this watcher has told its client about.
    last_rv: i64,
    /// The cache's epoch when this watcher started.
    epoch: u64,
}

impl Watcher<'_> {
    async fn send(&self, line: Bytes) -> Result<(), ()> {
        self.tx.send(Ok(line)).await.map_err(|_| ())
    }

    /// Follow the ring from `cursor` until the client goes away, or falls so far behind
    /// that its next event has left the ring (then the stream just ends, as upstream
    /// ends watchers too slow to keep up; the client resumes or re-lists).
    async fn follow(&mut self, cache: &Cache, mut cursor: u64) {
        let mut changed = cache.subscribe();
        let mut bookmark_at = Instant::now() + BOOKMARK_INTERVAL;
        loop {
            changed.borrow_and_update();
            let (events, next, at_end) = match cache.read(cursor, READ_BATCH, self.epoch) {
                Read::Events(events, next, at_end) => (events, next, at_end),
                Read::Lost => {
                    tracing::debug!(resource = self.req.res.plural, "watcher fell behind the cache's history; closing");
                    return;
                }
            };
            cursor = next;
            // a batch goes out as one write: fewer frames and TLS records when busy
            let mut lines = Vec::new();
            let min_rev = self.min_rev;
            for event in events.iter().filter(|e| e.rev > min_rev) {
                if let Some(line) = self.translate(event) {
                    lines.push(line);
                    self.last_rv = event.rev;
                }
            }
            if !lines.is_empty() {
                if self.send(concat(lines)).await.is_err() {
                    return;
                }
                bookmark_at = Instant::now() + BOOKMARK_INTERVAL;
            }
            let Some(cache_rev) = at_end else { continue };
            if self.req.bookmarks && Instant::now() >= bookmark_at {
                self.last_rv = self.last_rv.max(cache_rev);
                if self.send(self.bookmark(self.last_rv, false)).await.is_err() {
                    return;
                }
                bookmark_at = Instant::now() + BOOKMARK_INTERVAL;
            }
            if !events.is_empty() {
                continue;
            }
            tokio::select! {
                res = changed.changed() => if res.is_err() { return },
                _ = tokio::time::sleep_until(bookmark_at), if self.req.bookmarks => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// The line this watcher sends for an event, honouring its key range and selectors.
    fn translate(&mut self, event: &Event) -> Option<Bytes> {
        if !self.range.contains(&event.key) {
            return None;
        }
        let filter = &self.req.filter;
        let was = event.prev.as_ref().is_some_and(|p| p.matches(filter));
        let is = event.cur.as_ref().is_some_and(|c| c.matches(filter));
        let kind = match (was, is) {
            (false, true) => Kind::Added,
            (true, true) => Kind::Modified,
            (true, false) => Kind::Deleted,
            (false, false) => return None,
        };
        if self.plain() {
            return Some(event.line(kind));
        }
        Some(self.encode(kind.as_str(), &event.object_json(kind), event.rev))
    }

    fn added(&mut self, obj: &Obj) -> Bytes {
        if self.plain() {
            return event_line("ADDED", &obj.json);
        }
        self.encode("ADDED", &obj.json, obj.mod_revision)
    }

    /// Plain JSON of the stored form: the shared bytes serve as they are.
    fn plain(&self) -> bool {
        matches!(self.req.output, Output::Json | Output::Yaml) && self.req.res.storage.is_none()
    }

    /// Decode and convert for this watcher (other versions, Table, metadata only).
    fn encode(&mut self, kind: &str, json: &[u8], rv: i64) -> Bytes {
        let res = self.req.res;
        let obj = Registry::decode_bytes(res, json, rv).unwrap_or(Value::Null);
        let obj = match self.req.output {
            Output::Table(v) => {
                let with_columns = std::mem::replace(&mut self.first, false);
                let lm = json!({"resourceVersion": rv.to_string()});
                table::table(res, [obj], lm, v, self.req.include, with_columns)
            }
            Output::PartialMetadata(v) => table::partial_metadata(&obj, v),
            _ => obj,
        };
        event_line(kind, &serde_json::to_vec(&obj).unwrap_or_default())
    }

    fn bookmark(&self, rv: i64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let res = self.req.res;
        let object = match self.req.output {
            Output::Table(v) => json!({"kind": "Table", "apiVersion": format!("meta.k8s.io/{v}"),
                "metadata": metadata, "columnDefinitions": [], "rows": []}),
            Output::PartialMetadata(v) => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{v}"), "metadata": metadata})
            }
            _ => json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": metadata}),
        };
        event_line("BOOKMARK", &serde_json::to_vec(&object).unwrap_or_default())
    }
}

fn concat(mut lines: Vec<Bytes>) -> Bytes {
    if lines.len() == 1 {
        return lines.pop().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(lines.iter().map(Bytes::len).sum());
    for line in &lines {
        out.extend_from_slice(line);
    }
    Bytes::from(out)
}

fn error_line(err: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": err.to_status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

impl Rv {
    /// A client-given resourceVersion: unset, "0", or a decimal etcd revision.
    pub fn parse(value: Option<&str>) -> ApiResult<Rv> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(Rv::Unset),
            Some("0") => Ok(Rv::Zero),
            Some(v) => crate::registry::meta::parse_resource_version(v)
                .map(Rv::At)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {v:?}: must be an integer"))),
        }
    }
}
