//! Shared command-line plumbing: logging set-up, the shutdown signal, the API client
//! of the companion components.

use tracing_subscriber::EnvFilter;

/// `--v` maps onto tracing levels the way upstream's klog levels are used:
/// 0-1 info, 2-4 debug, 5+ trace. `RUST_LOG` wins when set.
pub fn init_tracing(verbosity: u8) {
    let default = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},h2=info,tower=info,hyper=info")));
    // colours only on a terminal: `up` sends each component's log to a file
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Resolves on SIGINT or SIGTERM (never, if the handler cannot be installed).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// The API client of a companion component: from `--kubeconfig` when given, else
/// in-cluster or `$KUBECONFIG`/`~/.kube/config`. Its User-Agent names the component
/// (`kube-controller-manager/v1.33.0 ...`), which the API server records as the field
/// manager of its writes, as upstream's.
pub async fn kube_client(kubeconfig: Option<&std::path::PathBuf>, component: &str) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(kubeconfig, component).await?)?)
}

/// The configuration `kube_client` builds its client from.
pub async fn kube_config(kubeconfig: Option<&std::path::PathBuf>, component: &str) -> anyhow::Result<kube::Config> {
    use anyhow::Context;
    let mut config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let agent =
        format!("{component}/v1.33.0 (linux/{}) ferrokube/{}", std::env::consts::ARCH, env!("CARGO_PKG_VERSION"));
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_str(&agent)?));
    Ok(config)
}
