//! The pod's resolv.conf as CRI DnsConfig, per dnsPolicy and dnsConfig.

use k8s_cri::v1::DnsConfig;
use k8s_openapi::api::core::v1::Pod;

pub fn dns_config(_pod: &Pod, _cluster_dns: &[String], _cluster_domain: &str) -> Option<DnsConfig> {
    None
}
