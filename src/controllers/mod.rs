//! `ferrokube controller-manager` (kube-controller-manager): one process running the
//! control loops, each a client of the API (kube crate), sharing one informer per kind
//! (`runtime`). Controllers are chosen with `--controllers` by upstream's names; the
//! leader (a Lease, as the scheduler) runs them, standbys wait.
//!
//! A controller is a module with `pub fn start(ctx: &Ctx) -> anyhow::Result<()>` that
//! registers informer handlers feeding its work queue and hands its sync function to
//! `Ctx::run_workers`; adding one is a module plus a row of `CONTROLLERS`.

mod credentials;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod garbage_collector;
mod history;
mod job;
mod namespace;
mod node_lifecycle;
mod replicaset;
pub mod runtime;
mod statefulset;
mod volume;
mod workload;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::leader_election::{self, LeaderElectionArgs, LeaderElector};
use runtime::{Ctx, Settings};
pub use volume::LOCAL_PATH_PROVISIONER;

#[derive(clap::Args, Debug)]
pub struct ControllerManagerArgs {
    /// kubeconfig to reach the API server (default: in-cluster or $KUBECONFIG/~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` (the default set), `name` to add one, `-name` to leave one
    /// out; upstream's names (`deployment-controller`) and short names (`deployment`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Address of the health and metrics endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// HTTPS port of /healthz and /metrics (a self-signed certificate); 0 turns it off.
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
    /// Each controller acts as its own service account in kube-system (bound to its
    /// `system:controller:*` role) rather than as the process's identity.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, default_value = "false")]
    pub use_service_account_credentials: bool,
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_cron_job_syncs: usize,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    /// How long a node may go without renewing its Lease or status before it is Unknown.
    #[arg(long, default_value = "50s", value_parser = crate::apiserver::parse_go_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller checks the nodes.
    #[arg(long, default_value = "5s", value_parser = crate::apiserver::parse_go_duration)]
    pub node_monitor_period: Duration,
    /// Give each node a pod CIDR from `--cluster-cidr`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, default_value = "false")]
    pub allocate_node_cidrs: bool,
    /// The pods' address range, split into per-node CIDRs.
    #[arg(long)]
    pub cluster_cidr: Option<ipnet::IpNet>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Where the local-path provisioner keeps volumes (ferrokube's; k3s' is /var/lib/rancher/...).
    #[arg(long, default_value = "/var/lib/ferrokube/local-path")]
    pub local_path_dir: PathBuf,
}

/// One controller: upstream's name, its short alias, the kube-system service account it
/// acts as with `--use-service-account-credentials`, whether `*` includes it, its start.
struct ControllerDef {
    name: &'static str,
    alias: &'static str,
    account: &'static str,
    default_on: bool,
    start: fn(&Ctx) -> anyhow::Result<()>,
}

const fn def(
    name: &'static str,
    alias: &'static str,
    account: &'static str,
    start: fn(&Ctx) -> anyhow::Result<()>,
) -> ControllerDef {
    ControllerDef { name, alias, account, default_on: true, start }
}

/// Controllers the API server runs itself (see `apiserver::service_accounts` and
/// `quota_status`, ClusterRole aggregation): named here so `--controllers` accepts them.
fn in_api_server(_: &Ctx) -> anyhow::Result<()> {
    Ok(())
}

const CONTROLLERS: &[ControllerDef] = &[
    def("replicaset-controller", "replicaset", "replicaset-controller", replicaset::start),
    def("replicationcontroller-controller", "replicationcontroller", "replication-controller", replicaset::start_rc),
    def("deployment-controller", "deployment", "deployment-controller", deployment::start),
    def("statefulset-controller", "statefulset", "statefulset-controller", statefulset::start),
    def("daemonset-controller", "daemonset", "daemon-set-controller", daemonset::start),
    def("job-controller", "job", "job-controller", job::start),
    def("cronjob-controller", "cronjob", "cronjob-controller", job::start_cronjob),
    def(
        "ttl-after-finished-controller",
        "ttl-after-finished",
        "ttl-after-finished-controller",
        job::start_ttl_after_finished,
    ),
    def("disruption-controller", "disruption", "disruption-controller", disruption::start),
    def("garbage-collector-controller", "garbagecollector", "generic-garbage-collector", garbage_collector::start),
    def("namespace-controller", "namespace", "namespace-controller", namespace::start),
    def("node-lifecycle-controller", "nodelifecycle", "node-controller", node_lifecycle::start),
    def("node-ipam-controller", "nodeipam", "node-controller", node_lifecycle::start_ipam),
    def("pod-garbage-collector-controller", "podgc", "pod-garbage-collector", node_lifecycle::start_podgc),
    def("endpoints-controller", "endpoint", "endpoint-controller", endpoints::start),
    def("endpointslice-controller", "endpointslice", "endpointslice-controller", endpoints::start_slices),
    def(
        "persistentvolume-binder-controller",
        "persistentvolume-binder",
        "persistent-volume-binder",
        volume::start_binder,
    ),
    def("local-path-provisioner", "local-path-provisioner", "local-path-provisioner", volume::start_local_path),
    def("serviceaccount-controller", "serviceaccount", "", in_api_server),
    def("root-ca-certificate-publisher-controller", "root-ca-cert-publisher", "", in_api_server),
    def("resourcequota-controller", "resourcequota", "", in_api_server),
    def("clusterrole-aggregation-controller", "clusterrole-aggregation", "", in_api_server),
];

/// The controllers `--controllers` selects, in table order; an unknown name is an error.
fn selected(spec: &[String]) -> anyhow::Result<Vec<&'static ControllerDef>> {
    let find = |n: &str| CONTROLLERS.iter().find(|c| c.name == n || c.alias == n);
    for item in spec {
        let name = item.trim().trim_start_matches('-');
        if name != "*" && find(name).is_none() {
            bail!("--controllers: {name:?} is not a known controller");
        }
    }
    let star = spec.iter().any(|s| s.trim() == "*");
    let named = |c: &ControllerDef, s: &str| s == c.name || s == c.alias;
    Ok(CONTROLLERS
        .iter()
        .filter(|c| {
            if spec.iter().any(|s| s.trim().strip_prefix('-').is_some_and(|s| named(c, s))) {
                return false;
            }
            spec.iter().any(|s| named(c, s.trim())) || (star && c.default_on)
        })
        .collect())
}

fn settings(args: &ControllerManagerArgs) -> Settings {
    let workers = [
        ("deployment", args.concurrent_deployment_syncs),
        ("replicaset", args.concurrent_replicaset_syncs),
        ("replicationmanager", args.concurrent_rc_syncs),
        ("statefulset", args.concurrent_statefulset_syncs),
        ("daemonset", args.concurrent_daemonset_syncs),
        ("job", args.concurrent_job_syncs),
        ("cronjob", args.concurrent_cron_job_syncs),
        ("garbage_collector", args.concurrent_gc_syncs),
        ("namespace", args.concurrent_namespace_syncs),
        ("endpoint", args.concurrent_service_endpoint_syncs),
        ("endpoint_slice", args.concurrent_service_endpoint_syncs),
    ];
    Settings {
        workers: workers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_monitor_period: args.node_monitor_period,
        cluster_cidr: args.cluster_cidr.filter(|_| args.allocate_node_cidrs),
        node_cidr_mask_size: args.node_cidr_mask_size,
        local_path_dir: args.local_path_dir.clone(),
    }
}

pub async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let chosen = selected(&args.controllers)?;
    let mut election = leader_election::Config::defaults("kube-controller-manager");
    election.override_with(&args.leader_election);
    election.validate()?;
    let config = crate::cli::kube_config(args.kubeconfig.as_ref(), "kube-controller-manager")
        .await
        .context("reading the client configuration")?;
    let client = runtime::client::counting_client(config.clone()).context("building the API client")?;
    let credentials = match args.use_service_account_credentials {
        true => Some(Arc::new(credentials::Credentials::new(config, client.clone())?)),
        false => None,
    };
    let elector = match election.enabled {
        true => {
            let lease_client = crate::cli::kube_client(args.kubeconfig.as_ref(), "kube-controller-manager")
                .await
                .context("building the lease client")?;
            Some(Arc::new(LeaderElector::new(lease_client, election)?))
        }
        false => None,
    };
    let ctx = Arc::new(Ctx::new(client, settings(&args)));
    if args.secure_port != 0 {
        let addr = std::net::SocketAddr::new(args.bind_address, args.secure_port);
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        let app = router(ctx.clone(), elector.clone());
        tokio::spawn(crate::serving::serve_https(listener, app, "kube-controller-manager"));
        tracing::info!(%addr, "serving /healthz and /metrics over HTTPS");
    }
    let names: Vec<&str> = chosen.iter().map(|c| c.alias).collect();
    tracing::info!(controllers = ?names, "controller-manager started");
    // as upstream, the controllers (and their informers) start only once this replica leads
    let lead = {
        let ctx = ctx.clone();
        async move {
            for c in &chosen {
                let own = match (&credentials, c.account) {
                    (Some(creds), account) if !account.is_empty() => ctx.with_client(
                        creds.client_for(account).await.with_context(|| format!("credentials of {}", c.name))?,
                    ),
                    _ => (*ctx).clone(),
                };
                (c.start)(&own).with_context(|| format!("starting {}", c.name))?;
            }
            ctx.run().await;
            anyhow::Ok(())
        }
    };
    LeaderElector::run_until_shutdown(elector.as_deref(), lead).await
}

#[derive(Clone)]
struct Http {
    ctx: Arc<Ctx>,
    elector: Option<Arc<LeaderElector>>,
}

fn router(ctx: Arc<Ctx>, elector: Option<Arc<LeaderElector>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(Http { ctx, elector })
}

async fn metrics(State(http): State<Http>) -> impl IntoResponse {
    let mut text = http.ctx.metrics.render();
    if let Some(e) = &http.elector {
        text.push_str(&e.render_metric());
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &[&str]) -> Vec<&'static str> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        selected(&spec).unwrap().into_iter().map(|c| c.alias).collect()
    }

    #[test]
    fn controllers_flag_selects_by_either_name() {
        assert!(names(&["*"]).contains(&"deployment"));
        assert!(!names(&["*", "-deployment-controller"]).contains(&"deployment"));
        assert_eq!(names(&["job", "cronjob-controller"]), ["job", "cronjob"]);
        assert!(selected(&["nonsense".to_string()]).is_err());
    }
}
