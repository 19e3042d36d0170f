//! `ferrokube up` as a user runs it: a fresh data directory gets a CA, certificates and
//! kubeconfigs; stock kubectl 1.27 and 1.33 verify the server with the written kubeconfig
//! and act as the admin; the `curl` line it prints (the README's) lists pods; anonymous
//! requests are refused; the component kubeconfigs carry their own identities; the node
//! (containerd and a kubelet) is Ready and runs a busybox pod; Ctrl-C stops every child
//! and removes the pods; a second `up` reuses the CA and the data.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const NODE: &str = "test-node";

/// A running `ferrokube up`.
struct Up {
    child: Child,
    port: u16,
    kubeconfig: PathBuf,
    data: PathBuf,
    /// What it printed, line by line.
    lines: Vec<String>,
}

impl Up {
    /// Start `up` on free ports (new ones if it fails, as a racing process may take them)
    /// and wait for its "is up" line.
    fn start(dir: &Path) -> Up {
        let mut last = String::new();
        for _ in 0..5 {
            let (port, etcd) = (free_port(), free_port_pair());
            match Up::try_start(dir, port, etcd) {
                Ok(up) => return up,
                Err(e) => last = e,
            }
        }
        panic!("ferrokube up did not come up: {last}");
    }

    fn try_start(dir: &Path, port: u16, etcd_port: u16) -> Result<Up, String> {
        let data = dir.join("data");
        let kubeconfig = dir.join("home/.kube/config");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("up.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrokube"));
        cmd.arg("up")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--secure-port={port}"))
            .arg(format!("--etcd-port={etcd_port}"))
            .arg(format!("--node-name={NODE}"))
            .arg(format!("--scheduler-secure-port={}", free_port()))
            .arg(format!("--controller-manager-secure-port={}", free_port()))
            .arg(format!("--cluster-dns-port={}", free_port()))
            // a bridge of its own; the pods' subnet is the default, the podCIDR node IPAM
            // gives the node (handed to containerd by the kubelet)
            .arg(format!("--pod-bridge=fku{}", std::process::id() % 100_000))
            // kube-proxy programs the host's nat table: the only test that does (every
            // other runs its proxies in network namespaces of its own); `up` removes
            // the rules when it stops, also when the test fails (`Up`'s Drop)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting ferrokube up");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with("try:");
                    lines.push(line);
                    if done {
                        return Ok(Up { child, port, kubeconfig, data, lines });
                    }
                }
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("{lines:?}\n{}", std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()))
    }

    /// The printed line starting with `prefix`, without the prefix.
    fn printed(&self, prefix: &str) -> &str {
        let line = self.lines.iter().find(|l| l.starts_with(prefix));
        line.unwrap_or_else(|| panic!("no {prefix:?} line in {:?}", self.lines))[prefix.len()..].trim()
    }

    /// The tail of a component's log.
    fn log(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.data.join(format!("logs/{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.data.join("pki").join(file)
    }

    fn component_kubeconfig(&self, name: &str) -> PathBuf {
        self.data.join("kubeconfigs").join(format!("{name}.conf"))
    }

    /// The processes `up` started (its children).
    fn children(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    /// Ctrl-C: SIGINT, then wait for it to exit.
    fn interrupt(mut self) -> std::process::ExitStatus {
        // SAFETY: the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ferrokube up did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A failed test still stops the cluster as Ctrl-C does, so that `up` removes its pods
/// and no containerd shim outlives the test.
impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: the child is ours and not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
    }
}

/// A free port whose successor is free too (etcd's peer port is the client port + 1).
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Pids whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// Run kubectl `version` with `kubeconfig` and a private HOME.
fn kubectl(version: &str, kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_binary(version))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home.join(format!("kubectl-{version}")))
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl")
}

fn kubectl_ok(version: &str, kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let out = kubectl(version, kubeconfig, home, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kubectl {version} {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn whoami(version: &str, kubeconfig: &Path, home: &Path) -> Value {
    let out = kubectl_ok(version, kubeconfig, home, &["auth", "whoami", "-o", "json"]);
    serde_json::from_str::<Value>(&out).unwrap()["status"]["userInfo"].clone()
}

/// `curl` with `args`: the HTTP status code and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn up_is_secure_by_default_and_restarts_on_the_same_ca() {
    let dir = tempfile::Builder::new().prefix("ferrokube-up-").tempdir().unwrap();
    let home = dir.path().join("home");
    let up = Up::start(dir.path());
    eprintln!("first start: {:?}", up.lines.first());

    // the user's kubeconfig trusts the CA and carries the admin's certificate
    let config = std::fs::read_to_string(&up.kubeconfig).unwrap();
    assert!(!config.contains("insecure-skip-tls-verify"), "{config}");
    assert!(config.contains("certificate-authority-data") && config.contains("client-certificate-data"));
    for version in KUBECTL_VERSIONS {
        let names = kubectl_ok(version, &up.kubeconfig, &home, &["get", "namespaces", "-o", "name"]);
        assert!(names.contains("namespace/kube-system"), "{names}");
        let me = whoami(version, &up.kubeconfig, &home);
        assert_eq!(me["username"], "kubernetes-admin", "{me}");
        assert!(me["groups"].as_array().unwrap().contains(&json!("system:masters")), "{me}");
        assert_eq!(kubectl_ok(version, &up.kubeconfig, &home, &["auth", "can-i", "*", "*"]).trim(), "yes");
    }
    kubectl_ok("1.33", &up.kubeconfig, &home, &["create", "configmap", "kept", "--from-literal=a=b"]);

    // the printed curl line (the README's) lists pods; without a certificate: 403
    let line = up.printed("curl:");
    assert!(line.contains("--cacert") && !line.contains(" -k"), "{line}");
    let out = Command::new("sh").arg("-c").arg(format!("{line} -sS -w '\n%{{http_code}}'")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n200") && text.contains(r#""kind":"PodList""#), "{line}: {text}");
    let url = format!("https://127.0.0.1:{}/api/v1/pods", up.port);
    let ca = up.pki("ca.crt");
    // the README's ServiceAccount token line
    kubectl_ok("1.33", &up.kubeconfig, &home, &["create", "serviceaccount", "reader"]);
    let bind = ["create", "clusterrolebinding", "reader", "--clusterrole=view", "--serviceaccount=default:reader"];
    kubectl_ok("1.33", &up.kubeconfig, &home, &bind);
    let token = kubectl_ok("1.33", &up.kubeconfig, &home, &["create", "token", "reader"]);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let (status, body) = curl(&["--cacert", ca.to_str().unwrap(), "-H", &bearer, &url]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("system:anonymous"), "{body}");
    let health = format!("https://127.0.0.1:{}/readyz", up.port);
    assert_eq!(curl(&["--cacert", ca.to_str().unwrap(), &health]).0, 200, "anonymous health checks stay open");

    // the components' kubeconfigs carry their identities and their roles' limits
    let scheduler = up.component_kubeconfig("scheduler");
    assert_eq!(whoami("1.33", &scheduler, &home)["username"], "system:kube-scheduler");
    assert_eq!(kubectl_ok("1.33", &scheduler, &home, &["auth", "can-i", "get", "pods"]).trim(), "yes");
    let secrets = kubectl("1.33", &scheduler, &home, &["auth", "can-i", "create", "secrets"]);
    assert_eq!(String::from_utf8_lossy(&secrets.stdout).trim(), "no");
    let kubelet = up.component_kubeconfig(&format!("kubelet-{NODE}"));
    let node = whoami("1.27", &kubelet, &home);
    assert_eq!(node["username"], format!("system:node:{NODE}"), "{node}");
    assert!(node["groups"].as_array().unwrap().contains(&json!("system:nodes")), "{node}");
    // the kubelet lists its own pods only (upstream's selector authorization)
    let own = format!("spec.nodeName={NODE}");
    kubectl_ok("1.33", &kubelet, &home, &["get", "pods", "-A", "--field-selector", &own]);
    let all = kubectl("1.33", &kubelet, &home, &["get", "pods", "-A"]);
    assert!(!all.status.success() && String::from_utf8_lossy(&all.stderr).contains("Forbidden"), "{all:?}");
    for name in ["controller-manager", "proxy", "dns"] {
        assert!(up.component_kubeconfig(name).is_file(), "{name}.conf");
    }

    the_node_runs_a_busybox_pod(&up, &home);
    the_cluster_dns_answers(&up, &home);
    controllers_act_as_their_service_accounts(&up, &home);

    // Ctrl-C stops etcd, the API server, the scheduler, the controller-manager, the
    // kubelet, kube-proxy, the DNS and containerd (with the pods' shims) too
    let children = up.children();
    let names = "etcd, apiserver, scheduler, controller-manager, containerd, kubelet, kube-proxy, kube-dns";
    assert_eq!(children.len(), 8, "{names}: {children:?}");
    let socket = up.data.join("containerd/containerd.sock").display().to_string();
    assert!(!shims_of(&socket).is_empty(), "the busybox pod's shim runs");
    let ca_pem = std::fs::read(up.pki("ca.crt")).unwrap();
    let status = up.interrupt();
    assert!(status.success(), "{status}");
    for pid in children {
        assert!(!alive(pid), "child {pid} outlived up");
    }
    assert_eq!(shims_of(&socket), Vec::<u32>::new(), "shims outlived up");

    // a second start keeps the CA, the certificates and the data
    let again = Up::start(dir.path());
    eprintln!("second start: {:?}", again.lines.first());
    assert_eq!(std::fs::read(again.pki("ca.crt")).unwrap(), ca_pem, "the CA is reused");
    let kept = kubectl_ok("1.27", &again.kubeconfig, &home, &["get", "configmap", "kept", "-o", "name"]);
    assert_eq!(kept.trim(), "configmap/kept");
    assert!(again.interrupt().success());
}

/// `up` made the kube-dns Service, and its DNS (identity system:kube-dns) publishes its
/// address in the Service's slice and answers for the Service's own name there.
fn the_cluster_dns_answers(up: &Up, home: &Path) {
    let svc = kubectl_ok("1.33", &up.kubeconfig, home, &["-n", "kube-system", "get", "svc", "kube-dns", "-o", "json"]);
    let svc: Value = serde_json::from_str(&svc).unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10", "{svc}");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns", "{svc}");
    let slice_name = format!("endpointslice/kube-dns-{NODE}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let slice = loop {
        let out = kubectl("1.33", &up.kubeconfig, home, &["-n", "kube-system", "get", &slice_name, "-o", "json"]);
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no {slice_name}: {}", up.log("kube-dns"));
        std::thread::sleep(Duration::from_millis(200));
    };
    let address = slice["endpoints"][0]["addresses"][0].as_str().unwrap().to_string();
    let port = slice["ports"][0]["port"].as_u64().unwrap() as u16;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii("kube-dns.kube-system.svc.cluster.local.").unwrap(), RecordType::A));
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.send_to(&query.to_vec().unwrap(), (address.as_str(), port)).unwrap();
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).expect("an answer from kube-dns");
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        answer.answers[0].data,
        RData::A("10.96.0.10".parse::<std::net::Ipv4Addr>().unwrap().into()),
        "{answer}"
    );
}

/// `up`'s kubelet registers its node, Ready within seconds of `up` saying it is up, and
/// `kubectl run --image=busybox` (the locally built image) gets Running as the scheduler
/// (running as system:kube-scheduler) places it there.
fn the_node_runs_a_busybox_pod(up: &Up, home: &Path) {
    let line = up.lines.first().cloned().unwrap_or_default();
    assert!(line.contains(&format!("(node {NODE} Ready)")), "{line}");
    let node = kubectl_ok("1.33", &up.kubeconfig, home, &["get", "node", NODE, "--no-headers"]);
    assert!(node.contains(" Ready "), "{node}");
    let runtime = kubectl_ok(
        "1.33",
        &up.kubeconfig,
        home,
        &["get", "node", NODE, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"],
    );
    assert!(runtime.starts_with("containerd://"), "{runtime}");
    let started = Instant::now();
    kubectl_ok("1.33", &up.kubeconfig, home, &["run", "b", "--image=busybox", "--", "sh", "-c", "echo hi; sleep 3600"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = kubectl_ok("1.27", &up.kubeconfig, home, &["get", "pod", "b", "--no-headers", "-o", "wide"]);
        if out.contains("Running") && out.contains(NODE) {
            eprintln!("busybox Running {:?} after kubectl run", started.elapsed());
            the_pod_address_is_in_the_node_pod_cidr(up, home);
            return the_pod_reaches_the_api_by_service_name(up, home);
        }
        assert!(Instant::now() < deadline, "the pod never ran: {out}\nkubelet log:\n{}", up.log("kubelet"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pods' bridge network is the node's podCIDR (node IPAM → kubelet → containerd).
fn the_pod_address_is_in_the_node_pod_cidr(up: &Up, home: &Path) {
    let get = |what: &str, path: &str| kubectl_ok("1.33", &up.kubeconfig, home, &["get", what, "-o", path]);
    let cidr = get(&format!("node/{NODE}"), "jsonpath={.spec.podCIDR}");
    let ip = get("pod/b", "jsonpath={.status.podIP}");
    let cidr: ipnet::Ipv4Net = cidr.trim().parse().unwrap_or_else(|e| panic!("podCIDR {cidr:?}: {e}"));
    let ip: std::net::Ipv4Addr = ip.trim().parse().unwrap_or_else(|e| panic!("podIP {ip:?}: {e}"));
    assert!(cidr.contains(&ip), "pod IP {ip} outside the node's podCIDR {cidr}");
}

/// Cluster DNS and kube-proxy together: the pod resolves the `kubernetes` Service
/// through the kube-dns ClusterIP and connects to the API server through the Service's
/// ClusterIP, whose endpoint the API server publishes.
fn the_pod_reaches_the_api_by_service_name(up: &Up, home: &Path) {
    let script = "nslookup kubernetes.default.svc.cluster.local && echo | nc -w 3 kubernetes 443 && echo reached";
    let out = kubectl_ok("1.33", &up.kubeconfig, home, &["exec", "b", "--", "sh", "-c", script]);
    assert!(out.contains("Address: 10.96.0.1") && out.contains("reached"), "{out}\n{}", up.log("kube-proxy"));
    // the components' log files are plain text (no terminal colours)
    let log = std::fs::read_to_string(up.data.join("logs/kube-proxy.log")).unwrap_or_default();
    assert!(log.contains("synced rules full=true") && !log.contains('\x1b'), "{}", up.log("kube-proxy"));
}

/// The containerd shims serving the containerd at `socket`.
fn shims_of(socket: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(socket) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// `up`'s kube-controller-manager runs each controller as its kube-system service
/// account (`--use-service-account-credentials`), each allowed what its
/// `system:controller:*` role grants: endpoints, claims bound through the default
/// class, namespaces emptied and deleted.
fn controllers_act_as_their_service_accounts(up: &Up, home: &Path) {
    let k = |args: &[&str]| kubectl_ok("1.33", &up.kubeconfig, home, args);
    k(&["create", "service", "clusterip", "b", "--tcp=80:80"]);
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    let manifest = home.join("claim.json");
    std::fs::write(&manifest, claim.to_string()).unwrap();
    k(&["create", "-f", manifest.to_str().unwrap()]);
    k(&["create", "namespace", "short-lived"]);
    k(&["create", "configmap", "inside", "-n", "short-lived"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let endpoints = kubectl("1.33", &up.kubeconfig, home, &["get", "endpoints", "b", "-o", "name"]);
        let phase = k(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]);
        if endpoints.status.success() && phase == "Bound" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no endpoints or claim {phase:?}; the controllers' log:\n{}",
            up.log("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    k(&["delete", "namespace", "short-lived", "--timeout=60s"]);
    // workloads: the deployment, replicaset and job controllers create what they own
    k(&["create", "deployment", "web", "--image=busybox", "--replicas=2", "--", "sleep", "3600"]);
    k(&["create", "job", "once", "--image=busybox", "--", "true"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let web = k(&["get", "pods", "-l", "app=web", "-o", "name"]);
        let once = k(&["get", "pods", "-l", "job-name=once", "-o", "name"]);
        if web.lines().count() == 2 && once.lines().count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods {web:?} {once:?}; the controllers' log:\n{}",
            up.log("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    k(&["delete", "deployment", "web", "--timeout=60s"]);
    let sa = k(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    assert!(
        sa.contains("serviceaccount/endpoint-controller") && sa.contains("serviceaccount/namespace-controller"),
        "{sa}"
    );
}

/// `ferrokube certs` on its own: everything on the first run, nothing new on the second.
#[test]
fn certs_subcommand_mints_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrokube"))
            .args(["certs", "--node-name=a,b", "--server=https://10.0.0.5:6443"])
            .arg(format!("--dir={}", dir.path().display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("CA made") && first.contains("kubelet-a, kubelet-b"), "{first}");
    for conf in ["admin", "scheduler", "controller-manager", "proxy", "kubelet-a", "kubelet-b"] {
        let text = std::fs::read_to_string(dir.path().join(format!("kubeconfigs/{conf}.conf"))).unwrap();
        assert!(text.contains("server: https://10.0.0.5:6443") && text.contains("client-key-data"), "{conf}");
    }
    let second = run();
    assert!(second.contains("CA kept") && second.contains("issued now: none"), "{second}");
}
