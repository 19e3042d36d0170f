//! A containerd of our own: config under a data directory (its root, state, sockets, runc
//! root, network namespaces and CNI network all there, so several can run side by side),
//! started as a child process named `containerd`, the local images imported, and stopped
//! so that nothing is left behind: its pods removed when asked, the shims it started
//! (they re-parent to init) and their containers killed, its mounts detached, its bridge
//! deleted. `ferrokube up` and the tests use it; `ferrokube containerd` (hidden) runs one
//! until SIGTERM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::cri::client::{Cri, wait_ready};
use super::images;

/// How one containerd is laid out and networked.
#[derive(clap::Args, Debug, Clone)]
pub struct ContainerdArgs {
    /// Where containerd keeps everything (root, state, socket, CNI config, logs).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The CNI bridge's name (at most 15 characters; unique per instance).
    #[arg(long, default_value = "ferrokube0")]
    pub bridge: String,
    /// The pods' subnet on this node (host-local IPAM hands out its addresses). Without
    /// it, the node's podCIDR: the kubelet hands it over (CRI UpdateRuntimeConfig) and
    /// containerd writes the network config from our template, as upstream's kubenet-style
    /// setups do; until then sandboxes wait for a network.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Masquerade pod traffic leaving the node (needs iptables' nat table).
    #[arg(long)]
    pub ip_masq: bool,
    /// Image tarballs (`*.tar`, OCI or docker archives) imported at start.
    #[arg(long)]
    pub airgap_images: Option<PathBuf>,
    /// Remove every pod sandbox before stopping (so CNI releases addresses and rules).
    #[arg(long)]
    pub remove_pods_on_exit: bool,
    /// The containerd binary.
    #[arg(long, default_value = "containerd")]
    pub containerd_binary: String,
}

/// The image every sandbox runs (built locally, see `images`).
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";

pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    bridge: String,
    remove_pods: bool,
}

impl ContainerdArgs {
    pub fn socket(&self) -> PathBuf {
        self.data_dir.join("containerd.sock")
    }
}

/// containerd's config: `containerd config default` plus what these machines need.
fn config(args: &ContainerdArgs) -> String {
    let d = args.data_dir.display();
    // only without a fixed subnet: containerd renders the template once told the podCIDR
    let template = match args.subnet {
        Some(_) => String::new(),
        None => format!("    conf_template = \"{d}/{CNI_TEMPLATE}\"\n"),
    };
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# file systems and runtimes this machine does not have: skip them at start
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails in runc
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
    max_conf_num = 1
{template}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
        SystemdCgroup = false
"#
    )
}

/// Our network config, written for a fixed `--subnet`.
const CNI_CONFLIST: &str = "10-ferrokube.conflist";
/// The template containerd renders with the node's podCIDR (Go text/template).
const CNI_TEMPLATE: &str = "cni-template.conflist";
/// Where containerd 1.6 writes the rendered template in its `conf_dir`.
const CNI_RENDERED: &str = "10-containerd-net.conflist";
/// What containerd's template puts in place of the podCIDR.
const POD_CIDR_PLACEHOLDER: &str = "{{.PodCIDR}}";

/// The pod network: a bridge with host-local addresses from `subnet` (kept under the
/// data dir) and host ports through portmap.
fn cni_conflist(args: &ContainerdArgs, subnet: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("ferrokube-{}", args.bridge),
        "plugins": [
            {
                "type": "bridge", "bridge": args.bridge, "isGateway": true, "ipMasq": args.ip_masq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": args.data_dir.join("cni-ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
}

/// The network config for a fixed subnet, or the template for the node's podCIDR. The
/// other mode's file goes: containerd loads the first config of its directory, and
/// renders the template only while it has none. A rendering from an earlier run stays
/// (a Node keeps its podCIDR), so pods start before the kubelet is back.
fn write_network(args: &ContainerdArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let (write, content, stale) = match &args.subnet {
        Some(subnet) => {
            (dir.join("cni").join(CNI_CONFLIST), cni_conflist(args, subnet), dir.join("cni").join(CNI_RENDERED))
        }
        None => (dir.join(CNI_TEMPLATE), cni_conflist(args, POD_CIDR_PLACEHOLDER), dir.join("cni").join(CNI_CONFLIST)),
    };
    std::fs::write(&write, serde_json::to_vec_pretty(&content)?)
        .with_context(|| format!("writing {}", write.display()))?;
    match std::fs::remove_file(&stale) {
        Ok(()) => tracing::info!(file = %stale.display(), "removed the other network mode's config"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", stale.display())),
    }
    Ok(())
}

impl Containerd {
    /// Write the config, start containerd, wait for CRI, import the local images.
    pub async fn start(args: &ContainerdArgs) -> anyhow::Result<Containerd> {
        let started = Instant::now();
        let dir = &args.data_dir;
        for sub in ["cni", "logs", "cni-ipam"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("config.toml"), config(args))?;
        write_network(args)?;
        let socket = args.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join("logs/containerd.log"))?;
        let mut command = Command::new(&args.containerd_binary);
        // its own process group, so a terminal's Ctrl-C reaches us (who remove the pods
        // first) and not containerd; SIGTERM, not silence, if we die without stopping it
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (apt-get install containerd runc)", args.containerd_binary))?;
        let mut me = Containerd {
            child: Some(child),
            socket: socket.clone(),
            data_dir: dir.clone(),
            bridge: args.bridge.clone(),
            remove_pods: args.remove_pods_on_exit,
        };
        let cri = Cri::connect(&socket.display().to_string())?;
        let version = match wait_ready(&cri, &socket, Duration::from_secs(30)).await {
            Ok(v) => v,
            Err(e) => {
                me.stop().await;
                return Err(e);
            }
        };
        tracing::info!(%version, socket = %socket.display(), elapsed_ms = started.elapsed().as_millis() as u64, "containerd answers");
        if let Err(e) = me.import_images(args).await {
            me.stop().await;
            return Err(e);
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "containerd ready with local images");
        Ok(me)
    }

    async fn import_images(&self, args: &ContainerdArgs) -> anyhow::Result<()> {
        let local = images::build_local(&self.data_dir.join("images"))?;
        let mut tarballs = vec![local];
        if let Some(dir) = &args.airgap_images
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            let mut extra: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect();
            extra.sort();
            tarballs.extend(extra);
        }
        for tarball in tarballs {
            import(&self.socket, &tarball).await?;
        }
        Ok(())
    }

    /// Stop everything this containerd started; safe to call more than once.
    pub async fn stop(&mut self) {
        if self.remove_pods
            && self.child.is_some()
            && let Err(e) = remove_all_pods(&self.socket).await
        {
            tracing::warn!(error = %format!("{e:#}"), "removing pods before stopping containerd");
        }
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5)).await;
        }
        self.sweep();
    }

    /// What survives containerd: shims and their containers, mounts, the bridge.
    fn sweep(&self) {
        let killed = kill_shims(&self.socket);
        if killed > 0 {
            tracing::info!(processes = killed, "killed the shims of containerd and their containers");
        }
        unmount_under(&self.data_dir);
        delete_link(&self.bridge);
    }

    /// Until containerd exits by itself.
    pub async fn exited(&mut self) -> String {
        match self.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => e.to_string(),
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Containerd {
    /// A last resort when `stop` was not awaited (a panicking caller): no pods removed
    /// through CRI, but no process, mount or bridge is left.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            self.sweep();
        }
    }
}

async fn import(socket: &Path, tarball: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(tarball)
        .output()
        .await
        .context("running ctr images import")?;
    if !out.status.success() {
        bail!("importing {}: {}", tarball.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    tracing::info!(tarball = %tarball.display(), elapsed_ms = started.elapsed().as_millis() as u64, "imported images");
    Ok(())
}

/// Stop and remove every sandbox (and so every container), letting CNI release them.
pub async fn remove_all_pods(socket: &Path) -> anyhow::Result<()> {
    use k8s_cri::v1::{ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest};
    let cri = Cri::connect(&socket.display().to_string())?;
    let mut runtime = cri.runtime.clone();
    let sandboxes = runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await?.into_inner().items;
    for sandbox in sandboxes {
        let id = sandbox.id;
        if let Err(e) = runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await {
            tracing::warn!(sandbox = %id, error = %e, "stopping a sandbox");
        }
        if let Err(e) = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await {
            tracing::warn!(sandbox = %id, error = %e, "removing a sandbox");
        }
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: the child is ours and not reaped yet, so the pid is still its own
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// The processes of this machine as (pid, parent pid, command line).
fn processes() -> Vec<(i32, i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // the command name may hold spaces and parentheses: fields start after the last ')'
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split(' ').nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// SIGKILL every shim serving this containerd (its `-address` is our socket) and every
/// process below it; returns how many were killed.
fn kill_shims(socket: &Path) -> usize {
    let all = processes();
    let needle = format!("-address {} ", socket.display());
    let mut doomed: Vec<i32> = all
        .iter()
        .filter(|(_, _, cmd)| cmd.contains("containerd-shim") && format!("{cmd} ").contains(&needle))
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        doomed.extend(all.iter().filter(|(_, ppid, _)| *ppid == parent).map(|(pid, _, _)| *pid));
        i += 1;
    }
    // children first, so no shim reaps and reports while we work
    for pid in doomed.iter().rev() {
        // SAFETY: kill has no memory effects; the pids were read just now
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    doomed.len()
}

/// Detach every mount under `dir` (rootfs overlays, shm, network namespaces), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let Ok(c) = std::ffi::CString::new(point.clone()) else { continue };
        // SAFETY: c is a valid NUL-terminated path
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            tracing::debug!(mount = %point, error = %std::io::Error::last_os_error(), "unmounting");
        }
    }
}

fn delete_link(name: &str) {
    if Path::new("/sys/class/net").join(name).exists() {
        match std::process::Command::new("ip").args(["link", "del", name]).output() {
            Ok(out) if out.status.success() => tracing::info!(bridge = name, "deleted the pod bridge"),
            Ok(out) => {
                tracing::warn!(bridge = name, error = %String::from_utf8_lossy(&out.stderr).trim(), "deleting the bridge")
            }
            Err(e) => tracing::warn!(bridge = name, error = %e, "running ip link del"),
        }
    }
}

/// `ferrokube containerd`: one containerd until SIGTERM/Ctrl-C, then everything stopped.
pub async fn run(args: ContainerdArgs) -> anyhow::Result<()> {
    let mut containerd = Containerd::start(&args).await?;
    println!("containerd ready: unix://{}", containerd.socket.display());
    let result = tokio::select! {
        _ = crate::cli::shutdown_signal() => Ok(()),
        status = containerd.exited() => Err(anyhow::anyhow!("containerd exited: {status}")),
    };
    containerd.stop().await;
    result
}
