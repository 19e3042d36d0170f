//! Linux-specific CRI config: cgroup resources, security context, namespaces, sysctls,
//! and the pod's QoS class.

use k8s_cri::v1::{LinuxContainerConfig, LinuxPodSandboxConfig};
use k8s_openapi::api::core::v1::{Container, Pod};

pub fn sandbox_linux(_pod: &Pod) -> LinuxPodSandboxConfig {
    LinuxPodSandboxConfig::default()
}

pub fn container_linux(_pod: &Pod, _container: &Container) -> LinuxContainerConfig {
    LinuxContainerConfig::default()
}

pub fn qos_class(_pod: &Pod) -> &'static str {
    "BestEffort"
}
