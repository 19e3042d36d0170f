//! `ferrokube proxy`: kube-proxy in iptables or nftables mode. Informers follow
//! Services and EndpointSlices; any change marks the state dirty and wakes the sync
//! loop, which at most once per `--iptables-min-sync-period` rebuilds the rules from the
//! whole state (`model` → `rules` or `nft_rules`, pure) and writes what changed
//! (`iptables` or `nftables`). Every `--iptables-sync-period` it also checks that the
//! rules are still hooked in and rewrites everything if not (rules someone else
//! removed); everything is rewritten anyway once an hour, as upstream.

pub mod conntrack;
mod health;
pub mod iptables;
pub mod model;
pub mod nft_netlink;
pub mod nft_ops;
pub mod nft_rules;
pub mod nftables;
pub mod rules;
mod service_health;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;

use crate::controllers::runtime::informer::{Informer, Informers};

/// The pause after a failed sync before the next (full) one.
const SYNC_RETRY: Duration = Duration::from_secs(1);
/// How often everything is rewritten when nothing asks for it (upstream's
/// `proxyutil.FullSyncPeriod`). In between, each `--iptables-sync-period` runs a partial
/// sync and checks that our rules are still in the kernel, rewriting everything if not.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// kubeconfig to reach the API server (default: in-cluster or $KUBECONFIG/~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (endpoints with this nodeName are local); default: the host name.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The pods' address range: traffic from outside it to a ClusterIP is masqueraded.
    #[arg(long)]
    pub cluster_cidr: Option<Ipv4Net>,
    /// `iptables` (upstream's default) or `nftables`.
    #[arg(long, default_value = "iptables")]
    pub proxy_mode: String,
    /// Address ranges (comma-separated CIDRs) NodePorts answer on; default: every local address.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<Ipv4Net>,
    /// Masquerade all traffic sent to ClusterIPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The least time between two syncs (changes arriving faster are batched); the
    /// nftables spelling is accepted too.
    #[arg(long, alias = "nftables-min-sync-period", default_value = "1s", value_parser = crate::apiserver::parse_go_duration)]
    pub iptables_min_sync_period: Duration,
    /// The longest time between two syncs; each also checks that the rules are still in
    /// the kernel (everything is rewritten when they are not, and every hour).
    #[arg(long, alias = "nftables-sync-period", default_value = "30s", value_parser = crate::apiserver::parse_go_duration)]
    pub iptables_sync_period: Duration,
    /// Where plain-HTTP /healthz and /livez answer (port 0: nowhere).
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: std::net::SocketAddr,
    /// Where plain-HTTP /metrics answers (port 0: nowhere).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Remove every rule and chain the proxy made, then exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// A proc file to set; the proxy works without it (a warning says so), as upstream.
fn set_sysctl(path: &str, value: &str) {
    match std::fs::write(path, value) {
        Ok(()) => tracing::info!(path, value, "set sysctl"),
        Err(e) => tracing::warn!(path, value, error = %e, "cannot set sysctl"),
    }
}

fn config(args: &ProxyArgs) -> rules::Config {
    let localhost = Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default();
    let localhost_nodeports =
        args.nodeport_addresses.is_empty() || args.nodeport_addresses.iter().any(|n| n.contains(&localhost.addr()));
    rules::Config {
        node: args.hostname_override.clone().unwrap_or_else(crate::certs::hostname),
        cluster_cidr: args.cluster_cidr,
        masquerade_all: args.masquerade_all,
        nodeport_addresses: args.nodeport_addresses.clone(),
        localhost_nodeports,
    }
}

/// The packet filter the proxy programs.
enum Backend {
    Iptables(rules::Builder, iptables::Applier),
    Nftables(nftables::Applier),
}

/// One sync's figures, whichever the backend.
pub struct Synced {
    /// Service ports whose rules were built afresh.
    pub rebuilt: usize,
    pub rules: usize,
    /// Time spent building (or planning) the rules.
    pub built: Duration,
    pub applied: iptables::Applied,
}

impl Backend {
    fn new(mode: &str) -> anyhow::Result<Backend> {
        match mode {
            "iptables" => Ok(Backend::Iptables(rules::Builder::default(), iptables::Applier::default())),
            "nftables" => Ok(Backend::Nftables(nftables::Applier::default())),
            other => bail!("--proxy-mode={other}: iptables and nftables are implemented"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Iptables(..) => "iptables",
            Backend::Nftables(_) => "nftables",
        }
    }

    /// Switching modes on a node: the other mode's rules would still catch traffic
    /// first, so they go (as upstream does); a host without the other tool has none.
    fn remove_other_mode(&self) {
        let (other, result) = match self {
            Backend::Iptables(..) => ("nftables", nftables::cleanup()),
            Backend::Nftables(_) => ("iptables", iptables::cleanup()),
        };
        if let Err(e) = result {
            tracing::warn!(mode = other, error = format!("{e:#}"), "cannot remove the other mode's rules");
        }
    }

    /// Whether the rules the last sync wrote are still hooked in (someone may have
    /// flushed the tables); false also when the check itself fails.
    fn intact(&self) -> bool {
        let checked = match self {
            Backend::Iptables(..) => iptables::intact(),
            Backend::Nftables(_) => nftables::intact(),
        };
        match checked {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(mode = self.name(), "our rules are gone from the kernel; rewriting everything");
                false
            }
            Err(e) => {
                tracing::warn!(
                    mode = self.name(),
                    error = format!("{e:#}"),
                    "cannot check our rules; rewriting everything"
                );
                false
            }
        }
    }

    fn sync(&mut self, ports: Vec<model::ServicePort>, cfg: &rules::Config, full: bool) -> anyhow::Result<Synced> {
        match self {
            Backend::Iptables(builder, applier) => {
                let start = Instant::now();
                let tables = builder.build(&ports, cfg);
                let built = start.elapsed();
                let rules = tables.rule_count();
                let applied = applier.sync(tables, full).context("writing iptables rules")?;
                Ok(Synced { rebuilt: builder.rebuilt, rules, built, applied })
            }
            Backend::Nftables(applier) => applier.sync(ports, cfg, full).context("writing nftables rules"),
        }
    }
}

/// `--cleanup`: both modes' rules go, whichever mode is named.
fn cleanup() -> anyhow::Result<()> {
    let ipt = iptables::cleanup();
    let nft = nftables::cleanup();
    // a host with only one of the tools has nothing of the other mode to remove
    match (ipt, nft) {
        (Err(a), Err(b)) => bail!("iptables: {a:#}; nftables: {b:#}"),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "cleanup of one mode failed");
            Ok(())
        }
        (Ok(()), Ok(())) => Ok(()),
    }
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mut backend = Backend::new(&args.proxy_mode)?;
    if args.cleanup {
        return cleanup();
    }
    let cfg = config(&args);
    if cfg.localhost_nodeports {
        // NodePorts on 127.0.0.1 are DNATed off the loopback interface
        set_sysctl("/proc/sys/net/ipv4/conf/all/route_localnet", "1");
    }
    // pod-to-service traffic whose reply is bridged back must pass conntrack to be un-DNATed
    if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        set_sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables", "1");
    }
    let client = crate::cli::kube_client(args.kubeconfig.as_ref(), "kube-proxy").await?;
    let informers = Informers::new(client);
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    services.on_change(move |_| w.notify_one());
    let w = wake.clone();
    slices.on_change(move |_| w.notify_one());
    let health = Arc::new(health::Health::new(args.iptables_sync_period));
    health::start(health.clone(), args.healthz_bind_address, args.metrics_bind_address);
    informers.start();
    informers.wait_synced().await;
    tracing::info!(node = cfg.node, mode = backend.name(), "informers synced; programming the packet filter");
    tokio::task::block_in_place(|| backend.remove_other_mode());
    let mut health_checks = service_health::Servers::new(health.clone());
    let sync = sync_loop(&args, &cfg, (&services, &slices), &wake, (&health, &mut health_checks), &mut backend);
    tokio::select! {
        r = sync => r,
        _ = crate::cli::shutdown_signal() => {
            // rules stay: traffic keeps flowing while the proxy is away, as upstream
            tracing::info!("shutting down; rules left in place");
            Ok(())
        }
    }
}

/// The informers the rules are built from.
type Sources<'a> = (&'a Informer<Service>, &'a Informer<EndpointSlice>);

/// What a sync leaves for the steps after it: the UDP and SCTP service ports now in
/// place (for `conntrack`) and the service health checks to serve.
struct AfterSync {
    datagram_ports: Vec<model::ServicePort>,
    health_checks: std::collections::BTreeMap<u16, service_health::Entry>,
}

/// One rebuild (of the changed service ports only) and write (of what changed).
fn sync_once(
    backend: &mut Backend,
    cfg: &rules::Config,
    (services, slices): Sources,
    full: bool,
    health: &health::Health,
) -> anyhow::Result<AfterSync> {
    let start = Instant::now();
    let services = services.list();
    let ports = model::snapshot(&services, &slices.list());
    let snapshot = start.elapsed();
    let service_ports = ports.len();
    let datagram_ports = conntrack::datagram_ports(&ports);
    let health_checks = service_health::wanted(&services, &ports, &cfg.node);
    let s = tokio::task::block_in_place(|| backend.sync(ports, cfg, full))?;
    health.synced(s.rules, snapshot + s.built, s.applied.took);
    tracing::info!(
        full,
        mode = backend.name(),
        service_ports,
        rebuilt = s.rebuilt,
        rules = s.rules,
        chains_written = s.applied.chains_written,
        chains_deleted = s.applied.chains_deleted,
        bytes = s.applied.bytes,
        build_ms = millis(snapshot + s.built),
        snapshot_ms = millis(snapshot),
        restore_ms = millis(s.applied.took),
        via = s.applied.via,
        "synced rules"
    );
    Ok(AfterSync { datagram_ports, health_checks })
}

/// Milliseconds to a tenth, for the sync log.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn sync_loop(
    args: &ProxyArgs,
    cfg: &rules::Config,
    sources: Sources<'_>,
    wake: &Notify,
    (health, health_checks): (&health::Health, &mut service_health::Servers),
    backend: &mut Backend,
) -> anyhow::Result<()> {
    let mut conntrack = conntrack::Cleaner::default();
    let mut last_full: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        let mut full = last_full.is_none_or(|t| t.elapsed() >= FULL_SYNC_PERIOD);
        if !full && last_check.elapsed() >= args.iptables_sync_period {
            last_check = Instant::now();
            full = !tokio::task::block_in_place(|| backend.intact());
        }
        let started = Instant::now();
        match sync_once(backend, cfg, sources, full, health) {
            Ok(after) => {
                // only once the new rules are in: a flow cleared earlier could be NATed
                // by the old ones again
                tokio::task::block_in_place(|| conntrack.synced(after.datagram_ports));
                health_checks.update(after.health_checks).await;
                if full {
                    last_full = Some(started);
                }
            }
            // the applier forgot what it wrote, so the retry is a full rewrite; it does
            // not wait for another change, which may never come
            Err(e) => {
                health.failed();
                tracing::error!(error = format!("{e:#}"), "sync failed; retrying");
                tokio::time::sleep(SYNC_RETRY).await;
                continue;
            }
        }
        let next_check = args.iptables_sync_period.saturating_sub(last_check.elapsed());
        let _ = tokio::time::timeout(next_check.max(args.iptables_min_sync_period), wake.notified()).await;
        // batch bursts: never two syncs closer than the minimum period
        tokio::time::sleep(args.iptables_min_sync_period.saturating_sub(started.elapsed())).await;
    }
}
