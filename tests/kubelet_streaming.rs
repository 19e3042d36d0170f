//! The kubelet's API and the API server's proxy subresources: `kubectl logs` through
//! pods/log → the kubelet's /containerLogs, nodes/proxy, and the kubelet's own
//! authentication, with the fake runtime and log files in the CRI format written here.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::controllers::{Component, eventually};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, free_port, json};

const WAIT: Duration = Duration::from_secs(60);

/// A cluster whose API server reaches kubelets with a client certificate of the
/// cluster CA (`ferrokube certs`), and one fake kubelet serving its API on a free port.
struct Setup {
    c: Cluster,
    _kubelet: Component,
    pki: PathBuf,
    logs: PathBuf,
    port: u16,
    node: &'static str,
}

async fn setup(node: &'static str) -> Setup {
    let certs = tempfile::Builder::new().prefix("ferrokube-certs-").tempdir().unwrap().keep();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_ferrokube"))
        .args(["certs", "--dir", certs.to_str().unwrap(), "--node-name", node])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pki = certs.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let c = Cluster::start_with(&[
        &format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
        &format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        "--kubelet-preferred-address-types=InternalIP",
    ])
    .await;
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
    let _ = std::fs::remove_dir_all(certs.join("kubeconfigs"));
    Setup { c, _kubelet: kubelet, pki, logs, port, node }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kubelet.log ----\n{}", self.c.log_tail("kubelet.log"));
        }
        if let Some(dir) = self.pki.parent() {
            let _ = std::fs::remove_dir_all(dir);
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

    // no runtime behind a fake node: exec is refused with a Status, not a hang or a panic
    let out = s.c.kubectl("1.27", &["exec", "listed", "--", "true"]);
    assert!(!out.status.success());
    let (status, _) = s.c.get("/api/v1/namespaces/default/pods/listed/exec?command=true&stdout=true").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
