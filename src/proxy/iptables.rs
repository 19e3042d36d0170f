//! The applier: writes the builder's chains with one `iptables-restore --noflush` per
//! sync. Only the proxy's own chains are named in it (a chain named in a restore is
//! flushed and refilled), so other rules on the host stay, and nothing is flushed on
//! start: conntrack keeps established flows on their endpoints across restarts.
//! After the first (full) sync only the chains whose rules changed are written, which
//! keeps one endpoint change among thousands of services cheap; stale per-service
//! chains are flushed and deleted in the same transaction that drops the jumps to them.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::rules::{Chains, SERVICE_CHAIN_PREFIXES, Tables};

/// One jump from a built-in chain into ours.
struct Jump {
    table: &'static str,
    chain: &'static str,
    /// Only for the first packet of a connection (`--ctstate NEW`).
    new_only: bool,
    comment: &'static str,
    target: &'static str,
}

const fn jump(
    table: &'static str,
    chain: &'static str,
    new_only: bool,
    comment: &'static str,
    target: &'static str,
) -> Jump {
    Jump { table, chain, new_only, comment, target }
}

const PORTALS: &str = "kubernetes service portals";
const EXTERNAL: &str = "kubernetes externally-visible service portals";
const FIREWALL: &str = "kubernetes load balancer firewall";

/// The jumps from the built-in chains into ours, as upstream's.
const JUMPS: [Jump; 10] = [
    jump("nat", "PREROUTING", false, PORTALS, "KUBE-SERVICES"),
    jump("nat", "OUTPUT", false, PORTALS, "KUBE-SERVICES"),
    jump("nat", "POSTROUTING", false, "kubernetes postrouting rules", "KUBE-POSTROUTING"),
    jump("filter", "INPUT", true, EXTERNAL, "KUBE-EXTERNAL-SERVICES"),
    jump("filter", "INPUT", true, FIREWALL, "KUBE-PROXY-FIREWALL"),
    jump("filter", "FORWARD", false, "kubernetes forwarding rules", "KUBE-FORWARD"),
    jump("filter", "FORWARD", true, PORTALS, "KUBE-SERVICES"),
    jump("filter", "FORWARD", true, EXTERNAL, "KUBE-EXTERNAL-SERVICES"),
    jump("filter", "OUTPUT", true, PORTALS, "KUBE-SERVICES"),
    jump("filter", "OUTPUT", true, FIREWALL, "KUBE-PROXY-FIREWALL"),
];

/// The top-level chains the proxy owns (and `--cleanup` deletes).
const OWN_CHAINS: [&str; 7] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
];

/// A jump's rule as iptables arguments.
fn jump_rule(j: &Jump) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if j.new_only {
        out.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
    }
    out.extend(["-m", "comment", "--comment", j.comment, "-j", j.target].map(String::from));
    out
}

fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What one sync did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Applied {
    pub chains_written: usize,
    pub chains_deleted: usize,
    pub bytes: usize,
    pub took: Duration,
    /// What wrote it: `iptables-restore`, `nft` or `netlink`.
    pub via: &'static str,
}

/// The restore input for one table: declarations (which flush) of the changed and
/// stale chains, the changed chains' rules, and the deletion of the stale ones.
fn table_text(
    out: &mut String,
    table: &str,
    desired: &Chains,
    previous: Option<&Chains>,
    stale: &BTreeSet<String>,
) -> (usize, usize) {
    let changed: Vec<&String> =
        desired.iter().filter(|(c, r)| previous.and_then(|p| p.get(*c)) != Some(*r)).map(|(c, _)| c).collect();
    let stale: Vec<&String> = stale.iter().filter(|c| !desired.contains_key(*c)).collect();
    out.push_str(&format!("*{table}\n"));
    for chain in changed.iter().chain(&stale) {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for chain in &changed {
        for rule in &desired[*chain] {
            out.push_str(rule);
            out.push('\n');
        }
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    (changed.len(), stale.len())
}

/// The whole restore input: `previous` is what the last successful sync wrote (None
/// for a full rewrite); `existing` the per-service chains that may be stale, per table.
pub fn restore_text(
    desired: &Tables,
    previous: Option<&Tables>,
    existing: &(BTreeSet<String>, BTreeSet<String>),
) -> (String, Applied) {
    let mut text = String::with_capacity(desired.rule_count() * 120);
    let (nw, nd) = table_text(&mut text, "nat", &desired.nat, previous.map(|p| &p.nat), &existing.0);
    let (fw, fd) = table_text(&mut text, "filter", &desired.filter, previous.map(|p| &p.filter), &existing.1);
    let applied = Applied {
        chains_written: nw + fw,
        chains_deleted: nd + fd,
        bytes: text.len(),
        took: Duration::ZERO,
        via: "iptables-restore",
    };
    (text, applied)
}

/// Chain names in `iptables-save` output that pass `keep`.
fn chains_in(save: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| keep(c))
        .map(str::to_string)
        .collect()
}

fn save(table: &str) -> anyhow::Result<String> {
    let out = Command::new("iptables-save").args(["-t", table]).output().context("running iptables-save")?;
    if !out.status.success() {
        bail!("iptables-save -t {table}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn restore(text: &str) -> anyhow::Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running iptables-restore")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).context("writing to iptables-restore")?;
    }
    let out = child.wait_with_output().context("waiting for iptables-restore")?;
    if !out.status.success() {
        bail!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn iptables(table: &str, op: &str, chain: &str, rule: &[String]) -> anyhow::Result<bool> {
    let status = Command::new("iptables")
        .args(["--wait", "-t", table, op, chain])
        .args(rule)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running iptables")?;
    Ok(status.success())
}

/// Whether every jump from the built-in chains to ours is still there (they go when
/// someone flushes a table, and with them every rule of ours).
pub fn intact() -> anyhow::Result<bool> {
    for j in &JUMPS {
        if !iptables(j.table, "-C", j.chain, &jump_rule(j))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Make sure the built-in chains jump to ours (checked, then inserted at the top).
fn ensure_jumps() -> anyhow::Result<()> {
    for j in &JUMPS {
        let rule = jump_rule(j);
        if !iptables(j.table, "-C", j.chain, &rule)? && !iptables(j.table, "-I", j.chain, &rule)? {
            bail!("cannot add the jump from {} {} to {}", j.table, j.chain, j.target);
        }
    }
    Ok(())
}

#[derive(Default)]
pub struct Applier {
    /// What the last successful sync left in place; None forces a full rewrite.
    applied: Option<Tables>,
}

impl Applier {
    /// Write `desired`: everything when `full` (or after a failure), else only changes.
    pub fn sync(&mut self, desired: Tables, full: bool) -> anyhow::Result<Applied> {
        let start = Instant::now();
        let previous = self.applied.take().filter(|_| !full);
        let existing = match &previous {
            Some(p) => (
                p.nat.keys().filter(|c| is_service_chain(c)).cloned().collect(),
                p.filter.keys().filter(|c| is_service_chain(c)).cloned().collect(),
            ),
            None => (chains_in(&save("nat")?, is_service_chain), chains_in(&save("filter")?, is_service_chain)),
        };
        let (text, mut applied) = restore_text(&desired, previous.as_ref(), &existing);
        restore(&text)?;
        if previous.is_none() {
            ensure_jumps()?;
        }
        applied.took = start.elapsed();
        self.applied = Some(desired);
        Ok(applied)
    }
}

/// `--cleanup`: remove the jumps and every chain the proxy made.
pub fn cleanup() -> anyhow::Result<()> {
    for j in &JUMPS {
        let rule = jump_rule(j);
        while iptables(j.table, "-D", j.chain, &rule)? {}
    }
    let ours = |c: &str| is_service_chain(c) || OWN_CHAINS.contains(&c);
    let mut text = String::new();
    for table in ["nat", "filter"] {
        let chains = chains_in(&save(table)?, ours);
        table_text(&mut text, table, &Chains::new(), None, &chains);
    }
    restore(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(nat: &[(&str, &[&str])]) -> Tables {
        let nat = nat.iter().map(|(c, r)| (c.to_string(), r.iter().map(|s| s.to_string()).collect())).collect();
        let mut t = Tables::default();
        t.nat = nat;
        t
    }

    #[test]
    fn full_text_declares_and_writes_everything_and_deletes_stale_chains() {
        let desired = tables(&[("KUBE-SERVICES", &["-A KUBE-SERVICES -j KUBE-SVC-A"]), ("KUBE-SVC-A", &[])]);
        let existing = (BTreeSet::from(["KUBE-SVC-A".to_string(), "KUBE-SEP-OLD".to_string()]), BTreeSet::new());
        let (text, applied) = restore_text(&desired, None, &existing);
        assert_eq!(
            text,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-OLD - [0:0]\n\
             -A KUBE-SERVICES -j KUBE-SVC-A\n-X KUBE-SEP-OLD\nCOMMIT\n*filter\nCOMMIT\n"
        );
        assert_eq!((applied.chains_written, applied.chains_deleted), (2, 1));
    }

    #[test]
    fn partial_text_writes_only_changed_chains() {
        let before = tables(&[
            ("KUBE-SERVICES", &["-A KUBE-SERVICES -j KUBE-SVC-A"]),
            ("KUBE-SVC-A", &["-A KUBE-SVC-A -j KUBE-SEP-1"]),
            ("KUBE-SEP-1", &["x"]),
        ]);
        let after = tables(&[
            ("KUBE-SERVICES", &["-A KUBE-SERVICES -j KUBE-SVC-A"]),
            ("KUBE-SVC-A", &["-A KUBE-SVC-A -j KUBE-SEP-2"]),
            ("KUBE-SEP-2", &["y"]),
        ]);
        let existing = (before.nat.keys().filter(|c| is_service_chain(c)).cloned().collect(), BTreeSet::new());
        let (text, _) = restore_text(&after, Some(&before), &existing);
        assert_eq!(
            text,
            "*nat\n:KUBE-SEP-2 - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-1 - [0:0]\ny\n-A KUBE-SVC-A -j KUBE-SEP-2\n-X KUBE-SEP-1\nCOMMIT\n*filter\nCOMMIT\n"
        );
    }

    #[test]
    fn save_output_chains_are_parsed() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-ABC - [0:0]\n:KUBE-SERVICES - [0:0]\n-A KUBE-SVC-ABC -j X\nCOMMIT\n";
        assert_eq!(chains_in(save, is_service_chain), BTreeSet::from(["KUBE-SVC-ABC".to_string()]));
    }
}
