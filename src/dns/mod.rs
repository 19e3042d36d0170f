//! `ferrokube dns`: the cluster DNS (CoreDNS's role with its `kubernetes` plug-in), a
//! client of the API. Services and EndpointSlices (`watch.rs`) become per-Service record
//! sets (`records.rs`) in an in-memory zone (`zone.rs`); queries are answered from it
//! (`answer.rs`) over UDP and TCP (`server.rs`); names outside the cluster domain go to
//! `--upstream-nameservers` (`forward.rs`, answers kept in `cache.rs`) or are refused.
//! With `--publish-service` the process keeps an EndpointSlice of that Service pointing
//! at itself (`publish.rs`). Counters, health and readiness: `metrics.rs`.

mod answer;
mod cache;
mod forward;
mod metrics;
mod publish;
mod records;
mod server;
pub mod setup;
mod watch;
mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use clap::Args;

use server::Server;

#[derive(Args, Debug)]
pub struct DnsArgs {
    /// Kubeconfig of the API server (default: in-cluster, $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The address to serve on (UDP and TCP); pods reach it through the DNS Service.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    #[arg(long, default_value_t = 53)]
    pub port: u16,
    /// The cluster's DNS domain (the kubelet's --cluster-domain).
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where names outside the cluster domain go (ip or ip:port, comma separated);
    /// none: such queries are REFUSED.
    #[arg(long, value_delimiter = ',')]
    pub upstream_nameservers: Vec<String>,
    /// The order upstreams are tried in (CoreDNS's forward `policy`); one that failed
    /// twice in a row is tried after the others until it answers again.
    #[arg(long, value_enum, default_value_t = forward::Policy::Random)]
    pub upstream_policy: forward::Policy,
    /// How many forwarded queries may be out at once (CoreDNS's `max_concurrent`, 1000 in
    /// kubeadm's Corefile); more are REFUSED. 0: no limit.
    #[arg(long, default_value_t = 1000)]
    pub max_concurrent: usize,
    /// The longest a forwarded positive answer is kept (CoreDNS's `cache 30`); 0: no cache.
    #[arg(long, default_value_t = 30)]
    pub cache_ttl: u32,
    /// The longest a forwarded NXDOMAIN/NODATA answer is kept.
    #[arg(long, default_value_t = 5)]
    pub cache_denial_ttl: u32,
    /// How many forwarded answers are kept at most.
    #[arg(long, default_value_t = 10_000)]
    pub cache_size: usize,
    /// Where `/metrics` (Prometheus text, CoreDNS's names), `/health` and `/ready` are
    /// served (CoreDNS's metrics port; loopback, so a host port is not taken by surprise);
    /// empty: nowhere. A port already taken is logged and the DNS runs without them.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics_bind_address: String,
    /// TTL of the answers (CoreDNS's `ttl`), also the SOA minimum for negative answers.
    #[arg(long, default_value_t = 30)]
    pub ttl: u32,
    /// Keep an EndpointSlice of this Service (namespace/name) pointing at
    /// --bind-address; empty: publish nothing.
    #[arg(long, default_value = "")]
    pub publish_service: String,
    /// The node this process runs on (the slice's name and nodeName); default the host name.
    #[arg(long)]
    pub node_name: Option<String>,
    /// UDP worker threads (default: one per CPU).
    #[arg(long)]
    pub udp_workers: Option<usize>,
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let auth = answer::Authority::new(&args.cluster_domain, args.ttl)?;
    let upstreams = args.upstream_nameservers.iter().map(|s| upstream(s)).collect::<anyhow::Result<_>>()?;
    let addr = SocketAddr::new(args.bind_address, args.port);
    let server = Arc::new(Server {
        zone: RwLock::new(zone::Zone::new(&auth.domain)),
        auth,
        upstreams: forward::Upstreams::new(upstreams, args.upstream_policy, args.max_concurrent),
        cache: cache::Cache::new(args.cache_size, args.cache_ttl, args.cache_denial_ttl),
        metrics: metrics::Metrics::default(),
        name: format!("dns://{addr}"),
    });
    // bound before the first list, so a taken port fails at once
    let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("binding udp {addr}"))?;
    let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding tcp {addr}"))?;
    let metrics = serve_metrics(&server, &args.metrics_bind_address).await;
    // the metrics port is published only where clients of the DNS's address reach it
    let metrics_port = metrics.filter(|m| m.ip() == args.bind_address || m.ip().is_unspecified()).map(|m| m.port());
    let client = crate::cli::kube_client(args.kubeconfig.as_ref(), "ferrokube-dns").await?;
    watch::start(client.clone(), server.clone()).await;
    server.metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let workers = args.udp_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    for i in 0..workers.max(1) {
        let (server, socket, runtime) = (server.clone(), udp.try_clone()?, tokio::runtime::Handle::current());
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || server::serve_udp(server, socket, runtime))?;
    }
    tokio::spawn(server::serve_tcp(server.clone(), tcp));
    tracing::info!(%addr, domain = %server.auth.domain, workers, upstreams = ?server.upstreams.addrs(),
        policy = ?args.upstream_policy, cache = server.cache.is_some(), "serving DNS");

    let publisher = match args.publish_service.as_str() {
        "" => None,
        _ if args.bind_address.is_unspecified() => {
            tracing::warn!(bind = %args.bind_address, "not publishing an endpoint slice: no specific address to publish");
            None
        }
        service => {
            let node = args.node_name.clone().unwrap_or_else(crate::certs::hostname);
            Some(publish::Publisher::new(client, service, &node, (args.bind_address, args.port), metrics_port)?)
        }
    };
    match &publisher {
        Some(p) => {
            tokio::select! {
                _ = p.keep() => {},
                _ = crate::cli::shutdown_signal() => {},
            }
            p.withdraw().await;
        }
        None => crate::cli::shutdown_signal().await,
    }
    tracing::info!("stopping");
    Ok(())
}

/// The metrics listener, unless disabled; one that cannot bind costs the metrics only,
/// never the DNS (a second server on a host, or a test, may find the port taken).
/// Returns the address it listens on.
async fn serve_metrics(server: &Arc<Server>, bind: &str) -> Option<SocketAddr> {
    if bind.is_empty() {
        return None;
    }
    let listener = tokio::net::TcpListener::bind(bind).await;
    match listener.and_then(|l| Ok((l.local_addr()?, l))) {
        Ok((address, listener)) => {
            tracing::info!(%address, "serving /metrics, /health and /ready");
            tokio::spawn(metrics::serve(server.clone(), listener));
            Some(address)
        }
        Err(e) => {
            tracing::error!(address = bind, error = %e, "cannot serve metrics; DNS runs without them");
            None
        }
    }
}

/// `ip` or `ip:port` (`[v6]:port`), port 53 by default.
fn upstream(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: IpAddr = s.trim_matches(['[', ']']).parse().with_context(|| format!("upstream nameserver {s:?}"))?;
    Ok(SocketAddr::new(ip, 53))
}
