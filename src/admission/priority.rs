//! Priority: a pod's `spec.priority` and `spec.preemptionPolicy` come from its
//! PriorityClass (`priorityClassName`), or from the global default class, or are 0; a
//! pod may not state a priority of its own that differs. At most one PriorityClass is
//! the global default. Classes are read from the watch cache, then etcd (a class made a
//! moment ago may not be in the cache yet).

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::service_account::lookup;
use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;
use crate::registry::{ResourceDef, builtin, meta};

pub struct Priority {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(Priority { ctx: ctx.clone() })
}

fn priority_classes() -> &'static ResourceDef {
    builtin("scheduling.k8s.io", "v1", "priorityclasses")
}

/// What a pod gets: its class's name (when the default applies), value and policy.
struct Resolved {
    class: Option<String>,
    value: i64,
    policy: Option<String>,
}

impl Priority {
    /// The global default classes from the cache: the one of the lowest value wins, as
    /// upstream resolves several.
    fn global_default(&self, except: &str) -> Option<Value> {
        self.ctx
            .caches
            .objects(priority_classes(), "")
            .into_iter()
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true) && meta::name(c) != except)
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
    }

    async fn resolve(&self, a: &Attributes<'_>, named: &str) -> ApiResult<Resolved> {
        let class = if named.is_empty() {
            self.global_default("")
        } else {
            let found = lookup(&self.ctx, priority_classes(), "", named).await?;
            Some(found.ok_or_else(|| a.forbidden(&format!("no PriorityClass with name {named} was found")))?)
        };
        Ok(match class {
            Some(c) => Resolved {
                class: named.is_empty().then(|| meta::name(&c).to_string()),
                value: c.get("value").and_then(Value::as_i64).unwrap_or(0),
                policy: c.get("preemptionPolicy").and_then(Value::as_str).map(str::to_string),
            },
            None => Resolved { class: None, value: 0, policy: None },
        })
    }

    async fn admit_pod(&self, a: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
        let named = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or("").to_string();
        let resolved = self.resolve(a, &named).await?;
        let spec = &mut pod["spec"];
        if let Some(given) = spec.get("priority").and_then(Value::as_i64)
            && given != resolved.value
        {
            return Err(a.forbidden(&format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
                resolved.value
            )));
        }
        let policy = resolved.policy.unwrap_or_else(|| "PreemptLowerPriority".to_string());
        if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
            && given != policy
        {
            return Err(a.forbidden(&format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
        if let Some(class) = resolved.class {
            spec["priorityClassName"] = json!(class);
        }
        spec["priority"] = json!(resolved.value);
        spec["preemptionPolicy"] = json!(policy);
        Ok(())
    }

    fn admit_class(&self, a: &Attributes<'_>, class: &Value) -> ApiResult<()> {
        if class.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        match self.global_default(meta::name(class)) {
            Some(other) => Err(a.forbidden(&format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                meta::name(&other)
            ))),
            None => Ok(()),
        }
    }
}

impl Plugin for Priority {
    fn handles(&self, a: &Attributes) -> bool {
        let pod_create = a.operation == Operation::Create && a.is("", "pods") && a.subresource.is_empty();
        let class_write = a.operation != Operation::Delete && a.is("scheduling.k8s.io", "priorityclasses");
        pod_create || class_write
    }

    fn mutate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.is("", "pods") {
                return self.admit_pod(a, o.obj).await;
            }
            Ok(())
        })
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if a.is("scheduling.k8s.io", "priorityclasses") {
                return self.admit_class(a, o.obj);
            }
            Ok(())
        })
    }
}
