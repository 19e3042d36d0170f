//! What the API needs from the runtime, asked of CRI directly: a pod's running
//! container or ready sandbox (found by the labels every kubelet-made object carries),
//! and the streaming URLs of Exec, Attach and PortForward on the runtime's own server.

use std::collections::HashMap;

use anyhow::Context;
use k8s_cri::v1::{
    AttachRequest, ContainerFilter, ContainerState, ContainerStateValue, ExecRequest, ExecSyncRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PortForwardRequest,
};

use crate::kubelet::cri::client::Cri;

pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The id of the pod's running container of that name, if one runs.
pub async fn running_container(cri: &Cri, uid: &str, container: &str) -> anyhow::Result<Option<String>> {
    let labels =
        HashMap::from([(POD_UID.to_string(), uid.to_string()), (CONTAINER_NAME.to_string(), container.to_string())]);
    let filter = ContainerFilter {
        state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
        label_selector: labels,
        ..Default::default()
    };
    let reply = cri
        .runtime
        .clone()
        .list_containers(ListContainersRequest { filter: Some(filter) })
        .await
        .context("CRI ListContainers")?
        .into_inner();
    Ok(reply.containers.into_iter().max_by_key(|c| c.created_at).map(|c| c.id))
}

/// The id of the pod's ready sandbox (what port-forward connects into).
pub async fn ready_sandbox(cri: &Cri, uid: &str) -> anyhow::Result<Option<String>> {
    let filter = PodSandboxFilter {
        state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
        label_selector: HashMap::from([(POD_UID.to_string(), uid.to_string())]),
        ..Default::default()
    };
    let reply = cri
        .runtime
        .clone()
        .list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
        .await
        .context("CRI ListPodSandbox")?
        .into_inner();
    Ok(reply.items.into_iter().max_by_key(|s| s.created_at).map(|s| s.id))
}

/// What a streaming request asks for (the query kubectl and the API server send).
#[derive(Debug, Default, PartialEq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub ports: Vec<i32>,
}

impl StreamOptions {
    pub fn parse(query: Option<&str>) -> StreamOptions {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
        let mut o = StreamOptions::default();
        for (k, v) in pairs {
            let on = v == "1" || v.eq_ignore_ascii_case("true");
            match k.as_str() {
                "command" => o.command.push(v),
                // /run's single space-separated command
                "cmd" => o.command.extend(v.split_whitespace().map(str::to_string)),
                "stdin" | "input" => o.stdin = on,
                "stdout" | "output" => o.stdout = on,
                "stderr" | "error" => o.stderr = on,
                "tty" => o.tty = on,
                "port" | "ports" => o.ports.extend(v.split(',').filter_map(|p| p.trim().parse::<i32>().ok())),
                _ => {}
            }
        }
        o
    }
}

/// Which streaming call to make.
pub enum Stream<'a> {
    Exec { container_id: &'a str },
    Attach { container_id: &'a str },
    PortForward { sandbox_id: &'a str },
}

/// The URL on the runtime's streaming server that serves this request.
pub async fn streaming_url(cri: &Cri, what: Stream<'_>, o: &StreamOptions) -> anyhow::Result<String> {
    let mut rt = cri.runtime.clone();
    let url = match what {
        Stream::Exec { container_id } => {
            let req = ExecRequest {
                container_id: container_id.to_string(),
                cmd: o.command.clone(),
                tty: o.tty,
                stdin: o.stdin,
                stdout: o.stdout,
                stderr: o.stderr && !o.tty,
            };
            rt.exec(req).await.context("CRI Exec")?.into_inner().url
        }
        Stream::Attach { container_id } => {
            let req = AttachRequest {
                container_id: container_id.to_string(),
                stdin: o.stdin,
                tty: o.tty,
                stdout: o.stdout,
                stderr: o.stderr && !o.tty,
            };
            rt.attach(req).await.context("CRI Attach")?.into_inner().url
        }
        Stream::PortForward { sandbox_id } => {
            let req = PortForwardRequest { pod_sandbox_id: sandbox_id.to_string(), port: o.ports.clone() };
            rt.port_forward(req).await.context("CRI PortForward")?.into_inner().url
        }
    };
    Ok(url)
}

/// Run a command to completion (`/run`): its combined output, or the failure.
pub async fn exec_sync(cri: &Cri, container_id: &str, command: Vec<String>) -> anyhow::Result<(i32, Vec<u8>)> {
    let req = ExecSyncRequest { container_id: container_id.to_string(), cmd: command, timeout: 0 };
    let reply = cri.runtime.clone().exec_sync(req).await.context("CRI ExecSync")?.into_inner();
    let mut out = reply.stdout;
    out.extend_from_slice(&reply.stderr);
    Ok((reply.exit_code, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_options_from_the_query() {
        let o = StreamOptions::parse(Some("command=sh&command=-c&command=echo+hi&stdin=true&stdout=1&tty=false"));
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && !o.stderr && !o.tty);
        assert_eq!(StreamOptions::parse(Some("cmd=ls%20-l%20/")).command, ["ls", "-l", "/"]);
        assert_eq!(StreamOptions::parse(Some("ports=80,8080&port=9")).ports, [80, 8080, 9]);
        assert_eq!(StreamOptions::parse(Some("%%%")), StreamOptions::default());
    }
}
