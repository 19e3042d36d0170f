//! WATCH: a stream of ADDED/MODIFIED/DELETED events read from an etcd watch on the
//! resource's key range, filtered by the request's selectors and encoded as JSON lines
//! (or Table rows). This is the direct form: one etcd watch per request. The shared
//! watch cache with fan-out replaces it in the watch work (issue 3).

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use etcd_client::{EventType, WatchOptions};
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::handlers::codec::Output;
use crate::handlers::status::ApiError;
use crate::handlers::table::{self, IncludeObject};
use crate::registry::filter::Filter;
use crate::registry::keys::prefix_end;
use crate::registry::rest::Registry;
use crate::registry::store::{Stored, is_compacted};
use crate::registry::{ResourceDef, rawjson};

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// Send the current state as ADDED events first (resourceVersion unset or "0").
    WithInitialState,
    /// Only changes after this revision.
    After(i64),
}

pub struct WatchRequest {
    pub res: &'static ResourceDef,
    pub namespace: String,
    pub filter: Filter,
    pub start: Start,
    pub timeout: Duration,
    pub output: Output,
    pub include: IncludeObject,
}

/// Events buffered per watcher before the writer waits on the client.
const CHANNEL_DEPTH: usize = 256;

pub fn serve(reg: Registry, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(CHANNEL_DEPTH);
    let timeout = req.timeout;
    tokio::spawn(async move {
        let run = run_watch(&reg, &req, &tx);
        if tokio::time::timeout(timeout, run).await.is_err() {
            tracing::debug!(resource = req.res.plural, "watch reached its timeout");
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}

struct Encoder<'a> {
    req: &'a WatchRequest,
    first: bool,
}

impl Encoder<'_> {
    fn event(&mut self, kind: &str, stored: &Stored, rv: i64) -> Vec<u8> {
        let raw_ok = self.req.output == Output::Json && self.req.res.storage.is_none();
        let mut line = Vec::with_capacity(stored.value.len() + 64);
        line.extend_from_slice(format!("{{\"type\":\"{kind}\",\"object\":").as_bytes());
        match raw_ok.then(|| rawjson::with_resource_version(&stored.value, rv)).flatten() {
            Some(bytes) => line.extend_from_slice(&bytes),
            None => {
                let mut s = stored.clone();
                s.mod_revision = rv;
                let obj = Registry::decode_stored(self.req.res, &s).unwrap_or(Value::Null);
                let obj = match self.req.output {
                    Output::Table(v) => {
                        let with_columns = std::mem::replace(&mut self.first, false);
                        let lm = json!({"resourceVersion": rv.to_string()});
                        table::table(self.req.res, [obj], lm, v, self.req.include, with_columns)
                    }
                    Output::PartialMetadata(v) => table::partial_metadata(&obj, v),
                    _ => obj,
                };
                line.extend_from_slice(&serde_json::to_vec(&obj).unwrap_or_default());
            }
        }
        line.extend_from_slice(b"}\n");
        line
    }
}

fn error_line(err: &ApiError) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": err.to_status()})).unwrap_or_default();
    line.push(b'\n');
    line
}

type Sink = mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

async fn run_watch(reg: &Registry, req: &WatchRequest, tx: &Sink) {
    let mut enc = Encoder { req, first: true };
    let (key, range_end) = watch_range(reg, req);
    let after = match req.start {
        Start::After(rev) => rev,
        Start::WithInitialState => match initial_state(reg, req, &key, &range_end, &mut enc, tx).await {
            Some(rev) => rev,
            None => return,
        },
    };
    let options = WatchOptions::new().with_range(range_end).with_start_revision(after + 1).with_prev_key();
    let mut stream = match reg.store.client().watch_client().watch(key.clone(), Some(options)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Ok(error_line(&ApiError::from(e)))).await;
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg,
            _ = tx.closed() => return,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => return,
            Err(e) if is_compacted(&e) => {
                let _ = tx.send(Ok(error_line(&ApiError::expired(format!("too old resource version: {after}"))))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Ok(error_line(&ApiError::from(e)))).await;
                return;
            }
        };
        if resp.compact_revision() > 0 {
            let msg = format!("too old resource version: {after} ({})", resp.compact_revision());
            let _ = tx.send(Ok(error_line(&ApiError::expired(msg)))).await;
            return;
        }
        for event in resp.events() {
            if let Some(line) = translate(&mut enc, req, event)
                && tx.send(Ok(line)).await.is_err()
            {
                return;
            }
        }
    }
}

/// The key (or key range) a watch covers: one object when the selector pins a name.
fn watch_range(reg: &Registry, req: &WatchRequest) -> (String, Vec<u8>) {
    if let Some(name) = req.filter.pinned_name()
        && (!req.res.namespaced || !req.namespace.is_empty())
    {
        let key = reg.key(req.res, &req.namespace, name);
        let mut end = key.clone().into_bytes();
        end.push(0);
        return (key, end);
    }
    let prefix = reg.keys.collection(req.res, &req.namespace);
    let end = prefix_end(&prefix);
    (prefix, end)
}

/// Send the current objects as ADDED; returns the revision they were read at.
async fn initial_state(
    reg: &Registry,
    req: &WatchRequest,
    key: &str,
    end: &[u8],
    enc: &mut Encoder<'_>,
    tx: &Sink,
) -> Option<i64> {
    let page = match reg.store.list(key, None, 0, 0).await {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Ok(error_line(&e))).await;
            return None;
        }
    };
    for stored in page.items.iter().filter(|s| s.key.as_slice() < end) {
        if req.filter.matches_raw(&stored.value) {
            let line = enc.event("ADDED", stored, stored.mod_revision);
            tx.send(Ok(line)).await.ok()?;
        }
    }
    Some(page.revision)
}

/// One etcd event as a watch event, honouring selectors: an object leaving the
/// selection is DELETED, one entering it ADDED.
fn translate(enc: &mut Encoder<'_>, req: &WatchRequest, event: &etcd_client::Event) -> Option<Vec<u8>> {
    let kv = event.kv()?;
    let prev = event.prev_kv().map(|p| Stored {
        key: p.key().to_vec(),
        value: p.value().to_vec(),
        mod_revision: p.mod_revision(),
    });
    let prev_match = prev.as_ref().is_some_and(|p| req.filter.matches_raw(&p.value));
    match event.event_type() {
        EventType::Delete => {
            let prev = prev?;
            prev_match.then(|| enc.event("DELETED", &prev, kv.mod_revision()))
        }
        EventType::Put => {
            let cur = Stored { key: kv.key().to_vec(), value: kv.value().to_vec(), mod_revision: kv.mod_revision() };
            let cur_match = req.filter.matches_raw(&cur.value);
            match (prev.is_some() && prev_match, cur_match) {
                (false, true) => Some(enc.event("ADDED", &cur, cur.mod_revision)),
                (true, true) => Some(enc.event("MODIFIED", &cur, cur.mod_revision)),
                (true, false) => Some(enc.event("DELETED", &cur, cur.mod_revision)),
                (false, false) => None,
            }
        }
    }
}
