//! Forwarded answers kept for reuse, as CoreDNS's `cache` plug-in keeps them: positive
//! answers for their smallest TTL up to `--cache-ttl`, negative ones (NXDOMAIN, NODATA)
//! for the SOA's TTL or minimum, whichever is less, up to `--cache-denial-ttl`; keyed by
//! name, type, class and the DO and CD bits (they change what an upstream returns);
//! truncated and failed answers are not kept. At most `--cache-size` entries, in shards
//! so that the UDP workers rarely meet on a lock; a full shard drops its expired entries,
//! else an arbitrary one. A hit is the stored response with the asker's id and question
//! and spelling, every TTL lowered by the time it has been kept and at most what is
//! left of the entry's lifetime.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

const SHARDS: usize = 16;

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    name: Name,
    rtype: RecordType,
    class: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

struct Entry {
    message: Message,
    stored: Instant,
    expires: Instant,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Success,
    Denial,
}

pub struct Cache {
    shards: Vec<RwLock<HashMap<Key, Entry>>>,
    per_shard: usize,
    max_ttl: u32,
    denial_ttl: u32,
    hasher: RandomState,
}

impl Cache {
    /// `None` when there is nothing to keep (no room or no time).
    pub fn new(capacity: usize, max_ttl: u32, denial_ttl: u32) -> Option<Cache> {
        if capacity == 0 || max_ttl == 0 {
            return None;
        }
        let shards = (0..SHARDS).map(|_| RwLock::default()).collect();
        Some(Cache { shards, per_shard: capacity.div_ceil(SHARDS), max_ttl, denial_ttl, hasher: RandomState::new() })
    }

    fn shard(&self, key: &Key) -> &RwLock<HashMap<Key, Entry>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The kept answer to `request`, ready to send but for EDNS and encoding.
    pub fn get(&self, request: &Message, now: Instant) -> Option<(Message, Kind)> {
        let key = key(request)?;
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        // `left`: what remains of the entry's lifetime, so no TTL says more than the cap
        let (mut message, age, left, kind) = {
            let shard = self.shard(&key).read().unwrap_or_else(|e| e.into_inner());
            let entry = shard.get(&key).filter(|e| e.expires > now)?;
            (entry.message.clone(), secs(now - entry.stored), secs(entry.expires - now), entry.kind)
        };
        message.metadata.id = request.metadata.id;
        message.metadata.recursion_desired = request.metadata.recursion_desired;
        message.queries = request.queries.clone();
        let asked = request.queries[0].name();
        let records = message.answers.iter_mut().chain(&mut message.authorities).chain(&mut message.additionals);
        for record in records {
            record.ttl = record.ttl.saturating_sub(age).min(left.max(1));
            // the owner as this asker spelled it (0x20 case randomisation); names compare
            // case-insensitively
            if record.name == *asked {
                record.name = asked.clone();
            }
        }
        Some((message, kind))
    }

    /// Keep `response` to `request` if it may be kept.
    pub fn put(&self, request: &Message, response: &Message, now: Instant) {
        let Some(key) = key(request) else { return };
        let Some((ttl, kind)) = self.lifetime(response) else { return };
        let expires = now + Duration::from_secs(u64::from(ttl));
        let entry = Entry { message: response.clone(), stored: now, expires, kind };
        let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().cloned()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }

    /// Entries kept, success and denial (expired ones not yet dropped included).
    pub fn entries(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(s, d), shard| {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            let denials = shard.values().filter(|e| e.kind == Kind::Denial).count();
            (s + shard.len() - denials, d + denials)
        })
    }

    /// How long `response` may be kept, and as what; `None`: not at all.
    fn lifetime(&self, response: &Message) -> Option<(u32, Kind)> {
        if response.metadata.truncation {
            return None;
        }
        let code = response.metadata.response_code;
        let (ttl, kind) = match code {
            ResponseCode::NoError if !response.answers.is_empty() => {
                let records = response.answers.iter().chain(&response.authorities).chain(&response.additionals);
                (records.map(|r| r.ttl).min().unwrap_or(0).min(self.max_ttl), Kind::Success)
            }
            // RFC 2308: a negative answer without an SOA is not cached
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let soa = response.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })?;
                (soa.min(self.denial_ttl), Kind::Denial)
            }
            _ => return None,
        };
        (ttl > 0).then_some((ttl, kind))
    }
}

fn key(request: &Message) -> Option<Key> {
    let [query] = request.queries.as_slice() else { return None };
    Some(Key {
        name: query.name().to_lowercase(),
        rtype: query.query_type(),
        class: query.query_class(),
        dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        checking_disabled: request.metadata.checking_disabled,
    })
}
