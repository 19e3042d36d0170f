//! Health-check node ports (`spec.healthCheckNodePort`, which the API server gives a
//! LoadBalancer Service with `externalTrafficPolicy: Local`): one plain-HTTP server per
//! port, as upstream's kube-proxy runs, telling a load balancer whether this node has
//! ready endpoints of the Service. 200 with their count when it has and the proxy is
//! healthy, else 503; the body is upstream's JSON, the count also in
//! `X-Load-Balancing-Endpoint-Weight`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;
use k8s_openapi::api::core::v1::Service;

use super::health::Health;
use super::model::ServicePort;

/// What one health-check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    /// This node's ready endpoints of the Service, counted by address (one pod serving
    /// two ports counts once).
    pub local_endpoints: usize,
}

/// Health-check port → what it reports, for every Service that has one.
pub fn wanted(services: &[Arc<Service>], ports: &[ServicePort], node: &str) -> BTreeMap<u16, Entry> {
    let mut out = BTreeMap::new();
    for svc in services {
        let port = svc.spec.as_ref().and_then(|s| s.health_check_node_port).and_then(|p| u16::try_from(p).ok());
        let Some(port) = port.filter(|p| *p != 0) else { continue };
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        out.insert(port, Entry { namespace, name, local_endpoints: 0 });
    }
    if out.is_empty() {
        // the common case: nothing to count on each sync
        return out;
    }
    let mut local: HashMap<(&str, &str), BTreeSet<Ipv4Addr>> = HashMap::new();
    for sp in ports {
        let ips = local.entry((&sp.namespace, &sp.name)).or_default();
        ips.extend(sp.endpoints.iter().filter(|e| e.ready && e.node.as_deref() == Some(node)).map(|e| e.ip));
    }
    for e in out.values_mut() {
        e.local_endpoints = local.get(&(e.namespace.as_str(), e.name.as_str())).map_or(0, BTreeSet::len);
    }
    out
}

type Shared = Arc<RwLock<BTreeMap<u16, Entry>>>;

/// The running servers: started for new ports, stopped for ports no Service has.
pub struct Servers {
    entries: Shared,
    running: HashMap<u16, tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
}

impl Servers {
    pub fn new(health: Arc<Health>) -> Servers {
        Servers { entries: Shared::default(), running: HashMap::new(), health }
    }

    /// Serve exactly `wanted`. A port that cannot be bound (in use) is warned about and
    /// tried again at the next update.
    pub async fn update(&mut self, wanted: BTreeMap<u16, Entry>) {
        self.running.retain(|port, task| {
            let keep = wanted.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(port, "stopped a service health-check server");
            }
            keep
        });
        let new: Vec<(u16, Entry)> =
            wanted.iter().filter(|(p, _)| !self.running.contains_key(p)).map(|(p, e)| (*p, e.clone())).collect();
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = wanted;
        for (port, entry) in new {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let state = (port, self.entries.clone(), self.health.clone());
                    let app = Router::new().fallback(check).with_state(state);
                    tracing::info!(
                        port,
                        service = format!("{}/{}", entry.namespace, entry.name),
                        "serving a service health check"
                    );
                    self.running.insert(
                        port,
                        tokio::spawn(async move {
                            if let Err(e) = axum::serve(listener, app).await {
                                tracing::warn!(port, error = %e, "service health-check server stopped");
                            }
                        }),
                    );
                }
                Err(e) => tracing::warn!(port, error = %e, "cannot serve a service health check"),
            }
        }
    }
}

async fn check(State((port, entries, health)): State<(u16, Shared, Arc<Health>)>) -> axum::response::Response {
    let entry = entries.read().unwrap_or_else(|e| e.into_inner()).get(&port).cloned();
    let Some(e) = entry else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let healthy = health.is_healthy();
    let status = if e.local_endpoints > 0 && healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let weight = e.local_endpoints.to_string();
    let headers = [
        (http::header::CONTENT_TYPE.as_str(), "application/json"),
        (http::header::X_CONTENT_TYPE_OPTIONS.as_str(), "nosniff"),
        ("x-load-balancing-endpoint-weight", weight.as_str()),
    ];
    (status, headers, body(&e, healthy)).into_response()
}

/// Upstream's body, tab-indented as it prints it.
fn body(e: &Entry, healthy: bool) -> String {
    let (ns, name) = (serde_json::json!(e.namespace), serde_json::json!(e.name));
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {ns},\n\t\t\"name\": {name}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        e.local_endpoints
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::Endpoint;

    fn ep(ip: &str, node: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 80,
            node: Some(node.into()),
            ready,
            serving: ready,
            terminating: false,
        }
    }

    #[test]
    fn counts_this_nodes_ready_addresses_once_per_service() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000}
        }))
        .unwrap();
        let plain: Service =
            serde_json::from_value(serde_json::json!({"metadata": {"namespace": "ns", "name": "other"}})).unwrap();
        let port = |name: &str, eps: Vec<Endpoint>| ServicePort {
            namespace: "ns".into(),
            name: name.into(),
            port_name: name.into(),
            protocol: "tcp",
            cluster_ip: None,
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            affinity_seconds: None,
            internal_local: false,
            external_local: true,
            endpoints: eps,
        };
        let ports = [
            port("web", vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "a", false), ep("10.1.0.3", "b", true)]),
            port("web", vec![ep("10.1.0.1", "a", true), ep("10.1.0.4", "a", true)]),
            port("other", vec![ep("10.1.1.1", "a", true)]),
        ];
        let w = wanted(&[Arc::new(svc), Arc::new(plain)], &ports, "a");
        let e = Entry { namespace: "ns".into(), name: "web".into(), local_endpoints: 2 };
        assert_eq!(w.into_iter().collect::<Vec<_>>(), [(32000, e.clone())]);
        let text = body(&e, true);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({"service": {"namespace": "ns", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        assert!(text.starts_with("{\n\t\"service\": {\n\t\t\"namespace\": \"ns\""), "{text}");
    }
}
