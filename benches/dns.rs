//! `cargo bench --bench dns`: queries per second and latency of `ferrokube dns` for
//! Service names, with `BENCH_DNS_SERVICES` (default 1,000) Services in a private etcd and
//! API server, `BENCH_DNS_CLIENTS` (default 8) concurrent UDP clients each asking
//! `<svc-i>.default.svc.cluster.local A` for random i, one query in flight per client, for
//! `BENCH_DNS_SECONDS` (default 5). The same client loop against a trivial UDP echo
//! server on loopback (as many threads as the DNS's UDP workers) runs in the same process
//! first, so the figure comes with a ratio that survives a noisy, shared machine.
//! Then forwarded names: `name-<i>.example. A` for `BENCH_DNS_NAMES` (default 1,000) names,
//! straight to a minimal upstream responder on loopback, then through `ferrokube dns`
//! forwarding to it (after the first round every answer comes from its cache), then
//! through it with names that never repeat (every answer asked upstream).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;

mod common;

use common::{Proc, client, env_usize, free_port};

struct Run {
    queries: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn qps(&self) -> f64 {
        self.queries as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p) as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
    fn print(&self, what: &str) {
        println!(
            "{what}: {:.0} queries/s, p50 {:.0} µs, p99 {:.0} µs ({} queries in {:.1} s)",
            self.qps(),
            self.percentile(0.5).as_secs_f64() * 1e6,
            self.percentile(0.99).as_secs_f64() * 1e6,
            self.queries,
            self.seconds
        );
    }
}

fn query(i: usize) -> Vec<u8> {
    ask(&format!("svc-{i}.default.svc.cluster.local."))
}

fn forwarded(i: usize) -> Vec<u8> {
    ask(&format!("name-{i}.example."))
}

fn ask(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.metadata.recursion_desired = true;
    m.to_vec().unwrap()
}

/// What a load asks and how it checks the answers.
#[derive(Clone, Copy)]
struct Queries {
    /// Names 0..names.
    names: usize,
    make: fn(usize) -> Vec<u8>,
    check: fn(&[u8], &[u8]),
}

/// `clients` threads asking `port` for `seconds`.
fn load(port: u16, clients: usize, seconds: u64, queries: Queries) -> Run {
    let Queries { names: services, make: query, check } = queries;
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(("127.0.0.1", port)).unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 1500];
                let mut latencies = Vec::new();
                while started.elapsed() < Duration::from_secs(seconds) {
                    let q = query(fastrand::usize(..services));
                    let sent = Instant::now();
                    socket.send(&q).unwrap();
                    let n = socket.recv(&mut buf).expect("an answer within 2 s");
                    latencies.push(sent.elapsed());
                    check(&q, &buf[..n]);
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    Run { queries: latencies.len(), seconds, latencies }
}

fn check_dns(q: &[u8], answer: &[u8]) {
    let m = Message::from_vec(answer).unwrap();
    assert_eq!(m.metadata.id.to_be_bytes(), q[..2]);
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 1), "{m}");
}

fn check_echo(q: &[u8], answer: &[u8]) {
    assert_eq!(q, answer);
}

/// The baseline: `threads` threads echoing datagrams on one socket until `stop`.
fn echo_server(threads: usize, stop: Arc<AtomicBool>) -> u16 {
    udp_server(threads, stop, |q| Some(q.to_vec()))
}

/// The upstream: `threads` threads answering every A query with one address.
fn responder(threads: usize, stop: Arc<AtomicBool>) -> u16 {
    udp_server(threads, stop, |q| {
        let request = Message::from_vec(q).ok()?;
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        let question = request.queries.first()?.clone();
        let a = RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into());
        reply.add_answer(Record::from_rdata(question.name().clone(), 300, a));
        reply.add_query(question);
        reply.to_vec().ok()
    })
}

fn udp_server(threads: usize, stop: Arc<AtomicBool>, answer: fn(&[u8]) -> Option<Vec<u8>>) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = socket.local_addr().unwrap().port();
    for _ in 0..threads {
        let (socket, stop) = (socket.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf)
                    && let Some(reply) = answer(&buf[..n])
                {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
    }
    port
}

async fn create_services(base: &str, services: usize) {
    let c = client();
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let (c, base) = (c.clone(), base.to_string());
            tokio::spawn(async move {
                for i in (worker..services).step_by(8) {
                    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                        "spec": {"ports": [{"name": "http", "port": 80}]}});
                    let r = c.post(format!("{base}/api/v1/namespaces/default/services")).json(&svc).send().await;
                    assert!(r.is_ok_and(|r| r.status().is_success()), "creating svc-{i}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a creating task");
    }
}

#[tokio::main]
async fn main() {
    let services = env_usize("BENCH_DNS_SERVICES", 1000);
    let clients = env_usize("BENCH_DNS_CLIENTS", 8);
    let seconds = env_usize("BENCH_DNS_SECONDS", 5) as u64;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exe = env!("CARGO_BIN_EXE_ferrokube");
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd_url) = common::start_etcd(dir.path());
    let (_server, base, kubeconfig) = common::start_apiserver(exe, dir.path(), &etcd_url).await;
    let created = Instant::now();
    create_services(&base, services).await;
    println!("{services} Services created in {:.1} s", created.elapsed().as_secs_f64());

    let stop = Arc::new(AtomicBool::new(false));
    let echo = echo_server(workers, stop.clone());
    let upstream = responder(workers, stop.clone());
    let cluster_names = Queries { names: services, make: query, check: check_dns };
    let forwarded_names = Queries { names: env_usize("BENCH_DNS_NAMES", 1000), make: forwarded, check: check_dns };
    let run = move |port, queries| tokio::task::spawn_blocking(move || load(port, clients, seconds, queries));
    let baseline = run(echo, Queries { check: check_echo, ..cluster_names }).await.unwrap();
    let direct = run(upstream, forwarded_names).await.unwrap();

    let port = free_port();
    let _dns = Proc(
        Command::new(exe)
            .args(["dns", "--kubeconfig", &kubeconfig.display().to_string(), "--bind-address=127.0.0.1"])
            .args(["--port", &port.to_string(), "--udp-workers", &workers.to_string()])
            .args(["--upstream-nameservers", &format!("127.0.0.1:{upstream}"), "--metrics-bind-address="])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(common::env_log("BENCH_DNS_LOG"))
            .spawn()
            .expect("start ferrokube dns"),
    );
    let last = services - 1;
    let ready = Instant::now();
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let _ = socket.send_to(&query(last), ("127.0.0.1", port));
        let mut buf = [0u8; 1500];
        if let Ok(n) = socket.recv(&mut buf)
            && Message::from_vec(&buf[..n]).is_ok_and(|m| m.answers.len() == 1)
        {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "ferrokube dns never answered svc-{last}");
    }
    println!("ferrokube dns answering all {services} Services {:.2} s after start", ready.elapsed().as_secs_f64());
    let dns = run(port, cluster_names).await.unwrap();
    let cached = run(port, forwarded_names).await.unwrap();
    // names from a range too large to repeat: nearly every query a miss, the cache full
    let missed = run(port, Queries { names: 1 << 40, ..forwarded_names }).await.unwrap();
    stop.store(true, Ordering::Relaxed);

    println!("{clients} clients, {workers} server threads, {seconds} s each:");
    baseline.print("udp echo (baseline)");
    dns.print("ferrokube dns, Service names");
    println!("dns/echo throughput ratio: {:.2}", dns.qps() / baseline.qps());
    direct.print("upstream responder, asked directly");
    cached.print("ferrokube dns, forwarded names (cache)");
    println!("forwarded/direct throughput ratio: {:.2}", cached.qps() / direct.qps());
    missed.print("ferrokube dns, forwarded names (cache misses)");
    println!("missed/direct throughput ratio: {:.2}", missed.qps() / direct.qps());
}
