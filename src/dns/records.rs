//! The DNS records one Service stands for, per the Kubernetes DNS specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>) and CoreDNS's
//! `kubernetes` plug-in: the Service's name (ClusterIPs, or the ready endpoints of a
//! headless Service, or a CNAME for an ExternalName), per-endpoint names of headless
//! Services (`hostname`, else the address with dashes), SRV records per port, and the
//! PTR names of its addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};

/// Everything a Service adds to the zone; replaced as a whole when the Service or one
/// of its EndpointSlices changes.
#[derive(Default, Debug)]
pub struct ServiceRecords {
    /// Owner name → its records (a name with none exists but has no data: NODATA).
    pub names: Vec<(Name, Vec<Record>)>,
    /// Address → the name its PTR record points at.
    pub ptrs: Vec<(IpAddr, Name)>,
}

/// A port as both Services and EndpointSlices declare it.
struct Port<'a> {
    name: Option<&'a str>,
    protocol: &'a str,
    port: u16,
}

/// The records of `svc` with its EndpointSlices, under `domain` (say `cluster.local.`).
pub fn build(svc: &Service, slices: &[Arc<EndpointSlice>], domain: &Name, ttl: u32) -> ServiceRecords {
    let (Some(name), Some(ns)) = (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref()) else {
        return ServiceRecords::default();
    };
    let Ok(svc_name) = Name::from_labels([name, ns, "svc"]).and_then(|n| n.append_domain(domain)) else {
        tracing::debug!(service = name, namespace = ns, "service name is not a DNS name; no records");
        return ServiceRecords::default();
    };
    let mut out = Builder { ttl, names: BTreeMap::new(), ptrs: Vec::new() };
    out.names.entry(svc_name.clone()).or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    match spec.type_.as_deref() {
        Some("ExternalName") => out.external_name(&svc_name, spec.external_name.as_deref().unwrap_or_default()),
        _ if spec.cluster_ip.as_deref() == Some("None") => out.headless(&svc_name, slices),
        _ => {
            let ips = spec.cluster_ips.clone().unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
            let ports = spec.ports.iter().flatten().filter_map(|p| {
                let port = u16::try_from(p.port).ok()?;
                Some(Port { name: p.name.as_deref(), protocol: p.protocol.as_deref().unwrap_or("TCP"), port })
            });
            out.cluster_ip(&svc_name, &ips, ports.collect());
        }
    }
    out.finish()
}

struct Builder {
    ttl: u32,
    names: BTreeMap<Name, Vec<Record>>,
    ptrs: Vec<(IpAddr, Name)>,
}

impl Builder {
    fn add(&mut self, name: &Name, data: RData) {
        let records = self.names.entry(name.clone()).or_default();
        if !records.iter().any(|r| r.data == data) {
            records.push(Record::from_rdata(name.clone(), self.ttl, data));
        }
    }

    fn address(&mut self, name: &Name, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(name, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(name, RData::AAAA(AAAA(v6))),
        }
    }

    fn external_name(&mut self, svc_name: &Name, target: &str) {
        match Name::from_ascii(target.trim_end_matches('.')).map(|mut n| {
            n.set_fqdn(true);
            n
        }) {
            Ok(target) if !target.is_root() => self.add(svc_name, RData::CNAME(CNAME(target))),
            _ => {
                tracing::warn!(service = %svc_name, external_name = target, "externalName is not a DNS name; no CNAME")
            }
        }
    }

    fn cluster_ip(&mut self, svc_name: &Name, ips: &[String], ports: Vec<Port>) {
        for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
            self.address(svc_name, ip);
            self.ptrs.push((ip, svc_name.clone()));
        }
        for port in &ports {
            self.srv(svc_name, port, svc_name);
        }
    }

    /// The ready endpoints: each one's address at the Service's name and at its own
    /// (`hostname`, else the address with dashes), SRV per slice port pointing at it.
    fn headless(&mut self, svc_name: &Name, slices: &[Arc<EndpointSlice>]) {
        for slice in slices {
            let ports: Vec<Port> = slice.ports.iter().flatten().filter_map(slice_port).collect();
            for endpoint in &slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for ip in endpoint.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let label = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
                    let Ok(own) = svc_name.prepend_label(label.as_str()) else {
                        tracing::debug!(service = %svc_name, hostname = label, "endpoint hostname is not a DNS label");
                        continue;
                    };
                    self.address(svc_name, ip);
                    self.address(&own, ip);
                    self.ptrs.push((ip, own.clone()));
                    for port in &ports {
                        self.srv(svc_name, port, &own);
                    }
                }
            }
        }
    }

    /// `_<port>._<proto>.<svc>` for a named port, and the Service's own name (which
    /// CoreDNS answers SRV queries for with every port).
    fn srv(&mut self, svc_name: &Name, port: &Port, target: &Name) {
        let data = RData::SRV(SRV::new(0, 100, port.port, target.clone()));
        self.add(svc_name, data.clone());
        let Some(port_name) = port.name.filter(|n| !n.is_empty()) else { return };
        let labels = [format!("_{port_name}"), format!("_{}", port.protocol.to_ascii_lowercase())];
        match Name::from_labels(labels.iter().map(String::as_str)).and_then(|n| n.append_name(svc_name)) {
            Ok(name) => self.add(&name, data),
            Err(e) => {
                tracing::debug!(service = %svc_name, port = port_name, error = %e, "port name is not a DNS label")
            }
        }
    }

    fn finish(self) -> ServiceRecords {
        ServiceRecords { names: self.names.into_iter().collect(), ptrs: self.ptrs }
    }
}

fn slice_port(p: &EndpointPort) -> Option<Port<'_>> {
    let port = u16::try_from(p.port?).ok()?;
    Some(Port { name: p.name.as_deref(), protocol: p.protocol.as_deref().unwrap_or("TCP"), port })
}

/// `10-1-2-3` for 10.1.2.3, `fd00--1` for fd00::1: an address as one DNS label, as
/// CoreDNS names endpoints without a hostname and pods.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a dashed label stands for, if it is one.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    label.replace('-', ".").parse().ok().or_else(|| label.replace('-', ":").parse().ok())
}

#[cfg(test)]
mod tests;
