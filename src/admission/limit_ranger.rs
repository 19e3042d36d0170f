//! LimitRanger: the LimitRanges of a namespace default the requests and limits of a new
//! pod's containers (noting what they set in the `kubernetes.io/limit-ranger`
//! annotation) and bound them: per Container (min, max, maxLimitRequestRatio), per Pod
//! (the containers' sum) and per PersistentVolumeClaim (storage), with upstream's
//! messages. LimitRanges are read from the watch cache; items get upstream's LimitRange
//! defaulting here (default ← max, defaultRequest ← default, then ← min).

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::resource_quota::{Usage, policies_in, quantities};
use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;
use crate::quantity::Quantity;
use crate::registry::{ResourceDef, builtin, meta};

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

pub struct LimitRanger {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(LimitRanger { ctx: ctx.clone() })
}

fn limit_ranges() -> &'static ResourceDef {
    builtin("", "v1", "limitranges")
}

/// One `spec.limits` item, with upstream's defaulting applied.
#[derive(Debug, Default)]
pub struct Item {
    pub kind: String,
    pub min: Usage,
    pub max: Usage,
    pub default: Usage,
    pub default_request: Usage,
    pub ratio: Usage,
}

impl Item {
    pub fn of(v: &Value) -> Item {
        let q = |f: &str| quantities(v.get(f));
        let mut item = Item {
            kind: v.get("type").and_then(Value::as_str).unwrap_or_default().to_string(),
            min: q("min"),
            max: q("max"),
            default: q("default"),
            default_request: q("defaultRequest"),
            ratio: q("maxLimitRequestRatio"),
        };
        if item.kind == "Container" {
            for (k, v) in &item.max {
                item.default.entry(k.clone()).or_insert(*v);
            }
            for (k, v) in item.default.iter().chain(&item.min) {
                item.default_request.entry(k.clone()).or_insert(*v);
            }
        }
        item
    }
}

/// The items of every LimitRange in the namespace.
async fn items(ctx: &Context, ns: &str) -> ApiResult<Vec<Item>> {
    let ranges = policies_in(ctx, limit_ranges(), ns).await?;
    let specs =
        ranges.iter().flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).cloned().unwrap_or_default());
    Ok(specs.map(|i| Item::of(&i)).collect())
}

/// Fill the containers' missing requests and limits from the Container items' defaults;
/// returns the annotation text (empty when nothing was set).
pub fn apply_defaults(pod: &mut Value, items: &[Item]) -> String {
    let mut notes = Vec::new();
    for (list, what) in [("initContainers", "init container"), ("containers", "container")] {
        let Some(containers) = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let (mut requests, mut limits) = (Vec::new(), Vec::new());
            for item in items.iter().filter(|i| i.kind == "Container") {
                requests.extend(set_missing(c, "requests", &item.default_request));
                limits.extend(set_missing(c, "limits", &item.default));
            }
            for (set, kind) in [(requests, "request"), (limits, "limit")] {
                if !set.is_empty() {
                    let mut set = set;
                    set.sort();
                    notes.push(format!("{} {kind} for {what} {name}", set.join(", ")));
                }
            }
        }
    }
    notes.join("; ")
}

/// Set each resource of `defaults` the container's `resources.<kind>` lacks; the names set.
fn set_missing(c: &mut Value, kind: &str, defaults: &Usage) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let Some(container) = c.as_object_mut() else { return Vec::new() };
    let resources = container.entry("resources").or_insert_with(|| json!({}));
    let Some(resources) = resources.as_object_mut() else { return Vec::new() };
    let list = resources.entry(kind).or_insert_with(|| json!({}));
    let Some(list) = list.as_object_mut() else { return Vec::new() };
    let mut set = Vec::new();
    for (name, q) in defaults {
        if !list.contains_key(name) {
            list.insert(name.clone(), json!(q.to_string()));
            set.push(name.clone());
        }
    }
    set
}

/// Upstream's min / max / ratio checks of one request and limit list.
fn check(kind: &str, item: &Item, requests: &Usage, limits: &Usage, errs: &mut Vec<String>) {
    for (r, min) in &item.min {
        match (requests.get(r), limits.get(r)) {
            (None, _) => errs.push(format!("minimum {r} usage per {kind} is {min}.  No request is specified")),
            (Some(req), _) if req < min => {
                errs.push(format!("minimum {r} usage per {kind} is {min}, but request is {req}"))
            }
            (_, Some(lim)) if lim < min => {
                errs.push(format!("minimum {r} usage per {kind} is {min}, but limit is {lim}"))
            }
            _ => {}
        }
    }
    for (r, max) in &item.max {
        match (requests.get(r), limits.get(r)) {
            (_, None) => errs.push(format!("maximum {r} usage per {kind} is {max}.  No limit is specified")),
            (_, Some(lim)) if lim > max => {
                errs.push(format!("maximum {r} usage per {kind} is {max}, but limit is {lim}"))
            }
            (Some(req), _) if req > max => {
                errs.push(format!("maximum {r} usage per {kind} is {max}, but request is {req}"))
            }
            _ => {}
        }
    }
    for (r, ratio) in &item.ratio {
        let (req, lim) = (requests.get(r).filter(|q| !q.is_zero()), limits.get(r).filter(|q| !q.is_zero()));
        let Some(req) = req else {
            errs.push(format!(
                "{r} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            ));
            continue;
        };
        let Some(lim) = lim else {
            errs.push(format!(
                "{r} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            ));
            continue;
        };
        let observed = lim.ratio(*req);
        if observed > ratio.ratio(Quantity::count(1)) {
            errs.push(format!(
                "{r} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
            ));
        }
    }
}

/// The sum of the containers' lists (`kind`: requests or limits), or the largest init
/// container's where that is more.
fn pod_total(pod: &Value, kind: &str) -> Usage {
    let of = |list: &str| -> Vec<Usage> {
        let containers = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array);
        containers.into_iter().flatten().map(|c| quantities(c.pointer(&format!("/resources/{kind}")))).collect()
    };
    let mut total = Usage::new();
    for u in of("containers") {
        for (k, v) in u {
            let sum = total.get(&k).copied().unwrap_or_default().add(v);
            total.insert(k, sum);
        }
    }
    for u in of("initContainers") {
        for (k, v) in u {
            let max = total.get(&k).copied().unwrap_or_default().max(v);
            total.insert(k, max);
        }
    }
    total
}

/// Every violation of `items` by a pod or claim, in upstream's words.
pub fn violations(res: &ResourceDef, obj: &Value, items: &[Item]) -> Vec<String> {
    let mut errs = Vec::new();
    for item in items {
        match (res.plural, item.kind.as_str()) {
            ("pods", "Container") => {
                for list in ["initContainers", "containers"] {
                    for c in obj.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
                        let (req, lim) =
                            (quantities(c.pointer("/resources/requests")), quantities(c.pointer("/resources/limits")));
                        check("Container", item, &req, &lim, &mut errs);
                    }
                }
            }
            ("pods", "Pod") => check("Pod", item, &pod_total(obj, "requests"), &pod_total(obj, "limits"), &mut errs),
            ("persistentvolumeclaims", "PersistentVolumeClaim") => {
                let (req, lim) = (
                    quantities(obj.pointer("/spec/resources/requests")),
                    quantities(obj.pointer("/spec/resources/limits")),
                );
                check("PersistentVolumeClaim", item, &req, &lim, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

impl Plugin for LimitRanger {
    fn handles(&self, a: &Attributes) -> bool {
        a.operation == Operation::Create
            && a.subresource.is_empty()
            && (a.is("", "pods") || a.is("", "persistentvolumeclaims") || a.is("", "limitranges"))
    }

    fn mutate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.is("", "limitranges") {
                // pods created next must see it, cached or not
                self.ctx.quota.created(limit_ranges(), a.namespace);
                return Ok(());
            }
            if !a.is("", "pods") {
                return Ok(());
            }
            let items = items(&self.ctx, a.namespace).await?;
            let note = apply_defaults(o.obj, &items);
            if !note.is_empty() {
                let m = meta::metadata_mut(o.obj);
                let annotations = m.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
                if let Some(map) = annotations.as_object_mut() {
                    map.insert(ANNOTATION.into(), json!(format!("LimitRanger plugin set: {note}")));
                }
            }
            Ok(())
        })
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.is("", "limitranges") {
                return Ok(());
            }
            let errs = violations(a.res, o.obj, &items(&self.ctx, a.namespace).await?);
            match errs.len() {
                0 => Ok(()),
                1 => Err(a.forbidden(&errs[0])),
                _ => Err(a.forbidden(&format!("[{}]", errs.join(", ")))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceDef {
        builtin("", "v1", "pods")
    }

    #[test]
    fn defaults_fill_what_containers_lack_and_are_noted() {
        let item = Item::of(
            &json!({"type": "Container", "max": {"cpu": "1"}, "defaultRequest": {"memory": "64Mi"}, "default": {"memory": "128Mi"}}),
        );
        assert_eq!(item.default["cpu"].to_string(), "1", "default limit ← max");
        assert_eq!(item.default_request["cpu"].to_string(), "1", "default request ← default limit");
        let mut pod = json!({"spec": {"containers": [
            {"name": "web", "resources": {"limits": {"cpu": "500m"}}},
            {"name": "side"},
        ]}});
        let note = apply_defaults(&mut pod, &[item]);
        assert_eq!(
            note,
            "cpu, memory request for container web; memory limit for container web; cpu, memory request for container side; cpu, memory limit for container side"
        );
        assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert_eq!(pod["spec"]["containers"][1]["resources"]["requests"], json!({"cpu": "1", "memory": "64Mi"}));
    }

    #[test]
    fn bounds_in_upstreams_words() {
        let items = [
            Item::of(
                &json!({"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "100Mi"}, "maxLimitRequestRatio": {"cpu": "2"}}),
            ),
            Item::of(&json!({"type": "Pod", "max": {"memory": "1Gi"}})),
        ];
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "50Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}},
        ]}});
        assert_eq!(
            violations(pods(), &pod, &items),
            [
                "minimum memory usage per Container is 100Mi, but request is 50Mi",
                "maximum cpu usage per Container is 500m, but limit is 1",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000",
                "maximum memory usage per Pod is 1Gi, but limit is 2Gi",
            ]
        );
        let fine = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "100Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}},
        ]}});
        assert!(violations(pods(), &fine, &items).is_empty());
    }
}
