//! The node's podCIDR to the runtime: once node IPAM has given the Node its podCIDR(s),
//! the kubelet passes them on with CRI UpdateRuntimeConfig, as upstream's kubelet does,
//! so a runtime whose pod network takes its range from there (our containerd without
//! `--subnet`, which renders its CNI config from a template) hands out pod IPs inside it.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::cri::client::Cri;

/// The pause before telling a runtime that did not answer again.
const RETRY: Duration = Duration::from_secs(2);

/// The node's pod CIDRs as CRI takes them: `spec.podCIDRs` comma separated (IPv4 and
/// IPv6), else `spec.podCIDR`; None until IPAM gave any.
pub fn pod_cidrs(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    let cidrs = spec.pod_cidrs.clone().filter(|c| !c.is_empty()).or_else(|| spec.pod_cidr.clone().map(|c| vec![c]))?;
    let joined = cidrs.into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>().join(",");
    (!joined.is_empty()).then_some(joined)
}

/// Until the runtime has taken `cidrs` (it may be restarting).
async fn hand_over(cri: &Cri, node: &str, cidrs: &str) {
    loop {
        match cri.update_pod_cidr(cidrs).await {
            Ok(()) => {
                tracing::info!(node, pod_cidr = cidrs, "gave the runtime the node's podCIDR");
                return;
            }
            Err(e) => {
                tracing::warn!(node, pod_cidr = cidrs, error = %format!("{e:#}"), "giving the runtime the podCIDR; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Follow the Node `name` until the process ends, handing each new podCIDR to the runtime.
pub async fn sync(client: Client, cri: Cri, name: String) {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut given: Option<String> = None;
    while let Some(event) = stream.next().await {
        let node = match event {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "node watch for the podCIDR failed; retrying with backoff");
                continue;
            }
        };
        let Some(cidrs) = pod_cidrs(&node) else { continue };
        if given.as_deref() != Some(cidrs.as_str()) {
            hand_over(&cri, &name, &cidrs).await;
            given = Some(cidrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": spec})).unwrap()
    }

    #[test]
    fn pod_cidrs_prefer_the_list_and_wait_for_ipam() {
        let dual = node(json!({"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}));
        assert_eq!(pod_cidrs(&dual).as_deref(), Some("10.244.1.0/24,fd00:1::/64"));
        assert_eq!(pod_cidrs(&node(json!({"podCIDR": "10.244.2.0/24"}))).as_deref(), Some("10.244.2.0/24"));
        assert_eq!(pod_cidrs(&node(json!({}))), None);
        assert_eq!(pod_cidrs(&node(json!({"podCIDR": "", "podCIDRs": []}))), None);
    }
}
