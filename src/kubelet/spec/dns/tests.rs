use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec})).unwrap()
}

fn host() -> DnsConfig {
    parse_resolv_conf(
        "# comment\nnameserver 192.168.1.1\nnameserver 8.8.8.8 # second\nsearch old.example\nsearch home.example lan\noptions edns0 ndots:2\n",
    )
}

fn cluster_dns() -> Vec<String> {
    vec!["10.96.0.10".to_string()]
}

#[test]
fn parses_host_resolv_conf() {
    let h = host();
    assert_eq!(h.servers, ["192.168.1.1", "8.8.8.8"]);
    assert_eq!(h.searches, ["home.example", "lan"], "the last search line counts");
    assert_eq!(h.options, ["edns0", "ndots:2"]);
}

#[test]
fn cluster_first() {
    let c = dns_config_with_host(&pod(json!({"containers": []})), &cluster_dns(), "cluster.local", &host());
    assert_eq!(c.servers, ["10.96.0.10"]);
    assert_eq!(c.searches, ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "home.example", "lan"]);
    assert_eq!(c.options, ["ndots:5"]);
}

#[test]
fn host_network_and_fallbacks() {
    let hn = pod(json!({"hostNetwork": true, "containers": []}));
    assert_eq!(
        dns_config_with_host(&hn, &cluster_dns(), "cluster.local", &host()),
        host(),
        "ClusterFirst on the host network is Default"
    );
    let hn_cluster = pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []}));
    assert_eq!(dns_config_with_host(&hn_cluster, &cluster_dns(), "cluster.local", &host()).servers, ["10.96.0.10"]);
    let plain = pod(json!({"containers": []}));
    assert_eq!(dns_config_with_host(&plain, &[], "cluster.local", &host()), host(), "no cluster DNS: Default");
    let default = pod(json!({"dnsPolicy": "Default", "containers": []}));
    assert_eq!(dns_config_with_host(&default, &cluster_dns(), "cluster.local", &host()), host());
}

#[test]
fn none_and_dns_config_merge() {
    let none = pod(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {
        "nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}}));
    let c = dns_config_with_host(&none, &cluster_dns(), "cluster.local", &host());
    assert_eq!(
        (c.servers, c.searches, c.options),
        (vec!["1.1.1.1".to_string()], vec!["a.example".to_string()], vec!["ndots:1".to_string(), "rotate".to_string()])
    );

    let merged = pod(json!({"containers": [], "dnsConfig": {
        "nameservers": ["10.96.0.10", "1.1.1.1"], "searches": ["svc.cluster.local", "x.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
    let c = dns_config_with_host(&merged, &cluster_dns(), "cluster.local", &host());
    assert_eq!(c.servers, ["10.96.0.10", "1.1.1.1"], "duplicates dropped");
    assert_eq!(c.searches.last().map(String::as_str), Some("x.example"));
    assert_eq!(c.searches.iter().filter(|s| *s == "svc.cluster.local").count(), 1);
    assert_eq!(c.options, ["ndots:2", "edns0"], "a dnsConfig option replaces one of the same name");
}

#[test]
fn searches_are_capped() {
    let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let p = pod(json!({"dnsPolicy": "None", "containers": [], "dnsConfig": {"searches": many}}));
    assert_eq!(dns_config_with_host(&p, &[], "", &host()).searches.len(), MAX_SEARCHES);
}
