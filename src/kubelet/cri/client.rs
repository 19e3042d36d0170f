//! The CRI v1 connection: gRPC over the runtime's unix socket (containerd's
//! `/run/containerd/containerd.sock` or the one `ferrokube up` starts under its data dir).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Both CRI services over one channel. Cloning is cheap (the channel is shared), so each
/// task keeps its own copy rather than locking one.
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

/// `unix:///run/containerd/containerd.sock` or a bare path → the socket's path.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// Connect lazily: the channel dials (and re-dials after the runtime restarts) on use,
    /// so a runtime that is not up yet is an error on the first call, not here.
    pub fn connect(endpoint: &str) -> anyhow::Result<Cri> {
        let path = socket_path(endpoint);
        // the URI is a placeholder: the connector below ignores it and dials the socket
        let channel = Endpoint::try_from("http://cri.invalid")
            .context("CRI endpoint")?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| dial(path.clone())));
        Ok(Cri { runtime: RuntimeServiceClient::new(channel.clone()), image: ImageServiceClient::new(channel) })
    }

    /// The runtime's name and version (`containerd://1.6.20`, as nodeInfo shows it).
    pub async fn version(&self) -> anyhow::Result<String> {
        let reply = self
            .runtime
            .clone()
            .version(k8s_cri::v1::VersionRequest { version: "v1".into() })
            .await
            .context("CRI Version")?
            .into_inner();
        Ok(format!("{}://{}", reply.runtime_name, reply.runtime_version))
    }

    /// Tell the runtime the node's pod CIDRs (comma separated, as upstream's kubelet
    /// sends `podCIDRs`), which its network config may take the pods' addresses from.
    pub async fn update_pod_cidr(&self, pod_cidr: &str) -> anyhow::Result<()> {
        use k8s_cri::v1::{NetworkConfig, RuntimeConfig, UpdateRuntimeConfigRequest};
        let network_config = Some(NetworkConfig { pod_cidr: pod_cidr.to_string() });
        let request = UpdateRuntimeConfigRequest { runtime_config: Some(RuntimeConfig { network_config }) };
        self.runtime.clone().update_runtime_config(request).await.context("CRI UpdateRuntimeConfig")?;
        Ok(())
    }
}

async fn dial(path: PathBuf) -> std::io::Result<TokioIo<UnixStream>> {
    Ok(TokioIo::new(UnixStream::connect(&path).await?))
}

/// Wait until the runtime answers Version (containerd takes 70–160 ms to start serving).
pub async fn wait_ready(cri: &Cri, socket: &Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match cri.version().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("runtime at {} did not answer", socket.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
