//! The /etc/hosts the kubelet manages for each pod: localhost entries, the pod's own
//! name on each pod IP (with its subdomain FQDN), then hostAliases; a host-network pod
//! gets the node's /etc/hosts plus its hostAliases.

use k8s_openapi::api::core::v1::Pod;

/// Upstream's limit on a pod's hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// The pod's hostname and, with a subdomain, its domain (`<sub>.<ns>.svc.<cluster domain>`).
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = spec.and_then(|s| s.hostname.clone()).filter(|h| !h.is_empty());
    let mut hostname = name.or_else(|| pod.metadata.name.clone()).unwrap_or_default();
    if hostname.len() > MAX_HOSTNAME {
        hostname.truncate(MAX_HOSTNAME);
        hostname = hostname.trim_end_matches(['-', '.']).to_string();
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty());
    (hostname, subdomain.map(|sub| format!("{sub}.{ns}.svc.{cluster_domain}")))
}

pub fn content(pod: &Pod, pod_ips: &[String], cluster_domain: &str, node_hosts: &str) -> String {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let mut out = String::new();
    if host_network {
        out.push_str(node_hosts);
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str(
            "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        let (hostname, domain) = hostname_and_domain(pod, cluster_domain);
        for ip in pod_ips {
            match &domain {
                Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_deref()).unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    out
}
