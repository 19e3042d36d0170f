//! Pod volumes on the node, under `<root-dir>/pods/<uid>/volumes/<plugin>/<volume>/` as
//! upstream lays them out: emptyDir (a directory, or tmpfs for medium Memory),
//! configMap / secret / downwardAPI / projected (files by the atomic writer, refreshed
//! on every prepare, mounted read-only), hostPath and persistentVolumeClaim (host
//! directories). Then, per container, the CRI mounts: volumeMounts (subPath,
//! subPathExpr, readOnly, propagation), the managed /etc/hosts and the termination log.

pub mod host;
pub mod hosts_file;
mod payload;
mod token;
pub mod writer;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use k8s_cri::v1::{Mount, MountPropagation};
use k8s_openapi::api::core::v1::{Container, Pod, ProjectedVolumeSource, Volume};

use super::env::{expand, local_env};
use super::refs::Objects;
use super::{ConfigError, PodFacts};
use crate::quantity::Quantity;
use writer::Payload;

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";
const HOSTS_FILE: &str = "etc-hosts";
const NODE_HOSTS: &str = "/etc/hosts";

static CLUSTER_DOMAIN: OnceLock<String> = OnceLock::new();

/// The kubelet's `--cluster-domain`, for the subdomain FQDN in /etc/hosts (set once at
/// start; `cluster.local` until then).
pub fn set_cluster_domain(domain: &str) {
    let _ = CLUSTER_DOMAIN.set(domain.to_string());
}

fn cluster_domain() -> &'static str {
    CLUSTER_DOMAIN.get().map(String::as_str).unwrap_or("cluster.local")
}

/// One prepared volume: where it is on the host, and whether it is API data (always
/// mounted read-only, as upstream does).
#[derive(Debug, Clone)]
struct Prepared {
    path: PathBuf,
    read_only: bool,
}

/// The volumes of one pod, prepared on the host.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pod_dir: PathBuf,
    facts: PodFacts,
    volumes: HashMap<String, Prepared>,
    hosts_file: Option<PathBuf>,
}

impl PodVolumes {
    /// Materialize every volume under pod_dir; idempotent; re-running refreshes
    /// configMap/secret/downwardAPI/projected content atomically (..data symlink swap).
    pub async fn prepare(
        client: &kube::Client,
        pod: &Pod,
        facts: &PodFacts,
        pod_dir: &Path,
    ) -> Result<PodVolumes, ConfigError> {
        let io = |e: std::io::Error| ConfigError(format!("preparing {}: {e}", pod_dir.display()));
        tokio::fs::create_dir_all(pod_dir.join("volumes")).await.map_err(io)?;
        let spec = pod.spec.as_ref();
        let volumes = spec.and_then(|s| s.volumes.as_deref()).unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let (cms, secrets) = referenced(volumes);
        let objects = Objects::fetch(client, namespace, cms, secrets).await;
        let ctx = Ctx { client, pod, facts, pod_dir, objects: &objects };
        let mut prepared = HashMap::new();
        for volume in volumes {
            let one = ctx.prepare(volume).await.map_err(|cause| {
                tracing::warn!(pod = ?pod.metadata.name, volume = %volume.name, %cause, "volume set-up failed");
                ConfigError(format!("MountVolume.SetUp failed for volume {:?} : {cause}", volume.name))
            })?;
            prepared.insert(volume.name.clone(), one);
        }
        let hosts_file = write_hosts_file(pod, facts, pod_dir).await.map_err(io)?;
        Ok(PodVolumes { pod_dir: pod_dir.to_path_buf(), facts: facts.clone(), volumes: prepared, hosts_file })
    }

    /// The container's mounts (volumeMounts incl. subPath/readOnly, plus /etc/hosts and
    /// the termination-log file).
    pub fn mounts(&self, pod: &Pod, container: &Container) -> Result<Vec<Mount>, ConfigError> {
        let mut out = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let volume = self.volumes.get(&vm.name).ok_or_else(|| {
                ConfigError(format!("cannot find volume {:?} to mount into container {:?}", vm.name, container.name))
            })?;
            let host_path = match self.sub_path(pod, container, vm)? {
                Some(sub) => resolve_sub_path(&volume.path, &sub).map_err(ConfigError)?,
                None => volume.path.clone(),
            };
            let propagation = match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                _ => MountPropagation::PropagationPrivate,
            };
            out.push(Mount {
                container_path: vm.mount_path.clone(),
                host_path: host_path.display().to_string(),
                readonly: vm.read_only.unwrap_or(false) || volume.read_only,
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        let mounted = |out: &[Mount], path: &str| out.iter().any(|m| m.container_path == path);
        if let Some(hosts) = self.hosts_file.as_ref().filter(|_| !mounted(&out, "/etc/hosts")) {
            out.push(bind(hosts, "/etc/hosts"));
        }
        let log_path = container.termination_message_path.as_deref().unwrap_or("/dev/termination-log");
        if !log_path.is_empty() && !mounted(&out, log_path) {
            let file = self.termination_log(container).map_err(|e| ConfigError(format!("termination log: {e}")))?;
            out.push(bind(&file, log_path));
        }
        Ok(out)
    }

    /// subPath, or subPathExpr expanded with the container's own variables.
    fn sub_path(
        &self,
        pod: &Pod,
        container: &Container,
        vm: &k8s_openapi::api::core::v1::VolumeMount,
    ) -> Result<Option<String>, ConfigError> {
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            return Ok(Some(sub.to_string()));
        }
        let Some(expr) = vm.sub_path_expr.as_deref().filter(|s| !s.is_empty()) else { return Ok(None) };
        let env = local_env(pod, container, &self.facts);
        let missing = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            let value = env.get(name).cloned().filter(|v| !v.is_empty());
            Some(value.unwrap_or_else(|| {
                missing.borrow_mut().push(name.to_string());
                String::new()
            }))
        };
        let expanded = expand(expr, &lookup);
        let mut missing = missing.into_inner();
        if !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(ConfigError(format!("missing value for {}", missing.join(", "))));
        }
        Ok(Some(expanded))
    }

    /// A fresh, empty file per container start, under `containers/<name>/`.
    fn termination_log(&self, container: &Container) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.pod_dir.join("containers").join(&container.name);
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(format!("{:08x}", fastrand::u32(..)));
        std::fs::File::create(&file)?;
        // the container may run as any user and must be able to write its message
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
        Ok(file)
    }
}

fn bind(host: &Path, container_path: &str) -> Mount {
    Mount { container_path: container_path.to_string(), host_path: host.display().to_string(), ..Default::default() }
}

/// `volume/sub`, created as a directory when missing, and kept inside the volume even
/// through symlinks.
fn resolve_sub_path(volume: &Path, sub: &str) -> Result<PathBuf, String> {
    let rel = Path::new(sub);
    if rel.is_absolute() || rel.components().any(|c| c == Component::ParentDir) {
        return Err(format!("invalid subpath {sub:?}: must be a relative path without '..'"));
    }
    let path = volume.join(rel);
    if std::fs::symlink_metadata(&path).is_err() {
        std::fs::create_dir_all(&path).map_err(|e| format!("failed to create subPath directory {sub:?}: {e}"))?;
    }
    let real = std::fs::canonicalize(&path).map_err(|e| format!("subpath {sub:?}: {e}"))?;
    let root = std::fs::canonicalize(volume).map_err(|e| format!("volume {}: {e}", volume.display()))?;
    if !real.starts_with(&root) {
        return Err(format!("subpath {:?} not within volume path {:?}", real.display(), root.display()));
    }
    Ok(real)
}

/// ConfigMaps and Secrets the pod's volumes name.
fn referenced(volumes: &[Volume]) -> (Vec<&str>, Vec<&str>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for v in volumes {
        cms.extend(v.config_map.as_ref().map(|c| c.name.as_str()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.as_deref()));
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            cms.extend(source.config_map.as_ref().map(|c| c.name.as_str()));
            secrets.extend(source.secret.as_ref().map(|s| s.name.as_str()));
        }
    }
    (cms, secrets)
}

/// What preparing one volume needs.
struct Ctx<'a> {
    client: &'a kube::Client,
    pod: &'a Pod,
    facts: &'a PodFacts,
    pod_dir: &'a Path,
    objects: &'a Objects,
}

impl Ctx<'_> {
    async fn prepare(&self, v: &Volume) -> Result<Prepared, String> {
        let dir = |plugin: &str| self.pod_dir.join("volumes").join(plugin).join(&v.name);
        let data = |path: PathBuf| Prepared { path, read_only: true };
        if let Some(e) = &v.empty_dir {
            let size = e.size_limit.as_ref().and_then(|q| Quantity::parse(&q.0)).map(|q| q.value());
            let path = dir(EMPTY_DIR);
            empty_dir(&path, e.medium.as_deref().unwrap_or(""), size, self.fs_group())?;
            return Ok(Prepared { path, read_only: false });
        }
        if let Some(hp) = &v.host_path {
            let path = host::check_host_path(&hp.path, hp.type_.as_deref().unwrap_or(""))?;
            return Ok(Prepared { path, read_only: false });
        }
        if let Some(claim) = &v.persistent_volume_claim {
            let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
            let path = host::claim_path(self.client, ns, &claim.claim_name).await?;
            return Ok(Prepared { path, read_only: claim.read_only.unwrap_or(false) });
        }
        if v.ephemeral.is_some() {
            // a generic ephemeral volume is the claim `<pod>-<volume>` its controller made
            let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
            let claim = format!("{}-{}", self.pod.metadata.name.as_deref().unwrap_or(""), v.name);
            return Ok(Prepared { path: host::claim_path(self.client, ns, &claim).await?, read_only: false });
        }
        let (plugin, payload) = self.api_data(v).await?;
        let path = dir(plugin);
        self.write(&path, payload).await?;
        Ok(data(path))
    }

    fn fs_group(&self) -> Option<u32> {
        let psc = self.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        psc.and_then(|s| s.fs_group).and_then(|g| u32::try_from(g).ok())
    }

    /// The files of a configMap, secret, downwardAPI or projected volume.
    async fn api_data(&self, v: &Volume) -> Result<(&'static str, Payload), String> {
        if let Some(c) = &v.config_map {
            let optional = c.optional.unwrap_or(false);
            let cm = self.objects.config_map(&c.name, optional).map_err(|e| e.0)?;
            let mode = c.default_mode.unwrap_or(payload::DEFAULT_MODE);
            return Ok((CONFIG_MAP, payload::config_map(cm, c.items.as_deref(), mode, optional)?));
        }
        if let Some(s) = &v.secret {
            let optional = s.optional.unwrap_or(false);
            let name = s.secret_name.as_deref().unwrap_or("");
            let secret = self.objects.secret(name, optional).map_err(|e| e.0)?;
            let mode = s.default_mode.unwrap_or(payload::DEFAULT_MODE);
            return Ok((SECRET, payload::secret(secret, s.items.as_deref(), mode, optional)?));
        }
        if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(payload::DEFAULT_MODE);
            let items = d.items.as_deref().unwrap_or_default();
            return Ok((DOWNWARD_API, payload::downward_api(self.pod, self.facts, items, mode)?));
        }
        if let Some(p) = &v.projected {
            let path = self.pod_dir.join("volumes").join(PROJECTED).join(&v.name);
            return Ok((PROJECTED, self.projected(p, &path).await?));
        }
        Err("unsupported volume type: this node supports emptyDir, configMap, secret, downwardAPI, projected, hostPath, persistentVolumeClaim and ephemeral".into())
    }

    async fn projected(&self, p: &ProjectedVolumeSource, path: &Path) -> Result<Payload, String> {
        let mode = p.default_mode.unwrap_or(payload::DEFAULT_MODE);
        let mut out = Payload::new();
        for source in p.sources.iter().flatten() {
            if let Some(c) = &source.config_map {
                let optional = c.optional.unwrap_or(false);
                let cm = self.objects.config_map(&c.name, optional).map_err(|e| e.0)?;
                out.extend(payload::config_map(cm, c.items.as_deref(), mode, optional)?);
            }
            if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                let secret = self.objects.secret(&s.name, optional).map_err(|e| e.0)?;
                out.extend(payload::secret(secret, s.items.as_deref(), mode, optional)?);
            }
            if let Some(d) = &source.downward_api {
                out.extend(payload::downward_api(self.pod, self.facts, d.items.as_deref().unwrap_or_default(), mode)?);
            }
            if let Some(t) = &source.service_account_token {
                let current = tokio::fs::read(path.join(&t.path)).await.ok();
                if let Some(token) = token::token(self.client, self.pod, t, current.as_deref()).await? {
                    out.insert(t.path.clone(), writer::File { data: token, mode: mode as u32 });
                }
            }
        }
        Ok(out)
    }

    async fn write(&self, path: &Path, payload: Payload) -> Result<(), String> {
        let (path, group) = (path.to_path_buf(), self.fs_group());
        let written = tokio::task::spawn_blocking(move || writer::write(&path, &payload, group)).await;
        match written {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("writing volume files: {e}")),
        }
    }
}

/// An emptyDir: a world-writable directory (setgid to the fsGroup when there is one),
/// on its own tmpfs for medium Memory.
fn empty_dir(path: &Path, medium: &str, size: Option<i64>, group: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !matches!(medium, "" | "Memory") {
        return Err(format!("emptyDir medium {medium:?} is not supported on this node"));
    }
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    if medium == "Memory" && !is_mount_point(path) {
        mount_tmpfs(path, size)?;
    }
    let mut mode = 0o777;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| format!("chown {}: {e}", path.display()))?;
        mode |= 0o2000;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

fn mount_tmpfs(path: &Path, size: Option<i64>) -> Result<(), String> {
    let mut options = "mode=0777".to_string();
    if let Some(bytes) = size.filter(|b| *b > 0) {
        options.push_str(&format!(",size={bytes}"));
    }
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (source, target, fstype, data) = (c("tmpfs")?, c(&path.display().to_string())?, c("tmpfs")?, c(&options)?);
    // SAFETY: all four are valid NUL-terminated strings that outlive the call
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!("mounting tmpfs at {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    tracing::debug!(path = %path.display(), options, "tmpfs mounted for a memory-backed emptyDir");
    Ok(())
}

/// The mount points of this mount namespace (/proc/self/mountinfo's fifth field,
/// octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape_octal(p))).collect()
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// The managed /etc/hosts, once the pod has an IP (as upstream, no IP: no file).
async fn write_hosts_file(pod: &Pod, facts: &PodFacts, pod_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    if facts.pod_ips.is_empty() {
        return Ok(None);
    }
    let node_hosts = tokio::fs::read_to_string(NODE_HOSTS).await.unwrap_or_default();
    let text = hosts_file::content(pod, &facts.pod_ips, cluster_domain(), &node_hosts);
    let path = pod_dir.join(HOSTS_FILE);
    let tmp = pod_dir.join(format!("{HOSTS_FILE}.tmp"));
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(Some(path))
}

/// Unmount anything mounted under the pod's directory (deepest first), then remove it.
pub async fn teardown(pod_dir: &Path) -> std::io::Result<()> {
    let pod_dir = pod_dir.to_path_buf();
    tokio::task::spawn_blocking(move || teardown_blocking(&pod_dir)).await.map_err(std::io::Error::other)?
}

fn teardown_blocking(pod_dir: &Path) -> std::io::Result<()> {
    let mut mounts: Vec<PathBuf> =
        mount_points().into_iter().filter(|m| m.starts_with(pod_dir) && m != pod_dir).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for m in &mounts {
        let target = CString::new(m.display().to_string()).map_err(std::io::Error::other)?;
        // SAFETY: target is a valid NUL-terminated path
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(path = %m.display(), error = %e, "unmounting a pod volume");
            return Err(e);
        }
    }
    match std::fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
