//! The integration harness: a real etcd and the real `ferrokube apiserver` on free
//! loopback ports, spoken to through raw HTTPS (reqwest), stock kubectl, and etcd itself.
//!
//! Every `Cluster` owns its processes, ports and temporary directory, so tests run in
//! parallel; both processes are killed when the `Cluster` drops, also when a test panics
//! (and, through PR_SET_PDEATHSIG, when the test thread that started them dies).

#![allow(dead_code)]

pub mod containerd;
pub mod controllers;
pub mod netns;
pub mod proxy;
pub mod watch_lines;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use reqwest::{Method, StatusCode};
pub use serde_json::{Value, json};

/// The kubectl versions every kubectl test runs with: the oldest and newest supported.
pub const KUBECTL_VERSIONS: [&str; 2] = ["1.27", "1.33"];

/// The bearer token the harness's HTTP client and the server's written kubeconfig carry.
/// Without authentication flags the server accepts anything; tests that configure a
/// token file list it there (as an admin) so the harness can still poll readiness.
pub const DEV_TOKEN: &str = "ferrokube-dev-admin";

/// How long a process gets to come up before the harness gives up.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long one kubectl command may run.
const KUBECTL_DEADLINE: Duration = Duration::from_secs(120);

/// A free TCP port on the loopback interface (the kernel picks it; it is released at
/// once, so a racing process may take it: callers retry start-up on failure).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// Make a child die with the test process even if the harness never gets to kill it.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("opening a log file")
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The directory holding `kubectl.1.27` ... `kubectl.1.33` (next to the real `kubectl`).
pub fn kubectl_dir() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("kubectl");
        if candidate.is_file()
            && let Ok(real) = std::fs::canonicalize(&candidate)
            && let Some(parent) = real.parent()
        {
            return parent.to_path_buf();
        }
    }
    panic!("kubectl is not on PATH");
}

pub fn kubectl_binary(version: &str) -> PathBuf {
    let bin = kubectl_dir().join(format!("kubectl.{version}"));
    assert!(bin.is_file(), "{} is missing", bin.display());
    bin
}

/// One HTTP answer: status, headers, protocol version and the body (as text and JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub version: reqwest::Version,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    /// Every value of a repeated header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }
}

/// Run `ferrokube apiserver` with `flags` (and an etcd nobody listens on), which must
/// refuse to start without panicking; its standard error.
pub fn start_up_error(flags: &[String]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrokube"))
        .arg("apiserver")
        .arg("--etcd-servers=http://127.0.0.1:9")
        .arg(format!("--cert-dir={}", dir.path().display()))
        .args(flags)
        .output()
        .expect("running ferrokube");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{flags:?} started");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A request body: JSON, or raw bytes with their Content-Type.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str, Vec<u8>),
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub etcd_url: String,
    etcd_peer_url: String,
    etcd_data: PathBuf,
    pub port: u16,
    pub base: String,
    pub kubeconfig: PathBuf,
    pub cert_dir: PathBuf,
    pub http: reqwest::Client,
    etcd: Option<Child>,
    server: Option<Child>,
    /// Extra `ferrokube apiserver` flags (`start_with`).
    server_flags: Vec<String>,
}

impl Cluster {
    /// Start etcd and the API server and wait until /readyz answers "ok".
    pub async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    /// `start`, with extra API server flags (`--authorization-mode=RBAC` ...).
    pub async fn start_with(server_flags: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new().prefix("ferrokube-it-").tempdir().expect("tempdir");
        let mut auth = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {DEV_TOKEN}").parse().expect("header value");
        auth.insert(reqwest::header::AUTHORIZATION, bearer);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(true)
            .default_headers(auth)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client");
        let mut cluster = Cluster {
            kubeconfig: dir.path().join("kubeconfig"),
            cert_dir: dir.path().join("certs"),
            dir,
            etcd_url: String::new(),
            etcd_peer_url: String::new(),
            etcd_data: PathBuf::new(),
            port: 0,
            base: String::new(),
            http,
            etcd: None,
            server: None,
            server_flags: server_flags.iter().map(|f| f.to_string()).collect(),
        };
        cluster.start_etcd().await;
        cluster.start_server().await;
        cluster
    }

    async fn start_etcd(&mut self) {
        for attempt in 1..=5 {
            let (client, peer) = (free_port(), free_port());
            self.etcd_url = format!("http://127.0.0.1:{client}");
            self.etcd_peer_url = format!("http://127.0.0.1:{peer}");
            self.etcd_data = self.dir.path().join(format!("etcd-{attempt}"));
            if self.spawn_etcd().await {
                return;
            }
        }
        panic!("etcd did not start; log:\n{}", self.log_tail("etcd.log"));
    }

    /// Start etcd on the current URLs and data directory; false if it did not come up.
    async fn spawn_etcd(&mut self) -> bool {
        let child = self.spawn_logged(
            Command::new("etcd")
                .arg("--name=default")
                .arg(format!("--data-dir={}", self.etcd_data.display()))
                .arg(format!("--listen-client-urls={}", self.etcd_url))
                .arg(format!("--advertise-client-urls={}", self.etcd_url))
                .arg(format!("--listen-peer-urls={}", self.etcd_peer_url))
                .arg(format!("--initial-advertise-peer-urls={}", self.etcd_peer_url))
                .arg(format!("--initial-cluster=default={}", self.etcd_peer_url))
                .arg("--logger=zap")
                .arg("--log-level=warn"),
            "etcd.log",
        );
        self.etcd = Some(child);
        if self.wait_until_up(true).await {
            return true;
        }
        kill(&mut self.etcd);
        false
    }

    /// Stop etcd (SIGKILL), leaving the API server running.
    pub fn stop_etcd(&mut self) {
        kill(&mut self.etcd);
    }

    /// Start etcd again on the same ports and data.
    pub async fn restart_etcd(&mut self) {
        assert!(self.spawn_etcd().await, "etcd did not restart; log:\n{}", self.log_tail("etcd.log"));
    }

    /// Spawn a process with its output appended to `log` in the cluster's directory.
    fn spawn_logged(&self, cmd: &mut Command, log: &str) -> Child {
        let path = self.dir.path().join(log);
        die_with_parent(cmd)
            .stdin(Stdio::null())
            .stdout(log_file(&path))
            .stderr(log_file(&path))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()))
    }

    /// Start `ferrokube <args>` (a companion such as the scheduler) with its output in
    /// `log` in the cluster's directory; the caller owns (and kills) the child.
    pub fn spawn_ferrokube(&self, args: &[&str], log: &str) -> Child {
        self.spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_ferrokube"))
                .args(args)
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "debug,kube=info,hyper=info,tower=info,h2=info,rustls=info"),
            log,
        )
    }

    async fn etcd_healthy(&self) -> bool {
        let url = format!("{}/health", self.etcd_url);
        match self.http.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) => r.text().await.is_ok_and(|t| t.contains("true")),
            Err(_) => false,
        }
    }

    /// Start (or restart) the API server, on a new free port when the old one is taken.
    pub async fn start_server(&mut self) {
        for _ in 0..5 {
            if self.port == 0 || std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
                self.port = free_port();
            }
            self.base = format!("https://127.0.0.1:{}", self.port);
            let _ = std::fs::remove_file(&self.kubeconfig);
            let child = self.spawn_logged(
                Command::new(env!("CARGO_BIN_EXE_ferrokube"))
                    .arg("apiserver")
                    .arg(format!("--etcd-servers={}", self.etcd_url))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--secure-port={}", self.port))
                    .arg(format!("--cert-dir={}", self.cert_dir.display()))
                    .arg(format!("--write-kubeconfig={}", self.kubeconfig.display()))
                    .args(&self.server_flags)
                    .env("NO_COLOR", "1")
                    .env("RUST_LOG", "info"),
                "server.log",
            );
            self.server = Some(child);
            if self.wait_until_up(false).await {
                return;
            }
            kill(&mut self.server);
            self.port = 0;
        }
        panic!("the API server did not start; log:\n{}", self.log_tail("server.log"));
    }

    async fn server_ready(&self) -> bool {
        let ready = match self.http.get(self.url("/readyz")).timeout(Duration::from_secs(2)).send().await {
            Ok(r) => r.status() == StatusCode::OK && r.text().await.is_ok_and(|t| t == "ok"),
            Err(_) => false,
        };
        ready && self.kubeconfig.is_file()
    }

    /// Poll until etcd (or the server) is up; false when it exited or the deadline passed.
    async fn wait_until_up(&mut self, etcd: bool) -> bool {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            let up = if etcd { self.etcd_healthy().await } else { self.server_ready().await };
            if up {
                return true;
            }
            let child = if etcd { self.etcd.as_mut() } else { self.server.as_mut() };
            if child.is_none_or(|c| !matches!(c.try_wait(), Ok(None))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Replace the extra flags the next `start_server` passes (a restart with another
    /// configuration).
    pub fn set_server_flags(&mut self, flags: &[&str]) {
        self.server_flags = flags.iter().map(|f| f.to_string()).collect();
    }

    /// Stop the API server (SIGKILL) and leave etcd running.
    pub fn stop_server(&mut self) {
        kill(&mut self.server);
    }

    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A kubeconfig `kubeconfig-<name>` for this server that authenticates with `token`.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
            self.base
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    // ---- raw HTTP ----

    /// Send one request and read the whole answer.
    pub async fn call(&self, method: Method, path: &str, body: Body<'_>, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.http.request(method.clone(), self.url(path));
        req = match body {
            Body::None => req,
            Body::Json(v) => req.header("content-type", "application/json").body(serde_json::to_vec(v).unwrap()),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let (status, headers, version) = (resp.status(), resp.headers().clone(), resp.version());
        let text = resp.text().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, headers, version, text, json }
    }

    /// `call` reduced to status and JSON body.
    async fn status_json(&self, method: Method, path: &str, body: Body<'_>) -> (StatusCode, Value) {
        let r = self.call(method, path, body, &[]).await;
        (r.status, r.json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.status_json(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.status_json(Method::POST, path, Body::Json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.status_json(Method::PUT, path, Body::Json(body)).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> (StatusCode, Value) {
        self.status_json(Method::PATCH, path, Body::Raw(content_type, serde_json::to_vec(body).unwrap())).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.status_json(Method::DELETE, path, Body::None).await
    }

    pub async fn delete_with(&self, path: &str, options: &Value) -> (StatusCode, Value) {
        self.status_json(Method::DELETE, path, Body::Json(options)).await
    }

    /// POST that must succeed with 201; returns the created object.
    pub async fn create(&self, path: &str, body: &Value) -> Value {
        let (status, obj) = self.post(path, body).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {obj}");
        obj
    }

    /// GET that must succeed with 200.
    pub async fn must_get(&self, path: &str) -> Value {
        let (status, obj) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {obj}");
        obj
    }

    /// Poll GET `path` until it answers 404 (a deletion that completes in the background).
    pub async fn wait_gone(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, obj) = self.get(path).await;
            if status == StatusCode::NOT_FOUND {
                return;
            }
            assert!(Instant::now() < deadline, "{path} still exists: {obj}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // ---- etcd ----

    pub async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.etcd_url.as_str()], None).await.expect("connecting to etcd")
    }

    /// Every key under `prefix`, sorted.
    pub async fn etcd_keys(&self, prefix: &str) -> Vec<String> {
        let opts = etcd_client::GetOptions::new().with_prefix().with_keys_only();
        let resp = self.etcd().await.get(prefix, Some(opts)).await.expect("etcd get");
        let mut keys: Vec<String> =
            resp.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
        keys.sort();
        keys
    }

    /// The raw value and mod_revision of one key.
    pub async fn etcd_get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        let resp = self.etcd().await.get(key, None).await.expect("etcd get");
        resp.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision()))
    }

    pub async fn etcd_revision(&self) -> i64 {
        let resp = self.etcd().await.get("/", None).await.expect("etcd get");
        resp.header().expect("etcd header").revision()
    }

    /// Compact etcd's history up to `revision` (physically, so it has taken effect).
    pub async fn etcd_compact(&self, revision: i64) {
        let opts = etcd_client::CompactionOptions::new().with_physical();
        self.etcd().await.compact(revision, Some(opts)).await.expect("etcd compact");
    }

    /// The revision at which `key` was deleted, read from etcd's history since `from`.
    pub async fn etcd_deleted_at(&self, key: &str, from: i64) -> Option<i64> {
        let opts = etcd_client::WatchOptions::new().with_start_revision(from);
        let mut client = self.etcd().await;
        let mut stream = client.watch(key, Some(opts)).await.expect("etcd watch");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(Some(resp))) = tokio::time::timeout_at(deadline, stream.message()).await {
            for ev in resp.events() {
                if ev.event_type() == etcd_client::EventType::Delete {
                    return ev.kv().map(|kv| kv.mod_revision());
                }
            }
        }
        None
    }

    // ---- kubectl ----

    fn kubectl_command(&self, version: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_binary(version));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // a private HOME per cluster and version: kubectl's discovery cache must not
            // leak between clusters, nor one version's discovery stand in for another's
            .env("HOME", self.dir.path().join(format!("home-{version}")))
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        die_with_parent(&mut cmd);
        cmd
    }

    /// Run kubectl with extra environment (e.g. `EDITOR` for `kubectl edit`).
    pub fn kubectl_env(&self, version: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.kubectl_command(version, args);
        cmd.envs(env.iter().copied()).stdin(Stdio::null());
        cmd.output().unwrap_or_else(|e| panic!("running kubectl {version}: {e}"))
    }

    fn spawn_kubectl(&self, version: &str, args: &[&str], stdin: Stdio, stderr: Stdio) -> Child {
        self.kubectl_command(version, args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("running kubectl {version}: {e}"))
    }

    pub fn kubectl(&self, version: &str, args: &[&str]) -> Output {
        self.kubectl_stdin(version, args, "")
    }

    /// Run kubectl with `input` on stdin; killed (and the test failed) if it has not
    /// finished within KUBECTL_DEADLINE, so a kubectl waiting forever cannot hang the suite.
    pub fn kubectl_stdin(&self, version: &str, args: &[&str], input: &str) -> Output {
        let mut child = self.spawn_kubectl(version, args, Stdio::piped(), Stdio::piped());
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(KUBECTL_DEADLINE) {
            Ok(out) => out.expect("waiting for kubectl"),
            Err(_) => {
                // SAFETY: the child is ours and not yet reaped (its waiter is blocked on it)
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let out = rx.recv().ok().and_then(Result::ok);
                let text = |b: Option<&Vec<u8>>| b.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                panic!(
                    "kubectl {version} {args:?} did not finish within {KUBECTL_DEADLINE:?}\nstdout: {}\nstderr: {}",
                    text(out.as_ref().map(|o| &o.stdout)),
                    text(out.as_ref().map(|o| &o.stderr))
                );
            }
        }
    }

    /// Run kubectl, assert it succeeded, return its stdout.
    pub fn kubectl_ok(&self, version: &str, args: &[&str]) -> String {
        let out = self.kubectl(version, args);
        assert_success(version, args, &out)
    }

    pub fn kubectl_stdin_ok(&self, version: &str, args: &[&str], input: &str) -> String {
        let out = self.kubectl_stdin(version, args, input);
        assert_success(version, args, &out)
    }

    /// Start a long-running kubectl (e.g. `get -w`); its stdout and stderr lines arrive
    /// on one channel.
    pub fn kubectl_stream(&self, version: &str, args: &[&str]) -> Streaming {
        let mut child = self.spawn_kubectl(version, args, Stdio::null(), Stdio::piped());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward_lines(stdout, tx.clone());
        forward_lines(stderr, tx);
        Streaming { child, lines: rx }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- server.log (tail) ----\n{}", self.log_tail("server.log"));
        }
        kill(&mut self.server);
        kill(&mut self.etcd);
    }
}

fn assert_success(version: &str, args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {version} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn forward_lines(from: impl std::io::Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to.send(line).is_err() {
                return;
            }
        }
    });
}

/// A running kubectl whose output is read line by line; killed on drop.
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    /// Wait (up to `within`) for a line containing `needle`; returns every line read.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> Result<String, Vec<String>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        Err(seen)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `reason` of a Status answer, asserting it is a well-formed failure Status with
/// the same code as the HTTP status.
pub fn status_reason(status: StatusCode, body: &Value) -> String {
    assert_eq!(body["kind"], "Status", "not a Status: {body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"].as_u64(), Some(status.as_u16() as u64), "{body}");
    body["reason"].as_str().unwrap_or_default().to_string()
}

/// Paths of the `details.causes` of an Invalid Status.
pub fn cause_fields(body: &Value) -> Vec<String> {
    body["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The names of the items of a list.
pub fn item_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

/// The path of a test fixture file (tests/fixtures/...).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name)
}

/// Minimal objects.
pub fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

pub fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": image}]},
    })
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

pub fn deployment(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
        },
    })
}

pub fn service(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": port}], "selector": {"app": name}},
    })
}

/// Percent-encode a query value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Text without ANSI colour codes (kubectl cluster-info colours even into a pipe).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
