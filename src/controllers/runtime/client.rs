//! The controller-manager's API client, counting the requests it sends by verb (as
//! client-go's `rest_client_requests_total`): /metrics shows them, and the benchmark
//! divides them by the pods it made to report API requests per pod.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

use kube::Client;
use kube::client::ClientBuilder;

/// Requests sent by this process's controllers, by verb (GET, LIST, WATCH, POST, ...).
static REQUESTS: LazyLock<Mutex<BTreeMap<&'static str, u64>>> = LazyLock::new(Mutex::default);

/// The Kubernetes verb of a request: a GET is a WATCH or LIST by its query and path.
fn verb<B>(req: &http::Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or_default();
    match *req.method() {
        http::Method::GET if query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") => "WATCH",
        http::Method::GET if query.contains("limit=") || query.contains("resourceVersion=0") => "LIST",
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A client from `config` whose every request is counted.
pub fn counting_client(config: kube::Config) -> anyhow::Result<Client> {
    let count = tower::util::MapRequestLayer::new(|req: http::Request<kube::client::Body>| {
        *REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).entry(verb(&req)).or_default() += 1;
        req
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The counts in Prometheus text form.
pub fn render(out: &mut String) {
    let _ = writeln!(out, "# TYPE rest_client_requests_total counter");
    for (verb, n) in REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "rest_client_requests_total{{verb=\"{verb}\"}} {n}");
    }
}
