use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Exit codes per command name, set by the test; records what ran.
#[derive(Default)]
struct Commands {
    exits: Mutex<HashMap<String, i32>>,
    ran: Mutex<Vec<String>>,
}

impl Commands {
    fn set(&self, cmd: &str, code: i32) {
        self.exits.lock().unwrap().insert(cmd.to_string(), code);
    }

    fn count(&self, cmd: &str) -> usize {
        self.ran.lock().unwrap().iter().filter(|c| *c == cmd).count()
    }
}

impl ExecInContainer for Commands {
    fn exec_sync(
        &self,
        _id: &str,
        cmd: Vec<String>,
        _t: Duration,
    ) -> BoxFuture<'static, anyhow::Result<(i32, Vec<u8>)>> {
        let name = cmd.first().cloned().unwrap_or_default();
        self.ran.lock().unwrap().push(name.clone());
        let code = self.exits.lock().unwrap().get(&name).copied();
        Box::pin(async move {
            match code {
                Some(-1) => anyhow::bail!("timeout 1s exceeded: context deadline exceeded"),
                Some(c) => Ok((c, format!("{name} said {c}\n").into_bytes())),
                None => anyhow::bail!("container not found"),
            }
        })
    }
}

fn container(v: serde_json::Value) -> Container {
    serde_json::from_value(v).unwrap()
}

fn exec_probe(cmd: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut p = json!({"exec": {"command": [cmd]}, "periodSeconds": 1});
    p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    p
}

async fn wait_for(rx: &mut watch::Receiver<ProbeState>, want: impl Fn(&ProbeState) -> bool) -> ProbeState {
    let state = tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|s| want(s))).await;
    *state.expect("probe state in time").expect("prober alive")
}

#[tokio::test]
async fn readiness_follows_thresholds() {
    let cmds = Arc::new(Commands::default());
    cmds.set("ready", 1);
    let c = container(
        json!({"name": "c", "readinessProbe": exec_probe("ready", json!({"successThreshold": 2, "failureThreshold": 2}))}),
    );
    let mut prober = spawn_prober(&Pod::default(), &c, "127.0.0.1".into(), "id".into(), cmds.clone());
    assert_eq!(*prober.state.borrow(), ProbeState { started: true, ready: false });
    tokio::time::sleep(SECOND * 5).await;
    assert!(!prober.state.borrow().ready);
    cmds.set("ready", 0);
    let before = cmds.count("ready");
    wait_for(&mut prober.state, |s| s.ready).await;
    assert!(cmds.count("ready") >= before + 2, "two successes needed");
    cmds.set("ready", 1);
    wait_for(&mut prober.state, |s| !s.ready).await;
    cmds.set("ready", 0);
    wait_for(&mut prober.state, |s| s.ready).await;
    cmds.set("ready", -1);
    wait_for(&mut prober.state, |s| !s.ready).await;
}

#[tokio::test]
async fn startup_gates_liveness_and_liveness_failure_is_reported() {
    let cmds = Arc::new(Commands::default());
    cmds.set("startup", 1);
    cmds.set("alive", 0);
    let c = container(json!({"name": "c",
        "startupProbe": exec_probe("startup", json!({"failureThreshold": 100})),
        "livenessProbe": exec_probe("alive", json!({"failureThreshold": 3, "initialDelaySeconds": 2}))}));
    let mut prober = spawn_prober(&Pod::default(), &c, "127.0.0.1".into(), "id".into(), cmds.clone());
    assert_eq!(*prober.state.borrow(), ProbeState { started: false, ready: false });
    tokio::time::sleep(SECOND * 10).await;
    assert_eq!(cmds.count("alive"), 0, "liveness waits for startup");
    cmds.set("startup", 0);
    let s = wait_for(&mut prober.state, |s| s.started).await;
    assert!(s.ready, "no readiness probe: ready once started");
    tokio::time::sleep(SECOND * 3).await;
    assert!(cmds.count("alive") > 0);
    assert!(prober.liveness_failed.try_recv().is_err());
    cmds.set("alive", 7);
    let message = tokio::time::timeout(Duration::from_secs(60), prober.liveness_failed.recv()).await.unwrap().unwrap();
    assert_eq!(message, "Liveness probe failed: alive said 7");
    let after = cmds.count("alive");
    tokio::time::sleep(SECOND * 10).await;
    assert_eq!(cmds.count("alive"), after, "a failed liveness worker holds");
}

#[tokio::test]
async fn exec_errors_keep_the_last_result() {
    let cmds = Arc::new(Commands::default());
    let c = container(json!({"name": "c", "readinessProbe": exec_probe("unknown", json!({"failureThreshold": 1}))}));
    let prober = spawn_prober(&Pod::default(), &c, "127.0.0.1".into(), "id".into(), cmds.clone());
    tokio::time::sleep(SECOND * 5).await;
    assert!(cmds.count("unknown") >= 4);
    assert!(!prober.state.borrow().ready);
    drop(prober);
    let n = cmds.count("unknown");
    tokio::time::sleep(SECOND * 5).await;
    assert_eq!(cmds.count("unknown"), n, "dropping the prober stops it");
}

/// A tiny HTTP server answering by path: /ok 200, /bad 500, /hop → /ok, /away → another host.
async fn http_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("").to_string();
                let reply = match path.as_str() {
                    "/ok" if req.contains("X-Probe: yes") && req.contains("kube-probe/") => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                    }
                    "/ok" => "HTTP/1.1 400 Bad Request\r\n\r\n".to_string(),
                    "/hop" => format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/ok\r\n\r\n"),
                    "/hop-bad" => "HTTP/1.1 301 Moved\r\nlocation: /bad\r\n\r\n".to_string(),
                    "/away" => "HTTP/1.1 302 Found\r\nLocation: http://example.invalid/bad\r\n\r\n".to_string(),
                    _ => "HTTP/1.1 500 Internal Server Error\r\n\r\n".to_string(),
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn http_get_probe_results() {
    let (port, server) = http_server().await;
    let c = container(json!({"name": "c", "ports": [{"name": "web", "containerPort": port}]}));
    let t = Target {
        pod_ip: "127.0.0.1".into(),
        container: c,
        container_id: "id".into(),
        exec: Arc::new(Commands::default()),
    };
    let probe = |path: &str, port: serde_json::Value| -> Probe {
        serde_json::from_value(
            json!({"httpGet": {"path": path, "port": port, "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}),
        )
        .unwrap()
    };
    let run = |p: Probe| {
        let t = t.clone();
        async move { check(&p, &t, Duration::from_secs(2)).await }
    };
    assert_eq!(run(probe("/ok", json!("web"))).await, Ok(Outcome::Success), "named port");
    assert_eq!(
        run(probe("/bad", json!(port))).await,
        Ok(Outcome::Failure("HTTP probe failed with statuscode: 500".into()))
    );
    assert_eq!(run(probe("/hop", json!(port))).await, Ok(Outcome::Success), "same-host redirect followed");
    assert_eq!(
        run(probe("/hop-bad", json!(port))).await,
        Ok(Outcome::Failure("HTTP probe failed with statuscode: 500".into()))
    );
    assert_eq!(run(probe("/away", json!(port))).await, Ok(Outcome::Success), "other-host redirect ends the probe");
    assert_eq!(run(probe("/ok", json!("nope"))).await, Err("couldn't find port: nope in c".to_string()));
    server.abort();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let Ok(Outcome::Failure(message)) = run(probe("/ok", json!(dead))).await else { panic!("refused is a failure") };
    assert_eq!(
        message,
        format!("Get \"http://127.0.0.1:{dead}/ok\": dial tcp 127.0.0.1:{dead}: connect: connection refused")
    );
    let tcp: Probe = serde_json::from_value(json!({"tcpSocket": {"port": dead}})).unwrap();
    assert_eq!(run(tcp).await, Ok(Outcome::Failure(format!("dial tcp 127.0.0.1:{dead}: connect: connection refused"))));
}

#[tokio::test]
async fn tcp_probe_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(tcp_check("127.0.0.1", port, Duration::from_secs(1)).await, Outcome::Success);
}

#[tokio::test]
async fn hooks() {
    let cmds = Commands::default();
    cmds.set("fine", 0);
    cmds.set("broken", 2);
    let hook = |v: serde_json::Value| -> LifecycleHandler { serde_json::from_value(v).unwrap() };
    let t = Duration::from_secs(30);
    assert_eq!(run_hook(&hook(json!({"exec": {"command": ["fine"]}})), "", "id", &cmds, t).await, Ok(()));
    let err = run_hook(&hook(json!({"exec": {"command": ["broken", "x"]}})), "", "id", &cmds, t).await.unwrap_err();
    assert_eq!(
        err,
        "Exec lifecycle hook ([\"broken\", \"x\"]) failed - error: command 'broken x' exited with 2: broken said 2"
    );
    let start = tokio::time::Instant::now();
    let short = Duration::from_millis(100);
    assert_eq!(run_hook(&hook(json!({"sleep": {"seconds": 5}})), "", "id", &cmds, short).await, Ok(()));
    let took = start.elapsed();
    assert!(took >= short && took < Duration::from_secs(2), "a sleep hook is cut at the timeout: {took:?}");
    assert!(run_hook(&hook(json!({})), "", "id", &cmds, t).await.is_err());
}

#[test]
fn grpc_messages() {
    assert_eq!(grpc::request(""), Vec::<u8>::new());
    assert_eq!(grpc::request("db"), [0x0a, 2, b'd', b'b']);
    assert_eq!(grpc::status_of(&[0x08, 1]), 1);
    assert_eq!(grpc::status_of(&[0x12, 1, b'x', 0x08, 2]), 2, "unknown fields skipped");
    assert_eq!(grpc::status_of(&[]), 0);
    assert_eq!(grpc::status_name(3), "SERVICE_UNKNOWN");
}

#[tokio::test]
async fn https_probes_accept_any_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["somewhere.invalid".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tls.read(&mut buf).await.unwrap();
        let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.1");
        let reply = if ok { "HTTP/1.1 204 No Content\r\n\r\n" } else { "HTTP/1.1 400 Bad\r\n\r\n" };
        tls.write_all(reply.as_bytes()).await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let probe: Probe =
        serde_json::from_value(json!({"httpGet": {"scheme": "HTTPS", "path": "healthz", "port": port}})).unwrap();
    let t = Target {
        pod_ip: "127.0.0.1".into(),
        container: container(json!({"name": "c"})),
        container_id: "id".into(),
        exec: Arc::new(Commands::default()),
    };
    assert_eq!(check(&probe, &t, Duration::from_secs(5)).await, Ok(Outcome::Success));
    server.await.unwrap();
}
