//! Counters served on `--metrics-bind-address` in the Prometheus text format, named and
//! labelled as CoreDNS names them (so CoreDNS dashboards and alerts read them), with
//! `/health` and `/ready` beside them. Plain atomics: the query path takes no lock for
//! them; the scrape adds them up.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hickory_proto::rr::RecordType;

use super::cache::Kind;
use super::server::{Server, Transport};

/// The query types counted by name (CoreDNS's list, trimmed to what clients ask);
/// the rest count as "other".
const TYPES: [(RecordType, &str); 11] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::CNAME, "CNAME"),
    (RecordType::MX, "MX"),
    (RecordType::NS, "NS"),
    (RecordType::PTR, "PTR"),
    (RecordType::SOA, "SOA"),
    (RecordType::SRV, "SRV"),
    (RecordType::TXT, "TXT"),
    (RecordType::HTTPS, "HTTPS"),
    (RecordType::ANY, "ANY"),
];
const TYPE_SLOTS: usize = TYPES.len() + 1;
/// The slot of an undecodable query or an uncounted type.
pub const OTHER: usize = TYPES.len();
const RCODES: [&str; 11] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
    "NOTZONE",
];
/// Upper bounds of the duration buckets in seconds: CoreDNS's 0.25 ms doubling to 8 s.
const BUCKETS: usize = 16;
const FIRST_BUCKET: f64 = 0.000_25;
/// The zone label: one server block for every name, as kubeadm's `.:53`.
const ZONE: &str = ".";

pub fn type_slot(rtype: RecordType) -> usize {
    TYPES.iter().position(|(t, _)| *t == rtype).unwrap_or(OTHER)
}

#[derive(Default)]
pub struct Metrics {
    /// `[proto][family][type]`: proto 0 udp, 1 tcp; family 0 IPv4, 1 IPv6.
    requests: [[[AtomicU64; TYPE_SLOTS]; 2]; 2],
    /// By rcode (the header's four bits).
    responses: [AtomicU64; 16],
    /// `[type][bucket]`, not cumulative; the last bucket is +Inf only.
    durations: [[AtomicU64; BUCKETS + 1]; TYPE_SLOTS],
    duration_micros: [AtomicU64; TYPE_SLOTS],
    /// Success, denial.
    cache_hits: [AtomicU64; 2],
    cache_misses: AtomicU64,
    /// The first lists are in and the zone holds them.
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn request(&self, transport: Transport, ipv6: bool, slot: usize) {
        self.requests[usize::from(transport == Transport::Tcp)][usize::from(ipv6)][slot].fetch_add(1, Relaxed);
    }

    /// A response sent: its rcode and how long since the query came.
    pub fn response(&self, slot: usize, started: Instant, bytes: &[u8]) {
        if let Some(flags) = bytes.get(3) {
            self.responses[usize::from(flags & 0x0f)].fetch_add(1, Relaxed);
        }
        let elapsed = started.elapsed();
        let bucket = (0..BUCKETS).find(|&i| elapsed.as_secs_f64() <= bound(i)).unwrap_or(BUCKETS);
        self.durations[slot][bucket].fetch_add(1, Relaxed);
        self.duration_micros[slot].fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn cache_hit(&self, kind: Kind) {
        self.cache_hits[usize::from(kind == Kind::Denial)].fetch_add(1, Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }
}

fn bound(bucket: usize) -> f64 {
    FIRST_BUCKET * f64::from(1u32 << bucket)
}

fn type_name(slot: usize) -> &'static str {
    TYPES.get(slot).map_or("other", |(_, name)| name)
}

/// The exposition text.
pub fn render(server: &Server) -> String {
    let m = &server.metrics;
    let sz = format!("server=\"{}\",zone=\"{ZONE}\"", server.name);
    let mut out = String::with_capacity(8192);
    header(
        &mut out,
        "coredns_dns_requests_total",
        "counter",
        "Counter of DNS requests made per zone, protocol and family.",
    );
    for (p, proto) in ["udp", "tcp"].iter().enumerate() {
        for (f, family) in ["1", "2"].iter().enumerate() {
            for slot in 0..TYPE_SLOTS {
                let n = m.requests[p][f][slot].load(Relaxed);
                let labels = format!("{sz},proto=\"{proto}\",family=\"{family}\",type=\"{}\"", type_name(slot));
                sample(&mut out, "coredns_dns_requests_total", &labels, n);
            }
        }
    }
    header(&mut out, "coredns_dns_responses_total", "counter", "Counter of response status codes.");
    for (code, n) in m.responses.iter().enumerate() {
        let name = RCODES.get(code).map_or_else(|| format!("RCODE{code}"), |s| s.to_string());
        sample(&mut out, "coredns_dns_responses_total", &format!("{sz},rcode=\"{name}\""), n.load(Relaxed));
    }
    durations(&mut out, m, &sz);
    cache(&mut out, server);
    forward(&mut out, server);
    out
}

fn durations(out: &mut String, m: &Metrics, sz: &str) {
    let name = "coredns_dns_request_duration_seconds";
    header(out, name, "histogram", "Histogram of the time (in seconds) each request took per zone.");
    for slot in 0..TYPE_SLOTS {
        let labels = format!("{sz},type=\"{}\"", type_name(slot));
        let mut cumulative = 0;
        for bucket in 0..=BUCKETS {
            cumulative += m.durations[slot][bucket].load(Relaxed);
            let le = if bucket == BUCKETS { "+Inf".to_string() } else { bound(bucket).to_string() };
            sample(out, &format!("{name}_bucket"), &format!("{labels},le=\"{le}\""), cumulative);
        }
        let sum = m.duration_micros[slot].load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        sample(out, &format!("{name}_count"), &labels, cumulative);
    }
}

fn cache(out: &mut String, server: &Server) {
    let (m, s) = (&server.metrics, format!("server=\"{}\"", server.name));
    header(out, "coredns_cache_hits_total", "counter", "The count of cache hits.");
    for (i, kind) in ["success", "denial"].iter().enumerate() {
        sample(out, "coredns_cache_hits_total", &format!("{s},type=\"{kind}\""), m.cache_hits[i].load(Relaxed));
    }
    header(out, "coredns_cache_misses_total", "counter", "The count of cache misses.");
    sample(out, "coredns_cache_misses_total", &s, m.cache_misses.load(Relaxed));
    let (success, denial) = server.cache.as_ref().map_or((0, 0), |c| c.entries());
    header(out, "coredns_cache_entries", "gauge", "The number of elements in the cache.");
    for (kind, n) in [("success", success), ("denial", denial)] {
        sample(out, "coredns_cache_entries", &format!("{s},type=\"{kind}\""), n as u64);
    }
}

fn forward(out: &mut String, server: &Server) {
    header(out, "coredns_forward_requests_total", "counter", "Counter of requests made per upstream.");
    for u in server.upstreams.iter() {
        sample(out, "coredns_forward_requests_total", &format!("to=\"{}\"", u.addr), u.requests.load(Relaxed));
    }
    let name = "coredns_forward_max_concurrent_rejects_total";
    header(out, name, "counter", "Counter of queries refused because too many were in flight.");
    let _ = writeln!(out, "{name} {}", server.upstreams.rejected.load(Relaxed));
    let name = "coredns_forward_healthcheck_failures_total";
    header(out, name, "counter", "Counter of exchanges with an upstream that failed.");
    for u in server.upstreams.iter() {
        sample(out, name, &format!("to=\"{}\"", u.addr), u.failures.load(Relaxed));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// `/metrics`, `/health` (the process serves) and `/ready` (the zone is loaded).
pub async fn serve(server: Arc<Server>, listener: tokio::net::TcpListener) {
    let metrics = {
        let server = server.clone();
        move || async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&server)) }
    };
    let ready = move || async move {
        match server.metrics.ready.load(Relaxed) {
            true => (StatusCode::OK, "OK").into_response(),
            false => (StatusCode::SERVICE_UNAVAILABLE, "zone not loaded yet").into_response(),
        }
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}
