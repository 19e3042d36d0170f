//! Authorization: the `--authorization-mode` chain (AlwaysAllow, AlwaysDeny, Node, RBAC),
//! asked in order after the privileged group, and the 403 a refused request gets.

pub mod node;

use std::sync::Arc;

use http::Extensions;

use super::rbac::rule::PolicyRule;
use super::rbac::{Rbac, RuleResolver};
use super::request::{Attributes, Decision, UserInfo};
use crate::handlers::status::ApiError;

/// Upstream's privileged group: allowed everything, whatever the modes.
pub const MASTERS: &str = "system:masters";

/// One authorizer of the chain.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision;

    /// The decision with a reason for an allow too (SubjectAccessReview reports it).
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (Decision, String) {
        let d = self.authorize(user, attrs);
        let reason = match &d {
            Decision::Allow => String::new(),
            Decision::Deny(r) | Decision::NoOpinion(r) => r.clone(),
        };
        (d, reason)
    }

    /// The rules `user` holds in `namespace`, for SelfSubjectRulesReview; None when this
    /// authorizer cannot list what it allows (the answer is then incomplete).
    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> Option<Vec<PolicyRule>> {
        None
    }
}

fn everything() -> Vec<PolicyRule> {
    let all = || vec!["*".to_string()];
    vec![
        PolicyRule { verbs: all(), api_groups: all(), resources: all(), ..Default::default() },
        PolicyRule { verbs: all(), non_resource_urls: all(), ..Default::default() },
    ]
}

/// `--authorization-mode=AlwaysAllow`, the default.
pub struct AlwaysAllow;
impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
        Decision::Allow
    }
    fn rules_for(&self, _: &UserInfo, _: &str) -> Option<Vec<PolicyRule>> {
        Some(everything())
    }
}

struct AlwaysDeny;
impl Authorizer for AlwaysDeny {
    fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
        Decision::NoOpinion("Everything is forbidden.".into())
    }
    fn rules_for(&self, _: &UserInfo, _: &str) -> Option<Vec<PolicyRule>> {
        Some(Vec::new())
    }
}

/// The privileged group, asked before the configured modes.
struct Privileged;
impl Authorizer for Privileged {
    fn authorize(&self, user: &UserInfo, _: &Attributes) -> Decision {
        match user.groups.iter().any(|g| g == MASTERS) {
            true => Decision::Allow,
            false => Decision::NoOpinion(String::new()),
        }
    }
    /// Upstream lists no rules for the privileged group itself (RBAC's cluster-admin
    /// binding does), so a rules review does not show them twice.
    fn rules_for(&self, _: &UserInfo, _: &str) -> Option<Vec<PolicyRule>> {
        Some(Vec::new())
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        self.decide(user, attrs).0
    }
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (Decision, String) {
        Rbac::decide(self, user, attrs)
    }
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        Some(RuleResolver::rules_for(self, user, namespace))
    }
}

/// Adapts the shared RBAC evaluator to a chain entry.
struct Shared(Arc<dyn Authorizer>);
impl Authorizer for Shared {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        self.0.authorize(user, attrs)
    }
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (Decision, String) {
        self.0.decide(user, attrs)
    }
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        self.0.rules_for(user, namespace)
    }
}

pub const MODES: &[&str] = &["AlwaysAllow", "AlwaysDeny", "Node", "RBAC"];

/// The authorizers behind the RBAC and Node modes.
pub struct Backends {
    pub rbac: Arc<dyn Authorizer>,
    pub node: Arc<dyn Authorizer>,
}

/// The authorizers of `--authorization-mode`, in order.
pub struct Chain {
    authorizers: Vec<Box<dyn Authorizer>>,
    /// Only AlwaysAllow: nothing to ask (the default, and the fast path).
    allow_all: bool,
}

impl Chain {
    /// `backends` answer for the RBAC and Node modes (both read the watch caches).
    pub fn new(modes: &[String], backends: Backends) -> anyhow::Result<Chain> {
        let mut authorizers: Vec<Box<dyn Authorizer>> = vec![Box::new(Privileged)];
        for mode in modes {
            authorizers.push(match mode.as_str() {
                "AlwaysAllow" => Box::new(AlwaysAllow),
                "AlwaysDeny" => Box::new(AlwaysDeny),
                "RBAC" => Box::new(Shared(backends.rbac.clone())),
                "Node" => Box::new(Shared(backends.node.clone())),
                other => anyhow::bail!("unknown authorization mode {other:?}: supported modes are {MODES:?}"),
            });
        }
        if modes.is_empty() {
            anyhow::bail!("--authorization-mode must name at least one mode");
        }
        let allow_all = modes.first().is_some_and(|m| m == "AlwaysAllow");
        Ok(Chain { authorizers, allow_all })
    }

    pub fn allows_everything(&self) -> bool {
        self.allow_all
    }

    /// Every rule the modes grant `user` in `namespace`, and whether some mode could not
    /// list what it allows (the answer is then incomplete).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, bool) {
        let mut rules = Vec::new();
        let mut incomplete = false;
        for a in &self.authorizers {
            match a.rules_for(user, namespace) {
                Some(r) => rules.extend(r),
                None => incomplete = true,
            }
        }
        (rules, incomplete)
    }
}

impl Authorizer for Chain {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        self.decide(user, attrs).0
    }

    /// The first allow or deny decides; otherwise no opinion, with every reason given.
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (Decision, String) {
        if self.allow_all {
            return (Decision::Allow, String::new());
        }
        let mut reasons: Vec<String> = Vec::new();
        for a in &self.authorizers {
            match a.decide(user, attrs) {
                (Decision::NoOpinion(r), _) => reasons.extend(Some(r).filter(|r| !r.is_empty())),
                decided => return decided,
            }
        }
        let reason = reasons.join("\n");
        (Decision::NoOpinion(reason.clone()), reason)
    }
}

/// Who a request is from: what authentication attached, else (no authenticator yet)
/// the development superuser.
pub fn user_of(extensions: &Extensions) -> Arc<UserInfo> {
    extensions.get::<Arc<UserInfo>>().cloned().unwrap_or_else(dev_superuser)
}

/// Who a request is from while no authenticator is configured.
pub fn dev_superuser() -> Arc<UserInfo> {
    Arc::new(UserInfo {
        name: "ferrokube-admin".into(),
        groups: vec![MASTERS.into(), "system:authenticated".into()],
        ..Default::default()
    })
}

/// Upstream's wording of a refused request.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let resource = match a.subresource.as_str() {
        "" => a.resource.clone(),
        sub => format!("{}/{sub}", a.resource),
    };
    let verb = &a.verb;
    match a.namespace.as_str() {
        "" => format!(
            "User {:?} cannot {verb} resource {resource:?} in API group {:?} at the cluster scope",
            user.name, a.api_group
        ),
        ns => format!(
            "User {:?} cannot {verb} resource {resource:?} in API group {:?} in the namespace {ns:?}",
            user.name, a.api_group
        ),
    }
}

/// The 403 for a refused request, with the authorizers' reasons appended.
pub fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut why = forbidden_message(user, a);
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let resource = if a.resource_request { a.resource.as_str() } else { "" };
    ApiError::forbidden_request(&a.api_group, resource, &a.name, &why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn forbidden_wording() {
        let bob = UserInfo { name: "bob".into(), ..Default::default() };
        let a = Attributes::of(&Method::GET, "/api/v1/namespaces/default/pods", None);
        let e = forbidden(&bob, &a, "");
        assert_eq!(
            e.message,
            r#"pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let a = Attributes::of(&Method::GET, "/apis/apps/v1/deployments", None);
        assert_eq!(
            forbidden(&bob, &a, "").message,
            r#"deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        let a = Attributes::of(&Method::GET, "/api/v1/nodes/n1/status", None);
        assert_eq!(
            forbidden(&bob, &a, "Everything is forbidden.").message,
            r#"nodes "n1" is forbidden: User "bob" cannot get resource "nodes/status" in API group "" at the cluster scope: Everything is forbidden."#
        );
        let a = Attributes::of(&Method::GET, "/healthz", None);
        assert_eq!(forbidden(&bob, &a, "").message, r#"forbidden: User "bob" cannot get path "/healthz""#);
    }
}
