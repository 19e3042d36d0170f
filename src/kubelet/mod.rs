//! `ferrokube kubelet`: the node agent, a client of the API. So far only the fake
//! runtime (`--runtime=fake`, kwok-style) exists: no containers run, but each node is
//! registered and kept alive exactly as a real kubelet does it (`node.rs`: the Node with
//! capacity, labels, addresses, nodeInfo and conditions; its Lease in kube-node-lease
//! renewed every 10 s; status re-posted every 5 minutes), and the pods bound to it go
//! through the status sequence a kubelet reports (`fake.rs`). One process can play many
//! nodes (`--fake-nodes=N`), so the control plane can be exercised at scale on one machine.

// the CRI runtime is being built; the allow goes when `--runtime=cri` uses it
#[allow(dead_code)]
pub mod containerd;
pub mod cri;
mod fake;
mod images;
mod node;
// pod spec → CRI config; the allow goes when the CRI pod workers call it
#[allow(dead_code)]
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
    /// The container runtime: only `fake` (no containers; pods report Running) for now.
    #[arg(long, default_value = "fake")]
    pub runtime: String,
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
}

pub async fn run(args: KubeletArgs) -> anyhow::Result<()> {
    if args.runtime != "fake" {
        bail!(
            "--runtime={}: only the fake runtime exists so far (containerd through CRI comes with issue 8)",
            args.runtime
        );
    }
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
    let mut nodes = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let n = node::Node::register(client.clone(), name, index, &shape).await?;
        nodes.push(n);
    }
    tracing::info!(nodes = names.len(), first = %names[0], "nodes registered; Ready");
    for n in &nodes {
        tokio::spawn(n.clone().keep_alive(args.node_lease_renew_interval));
    }
    let pods = fake::Runtime::new(client, nodes, args.fake_start_delay);
    tokio::select! {
        result = pods.run() => result,
        _ = crate::cli::shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}
