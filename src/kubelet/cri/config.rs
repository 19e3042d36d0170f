//! A pod's CRI configs: the sandbox's (hostname, DNS, host ports, labels, log directory,
//! namespaces) and each container's (image, command, env, mounts, Linux settings, log
//! path). What a container sees comes from `kubelet::spec`; this module only assembles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PortMapping, Protocol,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

use super::labels;
use crate::kubelet::spec::{self, ConfigError, PodFacts};

/// Where a pod's container logs go: `<pod-logs-dir>/<namespace>_<name>_<uid>`.
pub fn log_directory(pod_logs_dir: &Path, pod: &Pod) -> PathBuf {
    pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

/// `<container>/<restartCount>.log`, relative to the log directory: one file per run.
pub fn log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

fn mode(node: bool, shared: bool) -> i32 {
    match (node, shared) {
        (true, _) => NamespaceMode::Node as i32,
        (false, true) => NamespaceMode::Pod as i32,
        (false, false) => NamespaceMode::Container as i32,
    }
}

/// The namespaces a container gets, set explicitly: left out, containerd would share the
/// pod's PID namespace.
fn namespaces(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    NamespaceOption {
        network: mode(spec.host_network == Some(true), true),
        pid: mode(spec.host_pid == Some(true), spec.share_process_namespace == Some(true)),
        ipc: mode(spec.host_ipc == Some(true), true),
        ..Default::default()
    }
}

fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let spec = pod.spec.clone().unwrap_or_default();
    let ports = spec.containers.iter().flat_map(|c| c.ports.clone().unwrap_or_default());
    ports
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p| PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp as i32,
                Some("SCTP") => Protocol::Sctp as i32,
                _ => Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.unwrap_or_default(),
        })
        .collect()
}

pub struct SandboxParams<'a> {
    pub pod_logs_dir: &'a Path,
    pub cluster_dns: &'a [String],
    pub cluster_domain: &'a str,
}

pub fn sandbox(pod: &Pod, attempt: u32, p: &SandboxParams) -> PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = match spec.host_network {
        Some(true) => crate::certs::hostname(),
        _ => spec.hostname.clone().unwrap_or_else(|| pod.name_any()),
    };
    let mut linux = spec::linux::sandbox_linux(pod);
    let security = linux.security_context.get_or_insert_with(Default::default);
    if security.namespace_options.is_none() {
        security.namespace_options = Some(namespaces(pod));
    }
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(p.pod_logs_dir, pod).display().to_string(),
        dns_config: spec::dns::dns_config(pod, p.cluster_dns, p.cluster_domain),
        port_mappings: port_mappings(pod),
        labels: labels::sandbox(pod),
        annotations: pod.annotations().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        linux: Some(linux),
        windows: None,
    }
}

pub struct ContainerParams<'a> {
    pub client: &'a kube::Client,
    pub facts: &'a PodFacts,
    pub volumes: &'a spec::volumes::PodVolumes,
    pub image_ref: &'a str,
    pub attempt: u32,
}

pub async fn container(pod: &Pod, c: &Container, p: &ContainerParams<'_>) -> Result<ContainerConfig, ConfigError> {
    let envs = spec::env::container_env(p.client, pod, c, p.facts).await?;
    let (command, args) = spec::env::expand_command(c, &envs);
    let mounts = p.volumes.mounts(pod, c)?;
    let mut linux = spec::linux::container_linux(pod, c);
    let security = linux.security_context.get_or_insert_with(Default::default);
    if security.namespace_options.is_none() {
        security.namespace_options = Some(namespaces(pod));
    }
    let annotations = HashMap::from([(labels::RESTART_COUNT.to_string(), p.attempt.to_string())]);
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata { name: c.name.clone(), attempt: p.attempt }),
        image: Some(ImageSpec { image: p.image_ref.to_string(), ..Default::default() }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels: labels::container(pod, &c.name),
        annotations,
        log_path: log_path(&c.name, p.attempt),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(linux),
        ..Default::default()
    })
}
