//! Evictions and PodDisruptionBudgets, as upstream's eviction REST: a pod that is not
//! running (Pending, Succeeded, Failed) or already being deleted may always go; a pod
//! covered by one budget goes only when the budget's status (kept by the disruption
//! controller) allows a disruption — the budget's `disruptionsAllowed` is decremented and
//! the pod recorded in `disruptedPods` by a compare-and-swap on the budget before the
//! delete, so two concurrent evictions cannot both spend the last disruption. Refusals
//! are 429 TooManyRequests with upstream's words; a pod under several budgets is a 500.

use serde_json::{Value, json};

use super::status::{ApiError, ApiResult};
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin, meta};

fn budgets() -> &'static ResourceDef {
    builtin("policy", "v1", "poddisruptionbudgets")
}

fn pod_ready(pod: &Value) -> bool {
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array);
    conditions.into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a policy/v1 selector (an empty one selects every pod) selects the labels.
fn selects(pdb: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let Some(selector) = pdb.pointer("/spec/selector") else { return false };
    let Ok(selector) =
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(selector.clone())
    else {
        return false;
    };
    let labels = labels.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
    crate::label_selector::selector_matches(&selector, &labels)
}

/// Let the eviction of `ns/name` proceed, or refuse it.
pub async fn charge(reg: &Registry, ns: &str, name: &str) -> ApiResult<()> {
    for _ in 0..5 {
        let pod = reg.get(builtin("", "v1", "pods"), ns, name).await?;
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
        if matches!(phase, "Pending" | "Succeeded" | "Failed")
            || meta::metadata(&pod).is_some_and(|m| m.contains_key("deletionTimestamp"))
        {
            return Ok(());
        }
        let labels =
            meta::metadata(&pod).and_then(|m| m.get("labels")).and_then(Value::as_object).cloned().unwrap_or_default();
        let page = reg.store.list(&reg.keys.collection(budgets(), ns), None, 0, 0).await?;
        let mut covering = Vec::new();
        for stored in &page.items {
            let pdb = Registry::decode_stored(budgets(), stored)?;
            if selects(&pdb, &labels) {
                covering.push(pdb);
            }
        }
        let mut pdb = match covering.len() {
            0 => return Ok(()),
            1 => covering.remove(0),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let status = pdb.get("status").cloned().unwrap_or(json!({}));
        let int = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
        let (healthy, desired) = (int("currentHealthy"), int("desiredHealthy"));
        // an unready pod does not count toward the budget: it may go when the budget is
        // met anyway (IfHealthyBudget) or always (AlwaysAllow)
        if !pod_ready(&pod) {
            let always = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
            if always || healthy >= desired {
                return Ok(());
            }
        }
        let generation = meta::metadata(&pdb).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(0);
        if int("observedGeneration") < generation {
            return Err(ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                &[("DisruptionBudget", "The disruption budget's status is not yet up to date".to_string())],
            ));
        }
        let allowed = int("disruptionsAllowed");
        if allowed <= 0 {
            let why = format!(
                "The disruption budget {} needs {desired} healthy pods and has {healthy} currently",
                meta::name(&pdb)
            );
            return Err(ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                &[("DisruptionBudget", why)],
            ));
        }
        pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
        pdb["status"]["disruptedPods"][name] = json!(meta::now_rfc3339());
        let pdb_name = meta::name(&pdb).to_string();
        match reg.update(budgets(), ns, &pdb_name, pdb, Part::Status, &WriteOpts::default()).await {
            Ok(_) => return Ok(()),
            // another eviction spent from the budget meanwhile: look again
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::too_many_requests("Cannot evict pod as it would violate the pod's disruption budget.", &[]))
}
