use std::net::IpAddr;

use super::*;

fn domain() -> Name {
    Name::from_ascii("cluster.local.").unwrap()
}

fn names(records: &ServiceRecords) -> Vec<String> {
    let mut out: Vec<String> = records.names.iter().map(|(n, _)| n.to_ascii()).collect();
    out.sort();
    out
}

fn records_of<'a>(records: &'a ServiceRecords, name: &str) -> &'a [Record] {
    &records.names.iter().find(|(n, _)| n.to_ascii() == name).unwrap().1
}

#[test]
fn dashed_addresses_round_trip() {
    for ip in ["10.1.2.3", "fd00::1", "2001:db8::a:b"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(undashed(&dashed(ip)), Some(ip), "{ip}");
    }
    assert_eq!(undashed("web"), None);
    assert_eq!(undashed("10-1-2"), None);
}

#[test]
fn a_cluster_ip_service_has_its_address_srv_per_named_port_and_a_ptr() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}
    }))
    .unwrap();
    let out = build(&svc, &[], &domain(), 30);
    assert_eq!(names(&out), ["_http._tcp.web.shop.svc.cluster.local.", "web.shop.svc.cluster.local."]);
    let own = records_of(&out, "web.shop.svc.cluster.local.");
    assert!(own.iter().any(|r| r.data == RData::A(A("10.96.0.20".parse().unwrap()))));
    assert_eq!(own.iter().filter(|r| matches!(r.data, RData::SRV(_))).count(), 2, "{own:?}");
    assert_eq!(out.ptrs, [("10.96.0.20".parse().unwrap(), Name::from_ascii("web.shop.svc.cluster.local.").unwrap())]);
}

#[test]
fn a_headless_service_names_its_ready_endpoints_only() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None"}
    }))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-x", "namespace": "default"}, "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.6"], "conditions": {}},
            {"addresses": ["10.244.0.7"], "hostname": "db-2", "conditions": {"ready": false}},
            {"addresses": ["not-an-ip"], "hostname": "bad"}
        ],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))
    .unwrap();
    let out = build(&svc, &[Arc::new(slice)], &domain(), 30);
    assert_eq!(
        names(&out),
        [
            "10-244-0-6.db.default.svc.cluster.local.",
            "_pg._tcp.db.default.svc.cluster.local.",
            "db-0.db.default.svc.cluster.local.",
            "db.default.svc.cluster.local."
        ]
    );
    let addresses =
        records_of(&out, "db.default.svc.cluster.local.").iter().filter(|r| matches!(r.data, RData::A(_))).count();
    assert_eq!(addresses, 2);
    assert_eq!(records_of(&out, "_pg._tcp.db.default.svc.cluster.local.").len(), 2, "one SRV per ready endpoint");
}

#[test]
fn an_external_name_is_a_cname_and_a_bad_one_nothing() {
    let svc = |target: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": target}
        }))
        .unwrap()
    };
    let out = build(&svc("example.com"), &[], &domain(), 30);
    assert_eq!(out.names[0].1[0].data, RData::CNAME(CNAME(Name::from_ascii("example.com.").unwrap())));
    let out = build(&svc("bad name with spaces"), &[], &domain(), 30);
    assert!(out.names[0].1.is_empty(), "{out:?}");
}
