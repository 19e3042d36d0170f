//! Commands in a running container over CRI ExecSync, for exec probes and hooks.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_cri::v1::ExecSyncRequest;

use super::client::Cri;
use crate::kubelet::spec::probes::ExecInContainer;

pub struct CriExec(pub Cri);

impl ExecInContainer for CriExec {
    fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, anyhow::Result<(i32, Vec<u8>)>> {
        let mut runtime = self.0.runtime.clone();
        let request =
            ExecSyncRequest { container_id: container_id.to_string(), cmd, timeout: timeout.as_secs().max(1) as i64 };
        Box::pin(async move {
            // the runtime enforces the timeout; ours only guards against a hung runtime
            let call = runtime.exec_sync(request);
            let reply = tokio::time::timeout(timeout + Duration::from_secs(5), call)
                .await
                .map_err(|_| anyhow::anyhow!("command timed out after {timeout:?}"))??
                .into_inner();
            let mut output = reply.stdout;
            output.extend_from_slice(&reply.stderr);
            Ok((reply.exit_code, output))
        })
    }
}
