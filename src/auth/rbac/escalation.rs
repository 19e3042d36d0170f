//! Escalation prevention: nobody grants permissions they do not hold. Writing a Role or
//! ClusterRole needs its rules (or the `escalate` verb on it); writing a binding needs
//! the rules of the role it refers to (or the `bind` verb on that role). The privileged
//! group may do either.

use serde_json::Value;

use super::rule::{PolicyRule, uncovered};
use super::{GROUP, rules_of};
use crate::auth::authz::{Authorizer, Chain, MASTERS};
use crate::auth::request::{Attributes, Decision, UserInfo};
use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::{ResourceDef, meta};

/// Check a create or update of an RBAC object by `user`. Other kinds pass.
pub fn check(chain: &Chain, user: &UserInfo, res: &ResourceDef, namespace: &str, obj: &Value) -> ApiResult<()> {
    if res.group != GROUP || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let name = meta::name(obj);
    match res.plural {
        "roles" | "clusterroles" => {
            if allowed(chain, user, "escalate", res.plural, namespace, name) {
                return Ok(());
            }
            confirm_held(chain, user, res, namespace, name, &rules_of(obj))
        }
        "rolebindings" | "clusterrolebindings" => check_binding(chain, user, res, namespace, obj),
        _ => Ok(()),
    }
}

fn check_binding(chain: &Chain, user: &UserInfo, res: &ResourceDef, namespace: &str, obj: &Value) -> ApiResult<()> {
    let kind = meta::str_at(obj, "roleRef.kind").unwrap_or("");
    let role = meta::str_at(obj, "roleRef.name").unwrap_or("");
    let role_resource = if kind == "Role" { "roles" } else { "clusterroles" };
    if allowed(chain, user, "bind", role_resource, namespace, role) {
        return Ok(());
    }
    let name = meta::name(obj);
    let role_ns = if kind == "Role" { namespace } else { "" };
    let Some(rules) = chain.rbac.role_rules(kind, role_ns, role) else {
        let missing = ApiError::not_found(GROUP, role_resource, role);
        return Err(ApiError::forbidden_request(res.group, res.plural, name, &missing.message));
    };
    confirm_held(chain, user, res, namespace, name, &rules)
}

/// Whether the authorizers allow `verb` on the named role.
fn allowed(chain: &Chain, user: &UserInfo, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
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
    chain.authorize(user, &attrs) == Decision::Allow
}

/// Forbidden unless `user` already holds every rule of `wanted` where it would apply.
fn confirm_held(
    chain: &Chain,
    user: &UserInfo,
    res: &ResourceDef,
    namespace: &str,
    name: &str,
    wanted: &[PolicyRule],
) -> ApiResult<()> {
    let held = chain.rbac.rules_for(user, namespace);
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
