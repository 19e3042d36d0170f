//! A container's environment as upstream's kubelet builds it: `envFrom` sources first
//! (prefixed, invalid names skipped), then `env` in order — each value `$(VAR)`-expanded
//! against what is defined so far and the service variables — then the service-link
//! variables (`<SVC>_SERVICE_HOST` …) for names not already set.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1::KeyValue;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, ObjectFieldSelector, Pod, ResourceFieldSelector, Service,
};
use kube::api::ListParams;
use kube::{Api, Client};

use super::refs::Objects;
use super::{ConfigError, PodFacts};
use crate::quantity::Quantity;

pub async fn container_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
) -> Result<Vec<KeyValue>, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (config_maps, secrets) = referenced(container);
    let objects = Objects::fetch(client, namespace, config_maps, secrets).await;
    let services = services(client, pod).await?;
    let built = build(pod, container, facts, &objects, &services, &node_allocatable())?;
    if !built.invalid.is_empty() {
        // upstream reports this as an InvalidEnvironmentVariableNames event
        tracing::warn!(pod = ?pod.metadata.name, container = %container.name, skipped = ?built.invalid,
            "envFrom keys skipped: not valid environment variable names");
    }
    Ok(built.vars.into_iter().map(|(key, value)| KeyValue { key, value }).collect())
}

/// `$(VAR)` in command and args, expanded with the container's environment (as upstream
/// does before CreateContainer; unknown names stay as written).
pub fn expand_command(container: &Container, env: &[KeyValue]) -> (Vec<String>, Vec<String>) {
    let vars: HashMap<&str, &str> = env.iter().map(|kv| (kv.key.as_str(), kv.value.as_str())).collect();
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let expand_all = |list: &Option<Vec<String>>| list.iter().flatten().map(|s| expand(s, &lookup)).collect();
    (expand_all(&container.command), expand_all(&container.args))
}

/// The variables a container defines without reading the API (plain values, fieldRef,
/// resourceFieldRef), for subPathExpr: upstream expands it with the container's env,
/// and these are what such expressions use.
pub fn local_env(pod: &Pod, container: &Container, facts: &PodFacts) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = HashMap::new();
    let allocatable = node_allocatable();
    for var in container.env.iter().flatten() {
        let from = var.value_from.as_ref();
        let value = match (
            &var.value,
            from.and_then(|f| f.field_ref.as_ref()),
            from.and_then(|f| f.resource_field_ref.as_ref()),
        ) {
            (Some(v), _, _) if !v.is_empty() => Some(expand(v, &|name: &str| env.get(name).cloned())),
            (_, Some(field), _) => field_value(pod, facts, field).ok(),
            (_, _, Some(resource)) => resource_value(pod, Some(container), resource, &allocatable).ok(),
            _ => None,
        };
        if let Some(value) = value {
            env.insert(var.name.clone(), value);
        }
    }
    env
}

/// The ConfigMaps and Secrets a container's env and envFrom name.
fn referenced(container: &Container) -> (Vec<&str>, Vec<&str>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for from in container.env_from.iter().flatten() {
        cms.extend(from.config_map_ref.as_ref().map(|r| r.name.as_str()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.as_str()));
    }
    for var in container.env.iter().flatten() {
        let from = var.value_from.as_ref();
        cms.extend(from.and_then(|f| f.config_map_key_ref.as_ref()).map(|r| r.name.as_str()));
        secrets.extend(from.and_then(|f| f.secret_key_ref.as_ref()).map(|r| r.name.as_str()));
    }
    (cms, secrets)
}

/// The services whose variables the pod gets: `default/kubernetes` always, the pod
/// namespace's unless `enableServiceLinks: false`.
async fn services(client: &Client, pod: &Pod) -> Result<Vec<Service>, ConfigError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let fail = |e: kube::Error| ConfigError(format!("failed to list services when setting up env vars: {e}"));
    // the master service first: a service of the pod's namespace of the same name wins
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut out: Vec<Service> = api.get_opt("kubernetes").await.map_err(fail)?.into_iter().collect();
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        let listed = api.list(&ListParams::default()).await.map_err(fail)?.items;
        out.extend(
            listed.into_iter().filter(|s| namespace != "default" || s.metadata.name.as_deref() != Some("kubernetes")),
        );
    }
    Ok(out)
}

/// This machine's resources: what `limits.*` resourceFieldRefs report for a container
/// without limits (upstream uses node allocatable; ours equals capacity).
pub fn node_allocatable() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as i64;
    let memory = Quantity::parse(&crate::kubelet::node::machine_memory()).unwrap_or_default();
    // the node reports 100Gi of ephemeral storage; keep the two in step
    let storage = Quantity::parse("100Gi").unwrap_or_default();
    BTreeMap::from([
        ("cpu".to_string(), Quantity::count(cpus)),
        ("memory".to_string(), memory),
        ("ephemeral-storage".to_string(), storage),
    ])
}

/// What `build` produced: the variables in definition order, and the envFrom keys skipped.
#[derive(Debug, Default)]
pub struct Built {
    pub vars: Vec<(String, String)>,
    pub invalid: Vec<String>,
}

/// Variables in first-definition order; a redefinition replaces the value in place.
#[derive(Default)]
struct Ordered {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl Ordered {
    fn set(&mut self, key: String, value: String) {
        match self.index.get(&key) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.vars.len());
                self.vars.push((key, value));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.vars[i].1.as_str())
    }
}

/// The environment from objects already read (the pure part of `container_env`).
pub fn build(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    objects: &Objects,
    services: &[Service],
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<Built, ConfigError> {
    let service_env = service_vars(services);
    let mut env = Ordered::default();
    let mut invalid = Vec::new();
    for from in container.env_from.iter().flatten() {
        env_from(from, objects, &mut env, &mut invalid)?;
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => {
                let lookup = |name: &str| env.get(name).or_else(|| service_env.get(name)).map(str::to_string);
                Some(expand(v, &lookup))
            }
            (_, Some(_)) => value_from(var, pod, container, facts, objects, allocatable)?,
            _ => Some(String::new()),
        };
        if let Some(value) = value {
            env.set(var.name.clone(), value);
        }
    }
    for (k, v) in service_env.vars {
        if env.get(&k).is_none() {
            env.set(k, v);
        }
    }
    invalid.sort();
    Ok(Built { vars: env.vars, invalid })
}

/// One envFrom source's keys into `env` (prefixed; invalid names collected, not set).
fn env_from(
    from: &EnvFromSource,
    objects: &Objects,
    env: &mut Ordered,
    invalid: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let prefix = from.prefix.as_deref().unwrap_or("");
    let mut data: Vec<(String, String)> = Vec::new();
    if let Some(r) = &from.config_map_ref
        && let Some(cm) = objects.config_map(&r.name, r.optional.unwrap_or(false))?
    {
        data.extend(cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(r) = &from.secret_ref
        && let Some(secret) = objects.secret(&r.name, r.optional.unwrap_or(false))?
    {
        let decoded = secret.data.iter().flatten().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into()));
        data.extend(decoded);
    }
    for (key, value) in data {
        let name = format!("{prefix}{key}");
        match is_env_var_name(&name) {
            true => env.set(name, value),
            false => invalid.push(name),
        }
    }
    Ok(())
}

/// A `valueFrom` variable's value; `None` when an optional source or key is missing.
fn value_from(
    var: &EnvVar,
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    objects: &Objects,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &var.value_from else { return Ok(Some(String::new())) };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(field) = &from.field_ref {
        return field_value(pod, facts, field).map(Some);
    }
    if let Some(resource) = &from.resource_field_ref {
        return resource_value(pod, Some(container), resource, allocatable).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        let Some(cm) = objects.config_map(&r.name, optional)? else { return Ok(None) };
        return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!("couldn't find key {} in ConfigMap {namespace}/{}", r.key, r.name))),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        let Some(secret) = objects.secret(&r.name, optional)? else { return Ok(None) };
        return match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!("couldn't find key {} in Secret {namespace}/{}", r.key, r.name))),
        };
    }
    Ok(Some(String::new()))
}

/// A fieldRef's value (env and downwardAPI volumes).
pub fn field_value(pod: &Pod, facts: &PodFacts, field: &ObjectFieldSelector) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = field.field_path.as_str();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| facts.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        _ => return subscripted(meta, path),
    };
    Ok(value)
}

/// `metadata.labels['k']` / `metadata.annotations['k']` (missing keys are empty).
fn subscripted(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    path: &str,
) -> Result<String, ConfigError> {
    let unsupported = || ConfigError(format!("unsupported fieldPath: {path}"));
    let (map, rest) = if let Some(rest) = path.strip_prefix("metadata.labels") {
        (meta.labels.as_ref(), rest)
    } else if let Some(rest) = path.strip_prefix("metadata.annotations") {
        (meta.annotations.as_ref(), rest)
    } else {
        return Err(unsupported());
    };
    let key = rest.strip_prefix("['").and_then(|r| r.strip_suffix("']")).ok_or_else(unsupported)?;
    Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
}

/// `k="v"` lines sorted by key, values quoted as Go's %q (downward API's map format).
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> = map.into_iter().flatten().map(|(k, v)| format!("{k}={}", go_quote(v))).collect();
    lines.join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A resourceFieldRef's value: the request or limit divided by the divisor, rounded up;
/// unset limits are the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    default_container: Option<&Container>,
    field: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, ConfigError> {
    let container = match (field.container_name.as_deref().filter(|n| !n.is_empty()), default_container) {
        (None, Some(c)) => c,
        (None, None) => return Err(ConfigError("resourceFieldRef needs a containerName".into())),
        (Some(name), _) => find_container(pod, name)
            .ok_or_else(|| ConfigError(format!("container {name} not found in pod for resourceFieldRef")))?,
    };
    let resources = container.resources.as_ref();
    let (kind, resource) = field
        .resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported container resource : {}", field.resource)))?;
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(ConfigError(format!("unsupported container resource : {}", field.resource))),
    };
    let value = set.and_then(|m| m.get(resource)).and_then(|q| Quantity::parse(&q.0));
    let value = match (value, kind) {
        (Some(v), _) => v,
        (None, "limits") => allocatable.get(resource).copied().unwrap_or_default(),
        (None, _) => Quantity::ZERO,
    };
    let divisor = field.divisor.as_ref().and_then(|q| Quantity::parse(&q.0)).filter(|d| !d.is_zero());
    let divisor = divisor.unwrap_or(Quantity::count(1));
    Ok(divide_up(value, divisor, resource == "cpu").to_string())
}

/// value ÷ divisor rounded up: in thousandths for cpu, whole units otherwise (as upstream).
fn divide_up(value: Quantity, divisor: Quantity, cpu: bool) -> i64 {
    let (v, d) = match cpu {
        true => (value.milli_value(), divisor.milli_value()),
        false => (value.value(), divisor.value()),
    };
    if d == 0 {
        return v;
    }
    (v as f64 / d as f64).ceil() as i64
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name)
}

/// Upstream's IsEnvVarName: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// Upstream's `$(VAR)` expansion: `$$` is a literal `$`, an unknown or unclosed
/// reference stays as written, a `$` before anything else is kept.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            // a trailing `$` is kept
            out.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    out.push_str(&lookup(name).unwrap_or_else(|| format!("$({name})")));
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The service-link variables of the given services, in service then port order.
struct ServiceEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl ServiceEnv {
    fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.vars[i].1.as_str())
    }
}

fn service_vars(services: &[Service]) -> ServiceEnv {
    let mut env = Ordered::default();
    // a stable sort: of two services of one name, the later one wins
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_key(|s| s.metadata.name.clone());
    for svc in sorted {
        for (k, v) in one_service_vars(svc) {
            env.set(k, v);
        }
    }
    ServiceEnv { vars: env.vars, index: env.index }
}

fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// `<SVC>_SERVICE_HOST`, `_SERVICE_PORT[_<NAME>]` and the Docker-link style `_PORT…`.
fn one_service_vars(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = &svc.spec else { return Vec::new() };
    let ip = spec.cluster_ip.as_deref().unwrap_or("");
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let prefix = env_name(svc.metadata.name.as_deref().unwrap_or(""));
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.to_string())];
    let Some(first) = ports.first() else { return out };
    out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
    for p in ports {
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.push((format!("{prefix}_SERVICE_PORT_{}", env_name(name)), p.port.to_string()));
        }
    }
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    for (i, p) in ports.iter().enumerate() {
        let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
        let url = format!("{proto}://{host}:{}", p.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((pp.clone(), url));
        out.push((format!("{pp}_PROTO"), proto));
        out.push((format!("{pp}_PORT"), p.port.to_string()));
        out.push((format!("{pp}_ADDR"), ip.to_string()));
    }
    out
}

#[cfg(test)]
mod tests;
