//! Shared command-line plumbing: logging set-up.

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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
