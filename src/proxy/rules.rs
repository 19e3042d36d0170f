//! The rule builder: service ports in, the proxy's iptables chains out (nat and filter
//! tables), laid out as upstream's iptables mode so `iptables-save` reads the same:
//!
//! - nat `KUBE-SERVICES` (from PREROUTING and OUTPUT) matches each ClusterIP, external
//!   IP and finally (`--dst-type LOCAL`, or `--nodeport-addresses`) `KUBE-NODEPORTS`;
//! - `KUBE-SVC-<hash>` picks one of the usable endpoints with `statistic random`
//!   (probability 1/n, 1/(n-1), ...) after `recent` checks for ClientIP affinity, and
//!   marks off-cluster sources for masquerade; `KUBE-SVL-<hash>` does the same over the
//!   node-local endpoints for `Local` traffic policies; `KUBE-EXT-<hash>` is the entry
//!   of NodePort and external traffic;
//! - `KUBE-SEP-<hash>` DNATs to one endpoint (and marks hairpin traffic);
//! - `KUBE-MARK-MASQ` sets mark 0x4000, which `KUBE-POSTROUTING` masquerades;
//! - filter `KUBE-SERVICES`/`KUBE-EXTERNAL-SERVICES` REJECT service ports with no
//!   endpoints (DROP those with endpoints but none local for a Local policy), and
//!   `KUBE-FORWARD` accepts marked and established forwarded traffic.
//!
//! Chain names hash `namespace/name:port` + protocol (+ endpoint) the way upstream
//! does, so they stay stable across restarts and only changed chains are rewritten.

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;

use super::model::{Endpoint, ServicePort, categorize};

pub const MASQ_MARK: &str = "0x4000/0x4000";

/// Past this many endpoints the per-endpoint rules go without comments, as upstream's
/// large-cluster mode: they are most of the rules, and iptables-restore's time grows
/// with every match it has to parse.
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Chain name prefixes of per-service chains: the ones the applier deletes when stale.
pub const SERVICE_CHAIN_PREFIXES: [&str; 4] = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-SEP-"];

/// How the proxy was configured (the flags that shape rules).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// This node's name: endpoints with this nodeName are local.
    pub node: String,
    pub cluster_cidr: Option<Ipv4Net>,
    pub masquerade_all: bool,
    /// Where NodePorts answer; empty means every local address.
    pub nodeport_addresses: Vec<Ipv4Net>,
    /// Whether NodePorts answer on 127.0.0.1 (route_localnet is set): then the
    /// martian-source guard upstream adds goes in too.
    pub localhost_nodeports: bool,
}

/// One table: chain name → its rules in order (each a full `-A CHAIN ...` line).
pub type Chains = BTreeMap<String, Vec<String>>;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tables {
    pub nat: Chains,
    pub filter: Chains,
    /// Large-cluster mode: no comments on per-endpoint rules.
    large: bool,
}

impl Tables {
    /// The comment of a per-endpoint rule (none in large-cluster mode), with a trailing space.
    fn endpoint_comment(&self, text: &str) -> String {
        if self.large { String::new() } else { format!("{} ", comment(text)) }
    }
    fn nat(&mut self, chain: &str, rule: String) {
        self.nat.entry(chain.to_string()).or_default().push(format!("-A {chain} {rule}"));
    }
    fn filter(&mut self, chain: &str, rule: String) {
        self.filter.entry(chain.to_string()).or_default().push(format!("-A {chain} {rule}"));
    }
    pub fn rule_count(&self) -> usize {
        self.nat.values().chain(self.filter.values()).map(Vec::len).sum()
    }
}

/// The 16-character base32 stem of upstream's chain names: sha256 of the key.
fn hash(key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    // 10 bytes are 80 bits: exactly 16 base32 digits, no padding
    let bits = digest.as_ref()[..10].iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    (0..16).rev().map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect()
}

struct Names {
    svc: String,
    svl: String,
    ext: String,
}

fn names(sp: &ServicePort) -> Names {
    let h = hash(&format!("{}{}", sp.key(), sp.protocol));
    Names { svc: format!("KUBE-SVC-{h}"), svl: format!("KUBE-SVL-{h}"), ext: format!("KUBE-EXT-{h}") }
}

fn sep_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("KUBE-SEP-{}", hash(&format!("{}{}{}:{}", sp.key(), sp.protocol, ep.ip, ep.port)))
}

/// `-p tcp -m tcp --dport N`
fn dport(sp: &ServicePort, port: u16) -> String {
    format!("-p {p} -m {p} --dport {port}", p = sp.protocol)
}

fn comment(text: &str) -> String {
    format!("-m comment --comment \"{text}\"")
}

/// Every rule from scratch (what a fresh `Builder` does): the reference the tests
/// hold incremental builds to.
#[cfg(test)]
pub fn build(ports: &[ServicePort], cfg: &Config) -> Tables {
    Builder::default().build(ports, cfg)
}

/// What one service port contributed to the tables: its own chains whole, and its
/// rules in the shared ones (KUBE-SERVICES, KUBE-NODEPORTS, filter's reject lists).
#[derive(Debug)]
struct Fragment {
    port: ServicePort,
    tables: Tables,
}

/// Builds the tables keeping each service port's rules, so a sync rebuilds only the
/// ports whose Service or endpoints changed and merely concatenates the others.
/// One builder serves one `Config` (the proxy's flags do not change while it runs).
#[derive(Debug, Default)]
pub struct Builder {
    /// `namespace/name:port` + protocol → what it built last time.
    cache: HashMap<String, Fragment>,
    /// Whether the cache was built in large-cluster mode (a switch rebuilds all).
    large: bool,
    /// How many service ports the last build had to build anew.
    pub rebuilt: usize,
}

impl Builder {
    pub fn build(&mut self, ports: &[ServicePort], cfg: &Config) -> Tables {
        let large = ports.iter().map(|p| p.endpoints.len()).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS;
        if large != self.large {
            self.cache.clear();
            self.large = large;
        }
        let mut t = Tables { large, ..Tables::default() };
        base_chains(&mut t, cfg);
        let mut next = HashMap::with_capacity(ports.len());
        self.rebuilt = 0;
        for sp in ports {
            let id = format!("{}{}", sp.key(), sp.protocol);
            let fragment = match self.cache.remove(&id) {
                Some(f) if f.port == *sp => f,
                _ => {
                    self.rebuilt += 1;
                    let mut tables = Tables { large, ..Tables::default() };
                    service_port(&mut tables, sp, cfg);
                    Fragment { port: sp.clone(), tables }
                }
            };
            merge(&mut t.nat, &fragment.tables.nat);
            merge(&mut t.filter, &fragment.tables.filter);
            next.insert(id, fragment);
        }
        self.cache = next;
        node_ports_jump(&mut t, cfg);
        t
    }
}

/// Appends a fragment's rules chain by chain (shared chains keep the ports' order).
fn merge(into: &mut Chains, from: &Chains) {
    for (chain, rules) in from {
        match into.get_mut(chain) {
            Some(existing) => existing.extend(rules.iter().cloned()),
            None => {
                into.insert(chain.clone(), rules.clone());
            }
        }
    }
}

/// The chains every sync writes, whatever the services.
fn base_chains(t: &mut Tables, cfg: &Config) {
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"] {
        t.nat.entry(chain.to_string()).or_default();
    }
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-PROXY-FIREWALL"] {
        t.filter.entry(chain.to_string()).or_default();
    }
    t.nat("KUBE-MARK-MASQ", "-j MARK --or-mark 0x4000".into());
    t.nat("KUBE-POSTROUTING", format!("-m mark ! --mark {MASQ_MARK} -j RETURN"));
    // clear the mark so a re-traversal (e.g. IPsec) does not masquerade twice
    t.nat("KUBE-POSTROUTING", "-j MARK --xor-mark 0x4000".into());
    t.nat(
        "KUBE-POSTROUTING",
        format!("{} -j MASQUERADE --random-fully", comment("kubernetes service traffic requiring SNAT")),
    );
    t.filter("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP".into());
    t.filter(
        "KUBE-FORWARD",
        format!("{} -m mark --mark {MASQ_MARK} -j ACCEPT", comment("kubernetes forwarding rules")),
    );
    t.filter(
        "KUBE-FORWARD",
        format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    );
    if cfg.localhost_nodeports {
        // route_localnet lets 127/8 sources leave lo; only DNATed NodePort traffic may
        t.filter(
            "KUBE-PROXY-FIREWALL",
            format!(
                "{} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
                comment("block incoming localnet connections")
            ),
        );
    }
}

/// The last rule of nat KUBE-SERVICES: traffic to the node's own addresses tries the
/// NodePorts.
fn node_ports_jump(t: &mut Tables, cfg: &Config) {
    let text = comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain");
    if cfg.nodeport_addresses.is_empty() {
        t.nat("KUBE-SERVICES", format!("{text} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
    }
    for net in &cfg.nodeport_addresses {
        t.nat("KUBE-SERVICES", format!("{text} -d {net} -j KUBE-NODEPORTS"));
    }
}

/// REJECT when the service port has no usable endpoints at all, DROP when it has some
/// but none a Local policy may use (as upstream).
fn no_endpoints_target(any: bool) -> (&'static str, &'static str) {
    if any { ("has no local endpoints", "DROP") } else { ("has no endpoints", "REJECT") }
}

fn service_port(t: &mut Tables, sp: &ServicePort, cfg: &Config) {
    let key = sp.key();
    let n = names(sp);
    let eps = categorize(sp, &cfg.node);
    let (internal, external) = (eps.internal(sp), eps.external(sp));
    let any = !eps.cluster.is_empty();
    let cluster_dest = sp.cluster_ip.map(|ip| format!("-d {ip}/32 {}", dport(sp, sp.port)));
    if let Some(dest) = &cluster_dest {
        if internal.is_empty() {
            let (why, target) = no_endpoints_target(any);
            t.filter("KUBE-SERVICES", format!("{} {dest} -j {target}", comment(&format!("{key} {why}"))));
        } else {
            let chain = if sp.internal_local { &n.svl } else { &n.svc };
            t.nat("KUBE-SERVICES", format!("{} {dest} -j {chain}", comment(&format!("{key} cluster IP"))));
        }
    }
    external_entries(t, sp, &n, external, any);
    if any {
        if let Some(dest) = &cluster_dest {
            masquerade_rule(t, &n.svc, dest, &key, cfg);
        }
        balance(t, &n.svc, sp, &eps.cluster);
    }
    if (sp.internal_local || sp.external_local) && !eps.local.is_empty() {
        balance(t, &n.svl, sp, &eps.local);
    }
    if !external.is_empty() && (sp.node_port.is_some() || !sp.external_ips.is_empty()) {
        ext_chain(t, sp, &n, cfg);
    }
    for ep in eps.cluster.iter().chain(&eps.local) {
        sep(t, sp, ep);
    }
}

/// Off-cluster sources reaching the ClusterIP are masqueraded (all of them with
/// `--masquerade-all`), so replies come back through this node.
fn masquerade_rule(t: &mut Tables, chain: &str, dest: &str, key: &str, cfg: &Config) {
    let text = comment(&format!("{key} cluster IP"));
    if cfg.masquerade_all {
        t.nat(chain, format!("{text} {dest} -j KUBE-MARK-MASQ"));
    } else if let Some(cidr) = cfg.cluster_cidr {
        t.nat(chain, format!("{text} ! -s {cidr} {dest} -j KUBE-MARK-MASQ"));
    }
}

/// NodePort and external-IP entries (nat) or their rejection (filter).
fn external_entries(t: &mut Tables, sp: &ServicePort, n: &Names, external: &[&Endpoint], any: bool) {
    let key = sp.key();
    let (why, target) = no_endpoints_target(any);
    for ip in &sp.external_ips {
        let dest = format!("-d {ip}/32 {}", dport(sp, sp.port));
        if external.is_empty() {
            t.filter("KUBE-EXTERNAL-SERVICES", format!("{} {dest} -j {target}", comment(&format!("{key} {why}"))));
        } else {
            t.nat("KUBE-SERVICES", format!("{} {dest} -j {}", comment(&format!("{key} external IP")), n.ext));
        }
    }
    if let Some(np) = sp.node_port {
        if external.is_empty() {
            let rule = format!(
                "{} -m addrtype --dst-type LOCAL {} -j {target}",
                comment(&format!("{key} {why}")),
                dport(sp, np)
            );
            t.filter("KUBE-EXTERNAL-SERVICES", rule);
        } else {
            t.nat("KUBE-NODEPORTS", format!("{} {} -j {}", comment(&key), dport(sp, np), n.ext));
        }
    }
}

/// KUBE-EXT-<hash>: masquerade and go to all endpoints (Cluster policy), or keep the
/// client's address and go to the local ones (Local policy; pods and the node itself
/// still reach every endpoint, as upstream).
fn ext_chain(t: &mut Tables, sp: &ServicePort, n: &Names, cfg: &Config) {
    let key = sp.key();
    if !sp.external_local {
        t.nat(
            &n.ext,
            format!("{} -j KUBE-MARK-MASQ", comment(&format!("masquerade traffic for {key} external destinations"))),
        );
        t.nat(&n.ext, format!("-j {}", n.svc));
        return;
    }
    if let Some(cidr) = cfg.cluster_cidr {
        t.nat(
            &n.ext,
            format!("{} -s {cidr} -j {}", comment(&format!("pod traffic for {key} external destinations")), n.svc),
        );
    }
    t.nat(
        &n.ext,
        format!(
            "{} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
            comment(&format!("masquerade LOCAL traffic for {key} external destinations"))
        ),
    );
    t.nat(
        &n.ext,
        format!(
            "{} -m addrtype --src-type LOCAL -j {}",
            comment(&format!("route LOCAL traffic for {key} external destinations")),
            n.svc
        ),
    );
    t.nat(&n.ext, format!("-j {}", n.svl));
}

/// Affinity checks, then a random pick: endpoint i of n is taken with probability
/// 1/(n-i) among what is left, so each gets 1/n overall.
fn balance(t: &mut Tables, chain: &str, sp: &ServicePort, eps: &[&Endpoint]) {
    t.nat.entry(chain.to_string()).or_default();
    let key = sp.key();
    if let Some(seconds) = sp.affinity_seconds {
        for ep in eps {
            let sep = sep_chain(sp, ep);
            let text = t.endpoint_comment(&format!("{key} -> {}:{}", ep.ip, ep.port));
            t.nat(chain, format!("{text}-m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {seconds} --reap -j {sep}"));
        }
    }
    let count = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = sep_chain(sp, ep);
        let text = t.endpoint_comment(&format!("{key} -> {}:{}", ep.ip, ep.port));
        if i + 1 == count {
            t.nat(chain, format!("{text}-j {sep}"));
        } else {
            let p = 1.0 / (count - i) as f64;
            t.nat(chain, format!("{text}-m statistic --mode random --probability {p:.10} -j {sep}"));
        }
    }
}

fn sep(t: &mut Tables, sp: &ServicePort, ep: &Endpoint) {
    let chain = sep_chain(sp, ep);
    if t.nat.contains_key(&chain) {
        return;
    }
    let text = t.endpoint_comment(&sp.key());
    // hairpin: an endpoint reaching itself through the service must see the node's address
    t.nat(&chain, format!("{text}-s {}/32 -j KUBE-MARK-MASQ", ep.ip));
    let recent = match sp.affinity_seconds {
        Some(_) => format!(" -m recent --name {chain} --mask 255.255.255.255 --rsource --set"),
        None => String::new(),
    };
    t.nat(
        &chain,
        format!("{text} -p {p} -m {p}{recent} -j DNAT --to-destination {}:{}", ep.ip, ep.port, p = sp.protocol),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(ip: &str, node: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 8080,
            node: Some(node.into()),
            ready,
            serving: ready,
            terminating: false,
        }
    }

    fn sp(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "ns".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: "tcp",
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 5)),
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_seconds: None,
            internal_local: false,
            external_local: false,
            endpoints,
        }
    }

    fn cfg() -> Config {
        Config { node: "a".into(), cluster_cidr: "10.244.0.0/16".parse().ok(), ..Config::default() }
    }

    fn chain<'a>(t: &'a Chains, prefix: &str) -> (&'a String, &'a Vec<String>) {
        t.iter().find(|(k, _)| k.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} chain in {t:#?}"))
    }

    #[test]
    fn chain_names_are_upstreams_hash() {
        // the stem is sha256 of "ns/web:httptcp", base32, 16 characters
        let h = hash("ns/web:httptcp");
        assert_eq!(h.len(), 16);
        assert!(h.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(h, hash("ns/web:httptcp"));
        assert_ne!(h, hash("ns/web:httpudp"));
    }

    #[test]
    fn cluster_ip_balances_ready_endpoints_only() {
        let t = build(
            &[sp(vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", false), ep("10.1.0.3", "b", true)])],
            &cfg(),
        );
        let (svc, rules) = chain(&t.nat, "KUBE-SVC-");
        assert!(t.nat["KUBE-SERVICES"][0].contains(&format!("-d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j {svc}")));
        assert!(rules[0].contains("! -s 10.244.0.0/16 -d 10.96.0.5/32") && rules[0].ends_with("-j KUBE-MARK-MASQ"));
        assert_eq!(rules.len(), 3, "masquerade + two endpoints: {rules:#?}");
        assert!(rules[1].contains("10.1.0.1:8080") && rules[1].contains("--probability 0.5000000000"));
        assert!(rules[2].contains("10.1.0.3:8080") && !rules[2].contains("statistic"));
        let seps: Vec<_> = t.nat.keys().filter(|k| k.starts_with("KUBE-SEP-")).collect();
        assert_eq!(seps.len(), 2);
        let dnat = &t.nat[seps[0]];
        assert!(dnat[0].contains("-s 10.1.0.") && dnat[1].contains("-j DNAT --to-destination 10.1.0."));
        assert!(t.filter["KUBE-SERVICES"].is_empty());
        assert!(t.nat["KUBE-SERVICES"].last().unwrap().contains("--dst-type LOCAL -j KUBE-NODEPORTS"));
    }

    #[test]
    fn no_ready_endpoints_rejects_in_filter() {
        let mut p = sp(vec![ep("10.1.0.2", "b", false)]);
        p.node_port = Some(31111);
        let t = build(&[p], &cfg());
        assert!(!t.nat.keys().any(|k| k.starts_with("KUBE-SVC-") || k.starts_with("KUBE-SEP-")));
        let reject = &t.filter["KUBE-SERVICES"];
        assert_eq!(reject.len(), 1);
        assert!(reject[0].contains("ns/web:http has no endpoints") && reject[0].ends_with("-j REJECT"));
        let ext = &t.filter["KUBE-EXTERNAL-SERVICES"];
        assert!(ext[0].contains("--dst-type LOCAL -p tcp -m tcp --dport 31111 -j REJECT"), "{ext:?}");
        assert!(t.nat["KUBE-NODEPORTS"].is_empty());
    }

    #[test]
    fn affinity_checks_recent_before_the_random_pick() {
        let mut p = sp(vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "a", true)]);
        p.affinity_seconds = Some(60);
        let t = build(&[p], &cfg());
        let (_, rules) = chain(&t.nat, "KUBE-SVC-");
        assert!(rules[1].contains("-m recent --name KUBE-SEP-") && rules[1].contains("--rcheck --seconds 60 --reap"));
        assert!(rules[2].contains("--rcheck") && rules[3].contains("statistic"));
        let (_, sep) = chain(&t.nat, "KUBE-SEP-");
        assert!(sep[1].contains("--rsource --set -j DNAT"));
    }

    #[test]
    fn node_port_cluster_policy_masquerades_through_ext() {
        let mut p = sp(vec![ep("10.1.0.1", "b", true)]);
        p.node_port = Some(31111);
        let t = build(&[p], &cfg());
        let (ext, rules) = chain(&t.nat, "KUBE-EXT-");
        assert!(t.nat["KUBE-NODEPORTS"][0].ends_with(&format!("-p tcp -m tcp --dport 31111 -j {ext}")));
        assert!(rules[0].ends_with("-j KUBE-MARK-MASQ") && rules[1].starts_with(&format!("-A {ext} -j KUBE-SVC-")));
    }

    #[test]
    fn external_local_goes_to_local_endpoints_or_drops() {
        let mut p = sp(vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", true)]);
        p.node_port = Some(31111);
        p.external_local = true;
        let t = build(&[p.clone()], &cfg());
        let (_, svl) = chain(&t.nat, "KUBE-SVL-");
        assert_eq!(svl.len(), 1);
        assert!(svl[0].contains("10.1.0.1:8080"));
        let (_, ext) = chain(&t.nat, "KUBE-EXT-");
        assert!(ext.last().unwrap().contains("-j KUBE-SVL-") && ext[0].contains("-s 10.244.0.0/16"));
        // on a node with no local endpoint external traffic is dropped, cluster traffic not
        let t = build(&[p], &Config { node: "c".into(), ..cfg() });
        assert!(t.filter["KUBE-EXTERNAL-SERVICES"][0].contains("has no local endpoints"));
        assert!(t.filter["KUBE-EXTERNAL-SERVICES"][0].ends_with("-j DROP"));
        assert!(t.filter["KUBE-SERVICES"].is_empty());
        assert!(!t.nat.keys().any(|k| k.starts_with("KUBE-EXT-")));
    }

    #[test]
    fn internal_local_uses_svl_for_the_cluster_ip() {
        let mut p = sp(vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", true)]);
        p.internal_local = true;
        let t = build(&[p.clone()], &cfg());
        let (svl, rules) = chain(&t.nat, "KUBE-SVL-");
        assert!(t.nat["KUBE-SERVICES"][0].ends_with(&format!("-j {svl}")));
        assert!(rules.iter().any(|r| r.contains("10.1.0.1:8080")) && !rules.iter().any(|r| r.contains("10.1.0.2")));
        let t = build(&[p], &Config { node: "c".into(), ..cfg() });
        assert!(t.filter["KUBE-SERVICES"][0].ends_with("-j DROP"));
    }

    #[test]
    fn large_clusters_drop_per_endpoint_comments() {
        let eps = |n: usize| (0..n).map(|i| ep(&format!("10.1.{}.{}", i / 200, i % 200), "a", true)).collect();
        let small = build(&[sp(eps(2))], &cfg());
        let (_, sep) = chain(&small.nat, "KUBE-SEP-");
        assert!(sep[0].contains("--comment"));
        let large = build(&[sp(eps(1001))], &cfg());
        let (_, sep) = chain(&large.nat, "KUBE-SEP-");
        assert!(!sep[0].contains("--comment") && sep[0].contains("-s 10.1."), "{sep:?}");
        assert!(large.nat["KUBE-SERVICES"][0].contains("--comment"), "service rules keep theirs");
    }

    #[test]
    fn incremental_build_equals_a_full_build() {
        let cfg = cfg();
        let port = |name: &str, eps: Vec<Endpoint>, node_port: Option<u16>| ServicePort {
            name: name.into(),
            node_port,
            ..sp(eps)
        };
        let mut state = vec![
            port("a", vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", true)], Some(31000)),
            port("b", vec![ep("10.1.1.1", "a", true)], None),
            port("c", vec![ep("10.1.2.1", "b", false)], Some(31002)),
        ];
        let mut builder = Builder::default();
        assert_eq!(builder.build(&state, &cfg), build(&state, &cfg));
        assert_eq!(builder.rebuilt, 3);
        // one endpoint replaced, one service gone, one added
        state[0].endpoints[1] = ep("10.1.0.3", "b", true);
        state.remove(1);
        state.push(port("d", vec![ep("10.1.3.1", "a", true)], Some(31003)));
        assert_eq!(builder.build(&state, &cfg), build(&state, &cfg));
        assert_eq!(builder.rebuilt, 2, "only the changed and the new port are built");
        assert_eq!(builder.build(&state, &cfg), build(&state, &cfg));
        assert_eq!(builder.rebuilt, 0);
    }

    #[test]
    fn masquerade_all_and_nodeport_addresses() {
        let mut p = sp(vec![ep("10.1.0.1", "a", true)]);
        p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
        let c = Config {
            masquerade_all: true,
            nodeport_addresses: vec!["192.168.5.0/24".parse().unwrap()],
            localhost_nodeports: true,
            ..cfg()
        };
        let t = build(&[p], &c);
        let (_, rules) = chain(&t.nat, "KUBE-SVC-");
        assert!(rules[0].contains("-d 10.96.0.5/32") && !rules[0].contains("! -s"));
        let services = &t.nat["KUBE-SERVICES"];
        assert!(services.iter().any(|r| r.contains("-d 192.0.2.1/32") && r.contains("-j KUBE-EXT-")));
        assert!(services.last().unwrap().ends_with("-d 192.168.5.0/24 -j KUBE-NODEPORTS"));
        assert_eq!(t.filter["KUBE-PROXY-FIREWALL"].len(), 1);
    }
}
