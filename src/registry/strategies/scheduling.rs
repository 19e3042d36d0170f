//! scheduling.k8s.io/v1 PriorityClass: upstream's defaulting and validation. The two
//! system classes are the only names with the `system-` prefix, and user classes stay
//! at or below one billion, so nothing a user makes outranks the system's own pods.

use serde_json::{Value, json};

use super::core::default_field;
use crate::handlers::status::FieldError;
use crate::registry::meta;
use crate::registry::strategy::Strategy;

/// The highest value a class not made by the system may have.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";

/// The built-in classes: name, value, description.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

pub struct PriorityClassStrategy;
pub static PRIORITY_CLASS: PriorityClassStrategy = PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(value) = obj.get("value").and_then(Value::as_i64) else {
            return vec![FieldError::required("value", "")];
        };
        let name = meta::name(obj);
        if name.starts_with(SYSTEM_PREFIX) {
            if let Err(why) = known_system_class(name, value, obj) {
                let detail = format!(
                    "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"
                );
                errs.push(FieldError::forbidden("metadata.name", &detail));
            }
        } else if value > HIGHEST_USER_PRIORITY {
            let detail = format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}");
            errs.push(FieldError::forbidden("value", &detail));
        }
        let policy = obj.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("");
        if !matches!(policy, "PreemptLowerPriority" | "Never") {
            errs.push(FieldError::unsupported("preemptionPolicy", policy, &["Never", "PreemptLowerPriority"]));
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for field in ["value", "preemptionPolicy"] {
            if new.get(field) != old.get(field) {
                errs.push(FieldError::immutable(field, new.get(field).unwrap_or(&Value::Null)));
            }
        }
        errs
    }
}

/// Whether `name` is one of the system classes exactly as the system makes it.
fn known_system_class(name: &str, value: i64, obj: &Value) -> Result<(), String> {
    let Some((_, want, _)) = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, ..)| *n == name) else {
        return Err(format!("{name} is not a known system priority class"));
    };
    if value != *want {
        return Err(format!("value of {name} PriorityClass must be {want}"));
    }
    if obj.get("globalDefault").and_then(Value::as_bool).unwrap_or(false) {
        return Err(format!("globalDefault of {name} PriorityClass must be false"));
    }
    Ok(())
}

/// The system classes as objects, for start-up.
pub fn system_priority_classes() -> impl Iterator<Item = Value> {
    SYSTEM_PRIORITY_CLASSES.iter().map(|(name, value, description)| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
               "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"})
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64) -> Value {
        let mut c = json!({"metadata": {"name": name}, "value": value});
        PRIORITY_CLASS.default(&mut c);
        c
    }

    #[test]
    fn reserved_names_and_the_user_ceiling() {
        assert!(PRIORITY_CLASS.validate(&class("high", HIGHEST_USER_PRIORITY)).is_empty());
        assert_eq!(PRIORITY_CLASS.validate(&class("higher", HIGHEST_USER_PRIORITY + 1)).len(), 1);
        assert!(PRIORITY_CLASS.validate(&class("system-node-critical", 2_000_001_000)).is_empty());
        assert_eq!(PRIORITY_CLASS.validate(&class("system-node-critical", 5)).len(), 1);
        assert_eq!(PRIORITY_CLASS.validate(&class("system-mine", 5)).len(), 1);
        assert_eq!(PRIORITY_CLASS.validate(&json!({"metadata": {"name": "x"}})).len(), 1, "value is required");
    }

    #[test]
    fn value_and_policy_are_immutable() {
        let old = class("c", 10);
        assert!(PRIORITY_CLASS.validate_update(&class("c", 10), &old).is_empty());
        assert_eq!(PRIORITY_CLASS.validate_update(&class("c", 11), &old).len(), 1);
    }
}
