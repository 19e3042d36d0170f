//! `ferrokube proxy` for tests, run inside a network namespace of the test's own
//! (`netns.rs`, the API server relayed in), so the rules it writes and the conntrack
//! entries it clears are the namespace's alone.

use std::path::PathBuf;

use super::Cluster;
use super::netns::NetNs;

/// Where the proxy started by `spawn` logs.
pub fn log_path(c: &Cluster) -> PathBuf {
    c.dir.path().join("proxy.log")
}

/// Start `ferrokube proxy` in `ns` as node `node` with `extra` flags, syncing as soon as
/// anything changes; the handle for `ns.kill`.
pub fn spawn(c: &Cluster, ns: &NetNs, node: &str, extra: &[&str]) -> usize {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_ferrokube"));
    cmd.args(["proxy", "--hostname-override", node, "--iptables-min-sync-period=0s"])
        .args(extra)
        .arg(format!("--kubeconfig={}", c.kubeconfig.display()))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug,kube=info,hyper=info,tower=info,h2=info,rustls=info");
    ns.spawn(&mut cmd, &log_path(c))
}

/// A behaviour test run in both proxy modes: `$name::iptables` and `$name::nftables`,
/// each calling `$name(mode)` of the module it is invoked in.
#[macro_export]
macro_rules! both_proxy_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn iptables() {
                super::$name("iptables").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nftables() {
                super::$name("nftables").await
            }
        }
    )*};
}
