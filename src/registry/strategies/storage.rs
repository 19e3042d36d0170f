//! storage.k8s.io/v1 StorageClass: upstream's defaults (reclaimPolicy Delete,
//! volumeBindingMode Immediate) and the fields that may not change once set.

use serde_json::{Value, json};

use super::core::default_field;
use crate::handlers::status::FieldError;
use crate::registry::strategy::Strategy;

pub struct StorageClassStrategy;
pub static STORAGE_CLASS: StorageClassStrategy = StorageClassStrategy;

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
        let mode = obj.get("volumeBindingMode").and_then(Value::as_str).unwrap_or("Immediate");
        if !matches!(mode, "Immediate" | "WaitForFirstConsumer") {
            errs.push(FieldError::unsupported("volumeBindingMode", mode, &["Immediate", "WaitForFirstConsumer"]));
        }
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for field in ["provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"] {
            if new.get(field) != old.get(field) {
                errs.push(FieldError::forbidden(field, &format!("updates to {field} are forbidden.")));
            }
        }
        errs
    }
}
