//! etcd storage: byte-level get/list and the transactions that make writes atomic.
//! Every write is one etcd transaction guarded by a compare on the object's key
//! (create: absent; update/delete: unchanged mod_revision), so optimistic concurrency
//! is etcd's own. Allocation keys ("claims") ride in the same transaction.

use std::borrow::Cow;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};

use crate::handlers::status::{ApiError, ApiResult};

use super::encryption::{Encryption, Transformer};
use super::keys::prefix_end;

#[derive(Clone)]
pub struct Store {
    kv: KvClient,
    client: etcd_client::Client,
    /// `--encryption-provider-config`: values of the prefixes it names are transformed.
    encryption: Option<Arc<Encryption>>,
}

/// One stored object: its raw JSON and etcd's mod_revision (the resourceVersion).
#[derive(Clone, Debug)]
pub struct Stored {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    /// Read through an encryption provider other than the first: an update must
    /// rewrite it even when the object is unchanged.
    pub stale: bool,
}

pub struct Page {
    pub items: Vec<Stored>,
    /// The etcd revision the page was read at.
    pub revision: i64,
    /// More keys follow the last item.
    pub more: bool,
    /// How many keys follow the page (etcd's count minus what was returned).
    pub remaining: i64,
}

pub enum WriteOutcome {
    Written(i64),
    /// The guarded key did not match: its current state (None: absent).
    Mismatch(Option<Stored>),
    /// A claim key (e.g. an allocated IP) is already taken.
    ClaimTaken,
}

/// A create's outcome.
pub enum CreateOutcome {
    Created(i64),
    Exists,
    ClaimTaken,
    /// The guard key changed (or vanished): its current state.
    GuardChanged(Option<Stored>),
}

/// A key whose mod_revision a write requires unchanged (a namespace a create goes into).
pub struct Guard {
    pub key: String,
    pub mod_revision: i64,
}

/// A key written with the object in the same transaction, which must not exist yet.
pub struct Claim {
    pub key: String,
    pub value: Vec<u8>,
}

impl Store {
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Store> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_keep_alive(std::time::Duration::from_secs(30), std::time::Duration::from_secs(10));
        let client = etcd_client::Client::connect(endpoints, Some(options)).await?;
        let kv = client.kv_client().max_decoding_message_size(512 * 1024 * 1024);
        Ok(Store { kv, client, encryption: None })
    }

    /// Encrypt and decrypt values as `encryption` says.
    pub fn with_encryption(mut self, encryption: Encryption) -> Store {
        self.encryption = Some(Arc::new(encryption));
        self
    }

    fn transformer(&self, key: &[u8]) -> Option<&Transformer> {
        self.encryption.as_deref().and_then(|e| e.transformer(key))
    }

    /// The stored form of a value written at `key` (as is unless encrypted).
    fn seal(&self, key: &str, value: Vec<u8>) -> ApiResult<Vec<u8>> {
        match self.transformer(key.as_bytes()) {
            None => Ok(value),
            Some(t) => t.seal(key.as_bytes(), &value).map_err(|e| transform_error(key.as_bytes(), &e)),
        }
    }

    /// A stored value made plain (as is unless its prefix is encrypted).
    fn open(&self, mut stored: Stored) -> ApiResult<Stored> {
        if let Some(t) = self.transformer(&stored.key) {
            let opened = t.open(&stored.key, &stored.value).map_err(|e| transform_error(&stored.key, &e))?;
            stored.value = opened.value;
            stored.stale = opened.stale;
        }
        Ok(stored)
    }

    /// The plain bytes of a value read elsewhere (the watch cache's etcd watch).
    pub fn open_bytes<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
        match self.transformer(key) {
            None => Ok(Cow::Borrowed(value)),
            Some(t) => t.open(key, value).map(|o| Cow::Owned(o.value)),
        }
    }

    fn open_all(&self, items: Vec<Stored>) -> ApiResult<Vec<Stored>> {
        if self.encryption.is_none() {
            return Ok(items);
        }
        items.into_iter().map(|s| self.open(s)).collect()
    }

    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    pub async fn get(&self, key: &str) -> ApiResult<Option<Stored>> {
        let mut resp = self.kv.clone().get(key, None).await?;
        resp.take_kvs().into_iter().next().map(|kv| self.open(to_stored(kv))).transpose()
    }

    /// The newest etcd revision.
    pub async fn current_revision(&self) -> ApiResult<i64> {
        let resp = self.kv.clone().get("/", Some(GetOptions::new().with_count_only())).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// None when etcd still has every revision after `rev`; else the revision it has
    /// compacted to (read from the watch API, which is the one that tells it).
    pub async fn compacted_after(&self, rev: i64) -> ApiResult<Option<i64>> {
        let probe = GetOptions::new().with_revision(rev + 1).with_count_only();
        match self.kv.clone().get("/", Some(probe)).await {
            Ok(_) => Ok(None),
            // nothing after `rev` exists yet, so nothing after it was compacted
            Err(e) if e.to_string().contains("required revision is a future revision") => Ok(None),
            Err(e) if is_compacted(&e) => {
                let options = etcd_client::WatchOptions::new().with_start_revision(rev + 1);
                let mut stream = self.client.watch_client().watch("/", Some(options)).await?;
                let compacted = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                    while let Ok(Some(resp)) = stream.message().await {
                        if resp.compact_revision() > 0 {
                            return resp.compact_revision();
                        }
                    }
                    rev + 1
                })
                .await
                .unwrap_or(rev + 1);
                Ok(Some(compacted))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Keys in `[start, end of prefix)` at `revision` (0: newest), at most `limit` (0: all),
    /// with plain values (a value that does not decrypt fails the list).
    pub async fn list(&self, prefix: &str, start: Option<&[u8]>, limit: i64, revision: i64) -> ApiResult<Page> {
        let mut page = self.list_raw(prefix, start, limit, revision).await?;
        page.items = self.open_all(page.items)?;
        Ok(page)
    }

    /// `list` with the values as stored (for the watch cache, which opens each itself).
    pub async fn list_raw(&self, prefix: &str, start: Option<&[u8]>, limit: i64, revision: i64) -> ApiResult<Page> {
        let mut options = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            options = options.with_limit(limit);
        }
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let from: Vec<u8> = start.map(<[u8]>::to_vec).unwrap_or_else(|| prefix.as_bytes().to_vec());
        let mut resp = self.kv.clone().get(from, Some(options)).await.map_err(compaction_error)?;
        // etcd's header carries its newest revision even for a read at an older one:
        // the page was read at the revision asked for
        let revision = if revision > 0 { revision } else { resp.header().map(|h| h.revision()).unwrap_or(0) };
        let more = resp.more();
        let count = resp.count();
        let items: Vec<Stored> = resp.take_kvs().into_iter().map(to_stored).collect();
        let remaining = (count - items.len() as i64).max(0);
        Ok(Page { items, revision, more, remaining })
    }

    /// Write `value` at `key` if the key is absent, every claim is free and the guard
    /// key (the object's namespace) still has the given mod_revision.
    pub async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        claims: &[Claim],
        guard: Option<&Guard>,
    ) -> ApiResult<CreateOutcome> {
        let value = self.seal(key, value)?;
        let mut compares = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let mut ops = vec![TxnOp::put(key, value, None)];
        for claim in claims {
            compares.push(Compare::create_revision(claim.key.as_str(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(claim.key.as_str(), self.seal(&claim.key, claim.value.clone())?, None));
        }
        let mut on_failure = vec![TxnOp::get(key, None)];
        if let Some(g) = guard {
            compares.push(Compare::mod_revision(g.key.as_str(), CompareOp::Equal, g.mod_revision));
            on_failure.push(TxnOp::get(g.key.as_str(), None));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(on_failure);
        let resp = self.kv.clone().txn(txn).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if resp.succeeded() {
            return Ok(CreateOutcome::Created(revision));
        }
        let gets = self.get_results(&resp.op_responses())?;
        if gets.first().is_some_and(Option::is_some) {
            return Ok(CreateOutcome::Exists);
        }
        if let Some(g) = guard {
            let current = gets.get(1).cloned().flatten();
            if current.as_ref().map(|c| c.mod_revision) != Some(g.mod_revision) {
                return Ok(CreateOutcome::GuardChanged(current));
            }
        }
        Ok(CreateOutcome::ClaimTaken)
    }

    /// Replace `key` if its mod_revision is still `expected`; claims are taken and
    /// `releases` deleted in the same transaction.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        claims: &[Claim],
        releases: &[String],
    ) -> ApiResult<WriteOutcome> {
        let value = self.seal(key, value)?;
        let mut compares = vec![Compare::mod_revision(key, CompareOp::Equal, expected)];
        let mut ops = vec![TxnOp::put(key, value, None)];
        for claim in claims {
            compares.push(Compare::create_revision(claim.key.as_str(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(claim.key.as_str(), self.seal(&claim.key, claim.value.clone())?, None));
        }
        ops.extend(releases.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        let txn = Txn::new().when(compares).and_then(ops).or_else(vec![TxnOp::get(key, None)]);
        let resp = self.kv.clone().txn(txn).await?;
        if resp.succeeded() {
            return Ok(WriteOutcome::Written(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        match self.get_results(&resp.op_responses())?.into_iter().next().flatten() {
            Some(current) if current.mod_revision == expected => Ok(WriteOutcome::ClaimTaken),
            current => Ok(WriteOutcome::Mismatch(current)),
        }
    }

    /// Delete `key` if its mod_revision is still `expected`, with its released keys.
    pub async fn delete(&self, key: &str, expected: i64, releases: &[String]) -> ApiResult<WriteOutcome> {
        let mut ops = vec![TxnOp::delete(key, Some(DeleteOptions::new()))];
        ops.extend(releases.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then(ops)
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = self.kv.clone().txn(txn).await?;
        if resp.succeeded() {
            return Ok(WriteOutcome::Written(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        Ok(WriteOutcome::Mismatch(self.get_results(&resp.op_responses())?.into_iter().next().flatten()))
    }

    /// Results of the Get operations of a failed transaction, in order, made plain.
    fn get_results(&self, responses: &[TxnOpResponse]) -> ApiResult<Vec<Option<Stored>>> {
        responses
            .iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => {
                    Some(get.kvs().first().cloned().map(|kv| self.open(to_stored(kv))).transpose())
                }
                _ => None,
            })
            .collect()
    }

    /// Keys (no values) under a prefix.
    pub async fn keys_under(&self, prefix: &str) -> ApiResult<Vec<String>> {
        let options = GetOptions::new().with_range(prefix_end(prefix)).with_keys_only();
        let mut resp = self.kv.clone().get(prefix, Some(options)).await?;
        Ok(resp.take_kvs().into_iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect())
    }
}

fn to_stored(kv: etcd_client::KeyValue) -> Stored {
    let mod_revision = kv.mod_revision();
    let (key, value) = kv.into_key_value();
    Stored { key, value, mod_revision, stale: false }
}

/// A value that cannot be transformed is an internal error for that object, as upstream.
fn transform_error(key: &[u8], err: &str) -> ApiError {
    tracing::error!(key = %String::from_utf8_lossy(key), error = err, "cannot transform a stored value");
    ApiError::internal(format!("Internal error occurred: {err}"))
}

/// etcd answers a read below its compacted revision with a gRPC error; upstream turns
/// that into 410 Expired.
fn compaction_error(err: etcd_client::Error) -> ApiError {
    if is_compacted(&err) {
        ApiError::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        )
    } else {
        err.into()
    }
}

pub fn is_compacted(err: &etcd_client::Error) -> bool {
    err.to_string().contains("required revision has been compacted")
}
