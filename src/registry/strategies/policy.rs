//! policy/v1 PodDisruptionBudget: exactly one of `minAvailable` and `maxUnavailable`,
//! each a non-negative integer or a percentage; generation counts spec changes, so the
//! disruption controller's `observedGeneration` tells the eviction API whether the
//! status is current.

use serde_json::{Value, json};

use crate::handlers::status::FieldError;
use crate::registry::strategy::Strategy;

pub struct PodDisruptionBudgetStrategy;
pub static POD_DISRUPTION_BUDGET: PodDisruptionBudgetStrategy = PodDisruptionBudgetStrategy;

const POLICIES: &[&str] = &["IfHealthyBudget", "AlwaysAllow"];

/// An int-or-percent that must be ≥ 0 (a percentage at most 100%).
fn int_or_percent_problem(v: &Value) -> Option<&'static str> {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|i| i >= 0) => None,
        Value::Number(_) => Some("must be greater than or equal to 0"),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if (0..=100).contains(&p) => None,
            Some(_) => Some("must not be greater than 100%"),
            None => Some("a valid percent string must be a numeric string followed by an ending '%'"),
        },
        _ => Some("must be an integer or percentage"),
    }
}

impl Strategy for PodDisruptionBudgetStrategy {
    fn tracks_generation(&self) -> bool {
        true
    }

    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}))
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").cloned().unwrap_or(json!({}));
        let (min, max) = (spec.get("minAvailable"), spec.get("maxUnavailable"));
        if min.is_some() && max.is_some() {
            errs.push(FieldError::invalid("spec", &spec, "minAvailable and maxUnavailable cannot be both set"));
        }
        for (field, value) in [("spec.minAvailable", min), ("spec.maxUnavailable", max)] {
            if let Some(problem) = value.and_then(int_or_percent_problem) {
                errs.push(FieldError::invalid(field, value.unwrap_or(&Value::Null), problem));
            }
        }
        if let Some(policy) = spec.get("unhealthyPodEvictionPolicy").and_then(Value::as_str)
            && !POLICIES.contains(&policy)
        {
            errs.push(FieldError::unsupported("spec.unhealthyPodEvictionPolicy", policy, POLICIES));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_min_available_and_max_unavailable() {
        let pdb = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
        assert!(POD_DISRUPTION_BUDGET.validate(&pdb(json!({"minAvailable": 2}))).is_empty());
        assert!(POD_DISRUPTION_BUDGET.validate(&pdb(json!({"maxUnavailable": "25%"}))).is_empty());
        assert_eq!(POD_DISRUPTION_BUDGET.validate(&pdb(json!({"minAvailable": 1, "maxUnavailable": 1}))).len(), 1);
        assert_eq!(POD_DISRUPTION_BUDGET.validate(&pdb(json!({"minAvailable": "120%"}))).len(), 1);
        assert_eq!(POD_DISRUPTION_BUDGET.validate(&pdb(json!({"maxUnavailable": -1}))).len(), 1);
    }
}
