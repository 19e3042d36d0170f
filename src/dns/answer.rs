//! One query → one response, from the zone: the cluster domain answered with authority
//! (records, CNAMEs, pod names, NODATA or NXDOMAIN with the SOA), PTR names of known
//! addresses, and everything else handed back for forwarding (or refused).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::records::undashed;
use super::zone::{Found, Zone};

/// The largest UDP payload this server advertises and honours (EDNS).
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// The version of the Kubernetes DNS schema served (`dns-version.<domain>` TXT).
const SCHEMA_VERSION: &str = "1.1.0";

/// The fixed facts of the cluster zone.
pub struct Authority {
    pub domain: Name,
    pub ttl: u32,
    soa: Record,
    ns: Record,
    version: Name,
    pod: Name,
    svc: Name,
}

impl Authority {
    pub fn new(domain: &str, ttl: u32) -> anyhow::Result<Authority> {
        let mut domain = Name::from_ascii(domain.trim_end_matches('.'))?.to_lowercase();
        domain.set_fqdn(true);
        let under = |label: &str| Name::from_ascii(label).and_then(|n| n.append_domain(&domain));
        // CoreDNS's SOA for its kubernetes zones: ns.dns.<zone>, hostmaster.<zone>, the TTL as minimum
        let serial =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        let soa = SOA::new(under("ns.dns")?, under("hostmaster")?, serial, 7200, 1800, 86400, ttl);
        Ok(Authority {
            soa: Record::from_rdata(domain.clone(), ttl, RData::SOA(soa)),
            ns: Record::from_rdata(domain.clone(), ttl, RData::NS(NS(under("ns.dns")?))),
            version: under("dns-version")?,
            pod: under("pod")?,
            svc: under("svc")?,
            domain,
            ttl,
        })
    }
}

pub enum Outcome {
    Reply(Message),
    /// Not ours: forward to the upstream nameservers.
    Forward,
}

pub fn answer(request: &Message, zone: &Zone, auth: &Authority, forwarding: bool) -> Outcome {
    let mut response = reply_to(request);
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Outcome::Reply(response);
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Outcome::Reply(response);
    };
    response.metadata.recursion_available = forwarding;
    let name = query.name();
    if query.query_class() == DNSClass::IN && auth.domain.zone_of(name) {
        response.metadata.authoritative = true;
        cluster(&mut response, query, zone, auth);
        return Outcome::Reply(response);
    }
    if query.query_type() == RecordType::PTR
        && let Some(names) = arpa_address(name).and_then(|ip| zone.ptr(&ip))
    {
        response.metadata.authoritative = true;
        for (_, target) in names {
            response.answers.push(Record::from_rdata(name.clone(), auth.ttl, RData::PTR(PTR(target.clone()))));
        }
        return Outcome::Reply(response);
    }
    if forwarding {
        return Outcome::Forward;
    }
    response.metadata.response_code = ResponseCode::Refused;
    Outcome::Reply(response)
}

/// The response skeleton: id, opcode, RD and CD copied, the question echoed, EDNS
/// answered when asked.
pub fn reply_to(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.message_type = MessageType::Response;
    response.queries = request.queries.clone();
    response.edns = edns_for(request);
    response
}

/// This server's OPT record when the request had one: EDNS is answered when asked.
pub fn edns_for(request: &Message) -> Option<Edns> {
    let theirs = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    Some(edns)
}

fn cluster(response: &mut Message, query: &Query, zone: &Zone, auth: &Authority) {
    let (name, qtype) = (query.name(), query.query_type());
    let records = match zone.lookup(name) {
        Found::Records(records) => records.to_vec(),
        Found::Empty => Vec::new(),
        Found::Missing => match special(name, qtype, auth) {
            Some(records) => records,
            None => return negative(response, auth, ResponseCode::NXDomain),
        },
    };
    let mut matching: Vec<Record> =
        records.iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype).cloned().collect();
    if matching.is_empty() {
        // an alias stands for the name whatever the type asked
        matching = records.into_iter().filter(|r| r.record_type() == RecordType::CNAME).collect();
    }
    if matching.is_empty() {
        return negative(response, auth, ResponseCode::NoError);
    }
    for record in &mut matching {
        // the owner as the client spelled it (0x20 case randomisation)
        record.name = name.clone();
    }
    let targets: Vec<Name> = matching
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect();
    response.answers = matching;
    additional_addresses(response, zone, &targets);
}

/// The addresses of SRV targets, so clients need no second query.
fn additional_addresses(response: &mut Message, zone: &Zone, targets: &[Name]) {
    for (i, target) in targets.iter().enumerate() {
        if targets[..i].contains(target) {
            continue;
        }
        if let Found::Records(records) = zone.lookup(target) {
            let addresses = records.iter().filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA));
            response.additionals.extend(addresses.cloned());
        }
    }
}

/// NXDOMAIN or NODATA, with the zone's SOA so resolvers cache the answer for its minimum.
fn negative(response: &mut Message, auth: &Authority, code: ResponseCode) {
    response.metadata.response_code = code;
    response.authorities.push(auth.soa.clone());
}

/// Names not kept in the zone: its apex, the schema version, `<a-b-c-d>.<ns>.pod.<domain>`
/// (CoreDNS's `pods insecure`: any address in that form is answered), and the fixed
/// branches `svc`, `pod` and `<ns>.pod`. `None`: no such name.
fn special(name: &Name, qtype: RecordType, auth: &Authority) -> Option<Vec<Record>> {
    let labels = name.num_labels().saturating_sub(auth.domain.num_labels());
    match labels {
        0 => Some(vec![auth.soa.clone(), auth.ns.clone()]),
        1 if *name == auth.version && qtype == RecordType::TXT => {
            Some(vec![Record::from_rdata(name.clone(), auth.ttl, RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])))])
        }
        1 if *name == auth.version || *name == auth.pod || *name == auth.svc => Some(Vec::new()),
        2 if auth.pod.zone_of(name) => Some(Vec::new()),
        3 if auth.pod.zone_of(name) => pod_address(name, auth.ttl).map(|r| vec![r]),
        _ => None,
    }
}

fn pod_address(name: &Name, ttl: u32) -> Option<Record> {
    let label = name.iter().next()?;
    let ip = undashed(std::str::from_utf8(label).ok()?)?;
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Some(Record::from_rdata(name.clone(), ttl, data))
}

/// The host address a full `in-addr.arpa`/`ip6.arpa` name stands for.
fn arpa_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}
