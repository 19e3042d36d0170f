//! The pod's resolv.conf as CRI DnsConfig, per dnsPolicy and dnsConfig as upstream's
//! kubelet builds it: ClusterFirst → the cluster DNS with `<ns>.svc.<domain>` searches
//! and ndots:5; Default → the host's resolv.conf; None → only dnsConfig.

use k8s_cri::v1::DnsConfig;
use k8s_openapi::api::core::v1::Pod;

/// The host's resolver configuration upstream reads by default.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// Upstream's limit on search domains in a pod's resolv.conf.
const MAX_SEARCHES: usize = 32;

pub fn dns_config(pod: &Pod, cluster_dns: &[String], cluster_domain: &str) -> Option<DnsConfig> {
    let host = match std::fs::read_to_string(HOST_RESOLV_CONF) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(path = HOST_RESOLV_CONF, error = %e, "cannot read the host's resolv.conf");
            DnsConfig::default()
        }
    };
    Some(dns_config_with_host(pod, cluster_dns, cluster_domain, &host))
}

/// `nameserver`, `search` (the last one counts) and `options` lines.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut out = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => out.servers.extend(fields.next().map(str::to_string)),
            Some("search") => out.searches = fields.map(str::to_string).collect(),
            Some("options") => out.options.extend(fields.map(str::to_string)),
            _ => {}
        }
    }
    out
}

/// The pure part of `dns_config`, given the host's resolver configuration.
pub fn dns_config_with_host(pod: &Pod, cluster_dns: &[String], cluster_domain: &str, host: &DnsConfig) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut config = match policy {
        "None" => DnsConfig::default(),
        _ if cluster && cluster_dns.is_empty() => {
            tracing::warn!(pod = ?pod.metadata.name, "ClusterFirst policy specified without a valid --cluster-dns; falling back to \"Default\" policy");
            host.clone()
        }
        _ if cluster => cluster_config(pod, cluster_dns, cluster_domain, host),
        _ => host.clone(),
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        config.servers.extend(extra.nameservers.iter().flatten().cloned());
        config.searches.extend(extra.searches.iter().flatten().cloned());
        let options = extra.options.iter().flatten().map(|o| match &o.value {
            Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
            None => o.name.clone().unwrap_or_default(),
        });
        config.options = merge_options(&config.options, options);
    }
    config.servers = dedup(config.servers);
    config.searches = dedup(config.searches);
    config.searches.truncate(MAX_SEARCHES);
    config
}

fn cluster_config(pod: &Pod, cluster_dns: &[String], domain: &str, host: &DnsConfig) -> DnsConfig {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut searches = Vec::new();
    if !domain.is_empty() {
        searches = vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
    }
    searches.extend(host.searches.iter().cloned());
    DnsConfig { servers: cluster_dns.to_vec(), searches, options: vec!["ndots:5".to_string()] }
}

/// Options by name, a later value replacing an earlier one in place.
fn merge_options(base: &[String], extra: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for option in base.iter().cloned().chain(extra) {
        let name = option.split(':').next().unwrap_or("").to_string();
        match out.iter_mut().find(|o| o.split(':').next() == Some(name.as_str())) {
            Some(existing) => *existing = option,
            None => out.push(option),
        }
    }
    out
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in list {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests;
