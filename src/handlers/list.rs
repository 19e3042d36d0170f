//! LIST: a consistent snapshot at one etcd revision, paged with opaque continue tokens,
//! filtered by selectors, and assembled from stored bytes without re-encoding when the
//! client wants plain JSON.

use std::sync::Arc;

use axum::response::Response;
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::codec::{self, Output};
use super::query::Query;
use super::status::{ApiError, ApiResult};
use super::table::{self, IncludeObject};
use crate::registry::filter::Filter;
use crate::registry::rest::Registry;
use crate::registry::store::Stored;
use crate::registry::{ResourceDef, meta, rawjson};
use crate::watch::{self, Rv, cache::Obj};

/// Items read from etcd per round while filling a limited page through a selector.
const SCAN_CHUNK: i64 = 500;

/// A list read: the matching items and the list metadata to answer with.
pub struct Listed {
    pub items: Vec<Stored>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let token = ContinueToken { v: "meta.k8s.io/v1".into(), rv, start: start.into() };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 || t.start.contains("..") {
        return Err(bad());
    }
    Ok(t)
}

/// Read the items a list request selects.
pub async fn read(
    reg: &Registry,
    res: &'static ResourceDef,
    ns: &str,
    q: &Query,
    filter: &Filter,
) -> ApiResult<Listed> {
    let limit = q.int("limit")?.unwrap_or(0).max(0);
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let token = q.get("continue").filter(|s| !s.is_empty());
    let prefix = reg.keys.collection(res, ns);

    if token.is_some() && rv.is_some_and(|v| v != "0") {
        return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
    }
    let requested = match rv {
        Some(v) => Some(
            meta::parse_resource_version(v)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {v:?}: must be an integer")))?,
        ),
        None => None,
    };
    let (mut revision, mut start) = (0i64, prefix.clone().into_bytes());
    match (token, rv_match) {
        (Some(t), _) => {
            let t = decode_continue(t)?;
            revision = t.rv;
            start = format!("{prefix}{}", t.start).into_bytes();
        }
        (None, Some("Exact")) => revision = requested.unwrap_or(0),
        (None, Some("NotOlderThan") | None) => {}
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    }
    // a resourceVersion newer than etcd's is refused as upstream does, Exact included
    if token.is_none() && requested.is_some_and(|r| r > 0) {
        let current = reg.store.current_revision().await?;
        if requested.is_some_and(|r| r > current) {
            return Err(too_large(requested.unwrap_or(0), current));
        }
    }
    // a name-pinning field selector reads one key instead of the collection
    if let Some(name) = filter.pinned_name().filter(|_| token.is_none())
        && (!res.namespaced || !ns.is_empty())
    {
        let key = reg.key(res, ns, name);
        let page = reg.store.list(&key, None, 1, revision).await?;
        let items =
            page.items.into_iter().filter(|s| s.key == key.as_bytes() && filter.matches_raw(&s.value)).collect();
        return Ok(Listed { items, revision: page.revision, continue_token: None, remaining: None });
    }
    let mut items = Vec::new();
    loop {
        let chunk = if limit == 0 {
            0
        } else if filter.is_empty() {
            limit - items.len() as i64
        } else {
            SCAN_CHUNK.max(limit)
        };
        let page = reg.store.list(&prefix, Some(&start), chunk, revision).await?;
        revision = page.revision;
        let more = page.more;
        let mut last_key: Option<Vec<u8>> = None;
        let mut remaining_in_page = 0usize;
        let page_len = page.items.len();
        for (i, stored) in page.items.into_iter().enumerate() {
            if limit > 0 && items.len() as i64 >= limit {
                remaining_in_page = page_len - i;
                break;
            }
            last_key = Some(stored.key.clone());
            if filter.matches_raw(&stored.value) {
                items.push(stored);
            }
        }
        let full = limit > 0 && items.len() as i64 >= limit;
        let has_more = more || remaining_in_page > 0;
        if !has_more || limit == 0 {
            return Ok(Listed { items, revision, continue_token: None, remaining: None });
        }
        let Some(last) = last_key else {
            return Ok(Listed { items, revision, continue_token: None, remaining: None });
        };
        let mut next = last.clone();
        next.push(0);
        if full {
            let rel = String::from_utf8_lossy(&next[prefix.len()..]).into_owned();
            let remaining = filter.is_empty().then_some(page.remaining + remaining_in_page as i64);
            return Ok(Listed { items, revision, continue_token: Some(encode_continue(revision, &rel)), remaining });
        }
        start = next;
    }
}

pub fn too_large(requested: i64, current: i64) -> ApiError {
    let mut err = ApiError::timeout(format!("Too large resource version: {requested}, current: {current}"));
    err.details = Some(
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
    );
    err
}

/// What a LIST answers with: items from etcd or from the watch cache.
struct Served {
    items: Items,
    revision: i64,
    continue_token: Option<String>,
    remaining: Option<i64>,
}

enum Items {
    Etcd(Vec<Stored>),
    Cache(Vec<Arc<Obj>>),
}

impl From<Listed> for Served {
    fn from(l: Listed) -> Served {
        Served {
            items: Items::Etcd(l.items),
            revision: l.revision,
            continue_token: l.continue_token,
            remaining: l.remaining,
        }
    }
}

impl Served {
    fn list_meta(&self) -> Value {
        let mut m = json!({ "resourceVersion": self.revision.to_string() });
        if let Some(c) = &self.continue_token {
            m["continue"] = json!(c);
        }
        if let Some(r) = self.remaining.filter(|r| *r > 0) {
            m["remainingItemCount"] = json!(r);
        }
        m
    }

    /// Items decoded into the served form; undecodable ones (hand-written into etcd)
    /// are skipped, not fatal.
    fn decoded<'a>(&'a self, res: &'a ResourceDef) -> Box<dyn Iterator<Item = Value> + 'a> {
        match &self.items {
            Items::Etcd(items) => Box::new(items.iter().filter_map(move |s| Registry::decode_stored(res, s).ok())),
            Items::Cache(items) => {
                Box::new(items.iter().filter_map(move |o| Registry::decode_bytes(res, &o.json, o.mod_revision).ok()))
            }
        }
    }
}

/// Serve a LIST in the negotiated representation: from the watch cache when the request
/// allows it and the cache is current enough, from etcd otherwise.
pub async fn serve(
    state: &AppState,
    res: &'static ResourceDef,
    ns: &str,
    q: &Query,
    output: Output,
    filter: &Filter,
) -> ApiResult<Response> {
    q.validate_list_options(false)?;
    let served = match from_cache(state, res, ns, q, filter).await? {
        Some(served) => served,
        None => read(&state.registry, res, ns, q, filter).await?.into(),
    };
    let lm = served.list_meta();
    if output == Output::Json && res.storage.is_none() {
        return Ok(codec::json_bytes(StatusCode::OK, raw_list_body(res, &served, &lm)));
    }
    if let Output::Table(v) = output {
        let body = table::table_bytes(res, served.decoded(res), &lm, v, IncludeObject::from_query(q)?);
        return Ok(codec::json_bytes(StatusCode::OK, body));
    }
    let body = match output {
        Output::PartialMetadata(v) => table::partial_metadata_list(served.decoded(res), lm, v),
        _ => {
            json!({ "kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": lm, "items": served.decoded(res).collect::<Vec<_>>() })
        }
    };
    Ok(codec::respond(StatusCode::OK, output, &body))
}

/// A LIST from the watch cache, as upstream serves them: resourceVersion=0 (any
/// freshness), NotOlderThan a version the cache has reached, and consistent lists (no
/// resourceVersion, no limit) once the cache has caught up with etcd's current revision.
/// `limit` is honoured: the first page comes from the cache, and its continue token
/// (the cache's revision and the next key) is served by etcd at that exact revision.
/// Exact and continued lists stay on etcd; so does anything the cache cannot vouch for.
async fn from_cache(
    state: &AppState,
    res: &'static ResourceDef,
    ns: &str,
    q: &Query,
    filter: &Filter,
) -> ApiResult<Option<Served>> {
    if q.get("continue").is_some_and(|c| !c.is_empty()) {
        return Ok(None);
    }
    let limit = q.int("limit")?.unwrap_or(0).max(0);
    let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let rv = Rv::parse(q.get("resourceVersion"))?;
    let cache = state.caches.get(res);
    if !cache.is_ready() {
        return Ok(None);
    }
    let current_enough = match (rv, rv_match) {
        (_, Some("Exact")) => false,
        (Rv::Zero, _) => true,
        (Rv::At(n), Some("NotOlderThan")) => cache.wait_fresh(n, watch::FRESH_WAIT).await,
        (Rv::At(n), None) if limit == 0 => cache.wait_fresh(n, watch::FRESH_WAIT).await,
        (Rv::Unset, None) if limit == 0 => {
            let current = state.registry.store.current_revision().await?;
            cache.wait_fresh(current, watch::FRESH_WAIT).await
        }
        _ => false,
    };
    if !current_enough {
        return Ok(None);
    }
    let range = state.caches.range(res, ns, filter.pinned_name());
    let (items, revision, next, rest) = cache.list(&range, filter, limit as usize, filter.is_empty());
    let continue_token = next.map(|last| {
        let prefix = state.registry.keys.collection(res, ns);
        let mut key = last.to_vec();
        key.push(0);
        encode_continue(revision, &String::from_utf8_lossy(&key[prefix.len().min(key.len())..]))
    });
    let remaining = continue_token.as_ref().and(filter.is_empty().then_some(rest as i64));
    Ok(Some(Served { items: Items::Cache(items), revision, continue_token, remaining }))
}

/// The JSON list assembled from stored bytes with the resourceVersion spliced in.
fn raw_list_body(res: &ResourceDef, served: &Served, lm: &Value) -> Vec<u8> {
    let total: usize = match &served.items {
        Items::Etcd(items) => items.iter().map(|s| s.value.len() + 32).sum(),
        Items::Cache(items) => items.iter().map(|o| o.json.len() + 1).sum(),
    };
    let mut out = Vec::with_capacity(total + 256);
    out.extend_from_slice(
        format!("{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":", res.list_kind(), res.api_version()).as_bytes(),
    );
    out.extend_from_slice(&serde_json::to_vec(lm).unwrap_or_default());
    out.extend_from_slice(b",\"items\":[");
    match &served.items {
        Items::Etcd(items) => {
            for (i, stored) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match rawjson::with_resource_version(&stored.value, stored.mod_revision) {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => {
                        // not our layout (written by hand?): decode and re-encode this one
                        let obj = Registry::decode_stored(res, stored).unwrap_or(Value::Null);
                        out.extend_from_slice(&serde_json::to_vec(&obj).unwrap_or_default());
                    }
                }
            }
        }
        Items::Cache(items) => {
            for (i, obj) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&obj.json);
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web\u{0}");
        let d = decode_continue(&t).unwrap();
        assert_eq!((d.rv, d.start.as_str()), (42, "default/web\u{0}"));
        assert!(decode_continue("garbage!").is_err());
    }
}
