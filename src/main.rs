//! ferrokube: a Kubernetes-compatible control plane in one binary (hyperkube style).
//! Each subcommand is one component; `up` runs them all as child processes.

mod admission;
mod apiserver;
mod audit;
mod auth;
mod certs;
mod cli;
mod controllers;
mod cron;
mod dns;
mod fieldmanager;
mod handlers;
mod host;
mod kubeconfig;
mod kubelet;
mod label_selector;
mod leader_election;
mod patch;
mod protobuf;
mod proxy;
mod quantity;
mod registry;
mod scheduler;
mod schema;
mod serving;
mod streaming;
mod up;
mod watch;

use clap::{Parser, Subcommand};

/// mimalloc gives freed memory back to the system soon after a large list or watch
/// burst, where glibc's per-thread arenas keep it: resident memory stays near the
/// working set.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ferrokube", version, about = "A Kubernetes-compatible control plane over etcd")]
struct Cli {
    /// Log verbosity (0-10, as upstream's -v); RUST_LOG overrides it.
    #[arg(long = "v", short = 'v', global = true, default_value_t = 0)]
    verbosity: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kubernetes API from etcd (kube-apiserver).
    Apiserver(Box<apiserver::ApiserverArgs>),
    /// Run the control loops (Deployments, ReplicaSets, Jobs, garbage collection...) through
    /// the API (kube-controller-manager).
    ControllerManager(Box<controllers::ControllerManagerArgs>),
    /// Mint a cluster CA, serving and client certificates, keys and kubeconfigs.
    Certs(certs::CertsArgs),
    /// The node agent (kubelet); so far only the fake runtime (`--runtime=fake`).
    Kubelet(Box<kubelet::KubeletArgs>),
    /// One containerd with its config, pod network and local images under a data
    /// directory, until SIGTERM (for tests and scripts; `up` starts its own).
    #[command(hide = true)]
    Containerd(kubelet::containerd::ContainerdArgs),
    /// Program the node's iptables so Services reach their endpoints (kube-proxy).
    Proxy(proxy::ProxyArgs),
    /// Place pending pods on nodes through the API (kube-scheduler).
    Scheduler(scheduler::SchedulerArgs),
    /// Serve the cluster DNS from Services and EndpointSlices (CoreDNS's role).
    Dns(dns::DnsArgs),
    /// Start etcd and every component as child processes and write a kubeconfig.
    Up(up::UpArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(cli.verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Apiserver(args) => apiserver::run(*args).await,
            Command::Certs(args) => certs::run(args),
            Command::ControllerManager(args) => controllers::run(*args).await,
            Command::Up(args) => up::run(args).await,
            Command::Dns(args) => dns::run(args).await,
            Command::Scheduler(args) => scheduler::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::Kubelet(args) => kubelet::run(*args).await,
            Command::Containerd(args) => kubelet::containerd::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
