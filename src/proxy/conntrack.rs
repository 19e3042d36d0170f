//! Stale conntrack entries of UDP and SCTP Services. A datagram flow's NAT is decided
//! by its first packet and kept in the kernel's conntrack entry for as long as packets
//! keep coming, so rule changes alone do not move it: a client that sent to a Service
//! before it had endpoints (no rule DNATed it) keeps sending into the void, and one whose
//! flow was DNATed to an endpoint that went away keeps sending to a dead address. TCP
//! recovers by itself (the connection fails, the next one is NATed afresh); datagram
//! clients reusing a source port (DNS resolvers, say) do not. After each applied sync the
//! proxy deletes those entries, as upstream's kube-proxy does:
//!
//! - a service port that had no serving endpoint and now has one: the entries to its
//!   ClusterIP, external/load-balancer IPs and NodePort that were not DNATed (their reply
//!   comes from the original destination itself);
//! - an endpoint that stopped serving (or went, with its Service): the entries of the
//!   Service's frontends that were DNATed to it.
//!
//! A restarted proxy has no previous snapshot, so on its first sync it also lists the
//! kernel's entries and deletes those DNATed from a ClusterIP or external IP to an
//! address that is no serving endpoint now (`stale_listed`): endpoints that went while the
//! proxy was away.
//!
//! What to delete is computed from the previous and the new snapshot (`stale`, pure);
//! deleting runs the `conntrack` tool (conntrack-tools, upstream's way for years). Without
//! the tool the proxy works as before and says once that stale entries stay until they
//! time out.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Instant;

use super::model::ServicePort;

/// The conntrack-tools binary (Debian's `conntrack` package).
const CONNTRACK: &str = "conntrack";

/// One `conntrack -D` filter: entries of `protocol` whose original destination port is
/// `orig_port` (and address `orig_dst`, when given) and whose replies come from
/// `reply_src:reply_port` (any address when not given): where the flow was DNATed to, or
/// the original destination itself for a flow nothing DNATed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub protocol: &'static str,
    pub orig_dst: Option<Ipv4Addr>,
    pub orig_port: u16,
    pub reply_src: Option<Ipv4Addr>,
    pub reply_port: u16,
}

impl Flow {
    /// The `conntrack` arguments deleting the entries this filter matches.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-D".into(), "-p".into(), self.protocol.into()];
        if let Some(dst) = self.orig_dst {
            args.extend(["--orig-dst".into(), dst.to_string()]);
        }
        args.extend(["--orig-port-dst".into(), self.orig_port.to_string()]);
        if let Some(src) = self.reply_src {
            args.extend(["--reply-src".into(), src.to_string()]);
        }
        args.extend(["--reply-port-src".into(), self.reply_port.to_string()]);
        args
    }
}

/// Connection-less protocols, whose flows only conntrack's timeout ends.
pub fn tracked(sp: &ServicePort) -> bool {
    matches!(sp.protocol, "udp" | "sctp")
}

/// The endpoints a flow of the service port may rightly be DNATed to: every serving one,
/// whatever the traffic policies (a policy change must not cut existing flows, as with TCP).
fn serving(sp: &ServicePort) -> BTreeSet<(Ipv4Addr, u16)> {
    sp.endpoints.iter().filter(|e| e.ready || e.serving).map(|e| (e.ip, e.port)).collect()
}

/// The addresses clients send the service port's traffic to, besides the NodePort.
fn frontend_ips(sp: &ServicePort) -> impl Iterator<Item = Ipv4Addr> + '_ {
    sp.cluster_ip.into_iter().chain(sp.external_ips.iter().copied())
}

/// The flows to the service port that no rule DNATed (sent while it had no endpoints).
fn not_dnatted(sp: &ServicePort) -> impl Iterator<Item = Flow> + '_ {
    let ips = frontend_ips(sp).map(|ip| Flow {
        protocol: sp.protocol,
        orig_dst: Some(ip),
        orig_port: sp.port,
        reply_src: Some(ip),
        reply_port: sp.port,
    });
    // to the NodePort on any node address: undisturbed, the reply comes from that port
    let node_port = sp.node_port.map(|np| Flow {
        protocol: sp.protocol,
        orig_dst: None,
        orig_port: np,
        reply_src: None,
        reply_port: np,
    });
    ips.chain(node_port)
}

/// The flows to the service port that were DNATed to `endpoint`.
fn dnatted_to(sp: &ServicePort, (ip, port): (Ipv4Addr, u16)) -> impl Iterator<Item = Flow> + '_ {
    let frontends = frontend_ips(sp).map(|dst| (Some(dst), sp.port)).chain(sp.node_port.map(|np| (None, np)));
    frontends.map(move |(orig_dst, orig_port)| Flow {
        protocol: sp.protocol,
        orig_dst,
        orig_port,
        reply_src: Some(ip),
        reply_port: port,
    })
}

/// The conntrack entries that `new` (just applied) makes stale, given `old` (applied
/// before). A port absent from `old` counts as having had no endpoints, so the first
/// sync after a start clears flows that went undisturbed before any rule existed; flows
/// DNATed to live endpoints survive a restart.
pub fn stale(old: &[ServicePort], new: &[ServicePort]) -> BTreeSet<Flow> {
    let before: HashMap<String, &ServicePort> = old.iter().filter(|sp| tracked(sp)).map(|sp| (sp.key(), sp)).collect();
    let mut now: HashMap<String, BTreeSet<(Ipv4Addr, u16)>> = HashMap::new();
    let mut flows = BTreeSet::new();
    for sp in new.iter().filter(|sp| tracked(sp)) {
        let serving_now = serving(sp);
        let had_none = before.get(&sp.key()).is_none_or(|old| serving(old).is_empty());
        if had_none && !serving_now.is_empty() {
            flows.extend(not_dnatted(sp));
        }
        now.insert(sp.key(), serving_now);
    }
    for (key, sp) in &before {
        let still = now.get(key);
        for endpoint in serving(sp) {
            if !still.is_some_and(|s| s.contains(&endpoint)) {
                // the old frontends: the entries were made through them
                flows.extend(dnatted_to(sp, endpoint));
            }
        }
    }
    flows
}

/// The listed entries of `protocol` that were DNATed from a frontend address of one of
/// `ports` to something that is not a serving endpoint of it. NodePort entries are left
/// out: matched by port alone, they could be another program's NATed flows.
pub fn stale_listed(protocol: &'static str, ports: &[ServicePort], entries: &[Entry]) -> BTreeSet<Flow> {
    let mut serving_at: HashMap<(Ipv4Addr, u16), BTreeSet<(Ipv4Addr, u16)>> = HashMap::new();
    for sp in ports.iter().filter(|sp| sp.protocol == protocol) {
        for ip in frontend_ips(sp) {
            serving_at.entry((ip, sp.port)).or_default().extend(serving(sp));
        }
    }
    let dnatted = entries.iter().filter(|e| (e.reply_src, e.reply_port) != (e.orig_dst, e.orig_port));
    dnatted
        .filter(|e| {
            serving_at.get(&(e.orig_dst, e.orig_port)).is_some_and(|s| !s.contains(&(e.reply_src, e.reply_port)))
        })
        .map(|e| Flow {
            protocol,
            orig_dst: Some(e.orig_dst),
            orig_port: e.orig_port,
            reply_src: Some(e.reply_src),
            reply_port: e.reply_port,
        })
        .collect()
}

/// Clears the entries each applied sync makes stale.
#[derive(Default)]
pub struct Cleaner {
    /// The UDP and SCTP service ports of the last applied sync.
    applied: Vec<ServicePort>,
    /// Whether the kernel's entries were checked against the first applied sync.
    reconciled: bool,
    /// Whether the missing tool was reported (once is enough).
    warned_missing: bool,
}

/// The addresses of one conntrack entry that the filters look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub orig_dst: Ipv4Addr,
    pub orig_port: u16,
    pub reply_src: Ipv4Addr,
    pub reply_port: u16,
}

impl Flow {
    /// Whether `conntrack -D` with this filter would delete `entry`.
    pub fn matches(&self, entry: &Entry) -> bool {
        self.orig_dst.is_none_or(|d| d == entry.orig_dst)
            && self.orig_port == entry.orig_port
            && self.reply_src.is_none_or(|s| s == entry.reply_src)
            && self.reply_port == entry.reply_port
    }
}

/// The entries of `conntrack -L` output: per line the original tuple's `dst=`/`dport=`
/// (their first occurrence) and the reply tuple's `src=`/`sport=` (their second); lines
/// without both tuples (ICMP, or unparsable) are skipped.
pub fn parse_entries(listing: &str) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|line| {
            Some(Entry {
                orig_dst: field(line, "dst=", 0)?,
                orig_port: field(line, "dport=", 0)?,
                reply_src: field(line, "src=", 1)?,
                reply_port: field(line, "sport=", 1)?,
            })
        })
        .collect()
}

/// The `n`th value of `key` (`dst=` …) in a `conntrack -L` line.
fn field<T: std::str::FromStr>(line: &str, key: &str, n: usize) -> Option<T> {
    line.split_whitespace().filter_map(|w| w.strip_prefix(key)).nth(n)?.parse().ok()
}

/// Why the tool could not do its part.
enum ToolError {
    Missing,
    Failed(String),
}

fn conntrack(args: &[String]) -> Result<std::process::Output, ToolError> {
    Command::new(CONNTRACK).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::Missing,
        _ => ToolError::Failed(e.to_string()),
    })
}

/// The kernel's entries of `protocol` (`conntrack -L`).
fn list(protocol: &str) -> Result<Vec<Entry>, ToolError> {
    let out = conntrack(&["-L".into(), "-p".into(), protocol.into()])?;
    if !out.status.success() {
        return Err(ToolError::Failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(parse_entries(&String::from_utf8_lossy(&out.stdout)))
}

/// Run one filter; how many entries went.
fn delete(flow: &Flow) -> Result<u64, ToolError> {
    let out = conntrack(&flow.args())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted." — and exit
    // status 1 when that number is 0, which is no failure here
    let count =
        stderr.split("): ").nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok());
    count.ok_or_else(|| ToolError::Failed(stderr.trim().to_string()))
}

/// The filters with something to delete: one listing per protocol, so a sync that could
/// make entries stale but made none (the usual case, and every UDP Service at a start)
/// costs one process, not one per filter (each costs 10–20 ms here).
fn matching(flows: &BTreeSet<Flow>) -> Result<Vec<&Flow>, ToolError> {
    let protocols: BTreeSet<&str> = flows.iter().map(|f| f.protocol).collect();
    let mut hits = Vec::new();
    for protocol in protocols {
        let entries = list(protocol)?;
        let of_protocol = flows.iter().filter(|f| f.protocol == protocol);
        hits.extend(of_protocol.filter(|f| entries.iter().any(|e| f.matches(e))));
    }
    Ok(hits)
}

/// The service ports `Cleaner` follows (UDP and SCTP), copied out of a snapshot.
pub fn datagram_ports(ports: &[ServicePort]) -> Vec<ServicePort> {
    ports.iter().filter(|sp| tracked(sp)).cloned().collect()
}

impl Cleaner {
    /// The rules for `current` (the `datagram_ports` of the snapshot) are in place:
    /// delete the entries they made stale.
    pub fn synced(&mut self, current: Vec<ServicePort>) {
        let mut flows = stale(&self.applied, &current);
        if !self.reconciled {
            flows.extend(self.reconcile(&current));
        }
        self.applied = current;
        if flows.is_empty() {
            return;
        }
        let started = Instant::now();
        let hits = match matching(&flows) {
            Ok(hits) => hits,
            Err(e) => return self.failed(e, "listing conntrack entries"),
        };
        let mut deleted = 0;
        for flow in &hits {
            match delete(flow) {
                Ok(n) => deleted += n,
                Err(e) => self.failed(e, &flow.args().join(" ")),
            }
        }
        tracing::info!(
            filters = flows.len(),
            matched = hits.len(),
            deleted,
            took_ms = started.elapsed().as_millis() as u64,
            "cleared stale conntrack entries"
        );
    }

    /// After a start: the entries DNATed to endpoints that went while no proxy ran.
    fn reconcile(&mut self, current: &[ServicePort]) -> BTreeSet<Flow> {
        let protocols: BTreeSet<&'static str> = current.iter().map(|sp| sp.protocol).collect();
        let mut flows = BTreeSet::new();
        for protocol in protocols {
            match list(protocol) {
                Ok(entries) => flows.extend(stale_listed(protocol, current, &entries)),
                Err(e) => {
                    self.failed(e, "listing conntrack entries");
                    return flows;
                }
            }
        }
        self.reconciled = true;
        flows
    }

    fn failed(&mut self, error: ToolError, what: &str) {
        match error {
            ToolError::Missing if !self.warned_missing => {
                tracing::warn!(
                    tool = CONNTRACK,
                    "cannot clear stale UDP conntrack entries: the conntrack tool is missing \
                     (apt-get install conntrack); they stay until they time out"
                );
                self.warned_missing = true;
            }
            ToolError::Missing => {}
            ToolError::Failed(error) => tracing::warn!(what, error, "clearing conntrack entries failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn ep(ip: &str, ready: bool) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port: 5353, node: None, ready, serving: ready, terminating: false }
    }

    fn udp(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "ns".into(),
            name: "dns".into(),
            port_name: "dns".into(),
            protocol: "udp",
            cluster_ip: Some("10.96.0.10".parse().unwrap()),
            port: 53,
            node_port: Some(30053),
            external_ips: vec!["192.0.2.7".parse().unwrap()],
            affinity_seconds: None,
            internal_local: false,
            external_local: false,
            endpoints,
        }
    }

    fn args(flows: &BTreeSet<Flow>) -> Vec<String> {
        flows.iter().map(|f| f.args().join(" ")).collect()
    }

    #[test]
    fn endpoints_appearing_clear_the_undisturbed_flows_of_every_frontend() {
        let flows = stale(&[udp(vec![ep("10.1.0.1", false)])], &[udp(vec![ep("10.1.0.1", true)])]);
        assert_eq!(
            args(&flows),
            [
                "-D -p udp --orig-port-dst 30053 --reply-port-src 30053",
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.96.0.10 --reply-port-src 53",
                "-D -p udp --orig-dst 192.0.2.7 --orig-port-dst 53 --reply-src 192.0.2.7 --reply-port-src 53",
            ]
        );
        // a port new to the proxy (its first sync, or a new Service) had none either
        assert_eq!(stale(&[], &[udp(vec![ep("10.1.0.1", true)])]), flows);
    }

    #[test]
    fn after_a_restart_listed_flows_dnatted_to_a_gone_endpoint_are_cleared() {
        let entry = |dst: &str, port, src: &str, sport| Entry {
            orig_dst: dst.parse().unwrap(),
            orig_port: port,
            reply_src: src.parse().unwrap(),
            reply_port: sport,
        };
        let listed = [
            entry("10.96.0.10", 53, "10.1.0.1", 5353),  // DNATed to the gone endpoint
            entry("10.96.0.10", 53, "10.1.0.2", 5353),  // to the serving one
            entry("192.0.2.7", 53, "10.1.0.1", 5353),   // via the external IP, gone
            entry("10.96.0.10", 53, "10.96.0.10", 53),  // not DNATed: `stale`'s part
            entry("10.0.0.5", 30053, "10.1.0.1", 5353), // a NodePort: left alone
            entry("10.96.0.99", 53, "10.1.0.1", 5353),  // no Service of ours
        ];
        let ports = [udp(vec![ep("10.1.0.2", true), ep("10.1.0.3", false)])];
        assert_eq!(
            args(&stale_listed("udp", &ports, &listed)),
            [
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.1.0.1 --reply-port-src 5353",
                "-D -p udp --orig-dst 192.0.2.7 --orig-port-dst 53 --reply-src 10.1.0.1 --reply-port-src 5353",
            ]
        );
        assert!(stale_listed("sctp", &ports, &listed).is_empty(), "the listing was of another protocol");
    }

    #[test]
    fn an_endpoint_that_stops_serving_or_goes_clears_the_flows_dnatted_to_it() {
        let old = [udp(vec![ep("10.1.0.1", true), ep("10.1.0.2", true)])];
        let flows = stale(&old, &[udp(vec![ep("10.1.0.2", true), ep("10.1.0.1", false)])]);
        assert_eq!(
            args(&flows),
            [
                "-D -p udp --orig-port-dst 30053 --reply-src 10.1.0.1 --reply-port-src 5353",
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.1.0.1 --reply-port-src 5353",
                "-D -p udp --orig-dst 192.0.2.7 --orig-port-dst 53 --reply-src 10.1.0.1 --reply-port-src 5353",
            ]
        );
        // the Service deleted: every endpoint's flows, and nothing for the new state
        assert_eq!(stale(&old, &[]).len(), 6);
    }

    #[test]
    fn steady_state_tcp_and_serving_terminating_endpoints_clear_nothing() {
        let same = [udp(vec![ep("10.1.0.1", true)])];
        assert!(stale(&same, &same).is_empty());
        let mut terminating = ep("10.1.0.1", false);
        (terminating.serving, terminating.terminating) = (true, true);
        assert!(stale(&same, &[udp(vec![terminating])]).is_empty(), "still serving: its flows stay");
        let tcp = |eps| ServicePort { protocol: "tcp", ..udp(eps) };
        assert!(stale(&[tcp(vec![ep("10.1.0.1", true)])], &[tcp(vec![])]).is_empty());
        assert!(stale(&[], &[udp(vec![])]).is_empty(), "no endpoints yet: nothing to clear");
        let sctp = ServicePort { protocol: "sctp", ..udp(vec![ep("10.1.0.1", true)]) };
        assert_eq!(stale(std::slice::from_ref(&sctp), &[]).first().map(|f| f.protocol), Some("sctp"));
    }

    #[test]
    fn listed_entries_are_matched_as_conntrack_would_delete_them() {
        let listing = "udp      17 28 src=192.168.99.1 dst=10.96.0.10 sport=40001 dport=53 [UNREPLIED] src=10.96.0.10 dst=192.168.99.1 sport=53 dport=40001 mark=0 use=1\n\
            udp      17 118 src=10.1.0.9 dst=10.96.0.10 sport=40002 dport=53 src=10.1.0.1 dst=10.1.0.9 sport=5353 dport=40002 [ASSURED] mark=0 use=1\n\
            icmp     1 29 src=10.1.0.9 dst=10.1.0.1 type=8 code=0 id=7 src=10.1.0.1 dst=10.1.0.9 type=0 code=0 id=7 mark=0 use=1\n";
        let entries = parse_entries(listing);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            entries[1],
            Entry { orig_dst: ip("10.96.0.10"), orig_port: 53, reply_src: ip("10.1.0.1"), reply_port: 5353 }
        );
        let appeared = stale(&[], &[udp(vec![ep("10.1.0.1", true)])]);
        let gone = stale(&[udp(vec![ep("10.1.0.1", true)])], &[]);
        let hits = |flows: &BTreeSet<Flow>| flows.iter().filter(|f| entries.iter().any(|e| f.matches(e))).count();
        assert_eq!(hits(&appeared), 1, "the undisturbed entry, not the DNATed one");
        assert_eq!(hits(&gone), 1, "the entry DNATed to the endpoint gone");
    }
}
