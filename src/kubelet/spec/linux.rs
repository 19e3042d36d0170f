//! Linux-specific CRI config: cgroup resources from requests and limits, the effective
//! security context (pod merged under container), namespaces, sysctls, and the pod's QoS
//! class, as upstream's kubelet computes them.

use std::collections::BTreeMap;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, Int64Value, LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, SecurityProfile,
};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, ResourceRequirements, SeccompProfile, SecurityContext,
};

use super::ConfigError;
use crate::quantity::Quantity;

/// cgroup v1 cpu.shares bounds and the CFS period upstream uses.
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const CFS_PERIOD_US: i64 = 100_000;
const MIN_QUOTA_US: i64 = 1_000;
/// oom_score_adj: Guaranteed pods are killed last, BestEffort first.
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// What /proc is masked and made read-only with unless the container is privileged
/// (the runtime applies only the lists it is given).
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

pub fn sandbox_linux(pod: &Pod) -> LinuxPodSandboxConfig {
    let spec = pod.spec.as_ref();
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let any_privileged = all_containers(pod).any(|c| sc_flag(c.security_context.as_ref(), |s| s.privileged));
    let security = LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: psc.and_then(|s| s.run_as_user).map(|value| Int64Value { value }),
        run_as_group: psc.and_then(|s| s.run_as_group).map(|value| Int64Value { value }),
        supplemental_groups: supplemental_groups(psc),
        privileged: any_privileged,
        seccomp: Some(seccomp(psc.and_then(|s| s.seccomp_profile.as_ref()))),
        ..Default::default()
    };
    let sysctls = psc.and_then(|s| s.sysctls.as_ref()).into_iter().flatten();
    LinuxPodSandboxConfig {
        security_context: Some(security),
        sysctls: sysctls.map(|s| (s.name.clone(), s.value.clone())).collect(),
        ..Default::default()
    }
}

pub fn container_linux(pod: &Pod, container: &Container) -> LinuxContainerConfig {
    LinuxContainerConfig {
        resources: Some(container_resources(pod, container, machine_memory_bytes())),
        security_context: Some(container_security(pod, container)),
    }
}

/// Upstream's QoS class from the cpu and memory requests and limits of all containers.
pub fn qos_class(pod: &Pod) -> &'static str {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in all_containers(pod) {
        let (req, lim) = effective_resources(c.resources.as_ref());
        for (name, q) in req.into_iter().filter(|(_, q)| !q.is_zero()) {
            let sum = requests.entry(name).or_default();
            *sum = sum.add(q);
        }
        let mut found = 0;
        for (name, q) in lim.into_iter().filter(|(_, q)| !q.is_zero()) {
            found += 1;
            let sum = limits.entry(name).or_default();
            *sum = sum.add(q);
        }
        guaranteed &= found == 2;
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    guaranteed &= requests.iter().all(|(name, q)| limits.get(name) == Some(q));
    match guaranteed && requests.len() == limits.len() {
        true => "Guaranteed",
        false => "Burstable",
    }
}

/// The container's runAsNonRoot check, made once the image's user is known (ImageStatus'
/// `uid` / `username`): the CreateContainerConfigError message upstream gives.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_uid: Option<i64>,
    image_username: &str,
) -> Result<(), ConfigError> {
    let sc = effective_security(pod, container);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = format!("{:?}", pod_ref(pod));
    let name = &container.name;
    if let Some(uid) = sc.run_as_user {
        return match uid {
            0 => Err(ConfigError(format!(
                "container's runAsUser breaks non-root policy (pod: {who}, container: {name})"
            ))),
            _ => Ok(()),
        };
    }
    // an image naming no user runs as root
    let image_uid = image_uid.or(image_username.is_empty().then_some(0));
    match image_uid {
        Some(0) => Err(ConfigError(format!(
            "container has runAsNonRoot and image will run as root (pod: {who}, container: {name})"
        ))),
        None => Err(ConfigError(format!(
            "container has runAsNonRoot and image has non-numeric user ({image_username}), cannot verify user is non-root (pod: {who}, container: {name})"
        ))),
        Some(_) => Ok(()),
    }
}

/// `name_namespace(uid)`, how upstream names a pod in messages.
fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    format!("{}_{}({})", s(&m.name), s(&m.namespace), s(&m.uid))
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.map(|s| s.containers.iter())
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten())
}

fn sc_flag(sc: Option<&SecurityContext>, f: impl Fn(&SecurityContext) -> Option<bool>) -> bool {
    sc.and_then(f).unwrap_or(false)
}

/// cpu and memory requests and limits; a request left out is the limit (as the API's
/// defaulting makes it).
fn effective_resources(
    r: Option<&ResourceRequirements>,
) -> (BTreeMap<&'static str, Quantity>, BTreeMap<&'static str, Quantity>) {
    let get = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k: &str| {
        m.and_then(|m| m.get(k)).and_then(|q| Quantity::parse(&q.0))
    };
    let (mut req, mut lim) = (BTreeMap::new(), BTreeMap::new());
    for name in ["cpu", "memory"] {
        let limit = get(r.and_then(|r| r.limits.as_ref()), name);
        let request = get(r.and_then(|r| r.requests.as_ref()), name).or(limit);
        req.extend(request.map(|q| (name, q)));
        lim.extend(limit.map(|q| (name, q)));
    }
    (req, lim)
}

/// cpu.shares from the request, CFS quota from the limit, the memory limit (swap equal
/// to it: no swap), oom_score_adj by QoS.
pub fn container_resources(pod: &Pod, container: &Container, machine_memory: i64) -> LinuxContainerResources {
    let (req, lim) = effective_resources(container.resources.as_ref());
    let cpu_request = req.get("cpu").map(Quantity::milli_value).unwrap_or(0);
    let memory_limit = lim.get("memory").map(Quantity::value).unwrap_or(0);
    let (cpu_quota, cpu_period) = match lim.get("cpu").map(Quantity::milli_value).filter(|m| *m > 0) {
        Some(milli) => ((milli * CFS_PERIOD_US / 1000).max(MIN_QUOTA_US), CFS_PERIOD_US),
        None => (0, 0),
    };
    let memory_request = req.get("memory").map(Quantity::value).unwrap_or(0);
    LinuxContainerResources {
        cpu_shares: cpu_shares(cpu_request),
        cpu_quota,
        cpu_period,
        memory_limit_in_bytes: memory_limit,
        memory_swap_limit_in_bytes: memory_limit,
        oom_score_adj: oom_score_adj(qos_class(pod), memory_request, machine_memory),
        ..Default::default()
    }
}

fn cpu_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

fn oom_score_adj(qos: &str, memory_request: i64, machine_memory: i64) -> i64 {
    match qos {
        "Guaranteed" => GUARANTEED_OOM_SCORE_ADJ,
        "BestEffort" => BEST_EFFORT_OOM_SCORE_ADJ,
        _ => {
            let adj = 1000 - (1000 * memory_request as i128 / machine_memory.max(1) as i128) as i64;
            // below any Guaranteed pod's score is not allowed; above BestEffort's neither
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

fn machine_memory_bytes() -> i64 {
    Quantity::parse(&crate::kubelet::node::machine_memory()).map(|q| q.value()).unwrap_or(i64::MAX)
}

/// The container's security context over the pod's (upstream's
/// DetermineEffectiveSecurityContext, for the fields the runtime uses).
fn effective_security(pod: &Pod, container: &Container) -> SecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let mut sc = container.security_context.clone().unwrap_or_default();
    sc.run_as_user = sc.run_as_user.or(psc.run_as_user);
    sc.run_as_group = sc.run_as_group.or(psc.run_as_group);
    sc.run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root);
    sc.seccomp_profile = sc.seccomp_profile.or(psc.seccomp_profile);
    sc.se_linux_options = sc.se_linux_options.or(psc.se_linux_options);
    sc
}

fn container_security(pod: &Pod, container: &Container) -> LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = effective_security(pod, container);
    let privileged = sc.privileged.unwrap_or(false);
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let (masked, readonly) = match privileged || unmasked {
        true => (Vec::new(), Vec::new()),
        false => (strings(MASKED_PATHS), strings(READONLY_PATHS)),
    };
    let capabilities = sc.capabilities.as_ref().map(|c| Capability {
        add_capabilities: c.add.clone().unwrap_or_default(),
        drop_capabilities: c.drop.clone().unwrap_or_default(),
        ..Default::default()
    });
    LinuxContainerSecurityContext {
        capabilities,
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc.run_as_user.map(|value| Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(psc),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: masked,
        readonly_paths: readonly,
        seccomp: Some(seccomp(sc.seccomp_profile.as_ref())),
        ..Default::default()
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The pod's supplementalGroups plus its fsGroup.
fn supplemental_groups(psc: Option<&PodSecurityContext>) -> Vec<i64> {
    let mut groups: Vec<i64> = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
    if let Some(fs_group) = psc.and_then(|s| s.fs_group).filter(|g| !groups.contains(g)) {
        groups.push(fs_group);
    }
    groups
}

/// No profile is Unconfined, as upstream without SeccompDefault (the CRI's zero value
/// would mean RuntimeDefault).
fn seccomp(profile: Option<&SeccompProfile>) -> SecurityProfile {
    let (profile_type, localhost_ref) = match profile.map(|p| p.type_.as_str()) {
        Some("RuntimeDefault") => (ProfileType::RuntimeDefault, String::new()),
        Some("Localhost") => {
            let path = profile.and_then(|p| p.localhost_profile.clone()).unwrap_or_default();
            (ProfileType::Localhost, format!("localhost/{path}"))
        }
        _ => (ProfileType::Unconfined, String::new()),
    };
    SecurityProfile { profile_type: profile_type as i32, localhost_ref }
}

/// Network and IPC per pod (or the node's), PID per container unless
/// shareProcessNamespace (or hostPID).
pub fn namespace_options(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| spec.and_then(f).unwrap_or(false);
    let mode = |host: bool, shared: NamespaceMode| match host {
        true => NamespaceMode::Node as i32,
        false => shared as i32,
    };
    let pid_scope = match flag(|s| s.share_process_namespace) {
        true => NamespaceMode::Pod,
        false => NamespaceMode::Container,
    };
    NamespaceOption {
        network: mode(flag(|s| s.host_network), NamespaceMode::Pod),
        pid: mode(flag(|s| s.host_pid), pid_scope),
        ipc: mode(flag(|s| s.host_ipc), NamespaceMode::Pod),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
