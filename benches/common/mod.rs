//! What the benchmarks share: their child processes, free ports, env knobs, a private etcd,
//! an HTTPS client, waiting for an endpoint, and a process's CPU time.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ferrokube binary the benchmark runs: `$BENCH_FERROKUBE` when set (say, a release
/// build measured by a bench compiled in the dev profile), else this build's.
pub fn ferrokube_exe() -> String {
    std::env::var("BENCH_FERROKUBE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferrokube").to_string())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A private etcd with its data under `dir`; the process and its client URL.
pub fn start_etcd(dir: &Path) -> (Proc, String) {
    let etcd_url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let etcd = Proc(
        Command::new("etcd")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--quota-backend-bytes=8589934592")
            .arg("--experimental-watch-progress-notify-interval=5s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (apt-get install etcd-server)"),
    );
    (etcd, etcd_url)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client")
}

/// Poll `url` until it answers 2xx with a body containing `needle`.
pub async fn wait_for(url: &str, needle: &str) {
    let c = client();
    for _ in 0..1200 {
        if let Ok(r) = c.get(url).send().await
            && r.status().is_success()
            && r.text().await.is_ok_and(|t| t.contains(needle))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered with {needle:?}");
}

/// Process CPU seconds (user + system) from /proc/<pid>/stat.
pub fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// A file named by the environment variable `var` to append a process's log to, else nowhere.
pub fn env_log(var: &str) -> Stdio {
    match std::env::var_os(var) {
        Some(path) => {
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_or_else(|_| Stdio::null(), Stdio::from)
        }
        None => Stdio::null(),
    }
}

/// The API server (`exe`, the release ferrokube) on a free port over `etcd_url`, waited
/// for until ready: the process, its base URL, and the kubeconfig it wrote.
pub async fn start_apiserver(exe: &str, dir: &Path, etcd_url: &str) -> (Proc, String, std::path::PathBuf) {
    let api_port = free_port();
    let kubeconfig = dir.join("kubeconfig");
    let server = Proc(
        Command::new(exe)
            .args(["apiserver", &format!("--etcd-servers={etcd_url}"), &format!("--secure-port={api_port}")])
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!("--write-kubeconfig={}", kubeconfig.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            // `BENCH_SERVER_LOG=FILE` keeps the server's warnings
            .stderr(env_log("BENCH_SERVER_LOG"))
            .spawn()
            .expect("start the API server"),
    );
    let base = format!("https://127.0.0.1:{api_port}");
    wait_for(&format!("{base}/readyz"), "ok").await;
    (server, base, kubeconfig)
}
