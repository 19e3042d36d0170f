//! The nftables mode's rule builder: service ports in, `nft -f` transaction text out,
//! laid out as upstream kube-proxy's nftables mode (KEP-3866) in one table of our own,
//! `ip kube-proxy`, so nobody else's rules (nor iptables mode's) are touched:
//!
//! - base chains at upstream's hooks and priorities: filter chains at dstnat-10 (they
//!   see the pre-DNAT destination) reject or drop service ports without endpoints through
//!   the verdict maps `no-endpoint-services` (`ip daddr . meta l4proto . th dport`) and
//!   `no-endpoint-nodeports` (`meta l4proto . th dport`), and reject unknown ports of
//!   ClusterIPs (`cluster-ips`); nat chains dispatch through `service-ips` and
//!   `service-nodeports` to per-service-port chains and masquerade by mark;
//! - `service-<hash>-ns/name/proto/port` (Cluster policy) and `local-…` (Local policy)
//!   pick an endpoint chain with `numgen random mod N vmap @vmap-<chain>`, after ClientIP
//!   affinity checks against per-endpoint timeout sets `affinity-…`; `external-…` is the
//!   entry of NodePort, external and LoadBalancer IP traffic. Upstream writes the vmap
//!   inline (an anonymous set per chain); binding each anonymous set makes the kernel
//!   walk the whole transaction (`__nft_set_trans_bind`, 46% of a 1,000-service full
//!   sync's time measured with perf), so ours are named maps: 1.7 s of system time → 0.6 s;
//! - `endpoint-<hash>-ns/name/proto/port__ip/port` marks hairpin traffic for masquerade,
//!   records affinity and DNATs.
//!
//! `plan` compares what it builds with what the last sync wrote (per service port) and
//! emits only the difference: changed chains (`add chain` + `flush chain` + rules),
//! changed map elements (`delete element` / `add element`), and stale chains and sets
//! (flushed, then deleted once nothing points at them), all in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Categorized, Endpoint, ServicePort, categorize};
use super::nft_ops::{Element, Key, MARK_FOR_MASQUERADE, Op, Rule, Verdict};
use super::rules::Config;

/// Our table, with its family, as every command names it.
pub const TABLE: &str = "ip kube-proxy";
/// Upstream's cap on chain names (nft allows 128 characters; 16 are left for prefixes).
const NAME_BASE_MAX: usize = 112;

/// The sets and verdict maps service ports put elements in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Map {
    ServiceIps,
    ServiceNodePorts,
    NoEndpointServices,
    NoEndpointNodePorts,
    ClusterIps,
}

impl Map {
    const ALL: [Map; 5] =
        [Map::ServiceIps, Map::ServiceNodePorts, Map::NoEndpointServices, Map::NoEndpointNodePorts, Map::ClusterIps];

    fn name(self) -> &'static str {
        match self {
            Map::ServiceIps => "service-ips",
            Map::ServiceNodePorts => "service-nodeports",
            Map::NoEndpointServices => "no-endpoint-services",
            Map::NoEndpointNodePorts => "no-endpoint-nodeports",
            Map::ClusterIps => "cluster-ips",
        }
    }

    /// `map NAME { type … }` or `set NAME { type … }`, as `add` declares it.
    fn declaration(self) -> String {
        let (kind, ty) = match self {
            Map::ServiceIps | Map::NoEndpointServices => ("map", "ipv4_addr . inet_proto . inet_service : verdict"),
            Map::ServiceNodePorts | Map::NoEndpointNodePorts => ("map", "inet_proto . inet_service : verdict"),
            Map::ClusterIps => ("set", "ipv4_addr"),
        };
        format!("{kind} {TABLE} {} {{ type {ty} ; }}", self.name())
    }

    fn kind(self) -> &'static str {
        if self == Map::ClusterIps { "set" } else { "map" }
    }
}

/// What one service port puts in the table: its own chains and affinity sets whole,
/// and its elements in the shared maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Affinity set name → timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// Named endpoint-picking verdict map → the endpoint chains it picks from, in order.
    pub vmaps: BTreeMap<String, Vec<String>>,
    pub elements: Vec<(Map, Element)>,
}

impl Fragment {
    fn rule(&mut self, chain: &str, rule: Rule) {
        self.chains.entry(chain.to_string()).or_default().push(rule);
    }
    fn element(&mut self, map: Map, key: Key, value: Option<Verdict>, comment: Option<String>) {
        self.elements.push((map, Element { key, value, comment }));
    }
}

/// Upstream's chain name stem: 8 base32 digits of the name's sha256, a dash, the name
/// (cut to fit, marked with "...").
fn hash_and_truncate(name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    // 5 bytes are 40 bits: exactly 8 base32 digits
    let bits = digest.as_ref()[..5].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut out: String = (0..8).rev().map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect();
    out.push('-');
    out.push_str(name);
    if out.len() > NAME_BASE_MAX {
        // names are ASCII (DNS labels, digits, dots, slashes), so any cut is a char boundary
        out.truncate(NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// `ns/name/proto/port`: the stem of a service port's chain names.
fn port_base(sp: &ServicePort) -> String {
    hash_and_truncate(&format!("{}/{}/{}/{}", sp.namespace, sp.name, sp.protocol, sp.port_name))
}

fn endpoint_base(sp: &ServicePort, ep: &Endpoint) -> String {
    hash_and_truncate(&format!("{}/{}/{}/{}__{}/{}", sp.namespace, sp.name, sp.protocol, sp.port_name, ep.ip, ep.port))
}

/// Service chains (service, local, external, endpoint) all carry a '/', which none of
/// the fixed chains do: that is how stale ones are told apart.
pub fn is_service_chain(name: &str) -> bool {
    name.contains('/')
}

pub fn is_affinity_set(name: &str) -> bool {
    name.starts_with("affinity-")
}

pub fn is_endpoint_vmap(name: &str) -> bool {
    name.starts_with("vmap-")
}

struct Names {
    cluster: String,
    local: String,
    external: String,
}

fn names(sp: &ServicePort) -> Names {
    let base = port_base(sp);
    Names { cluster: format!("service-{base}"), local: format!("local-{base}"), external: format!("external-{base}") }
}

/// What a port needs, as upstream decides it.
struct Shape<'a> {
    eps: Categorized<'a>,
    any: bool,
    externally_accessible: bool,
    uses_cluster: bool,
    uses_local: bool,
}

fn shape<'a>(sp: &'a ServicePort, cfg: &Config) -> Shape<'a> {
    let eps = categorize(sp, &cfg.node);
    let any = !eps.cluster.is_empty();
    let externally_accessible = sp.node_port.is_some() || !sp.external_ips.is_empty();
    // the external chain's short-circuit for local and pod traffic goes to the cluster
    // chain even under a Local external policy
    let uses_cluster = any && (!sp.internal_local || externally_accessible);
    let uses_local = !eps.local.is_empty() && (sp.internal_local || (sp.external_local && externally_accessible));
    Shape { eps, any, externally_accessible, uses_cluster, uses_local }
}

/// The verdict of a destination without usable endpoints: reject when the port has none
/// at all, drop when it has some but none a Local policy may use (as upstream).
fn no_endpoints(any: bool, key: &str) -> (Verdict, String) {
    if any {
        (Verdict::Drop, format!("{key} has no local endpoints"))
    } else {
        (Verdict::Goto("reject-chain".into()), format!("{key} has no endpoints"))
    }
}

/// Everything one service port contributes.
pub fn fragment(sp: &ServicePort, cfg: &Config) -> Fragment {
    let mut f = Fragment::default();
    let n = names(sp);
    let s = shape(sp, cfg);
    let internal_chain = if sp.internal_local { &n.local } else { &n.cluster };
    let has_internal = !s.eps.internal(sp).is_empty();
    cluster_ip_elements(&mut f, sp, &s, internal_chain, has_internal);
    external_elements(&mut f, sp, &s, &n.external);
    if has_internal && let Some(ip) = sp.cluster_ip {
        masquerade_rule(&mut f, internal_chain, ip, sp, cfg);
    }
    if s.any && s.externally_accessible {
        external_chain(&mut f, sp, &n, s.eps.external(sp).is_empty(), cfg);
    }
    if s.uses_cluster {
        balance(&mut f, &n.cluster, sp, &s.eps.cluster);
    }
    if s.uses_local {
        balance(&mut f, &n.local, sp, &s.eps.local);
    }
    let mut reachable: Vec<&Endpoint> = Vec::new();
    if s.uses_cluster {
        reachable.extend(&s.eps.cluster);
    }
    if s.uses_local {
        reachable.extend(&s.eps.local);
    }
    for ep in reachable {
        endpoint_chain(&mut f, sp, ep);
    }
    f
}

fn ip_key(ip: std::net::Ipv4Addr, sp: &ServicePort) -> Key {
    Key::Service(ip, sp.protocol, sp.port)
}

fn cluster_ip_elements(f: &mut Fragment, sp: &ServicePort, s: &Shape, chain: &str, has_internal: bool) {
    let Some(ip) = sp.cluster_ip else { return };
    f.element(Map::ClusterIps, Key::Ip(ip), None, None);
    if has_internal {
        f.element(Map::ServiceIps, ip_key(ip, sp), Some(Verdict::Goto(chain.to_string())), None);
    } else {
        let (verdict, why) = no_endpoints(s.any, &sp.key());
        f.element(Map::NoEndpointServices, ip_key(ip, sp), Some(verdict), Some(why));
    }
}

/// External IPs (spec.externalIPs and LoadBalancer ingress) and the NodePort: to the
/// external chain when the port has endpoints anywhere, and rejected or dropped by the
/// filter chains when none may take outside traffic.
fn external_elements(f: &mut Fragment, sp: &ServicePort, s: &Shape, external: &str) {
    let has_external = !s.eps.external(sp).is_empty();
    let (verdict, why) = no_endpoints(s.any, &sp.key());
    let add = |f: &mut Fragment, to: Map, no: Map, key: Key| {
        if s.any {
            f.element(to, key.clone(), Some(Verdict::Goto(external.to_string())), None);
        }
        if !has_external {
            f.element(no, key, Some(verdict.clone()), Some(why.clone()));
        }
    };
    for ip in &sp.external_ips {
        add(f, Map::ServiceIps, Map::NoEndpointServices, ip_key(*ip, sp));
    }
    if let Some(np) = sp.node_port {
        add(f, Map::ServiceNodePorts, Map::NoEndpointNodePorts, Key::NodePort(sp.protocol, np));
    }
}

/// Off-cluster sources reaching the ClusterIP are masqueraded (all with
/// `--masquerade-all`), so replies come back through this node.
fn masquerade_rule(f: &mut Fragment, chain: &str, ip: std::net::Ipv4Addr, sp: &ServicePort, cfg: &Config) {
    let unless_from = if cfg.masquerade_all {
        None
    } else if let Some(cidr) = cfg.cluster_cidr {
        Some(cidr)
    } else {
        return;
    };
    f.rule(chain, Rule::MasqueradeTo { ip, protocol: sp.protocol, port: sp.port, unless_from });
}

/// The entry of outside traffic: masquerade and go to every endpoint (Cluster policy),
/// or keep the client's address and go to the local ones (Local policy), pods and the
/// node itself still reaching every endpoint, as upstream.
fn external_chain(f: &mut Fragment, sp: &ServicePort, n: &Names, no_external: bool, cfg: &Config) {
    let chain = &n.external;
    let to_cluster = Verdict::Goto(n.cluster.clone());
    if !sp.external_local {
        f.rule(chain, Rule::Always(Verdict::Jump(MARK_FOR_MASQUERADE.into())));
        f.rule(chain, Rule::Always(to_cluster));
        return;
    }
    if let Some(cidr) = cfg.cluster_cidr {
        let comment = "short-circuit pod traffic".into();
        f.rule(chain, Rule::FromGoto { cidr, chain: n.cluster.clone(), comment });
    }
    let (masquerade, comment) = (Verdict::Jump(MARK_FOR_MASQUERADE.into()), "masquerade local traffic".into());
    f.rule(chain, Rule::FromLocal { verdict: masquerade, comment });
    f.rule(chain, Rule::FromLocal { verdict: to_cluster, comment: "short-circuit local traffic".into() });
    if !no_external {
        f.rule(chain, Rule::Always(Verdict::Goto(n.local.clone())));
    }
}

/// Affinity checks (a client seen within the timeout goes back to its endpoint), then a
/// uniform random pick over the endpoint chains.
fn balance(f: &mut Fragment, chain: &str, sp: &ServicePort, eps: &[&Endpoint]) {
    f.chains.entry(chain.to_string()).or_default();
    if sp.affinity_seconds.is_some() {
        for ep in eps {
            let base = endpoint_base(sp, ep);
            f.rule(chain, Rule::Affinity { set: format!("affinity-{base}"), chain: format!("endpoint-{base}") });
        }
    }
    let targets = eps.iter().map(|ep| format!("endpoint-{}", endpoint_base(sp, ep))).collect();
    let name = format!("vmap-{chain}");
    f.rule(chain, Rule::Pick { n: eps.len(), vmap: name.clone() });
    f.vmaps.insert(name, targets);
}

fn endpoint_chain(f: &mut Fragment, sp: &ServicePort, ep: &Endpoint) {
    let base = endpoint_base(sp, ep);
    let chain = format!("endpoint-{base}");
    if f.chains.contains_key(&chain) {
        return;
    }
    // hairpin: a pod reaching itself through the service must see the reply come back
    f.rule(&chain, Rule::Hairpin { ip: ep.ip });
    if let Some(seconds) = sp.affinity_seconds {
        let set = format!("affinity-{base}");
        f.sets.insert(set.clone(), seconds);
        f.rule(&chain, Rule::Remember { set });
    }
    f.rule(&chain, Rule::Dnat { protocol: sp.protocol, ip: ep.ip, port: ep.port });
}

/// The base chains: name, type, hook, priority (upstream's: filter before DNAT at
/// dstnat-10, the output post-DNAT check at dstnat+10).
const BASE_CHAINS: [(&str, &str, &str, i32); 7] = [
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
];

const REGULAR_CHAINS: [&str; 7] = [
    "services",
    "masquerading",
    "mark-for-masquerade",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "cluster-ips-check",
    "reject-chain",
];

/// (chain, rule) of the fixed part; rules that depend on flags come from `flag_rules`.
const BASE_RULES: [(&str, &str); 15] = [
    ("filter-input", "ct state new jump nodeport-endpoints-check"),
    ("filter-input", "ct state new jump service-endpoints-check"),
    ("filter-forward", "ct state new jump service-endpoints-check"),
    ("filter-forward", "ct state new jump cluster-ips-check"),
    ("filter-output", "ct state new jump service-endpoints-check"),
    ("filter-output-post-dnat", "ct state new jump cluster-ips-check"),
    ("nat-prerouting", "jump services"),
    ("nat-output", "jump services"),
    ("nat-postrouting", "jump masquerading"),
    ("mark-for-masquerade", "mark set mark or 0x4000"),
    ("masquerading", "mark and 0x4000 == 0 return"),
    ("masquerading", "mark set mark xor 0x4000"),
    ("masquerading", "masquerade fully-random"),
    ("reject-chain", "reject"),
    ("cluster-ips-check", "ip daddr @cluster-ips reject comment \"reject traffic to invalid ports of ClusterIPs\""),
];

/// Where NodePorts answer: every local address (127.0.0.1 only with route_localnet),
/// or the `--nodeport-addresses` ranges.
fn node_port_match(cfg: &Config) -> String {
    if !cfg.nodeport_addresses.is_empty() {
        let nets: Vec<String> = cfg.nodeport_addresses.iter().map(ToString::to_string).collect();
        return format!("ip daddr {{ {} }}", nets.join(", "));
    }
    if cfg.localhost_nodeports {
        "fib daddr type local".into()
    } else {
        "fib daddr type local ip daddr != 127.0.0.0/8".into()
    }
}

fn flag_rules(cfg: &Config) -> Vec<(&'static str, String)> {
    let np = node_port_match(cfg);
    let mut out = vec![
        ("services", "ip daddr . meta l4proto . th dport vmap @service-ips".to_string()),
        ("services", format!("{np} meta l4proto . th dport vmap @service-nodeports")),
        ("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".to_string()),
        ("nodeport-endpoints-check", format!("{np} meta l4proto . th dport vmap @no-endpoint-nodeports")),
    ];
    if cfg.localhost_nodeports {
        // route_localnet lets 127/8 sources leave lo; only DNATed NodePort traffic may
        out.push((
            "filter-input",
            "ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct state != { established, related } ct status != dnat drop \
             comment \"block incoming localnet connections\""
                .to_string(),
        ));
    }
    out
}

/// The fixed part of a full sync: the table, base and top-level chains (flushed and
/// refilled) and the maps (flushed; every element is added again after). Text only:
/// full syncs always go through `nft`.
fn base(tx: &mut Tx, cfg: &Config) {
    let mut head = |line: String| tx.head.push(Op::Text(line));
    head(format!("add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"));
    for (name, ty, hook, prio) in BASE_CHAINS {
        head(format!("add chain {TABLE} {name} {{ type {ty} hook {hook} priority {prio} ; }}"));
        head(format!("flush chain {TABLE} {name}"));
    }
    for name in REGULAR_CHAINS {
        head(format!("add chain {TABLE} {name}"));
        head(format!("flush chain {TABLE} {name}"));
    }
    for map in Map::ALL {
        head(format!("add {}", map.declaration()));
    }
    // emptied with the rest of the sync (their elements are all added again after)
    for map in Map::ALL {
        let name = map.name().to_string();
        tx.head.push(if map.kind() == "set" { Op::FlushSet(name) } else { Op::FlushMap(name) });
    }
    for (chain, rule) in BASE_RULES {
        tx.rules.push(Op::Text(format!("add rule {TABLE} {chain} {rule}")));
    }
    for (chain, rule) in flag_rules(cfg) {
        tx.rules.push(Op::Text(format!("add rule {TABLE} {chain} {rule}")));
    }
}

/// One transaction in the order nft needs: sets and chains exist before rules and
/// elements point at them; elements go before the chains they pointed at are deleted.
#[derive(Default)]
struct Tx {
    head: Vec<Op>,
    chains: Vec<Op>,
    rules: Vec<Op>,
    element_deletes: Vec<Op>,
    element_adds: Vec<Op>,
    deletes: Vec<Op>,
    chains_written: usize,
    chains_deleted: usize,
}

impl Tx {
    fn write_chain(&mut self, name: &str, rules: &[Rule]) {
        self.chains.push(Op::AddChain(name.into()));
        self.chains.push(Op::FlushChain(name.into()));
        for rule in rules {
            self.rules.push(Op::AddRule { chain: name.into(), rule: rule.clone() });
        }
        self.chains_written += 1;
    }
    /// A stale chain: emptied first (dropping its references), deleted at the end.
    fn delete_chain(&mut self, name: &str) {
        self.chains.push(Op::FlushChain(name.into()));
        self.deletes.push(Op::DeleteChain(name.into()));
        self.chains_deleted += 1;
    }
    fn add_set(&mut self, name: &str, seconds: u32) {
        self.head.push(Op::AddAffinitySet { name: name.into(), seconds });
    }
    fn delete_set(&mut self, name: &str) {
        // after the chains' deletes: the rules using it are gone by then
        self.deletes.push(Op::DeleteSet(name.into()));
    }
    /// An endpoint-picking map, emptied and refilled (its chains exist by then).
    fn write_vmap(&mut self, name: &str, targets: &[String]) {
        self.head.push(Op::AddVmap(name.into()));
        self.chains.push(Op::FlushMap(name.into()));
        let elements = (0..)
            .zip(targets)
            .map(|(i, chain)| Element { key: Key::Index(i), value: Some(Verdict::Goto(chain.clone())), comment: None })
            .collect();
        self.element_adds.push(Op::AddElements { set: name.into(), elements });
    }
    /// A stale map: emptied with the chains (dropping its references to them), deleted
    /// after the rule using it is gone.
    fn delete_vmap(&mut self, name: &str) {
        self.chains.push(Op::FlushMap(name.into()));
        self.deletes.push(Op::DeleteVmap(name.into()));
    }
    fn ops(self) -> Vec<Op> {
        [self.head, self.chains, self.rules, self.element_deletes, self.element_adds, self.deletes].concat()
    }
}

/// The `nft -f` text of a transaction.
pub fn text<'a>(ops: impl IntoIterator<Item = &'a Op>) -> String {
    let mut out = String::new();
    for op in ops {
        use std::fmt::Write as _;
        let _ = writeln!(out, "{op}");
    }
    out
}

/// A set or map element's identity.
type ElementKey = (Map, Key);
/// Its data: the verdict and the comment.
type ElementData = (Option<Verdict>, Option<String>);

/// What a successful sync left in the table.
#[derive(Debug, Default)]
pub struct Written {
    /// `ns/name:port` + protocol → the port as built, and what it contributed.
    ports: HashMap<String, (ServicePort, Fragment)>,
    elements: BTreeMap<ElementKey, ElementData>,
}

/// Our chains and sets found in the kernel (for a full sync with nothing remembered).
#[derive(Debug, Default)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
    pub vmaps: BTreeSet<String>,
}

impl Written {
    /// Our service chains and affinity sets as this state has them.
    pub fn existing(&self) -> Existing {
        let mut e = Existing::default();
        for (_, f) in self.ports.values() {
            e.chains.extend(f.chains.keys().cloned());
            e.sets.extend(f.sets.keys().cloned());
            e.vmaps.extend(f.vmaps.keys().cloned());
        }
        e
    }
}

/// One sync's transaction, the state it leaves when it succeeds, and its figures.
pub struct Plan {
    /// The commands, in order; `text` is their `nft -f` input.
    pub ops: Vec<Op>,
    pub text: String,
    pub next: Written,
    pub rebuilt: usize,
    pub rules: usize,
    pub chains_written: usize,
    pub chains_deleted: usize,
}

/// Builds the transaction from `previous` (what the last successful sync wrote) to
/// `ports`. A full plan (`full`) rewrites the base, every chain and every element and
/// deletes the service chains and affinity sets in `existing` that are not wanted; a
/// partial one writes only what differs from `previous`.
pub fn plan(ports: Vec<ServicePort>, cfg: &Config, previous: Written, full: bool, existing: &Existing) -> Plan {
    let mut tx = Tx::default();
    if full {
        base(&mut tx, cfg);
    }
    let mut prev = previous.ports;
    let mut next = Written::default();
    let mut rebuilt = 0;
    for sp in ports {
        let id = format!("{}{}", sp.key(), sp.protocol);
        let frag = match prev.remove(&id) {
            // unchanged: nothing to write unless everything is
            Some((p, f)) if p == sp => {
                if full {
                    write_fragment(&mut tx, &f, None);
                }
                f
            }
            old => {
                rebuilt += 1;
                let f = fragment(&sp, cfg);
                write_fragment(&mut tx, &f, old.as_ref().map(|(_, f)| f).filter(|_| !full));
                f
            }
        };
        next.ports.insert(id, (sp, frag));
    }
    if full {
        delete_unwanted(&mut tx, &next, existing);
    } else {
        for (_, (_, gone)) in prev {
            write_fragment(&mut tx, &Fragment::default(), Some(&gone));
        }
    }
    next.elements = wanted_elements(&next);
    diff_elements(&mut tx, if full { None } else { Some(&previous.elements) }, &next.elements);
    let (chains_written, chains_deleted, rules) = (tx.chains_written, tx.chains_deleted, tx.rules.len());
    let ops = tx.ops();
    Plan { text: text(&ops), ops, next, rebuilt, rules, chains_written, chains_deleted }
}

/// The chains and sets of `new` that differ from `old` (all of them without `old`),
/// and the deletion of those only `old` has.
fn write_fragment(tx: &mut Tx, new: &Fragment, old: Option<&Fragment>) {
    for (name, seconds) in &new.sets {
        if old.and_then(|o| o.sets.get(name)) != Some(seconds) {
            tx.add_set(name, *seconds);
        }
    }
    for (name, rules) in &new.chains {
        if old.and_then(|o| o.chains.get(name)) != Some(rules) {
            tx.write_chain(name, rules);
        }
    }
    for (name, elements) in &new.vmaps {
        if old.and_then(|o| o.vmaps.get(name)) != Some(elements) {
            tx.write_vmap(name, elements);
        }
    }
    let Some(old) = old else { return };
    for name in old.chains.keys().filter(|c| !new.chains.contains_key(*c)) {
        tx.delete_chain(name);
    }
    for name in old.vmaps.keys().filter(|m| !new.vmaps.contains_key(*m)) {
        tx.delete_vmap(name);
    }
    for name in old.sets.keys().filter(|s| !new.sets.contains_key(*s)) {
        tx.delete_set(name);
    }
}

fn delete_unwanted(tx: &mut Tx, next: &Written, existing: &Existing) {
    let wanted = next.existing();
    for chain in existing.chains.iter().filter(|c| is_service_chain(c) && !wanted.chains.contains(*c)) {
        tx.delete_chain(chain);
    }
    for set in existing.sets.iter().filter(|s| is_affinity_set(s) && !wanted.sets.contains(*s)) {
        tx.delete_set(set);
    }
    for map in existing.vmaps.iter().filter(|m| is_endpoint_vmap(m) && !wanted.vmaps.contains(*m)) {
        tx.delete_vmap(map);
    }
}

/// Every port's elements; where two ports claim one key (two Services on one external
/// IP and port) the first in order wins, as a map holds one value per key.
fn wanted_elements(next: &Written) -> BTreeMap<ElementKey, ElementData> {
    let mut ids: Vec<&String> = next.ports.keys().collect();
    ids.sort();
    let mut out = BTreeMap::new();
    for id in ids {
        for (map, e) in &next.ports[id].1.elements {
            out.entry((*map, e.key.clone())).or_insert_with(|| (e.value.clone(), e.comment.clone()));
        }
    }
    out
}

fn diff_elements(
    tx: &mut Tx,
    old: Option<&BTreeMap<ElementKey, ElementData>>,
    new: &BTreeMap<ElementKey, ElementData>,
) {
    let empty = BTreeMap::new();
    let old = old.unwrap_or(&empty);
    for (id @ (map, key), data) in old {
        if new.get(id) != Some(data) {
            tx.element_deletes.push(Op::DeleteElement { set: map.name().into(), key: key.clone() });
        }
    }
    for (id @ (map, key), data @ (value, comment)) in new {
        if old.get(id) != Some(data) {
            let e = Element { key: key.clone(), value: value.clone(), comment: comment.clone() };
            tx.element_adds.push(Op::AddElements { set: map.name().into(), elements: vec![e] });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
