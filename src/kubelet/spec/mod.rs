//! Pod spec → CRI configuration: what a container sees (env, mounts, DNS, Linux
//! resources and security) and how it is checked (probes, lifecycle hooks). The pod
//! workers in `cri/` call these; nothing here talks to the runtime itself.

pub mod dns;
pub mod env;
pub mod linux;
pub mod probes;
mod refs;
pub mod volumes;

/// What upstream reports as CreateContainerConfigError; the Display is the waiting message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the pod runs, for fieldRef / downwardAPI / hosts.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
}
