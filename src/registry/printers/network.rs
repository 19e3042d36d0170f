//! Services, endpoints and ingresses.

use serde_json::{Value, json};

use super::{AGE, NAME, Printer, age, col, format_labels, int, list, name, or_none, text, wide};
use crate::registry::meta;

/// Most addresses (or hosts) listed before the rest are summed up as "+ N more...".
const SHOWN: usize = 3;

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn load_balancer_addresses(obj: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = list(obj, "status.loadBalancer.ingress")
        .iter()
        .map(|i| Some(text(i, "ip")).filter(|ip| !ip.is_empty()).unwrap_or_else(|| text(i, "hostname")))
        .filter(|a| !a.is_empty())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

pub static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName."),
        col("Cluster-IP", "string", "The service's primary cluster IP."),
        col("External-IP", "string", "Addresses the service is reachable at from outside the cluster."),
        col("Port(s)", "string", "Service ports as port[:nodePort]/protocol."),
        AGE,
        wide("Selector", "string", "Labels of the pods that back the service."),
    ],
    cells: service_cells,
};

fn service_cells(svc: &Value) -> Vec<Value> {
    let ty = text(svc, "spec.type");
    let cluster_ip =
        list(svc, "spec.clusterIPs").first().and_then(Value::as_str).unwrap_or(text(svc, "spec.clusterIP"));
    let external_ips: Vec<&str> = list(svc, "spec.externalIPs").iter().filter_map(Value::as_str).collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => or_none(external_ips.join(",")),
        "LoadBalancer" => {
            let mut all = load_balancer_addresses(svc);
            all.extend(&external_ips);
            if all.is_empty() { "<pending>".into() } else { all.join(",") }
        }
        "ExternalName" => text(svc, "spec.externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = list(svc, "spec.ports")
        .iter()
        .map(|p| {
            let protocol = Some(text(p, "protocol")).filter(|s| !s.is_empty()).unwrap_or("TCP");
            match int(p, "nodePort") {
                0 => format!("{}/{protocol}", int(p, "port")),
                node_port => format!("{}:{node_port}/{protocol}", int(p, "port")),
            }
        })
        .collect();
    vec![
        name(svc),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external),
        json!(or_none(ports.join(","))),
        age(svc),
        json!(format_labels(meta::value_at(svc, "spec.selector"))),
    ]
}

pub static ENDPOINTS: Printer = Printer {
    columns: &[NAME, col("Endpoints", "string", "Ready addresses as ip:port, the first few of them."), AGE],
    cells: |o| vec![name(o), json!(endpoints_summary(o)), age(o)],
};

fn endpoints_summary(ep: &Value) -> String {
    let subsets = list(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut total = 0;
    let mut more = false;
    for subset in subsets {
        let ips: Vec<&str> = list(subset, "addresses").iter().map(|a| text(a, "ip")).collect();
        let ports = list(subset, "ports");
        // headless services may have addresses without ports
        let port_numbers: Vec<Option<i64>> =
            if ports.is_empty() { vec![None] } else { ports.iter().map(|p| Some(int(p, "port"))).collect() };
        for port in port_numbers {
            total += ips.len();
            for ip in &ips {
                if shown.len() == SHOWN {
                    more = true;
                    break;
                }
                shown.push(match port {
                    None => ip.to_string(),
                    Some(p) if ip.contains(':') => format!("[{ip}]:{p}"),
                    Some(p) => format!("{ip}:{p}"),
                });
            }
        }
    }
    let joined = shown.join(",");
    if more { format!("{joined} + {} more...", total - SHOWN) } else { joined }
}

pub static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", "The type of the addresses (IPv4, IPv6, FQDN)."),
        col("Ports", "string", "The ports of the endpoints."),
        col("Endpoints", "string", "The first few addresses of the endpoints."),
        AGE,
    ],
    cells: |o| vec![name(o), json!(text(o, "addressType")), json!(slice_ports(o)), json!(slice_endpoints(o)), age(o)],
};

fn slice_ports(slice: &Value) -> String {
    let ports: Vec<String> = list(slice, "ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".into(),
        })
        .collect();
    if ports.is_empty() { "<unset>".into() } else { ports.join(",") }
}

fn slice_endpoints(slice: &Value) -> String {
    let addresses: Vec<&str> =
        list(slice, "endpoints").iter().flat_map(|e| list(e, "addresses")).filter_map(Value::as_str).collect();
    if addresses.is_empty() {
        return "<none>".into();
    }
    let shown = addresses[..addresses.len().min(SHOWN)].join(",");
    match addresses.len() > SHOWN {
        true => format!("{shown} + {} more...", addresses.len() - SHOWN),
        false => shown,
    }
}

pub static INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col("Class", "string", "Name of the IngressClass that handles the ingress."),
        col("Hosts", "string", "Hosts the ingress rules match, * for any."),
        col("Address", "string", "Addresses of the load balancer serving the ingress."),
        col("Ports", "string", "Ports the ingress listens on: 80, and 443 with TLS."),
        AGE,
    ],
    cells: |o| {
        let ports = if list(o, "spec.tls").is_empty() { "80" } else { "80, 443" };
        vec![
            name(o),
            json!(meta::str_at(o, "spec.ingressClassName").unwrap_or("<none>")),
            json!(ingress_hosts(list(o, "spec.rules"))),
            json!(load_balancer_addresses(o).join(",")),
            json!(ports),
            age(o),
        ]
    },
};

fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        more |= hosts.len() == SHOWN;
        let host = text(rule, "host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    match (hosts.is_empty(), more) {
        (true, _) => "*".into(),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - SHOWN),
        (false, false) => hosts.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_object;
    use super::*;

    fn svc(spec: Value, status: Value) -> Vec<Value> {
        (SERVICE.cells)(&test_object("web", json!({"spec": spec, "status": status})))
    }

    #[test]
    fn cluster_ip_and_node_port_services() {
        let c = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "selector": {"tier": "web", "app": "shop"},
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}),
            json!({}),
        );
        assert_eq!(c[1..5], [json!("ClusterIP"), json!("10.96.0.10"), json!("<none>"), json!("80/TCP,53/UDP")]);
        assert_eq!(c[6], "app=shop,tier=web");

        let c = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.96.3.4"], "externalIPs": ["192.0.2.1"],
                   "ports": [{"port": 80, "nodePort": 31111, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(c[1..5], [json!("NodePort"), json!("10.96.3.4"), json!("192.0.2.1"), json!("80:31111/TCP")]);
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn external_name_and_load_balancer_services() {
        let c = svc(json!({"type": "ExternalName", "externalName": "db.example.com"}), json!({}));
        assert_eq!(c[1..5], [json!("ExternalName"), json!("<none>"), json!("db.example.com"), json!("<none>")]);

        let lb =
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.2"], "ports": [{"port": 443, "nodePort": 30443}]});
        assert_eq!(svc(lb.clone(), json!({}))[3], "<pending>");
        let status = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}});
        assert_eq!(svc(lb.clone(), status.clone())[3], "203.0.113.9,lb.example.com");
        let mut with_external = lb;
        with_external["externalIPs"] = json!(["192.0.2.7"]);
        let c = svc(with_external, status);
        assert_eq!(c[3], "203.0.113.9,lb.example.com,192.0.2.7");
        assert_eq!(c[4], "443:30443/TCP");
        assert_eq!(svc(json!({}), json!({}))[3], "<unknown>");
    }

    fn endpoints(subsets: Value) -> Value {
        (ENDPOINTS.cells)(&test_object("web", json!({"subsets": subsets})))[1].clone()
    }

    #[test]
    fn endpoint_lists() {
        assert_eq!(endpoints(json!([])), "<none>");
        assert_eq!(endpoints(json!(null)), "<none>");
        let five: Vec<Value> = (1..=5).map(|i| json!({"ip": format!("10.0.0.{i}")})).collect();
        assert_eq!(
            endpoints(json!([{"addresses": five, "ports": [{"port": 80}]}])),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
        );
        assert_eq!(
            endpoints(json!([{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}, {"port": 443}]},
                             {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}])),
            "10.0.0.1:80,10.0.0.1:443,[fd00::1]:80"
        );
        assert_eq!(endpoints(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}])), "10.0.0.1,10.0.0.2");
    }

    #[test]
    fn ingresses() {
        let ing = test_object(
            "shop",
            json!({
                "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["shop.example.com"]}],
                         "rules": [{"host": "shop.example.com"}, {"host": "api.example.com"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}},
            }),
        );
        let c = (INGRESS.cells)(&ing);
        assert_eq!(
            c[..5],
            [
                json!("shop"),
                json!("nginx"),
                json!("shop.example.com,api.example.com"),
                json!("203.0.113.5"),
                json!("80, 443")
            ]
        );

        let c = (INGRESS.cells)(&test_object("any", json!({"spec": {"defaultBackend": {}}})));
        assert_eq!(c[1..5], [json!("<none>"), json!("*"), json!(""), json!("80")]);

        let rules: Vec<Value> = ["a", "b", "c", "d", "e"].iter().map(|h| json!({"host": h})).collect();
        assert_eq!(ingress_hosts(&rules), "a,b,c + 2 more...");
    }
}
