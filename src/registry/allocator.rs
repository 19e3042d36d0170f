//! Cluster IP and node port pools. An allocation is a key written in the same etcd
//! transaction as the Service (`/registry/ipaddresses/<ip>`, an IPAddress object as
//! upstream 1.33 keeps; `/registry/ranges/servicenodeports/<port>`), so two Services can
//! never hold the same address: the second transaction's compare fails and it retries.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::json;

use super::keys::KeySpace;
use super::store::Claim;

pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

#[derive(Clone)]
pub struct Allocator {
    pub service_range: Ipv4Net,
    keys: KeySpace,
}

impl Allocator {
    pub fn new(service_range: Ipv4Net, keys: KeySpace) -> Self {
        Allocator { service_range, keys }
    }

    pub fn ip_prefix(&self) -> String {
        self.keys.raw("ipaddresses/")
    }

    pub fn port_prefix(&self) -> String {
        self.keys.raw("ranges/servicenodeports/")
    }

    pub fn ip_key(&self, ip: Ipv4Addr) -> String {
        format!("{}{ip}", self.ip_prefix())
    }

    pub fn port_key(&self, port: u16) -> String {
        format!("{}{port}", self.port_prefix())
    }

    /// The first address of the range belongs to the `kubernetes` Service.
    pub fn first_ip(&self) -> Ipv4Addr {
        let base = u32::from(self.service_range.network());
        Ipv4Addr::from(base + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.service_range.contains(&ip) && ip != self.service_range.network() && ip != self.service_range.broadcast()
    }

    /// A free address: random picks first (cheap in big ranges), then a scan.
    pub fn pick_ip(&self, taken: &HashSet<String>) -> Option<Ipv4Addr> {
        let base = u32::from(self.service_range.network());
        let size = 1u64 << (32 - self.service_range.prefix_len());
        if size < 4 {
            return None;
        }
        // skip the network address, the kubernetes service's address and broadcast
        let (lo, hi) = (base as u64 + 2, base as u64 + size - 2);
        let free = |ip: Ipv4Addr| !taken.contains(&self.ip_key(ip));
        for _ in 0..32 {
            let ip = Ipv4Addr::from(fastrand::u64(lo..=hi) as u32);
            if free(ip) {
                return Some(ip);
            }
        }
        (lo..=hi).map(|v| Ipv4Addr::from(v as u32)).find(|ip| free(*ip))
    }

    pub fn pick_port(&self, taken: &HashSet<String>, also_taken: &[u16]) -> Option<u16> {
        let free = |p: u16| !also_taken.contains(&p) && !taken.contains(&self.port_key(p));
        for _ in 0..32 {
            let p = fastrand::u16(NODE_PORT_RANGE);
            if free(p) {
                return Some(p);
            }
        }
        NODE_PORT_RANGE.into_iter().find(|p| free(*p))
    }

    /// The IPAddress object that records who holds `ip`.
    pub fn ip_claim(&self, ip: Ipv4Addr, namespace: &str, name: &str) -> Claim {
        let obj = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip.to_string(),
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": super::meta::now_rfc3339(),
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
                },
            },
            "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name}},
        });
        Claim { key: self.ip_key(ip), value: serde_json::to_vec(&obj).unwrap_or_default() }
    }

    pub fn port_claim(&self, port: u16, namespace: &str, name: &str) -> Claim {
        let owner = json!({"namespace": namespace, "name": name, "port": port});
        Claim { key: self.port_key(port), value: serde_json::to_vec(&owner).unwrap_or_default() }
    }
}
