//! Forwarded answers kept for reuse, as CoreDNS's `cache` plug-in keeps them: positive
//! answers for their smallest TTL up to `--cache-ttl`, negative ones (NXDOMAIN, NODATA)
//! for the SOA's TTL or minimum, whichever is less, up to `--cache-denial-ttl`; keyed by
//! name, type, class and the DO and CD bits (they change what an upstream returns);
//! truncated and failed answers are not kept. At most `--cache-size` entries, in shards
//! so that the UDP workers rarely meet on a lock; a full shard drops an arbitrary entry.
//! A hit is the stored response with the asker's id, question and spelling, every TTL
//! lowered by the time it has been kept and at most what is left of the entry's lifetime.

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
        // full: an arbitrary entry goes (as CoreDNS evicts a random one); sweeping the
        // expired ones instead would cost a pass over the shard on every miss of a busy
        // cache, and expired entries are never served anyway
        if shard.len() >= self.per_shard
            && !shard.contains_key(&key)
            && let Some(victim) = shard.keys().next().cloned()
        {
            shard.remove(&victim);
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Edns;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::SOA;

    use super::*;

    fn request(name: &str) -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    fn positive(name: &str, ttls: &[u32]) -> Message {
        let mut m = request(name);
        for (i, ttl) in ttls.iter().enumerate() {
            let a = RData::A(Ipv4Addr::new(192, 0, 2, i as u8).into());
            m.add_answer(Record::from_rdata(Name::from_ascii(name).unwrap(), *ttl, a));
        }
        m
    }

    fn negative(code: ResponseCode, soa_ttl: u32, minimum: u32) -> Message {
        let mut m = request("nx.example.");
        m.metadata.response_code = code;
        let origin = Name::from_ascii("example.").unwrap();
        let soa = SOA::new(origin.clone(), origin.clone(), 1, 1, 1, 1, minimum);
        m.add_authority(Record::from_rdata(origin, soa_ttl, RData::SOA(soa)));
        m
    }

    #[test]
    fn positive_answers_live_for_their_smallest_ttl_up_to_the_cap() {
        let cache = Cache::new(100, 30, 5).unwrap();
        let now = Instant::now();
        cache.put(&request("a.example."), &positive("a.example.", &[300, 20]), now);
        cache.put(&request("b.example."), &positive("b.example.", &[300]), now);
        let (hit, kind) = cache.get(&request("A.EXAMPLE."), now + Duration::from_secs(5)).unwrap();
        assert!(kind == Kind::Success);
        assert_eq!(hit.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), [15, 15]);
        assert_eq!(hit.answers[0].name.to_ascii(), "A.EXAMPLE.");
        assert!(cache.get(&request("a.example."), now + Duration::from_secs(20)).is_none());
        let (hit, _) = cache.get(&request("b.example."), now + Duration::from_secs(10)).unwrap();
        assert_eq!(hit.answers[0].ttl, 20, "capped at 30 s, 10 s gone");
        assert!(cache.get(&request("b.example."), now + Duration::from_secs(30)).is_none());
    }

    #[test]
    fn negative_answers_need_an_soa_and_live_for_its_minimum_up_to_the_cap() {
        let cache = Cache::new(100, 30, 5).unwrap();
        assert_eq!(cache.lifetime(&negative(ResponseCode::NXDomain, 60, 3)).map(|l| l.0), Some(3));
        assert_eq!(cache.lifetime(&negative(ResponseCode::NXDomain, 2, 60)).map(|l| l.0), Some(2));
        assert_eq!(cache.lifetime(&negative(ResponseCode::NoError, 60, 60)).map(|l| l.0), Some(5));
        assert!(cache.lifetime(&request("nodata.example.")).is_none(), "NODATA without an SOA");
        assert!(cache.lifetime(&negative(ResponseCode::ServFail, 60, 60)).is_none());
        let mut truncated = positive("a.example.", &[60]);
        truncated.metadata.truncation = true;
        assert!(cache.lifetime(&truncated).is_none());
        assert!(cache.lifetime(&positive("a.example.", &[0])).is_none());
    }

    #[test]
    fn the_do_bit_is_part_of_the_key() {
        let cache = Cache::new(100, 30, 5).unwrap();
        let now = Instant::now();
        let mut dnssec = request("a.example.");
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        dnssec.set_edns(edns);
        cache.put(&dnssec, &positive("a.example.", &[60]), now);
        assert!(cache.get(&request("a.example."), now).is_none());
        assert!(cache.get(&dnssec, now).is_some());
    }

    #[test]
    fn the_cache_holds_no_more_than_its_size() {
        let cache = Cache::new(32, 30, 5).unwrap();
        let now = Instant::now();
        for i in 0..1000 {
            let name = format!("n{i}.example.");
            cache.put(&request(&name), &positive(&name, &[60]), now);
        }
        let (success, denial) = cache.entries();
        assert_eq!(denial, 0);
        assert!((16..=32).contains(&success), "{success} entries");
        assert!(cache.get(&request("n999.example."), now).is_some(), "the newest is kept");
    }
}
