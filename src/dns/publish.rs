//! The EndpointSlice that makes this process a backend of the cluster DNS Service:
//! ferrokube's DNS runs on the host, not in a pod, so its Service has no selector and
//! each DNS process keeps `<namespace>/<service>-<node>` pointing at the address it
//! serves on (and its metrics port, when the metrics are served on that address too, so
//! the Service's `metrics` port reaches them as CoreDNS's pod does). Applied at start and
//! every `REAPPLY` (so a deleted slice comes back), deleted at shutdown.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

/// The field manager and `endpointslice.kubernetes.io/managed-by` value of the slice.
const MANAGER: &str = "ferrokube-dns";
const REAPPLY: Duration = Duration::from_secs(30);

pub struct Publisher {
    api: Api<EndpointSlice>,
    slice: EndpointSlice,
}

impl Publisher {
    /// `service` is `namespace/name`; `metrics`: the metrics port on `ip`, if any.
    pub fn new(
        client: kube::Client,
        service: &str,
        node: &str,
        (ip, port): (IpAddr, u16),
        metrics: Option<u16>,
    ) -> anyhow::Result<Publisher> {
        let Some((namespace, name)) = service.split_once('/') else {
            anyhow::bail!("--publish-service must be namespace/name, not {service:?}");
        };
        let mut ports = vec![
            serde_json::json!({"name": "dns", "protocol": "UDP", "port": port}),
            serde_json::json!({"name": "dns-tcp", "protocol": "TCP", "port": port}),
        ];
        ports.extend(metrics.map(|port| serde_json::json!({"name": "metrics", "protocol": "TCP", "port": port})));
        let slice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-{node}"),
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": MANAGER,
                },
            },
            "addressType": if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            "endpoints": [{
                "addresses": [ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
            }],
            "ports": ports,
        }))?;
        Ok(Publisher { api: Api::namespaced(client, namespace), slice })
    }

    fn name(&self) -> &str {
        self.slice.metadata.name.as_deref().unwrap_or_default()
    }

    /// Apply now and then every `REAPPLY`, until dropped.
    pub async fn keep(&self) {
        loop {
            let params = PatchParams::apply(MANAGER).force();
            match self.api.patch(self.name(), &params, &Patch::Apply(&self.slice)).await {
                Ok(_) => tracing::debug!(slice = self.name(), "endpoint slice applied"),
                Err(e) => tracing::warn!(slice = self.name(), error = %e, "applying the endpoint slice"),
            }
            tokio::time::sleep(REAPPLY).await;
        }
    }

    pub async fn withdraw(&self) {
        match self.api.delete(self.name(), &DeleteParams::default()).await {
            Ok(_) => tracing::info!(slice = self.name(), "endpoint slice deleted"),
            Err(e) => tracing::warn!(slice = self.name(), error = %e, "deleting the endpoint slice"),
        }
    }
}
