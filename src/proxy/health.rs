//! Plain-HTTP `/healthz` and `/livez` (`--healthz-bind-address`, upstream's 10256) and
//! `/metrics` (`--metrics-bind-address`, 10249). Healthy means the rules were written
//! recently: within two full-sync periods of the last success, as upstream judges it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::StatusCode;

#[derive(Default)]
struct Stats {
    last_success: Option<SystemTime>,
    syncs: u64,
    failures: u64,
    rules: usize,
    build: Duration,
    restore: Duration,
}

pub struct Health {
    started: SystemTime,
    sync_period: Duration,
    stats: Mutex<Stats>,
}

impl Health {
    pub fn new(sync_period: Duration) -> Health {
        Health { started: SystemTime::now(), sync_period, stats: Mutex::default() }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn synced(&self, rules: usize, build: Duration, restore: Duration) {
        let mut s = self.stats();
        s.last_success = Some(SystemTime::now());
        s.syncs += 1;
        (s.rules, s.build, s.restore) = (rules, build, restore);
    }

    pub fn failed(&self) {
        self.stats().failures += 1;
    }

    /// Rules written recently enough (what the service health checks report too).
    pub fn is_healthy(&self) -> bool {
        self.healthy().0
    }

    fn healthy(&self) -> (bool, Option<SystemTime>) {
        let last = self.stats().last_success;
        let since = last.unwrap_or(self.started).elapsed().unwrap_or_default();
        (since <= 2 * self.sync_period.max(Duration::from_secs(1)), last)
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn healthz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let (ok, last) = h.healthy();
    let body = serde_json::json!({
        "lastUpdated": last.map(rfc3339).unwrap_or_default(),
        "currentTime": rfc3339(SystemTime::now()),
        "nodeEligible": true,
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string())
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let s = h.stats();
    let last = s.last_success.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).unwrap_or_default();
    let text = format!(
        "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced.\n\
         # TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n\
         kubeproxy_sync_proxy_rules_last_timestamp_seconds {}\n\
         # HELP kubeproxy_sync_proxy_rules_iptables_total Number of iptables rules the proxy owns.\n\
         # TYPE kubeproxy_sync_proxy_rules_iptables_total gauge\n\
         kubeproxy_sync_proxy_rules_iptables_total {}\n\
         # HELP ferrokube_proxy_syncs_total Syncs of the rules, by result.\n\
         # TYPE ferrokube_proxy_syncs_total counter\n\
         ferrokube_proxy_syncs_total{{result=\"success\"}} {}\n\
         ferrokube_proxy_syncs_total{{result=\"error\"}} {}\n\
         # HELP ferrokube_proxy_last_sync_seconds The last successful sync's time, by phase.\n\
         # TYPE ferrokube_proxy_last_sync_seconds gauge\n\
         ferrokube_proxy_last_sync_seconds{{phase=\"build\"}} {}\n\
         ferrokube_proxy_last_sync_seconds{{phase=\"restore\"}} {}\n",
        last.as_secs_f64(),
        s.rules,
        s.syncs,
        s.failures,
        s.build.as_secs_f64(),
        s.restore.as_secs_f64(),
    );
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Serve `router` on `addr` until the process ends; a bind failure is logged, not fatal
/// (the proxy's job is the rules).
async fn serve(addr: SocketAddr, router: Router, what: &'static str) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            tracing::info!(%addr, what, "serving");
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(%addr, what, error = %e, "serving failed");
            }
        }
        Err(e) => tracing::warn!(%addr, what, error = %e, "cannot listen"),
    }
}

/// Start the health and metrics servers (an address with port 0 turns one off).
pub fn start(health: Arc<Health>, healthz: SocketAddr, metrics_addr: SocketAddr) {
    if healthz.port() != 0 {
        let router = Router::new()
            .route("/healthz", get(self::healthz))
            .route("/livez", get(self::healthz))
            .with_state(health.clone());
        tokio::spawn(serve(healthz, router, "healthz"));
    }
    if metrics_addr.port() != 0 {
        let router = Router::new().route("/metrics", get(metrics)).with_state(health);
        tokio::spawn(serve(metrics_addr, router, "metrics"));
    }
}
