use std::net::Ipv4Addr;

use super::*;

/// A model of what the kernel keeps of our table, fed the transaction text line by line
/// with nft's rules for it: a chain can be flushed or filled only if it exists, deleted
/// only when empty and unreferenced; an element is deleted only if present, and added
/// again only with the same data.
#[derive(Debug, Default, PartialEq)]
struct Sim {
    chains: BTreeMap<String, Vec<String>>,
    containers: BTreeMap<String, BTreeMap<String, String>>,
}

impl Sim {
    fn referenced(&self, name: &str) -> bool {
        let used =
            |text: &str| text.split([' ', '{', '}', ',']).any(|w| w == name || w.strip_prefix('@') == Some(name));
        self.chains.values().flatten().any(|r| used(r))
            || self.containers.values().flat_map(|m| m.values()).any(|v| used(v))
    }

    fn apply(&mut self, text: &str) -> Result<(), String> {
        for line in text.lines() {
            self.line(line).map_err(|e| format!("{line}: {e}"))?;
        }
        Ok(())
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let rest = |n: usize| line.splitn(n + 1, ' ').nth(n).unwrap_or_default().to_string();
        let words: Vec<&str> = line.split(' ').collect();
        let name = words.get(4).copied().unwrap_or_default().to_string();
        match (words[0], words[1]) {
            ("add", "table") => {}
            ("add", "chain") => {
                self.chains.entry(name).or_default();
            }
            ("flush", "chain") => self.chains.get_mut(&name).ok_or("no chain")?.clear(),
            ("add", "rule") => self.chains.get_mut(&name).ok_or("no chain")?.push(rest(5)),
            ("delete", "chain") => {
                if !self.chains.get(&name).ok_or("no chain")?.is_empty() || self.referenced(&name) {
                    return Err("chain busy".into());
                }
                self.chains.remove(&name);
            }
            ("add", "map" | "set") => {
                self.containers.entry(name).or_default();
            }
            ("flush", "map" | "set") => self.containers.get_mut(&name).ok_or("no map")?.clear(),
            ("delete", "set" | "map") => {
                if self.referenced(&name) {
                    return Err("set busy".into());
                }
                self.containers.remove(&name).ok_or("no set")?;
            }
            ("add", "element") => self.add_element(&name, &rest(5))?,
            ("delete", "element") => {
                let key = rest(5).trim_matches(['{', '}', ' ']).to_string();
                self.containers.get_mut(&name).ok_or("no map")?.remove(&key).ok_or("no element")?;
            }
            _ => return Err("unknown command".into()),
        }
        Ok(())
    }

    fn add_element(&mut self, map: &str, braced: &str) -> Result<(), String> {
        let m = self.containers.get_mut(map).ok_or("no map")?;
        for inner in braced.trim_matches(['{', '}', ' ']).split(", ") {
            let key = inner.split(" comment ").next().unwrap_or_default().split(" : ").next().unwrap_or_default();
            match m.get(key) {
                Some(old) if old != inner => return Err("element exists with other data".into()),
                _ => m.insert(key.to_string(), inner.to_string()),
            };
        }
        Ok(())
    }
}

pub(crate) fn cfg() -> Config {
    Config { node: "a".into(), cluster_cidr: Some("10.244.0.0/16".parse().unwrap()), ..Config::default() }
}

pub(crate) fn ep(ip: &str, node: &str, ready: bool) -> Endpoint {
    Endpoint { ip: ip.parse().unwrap(), port: 8080, node: Some(node.into()), ready, serving: ready, terminating: false }
}

pub(crate) fn sp(name: &str, ip: u8, endpoints: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        namespace: "ns".into(),
        name: name.into(),
        port_name: "http".into(),
        protocol: "tcp",
        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, ip)),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity_seconds: None,
        internal_local: false,
        external_local: false,
        endpoints,
    }
}

/// The table after a full sync of `ports` on an empty kernel.
fn full_state(ports: &[ServicePort]) -> Sim {
    let mut sim = Sim::default();
    let p = plan(ports.to_vec(), &cfg(), Written::default(), true, &Existing::default());
    sim.apply(&p.text).unwrap();
    sim
}

fn chain<'a>(sim: &'a Sim, prefix: &str) -> (&'a String, &'a Vec<String>) {
    sim.chains.iter().find(|(k, _)| k.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} chain: {sim:?}"))
}

#[test]
fn names_are_upstreams() {
    assert_eq!(hash_and_truncate("ns1/svc1/tcp/p80"), "ULMVA6XW-ns1/svc1/tcp/p80");
    assert_eq!(hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80"), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80");
    let long = hash_and_truncate(&"x".repeat(200));
    assert_eq!(long.len(), NAME_BASE_MAX);
    assert!(long.ends_with("..."));
}

#[test]
fn cluster_ip_spreads_over_ready_endpoint_chains() {
    let sim = full_state(&[sp(
        "web",
        5,
        vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", false), ep("10.1.0.3", "b", true)],
    )]);
    let (name, rules) = chain(&sim, "service-");
    assert!(name.ends_with("-ns/web/tcp/http"), "{name}");
    assert_eq!(rules[0], "ip daddr 10.96.0.5 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade");
    assert_eq!(rules[1], format!("numgen random mod 2 vmap @vmap-{name}"));
    let picks = &sim.containers[&format!("vmap-{name}")];
    assert_eq!(picks.len(), 2);
    assert!(picks["0"].starts_with("0 : goto endpoint-") && picks["1"].contains("__10.1.0.3/8080"), "{picks:?}");
    let (_, sep) = chain(&sim, "endpoint-");
    assert_eq!(sep, &["ip saddr 10.1.0.1 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.1.0.1:8080"]);
    assert_eq!(sim.containers["service-ips"]["10.96.0.5 . tcp . 80"], format!("10.96.0.5 . tcp . 80 : goto {name}"));
    assert!(sim.containers["cluster-ips"].contains_key("10.96.0.5"));
}

#[test]
fn no_endpoints_reject_and_no_local_endpoints_drop() {
    let mut local = sp("ext", 6, vec![ep("10.1.0.9", "b", true)]);
    local.node_port = Some(31111);
    local.external_local = true;
    let sim = full_state(&[sp("web", 5, vec![ep("10.1.0.1", "a", false)]), local]);
    let no = &sim.containers["no-endpoint-services"]["10.96.0.5 . tcp . 80"];
    assert_eq!(no, "10.96.0.5 . tcp . 80 comment \"ns/web:http has no endpoints\" : goto reject-chain");
    let np = &sim.containers["no-endpoint-nodeports"]["tcp . 31111"];
    assert_eq!(np, "tcp . 31111 comment \"ns/ext:http has no local endpoints\" : drop");
    // the external chain still short-circuits pods and the node to every endpoint
    let (_, ext) = chain(&sim, "external-");
    assert!(ext[0].starts_with("ip saddr 10.244.0.0/16 goto service-") && ext.len() == 3, "{ext:?}");
    assert!(!sim.chains.keys().any(|c| c.starts_with("local-")));
}

#[test]
fn affinity_uses_per_endpoint_sets() {
    let mut p = sp("sticky", 7, vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "a", true)]);
    p.affinity_seconds = Some(60);
    let plan = plan(vec![p], &cfg(), Written::default(), true, &Existing::default());
    assert_eq!(plan.text.matches("flags dynamic,timeout ; timeout 60s").count(), 2, "{}", plan.text);
    let mut sim = Sim::default();
    sim.apply(&plan.text).unwrap();
    let (_, svc) = chain(&sim, "service-");
    assert!(svc[1].starts_with("ip saddr @affinity-") && svc[1].contains(" goto endpoint-"), "{svc:?}");
    let (_, sep) = chain(&sim, "endpoint-");
    assert!(sep[1].starts_with("update @affinity-") && sep[1].ends_with(" { ip saddr }"), "{sep:?}");
}

#[test]
fn node_port_addresses_and_localhost() {
    let c = Config { nodeport_addresses: vec!["192.168.5.0/24".parse().unwrap()], ..cfg() };
    assert_eq!(node_port_match(&c), "ip daddr { 192.168.5.0/24 }");
    assert_eq!(node_port_match(&cfg()), "fib daddr type local ip daddr != 127.0.0.0/8");
    let local = Config { localhost_nodeports: true, ..cfg() };
    assert_eq!(node_port_match(&local), "fib daddr type local");
    assert!(flag_rules(&local).iter().any(|(c, r)| *c == "filter-input" && r.contains("127.0.0.0/8")));
}

/// Applying a partial plan on top of the previous state gives the same table as a full
/// sync of the new state, and writes only what changed.
#[test]
fn incremental_plan_equals_a_full_sync() {
    let mut np = sp("np", 2, vec![ep("10.1.1.1", "a", true), ep("10.1.1.2", "b", true)]);
    np.node_port = Some(31000);
    np.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    let mut sticky = sp("sticky", 3, vec![ep("10.1.2.1", "a", true), ep("10.1.2.2", "a", true)]);
    sticky.affinity_seconds = Some(30);
    let mut state = vec![sp("web", 1, vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", true)]), np, sticky];
    let mut sim = Sim::default();
    let first = plan(state.clone(), &cfg(), Written::default(), true, &Existing::default());
    sim.apply(&first.text).unwrap();
    let mut written = first.next;
    let steps: [fn(&mut Vec<ServicePort>); 4] = [
        |s| s[0].endpoints[1] = ep("10.1.0.3", "b", true),
        |s| {
            s.remove(2);
            s[1].external_local = true;
        },
        |s| s[0].endpoints.clear(),
        |s| s.push(sp("new", 9, vec![ep("10.1.9.1", "a", true)])),
    ];
    for step in steps {
        step(&mut state);
        let p = plan(state.clone(), &cfg(), written, false, &Existing::default());
        assert!(!p.text.contains("flush map ip kube-proxy service-ips") && p.rebuilt <= 2, "{}", p.text);
        sim.apply(&p.text).unwrap_or_else(|e| panic!("{e}\n{}", p.text));
        assert_eq!(sim, full_state(&state), "after\n{}", p.text);
        written = p.next;
    }
    let unchanged = plan(state.clone(), &cfg(), written, false, &Existing::default());
    assert_eq!((unchanged.text.as_str(), unchanged.rebuilt), ("", 0));
}

/// A full sync over a table that holds chains and sets nobody wants any more deletes
/// them in the same transaction, after the maps that pointed at them are flushed.
#[test]
fn full_sync_deletes_what_it_finds_stale() {
    let mut old = sp("old", 4, vec![ep("10.1.4.1", "a", true)]);
    old.affinity_seconds = Some(10);
    let kept = sp("kept", 5, vec![ep("10.1.5.1", "a", true)]);
    let mut sim = full_state(&[old, kept.clone()]);
    let containers: BTreeSet<String> = sim.containers.keys().cloned().collect();
    let existing =
        Existing { chains: sim.chains.keys().cloned().collect(), sets: containers.clone(), vmaps: containers };
    let p = plan(vec![kept.clone()], &cfg(), Written::default(), true, &existing);
    sim.apply(&p.text).unwrap_or_else(|e| panic!("{e}\n{}", p.text));
    assert_eq!(sim, full_state(&[kept]));
    assert_eq!(p.chains_deleted, 2);
    assert!(p.text.contains("delete map ip kube-proxy vmap-service-"), "{}", p.text);
}
