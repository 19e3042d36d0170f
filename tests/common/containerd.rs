//! A real node for tests: its own containerd (`ferrokube containerd`, with state, socket,
//! CNI bridge and subnet of its own under the cluster's temp dir) and `ferrokube kubelet
//! --runtime=cri` against it. Dropping the `CriNode` stops the kubelet, then the
//! containerd launcher, which removes every pod sandbox and leaves no process, mount,
//! bridge, network namespace or iptables rule behind, also when the test failed.
//!
//! `start_cri_cluster` is the one-call setup: API server, scheduler, containerd and
//! kubelet, the node Ready.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::Cluster;
use super::controllers::{Component, eventually, start_scheduler};

pub struct CriNode {
    pub name: String,
    /// The node's directory: containerd's data, the kubelet's root and pod logs.
    pub dir: PathBuf,
    /// `unix://…` of its containerd.
    pub endpoint: String,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub bridge: String,
    launcher: Option<Child>,
    kubelet: Option<Child>,
    kubelet_args: Vec<String>,
    kubelet_starts: u32,
    /// The kubelet API's port (published in the node's daemonEndpoints).
    pub kubelet_port: u16,
    /// The network namespace containerd and the kubelet run in (`start_in`), if not the host's.
    netns: Option<PathBuf>,
}

/// Where a node's pod addresses come from.
enum Subnet {
    /// A /24 of `network()`.
    Free,
    /// The node's podCIDR, handed to containerd by the kubelet.
    FromNode,
}

/// A bridge name and /24 no other test of this machine uses at the same time.
fn network() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let seed = (pid.wrapping_mul(31).wrapping_add(n)) % 40_000;
    (format!("fkt{:x}", pid * 64 + n % 64), format!("10.{}.{}.0/24", 100 + seed / 256 % 100, seed % 256))
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("opening a log file")
}

/// SIGTERM at the test thread's death (not SIGKILL: the launcher must clean up).
fn term_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        })
    }
}

/// `ferrokube <args>` with its output appended to `log`, SIGTERMed if the test thread
/// dies, inside the network namespace `netns` if given.
fn spawn_ferrokube(args: &[&str], log: &Path, filter: &str, netns: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrokube"));
    if let Some(path) = netns.map(Path::to_path_buf) {
        // SAFETY: runs in the forked child before exec: opens a file and calls setns
        unsafe { cmd.pre_exec(move || super::netns::enter(&path)) };
    }
    term_with_parent(cmd.args(args))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(log_file(log))
        .stderr(log_file(log))
        .spawn()
        .unwrap_or_else(|e| panic!("starting ferrokube {args:?}: {e}"))
}

impl CriNode {
    /// Start containerd and a kubelet named `name` and wait for the node to be Ready.
    pub async fn start(c: &Cluster, name: &str, kubelet_extra: &[&str]) -> CriNode {
        CriNode::start_in(c, name, kubelet_extra, None).await
    }

    /// `start`, with containerd (so the pods' bridge) and the kubelet inside the network
    /// namespace `netns` (a `NetNs` relaying the API server; drop the node first).
    pub async fn start_in(c: &Cluster, name: &str, kubelet_extra: &[&str], netns: Option<&Path>) -> CriNode {
        CriNode::launch(c, name, kubelet_extra, netns, Subnet::Free).await
    }

    /// `start_in` with containerd given no subnet: the pods' addresses come from the
    /// node's podCIDR (node IPAM's), which the kubelet hands to containerd.
    pub async fn start_with_node_pod_cidr(
        c: &Cluster,
        name: &str,
        kubelet_extra: &[&str],
        netns: Option<&Path>,
    ) -> CriNode {
        CriNode::launch(c, name, kubelet_extra, netns, Subnet::FromNode).await
    }

    async fn launch(c: &Cluster, name: &str, kubelet_extra: &[&str], netns: Option<&Path>, subnet: Subnet) -> CriNode {
        let dir = c.dir.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let (bridge, free_subnet) = network();
        let log = c.dir.path().join(format!("containerd-{name}.log"));
        let data = dir.join("containerd").display().to_string();
        let mut args = vec!["containerd", "--data-dir", &data, "--bridge", &bridge, "--remove-pods-on-exit"];
        match subnet {
            Subnet::Free => args.extend(["--subnet", &free_subnet]),
            Subnet::FromNode => {}
        }
        let launcher = spawn_ferrokube(&args, &log, "info", netns);
        let socket = dir.join("containerd/containerd.sock");
        let mut node = CriNode {
            name: name.to_string(),
            endpoint: format!("unix://{}", socket.display()),
            root_dir: dir.join("kubelet"),
            pod_logs_dir: dir.join("pods"),
            dir,
            bridge,
            launcher: Some(launcher),
            kubelet: None,
            kubelet_args: kubelet_extra.iter().map(|s| s.to_string()).collect(),
            kubelet_starts: 0,
            // the caller's `--port=N` when it gives one
            kubelet_port: kubelet_extra
                .iter()
                .find_map(|a| a.strip_prefix("--port=")?.parse().ok())
                .unwrap_or_else(super::free_port),
            netns: netns.map(Path::to_path_buf),
        };
        node.wait_containerd(&log).await;
        node.start_kubelet(c);
        node.wait_ready(c).await;
        node
    }

    async fn wait_containerd(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("containerd ready:") {
                return;
            }
            let exited = self.launcher.as_mut().and_then(|l| l.try_wait().ok().flatten());
            assert!(exited.is_none() && Instant::now() < deadline, "containerd did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kubelet_log(&self) -> PathBuf {
        self.dir.join(format!("kubelet-{}.log", self.kubelet_starts))
    }

    /// (Re)start the kubelet process.
    pub fn start_kubelet(&mut self, c: &Cluster) {
        self.kubelet_starts += 1;
        let kubeconfig = c.kubeconfig.display().to_string();
        let (root, logs) = (self.root_dir.display().to_string(), self.pod_logs_dir.display().to_string());
        let port = format!("--port={}", self.kubelet_port);
        let ours_port = !self.kubelet_args.iter().any(|a| a.starts_with("--port"));
        let mut args = vec![
            "kubelet",
            "--kubeconfig",
            &kubeconfig,
            "--runtime=cri",
            "--node-name",
            &self.name,
            "--container-runtime-endpoint",
            &self.endpoint,
            "--root-dir",
            &root,
            "--pod-logs-dir",
            &logs,
            "--node-lease-renew-interval=2s",
        ];
        if ours_port {
            args.push(&port);
        }
        args.extend(self.kubelet_args.iter().map(String::as_str));
        let filter = "debug,kube=info,hyper=info,tower=info,h2=info,rustls=info,tonic=info,hyper_util=info";
        self.kubelet = Some(spawn_ferrokube(&args, &self.kubelet_log(), filter, self.netns.as_deref()));
    }

    /// Kill the kubelet (SIGKILL: no chance to tidy up), leaving its containers running.
    pub fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    pub async fn wait_ready(&self, c: &Cluster) {
        eventually(Duration::from_secs(60), "the node to be Ready", || async {
            let (_, node) = c.get(&format!("/api/v1/nodes/{}", self.name)).await;
            let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True").then_some(())
        })
        .await;
    }

    /// The container's output (the log file of run `attempt`, CRI prefixes stripped).
    pub fn container_output(&self, pod: &serde_json::Value, container: &str, attempt: u32) -> String {
        let meta = &pod["metadata"];
        let dir = format!(
            "{}_{}_{}",
            meta["namespace"].as_str().unwrap_or_default(),
            meta["name"].as_str().unwrap_or_default(),
            meta["uid"].as_str().unwrap_or_default()
        );
        let path = self.pod_logs_dir.join(dir).join(container).join(format!("{attempt}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // `<time> <stream> <F|P> <line>`
        text.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|l| format!("{l}\n")).collect()
    }

    /// Processes still running under this node's containerd (its shims and containers).
    pub fn shims(&self) -> usize {
        let socket = self.endpoint.trim_start_matches("unix://").to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd-shim") && c.contains(&socket))
            .count()
    }

    /// The pid of this node's containerd (to stop it for a while, say).
    pub fn containerd_pid(&self) -> Option<i32> {
        let config = self.dir.join("containerd/config.toml").display().to_string();
        let entries = std::fs::read_dir("/proc").ok()?;
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("containerd\0") && cmdline.contains(&config)
        })
    }

    /// What the kubelet logged so far (for assertion messages).
    pub fn kubelet_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.kubelet_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kubelet {} (tail) ----\n{}", self.name, self.kubelet_log_tail());
        }
        self.kill_kubelet();
        if let Some(mut launcher) = self.launcher.take() {
            // SAFETY: the child is ours and not yet reaped
            unsafe { libc::kill(launcher.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = launcher.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
    }
}

/// A cluster with a scheduler and one real node (`node-1`), Ready.
pub struct CriCluster {
    pub node: CriNode,
    pub scheduler: Component,
    pub cluster: Cluster,
}

pub async fn start_cri_cluster() -> CriCluster {
    let cluster = Cluster::start().await;
    let scheduler = start_scheduler(&cluster).await;
    let node = CriNode::start(&cluster, "node-1", &[]).await;
    CriCluster { node, scheduler, cluster }
}
