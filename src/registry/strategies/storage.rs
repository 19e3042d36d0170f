//! storage.k8s.io/v1 StorageClass: upstream's defaulting (reclaim policy Delete, binding
//! mode Immediate) and validation; the provisioner, parameters, reclaim policy and binding
//! mode cannot change after creation.

use serde_json::{Value, json};

use super::core::default_field;
use crate::handlers::status::FieldError;
use crate::registry::strategy::Strategy;

pub struct StorageClassStrategy;
pub static STORAGE_CLASS: StorageClassStrategy = StorageClassStrategy;

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

impl Strategy for StorageClassStrategy {
    fn default(&self, obj: &mut Value) {
        default_field(obj, "reclaimPolicy", json!("Delete"));
        default_field(obj, "volumeBindingMode", json!("Immediate"));
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj.get("provisioner").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required("provisioner", ""));
        }
        for (field, allowed) in [("reclaimPolicy", RECLAIM_POLICIES), ("volumeBindingMode", BINDING_MODES)] {
            let value = obj.get(field).and_then(Value::as_str).unwrap_or("");
            if !allowed.contains(&value) {
                errs.push(FieldError::unsupported(field, value, allowed));
            }
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for field in ["provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"] {
            if new.get(field) != old.get(field) {
                errs.push(FieldError::forbidden(field, "updates to this field are forbidden"));
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(v: Value) -> Value {
        let mut c = v;
        STORAGE_CLASS.default(&mut c);
        c
    }

    #[test]
    fn defaults_validation_and_immutable_fields() {
        let c = class(json!({"metadata": {"name": "fast"}, "provisioner": "example.com/csi"}));
        assert_eq!((c["reclaimPolicy"].as_str(), c["volumeBindingMode"].as_str()), (Some("Delete"), Some("Immediate")));
        assert!(STORAGE_CLASS.validate(&c).is_empty());
        assert_eq!(STORAGE_CLASS.validate(&class(json!({"metadata": {"name": "x"}}))).len(), 1);
        let bad = class(json!({"provisioner": "p", "volumeBindingMode": "Later"}));
        assert_eq!(STORAGE_CLASS.validate(&bad).len(), 1);
        let mut changed = c.clone();
        changed["volumeBindingMode"] = json!("WaitForFirstConsumer");
        assert_eq!(STORAGE_CLASS.validate_update(&changed, &c).len(), 1);
        let mut relabelled = c.clone();
        relabelled["allowVolumeExpansion"] = json!(true);
        assert!(STORAGE_CLASS.validate_update(&relabelled, &c).is_empty());
    }
}
