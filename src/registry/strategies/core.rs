//! Strategies of core/v1 kinds, and the pod-spec rules shared with pod templates.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::handlers::status::{ApiError, ApiResult, FieldError};
use crate::registry::allocator::{Allocator, NODE_PORT_RANGE};
use crate::registry::meta;
use crate::registry::strategy::{Allocations, Strategy};
use crate::registry::validation::{NameRule, is_dns1123_label};

/// Set `obj[key]` when it is absent or null.
pub fn default_field(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut()
        && map.get(key).is_none_or(Value::is_null)
    {
        map.insert(key.to_string(), value);
    }
}

/// The object at `obj[key]`, created empty when absent.
pub fn child<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    default_field(obj, key, json!({}));
    &mut obj[key]
}

fn array_mut<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

fn array<'a>(obj: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    obj.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Upstream's image pull policy default: Always for `:latest` or untagged images.
fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    default_field(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(c, "terminationMessagePolicy", json!("File"));
    default_field(c, "resources", json!({}));
    for port in array_mut(c, "ports") {
        default_field(port, "protocol", json!("TCP"));
    }
}

/// Defaults of a PodSpec, as upstream's SetDefaults_PodSpec plus the admission plug-ins
/// every cluster runs (ServiceAccount, DefaultTolerationSeconds; priority is the Priority
/// admission plug-in's).
pub fn default_pod_spec(spec: &mut Value, is_pod: bool) {
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "securityContext", json!({}));
    for key in ["containers", "initContainers"] {
        for c in array_mut(spec, key) {
            default_container(c);
        }
    }
    if is_pod {
        default_field(spec, "enableServiceLinks", json!(true));
        default_field(spec, "serviceAccountName", json!("default"));
        let sa = spec["serviceAccountName"].clone();
        default_field(spec, "serviceAccount", sa);
        add_default_tolerations(spec);
    }
}

/// DefaultTolerationSeconds: tolerate not-ready/unreachable nodes for 300 s.
fn add_default_tolerations(spec: &mut Value) {
    default_field(spec, "tolerations", json!([]));
    let Some(list) = spec["tolerations"].as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let has = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                || (t.get("operator").and_then(Value::as_str) == Some("Exists") && t.get("key").is_none())
        });
        if !has {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// Validation of a PodSpec at `path` (`spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
        return;
    };
    let containers: Vec<&Value> = array(spec, "containers").collect();
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    for key in ["initContainers", "containers"] {
        for (i, c) in array(spec, key).enumerate() {
            let at = format!("{path}.{key}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                errs.push(FieldError::required(format!("{at}.name"), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{at}.name"), &json!(name), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{at}.name"), &json!(name)));
            }
            if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                errs.push(FieldError::required(format!("{at}.image"), ""));
            }
            for (j, p) in array(c, "ports").enumerate() {
                let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &json!(port),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&restart) {
        errs.push(FieldError::unsupported(format!("{path}.restartPolicy"), restart, &["Always", "OnFailure", "Never"]));
    }
    let dns = spec.get("dnsPolicy").and_then(Value::as_str).unwrap_or("ClusterFirst");
    if !["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"].contains(&dns) {
        errs.push(FieldError::unsupported(
            format!("{path}.dnsPolicy"),
            dns,
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        ));
    }
}

/// QoS class from container requests and limits, as upstream computes it.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = array(spec, "containers").chain(array(spec, "initContainers")).collect();
    let (mut any, mut guaranteed) = (false, true);
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let full_limits = limits.is_some_and(|l| l.contains_key("cpu") && l.contains_key("memory"));
        let requests_match = requests.is_none_or(|r| r.iter().all(|(k, v)| limits.and_then(|l| l.get(k)) == Some(v)));
        if !full_limits || !requests_match {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub struct PodStrategy;
pub static POD: PodStrategy = PodStrategy;

const POD_FIELD_LABELS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

impl Strategy for PodStrategy {
    fn default(&self, obj: &mut Value) {
        default_pod_spec(child(obj, "spec"), true);
    }
    fn initial_status(&self, obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])}))
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_spec(obj.get("spec"), "spec", &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if mutable_pod_spec_stripped(&new["spec"]) != mutable_pod_spec_stripped(&old["spec"]) {
            errs.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
        }
        errs.extend(validate_gate_removal(&new["spec"], &old["spec"]));
        errs
    }
    fn field_labels(&self) -> &'static [&'static str] {
        POD_FIELD_LABELS
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        match label {
            "spec.hostNetwork" => {
                Some(obj.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false).to_string())
            }
            "status.podIPs" => {
                Some(obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str).unwrap_or_default().into())
            }
            l if POD_FIELD_LABELS.contains(&l) => Some(meta::str_at(obj, l).unwrap_or_default().to_string()),
            _ => None,
        }
    }
}

/// The pod spec with the fields an update may change blanked out.
/// A pod's scheduling gates can only be taken away (that is how a gate is lifted), never
/// added after creation.
fn validate_gate_removal(new: &Value, old: &Value) -> Vec<FieldError> {
    let names = |spec: &Value| -> Vec<String> {
        let gates = spec.get("schedulingGates").and_then(Value::as_array);
        gates.into_iter().flatten().filter_map(|g| g["name"].as_str()).map(str::to_string).collect()
    };
    let before = names(old);
    names(new)
        .into_iter()
        .filter(|g| !before.contains(g))
        .map(|g| {
            let why = format!("only deletion is allowed, but found new scheduling gate '{g}'");
            FieldError::forbidden("spec.schedulingGates", &why)
        })
        .collect()
}

fn mutable_pod_spec_stripped(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        // scheduling gates may be removed (checked in `validate_gate_removal`)
        for k in
            ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName", "schedulingGates"]
        {
            m.remove(k);
        }
    }
    for key in ["containers", "initContainers"] {
        for c in array_mut(&mut s, key) {
            if let Some(m) = c.as_object_mut() {
                m.remove("image");
            }
        }
    }
    s
}

pub struct NamespaceStrategy;
pub static NAMESPACE: NamespaceStrategy = NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }
    fn default(&self, obj: &mut Value) {
        let spec = child(obj, "spec");
        default_field(spec, "finalizers", json!(["kubernetes"]));
        // upstream labels every namespace with its own name
        let name = meta::name(obj).to_string();
        if !name.is_empty() {
            let m = meta::metadata_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }
    fn field_labels(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        (label == "status.phase").then(|| meta::str_at(obj, label).unwrap_or_default().to_string())
    }
}

pub struct NodeStrategy;
pub static NODE: NodeStrategy = NodeStrategy;

impl Strategy for NodeStrategy {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        let old_cidr = old.pointer("/spec/podCIDR").and_then(Value::as_str).unwrap_or_default();
        let new_cidr = new.pointer("/spec/podCIDR").and_then(Value::as_str).unwrap_or_default();
        if !old_cidr.is_empty() && old_cidr != new_cidr {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        errs
    }
    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        (label == "spec.unschedulable")
            .then(|| obj.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false).to_string())
    }
}

fn validate_data_keys(obj: &Value, errs: &mut Vec<FieldError>) {
    for field in ["data", "binaryData", "stringData"] {
        for key in obj.get(field).and_then(Value::as_object).into_iter().flat_map(Map::keys) {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && key != "."
                && key != "..";
            if !ok {
                errs.push(FieldError::invalid(format!("{field}[{key}]"), &json!(key), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            }
        }
    }
}

pub struct ConfigMapStrategy;
pub static CONFIG_MAP: ConfigMapStrategy = ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_data_keys(obj, &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        immutable_data(new, old, &mut errs);
        errs
    }
}

/// `immutable: true` ConfigMaps and Secrets keep their data forever.
fn immutable_data(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("data") != old.get("data") || new.get("binaryData") != old.get("binaryData") {
            errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
        }
        if new.get("immutable") != old.get("immutable") {
            errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
        }
    }
}

pub struct SecretStrategy;
pub static SECRET: SecretStrategy = SecretStrategy;

impl Strategy for SecretStrategy {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "type", json!("Opaque"));
        // stringData is write-only: merged into data, as upstream does.
        if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
            let data = child(obj, "data");
            for (k, v) in string_data {
                let encoded = base64_encode(v.as_str().unwrap_or_default().as_bytes());
                data[k.as_str()] = json!(encoded);
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_data_keys(obj, &mut errs);
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.get("type") != old.get("type") {
            errs.push(FieldError::immutable("type", new.get("type").unwrap_or(&Value::Null)));
        }
        immutable_data(new, old, &mut errs);
        errs
    }
    fn field_labels(&self) -> &'static [&'static str] {
        &["type"]
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        (label == "type").then(|| obj.get("type").and_then(Value::as_str).unwrap_or_default().to_string())
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub struct EventStrategy;
pub static EVENT: EventStrategy = EventStrategy;

const EVENT_FIELD_LABELS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

impl Strategy for EventStrategy {
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    fn field_labels(&self) -> &'static [&'static str] {
        EVENT_FIELD_LABELS
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        if !EVENT_FIELD_LABELS.contains(&label) {
            return None;
        }
        if label == "source" {
            return Some(obj.pointer("/source/component").and_then(Value::as_str).unwrap_or_default().into());
        }
        Some(meta::str_at(obj, label).unwrap_or_default().to_string())
    }
}

pub struct PersistentVolumeStrategy;
pub static PERSISTENT_VOLUME: PersistentVolumeStrategy = PersistentVolumeStrategy;

impl Strategy for PersistentVolumeStrategy {
    fn default(&self, obj: &mut Value) {
        let spec = child(obj, "spec");
        default_field(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        default_field(spec, "volumeMode", json!("Filesystem"));
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }
}

pub struct PersistentVolumeClaimStrategy;
pub static PERSISTENT_VOLUME_CLAIM: PersistentVolumeClaimStrategy = PersistentVolumeClaimStrategy;

impl Strategy for PersistentVolumeClaimStrategy {
    fn default(&self, obj: &mut Value) {
        default_field(child(obj, "spec"), "volumeMode", json!("Filesystem"));
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if array(&obj["spec"], "accessModes").next().is_none() {
            errs.push(FieldError::required("spec.accessModes", "at least 1 access mode is required"));
        }
        if obj.pointer("/spec/resources/requests/storage").is_none() {
            errs.push(FieldError::required("spec.resources[storage]", ""));
        }
        errs
    }
}

pub struct ReplicationControllerStrategy;
pub static REPLICATION_CONTROLLER: ReplicationControllerStrategy = ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        // an RC without a selector selects its template's labels
        let labels = obj.pointer("/spec/template/metadata/labels").cloned();
        let spec = child(obj, "spec");
        default_field(spec, "replicas", json!(1));
        if let Some(labels) = labels {
            default_field(spec, "selector", labels);
        }
        if let Some(pod_spec) = obj.pointer_mut("/spec/template/spec") {
            default_pod_spec(pod_spec, false);
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", &mut errs);
        errs
    }
}

/// Services: defaults, validation and ClusterIP/NodePort allocation.
pub struct ServiceStrategy;
pub static SERVICE: ServiceStrategy = ServiceStrategy;

fn service_type(obj: &Value) -> &str {
    obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn wants_node_ports(obj: &Value) -> bool {
    matches!(service_type(obj), "NodePort" | "LoadBalancer")
}

fn requested_cluster_ip(obj: &Value) -> Option<String> {
    obj.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .or_else(|| obj.pointer("/spec/clusterIPs/0").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Every node port the Service holds: its ports' and its health check's.
fn node_ports(obj: &Value) -> Vec<u16> {
    array(&obj["spec"], "ports")
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .chain(health_check_node_port(obj))
        .collect()
}

/// A LoadBalancer that keeps client addresses (`externalTrafficPolicy: Local`) gets a
/// node port on which kube-proxy tells load balancers whether this node has endpoints.
fn needs_health_check(obj: &Value) -> bool {
    service_type(obj) == "LoadBalancer"
        && obj.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

fn health_check_node_port(obj: &Value) -> Option<u16> {
    obj.pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
        .filter(|p| *p != 0)
        .and_then(|p| u16::try_from(p).ok())
}

const HEALTH_CHECK_ONLY_FOR: &str =
    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'";

impl Strategy for ServiceStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035
    }
    fn default(&self, obj: &mut Value) {
        let external_name = service_type(obj) == "ExternalName";
        let node_ports = wants_node_ports(obj);
        let spec = child(obj, "spec");
        default_field(spec, "type", json!("ClusterIP"));
        default_field(spec, "sessionAffinity", json!("None"));
        for port in array_mut(spec, "ports") {
            default_field(port, "protocol", json!("TCP"));
            let p = port.get("port").cloned().unwrap_or(Value::Null);
            default_field(port, "targetPort", p);
        }
        if !external_name {
            default_field(spec, "ipFamilies", json!(["IPv4"]));
            default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
            default_field(spec, "internalTrafficPolicy", json!("Cluster"));
        }
        if node_ports {
            default_field(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if service_type(obj) == "LoadBalancer" {
            default_field(child(obj, "spec"), "allocateLoadBalancerNodePorts", json!(true));
        }
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        validate_service(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = validate_service(new);
        // a health check port kept from a Service that needed one is dropped when it no
        // longer does (allocation releases it), as upstream drops type-dependent fields
        if needs_health_check(old) && health_check_node_port(new) == health_check_node_port(old) {
            errs.retain(|e| e.field != "spec.healthCheckNodePort");
        }
        let (old_ip, new_ip) = (requested_cluster_ip(old), requested_cluster_ip(new));
        if old_ip.is_some() && new_ip.is_some() && old_ip != new_ip && service_type(new) != "ExternalName" {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &json!(new_ip), "may not change once set"));
        }
        errs
    }
    fn field_labels(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }
    fn field_label(&self, obj: &Value, label: &str) -> Option<String> {
        match label {
            "spec.clusterIP" | "spec.type" => Some(meta::str_at(obj, label).unwrap_or_default().to_string()),
            _ => None,
        }
    }
    fn allocate(
        &self,
        obj: &mut Value,
        old: Option<&Value>,
        alloc: &Allocator,
        taken: &HashSet<String>,
    ) -> ApiResult<Allocations> {
        allocate_service(obj, old, alloc, taken)
    }
    fn releases(&self, obj: &Value, alloc: &Allocator) -> Vec<String> {
        let mut keys: Vec<String> = node_ports(obj).into_iter().map(|p| alloc.port_key(p)).collect();
        if let Some(ip) = requested_cluster_ip(obj).and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            keys.push(alloc.ip_key(ip));
        }
        keys
    }
}

fn validate_service(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ty = service_type(obj);
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        errs.push(FieldError::unsupported("spec.type", ty, TYPES));
    }
    let headless = requested_cluster_ip(obj).as_deref() == Some("None");
    let ports: Vec<&Value> = array(&obj["spec"], "ports").collect();
    if ty == "ExternalName" {
        if obj.pointer("/spec/externalName").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required("spec.externalName", ""));
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut seen = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{at}.port"),
                &json!(port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{at}.name"), ""));
        }
        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !seen.insert((port, protocol.to_string())) {
            errs.push(FieldError::duplicate(at.to_string(), &json!({"port": port, "protocol": protocol})));
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
            if !wants_node_ports(obj) {
                errs.push(FieldError::forbidden(
                    format!("{at}.nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                ));
            } else {
                node_port_in_range(np, &format!("{at}.nodePort"), &mut errs);
            }
        }
    }
    if let Some(hc) = obj.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
        if !needs_health_check(obj) {
            errs.push(FieldError::forbidden("spec.healthCheckNodePort", HEALTH_CHECK_ONLY_FOR));
        } else {
            node_port_in_range(hc, "spec.healthCheckNodePort", &mut errs);
        }
    }
    errs
}

fn node_port_in_range(port: i64, field: &str, errs: &mut Vec<FieldError>) {
    if !u16::try_from(port).is_ok_and(|p| NODE_PORT_RANGE.contains(&p)) {
        errs.push(FieldError::invalid(
            field,
            &json!(port),
            "provided port is not in the valid range. The range of valid ports is 30000-32767",
        ));
    }
}

fn allocate_service(
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &Allocator,
    taken: &HashSet<String>,
) -> ApiResult<Allocations> {
    let mut out = Allocations::default();
    let (ns, name) = (meta::namespace(obj).to_string(), meta::name(obj).to_string());
    let invalid = |field: &str, value: Value, why: String| {
        ApiError::invalid("", "Service", &name, vec![FieldError::invalid(field, &value, &why)])
    };
    let external = service_type(obj) == "ExternalName";
    let old_ip = old.and_then(requested_cluster_ip);
    if external {
        if let Some(ip) = old_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            out.releases.push(alloc.ip_key(ip));
        }
    } else {
        let ip = match (requested_cluster_ip(obj), old_ip) {
            (Some(ip), _) if ip == "None" => ip,
            (Some(ip), Some(old)) if ip == old => ip,
            (None, Some(old)) => old,
            (Some(ip), _) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    invalid(
                        "spec.clusterIPs",
                        json!([ip]),
                        format!("failed to allocate IP {ip}: must be a valid IP address"),
                    )
                })?;
                if !alloc.contains(parsed) {
                    return Err(invalid(
                        "spec.clusterIPs",
                        json!([ip]),
                        format!(
                            "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                            alloc.service_range
                        ),
                    ));
                }
                if taken.contains(&alloc.ip_key(parsed)) {
                    return Err(invalid(
                        "spec.clusterIPs",
                        json!([ip]),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    ));
                }
                out.claims.push(alloc.ip_claim(parsed, &ns, &name));
                ip
            }
            (None, None) => {
                let picked = alloc.pick_ip(taken).ok_or_else(|| {
                    ApiError::internal(format!(
                        "failed to allocate a serviceIP: range is full: {}",
                        alloc.service_range
                    ))
                })?;
                out.claims.push(alloc.ip_claim(picked, &ns, &name));
                picked.to_string()
            }
        };
        let spec = child(obj, "spec");
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    allocate_node_ports(obj, old, alloc, taken, &mut out, &ns, &name)?;
    Ok(out)
}

fn allocate_node_ports(
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &Allocator,
    taken: &HashSet<String>,
    out: &mut Allocations,
    ns: &str,
    name: &str,
) -> ApiResult<()> {
    let old_ports = old.map(node_ports).unwrap_or_default();
    let wants = wants_node_ports(obj);
    let old_entries: Vec<Value> = old.map(|o| array(&o["spec"], "ports").cloned().collect()).unwrap_or_default();
    let mut used: Vec<u16> = Vec::new();
    for (i, port) in array_mut(child(obj, "spec"), "ports").enumerate() {
        if !wants {
            if let Some(m) = port.as_object_mut() {
                m.remove("nodePort");
            }
            continue;
        }
        let requested = port.get("nodePort").and_then(Value::as_u64).filter(|p| *p != 0).map(|p| p as u16);
        let same_entry =
            old_entries.iter().find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"));
        let reuse = same_entry.and_then(|o| o.get("nodePort")).and_then(Value::as_u64).map(|p| p as u16);
        let held = |p: u16| old_ports.contains(&p);
        let field = format!("spec.ports[{i}].nodePort");
        let chosen = node_port_for(&field, requested.or(reuse), held, &used, (alloc, taken), out, (ns, name))?;
        used.push(chosen);
        port["nodePort"] = json!(chosen);
    }
    allocate_health_check_port(obj, old, alloc, taken, out, (ns, name), &mut used)?;
    out.releases.extend(old_ports.iter().filter(|p| !used.contains(p)).map(|p| alloc.port_key(*p)));
    Ok(())
}

/// The node port for `field`: `wanted` when the Service already `held` it, else claimed
/// (refused when another Service or another field of this one has it), else a free one.
fn node_port_for(
    field: &str,
    wanted: Option<u16>,
    held: impl Fn(u16) -> bool,
    used: &[u16],
    (alloc, taken): (&Allocator, &HashSet<String>),
    out: &mut Allocations,
    (ns, name): (&str, &str),
) -> ApiResult<u16> {
    let port = match wanted {
        Some(p) if held(p) => return Ok(p),
        Some(p) if taken.contains(&alloc.port_key(p)) || used.contains(&p) => {
            let why = "provided port is already allocated";
            return Err(ApiError::invalid("", "Service", name, vec![FieldError::invalid(field, &json!(p), why)]));
        }
        Some(p) => p,
        None => alloc
            .pick_port(taken, used)
            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?,
    };
    out.claims.push(alloc.port_claim(port, ns, name));
    Ok(port)
}

/// `spec.healthCheckNodePort`: kept, claimed as asked, or picked while the Service needs
/// one; dropped (and so released) when it no longer does.
fn allocate_health_check_port(
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &Allocator,
    taken: &HashSet<String>,
    out: &mut Allocations,
    (ns, name): (&str, &str),
    used: &mut Vec<u16>,
) -> ApiResult<()> {
    if !needs_health_check(obj) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("healthCheckNodePort");
        }
        return Ok(());
    }
    let old_ports = old.map(node_ports).unwrap_or_default();
    let held = |p: u16| old_ports.contains(&p) && !used.contains(&p);
    let wanted = health_check_node_port(obj).or_else(|| old.and_then(health_check_node_port));
    let port = node_port_for("spec.healthCheckNodePort", wanted, held, used, (alloc, taken), out, (ns, name))?;
    used.push(port);
    child(obj, "spec")["healthCheckNodePort"] = json!(port);
    Ok(())
}

/// LimitRanges: upstream's defaulting of Container items (the default limit ← max, the
/// default request ← the default limit, then ← min), so what LimitRanger applies is
/// what `kubectl describe limitrange` shows.
pub struct LimitRangeStrategy;
pub static LIMIT_RANGE: LimitRangeStrategy = LimitRangeStrategy;

impl Strategy for LimitRangeStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(items) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
        for item in items.iter_mut().filter(|i| i["type"] == "Container") {
            fill_resources(item, "default", &["max"]);
            fill_resources(item, "defaultRequest", &["default", "min"]);
        }
    }
}

/// Add to the ResourceList `target` of `item` what the `sources` lists have and it lacks.
fn fill_resources(item: &mut Value, target: &str, sources: &[&str]) {
    for source in sources {
        let Some(from) = item.get(*source).and_then(Value::as_object).cloned() else { continue };
        let Some(map) = item.as_object_mut() else { return };
        let to = map.entry(target).or_insert_with(|| json!({}));
        if let Some(to) = to.as_object_mut() {
            for (k, v) in from {
                to.entry(k).or_insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn qos() {
        assert_eq!(qos_class(&json!({"containers":[{"name":"a"}]})), "BestEffort");
        let g = json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers":[{"resources":{"requests":{"cpu":"1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
