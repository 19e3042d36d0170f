//! rbac.authorization.k8s.io/v1: rules of Roles and ClusterRoles, subjects and the
//! immutable roleRef of bindings, as upstream's RBAC validation has them.

use serde_json::{Value, json};

use crate::handlers::status::FieldError;
use crate::registry::strategy::Strategy;
use crate::registry::validation::NameRule;

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Roles (namespaced: no non-resource URLs) and ClusterRoles.
pub struct RoleStrategy {
    namespaced: bool,
}

pub static ROLE: RoleStrategy = RoleStrategy { namespaced: true };
pub static CLUSTER_ROLE: RoleStrategy = RoleStrategy { namespaced: false };

impl Strategy for RoleStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (i, rule) in array(obj, "rules").iter().enumerate() {
            validate_rule(rule, &format!("rules[{i}]"), self.namespaced, &mut errs);
        }
        if let Some(agg) = obj.get("aggregationRule").filter(|a| !a.is_null())
            && array(agg, "clusterRoleSelectors").is_empty()
        {
            let why = "at least one clusterRoleSelector required if aggregationRule is non-nil";
            errs.push(FieldError::required("aggregationRule.clusterRoleSelectors", why));
        }
        errs
    }
}

fn array<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn validate_rule(rule: &Value, path: &str, namespaced: bool, errs: &mut Vec<FieldError>) {
    if array(rule, "verbs").is_empty() {
        errs.push(FieldError::required(format!("{path}.verbs"), "verbs must contain at least one value"));
    }
    if !array(rule, "nonResourceURLs").is_empty() {
        let urls = rule["nonResourceURLs"].clone();
        if namespaced {
            let why = "namespaced rules cannot apply to non-resource URLs";
            errs.push(FieldError::invalid(format!("{path}.nonResourceURLs"), &urls, why));
        }
        if !array(rule, "apiGroups").is_empty() || !array(rule, "resources").is_empty() {
            let why = "rules cannot apply to both regular resources and non-resource URLs";
            errs.push(FieldError::invalid(format!("{path}.nonResourceURLs"), &urls, why));
        }
        return;
    }
    if array(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if array(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// RoleBindings (may refer to a Role or a ClusterRole) and ClusterRoleBindings.
pub struct BindingStrategy {
    namespaced: bool,
}

pub static ROLE_BINDING: BindingStrategy = BindingStrategy { namespaced: true };
pub static CLUSTER_ROLE_BINDING: BindingStrategy = BindingStrategy { namespaced: false };

impl Strategy for BindingStrategy {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn initial_status(&self, _obj: &Value) -> Option<Value> {
        None
    }
    /// Users and groups are RBAC subjects; their apiGroup may be left out.
    fn default(&self, obj: &mut Value) {
        let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) else { return };
        for s in subjects {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            let group_missing = s.get("apiGroup").and_then(Value::as_str).unwrap_or("").is_empty();
            if (kind == "User" || kind == "Group") && group_missing {
                s["apiGroup"] = json!(RBAC_GROUP);
            }
        }
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.validate_role_ref(obj, &mut errs);
        for (i, subject) in array(obj, "subjects").iter().enumerate() {
            self.validate_subject(subject, &format!("subjects[{i}]"), &mut errs);
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.get("roleRef") != old.get("roleRef") {
            errs.push(FieldError::invalid("roleRef", &new["roleRef"], "cannot change roleRef"));
        }
        errs
    }
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

impl BindingStrategy {
    fn validate_role_ref(&self, obj: &Value, errs: &mut Vec<FieldError>) {
        let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
        let group = text(role_ref, "apiGroup");
        if group != RBAC_GROUP {
            errs.push(FieldError::unsupported("roleRef.apiGroup", group, &[RBAC_GROUP]));
        }
        let kinds: &[&str] = if self.namespaced { &["ClusterRole", "Role"] } else { &["ClusterRole"] };
        let kind = text(role_ref, "kind");
        if !kinds.contains(&kind) {
            errs.push(FieldError::unsupported("roleRef.kind", kind, kinds));
        }
        if text(role_ref, "name").is_empty() {
            errs.push(FieldError::required("roleRef.name", ""));
        }
    }

    fn validate_subject(&self, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
        if text(s, "name").is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        let group = text(s, "apiGroup");
        match text(s, "kind") {
            "ServiceAccount" => {
                if !group.is_empty() {
                    errs.push(FieldError::unsupported(format!("{path}.apiGroup"), group, &[""]));
                }
                if !self.namespaced && text(s, "namespace").is_empty() {
                    errs.push(FieldError::required(format!("{path}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::unsupported(format!("{path}.apiGroup"), group, &[RBAC_GROUP]));
                }
            }
            other => {
                let kinds = &["ServiceAccount", "User", "Group"];
                errs.push(FieldError::unsupported(format!("{path}.kind"), other, kinds));
            }
        }
    }
}

/// authorization.k8s.io reviews: never stored, answered by the authorizers.
pub struct Review;
impl Strategy for Review {}
pub static REVIEW: Review = Review;
