//! Label and field selectors bound to a resource: used by lists and watches alike.

use serde_json::Value;

use super::selectors::{FieldSelector, LabelSelector};
use super::{ResourceDef, meta, rawjson};
use crate::handlers::status::{ApiError, ApiResult};

pub struct Filter {
    res: &'static ResourceDef,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn new(res: &'static ResourceDef, labels: LabelSelector, fields: FieldSelector) -> ApiResult<Filter> {
        for req in &fields.reqs {
            let generic = matches!(req.field.as_str(), "metadata.name" | "metadata.namespace");
            if !generic && !res.strategy.field_labels().contains(&req.field.as_str()) {
                return Err(ApiError::bad_request(format!("field label not supported: {}", req.field)));
            }
        }
        Ok(Filter { res, labels, fields })
    }

    /// No selectors: every object of `res`.
    pub fn everything(res: &'static ResourceDef) -> Filter {
        Filter { res, labels: LabelSelector::default(), fields: FieldSelector::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn pinned_name(&self) -> Option<&str> {
        self.fields.pinned_name()
    }

    /// Needs more than metadata to decide (a kind-specific field selector).
    fn needs_full_object(&self) -> bool {
        self.fields.reqs.iter().any(|r| !r.field.starts_with("metadata."))
    }

    /// Match on parts parsed ahead of time (the watch cache keeps them per object):
    /// the labels, and a lookup for field labels (`metadata.name`, `spec.nodeName` ...).
    pub fn matches_with(
        &self,
        labels: Option<&serde_json::Map<String, Value>>,
        field: impl Fn(&str) -> Option<String>,
    ) -> bool {
        self.labels.matches(labels) && self.fields.matches(field)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(meta::labels(obj))
            && self.fields.matches(|field| match field {
                "metadata.name" => Some(meta::name(obj).to_string()),
                "metadata.namespace" => Some(meta::namespace(obj).to_string()),
                other => self.res.strategy.field_label(obj, other),
            })
    }

    /// Match on stored bytes, decoding only `metadata` when that is enough.
    pub fn matches_raw(&self, raw: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        if self.needs_full_object() {
            return serde_json::from_slice::<Value>(raw).is_ok_and(|o| self.matches(&o));
        }
        let Some((start, end)) = rawjson::top_level_value(raw, b"metadata") else { return false };
        match serde_json::from_slice::<Value>(&raw[start..end]) {
            Ok(metadata) => {
                let wrapper = serde_json::json!({ "metadata": metadata });
                self.matches(&wrapper)
            }
            Err(_) => false,
        }
    }
}
