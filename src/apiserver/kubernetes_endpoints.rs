//! The `default/kubernetes` Service's endpoints, as upstream's endpoint reconciler keeps
//! them for a single server: this server's advertise address and secure port in an
//! Endpoints and an EndpointSlice, both named `kubernetes`. They are written at start
//! and checked every 10 s, so one deleted or edited by hand comes back. Pods reach the
//! API at the Service's ClusterIP through kube-proxy's rules for these endpoints.
//!
//! A loopback advertise address (a server bound to 127.0.0.1, as in tests) is no
//! endpoint at all — upstream's validation refuses loopback endpoint addresses — so the
//! Service then has none, and only clients on this host reach the server.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::handlers::status::ApiResult;
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin};

const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";
const RECHECK: Duration = Duration::from_secs(10);

/// The address published for this server: `--advertise-address`, else the bind address,
/// else (bound to every address) the one this machine reaches others from.
pub fn advertise_ip(advertise: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    advertise
        .unwrap_or_else(|| if bind.is_unspecified() { crate::host::machine_ip().parse().unwrap_or(bind) } else { bind })
}

/// Keep both objects pointing at `ip:port` until the process ends.
pub async fn run(reg: Registry, ip: IpAddr, port: u16) {
    if ip.is_loopback() || ip.is_unspecified() {
        tracing::info!(%ip, "the kubernetes Service gets no endpoints: the advertise address is not reachable from pods");
        return;
    }
    tracing::info!(%ip, port, "publishing the kubernetes Service's endpoints");
    loop {
        for (plural, want) in [("endpoints", endpoints(ip, port)), ("endpointslices", slice(ip, port))] {
            if let Err(e) = ensure(&reg, plural, want).await {
                tracing::warn!(resource = plural, error = %e.message, "updating the kubernetes Service's endpoints");
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

fn resource(plural: &str) -> &'static ResourceDef {
    match plural {
        "endpointslices" => builtin("discovery.k8s.io", "v1", plural),
        _ => builtin("", "v1", plural),
    }
}

/// Create the object, or rewrite its content when it differs from `want`. A conflict
/// with a concurrent writer is left to the next pass.
async fn ensure(reg: &Registry, plural: &str, want: Value) -> ApiResult<()> {
    let res = resource(plural);
    let current = match reg.get(res, NAMESPACE, NAME).await {
        Ok(obj) => obj,
        Err(e) if e.reason == "NotFound" => {
            return reg.create(res, NAMESPACE, want, &WriteOpts::default()).await.map(|_| ());
        }
        Err(e) => return Err(e),
    };
    if same_content(&current, &want) {
        return Ok(());
    }
    let mut update = want;
    update["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    reg.update(res, NAMESPACE, NAME, update, Part::Main, &WriteOpts::default()).await.map(|_| ())
}

/// The fields this reconciler owns: addresses and ports, and the labels it sets.
fn same_content(current: &Value, want: &Value) -> bool {
    let labels_kept = want["metadata"]["labels"]
        .as_object()
        .is_some_and(|l| l.iter().all(|(k, v)| current["metadata"]["labels"][k] == *v));
    labels_kept && ["subsets", "addressType", "endpoints", "ports"].iter().all(|f| current.get(f) == want.get(f))
}

fn port_entry(port: u16) -> Value {
    json!({"name": "https", "port": port, "protocol": "TCP"})
}

fn endpoints(ip: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        // the slice is written here too: the mirroring controller must not copy it
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [port_entry(port)]}],
    })
}

fn slice(ip: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": if ip.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [port_entry(port)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_defaults_to_the_bind_address_unless_unspecified() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let given: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(advertise_ip(None, lo), lo);
        assert_eq!(advertise_ip(Some(given), any), given);
        assert!(!advertise_ip(None, any).is_unspecified());
    }

    #[test]
    fn content_compares_owned_fields_only() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let mut stored = slice(ip, 6443);
        stored["metadata"]["resourceVersion"] = json!("7");
        stored["metadata"]["labels"]["extra"] = json!("kept");
        assert!(same_content(&stored, &slice(ip, 6443)));
        assert!(!same_content(&stored, &slice(ip, 6444)));
        stored["metadata"]["labels"].as_object_mut().unwrap().remove("kubernetes.io/service-name");
        assert!(!same_content(&stored, &slice(ip, 6443)));
    }
}
