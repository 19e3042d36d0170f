//! `ferrokube dns` against a real API server and controller-manager (EndpointSlice and
//! StatefulSet controllers; the pod driver stands in for kubelets, so pods get addresses
//! and readiness without containers). Queries go over UDP and TCP on loopback, encoded
//! and decoded with hickory-proto.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::controllers::{Component, PodDriver, eventually, start_controller_manager};
use common::{Cluster, free_port, json};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const NODE: &str = "dns-node";

/// A running `ferrokube dns`: its DNS port and its metrics port.
struct Dns {
    component: Component,
    port: u16,
    metrics: u16,
}

/// `ferrokube dns` on free loopback ports, publishing its slice for kube-system/kube-dns.
async fn start_dns(c: &Cluster, extra: &[&str]) -> Dns {
    let (port, metrics) = (free_port(), free_port());
    let (kubeconfig, port_s) = (c.kubeconfig.display().to_string(), port.to_string());
    let metrics_flag = format!("--metrics-bind-address=127.0.0.1:{metrics}");
    let mut args = vec!["dns", "--kubeconfig", &kubeconfig, "--bind-address=127.0.0.1", "--port", &port_s];
    args.extend_from_slice(&["--publish-service=kube-system/kube-dns", "--node-name", NODE, &metrics_flag]);
    args.extend_from_slice(extra);
    let component = Component { child: c.spawn_ferrokube(&args, "dns.log"), log: c.dir.path().join("dns.log"), port };
    // it answers only once the first lists are in
    eventually(WAIT, "the DNS server to answer", || async {
        udp(port, &query("nothing.default.svc.cluster.local.", RecordType::A)).await
    })
    .await;
    Dns { component, port, metrics }
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.metadata.recursion_desired = true;
    m.to_vec().unwrap()
}

fn query_edns(name: &str, rtype: RecordType, payload: u16) -> Vec<u8> {
    let mut m = Message::from_vec(&query(name, rtype)).unwrap();
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    m.set_edns(edns);
    m.to_vec().unwrap()
}

async fn udp_raw(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_within(port, bytes, Duration::from_secs(2)).await
}

async fn udp_within(port: u16, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, ("127.0.0.1", port)).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(wait, socket.recv(&mut buf)).await.ok()?.ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn udp(port: u16, bytes: &[u8]) -> Option<Message> {
    Some(Message::from_vec(&udp_raw(port, bytes).await?).unwrap())
}

async fn tcp(port: u16, bytes: &[u8]) -> Message {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Ask over UDP (which must answer).
async fn ask(port: u16, name: &str, rtype: RecordType) -> Message {
    udp(port, &query(name, rtype)).await.unwrap_or_else(|| panic!("no answer for {name} {rtype}"))
}

/// The answer section as sorted text: addresses, CNAME/PTR targets, SRV `port target`.
fn answers(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.to_string(),
            RData::AAAA(a) => a.to_string(),
            RData::CNAME(n) => n.0.to_ascii(),
            RData::PTR(n) => n.0.to_ascii(),
            RData::SRV(s) => format!("{} {}", s.port, s.target.to_ascii()),
            other => format!("{other:?}"),
        })
        .collect();
    out.sort();
    out
}

async fn create_service(c: &Cluster, ns: &str, body: serde_json::Value) -> serde_json::Value {
    c.create(&format!("/api/v1/namespaces/{ns}/services"), &body).await
}

/// The pods' addresses in the ready endpoints of `svc`, once there are `n`.
async fn ready_addresses(c: &Cluster, svc: &str, n: usize) -> Vec<String> {
    let path = format!(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{svc}"
    );
    eventually(WAIT, "ready endpoints", || async {
        let (_, list) = c.get(&path).await;
        let mut ips: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
            .collect();
        ips.sort();
        (ips.len() == n).then_some(ips)
    })
    .await
}

fn pod(name: &str, labels: serde_json::Value, extra_spec: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}],
                          "automountServiceAccountToken": false});
    spec.as_object_mut().unwrap().extend(extra_spec.as_object().unwrap().clone());
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_names_resolve_as_the_dns_specification_says() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=endpointslice,statefulset"]).await;
    let web = create_service(
        &c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    let cluster_ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    create_service(
        &c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await;
    create_service(
        &c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "search"},
               "spec": {"type": "ExternalName", "externalName": "search.example.com"}}),
    )
    .await;
    for i in 0..2 {
        c.create("/api/v1/namespaces/default/pods", &pod(&format!("web-{i}"), json!({"app": "web"}), json!({}))).await;
    }
    let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"automountServiceAccountToken": false,
                                       "containers": [{"name": "pg", "image": "busybox"}]}}}});
    c.create("/apis/apps/v1/namespaces/default/statefulsets", &set).await;
    let db_ips = ready_addresses(&c, "db", 2).await;
    ready_addresses(&c, "web", 2).await;
    let dns = start_dns(&c, &[]).await;
    let port = dns.port;

    // a ClusterIP Service: its address over UDP and TCP, whatever the case of the name
    let m = ask(port, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!((m.metadata.response_code, m.metadata.authoritative), (ResponseCode::NoError, true));
    assert_eq!(answers(&m), [cluster_ip.as_str()]);
    assert_eq!(m.answers[0].ttl, 30);
    let m = tcp(port, &query("WEB.Default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(answers(&m), [cluster_ip.as_str()]);
    assert_eq!(m.answers[0].name.to_ascii(), "WEB.Default.svc.cluster.local.");
    // SRV of a named port, with the target's address in the additional section
    let m = ask(port, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(answers(&m), ["80 web.default.svc.cluster.local."]);
    assert!(m.additionals.iter().any(|r| r.data == RData::A(cluster_ip.parse::<std::net::Ipv4Addr>().unwrap().into())));
    // NODATA for another type, NXDOMAIN under the domain: both with the SOA
    let m = ask(port, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = ask(port, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    let m = ask(port, "default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "a namespace with services exists");

    // headless: the ready pods, per-pod names of the StatefulSet, SRV per pod
    let m = ask(port, "db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), db_ips);
    for i in 0..2 {
        let m = ask(port, &format!("db-{i}.db.default.svc.cluster.local."), RecordType::A).await;
        assert_eq!(answers(&m).len(), 1, "{m}");
        assert!(db_ips.contains(&answers(&m)[0]), "{m}");
    }
    let m = ask(port, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(answers(&m), ["5432 db-0.db.default.svc.cluster.local.", "5432 db-1.db.default.svc.cluster.local."]);
    assert_eq!(m.additionals.len(), 2, "{m}");
    // PTR of a pod of the StatefulSet and of the ClusterIP
    let pod_ip: std::net::IpAddr =
        answers(&ask(port, "db-0.db.default.svc.cluster.local.", RecordType::A).await)[0].parse().unwrap();
    let arpa = Name::from(pod_ip).to_ascii();
    assert_eq!(answers(&ask(port, &arpa, RecordType::PTR).await), ["db-0.db.default.svc.cluster.local."]);
    let arpa = Name::from(cluster_ip.parse::<std::net::IpAddr>().unwrap()).to_ascii();
    assert_eq!(answers(&ask(port, &arpa, RecordType::PTR).await), ["web.default.svc.cluster.local."]);

    // ExternalName → CNAME; pod A records; the schema version; outside names refused
    let m = ask(port, "search.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["search.example.com."]);
    assert_eq!(answers(&ask(port, "10-1-2-3.default.pod.cluster.local.", RecordType::A).await), ["10.1.2.3"]);
    let m = ask(port, "dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(m.answers.len(), 1, "{m}");
    let m = ask(port, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    // a Service created while running is answered within a second; a deleted one goes
    let created = Instant::now();
    let late = create_service(
        &c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
               "spec": {"ports": [{"port": 81}]}}),
    )
    .await;
    let late_ip = late["spec"]["clusterIP"].as_str().unwrap().to_string();
    loop {
        let m = ask(port, "late.default.svc.cluster.local.", RecordType::A).await;
        if answers(&m) == [late_ip.clone()] {
            break;
        }
        assert!(created.elapsed() < Duration::from_secs(1), "late not answered within 1 s: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.delete("/api/v1/namespaces/default/services/late").await;
    let deleted = Instant::now();
    loop {
        let m = ask(port, "late.default.svc.cluster.local.", RecordType::A).await;
        if m.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(deleted.elapsed() < Duration::from_secs(1), "late still answered after 1 s: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // the slice that makes this process the kube-dns Service's backend
    let slice =
        c.must_get(&format!("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-{NODE}")).await;
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns", "{slice}");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "ferrokube-dns", "{slice}");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1", "{slice}");
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true, "{slice}");
    let ports: Vec<(String, String, u64)> = slice["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap().into(), p["protocol"].as_str().unwrap().into(), p["port"].as_u64().unwrap())
        })
        .collect();
    let metrics = ("metrics".into(), "TCP".into(), u64::from(dns.metrics));
    assert_eq!(
        ports,
        [("dns".into(), "UDP".into(), u64::from(port)), ("dns-tcp".into(), "TCP".into(), u64::from(port)), metrics]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_and_big_answers() {
    let c = Cluster::start().await;
    // a headless Service with a slice of 100 ready endpoints: more than 512 bytes of A records
    create_service(
        &c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "many"},
               "spec": {"clusterIP": "None", "ports": [{"name": "x", "port": 9}]}}),
    )
    .await;
    let endpoints: Vec<_> = (0..100)
        .map(|i| json!({"addresses": [format!("10.9.{}.{}", i / 200, i % 200 + 1)], "conditions": {"ready": true}}))
        .collect();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "x", "port": 9, "protocol": "TCP"}]});
    c.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", &slice).await;
    let mut dns = start_dns(&c, &[]).await;
    let port = dns.port;
    let name = "many.default.svc.cluster.local.";

    // UDP without EDNS: 512 bytes at most, TC set; EDNS 4096 and TCP carry all 100
    let raw = udp_raw(port, &query(name, RecordType::A)).await.unwrap();
    assert!(raw.len() <= 512, "{}", raw.len());
    let m = Message::from_vec(&raw).unwrap();
    assert!(m.metadata.truncation && m.answers.len() < 100, "{} answers", m.answers.len());
    let m = udp(port, &query_edns(name, RecordType::A, 4096)).await.unwrap();
    assert_eq!((m.answers.len(), m.metadata.truncation), (100, false));
    let m = tcp(port, &query(name, RecordType::A)).await;
    assert_eq!((m.answers.len(), m.metadata.truncation), (100, false));
    let m = tcp(port, &query(name, RecordType::SRV)).await;
    assert_eq!((m.answers.len(), m.additionals.len()), (100, 100));

    // truncated, garbage and oversize packets: FORMERR or nothing, never a dead server
    let good = query(name, RecordType::A);
    let m = udp(port, &good[..good.len() - 3]).await.expect("FORMERR for a cut query");
    assert_eq!(
        (m.metadata.response_code, m.metadata.id),
        (ResponseCode::FormErr, Message::from_vec(&good).unwrap().metadata.id)
    );
    assert!(udp_raw(port, &good[..5]).await.is_none(), "a partial header is dropped");
    let mut oversize = good.clone();
    oversize.resize(60_000, 0xff);
    let _ = udp_raw(port, &oversize).await;
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05];
    garbage.extend(std::iter::repeat_n(0xc0, 500));
    let _ = udp_raw(port, &garbage).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    drop(stream);
    let m = ask(port, name, RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(dns.component.alive(), "the server survived");
}

/// A stand-in upstream nameserver, UDP and TCP on one loopback port: `<x>.example.` A is
/// 192.0.2.1 over UDP and 192.0.2.2 over TCP (so a test sees which way a query went);
/// `big.example.` has 40 A records, over UDP only a bare answer with TC set, as a server
/// without room answers; `nx.example.` is NXDOMAIN with an SOA. Stops when dropped.
struct Upstream {
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&upstream_answer(&buf[..n], false), peer).await;
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; usize::from(stream.read_u16().await.unwrap())];
                    stream.read_exact(&mut buf).await.unwrap();
                    let answer = upstream_answer(&buf, true);
                    stream.write_all(&(answer.len() as u16).to_be_bytes()).await.unwrap();
                    stream.write_all(&answer).await.unwrap();
                });
            }
        });
        Upstream { addr, tasks: vec![udp_task, tcp_task] }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

fn upstream_answer(query: &[u8], tcp: bool) -> Vec<u8> {
    use hickory_proto::rr::Record;
    let request = Message::from_vec(query).unwrap();
    let q = request.queries[0].clone();
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.add_query(q.clone());
    let a =
        |last: u8| Record::from_rdata(q.name().clone(), 60, RData::A(std::net::Ipv4Addr::new(192, 0, 2, last).into()));
    match q.name().to_ascii().to_lowercase().as_str() {
        "nx.example." => {
            let soa = hickory_proto::rr::rdata::SOA::new(
                Name::from_ascii("ns.example.").unwrap(),
                Name::from_ascii("hostmaster.example.").unwrap(),
                1,
                7200,
                1800,
                86400,
                60,
            );
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.add_authority(Record::from_rdata(Name::from_ascii("example.").unwrap(), 60, RData::SOA(soa)));
        }
        "big.example." if !tcp => reply.metadata.truncation = true,
        "big.example." => (0..40).for_each(|i| {
            reply.add_answer(a(10 + i));
        }),
        _ => {
            reply.add_answer(a(if tcp { 2 } else { 1 }));
        }
    }
    reply.to_vec().unwrap()
}

/// Over UDP, waiting long enough for a failover or a SERVFAIL.
async fn ask_patiently(port: u16, name: &str) -> Message {
    let raw = udp_within(port, &query(name, RecordType::A), Duration::from_secs(6)).await;
    Message::from_vec(&raw.unwrap_or_else(|| panic!("no answer for {name}"))).unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_failover_truncation_cache_and_metrics() {
    let c = Cluster::start().await;
    // the first upstream takes queries and answers only while told to (nothing listens on
    // its TCP port)
    let (silent, speaking) = Silent::start().await;
    let good = Upstream::start().await;
    let upstreams = format!("{},{}", silent.addr, good.addr);
    let flags = ["--upstream-nameservers", &upstreams, "--upstream-policy=sequential", "--max-concurrent=1"];
    let dns = start_dns(&c, &flags).await;
    let port = dns.port;

    // the silent one costs its 2 s, twice; then it is tried after the good one (an answer
    // well under those 2 s: 1.5 s leaves room for a busy machine). With
    // --max-concurrent 1, a query asked while the first waits is refused at once.
    let asked = Instant::now();
    let first = tokio::spawn(ask_patiently(port, "a.example."));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = ask(port, "z.example.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
    assert_eq!(answers(&first.await.unwrap()), ["192.0.2.1"]);
    assert!(asked.elapsed() >= Duration::from_millis(1900), "a.example. answered before the timeout");
    let asked = Instant::now();
    assert_eq!(answers(&ask_patiently(port, "b.example.").await), ["192.0.2.1"]);
    assert!(asked.elapsed() >= Duration::from_millis(1900), "b.example. answered before the timeout");
    let asked = Instant::now();
    assert_eq!(answers(&ask(port, "c.example.", RecordType::A).await), ["192.0.2.1"]);
    assert!(asked.elapsed() < Duration::from_millis(1500), "the failing upstream was tried first again");
    // a query over TCP is forwarded over TCP
    assert_eq!(answers(&tcp(port, &query("d.example.", RecordType::A)).await), ["192.0.2.2"]);
    // a truncated UDP answer is asked again over TCP: all 40 records to an EDNS client,
    // as many as fit in 512 bytes with TC set to a plain one
    let m = udp(port, &query_edns("big.example.", RecordType::A, 4096)).await.unwrap();
    assert_eq!((m.answers.len(), m.metadata.truncation), (40, false), "{m}");
    let raw = udp_raw(port, &query("big.example.", RecordType::A)).await.unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert!(raw.len() <= 512 && m.metadata.truncation && !m.answers.is_empty(), "{m}");
    let m = ask(port, "nx.example.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");

    // the failing upstream is probed; once it answers it comes first again
    speaking.store(true, Ordering::Relaxed);
    let mut i = 0;
    eventually(Duration::from_secs(10), "the recovered upstream to be asked first", || {
        i += 1;
        let name = format!("r{i}.example.");
        async move { (answers(&ask(port, &name, RecordType::A).await) == ["192.0.2.3"]).then_some(()) }
    })
    .await;
    speaking.store(false, Ordering::Relaxed);

    // with the good upstream gone, what it answered comes from the cache: the asker's id
    // and spelling, TTLs capped at 30 s (positive) and 5 s (negative)
    drop(good);
    let q = query("A.Example.", RecordType::A);
    let m = udp(port, &q).await.expect("a cached answer");
    assert_eq!(answers(&m), ["192.0.2.1"], "{m}");
    assert_eq!(m.metadata.id, Message::from_vec(&q).unwrap().metadata.id);
    assert_eq!(m.answers[0].name.to_ascii(), "A.Example.");
    assert!(m.answers[0].ttl <= 30, "{m}");
    let m = ask(port, "nx.example.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
    assert!(m.authorities[0].ttl <= 5, "{m}");
    assert_eq!(answers(&tcp(port, &query("d.example.", RecordType::A)).await), ["192.0.2.2"]);
    // a name never asked: no upstream answers (one refuses, one times out) → SERVFAIL
    // within the forward deadline
    let asked = Instant::now();
    let m = ask_patiently(port, "e.example.").await;
    assert!(asked.elapsed() >= Duration::from_millis(1900), "the silent upstream was not waited for: {m}");
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m}");

    // the counters say as much, in CoreDNS's names; health and readiness beside them
    let base = format!("http://127.0.0.1:{}", dns.metrics);
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let udp_a = ["proto=\"udp\"", "family=\"1\"", "type=\"A\""];
    assert!(metric(&text, "coredns_dns_requests_total", &udp_a) >= 9.0, "{text}");
    assert!(metric(&text, "coredns_dns_requests_total", &["proto=\"tcp\""]) >= 2.0, "{text}");
    assert!(metric(&text, "coredns_dns_responses_total", &["rcode=\"SERVFAIL\""]) >= 1.0, "{text}");
    assert!(metric(&text, "coredns_dns_responses_total", &["rcode=\"REFUSED\""]) >= 1.0, "{text}");
    assert!(text.contains("\ncoredns_forward_max_concurrent_rejects_total 1\n"), "{text}");
    assert!(metric(&text, "coredns_dns_responses_total", &["rcode=\"NXDOMAIN\""]) >= 2.0, "{text}");
    assert!(metric(&text, "coredns_cache_hits_total", &["type=\"success\""]) >= 3.0, "{text}");
    assert!(metric(&text, "coredns_cache_hits_total", &["type=\"denial\""]) >= 1.0, "{text}");
    assert!(metric(&text, "coredns_cache_misses_total", &[]) >= 7.0, "{text}");
    let to_good = format!("to=\"{}\"", upstreams.split(',').nth(1).unwrap());
    assert!(metric(&text, "coredns_forward_requests_total", &[&to_good]) >= 6.0, "{text}");
    let count = metric(&text, "coredns_dns_request_duration_seconds_count", &[]);
    assert_eq!(count, metric(&text, "coredns_dns_responses_total", &[]), "{text}");
    let slow = metric(&text, "coredns_dns_request_duration_seconds_bucket", &["type=\"A\"", "le=\"1.024\""]);
    assert!(count - slow >= 3.0, "two failovers and the SERVFAIL took over a second: {text}");
    for path in ["/health", "/ready"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, "OK".to_string()), "{path}");
    }
    drop(silent);
}

/// An upstream that takes queries and answers them (`<x>.example.` A 192.0.2.3) only
/// while its flag is set. Stops when dropped.
struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> (Silent, Arc<AtomicBool>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (addr, speaking) = (socket.local_addr().unwrap(), Arc::new(AtomicBool::new(false)));
        let flag = speaking.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                if flag.load(Ordering::Relaxed) {
                    let mut answer = Message::from_vec(&upstream_answer(&buf[..n], false)).unwrap();
                    for record in &mut answer.answers {
                        record.data = RData::A(std::net::Ipv4Addr::new(192, 0, 2, 3).into());
                    }
                    let _ = socket.send_to(&answer.to_vec().unwrap(), peer).await;
                }
            }
        });
        (Silent { addr, task }, speaking)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_upstream_answer_fails_over_at_once() {
    let c = Cluster::start().await;
    // answers every query at once, with its id and a body that loops on itself
    let garbage = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage.local_addr().unwrap();
    let garbage_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((_, peer)) = garbage.recv_from(&mut buf).await {
            let mut reply = vec![buf[0], buf[1], 0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0];
            reply.extend(std::iter::repeat_n(0xc0, 64));
            let _ = garbage.send_to(&reply, peer).await;
        }
    });
    let good = Upstream::start().await;
    let upstreams = format!("{garbage_addr},{}", good.addr);
    let mut dns = start_dns(&c, &["--upstream-nameservers", &upstreams, "--upstream-policy=sequential"]).await;
    for name in ["a.example.", "b.example.", "c.example."] {
        let asked = Instant::now();
        assert_eq!(answers(&ask(dns.port, name, RecordType::A).await), ["192.0.2.1"], "{name}");
        assert!(asked.elapsed() < Duration::from_millis(1500), "{name}: the bad answer cost a timeout");
    }
    assert!(dns.component.alive(), "the server survived");
    garbage_task.abort();
}
