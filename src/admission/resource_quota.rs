//! ResourceQuota: a create that would take a namespace past a quota's `spec.hard` is
//! refused with upstream's message (`exceeded quota: q, requested: pods=1, used: pods=2,
//! limited: pods=2`); a pod without the cpu/memory requests or limits a quota constrains
//! is refused (`failed quota: q: must specify requests.cpu for: c`). Counted: `pods`,
//! `services`, `configmaps`, `secrets`, `persistentvolumeclaims`,
//! `replicationcontrollers`, `resourcequotas`, `count/<resource>[.<group>]`, the pod
//! compute resources (`requests.cpu`, `cpu`, `limits.memory` …), `services.nodeports`,
//! `services.loadbalancers` and `requests.storage`. Scopes are not supported.
//!
//! As upstream, an admitted create is charged to the quota's `status.used` with a
//! compare-and-swap on the quota's resourceVersion (retried on conflict), so concurrent
//! creates cannot both take the last unit. Usage the status does not have yet is
//! computed from the watch caches; the charges whose objects the caches have not seen
//! yet are remembered in the [`Ledger`], so the in-server usage controller
//! (`apiserver::quota_status`, which lowers `status.used` after deletions) counts
//! them too. Only creates are charged (not updates that change requests).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;
use crate::quantity::Quantity;
use crate::registry::rest::{Part, WriteOpts};
use crate::registry::{ResourceDef, all_resources, builtin, find_resource, meta};

/// Resource name → amount.
pub type Usage = BTreeMap<String, Quantity>;

/// How long a charge counts while its object has not reached the cache (a create that
/// failed after admission stops counting then).
const PENDING_FOR: Duration = Duration::from_secs(30);
const CHARGE_RETRIES: usize = 32;
/// How long after a quota's (or limit range's) creation its namespace's are read from etcd.
const FRESH_POLICY: Duration = Duration::from_secs(10);
/// Resources whose presence in every container a quota on them demands.
const COMPUTE: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];

/// Charges whose objects the watch caches have not shown yet.
#[derive(Default)]
pub struct Ledger {
    pending: Mutex<HashMap<String, Vec<Pending>>>,
    /// (kind, namespace) where a ResourceQuota or LimitRange was created lately: those
    /// are read from etcd until the cache surely has them (upstream's live lookup).
    fresh: Mutex<HashMap<(&'static str, String), Instant>>,
}

struct Pending {
    res: &'static ResourceDef,
    key: String,
    usage: Usage,
    at: Instant,
}

pub struct ResourceQuota {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(ResourceQuota { ctx: ctx.clone() })
}

pub fn quotas() -> &'static ResourceDef {
    builtin("", "v1", "resourcequotas")
}

/// The objects of `res` in `ns`, from the watch cache.
pub fn cached_objects(ctx: &Context, res: &'static ResourceDef, ns: &str) -> Vec<Value> {
    ctx.caches.objects(res, ns)
}

fn count_key(res: &ResourceDef) -> String {
    if res.group.is_empty() { format!("count/{}", res.plural) } else { format!("count/{}.{}", res.plural, res.group) }
}

/// The kind whose objects a quota key counts.
fn resource_of(key: &str) -> Option<&'static ResourceDef> {
    let core = |p: &str| find_resource("", "v1", p);
    match key {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        "requests.storage" | "persistentvolumeclaims" => core("persistentvolumeclaims"),
        k if k.starts_with("requests.") || k.starts_with("limits.") => core("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(key),
        k => {
            let rest = k.strip_prefix("count/")?;
            let (plural, group) = rest.split_once('.').unwrap_or((rest, ""));
            all_resources().iter().find(|r| r.plural == plural && r.group == group && r.storage.is_none() && !r.review)
        }
    }
}

/// A ResourceList as quantities (unparsable entries left out).
pub fn quantities(v: Option<&Value>) -> Usage {
    let map = v.and_then(Value::as_object);
    map.into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), Quantity::of(v)?))).collect()
}

/// A pod that no longer counts: finished, or being deleted.
fn pod_gone(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    matches!(phase, Some("Succeeded" | "Failed"))
        || meta::metadata(pod).is_some_and(|m| m.contains_key("deletionTimestamp"))
}

/// What one object takes from a quota.
pub fn usage_of(res: &ResourceDef, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let one = Quantity::count(1);
    if res.group.is_empty() && res.plural == "pods" && pod_gone(obj) {
        return u;
    }
    u.insert(count_key(res), one);
    let legacy = [
        "pods",
        "services",
        "configmaps",
        "secrets",
        "persistentvolumeclaims",
        "replicationcontrollers",
        "resourcequotas",
    ];
    if res.group.is_empty() && legacy.contains(&res.plural) {
        u.insert(res.plural.to_string(), one);
    }
    match (res.group, res.plural) {
        ("", "pods") => pod_compute(obj, &mut u),
        ("", "services") => {
            let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            if matches!(kind, "NodePort" | "LoadBalancer") {
                let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
                u.insert("services.nodeports".into(), Quantity::count(ports as i64));
            }
            if kind == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one);
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(q) = obj.pointer("/spec/resources/requests/storage").and_then(Quantity::of) {
                u.insert("requests.storage".into(), q);
            }
        }
        _ => {}
    }
    u
}

/// A pod's requests and limits: the containers' sum, or the largest init container's
/// when that is more, as upstream's quota evaluator.
fn pod_compute(pod: &Value, u: &mut Usage) {
    let containers =
        |list: &str| pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let (main, init) = (containers("containers"), containers("initContainers"));
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        for (kind, keys) in [
            ("requests", vec![format!("requests.{resource}"), resource.to_string()]),
            ("limits", vec![format!("limits.{resource}")]),
        ] {
            let of = |c: &Value| c.pointer(&format!("/resources/{kind}/{resource}")).and_then(Quantity::of);
            let sum = main.iter().filter_map(of).reduce(Quantity::add);
            let init_max = init.iter().filter_map(of).reduce(Quantity::max);
            let total = match (sum, init_max) {
                (Some(s), Some(i)) => s.max(i),
                (s, i) => match s.or(i) {
                    Some(q) => q,
                    None => continue,
                },
            };
            for key in keys {
                u.insert(key, total);
            }
        }
    }
}

/// Upstream's constraint: with cpu or memory under quota, every container names them.
fn missing_compute(pod: &Value, hard: &Usage) -> Option<String> {
    let required: Vec<&str> = COMPUTE.iter().copied().filter(|k| hard.contains_key(*k)).collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for list in ["initContainers", "containers"] {
        for c in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let has = |kind: &str, r: &str| c.pointer(&format!("/resources/{kind}/{r}")).is_some();
            for key in &required {
                let present = match *key {
                    "cpu" | "memory" => has("requests", key),
                    k => k.split_once('.').is_some_and(|(kind, r)| has(kind, r)),
                };
                if !present {
                    missing.entry(key).or_default().push(c["name"].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(k, mut names)| {
            names.sort();
            names.dedup();
            format!("{k} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

fn pretty(u: &Usage) -> String {
    u.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

impl Ledger {
    fn record(&self, quota_key: &str, res: &'static ResourceDef, key: String, usage: Usage) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(quota_key.to_string()).or_default().push(Pending { res, key, usage, at: Instant::now() });
    }

    /// The charges of `quota_key` whose objects the caches do not hold yet (forgetting
    /// the rest).
    fn outstanding(&self, ctx: &Context, quota_key: &str) -> Vec<Usage> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = pending.get_mut(quota_key) else { return Vec::new() };
        list.retain(|p| p.at.elapsed() < PENDING_FOR && ctx.caches.get(p.res).get(p.key.as_bytes()).0.is_none());
        let out = list.iter().map(|p| p.usage.clone()).collect();
        if list.is_empty() {
            pending.remove(quota_key);
        }
        out
    }
}

impl Ledger {
    /// Note a create of `res` (a policy kind) in `ns`.
    pub fn created(&self, res: &'static ResourceDef, ns: &str) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        fresh.retain(|_, at| at.elapsed() < FRESH_POLICY);
        fresh.insert((res.plural, ns.to_string()), Instant::now());
    }

    fn is_fresh(&self, res: &'static ResourceDef, ns: &str) -> bool {
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        fresh.get(&(res.plural, ns.to_string())).is_some_and(|at| at.elapsed() < FRESH_POLICY)
    }
}

/// The policy objects (quotas, limit ranges) of `ns`: from the watch cache, or from
/// etcd while one created lately may not have reached it.
pub async fn policies_in(ctx: &Context, res: &'static ResourceDef, ns: &str) -> ApiResult<Vec<Value>> {
    if !ctx.quota.is_fresh(res, ns) {
        return Ok(cached_objects(ctx, res, ns));
    }
    let reg = &ctx.registry;
    let page = reg.store.list(&reg.keys.collection(res, ns), None, 0, 0).await?;
    page.items.iter().map(|s| crate::registry::rest::Registry::decode_stored(res, s)).collect()
}

/// What the namespace uses of each key in `hard`: the cached objects plus charges not
/// yet in the caches.
pub fn computed_usage(ctx: &Context, ns: &str, quota_key: &str, hard: &Usage) -> Usage {
    let mut used: Usage = hard.keys().map(|k| (k.clone(), Quantity::ZERO)).collect();
    let mut kinds: Vec<&'static ResourceDef> = hard.keys().filter_map(|k| resource_of(k)).collect();
    kinds.sort_by_key(|r| (r.group, r.plural));
    kinds.dedup_by_key(|r| (r.group, r.plural));
    let mut add = |u: &Usage| {
        for (k, v) in u {
            if let Some(total) = used.get_mut(k) {
                *total = total.add(*v);
            }
        }
    };
    for res in kinds {
        for obj in cached_objects(ctx, res, ns) {
            add(&usage_of(res, &obj));
        }
    }
    for u in ctx.quota.outstanding(ctx, quota_key) {
        add(&u);
    }
    used
}

fn to_json(u: &Usage) -> Value {
    Value::Object(u.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect::<Map<_, _>>())
}

/// Write `status` {hard, used} over the quota at the version it was read; false when it
/// changed meanwhile.
pub async fn write_status(ctx: &Context, quota: &Value, hard: &Usage, used: &Usage) -> ApiResult<bool> {
    let mut updated = quota.clone();
    updated["status"] = json!({"hard": to_json(hard), "used": to_json(used)});
    let (ns, name) = (meta::namespace(quota), meta::name(quota));
    match ctx.registry.update(quotas(), ns, name, updated, Part::Status, &WriteOpts::default()).await {
        Ok(_) => Ok(true),
        Err(e) if e.reason == "Conflict" => Ok(false),
        Err(e) => Err(e),
    }
}

impl ResourceQuota {
    /// Check one quota and charge it; retried while others charge it too.
    async fn charge(&self, a: &Attributes<'_>, name: &str, delta: &Usage, obj_key: &str) -> ApiResult<()> {
        for _ in 0..CHARGE_RETRIES {
            let quota = match self.ctx.registry.get(quotas(), a.namespace, name).await {
                Ok(q) => q,
                Err(e) if e.reason == "NotFound" => return Ok(()),
                Err(e) => return Err(e),
            };
            let hard = quantities(quota.pointer("/spec/hard"));
            let requested: Usage = delta
                .iter()
                .filter(|(k, v)| hard.contains_key(*k) && !v.is_zero())
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            if requested.is_empty() {
                return Ok(());
            }
            let quota_key = self.ctx.registry.key(quotas(), a.namespace, name);
            let recorded = quantities(quota.pointer("/status/used"));
            let unknown: Usage =
                hard.iter().filter(|(k, _)| !recorded.contains_key(*k)).map(|(k, v)| (k.clone(), *v)).collect();
            let mut used = computed_usage(&self.ctx, a.namespace, &quota_key, &unknown);
            used.extend(recorded.into_iter().filter(|(k, _)| hard.contains_key(k)));
            let mut new_used = used.clone();
            let mut exceeded = Vec::new();
            for (k, v) in &requested {
                let total = used.get(k).copied().unwrap_or_default().add(*v);
                if total > hard[k] {
                    exceeded.push(k.clone());
                }
                new_used.insert(k.clone(), total);
            }
            if !exceeded.is_empty() {
                let mask = |u: &Usage| -> Usage {
                    exceeded.iter().map(|k| (k.clone(), u.get(k).copied().unwrap_or_default())).collect()
                };
                return Err(a.forbidden(&format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    pretty(&mask(&requested)),
                    pretty(&mask(&used)),
                    pretty(&mask(&hard))
                )));
            }
            if a.dry_run {
                return Ok(());
            }
            if write_status(&self.ctx, &quota, &hard, &new_used).await? {
                self.ctx.quota.record(&quota_key, a.res, obj_key.to_string(), requested);
                return Ok(());
            }
        }
        Err(a.forbidden(&format!("failed quota: {name}: too many concurrent changes to the quota, try again")))
    }
}

impl Plugin for ResourceQuota {
    fn handles(&self, a: &Attributes) -> bool {
        a.operation == Operation::Create && a.subresource.is_empty() && a.res.namespaced
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.is("", "resourcequotas") {
                self.ctx.quota.created(quotas(), a.namespace);
            }
            let mut in_force = policies_in(&self.ctx, quotas(), a.namespace).await?;
            if in_force.is_empty() {
                return Ok(());
            }
            in_force.sort_by(|x, y| meta::name(x).cmp(meta::name(y)));
            let obj = &*o.obj;
            let delta = usage_of(a.res, obj);
            let is_pod = a.is("", "pods");
            for quota in &in_force {
                let hard = quantities(quota.pointer("/spec/hard"));
                // a quota on anything of this kind constrains it (upstream's Matches)
                let matches =
                    |k: &String| resource_of(k).is_some_and(|r| r.plural == a.res.plural && r.group == a.res.group);
                if !hard.keys().any(matches) {
                    continue;
                }
                if is_pod && let Some(why) = missing_compute(obj, &hard) {
                    return Err(a.forbidden(&format!("failed quota: {}: {why}", meta::name(quota))));
                }
            }
            let obj_key = self.ctx.registry.key(a.res, a.namespace, meta::name(obj));
            for quota in &in_force {
                self.charge(a, meta::name(quota), &delta, &obj_key).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceDef {
        find_resource("", "v1", "pods").unwrap()
    }

    #[test]
    fn pod_usage_counts_requests_limits_and_init_containers() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            ],
        }});
        let u = usage_of(pods(), &pod);
        assert_eq!(u["pods"], Quantity::count(1));
        assert_eq!(u["count/pods"], Quantity::count(1));
        assert_eq!(u["requests.cpu"].to_string(), "2");
        assert_eq!(u["cpu"].to_string(), "2");
        assert_eq!(u["requests.memory"].to_string(), "128Mi");
        assert_eq!(u["limits.memory"].to_string(), "128Mi");
        assert!(!u.contains_key("limits.cpu"));
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage_of(pods(), &done).is_empty());
        let deploys = find_resource("apps", "v1", "deployments").unwrap();
        assert_eq!(usage_of(deploys, &json!({})).keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        assert_eq!(resource_of("count/deployments.apps").map(|r| r.plural), Some("deployments"));
        assert_eq!(resource_of("requests.storage").map(|r| r.plural), Some("persistentvolumeclaims"));
    }

    #[test]
    fn quota_on_compute_demands_it_of_every_container() {
        let hard = quantities(Some(&json!({"requests.cpu": "1", "pods": "5"})));
        let pod = json!({"spec": {"containers": [{"name": "web"}, {"name": "side", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(missing_compute(&pod, &hard).as_deref(), Some("must specify requests.cpu for: web"));
        let hard = quantities(Some(&json!({"pods": "5"})));
        assert_eq!(missing_compute(&pod, &hard), None);
    }
}
