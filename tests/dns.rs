//! `ferrokube dns` against a real API server and controller-manager (EndpointSlice and
//! StatefulSet controllers; the pod driver stands in for kubelets, so pods get addresses
//! and readiness without containers). Queries go over UDP and TCP on loopback, encoded
//! and decoded with hickory-proto.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::controllers::{Component, PodDriver, eventually, start_controller_manager};
use common::{Cluster, free_port, json};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const NODE: &str = "dns-node";

/// `ferrokube dns` on a free loopback port, publishing its slice for kube-system/kube-dns.
async fn start_dns(c: &Cluster, extra: &[&str]) -> (Component, u16) {
    let port = free_port();
    let (kubeconfig, port_s) = (c.kubeconfig.display().to_string(), port.to_string());
    let mut args = vec!["dns", "--kubeconfig", &kubeconfig, "--bind-address=127.0.0.1", "--port", &port_s];
    args.extend_from_slice(&["--publish-service=kube-system/kube-dns", "--node-name", NODE]);
    args.extend_from_slice(extra);
    let dns = Component { child: c.spawn_ferrokube(&args, "dns.log"), log: c.dir.path().join("dns.log"), port };
    // it answers only once the first lists are in
    eventually(WAIT, "the DNS server to answer", || async {
        udp(port, &query("nothing.default.svc.cluster.local.", RecordType::A)).await
    })
    .await;
    (dns, port)
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
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, ("127.0.0.1", port)).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await.ok()?.ok()?;
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
    let (_dns, port) = start_dns(&c, &[]).await;

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
    assert_eq!(
        ports,
        [("dns".into(), "UDP".into(), u64::from(port)), ("dns-tcp".into(), "TCP".into(), u64::from(port))]
    );
}

/// A stand-in upstream nameserver on loopback: answers every query with 192.0.2.7.
async fn fake_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let request = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
            reply.add_query(request.queries[0].clone());
            let a = RData::A(std::net::Ipv4Addr::new(192, 0, 2, 7).into());
            reply.add_answer(hickory_proto::rr::Record::from_rdata(request.queries[0].name().clone(), 60, a));
            let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_big_answers_and_forwarding() {
    let c = Cluster::start().await;
    let (upstream, upstream_task) = fake_upstream().await;
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
    let up = upstream.to_string();
    let (mut dns, port) = start_dns(&c, &["--upstream-nameservers", &up]).await;
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
    assert!(dns.alive(), "the server survived");

    // names outside the cluster go to the upstream, over UDP and TCP
    assert_eq!(answers(&ask(port, "example.com.", RecordType::A).await), ["192.0.2.7"]);
    assert_eq!(answers(&tcp(port, &query("example.org.", RecordType::A)).await), ["192.0.2.7"]);
    upstream_task.abort();
    let m = ask(port, "example.net.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "no upstream answers: {m}");
}
