//! `ferrokube up`: an all-in-one cluster. Mints (or reuses) the cluster's certificates
//! and kubeconfigs (`crate::certs`), starts etcd, the API server, the scheduler and the
//! controller-manager as child processes (named as upstream's components) with
//! authentication and Node,RBAC authorization as kubeadm configures them, plus
//! containerd (config, pod network and local images under the data dir, see
//! `kubelet::containerd`) and a kubelet with its own `system:node:<name>` identity;
//! waits for readiness and the node to be Ready, merges the admin's kubeconfig, creates
//! the default StorageClass, and stops everything cleanly on Ctrl-C (the pods' sandboxes
//! removed, containerd and its shims stopped). Data persists in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::kubelet::containerd::{Containerd, ContainerdArgs};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where etcd data, certificates and logs live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Kubeconfig to write (merged, context `ferrokube`); default ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    #[arg(long, default_value_t = 2379)]
    pub etcd_port: u16,
    /// The etcd binary to run.
    #[arg(long, default_value = "etcd")]
    pub etcd_binary: String,
    /// The node whose kubelet gets credentials (system:node:<name>); default the host name.
    #[arg(long)]
    pub node_name: Option<String>,
    /// More names and addresses for the API server's certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub apiserver_cert_extra_sans: Vec<String>,
    /// The scheduler's health and metrics port (upstream's 10259; 0: none).
    #[arg(long, default_value_t = 10259)]
    pub scheduler_secure_port: u16,
    /// The controller-manager's health and metrics port (upstream's 10257; 0: none).
    #[arg(long, default_value_t = 10257)]
    pub controller_manager_secure_port: u16,
    /// The pods' bridge on this node (one per `up` running on a machine).
    #[arg(long, default_value = "ferrokube0")]
    pub pod_bridge: String,
    /// The pods' addresses on this node; default: the node's podCIDR, which node IPAM
    /// gives it from the cluster CIDR and the kubelet hands to containerd.
    #[arg(long)]
    pub pod_subnet: Option<String>,
    /// The cluster DNS's port on the node's address (the kube-dns Service's endpoint).
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// Run no kube-proxy (k3s's flag): Services get no data plane on this host, and
    /// its iptables are left alone (tests that run several clusters on one host).
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// kube-proxy's `--proxy-mode` (`iptables` or `nftables`); default: nftables where
    /// `nft` works on this host, else iptables.
    #[arg(long)]
    pub proxy_mode: Option<String>,
    /// Image tarballs imported at start (default `<data-dir>/airgap-images`).
    #[arg(long)]
    pub airgap_images: Option<PathBuf>,
}

/// The pods' address range; each node gets a /24 of it (kubeadm's flannel default).
const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Where ServiceAccount tokens say they come from (kubeadm's default issuer).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| home().join(".local/share/ferrokube"));
    let kubeconfig = args.kubeconfig.clone().unwrap_or_else(|| home().join(".kube/config"));
    std::fs::create_dir_all(data_dir.join("logs")).with_context(|| format!("creating {}", data_dir.display()))?;

    let server = format!("https://127.0.0.1:{}", args.secure_port);
    let certs = crate::certs::ensure(&crate::certs::CertsArgs {
        dir: data_dir.clone(),
        server: server.clone(),
        nodes: vec![args.node_name.clone().unwrap_or_else(crate::certs::hostname)],
        service_cluster_ip_range: "10.96.0.0/12".parse()?,
        apiserver_cert_extra_sans: args.apiserver_cert_extra_sans.clone(),
    })?;
    let pki = &certs.layout;
    let path = |p: &Path| p.display().to_string();

    let etcd_url = format!("http://127.0.0.1:{}", args.etcd_port);
    let mut etcd = start_etcd(&args, &data_dir, &etcd_url)?;
    tracing::info!(url = %etcd_url, pid = etcd.id(), "started etcd");
    // containerd needs nothing of the control plane: it starts (and imports images) meanwhile
    let containerd_args = containerd_args(&args, &data_dir);
    let containerd = tokio::spawn(async move { Containerd::start(&containerd_args).await });

    let exe = std::env::current_exe().context("locating the ferrokube binary")?;
    let mut apiserver = spawn_component(
        &exe,
        "kube-apiserver",
        &[
            "apiserver".to_string(),
            format!("--etcd-servers={etcd_url}"),
            // every address, as kube-apiserver's default: pods reach it through the
            // kubernetes Service, whose endpoint is this machine's address
            "--bind-address=0.0.0.0".to_string(),
            format!("--advertise-address={}", crate::host::machine_ip()),
            format!("--secure-port={}", args.secure_port),
            format!("--tls-cert-file={}", path(&pki.apiserver().cert)),
            format!("--tls-private-key-file={}", path(&pki.apiserver().key)),
            format!("--client-ca-file={}", path(&pki.ca().cert)),
            "--anonymous-auth=true".to_string(),
            "--authorization-mode=Node,RBAC".to_string(),
            format!("--service-account-signing-key-file={}", path(&pki.sa_key())),
            format!("--service-account-key-file={}", path(&pki.sa_pub())),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            "--enable-bootstrap-token-auth".to_string(),
            format!("--kubelet-client-certificate={}", path(&pki.apiserver_kubelet_client().cert)),
            format!("--kubelet-client-key={}", path(&pki.apiserver_kubelet_client().key)),
            "--kubelet-preferred-address-types=InternalIP,Hostname".to_string(),
        ],
        &data_dir,
    )?;
    tracing::info!(pid = apiserver.id(), "started kube-apiserver");

    let mut children = vec![("kube-apiserver", &mut apiserver), ("etcd", &mut etcd)];
    let mut containerd = match containerd.await.map_err(anyhow::Error::from).and_then(|r| r) {
        Ok(c) => c,
        Err(e) => {
            stop_all(&mut children).await;
            return Err(e.context("starting containerd"));
        }
    };
    if let Err(e) = wait_ready(args.secure_port, &pki.ca().cert, &mut children).await {
        return Err(abort(&mut children, &mut containerd, e).await);
    }
    // the companions, each with its own identity; stopped first, before the API server
    let scheduler_args = [
        "scheduler".to_string(),
        format!("--kubeconfig={}", path(&pki.kubeconfig("scheduler"))),
        format!("--secure-port={}", args.scheduler_secure_port),
    ];
    let mut scheduler = match spawn_component(&exe, "kube-scheduler", &scheduler_args, &data_dir) {
        Ok(child) => child,
        Err(e) => return Err(abort(&mut children, &mut containerd, e).await),
    };
    tracing::info!(pid = scheduler.id(), "started kube-scheduler");
    children.insert(0, ("kube-scheduler", &mut scheduler));
    let controller_manager_args = [
        "controller-manager".to_string(),
        format!("--kubeconfig={}", path(&pki.kubeconfig("controller-manager"))),
        format!("--secure-port={}", args.controller_manager_secure_port),
        "--use-service-account-credentials".to_string(),
        "--allocate-node-cidrs".to_string(),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        format!("--local-path-dir={}", path(&data_dir.join("local-path"))),
    ];
    let mut controller_manager =
        match spawn_component(&exe, "kube-controller-manager", &controller_manager_args, &data_dir) {
            Ok(child) => child,
            Err(e) => return Err(abort(&mut children, &mut containerd, e).await),
        };
    tracing::info!(pid = controller_manager.id(), "started kube-controller-manager");
    children.insert(0, ("kube-controller-manager", &mut controller_manager));
    let node_name = args.node_name.clone().unwrap_or_else(crate::certs::hostname);
    let kubelet_args = [
        "kubelet".to_string(),
        format!("--kubeconfig={}", path(&pki.kubeconfig(&format!("kubelet-{node_name}")))),
        format!("--node-name={node_name}"),
        "--runtime=cri".to_string(),
        format!("--container-runtime-endpoint=unix://{}", path(&containerd.socket)),
        format!("--root-dir={}", path(&data_dir.join("kubelet"))),
        format!("--pod-logs-dir={}", path(&data_dir.join("pod-logs"))),
        // the API server's kubelet client certificate (pods/log, exec) is of this CA
        format!("--client-ca-file={}", path(&pki.ca().cert)),
        format!("--cluster-dns={}", crate::dns::setup::CLUSTER_DNS_IP),
        "--cluster-domain=cluster.local".to_string(),
    ];
    let mut kubelet = match spawn_component(&exe, "kubelet", &kubelet_args, &data_dir) {
        Ok(child) => child,
        Err(e) => return Err(abort(&mut children, &mut containerd, e).await),
    };
    tracing::info!(pid = kubelet.id(), node = %node_name, "started kubelet");
    children.insert(0, ("kubelet", &mut kubelet));
    let mut kube_proxy = match start_kube_proxy(&exe, pki, &node_name, &data_dir, &args) {
        Ok(child) => child,
        Err(e) => return Err(abort(&mut children, &mut containerd, e).await),
    };
    if let Some(child) = kube_proxy.as_mut() {
        children.insert(0, ("kube-proxy", child));
    }
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (ca, admin) = (read(&pki.ca().cert)?, pki.admin());
    let (cert, key) = (read(&admin.cert)?, read(&admin.key)?);
    let creds = crate::kubeconfig::Credentials::ClientCert { ca: &ca, cert: &cert, key: &key };
    crate::kubeconfig::write(&kubeconfig, &server, "ferrokube", &creds)?;
    let mut dns =
        match start_cluster_dns(&args, &exe, [&kubeconfig, &pki.kubeconfig("dns")], &node_name, &data_dir).await {
            Ok(child) => child,
            Err(e) => return Err(abort(&mut children, &mut containerd, e).await),
        };
    children.insert(0, ("kube-dns", &mut dns));
    if let Err(e) = default_storage_class(&kubeconfig).await {
        tracing::warn!(error = %format!("{e:#}"), "creating the default StorageClass");
    }
    if let Err(e) = wait_node_ready(&kubeconfig, &node_name).await {
        tracing::warn!(node = %node_name, error = %format!("{e:#}"), "the node is not Ready yet; see logs/kubelet.log");
    }
    println!("ferrokube is up in {:.2}s: {server} (node {node_name} Ready)", started.elapsed().as_secs_f64());
    println!("kubeconfig: {} (context ferrokube, user {})", kubeconfig.display(), crate::certs::ADMIN_USER);
    println!("certificates: {}; component kubeconfigs: {}", path(&pki.pki), path(&pki.kubeconfigs));
    println!("logs: {}", data_dir.join("logs").display());
    println!(
        "curl: curl --cacert {} --cert {} --key {} {server}/api/v1/pods",
        path(&pki.ca().cert),
        path(&admin.cert),
        path(&admin.key)
    );
    println!("try: kubectl get namespaces    (Ctrl-C stops the cluster)");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("stopping"),
        _ = terminate() => println!("stopping"),
        name = first_exit(&mut children) => tracing::error!(component = name, "a component exited; stopping the cluster"),
        status = containerd.exited() => tracing::error!(%status, "containerd exited; stopping the cluster"),
    }
    stop_all(&mut children).await;
    if !args.disable_kube_proxy {
        remove_kube_proxy_rules(&exe);
    }
    containerd.stop().await;
    Ok(())
}

/// kube-proxy (`ferrokube proxy`) with its own identity (system:kube-proxy, bound to
/// system:node-proxier), programming this host's packet filter for Services.
fn start_kube_proxy(
    exe: &Path,
    pki: &crate::certs::Layout,
    node_name: &str,
    data_dir: &Path,
    args: &UpArgs,
) -> anyhow::Result<Option<Child>> {
    if args.disable_kube_proxy {
        return Ok(None);
    }
    let mode = proxy_mode(args);
    let proxy_args = [
        "proxy".to_string(),
        format!("--kubeconfig={}", pki.kubeconfig("proxy").display()),
        format!("--hostname-override={node_name}"),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        format!("--proxy-mode={mode}"),
    ];
    let child = spawn_component(exe, "kube-proxy", &proxy_args, data_dir)?;
    tracing::info!(pid = child.id(), mode, "started kube-proxy");
    Ok(Some(child))
}

/// nftables (one transaction per sync, faster on nf_tables kernels) unless asked
/// otherwise or the host's `nft` does not work.
fn proxy_mode(args: &UpArgs) -> String {
    args.proxy_mode.clone().unwrap_or_else(|| {
        let mode = if crate::proxy::nftables::available() { "nftables" } else { "iptables" };
        mode.to_string()
    })
}

/// The cluster is gone: its Services' rules go too (`ferrokube proxy --cleanup`, both modes').
fn remove_kube_proxy_rules(exe: &Path) {
    match std::process::Command::new(exe).args(["proxy", "--cleanup"]).output() {
        Ok(out) if out.status.success() => tracing::info!("removed kube-proxy's rules"),
        Ok(out) => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr), "removing kube-proxy's rules")
        }
        Err(e) => tracing::warn!(error = %e, "running ferrokube proxy --cleanup"),
    }
}

/// Stop what started so far; the error that ended start-up.
async fn abort(children: &mut [(&str, &mut Child)], containerd: &mut Containerd, e: anyhow::Error) -> anyhow::Error {
    stop_all(children).await;
    containerd.stop().await;
    e
}

fn containerd_args(args: &UpArgs, data_dir: &Path) -> ContainerdArgs {
    ContainerdArgs {
        data_dir: data_dir.join("containerd"),
        bridge: args.pod_bridge.clone(),
        subnet: args.pod_subnet.clone(),
        ip_masq: nat_works(),
        airgap_images: Some(args.airgap_images.clone().unwrap_or_else(|| data_dir.join("airgap-images"))),
        remove_pods_on_exit: true,
        containerd_binary: "containerd".into(),
    }
}

/// Whether iptables' nat table is usable (pods' traffic out of the node is masqueraded).
fn nat_works() -> bool {
    std::process::Command::new("iptables")
        .args(["-t", "nat", "-S", "POSTROUTING"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Wait (30 s at most) for the kubelet to register the node and report it Ready.
async fn wait_node_ready(kubeconfig: &Path, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let client = admin_client(kubeconfig).await?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let node = nodes.get_opt(name).await.ok().flatten();
        let conditions = node.and_then(|n| n.status?.conditions).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not Ready after 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let options = kube::config::KubeConfigOptions { context: Some("ferrokube".into()), ..Default::default() };
    Ok(kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &options).await?)?)
}

/// The cluster's default StorageClass `standard` (minikube's name), served by the
/// controller-manager's local-path provisioner; left alone when it exists.
async fn default_storage_class(kubeconfig: &Path) -> anyhow::Result<()> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let client = admin_client(kubeconfig).await?;
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": crate::controllers::LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))?;
    match kube::Api::<StorageClass>::all(client).create(&Default::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The kube-dns Service and RBAC, then `ferrokube dns` on the node's address, forwarding
/// other names to the host's nameservers (CoreDNS's `forward . /etc/resolv.conf`).
/// `kubeconfigs`: the admin's, the DNS's own.
async fn start_cluster_dns(
    args: &UpArgs,
    exe: &Path,
    [admin, own]: [&Path; 2],
    node: &str,
    data_dir: &Path,
) -> anyhow::Result<Child> {
    crate::dns::setup::ensure_objects(&admin_client(admin).await?).await.context("creating the kube-dns Service")?;
    let node_ip = crate::host::machine_ip();
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = crate::kubelet::spec::dns::parse_resolv_conf(&host).servers;
    let dns_args = [
        "dns".to_string(),
        format!("--kubeconfig={}", own.display()),
        format!("--bind-address={node_ip}"),
        format!("--port={}", args.cluster_dns_port),
        "--cluster-domain=cluster.local".to_string(),
        format!("--upstream-nameservers={}", upstreams.join(",")),
        format!("--publish-service={}", crate::dns::setup::SERVICE),
        format!("--node-name={node}"),
    ];
    let child = spawn_component(exe, "kube-dns", &dns_args, data_dir)?;
    tracing::info!(pid = child.id(), address = %node_ip, port = args.cluster_dns_port, "started kube-dns");
    Ok(child)
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn start_etcd(args: &UpArgs, data_dir: &Path, url: &str) -> anyhow::Result<Child> {
    let peer = format!("http://127.0.0.1:{}", args.etcd_port.wrapping_add(1));
    let log = std::fs::File::create(data_dir.join("logs/etcd.log"))?;
    die_with_parent(&mut Command::new(&args.etcd_binary))
        .arg(format!("--data-dir={}", data_dir.join("etcd").display()))
        .arg("--name=ferrokube")
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=ferrokube={peer}"))
        .arg("--quota-backend-bytes=8589934592")
        // one member has no one to disagree with: a short election timeout lets a restarted
        // etcd lead (and serve) after 0.2 s instead of its default 1 s to 2 s
        .arg("--heartbeat-interval=20")
        .arg("--election-timeout=200")
        // progress notifications keep idle watch caches current (bookmarks, consistent
        // reads), at kubeadm's interval
        .arg("--experimental-watch-progress-notify-interval=5s")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (install it with: apt-get install etcd-server)", args.etcd_binary))
}

/// Children die with `up`, even when it is killed without a chance to stop them.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn spawn_component(exe: &Path, name: &str, args: &[String], data_dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data_dir.join(format!("logs/{name}.log")))?;
    die_with_parent(&mut Command::new(exe))
        .arg0(name)
        .args(args)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// Poll `/readyz` over TLS (trusting the cluster CA, anonymously) until it answers ok.
async fn wait_ready(port: u16, ca: &Path, children: &mut [(&str, &mut Child)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_log = Instant::now();
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited during start-up ({status}); see its log");
            }
        }
        if readyz(port, ca).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("kube-apiserver was not ready within 60s");
        }
        if last_log.elapsed() > Duration::from_secs(2) {
            tracing::info!("waiting for kube-apiserver to be ready");
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(port: u16, ca: &Path) -> anyhow::Result<bool> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut response)).await??;
    Ok(response.starts_with(b"HTTP/1.1 200"))
}

async fn first_exit(children: &mut [(&'static str, &mut Child)]) -> &'static str {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                return name;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM each child in order (API server before etcd), then wait for it.
async fn stop_all(children: &mut [(&str, &mut Child)]) {
    for (name, child) in children.iter_mut() {
        if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: the child is ours and not yet reaped, so the pid is still its own
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(_) => tracing::info!(component = *name, "stopped"),
            Err(_) => {
                let _ = child.kill().await;
                tracing::warn!(component = *name, "killed after 10s");
            }
        }
    }
}
