//! Escalation prevention: nobody grants permissions they do not hold. Writing a Role or
//! ClusterRole needs its rules (or the `escalate` verb on it); writing a binding needs
//! the rules of the role it refers to (or the `bind` verb on that role). The privileged
//! group may do either.

use serde_json::Value;

use super::rule::{PolicyRule, uncovered};
use super::{GROUP, RuleResolver, rules_of};
use crate::auth::authz::{Authorizer, MASTERS};
use crate::auth::request::{Attributes, Decision, UserInfo};
use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::{ResourceDef, meta};

/// Who is asked: the authorizers (for the `escalate` and `bind` verbs) and the rules
/// behind RBAC.
pub struct Judges<'a> {
    pub authorizer: &'a dyn Authorizer,
    pub rules: &'a dyn RuleResolver,
}

/// Check a create or update of an RBAC object by `user`. Other kinds pass.
pub fn check(j: &Judges, user: &UserInfo, res: &ResourceDef, namespace: &str, obj: &Value) -> ApiResult<()> {
    if res.group != GROUP || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let name = meta::name(obj);
    match res.plural {
        "roles" | "clusterroles" => {
            if allowed(j, user, "escalate", res.plural, namespace, name) {
                return Ok(());
            }
            // aggregated rules are whatever other roles hold: only escalate may ask for them
            if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let why = "must have cluster-admin privileges to use the aggregationRule";
                return Err(ApiError::forbidden_request(res.group, res.plural, name, why));
            }
            confirm_held(j, user, res, namespace, name, &rules_of(obj))
        }
        "rolebindings" | "clusterrolebindings" => check_binding(j, user, res, namespace, obj),
        _ => Ok(()),
    }
}

fn check_binding(j: &Judges, user: &UserInfo, res: &ResourceDef, namespace: &str, obj: &Value) -> ApiResult<()> {
    let kind = meta::str_at(obj, "roleRef.kind").unwrap_or("");
    let role = meta::str_at(obj, "roleRef.name").unwrap_or("");
    let role_resource = if kind == "Role" { "roles" } else { "clusterroles" };
    if allowed(j, user, "bind", role_resource, namespace, role) {
        return Ok(());
    }
    let name = meta::name(obj);
    let role_ns = if kind == "Role" { namespace } else { "" };
    let Some(rules) = j.rules.role_rules(kind, role_ns, role) else {
        let missing = ApiError::not_found(GROUP, role_resource, role);
        return Err(ApiError::forbidden_request(res.group, res.plural, name, &missing.message));
    };
    confirm_held(j, user, res, namespace, name, &rules)
}

/// Whether the authorizers allow `verb` on the named role.
fn allowed(j: &Judges, user: &UserInfo, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
    let attrs = Attributes {
        verb: verb.into(),
        resource_request: true,
        api_group: GROUP.into(),
        api_version: "v1".into(),
        namespace: namespace.into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    };
    j.authorizer.authorize(user, &attrs) == Decision::Allow
}

/// Forbidden unless `user` already holds every rule of `wanted` where it would apply.
fn confirm_held(
    j: &Judges,
    user: &UserInfo,
    res: &ResourceDef,
    namespace: &str,
    name: &str,
    wanted: &[PolicyRule],
) -> ApiResult<()> {
    let held = j.rules.rules_for(user, namespace);
    let missing = uncovered(&held, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden_request(res.group, res.plural, name, &not_held_message(user, &missing)))
}

/// Upstream's wording: the user, its groups, then each missing rule on its own line.
pub fn not_held_message(user: &UserInfo, missing: &[PolicyRule]) -> String {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let rules: Vec<String> = missing.iter().map(PolicyRule::compact).collect();
    format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rules.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::builtin;

    /// bob holds `get pods` in ns; the role `reader` grants exactly that.
    struct Held;
    impl RuleResolver for Held {
        fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
            match (user.name.as_str(), namespace) {
                ("bob", "ns") => vec![get_pods()],
                _ => Vec::new(),
            }
        }
        fn role_rules(&self, _kind: &str, _namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
            match name {
                "reader" => Some(vec![get_pods()]),
                "admin" => Some(vec![PolicyRule { verbs: vec!["*".into()], ..get_pods() }]),
                _ => None,
            }
        }
    }

    /// Allows only `bind` on the ClusterRole `admin`.
    struct BindAdmin;
    impl Authorizer for BindAdmin {
        fn authorize(&self, _: &UserInfo, a: &Attributes) -> Decision {
            match (a.verb.as_str(), a.name.as_str()) {
                ("bind", "admin") => Decision::Allow,
                _ => Decision::NoOpinion(String::new()),
            }
        }
    }

    fn get_pods() -> PolicyRule {
        PolicyRule {
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }
    }

    fn bob() -> UserInfo {
        UserInfo { name: "bob".into(), groups: vec!["system:authenticated".into()], ..Default::default() }
    }

    fn run(plural: &str, obj: serde_json::Value) -> ApiResult<()> {
        let res = builtin(GROUP, "v1", plural);
        let judges = Judges { authorizer: &BindAdmin, rules: &Held };
        check(&judges, &bob(), res, if res.namespaced { "ns" } else { "" }, &obj)
    }

    fn binding_to(role: &str) -> serde_json::Value {
        json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": role}})
    }

    #[test]
    fn roles_only_with_rules_held() {
        let role = |verb: &str| json!({"metadata": {"name": "r"}, "rules": [{"verbs": [verb], "apiGroups": [""], "resources": ["pods"]}]});
        assert!(run("roles", role("get")).is_ok());
        let err = run("roles", role("delete")).unwrap_err();
        assert_eq!(err.code, http::StatusCode::FORBIDDEN);
        assert_eq!(
            err.message,
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"bob\" (groups=[\"system:authenticated\"]) \
             is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        );
        // cluster scope: bob holds nothing there
        assert!(run("clusterroles", role("get")).is_err());
        let aggregated = json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{}]}});
        let err = run("clusterroles", aggregated).unwrap_err();
        assert!(
            err.message.ends_with("must have cluster-admin privileges to use the aggregationRule"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bindings_need_the_role_or_bind() {
        assert!(run("rolebindings", binding_to("reader")).is_ok(), "bob holds what reader grants");
        assert!(run("rolebindings", binding_to("admin")).is_ok(), "bob may bind admin");
        let err = run("clusterrolebindings", binding_to("reader")).unwrap_err();
        assert!(err.message.contains("not currently held"), "{}", err.message);
        let err = run("rolebindings", binding_to("missing")).unwrap_err();
        assert_eq!(err.code, http::StatusCode::FORBIDDEN);
        assert!(
            err.message.contains("clusterroles.rbac.authorization.k8s.io \"missing\" not found"),
            "{}",
            err.message
        );
    }

    #[test]
    fn masters_and_other_kinds_pass() {
        let root = UserInfo { name: "root".into(), groups: vec![MASTERS.into()], ..Default::default() };
        let res = builtin(GROUP, "v1", "clusterrolebindings");
        let judges = Judges { authorizer: &BindAdmin, rules: &Held };
        assert!(check(&judges, &root, res, "", &binding_to("anything")).is_ok());
        let pods = builtin("", "v1", "pods");
        assert!(check(&judges, &bob(), pods, "ns", &json!({})).is_ok());
    }
}
