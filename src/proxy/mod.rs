//! `ferrokube proxy`: kube-proxy in iptables mode. Informers follow Services and
//! EndpointSlices; any change marks the state dirty and wakes the sync loop, which at
//! most once per `--iptables-min-sync-period` rebuilds the rules from the whole state
//! (`model` → `rules`, pure) and writes what changed (`iptables`), plus a full rewrite
//! every `--iptables-sync-period` that also repairs rules someone else removed.

pub mod conntrack;
mod health;
pub mod iptables;
pub mod model;
pub mod rules;

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
    /// Only `iptables` is implemented.
    #[arg(long, default_value = "iptables")]
    pub proxy_mode: String,
    /// Address ranges (comma-separated CIDRs) NodePorts answer on; default: every local address.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<Ipv4Net>,
    /// Masquerade all traffic sent to ClusterIPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The least time between two syncs (changes arriving faster are batched).
    #[arg(long, default_value = "1s", value_parser = crate::apiserver::parse_go_duration)]
    pub iptables_min_sync_period: Duration,
    /// The longest time between two full rewrites of the rules.
    #[arg(long, default_value = "30s", value_parser = crate::apiserver::parse_go_duration)]
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

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if args.proxy_mode != "iptables" {
        bail!("--proxy-mode={}: only iptables is implemented", args.proxy_mode);
    }
    if args.cleanup {
        return iptables::cleanup();
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
    tracing::info!(node = cfg.node, "informers synced; programming iptables");
    let sync = sync_loop(&args, &cfg, (&services, &slices), &wake, &health);
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

/// One rebuild (of the changed service ports only) and write (of the changed chains);
/// the service ports now in place.
fn sync_once(
    (builder, applier): (&mut rules::Builder, &mut iptables::Applier),
    cfg: &rules::Config,
    (services, slices): Sources,
    full: bool,
    health: &health::Health,
) -> anyhow::Result<Vec<model::ServicePort>> {
    let start = Instant::now();
    let ports = model::snapshot(&services.list(), &slices.list());
    let snapshot = start.elapsed();
    let tables = builder.build(&ports, cfg);
    let built = start.elapsed();
    let rules = tables.rule_count();
    let applied = tokio::task::block_in_place(|| applier.sync(tables, full)).context("writing iptables rules")?;
    health.synced(rules, built, applied.took);
    tracing::info!(
        full,
        service_ports = ports.len(),
        rebuilt = builder.rebuilt,
        rules,
        chains_written = applied.chains_written,
        chains_deleted = applied.chains_deleted,
        bytes = applied.bytes,
        build_ms = built.as_millis() as u64,
        snapshot_ms = snapshot.as_millis() as u64,
        restore_ms = applied.took.as_millis() as u64,
        "synced iptables rules"
    );
    Ok(ports)
}

async fn sync_loop(
    args: &ProxyArgs,
    cfg: &rules::Config,
    sources: Sources<'_>,
    wake: &Notify,
    health: &health::Health,
) -> anyhow::Result<()> {
    let mut applier = iptables::Applier::default();
    let mut builder = rules::Builder::default();
    let mut conntrack = conntrack::Cleaner::default();
    let mut last_full: Option<Instant> = None;
    loop {
        let full = last_full.is_none_or(|t| t.elapsed() >= args.iptables_sync_period);
        let started = Instant::now();
        match sync_once((&mut builder, &mut applier), cfg, sources, full, health) {
            Ok(ports) => {
                // only once the new rules are in: a flow cleared earlier could be NATed
                // by the old ones again
                tokio::task::block_in_place(|| conntrack.synced(&ports));
                if full {
                    last_full = Some(started);
                }
            }
            // the applier forgot what it wrote, so the retry is a full rewrite
            Err(e) => {
                health.failed();
                tracing::error!(error = format!("{e:#}"), "sync failed; retrying");
                tokio::time::sleep(SYNC_RETRY).await;
            }
        }
        let next_full = last_full.map_or(Duration::ZERO, |t| args.iptables_sync_period.saturating_sub(t.elapsed()));
        let _ = tokio::time::timeout(next_full.max(args.iptables_min_sync_period), wake.notified()).await;
        // batch bursts: never two syncs closer than the minimum period
        tokio::time::sleep(args.iptables_min_sync_period.saturating_sub(started.elapsed())).await;
    }
}
