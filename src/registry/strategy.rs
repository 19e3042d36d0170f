//! The per-kind hooks the generic request path calls: defaulting, status handling,
//! validation, field selectors and allocations. Every hook has a sensible default so a
//! plain kind (ConfigMap-like) needs no code at all.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::allocator::Allocator;
use super::store::Claim;
use super::validation::NameRule;
use crate::handlers::status::{ApiResult, FieldError};

/// Keys an object takes (claims, written with it) and gives back (releases, deleted with it).
#[derive(Default)]
pub struct Allocations {
    pub claims: Vec<Claim>,
    pub releases: Vec<String>,
}

pub trait Strategy {
    /// The rule `metadata.name` must follow.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Whether `metadata.generation` counts spec changes for this kind.
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Fill defaults, on create and on update, as upstream's defaulting functions do.
    fn default(&self, _obj: &mut Value) {}

    /// The status an object starts with. `None` keeps what the client sent; the default
    /// clears it, as most upstream strategies do for kinds with a status subresource.
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        Some(json!({}))
    }

    /// Validate a new object (after defaulting).
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Validate an update: immutable fields and the like, plus `validate(new)`.
    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        self.validate(new)
    }

    /// Value of a kind-specific field selector label (`spec.nodeName` ...); `None`
    /// means the label is not supported for this kind.
    fn field_label(&self, _obj: &Value, _label: &str) -> Option<String> {
        None
    }

    /// Labels `field_label` answers, used to reject unsupported selectors before listing.
    fn field_labels(&self) -> &'static [&'static str] {
        &[]
    }

    /// Take what the object needs from shared pools (cluster IPs, node ports). `taken`
    /// holds keys known to be in use after a first attempt lost a race.
    fn allocate(
        &self,
        _obj: &mut Value,
        _old: Option<&Value>,
        _alloc: &Allocator,
        _taken: &HashSet<String>,
    ) -> ApiResult<Allocations> {
        Ok(Allocations::default())
    }

    /// Keys to delete together with the object.
    fn releases(&self, _obj: &Value, _alloc: &Allocator) -> Vec<String> {
        Vec::new()
    }
}
