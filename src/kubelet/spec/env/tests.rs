use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                     "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "say \"hi\""}},
        "spec": spec,
    }))
    .unwrap()
}

fn facts() -> PodFacts {
    PodFacts { node_name: "n1".into(), host_ip: "10.0.0.5".into(), pod_ips: vec!["10.88.0.7".into()] }
}

fn objects() -> Objects {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg"}, "data": {"color": "blue", "size": "L", "bad key": "x", "1st": "y"}
    }))
    .unwrap();
    let secret =
        Secret { data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()), ..Default::default() };
    let mut o = Objects::default();
    o.config_maps.insert("cfg".into(), Ok(Some(cm)));
    o.config_maps.insert("gone".into(), Ok(None));
    o.secrets.insert("db".into(), Ok(Some(secret)));
    o.secrets.insert("gone".into(), Ok(None));
    o
}

fn run(containers: serde_json::Value, services: &[Service]) -> Result<Vec<(String, String)>, ConfigError> {
    let p = pod(json!({"containers": containers, "serviceAccountName": "builder"}));
    let c = &p.spec.as_ref().unwrap().containers[0];
    let alloc =
        BTreeMap::from([("cpu".to_string(), Quantity::count(4)), ("memory".into(), Quantity::parse("8Gi").unwrap())]);
    build(&p, c, &facts(), &objects(), services, &alloc).map(|b| b.vars)
}

fn lookup<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn expansion_follows_upstream_rules() {
    let vars = |name: &str| match name {
        "A" => Some("alpha".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let cases = [
        ("$(A)", "alpha"),
        ("x$(A)y$(A)", "xalphayalpha"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$alpha"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A", "$(A"),
        ("a$b", "a$b"),
        ("end$", "end$"),
        ("$(EMPTY)!", "!"),
        ("$()", "$()"),
        ("ü$(A)ü", "üalphaü"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &vars), want, "{input}");
    }
}

#[test]
fn env_in_order_with_expansion_and_value_from() {
    let vars = run(
        json!([{"name": "c", "image": "busybox", "env": [
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "GREETING", "value": "$(COLOR)-$(PASS)-$(LATER)"},
            {"name": "LATER", "value": "late"},
            {"name": "EMPTY"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "LABELS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "OPT_KEY", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope", "optional": true}}},
        ]}]),
        &[],
    )
    .unwrap();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&names[..5], ["COLOR", "PASS", "GREETING", "LATER", "EMPTY"]);
    assert_eq!(lookup(&vars, "GREETING"), Some("blue-s3cret-$(LATER)"));
    assert_eq!(lookup(&vars, "EMPTY"), Some(""));
    assert_eq!(lookup(&vars, "POD"), Some("web-1"));
    assert_eq!(lookup(&vars, "NS"), Some("shop"));
    assert_eq!(lookup(&vars, "UID"), Some("u-1"));
    assert_eq!(lookup(&vars, "APP"), Some("web"));
    assert_eq!(lookup(&vars, "NOTE"), Some("say \"hi\""));
    assert_eq!(lookup(&vars, "LABELS"), Some("app=\"web\"\ntier=\"front\""));
    assert_eq!(lookup(&vars, "SA"), Some("builder"));
    assert_eq!(lookup(&vars, "NODE"), Some("n1"));
    assert_eq!(lookup(&vars, "HOST_IP"), Some("10.0.0.5"));
    assert_eq!(lookup(&vars, "POD_IP"), Some("10.88.0.7"));
    assert_eq!(lookup(&vars, "POD_IPS"), Some("10.88.0.7"));
    assert_eq!(lookup(&vars, "OPT"), None);
    assert_eq!(lookup(&vars, "OPT_KEY"), None);
}

#[test]
fn missing_sources_give_upstreams_messages() {
    let one = |value_from: serde_json::Value| {
        run(json!([{"name": "c", "env": [{"name": "X", "valueFrom": value_from}]}]), &[]).unwrap_err().to_string()
    };
    assert_eq!(one(json!({"configMapKeyRef": {"name": "gone", "key": "k"}})), "configmap \"gone\" not found");
    assert_eq!(one(json!({"secretKeyRef": {"name": "gone", "key": "k"}})), "secret \"gone\" not found");
    assert_eq!(
        one(json!({"configMapKeyRef": {"name": "cfg", "key": "k"}})),
        "couldn't find key k in ConfigMap shop/cfg"
    );
    assert_eq!(one(json!({"secretKeyRef": {"name": "db", "key": "k"}})), "couldn't find key k in Secret shop/db");
    assert_eq!(one(json!({"fieldRef": {"fieldPath": "spec.bogus"}})), "unsupported fieldPath: spec.bogus");
    let from = json!([{"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}]);
    assert_eq!(run(from, &[]).unwrap_err().to_string(), "configmap \"gone\" not found");
}

#[test]
fn env_from_prefixes_skips_invalid_and_env_overrides() {
    let p = pod(json!({"containers": [{"name": "c", "envFrom": [
        {"configMapRef": {"name": "cfg"}},
        {"prefix": "DB_", "secretRef": {"name": "db"}},
        {"secretRef": {"name": "gone", "optional": true}},
    ], "env": [{"name": "size", "value": "XL-$(color)"}]}]}));
    let c = &p.spec.as_ref().unwrap().containers[0];
    let built = build(&p, c, &facts(), &objects(), &[], &BTreeMap::new()).unwrap();
    assert_eq!(built.invalid, ["1st", "bad key"]);
    let vars = built.vars;
    assert_eq!(lookup(&vars, "color"), Some("blue"));
    assert_eq!(lookup(&vars, "size"), Some("XL-blue"));
    assert_eq!(lookup(&vars, "DB_password"), Some("s3cret"));
    assert_eq!(vars.len(), 3, "{vars:?}");
}

#[test]
fn resource_field_refs_divide_and_default_to_allocatable() {
    let env = json!([
        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
        {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "MEM_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
        {"name": "SIDE_MEM", "valueFrom": {"resourceFieldRef": {"containerName": "side", "resource": "limits.memory", "divisor": "1Gi"}}},
    ]);
    let vars = run(
        json!([
            {"name": "c", "env": env, "resources": {"requests": {"cpu": "250m", "memory": "100M"}, "limits": {"cpu": "1500m"}}},
            {"name": "side"},
        ]),
        &[],
    )
    .unwrap();
    assert_eq!(lookup(&vars, "CPU_LIMIT"), Some("2"));
    assert_eq!(lookup(&vars, "CPU_REQ_M"), Some("250"));
    assert_eq!(lookup(&vars, "MEM_LIMIT_MI"), Some("8192"), "no limit: node allocatable");
    assert_eq!(lookup(&vars, "MEM_REQ"), Some("100000000"));
    assert_eq!(lookup(&vars, "SIDE_MEM"), Some("8"));
}

#[test]
fn service_links_unless_overridden() {
    let svc = |name: &str, ip: &str, ports: serde_json::Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": ports}})).unwrap()
    };
    let services = [
        svc("kubernetes", "10.96.0.1", json!([{"name": "https", "port": 443}])),
        svc(
            "redis-primary",
            "10.96.0.11",
            json!([{"port": 6379, "protocol": "TCP"}, {"name": "m", "port": 9121, "protocol": "UDP"}]),
        ),
        svc("headless", "None", json!([{"port": 80}])),
    ];
    let vars = run(
        json!([{"name": "c", "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
        {"name": "R", "value": "$(REDIS_PRIMARY_SERVICE_HOST)"}]}]),
        &services,
    )
    .unwrap();
    assert_eq!(lookup(&vars, "R"), Some("10.96.0.11"), "service variables are visible to expansion");
    assert_eq!(lookup(&vars, "KUBERNETES_SERVICE_PORT"), Some("1"), "env wins over service links");
    assert_eq!(lookup(&vars, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    assert_eq!(lookup(&vars, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
    assert_eq!(lookup(&vars, "KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
    assert_eq!(lookup(&vars, "KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
    assert_eq!(lookup(&vars, "REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
    assert_eq!(lookup(&vars, "REDIS_PRIMARY_SERVICE_PORT_M"), Some("9121"));
    assert_eq!(lookup(&vars, "REDIS_PRIMARY_PORT_9121_UDP"), Some("udp://10.96.0.11:9121"));
    assert_eq!(lookup(&vars, "REDIS_PRIMARY_PORT_9121_UDP_PROTO"), Some("udp"));
    assert_eq!(lookup(&vars, "REDIS_PRIMARY_PORT_6379_TCP_PORT"), Some("6379"));
    assert!(!vars.iter().any(|(k, _)| k.starts_with("HEADLESS")), "{vars:?}");
}

#[test]
fn command_and_args_are_expanded() {
    let c: Container = serde_json::from_value(
        json!({"name": "c", "command": ["sh", "-c", "echo $(MSG) $$(MSG)"], "args": ["$(NOPE)"]}),
    )
    .unwrap();
    let env = [KeyValue { key: "MSG".into(), value: "hi".into() }];
    let (cmd, args) = expand_command(&c, &env);
    assert_eq!(cmd, ["sh", "-c", "echo hi $(MSG)"]);
    assert_eq!(args, ["$(NOPE)"]);
}
