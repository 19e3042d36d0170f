//! `ferrokube kubelet`: the node agent, a client of the API. Each node is registered and
//! kept alive as a real kubelet does it (`node.rs`: the Node with capacity, labels,
//! addresses, nodeInfo and conditions; its Lease in kube-node-lease renewed every 10 s;
//! status re-posted every 5 minutes). With `--runtime=cri` (the default) its pods run as
//! real containers through CRI (`cri/`: containerd, which `containerd.rs` can start with
//! the local images of `images/`); with `--runtime=fake` (kwok-style) nothing runs but
//! pods go through the status sequence a kubelet reports (`fake.rs`), and one process can
//! play many nodes (`--fake-nodes=N`) to exercise the control plane at scale.

pub mod containerd;
pub mod cri;
mod fake;
mod images;
mod node;
mod pod_cidr;
mod routes;
pub mod server;
pub mod spec;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(clap::Args, Debug)]
pub struct KubeletArgs {
    /// kubeconfig to reach the API server (default: in-cluster or $KUBECONFIG/~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name (default: the host name); with --fake-nodes N > 1, the prefix of
    /// `<name>-0` … `<name>-<N-1>`.
    #[arg(long)]
    pub node_name: Option<String>,
    /// The container runtime: `cri` (containers through the CRI endpoint) or `fake` (no
    /// containers; pods report Running).
    #[arg(long, default_value = "cri")]
    pub runtime: String,
    /// The CRI runtime's socket.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    pub container_runtime_endpoint: String,
    /// Where pods' volumes and files live (`<root-dir>/pods/<uid>/`).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// Where container logs go (`<pod-logs-dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,
    /// The cluster DNS servers given to pods (dnsPolicy ClusterFirst), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The node's InternalIP (default: this machine's outbound address).
    #[arg(long)]
    pub node_ip: Option<String>,
    /// How many nodes this process plays (fake runtime only).
    #[arg(long, default_value_t = 1)]
    pub fake_nodes: usize,
    /// How long a fake pod takes from bound to Running and Ready.
    #[arg(long, default_value = "1s", value_parser = crate::apiserver::parse_go_duration)]
    pub fake_start_delay: Duration,
    /// The most pods a node takes (its `pods` capacity).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// CPU capacity of each fake node (default: this machine's).
    #[arg(long)]
    pub fake_cpu: Option<String>,
    /// Memory capacity of each fake node (default: this machine's).
    #[arg(long)]
    pub fake_memory: Option<String>,
    /// Labels added to each node, `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// How often the Lease is renewed (upstream's nodeLeaseDurationSeconds / 4 = 10 s).
    #[arg(long, default_value = "10s", value_parser = crate::apiserver::parse_go_duration)]
    pub node_lease_renew_interval: Duration,
    /// How pods on other nodes are reached: `none` (another agent's business), or
    /// `host-gw`: a route to each other node's podCIDR via its InternalIP, kept in step
    /// with the Nodes (all nodes on one link).
    #[arg(long, default_value = "none")]
    pub pod_routes: String,
    #[command(flatten)]
    pub server: server::ServerArgs,
}

/// Start the pod-route sync `--pod-routes` asks for, for nodes named `ours`.
fn spawn_pod_routes(args: &KubeletArgs, client: &kube::Client, ours: &[String]) -> anyhow::Result<()> {
    match args.pod_routes.as_str() {
        "none" => Ok(()),
        "host-gw" => {
            tokio::spawn(routes::sync(client.clone(), ours.iter().cloned().collect()));
            Ok(())
        }
        other => bail!("--pod-routes={other}: the choices are none and host-gw"),
    }
}

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    match args.runtime.as_str() {
        "fake" => run_fake(args).await,
        "cri" => run_cri(args).await,
        other => bail!("--runtime={other}: the runtimes are cri and fake"),
    }
}

/// One node whose pods run in containers through CRI.
async fn run_cri(args: KubeletArgs) -> anyhow::Result<()> {
    let client =
        crate::cli::kube_client(args.kubeconfig.as_ref(), "kubelet").await.context("building the API client")?;
    let cri = cri::client::Cri::connect(&args.container_runtime_endpoint)?;
    let socket = cri::client::socket_path(&args.container_runtime_endpoint);
    let version = cri::client::wait_ready(&cri, &socket, Duration::from_secs(60)).await?;
    let name = args.node_name.clone().unwrap_or_else(crate::certs::hostname);
    let mut shape = node::Shape::from_args(&args)?;
    shape.runtime_version = version.clone();
    shape.os_image = node::os_image();
    let host_ip = args.node_ip.clone().unwrap_or_else(crate::host::machine_ip);
    shape.ip = Some(host_ip.clone());
    let node = node::Node::register(client.clone(), &name, 0, &shape).await?;
    tracing::info!(node = %name, runtime = %version, ip = %host_ip, "node registered; Ready");
    tokio::spawn(node.clone().keep_alive(args.node_lease_renew_interval));
    spawn_pod_routes(&args, &client, std::slice::from_ref(&name))?;
    tokio::spawn(pod_cidr::sync(client.clone(), cri.clone(), name.clone()));
    let kubelet = server::Kubelet {
        client: client.clone(),
        node_name: name.clone(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        cri: Some(cri.clone()),
    };
    server::spawn(args.server.clone(), args.root_dir.clone(), kubelet);
    let ctx = cri::Context {
        exec: std::sync::Arc::new(cri::exec::CriExec(cri.clone())),
        cri,
        recorder: crate::controllers::runtime::events::Recorder::new(client.clone(), "kubelet"),
        client,
        node_name: name,
        host_ip,
        root_dir: args.root_dir.clone(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        cluster_dns: args.cluster_dns.iter().filter(|s| !s.is_empty()).cloned().collect(),
        cluster_domain: args.cluster_domain.clone(),
    };
    spec::volumes::set_cluster_domain(&args.cluster_domain);
    let runtime = cri::Runtime::new(ctx, node);
    tokio::select! {
        result = runtime.run() => result,
        _ = crate::cli::shutdown_signal() => {
            // containers keep running: a restarted kubelet adopts them
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn run_fake(args: KubeletArgs) -> anyhow::Result<()> {
    if args.fake_nodes == 0 {
        bail!("--fake-nodes must be at least 1");
    }
    let client =
        crate::cli::kube_client(args.kubeconfig.as_ref(), "kubelet").await.context("building the API client")?;
    let base = args.node_name.clone().unwrap_or_else(crate::certs::hostname);
    let names: Vec<String> = match args.fake_nodes {
        1 => vec![base],
        n => (0..n).map(|i| format!("{base}-{i}")).collect(),
    };
    let shape = node::Shape::from_args(&args)?;
    let nodes = register_fake_nodes(&client, &names, &shape).await?;
    tracing::info!(nodes = names.len(), first = %names[0], "nodes registered; Ready");
    for n in &nodes {
        tokio::spawn(n.clone().keep_alive(args.node_lease_renew_interval));
    }
    spawn_pod_routes(&args, &client, &names)?;
    // one API for the process: with many fake nodes, the first node's
    let kubelet = server::Kubelet {
        client: client.clone(),
        node_name: names[0].clone(),
        pod_logs_dir: args.pod_logs_dir.clone(),
        cri: None,
    };
    server::spawn(args.server.clone(), args.root_dir.clone(), kubelet);
    let pods = fake::Runtime::new(client, nodes, args.fake_start_delay);
    tokio::select! {
        result = pods.run() => result,
        _ = crate::cli::shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// Register the fake nodes 16 at a time: one by one, each costing two round trips,
/// 1,000 nodes took seconds longer than the control plane needs to take them.
async fn register_fake_nodes(
    client: &kube::Client,
    names: &[String],
    shape: &node::Shape,
) -> anyhow::Result<Vec<node::Node>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(names.iter().enumerate())
        .map(|(index, name)| node::Node::register(client.clone(), name, index, shape))
        .buffered(16)
        .try_collect()
        .await
}
