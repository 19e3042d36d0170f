//! What the proxy programs, as plain data: one `ServicePort` per port of each proxied
//! Service, with the endpoints its EndpointSlices give that port. Built from the API
//! objects by `service_ports`, which is where bad input (malformed addresses, ports out
//! of range, unknown protocols) is dropped with a warning instead of reaching the rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointSlice};

/// The label joining an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services carrying this label belong to another proxy (upstream skips them too).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The Service port's name ("" when the Service has one unnamed port).
    pub port_name: String,
    /// `tcp`, `udp` or `sctp`, as iptables spells them.
    pub protocol: &'static str,
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// spec.externalIPs and status.loadBalancer.ingress IPs: reached like a NodePort.
    pub external_ips: Vec<Ipv4Addr>,
    /// Seconds of ClientIP affinity, when the Service asks for it.
    pub affinity_seconds: Option<u32>,
    pub internal_local: bool,
    pub external_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name:port`, upstream's ServicePortName: the comments' and chain hashes' key.
    pub fn key(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }
}

/// Which endpoints a service port's traffic may reach, as upstream's CategorizeEndpoints:
/// the ready ones, else (all terminating) those still serving; the node-local subset
/// for `Local` policies.
#[derive(Debug, Default)]
pub struct Categorized<'a> {
    pub cluster: Vec<&'a Endpoint>,
    pub local: Vec<&'a Endpoint>,
}

impl Categorized<'_> {
    /// The endpoints of in-cluster traffic (to the ClusterIP).
    pub fn internal(&self, sp: &ServicePort) -> &[&Endpoint] {
        if sp.internal_local { &self.local } else { &self.cluster }
    }
    /// The endpoints of traffic from outside (NodePort, external IPs).
    pub fn external(&self, sp: &ServicePort) -> &[&Endpoint] {
        if sp.external_local { &self.local } else { &self.cluster }
    }
}

fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<_> = eps.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating).collect()
}

pub fn categorize<'a>(sp: &'a ServicePort, node: &str) -> Categorized<'a> {
    let cluster = usable(sp.endpoints.iter());
    let local = if sp.internal_local || sp.external_local {
        usable(sp.endpoints.iter().filter(|e| e.node.as_deref() == Some(node)))
    } else {
        Vec::new()
    };
    Categorized { cluster, local }
}

fn protocol(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn port(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
}

/// Whether the proxy handles this Service at all.
fn proxied(svc: &Service) -> bool {
    let labelled = svc.metadata.labels.as_ref().is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
    let spec = svc.spec.as_ref();
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()).is_none_or(|ip| ip == "None" || ip.is_empty());
    let external_name = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    !labelled && !headless && !external_name
}

/// The endpoints of the slices of one Service for the port `(name, protocol)`; one per
/// address and port (a pod in two slices during a move counts once).
fn endpoints_for(slices: &[Arc<EndpointSlice>], port_name: &str, proto: &str) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let slice_port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name && protocol(p.protocol.as_deref()) == Some(proto)
        });
        let Some(target) = slice_port.and_then(|p| port(p.port)) else { continue };
        for ep in &slice.endpoints {
            if let Some(e) = endpoint(slice, ep, target)
                && seen.insert((e.ip, e.port))
            {
                out.push(e);
            }
        }
    }
    out
}

fn endpoint(slice: &EndpointSlice, ep: &ApiEndpoint, port: u16) -> Option<Endpoint> {
    let raw = ep.addresses.first()?;
    let Ok(ip) = raw.parse::<Ipv4Addr>() else {
        tracing::warn!(slice = ?slice.metadata.name, address = %raw, "skipping an endpoint with a malformed IPv4 address");
        return None;
    };
    let cond = ep.conditions.as_ref();
    // nil ready means ready; nil serving means "as ready"; nil terminating means false
    let ready = cond.and_then(|c| c.ready).unwrap_or(true);
    let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
    Some(Endpoint { ip, port, node: ep.node_name.clone(), ready, serving, terminating })
}

fn ipv4s<'a>(raw: impl Iterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    raw.filter_map(|s| s.parse().ok()).collect()
}

/// The service ports of one Service with its slices' endpoints.
pub fn service_ports(svc: &Service, slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    let (Some(spec), true) = (svc.spec.as_ref(), proxied(svc)) else { return Vec::new() };
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let with_node_port = type_ == "NodePort" || type_ == "LoadBalancer";
    let mut external_ips = ipv4s(spec.external_ips.iter().flatten());
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
    external_ips.extend(ipv4s(ingress.into_iter().flatten().filter_map(|i| i.ip.as_ref())));
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let config = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref());
        config.and_then(|c| c.timeout_seconds).and_then(|t| u32::try_from(t).ok()).unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let (Some(proto), Some(service_port)) = (protocol(p.protocol.as_deref()), port(Some(p.port))) else {
            tracing::warn!(namespace, name, port = p.port, "skipping a service port with a bad protocol or number");
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        out.push(ServicePort {
            endpoints: endpoints_for(slices, &port_name, proto),
            namespace: namespace.clone(),
            name: name.clone(),
            port_name,
            protocol: proto,
            cluster_ip,
            port: service_port,
            node_port: if with_node_port { port(p.node_port) } else { None },
            external_ips: external_ips.clone(),
            affinity_seconds,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        });
    }
    out
}

/// Every service port of the given objects, in a stable order (namespace, name, port).
pub fn snapshot(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in slices {
        let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(slice.clone());
    }
    let mut out = Vec::new();
    for svc in services {
        let key = (svc.metadata.namespace.clone().unwrap_or_default(), svc.metadata.name.clone().unwrap_or_default());
        out.extend(service_ports(svc, by_service.get(&key).map(Vec::as_slice).unwrap_or_default()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec})).unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "web-1", "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn joins_slices_by_port_name_and_skips_bad_addresses() {
        let s = svc(
            json!({"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}, {"name": "other", "port": 81}]}),
        );
        let sl = slice(json!([
            {"addresses": ["10.1.0.1"]},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": false}},
            {"addresses": ["not-an-ip"]},
            {"addresses": ["10.1.0.1"]},
        ]));
        let ports = snapshot(&[Arc::new(s)], &[sl]);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].key(), "ns/web:http");
        let eps: Vec<_> = ports[0].endpoints.iter().map(|e| (e.ip.to_string(), e.port, e.ready)).collect();
        assert_eq!(eps, [("10.1.0.1".into(), 8080, true), ("10.1.0.2".into(), 8080, false)]);
        assert!(ports[1].endpoints.is_empty(), "no slice port named other");
    }

    #[test]
    fn headless_external_name_and_foreign_services_are_not_proxied() {
        let headless = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        let ext = svc(json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}));
        let mut foreign = svc(json!({"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}));
        foreign.metadata.labels = Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string())].into());
        for s in [headless, ext, foreign] {
            assert!(service_ports(&s, &[]).is_empty());
        }
    }

    #[test]
    fn node_ports_affinity_and_policies() {
        let s = svc(json!({"type": "NodePort", "clusterIP": "10.96.0.5", "sessionAffinity": "ClientIP",
            "externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.1", "bad"],
            "ports": [{"port": 80, "nodePort": 31111, "protocol": "UDP"}, {"port": 70000}]}));
        let ports = service_ports(&s, &[]);
        assert_eq!(ports.len(), 1, "the out-of-range port is skipped");
        let p = &ports[0];
        assert_eq!((p.node_port, p.protocol, p.affinity_seconds), (Some(31111), "udp", Some(10800)));
        assert!(p.external_local && !p.internal_local);
        assert_eq!(p.external_ips, ["192.0.2.1".parse::<Ipv4Addr>().unwrap()]);
    }

    #[test]
    fn terminating_serving_endpoints_are_a_fallback_only() {
        let s = svc(
            json!({"clusterIP": "10.96.0.5", "internalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80}]}),
        );
        let terminating = json!({"ready": false, "serving": true, "terminating": true});
        let sl = slice(json!([
            {"addresses": ["10.1.0.1"], "nodeName": "a", "conditions": terminating},
            {"addresses": ["10.1.0.2"], "nodeName": "b"},
        ]));
        let ports = service_ports(&s, &[sl]);
        let on_a = categorize(&ports[0], "a");
        let ips = |v: &[&Endpoint]| v.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>();
        assert_eq!(ips(&on_a.cluster), ["10.1.0.2"]);
        assert_eq!(ips(on_a.internal(&ports[0])), ["10.1.0.1"], "the local serving terminating endpoint");
        assert!(categorize(&ports[0], "c").internal(&ports[0]).is_empty());
    }
}
