//! The nftables mode's applier: each sync is one transaction (the kernel applies all
//! of it or none), planned by `nft_rules::plan`. It remembers what the last successful
//! sync wrote, so the next one sends only the difference; after a failure, when the
//! table is gone, or every hour, everything is written again. Only our table
//! `ip kube-proxy` is ever named, so other tables (and iptables mode's rules) stay.
//!
//! The transaction goes to the kernel as a netlink batch from this process
//! (`nft_netlink`): nft reads the list of the table's chains before running any command
//! that names a chain or map (~1 MB for 11,000 chains, 25–40 ms here) and parses text,
//! neither of which the proxy needs. Only a full sync's fixed part (the table, base
//! chains and rules, map declarations: `Op::Text`) goes through `nft -f -`, first, in a
//! transaction of its own that leaves the maps' elements alone. If the kernel refuses a
//! batch, the same commands are tried once more through `nft`.
//! `FERROKUBE_NFT_APPLY=nft` sends everything through `nft` (for comparison).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::Synced;
use super::iptables::Applied;
use super::model::ServicePort;
use super::nft_netlink;
use super::nft_ops::Op;
use super::nft_rules::{self, Existing, TABLE, Written};
use super::rules::Config;

/// Runs `nft` with `args`, `stdin` as its input; its stdout.
fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // nft repeats each failing line; the first few say what went wrong
        let head: Vec<&str> = err.lines().take(6).collect();
        bail!("nft {}: {}", args.join(" "), head.join(" | "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names declared as `<kind> NAME {` inside `table ip kube-proxy { … }` of `nft list` output.
fn names_in(listing: &str, kind: &str) -> BTreeSet<String> {
    let mut ours = false;
    let mut out = BTreeSet::new();
    for line in listing.lines() {
        if let Some(t) = line.strip_prefix("table ") {
            ours = t.trim_end_matches(" {").trim() == TABLE;
        } else if ours
            && let Some(rest) = line.trim_start().strip_prefix(kind)
            && let Some(name) = rest.strip_prefix(' ').and_then(|r| r.split_whitespace().next())
        {
            out.insert(name.to_string());
        }
    }
    out
}

/// Our chains and sets as the kernel has them (for a full sync with no memory).
fn existing() -> anyhow::Result<Existing> {
    if !table_exists()? {
        return Ok(Existing::default());
    }
    // -t (terse) leaves out the sets' elements
    let chains = names_in(&nft(&["list", "chains", "ip"], None)?, "chain");
    let sets = names_in(&nft(&["-t", "list", "sets", "ip"], None)?, "set");
    let vmaps = names_in(&nft(&["-t", "list", "maps", "ip"], None)?, "map");
    Ok(Existing { chains, sets, vmaps })
}

fn table_exists() -> anyhow::Result<bool> {
    Ok(nft(&["list", "tables", "ip"], None)?.lines().any(|l| l.trim() == format!("table {TABLE}")))
}

#[derive(Default)]
pub struct Applier {
    /// What the last successful sync left in place; None forces a full rewrite that
    /// first lists what is there.
    written: Option<Written>,
    netlink: Netlink,
}

/// The netlink socket, opened on first use.
#[derive(Default)]
enum Netlink {
    #[default]
    Unopened,
    Open(nft_netlink::Socket),
    /// Turned off, or the socket could not be opened: `nft` does all the work.
    Off,
}

impl Netlink {
    fn socket(&mut self) -> Option<&nft_netlink::Socket> {
        if matches!(self, Netlink::Unopened) {
            *self = if std::env::var("FERROKUBE_NFT_APPLY").is_ok_and(|v| v == "nft") {
                Netlink::Off
            } else {
                match nft_netlink::Socket::open() {
                    Ok(s) => Netlink::Open(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "no netfilter netlink socket; every sync runs nft");
                        Netlink::Off
                    }
                }
            };
        }
        match self {
            Netlink::Open(s) => Some(s),
            _ => None,
        }
    }
}

impl Applier {
    /// Write `ports`: everything when `full` (or after a failure), else only changes.
    pub fn sync(&mut self, ports: Vec<ServicePort>, cfg: &Config, full: bool) -> anyhow::Result<Synced> {
        let start = Instant::now();
        let previous = self.written.take();
        let full = full || previous.is_none();
        let existing = match &previous {
            Some(w) if full => w.existing(),
            Some(_) => Existing::default(),
            None => existing()?,
        };
        let plan = nft_rules::plan(ports, cfg, previous.unwrap_or_default(), full, &existing);
        let planned = start.elapsed();
        let via = if plan.ops.is_empty() { "nothing" } else { self.apply(&plan)? };
        let applied = Applied {
            chains_written: plan.chains_written,
            chains_deleted: plan.chains_deleted,
            bytes: plan.text.len(),
            took: start.elapsed() - planned,
            via,
        };
        self.written = Some(plan.next);
        Ok(Synced { applied, rebuilt: plan.rebuilt, rules: plan.rules, built: planned })
    }
}

impl Applier {
    /// The commands only `nft` takes (a full sync's table, base chains, typed maps and
    /// fixed rules) through `nft -f`, then everything else as one netlink batch; all of
    /// it through `nft` when there is no socket or the kernel refuses the batch.
    fn apply(&mut self, plan: &nft_rules::Plan) -> anyhow::Result<&'static str> {
        let (text_ops, rest): (Vec<&Op>, Vec<&Op>) = plan.ops.iter().partition(|op| matches!(op, Op::Text(_)));
        let Some((socket, batch)) =
            self.netlink.socket().and_then(|s| Some((s, nft_netlink::encode(rest.iter().copied())?)))
        else {
            nft(&["-f", "-"], Some(&plan.text))?;
            return Ok("nft");
        };
        // the fixed part refers only to itself, and it leaves the maps' elements alone:
        // until the batch lands, traffic goes by the elements and chains already there
        if !text_ops.is_empty() {
            nft(&["-f", "-"], Some(&nft_rules::text(text_ops.iter().copied())))?;
        }
        match socket.send(&batch, &rest) {
            Ok(()) if text_ops.is_empty() => Ok("netlink"),
            Ok(()) => Ok("nft+netlink"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "netlink batch refused; trying nft");
                nft(&["-f", "-"], Some(&nft_rules::text(rest.iter().copied())))?;
                Ok("nft")
            }
        }
    }
}

/// Whether our table is still there (someone may have deleted it, or flushed the ruleset).
pub fn intact() -> anyhow::Result<bool> {
    table_exists()
}

/// Whether this host can run the nftables mode (an `nft` that talks to the kernel).
pub fn available() -> bool {
    nft(&["list", "tables", "ip"], None).is_ok()
}

/// `--cleanup` (and starting in iptables mode): delete our table, if there is one.
pub fn cleanup() -> anyhow::Result<()> {
    if table_exists()? {
        nft(&["delete", "table", "ip", "kube-proxy"], None)?;
        tracing::info!("deleted the nftables table ip kube-proxy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_names_come_from_our_table_only() {
        let listing = "table ip nat {\n\tchain POSTROUTING {\n\t}\n}\ntable ip kube-proxy {\n\tchain services {\n\t}\n\
                       \tchain service-ULMVA6XW-ns1/svc1/tcp/p80 {\n\t\ttype filter hook input priority -110; policy accept;\n\t}\n}\n";
        let chains = names_in(listing, "chain");
        assert_eq!(chains.into_iter().collect::<Vec<_>>(), ["service-ULMVA6XW-ns1/svc1/tcp/p80", "services"]);
        let sets = "table ip kube-proxy {\n\tset affinity-X-a/b/tcp/__1.2.3.4/80 {\n\t\ttype ipv4_addr\n\t}\n\tmap service-ips {\n\t}\n}\n";
        assert_eq!(names_in(sets, "set").into_iter().collect::<Vec<_>>(), ["affinity-X-a/b/tcp/__1.2.3.4/80"]);
    }
}
