//! The kubelet's API and the API server's proxy subresources: `kubectl logs` through
//! pods/log → the kubelet's /containerLogs, nodes/proxy, and the kubelet's own
//! authentication, with the fake runtime and log files in the CRI format written here.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::containerd::CriNode;
use common::controllers::{Component, eventually, start_controller_manager, start_scheduler};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, free_port, json};

const WAIT: Duration = Duration::from_secs(60);

/// A cluster whose API server reaches kubelets with a client certificate of the
/// cluster CA (`ferrokube certs`), and one fake kubelet serving its API on a free port.
struct Setup {
    c: Cluster,
    _kubelet: Component,
    _pki: Pki,
    logs: PathBuf,
    port: u16,
    node: &'static str,
}

/// A `ferrokube certs` directory's `pki/`, removed on drop (also when setup panics).
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The cluster CA and the API server's kubelet client certificate (`ferrokube certs`).
fn kubelet_pki(node: &str) -> Pki {
    let certs = tempfile::Builder::new().prefix("ferrokube-certs-").tempdir().unwrap().keep();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ferrokube"))
        .args(["certs", "--dir", certs.to_str().unwrap(), "--node-name", node])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let pki = Pki(certs.join("pki"));
    assert!(status.success());
    let _ = std::fs::remove_dir_all(certs.join("kubeconfigs"));
    pki
}

/// An API server that reaches kubelets with the client certificate of `pki`.
async fn cluster_for_kubelets(pki: &Path) -> Cluster {
    let p = |f: &str| pki.join(f).display().to_string();
    // the harness's admin token, and one for a reader the kubelet checks by TokenReview
    let tokens = pki.join("tokens.csv");
    std::fs::write(&tokens, format!("{},admin,0,system:masters\nreader-token,reader,2,\n", common::DEV_TOKEN)).unwrap();
    Cluster::start_with(&[
        &format!("--token-auth-file={}", tokens.display()),
        &format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
        &format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        "--kubelet-preferred-address-types=InternalIP",
    ])
    .await
}

async fn setup(node: &'static str) -> Setup {
    let pki = kubelet_pki(node);
    let c = cluster_for_kubelets(&pki.0).await;
    let p = |f: &str| pki.0.join(f).display().to_string();
    let logs = c.dir.path().join("pod-logs");
    let root = c.dir.path().join("kubelet-root");
    let port = free_port();
    let kubeconfig = c.kubeconfig.display().to_string();
    let args = [
        "kubelet".to_string(),
        format!("--kubeconfig={kubeconfig}"),
        "--runtime=fake".into(),
        "--fake-start-delay=100ms".into(),
        format!("--node-name={node}"),
        "--address=127.0.0.1".into(),
        format!("--port={port}"),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--root-dir={}", root.display()),
        format!("--pod-logs-dir={}", logs.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kubelet =
        Component { child: c.spawn_ferrokube(&args, "kubelet.log"), log: c.dir.path().join("kubelet.log"), port: 0 };
    Setup { c, _kubelet: kubelet, _pki: pki, logs, port, node }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kubelet.log ----\n{}", self.c.log_tail("kubelet.log"));
        }
    }
}

/// Create a running (fake) pod on the node; its uid.
async fn running_pod(s: &Setup, name: &str, containers: &[&str]) -> String {
    let containers: Vec<_> = containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": s.node, "containers": containers}});
    s.c.create("/api/v1/namespaces/default/pods", &pod).await;
    eventually(WAIT, "the pod to run", || async {
        let pod = s.c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        (pod["status"]["phase"] == "Running").then(|| pod["metadata"]["uid"].as_str().unwrap().to_string())
    })
    .await
}

fn write_log(dir: &Path, restart: u32, lines: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let text: String = lines.iter().map(|(t, l)| format!("{t} stdout F {l}\n")).collect();
    std::fs::write(dir.join(format!("{restart}.log")), text).unwrap();
}

fn append_log(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_through_the_kubelet() {
    let s = setup("logs-node").await;
    let uid = running_pod(&s, "web", &["app"]).await;
    let dir = s.logs.join(format!("default_web_{uid}")).join("app");
    write_log(&dir, 0, &[("2026-01-01T00:00:00Z", "first run")]);
    write_log(&dir, 1, &[("2026-01-01T00:00:01Z", "hello"), ("2026-01-01T00:00:02.5Z", "world")]);
    for v in KUBECTL_VERSIONS {
        assert_eq!(s.c.kubectl_ok(v, &["logs", "web"]), "hello\nworld\n", "kubectl {v}");
        assert_eq!(s.c.kubectl_ok(v, &["logs", "web", "--previous"]), "first run\n", "kubectl {v}");
        assert_eq!(s.c.kubectl_ok(v, &["logs", "web", "--tail=1"]), "world\n", "kubectl {v}");
        assert_eq!(s.c.kubectl_ok(v, &["logs", "web", "-c", "app", "--limit-bytes=3"]), "hel", "kubectl {v}");
        let stamped = s.c.kubectl_ok(v, &["logs", "pod/web", "--timestamps", "--tail=1"]);
        assert_eq!(stamped, "2026-01-01T00:00:02.5Z world\n", "kubectl {v}");
        // the lines are from January: none in the last hour, one after 00:00:02
        assert_eq!(s.c.kubectl_ok(v, &["logs", "web", "--since=1h"]), "", "kubectl {v}");
        let since = s.c.kubectl_ok(v, &["logs", "web", "--since-time=2026-01-01T00:00:02Z"]);
        assert_eq!(since, "world\n", "kubectl {v}");
        let out = s.c.kubectl(v, &["logs", "web", "-c", "nope"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("container nope is not valid for pod web"), "kubectl {v}: {err}");
    }

    // -f streams what is appended, with both kubectl versions
    for v in KUBECTL_VERSIONS {
        let follow = s.c.kubectl_stream(v, &["logs", "-f", "web"]);
        follow.wait_for_line("world", WAIT).unwrap_or_else(|seen| panic!("kubectl {v}: {seen:?}"));
        append_log(&dir.join("1.log"), &format!("2026-01-01T00:00:03Z stdout F appended for {v}\n"));
        follow.wait_for_line(&format!("appended for {v}"), WAIT).unwrap_or_else(|seen| panic!("kubectl {v}: {seen:?}"));
    }

    // a pod of two containers needs a container (kubectl picks the first itself)
    running_pod(&s, "pair", &["a", "b"]).await;
    let (status, body) = s.c.get("/api/v1/namespaces/default/pods/pair/log").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "a container name must be specified for pod pair, choose one of: [a b]", "{body}");
    // b never restarted: no earlier log, as upstream words it
    let (status, body) = s.c.get("/api/v1/namespaces/default/pods/pair/log?container=b&previous=true").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["message"], "previous terminated container \"b\" in pod \"pair\" not found", "{body}");
    let (status, body) = s.c.get("/api/v1/namespaces/default/pods/ghost/log").await;
    assert_eq!((status, body["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_and_the_kubelets_own_authentication() {
    let s = setup("proxy-node").await;
    running_pod(&s, "listed", &["c"]).await;
    let pods = s.c.kubectl_ok("1.33", &["get", "--raw", "/api/v1/nodes/proxy-node/proxy/pods"]);
    let pods: serde_json::Value = serde_json::from_str(&pods).unwrap();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"][0]["metadata"]["name"], "listed", "{pods}");
    let health = s.c.kubectl_ok("1.27", &["get", "--raw", "/api/v1/nodes/proxy-node/proxy/healthz"]);
    assert_eq!(health, "ok");
    let stats = s.c.kubectl_ok("1.33", &["get", "--raw", "/api/v1/nodes/proxy-node/proxy/stats/summary"]);
    assert!(stats.contains("\"nodeName\":\"proxy-node\""), "{stats}");

    // straight to the kubelet: no credentials is a 401 Status, a forged token too
    let direct = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let url = format!("https://127.0.0.1:{}/pods", s.port);
    let r = direct.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "Unauthorized", "{body}");
    let r = direct.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // a token the API server knows is reviewed (TokenReview) and the reader authorized
    let r = direct.get(&url).bearer_auth("reader-token").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let review =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "reader-token"}});
    let (status, body) = s.c.post("/apis/authentication.k8s.io/v1/tokenreviews", &review).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["status"]["authenticated"].as_bool(), body["status"]["user"]["username"].as_str()),
        (Some(true), Some("reader"))
    );

    // no runtime behind a fake node: exec is refused with a Status, not a hang or a panic
    let out = s.c.kubectl("1.27", &["exec", "listed", "--", "true"]);
    assert!(!out.status.success());
    let (status, _) = s.c.get("/api/v1/namespaces/default/pods/listed/exec?command=true&stdout=true").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// A real node (its own containerd) whose kubelet trusts the cluster CA of `pki`.
struct Real {
    node: CriNode,
    _scheduler: Component,
    c: Cluster,
    _pki: Pki,
}

async fn real_node() -> Real {
    let pki = kubelet_pki("stream-1");
    let c = cluster_for_kubelets(&pki.0).await;
    let scheduler = start_scheduler(&c).await;
    // CriNode gives the kubelet a free --port of its own
    let ca = format!("--client-ca-file={}", pki.0.join("ca.crt").display());
    let node = CriNode::start(&c, "stream-1", &[&ca]).await;
    Real { node, _scheduler: scheduler, c, _pki: pki }
}

async fn run_pod(c: &Cluster, name: &str, script: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        // no token volume: the test's API server signs no ServiceAccount tokens
        "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}});
    c.create("/api/v1/namespaces/default/pods", &pod).await;
    eventually(WAIT, &format!("{name} to run"), || async {
        let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        (pod["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(())
    })
    .await;
}

/// kubectl 1.33 with WebSockets (the harness turns them off for the other tests).
const WEBSOCKETS: [(&str, &str); 2] =
    [("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true"), ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "true")];

/// kubectl `v` on the cluster, WebSockets allowed (1.27 speaks SPDY whatever they say).
fn kubectl_command(c: &Cluster, v: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(common::kubectl_binary(v));
    cmd.args(["--kubeconfig", c.kubeconfig.to_str().unwrap()]).args(args).envs(WEBSOCKETS);
    cmd.env("HOME", c.dir.path().join("home-ws"));
    cmd
}

fn kubectl_in(c: &Cluster, v: &str, args: &[&str], input: &str) -> std::process::Output {
    if v == "1.27" {
        return c.kubectl_stdin(v, args, input);
    }
    let path = c.dir.path().join("stdin.txt");
    std::fs::write(&path, input).unwrap();
    let mut cmd = kubectl_command(c, v, args);
    cmd.stdin(std::fs::File::open(&path).unwrap()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_logs_and_port_forward_into_real_containers() {
    let r = real_node().await;
    let c = &r.c;
    run_pod(c, "ticker", "echo started; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done").await;
    let www = "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec busybox httpd -f -p 80 -h /www";
    run_pod(c, "web", www).await;
    for v in KUBECTL_VERSIONS {
        let started = std::time::Instant::now();
        let out = kubectl_in(c, v, &["exec", "ticker", "--", "echo", "hi"], "");
        eprintln!("kubectl {v} exec -- echo hi: {:?}", started.elapsed());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hi\n",
            "kubectl {v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = kubectl_in(c, v, &["exec", "-i", "ticker", "--", "sh", "-c", "cat; echo done"], "from stdin\n");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout, "from stdin\ndone\n", "kubectl {v}: {}", String::from_utf8_lossy(&out.stderr));
        let out = kubectl_in(c, v, &["exec", "ticker", "--", "sh", "-c", "exit 3"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "kubectl {v}: the exit code comes back: {err}");

        let logs = c.kubectl_ok(v, &["logs", "ticker", "--tail=1"]);
        assert!(logs.starts_with("tick "), "kubectl {v}: {logs}");
        let first = c.kubectl_ok(v, &["logs", "ticker", "-c", "main", "--timestamps"]);
        assert!(first.lines().next().is_some_and(|l| l.ends_with(" started")), "kubectl {v}: {first}");
        let follow = c.kubectl_stream(v, &["logs", "-f", "ticker", "--tail=1"]);
        let seen = follow.wait_for_line("tick", WAIT).unwrap_or_else(|s| panic!("kubectl {v}: {s:?}"));
        let n: u32 = seen.trim_start_matches("tick ").parse().unwrap();
        follow.wait_for_line(&format!("tick {}", n + 3), WAIT).unwrap_or_else(|s| panic!("kubectl {v}: {s:?}"));

        attach_sees_output(c, v);
        exec_tty_follows_resize(c, v);

        let local = free_port();
        let ports = format!("{local}:80");
        let child = kubectl_command(c, v, &["port-forward", "pod/web", &ports])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _forward = KillOnDrop(child);
        let body = eventually(WAIT, "a page through port-forward", || async {
            let url = format!("http://127.0.0.1:{local}/");
            let resp = reqwest::get(&url).await.ok()?;
            resp.text().await.ok()
        })
        .await;
        assert_eq!(body, "hello-from-httpd\n", "kubectl {v}");
    }

    service_proxy_reaches_httpd(c).await;

    // malformed upgrades and options are refused with a Status, the kubelet stays up
    let exec = "/api/v1/namespaces/default/pods/ticker/exec?command=true&stdout=true";
    let (code, body) = upgrade_request(c, exec, "bogus/1");
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
    let (code, body) = upgrade_request(c, "/api/v1/namespaces/default/pods/ticker/exec?command=true", "SPDY/3.1");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "you must specify at least 1 of stdin, stdout, stderr", "{body}");
    // an upgrade the runtime cannot complete (no stream protocol) ends without a hang
    let (code, _) = upgrade_request(c, "/api/v1/namespaces/default/pods/web/portforward?ports=80", "websocket");
    assert!(code >= 400, "{code}");
    let out = kubectl_in(c, "1.33", &["exec", "ticker", "--", "echo", "still up"], "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still up\n");
    assert!(r.node.shims() > 0, "the pods still run");
    // kubectl 1.33 spoke WebSocket (v5 exec, tunnelled port-forward), not the SPDY fallback
    let log = std::fs::read_to_string(r.node.kubelet_log()).unwrap();
    assert!(log.contains("exec over WebSocket ended"), "no v5 exec in the kubelet log");
    assert!(log.contains("port-forward over WebSocket"), "no port-forward tunnel in the kubelet log");
}

/// services/proxy: the httpd pod behind a Service (its Endpoints from the real
/// endpoints controller), reached by port number, by port name and by the bare name
/// (the Service's only port is named, so the bare name has no endpoint port: 503).
async fn service_proxy_reaches_httpd(c: &Cluster) {
    let _cm = start_controller_manager(c, &["--controllers=endpoint,endpointslice"]).await;
    let labels = json!({"metadata": {"labels": {"app": "web"}}});
    let (code, _) = c.patch("/api/v1/namespaces/default/pods/web", "application/merge-patch+json", &labels).await;
    assert_eq!(code, StatusCode::OK);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080, "targetPort": 80}]}});
    c.create("/api/v1/namespaces/default/services", &svc).await;
    eventually(WAIT, "the Service's endpoints", || async {
        let (_, eps) = c.get("/api/v1/namespaces/default/endpoints/web").await;
        eps["subsets"][0]["addresses"][0]["ip"].is_string().then_some(())
    })
    .await;
    for v in KUBECTL_VERSIONS {
        for id in ["web:8080", "web:http", "http:web:http"] {
            let page = c.kubectl_ok(v, &["get", "--raw", &format!("/api/v1/namespaces/default/services/{id}/proxy/")]);
            assert_eq!(page, "hello-from-httpd\n", "kubectl {v}, {id}");
        }
    }
    let (code, body) = c.get("/api/v1/namespaces/default/services/web/proxy/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["message"], "no endpoints available for service \"web\"", "{body}");
    let (code, body) = c.get("/api/v1/namespaces/default/services/web:81/proxy/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["message"], "no service port 81 found for service \"web\"", "{body}");
}

/// A pseudo-terminal of `rows` × `cols`: (master, slave).
fn open_pty(rows: u16, cols: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds, which become owned by the Files below
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds of ours, each owned once
    unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) }
}

fn set_pty_size(master: &std::fs::File, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize; the kernel signals SIGWINCH to the terminal's
    // foreground process group (kubectl)
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

/// `kubectl exec -it` on a pseudo-terminal (kubectl's controlling terminal): the
/// container gets a TTY of the terminal's size, and resizing the terminal reaches the
/// container (kubectl's resize stream / WebSocket channel 4).
fn exec_tty_follows_resize(c: &Cluster, v: &str) {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let (mut master, slave) = open_pty(24, 80);
    // the size comes on its own stream and may land after the process starts: ask again
    // for each line until it shows
    let script = "tty; while read x; do stty size; done; echo bye";
    let mut cmd = kubectl_command(c, v, &["exec", "-it", "ticker", "--", "sh", "-c", script]);
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; the slave (fd 0) becomes the
    // child's controlling terminal, so a resize signals it
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let _kubectl = KillOnDrop(cmd.spawn().unwrap());
    drop(cmd); // the parent's copies of the slave: the master sees EOF when kubectl ends
    let (tx, rx) = std::sync::mpsc::channel();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |needle: &str, seen: &mut String, master: &mut std::fs::File, nudge: bool| {
        let deadline = std::time::Instant::now() + WAIT;
        while !seen.contains(needle) {
            assert!(std::time::Instant::now() < deadline, "kubectl {v}: no {needle:?} in {seen:?}");
            if nudge {
                // a line for `read`: the resize and the input travel on separate streams
                master.write_all(b"\n").unwrap();
            }
            if let Ok(out) = rx.recv_timeout(Duration::from_millis(300)) {
                seen.push_str(&out);
            }
        }
    };
    wait_for("24 80", &mut seen, &mut master, true);
    assert!(seen.contains("/dev/pts/"), "kubectl {v}: no TTY in the container: {seen:?}");
    set_pty_size(&master, 31, 101);
    wait_for("31 101", &mut seen, &mut master, true);
    master.write_all(&[4]).unwrap(); // ^D: `read` sees the end of input
    wait_for("bye", &mut seen, &mut master, false);
}

/// `kubectl attach` shows the running container's output.
fn attach_sees_output(c: &Cluster, v: &str) {
    use std::io::BufRead;
    let mut child = kubectl_command(c, v, &["attach", "ticker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _attach = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("tick ") => return,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("kubectl {v} attach showed no output");
}

/// An HTTP/1.1 upgrade request (curl: reqwest will not send Connection headers), its
/// status code and JSON body.
fn upgrade_request(c: &Cluster, path: &str, protocol: &str) -> (u16, serde_json::Value) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--http1.1", "-m", "20", "-X", "POST", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {}", common::DEV_TOKEN)])
        .args(["-H", "Connection: Upgrade", "-H", &format!("Upgrade: {protocol}")])
        .arg(c.url(path))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or_default())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
