//! The nftables mode's vocabulary: the commands one sync sends and the rules and set
//! elements of service chains, as values. Each prints as the `nft -f` line it stands
//! for (`Display`), and `nft_netlink` encodes the same values as netlink messages, so
//! the two ways of applying a transaction write the same table.

use std::fmt::{self, Display, Formatter};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::nft_rules::TABLE;

/// The chain every masquerade decision jumps to.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";

/// Where a rule or map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Goto(String),
    Jump(String),
    Drop,
}

impl Display for Verdict {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

/// The rules service chains hold (the fixed chains' rules stay text: only full syncs,
/// which always go through `nft`, write them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `ip daddr IP PROTO dport PORT [ip saddr != CIDR] jump mark-for-masquerade`
    MasqueradeTo { ip: Ipv4Addr, protocol: &'static str, port: u16, unless_from: Option<Ipv4Net> },
    /// A bare verdict: `jump mark-for-masquerade`, `goto CHAIN`.
    Always(Verdict),
    /// `ip saddr CIDR goto CHAIN comment "…"`
    FromGoto { cidr: Ipv4Net, chain: String, comment: String },
    /// `fib saddr type local VERDICT comment "…"`: the source is this host.
    FromLocal { verdict: Verdict, comment: String },
    /// `ip saddr @SET goto CHAIN`: a client seen within the affinity timeout.
    Affinity { set: String, chain: String },
    /// `numgen random mod N vmap @MAP`: a uniform pick over N endpoint chains.
    Pick { n: usize, vmap: String },
    /// `ip saddr IP jump mark-for-masquerade`: an endpoint reaching itself.
    Hairpin { ip: Ipv4Addr },
    /// `update @SET { ip saddr }`: remember the client for affinity.
    Remember { set: String },
    /// `meta l4proto PROTO dnat to IP:PORT`
    Dnat { protocol: &'static str, ip: Ipv4Addr, port: u16 },
}

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Rule::MasqueradeTo { ip, protocol, port, unless_from } => {
                write!(f, "ip daddr {ip} {protocol} dport {port} ")?;
                if let Some(cidr) = unless_from {
                    write!(f, "ip saddr != {cidr} ")?;
                }
                write!(f, "jump {MARK_FOR_MASQUERADE}")
            }
            Rule::Always(v) => write!(f, "{v}"),
            Rule::FromGoto { cidr, chain, comment } => write!(f, "ip saddr {cidr} goto {chain} comment \"{comment}\""),
            Rule::FromLocal { verdict, comment } => write!(f, "fib saddr type local {verdict} comment \"{comment}\""),
            Rule::Affinity { set, chain } => write!(f, "ip saddr @{set} goto {chain}"),
            Rule::Pick { n, vmap } => write!(f, "numgen random mod {n} vmap @{vmap}"),
            Rule::Hairpin { ip } => write!(f, "ip saddr {ip} jump {MARK_FOR_MASQUERADE}"),
            Rule::Remember { set } => write!(f, "update @{set} {{ ip saddr }}"),
            Rule::Dnat { protocol, ip, port } => write!(f, "meta l4proto {protocol} dnat to {ip}:{port}"),
        }
    }
}

/// A set or map key, in the shapes our sets and maps are typed with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `ipv4_addr` (cluster-ips)
    Ip(Ipv4Addr),
    /// `ipv4_addr . inet_proto . inet_service` (service-ips, no-endpoint-services)
    Service(Ipv4Addr, &'static str, u16),
    /// `inet_proto . inet_service` (service-nodeports, no-endpoint-nodeports)
    NodePort(&'static str, u16),
    /// `numgen random mod 1` (an endpoint-picking map)
    Index(u32),
}

impl Display for Key {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ip(ip) => write!(f, "{ip}"),
            Key::Service(ip, protocol, port) => write!(f, "{ip} . {protocol} . {port}"),
            Key::NodePort(protocol, port) => write!(f, "{protocol} . {port}"),
            Key::Index(i) => write!(f, "{i}"),
        }
    }
}

/// One element of a set or map: the verdict (maps only) and comment are its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Key,
    pub value: Option<Verdict>,
    pub comment: Option<String>,
}

impl Display for Element {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        if let Some(v) = &self.value {
            write!(f, " : {v}")?;
        }
        Ok(())
    }
}

/// One command of a transaction, each on our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A line only `nft` takes (the table, base chains, typed maps and fixed rules of a
    /// full sync). These come first in a transaction and refer only to each other.
    Text(String),
    AddChain(String),
    FlushChain(String),
    DeleteChain(String),
    AddRule {
        chain: String,
        rule: Rule,
    },
    /// An affinity set: client addresses that time out after `seconds`.
    AddAffinitySet {
        name: String,
        seconds: u32,
    },
    DeleteSet(String),
    /// An endpoint-picking map (`numgen random mod 1 : verdict`).
    AddVmap(String),
    /// Empty a map (an endpoint-picking one or a shared one) or a set of ours.
    FlushMap(String),
    FlushSet(String),
    DeleteVmap(String),
    AddElements {
        set: String,
        elements: Vec<Element>,
    },
    DeleteElement {
        set: String,
        key: Key,
    },
}

impl Display for Op {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Op::Text(line) => f.write_str(line),
            Op::AddChain(name) => write!(f, "add chain {TABLE} {name}"),
            Op::FlushChain(name) => write!(f, "flush chain {TABLE} {name}"),
            Op::DeleteChain(name) => write!(f, "delete chain {TABLE} {name}"),
            Op::AddRule { chain, rule } => write!(f, "add rule {TABLE} {chain} {rule}"),
            Op::AddAffinitySet { name, seconds } => {
                write!(f, "add set {TABLE} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {seconds}s ; }}")
            }
            Op::DeleteSet(name) => write!(f, "delete set {TABLE} {name}"),
            Op::AddVmap(name) => write!(f, "add map {TABLE} {name} {{ typeof numgen random mod 1 : verdict ; }}"),
            Op::FlushMap(name) => write!(f, "flush map {TABLE} {name}"),
            Op::FlushSet(name) => write!(f, "flush set {TABLE} {name}"),
            Op::DeleteVmap(name) => write!(f, "delete map {TABLE} {name}"),
            Op::AddElements { set, elements } => {
                write!(f, "add element {TABLE} {set} {{ ")?;
                for (i, e) in elements.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{e}")?;
                }
                f.write_str(" }")
            }
            Op::DeleteElement { set, key } => write!(f, "delete element {TABLE} {set} {{ {key} }}"),
        }
    }
}
