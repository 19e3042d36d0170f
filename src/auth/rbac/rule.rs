//! PolicyRule semantics: whether a rule allows a request, and whether one set of rules
//! covers another (escalation prevention).

use serde::{Deserialize, Serialize};

use crate::auth::request::Attributes;

/// rbac.authorization.k8s.io/v1 PolicyRule, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", default, skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// `*`, the exact `resource/subresource`, or `*/subresource`.
fn resource_matches(rule: &[String], resource: &str, subresource: &str) -> bool {
    rule.iter().any(|r| {
        if r == "*" {
            return true;
        }
        match subresource {
            "" => r == resource,
            sub => {
                r.strip_prefix(resource).and_then(|s| s.strip_prefix('/')) == Some(sub)
                    || r.strip_prefix("*/") == Some(sub)
            }
        }
    })
}

/// An exact path, `*`, or a prefix ending in `*`.
fn url_matches(rule: &[String], path: &str) -> bool {
    rule.iter().any(|u| match u.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => u == path,
    })
}

impl PolicyRule {
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return url_matches(&self.non_resource_urls, &a.path);
        }
        has(&self.api_groups, &a.api_group)
            && resource_matches(&self.resources, &a.resource, &a.subresource)
            && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }

    /// Whether every request this `other` rule allows, this rule allows too. Only atomic
    /// rules (one verb, group, resource, name or URL each) are asked about.
    fn covers_atomic(&self, other: &PolicyRule) -> bool {
        let all = |mine: &[String], theirs: &[String]| theirs.iter().all(|t| has(mine, t));
        if !all(&self.verbs, &other.verbs) {
            return false;
        }
        if !other.non_resource_urls.is_empty() {
            return other.non_resource_urls.iter().all(|u| url_matches(&self.non_resource_urls, u));
        }
        let resources_ok = other.resources.iter().all(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            self.resources.iter().any(|m| m == r) || (res != "*" && resource_matches(&self.resources, res, sub))
        });
        let names_ok = self.resource_names.is_empty()
            || (!other.resource_names.is_empty()
                && other.resource_names.iter().all(|n| self.resource_names.contains(n)));
        all(&self.api_groups, &other.api_groups) && resources_ok && names_ok
    }

    /// One rule per verb × group × resource × name (or verb × URL).
    fn atoms(&self) -> Vec<PolicyRule> {
        let one = |v: &String| vec![v.clone()];
        let mut out = Vec::new();
        for verb in &self.verbs {
            for url in &self.non_resource_urls {
                out.push(PolicyRule { verbs: one(verb), non_resource_urls: one(url), ..Default::default() });
            }
            for group in &self.api_groups {
                for resource in &self.resources {
                    let base = PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Default::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base.clone());
                    }
                    for name in &self.resource_names {
                        out.push(PolicyRule { resource_names: one(name), ..base.clone() });
                    }
                }
            }
        }
        out
    }

    /// The rule in the short form upstream's escalation errors list.
    pub fn compact(&self) -> String {
        let quoted = |l: &[String]| l.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("ResourceNames", &self.resource_names),
            ("NonResourceURLs", &self.non_resource_urls),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:[{}]", quoted(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// The atomic parts of `wanted` that no rule of `held` covers (empty: covered).
pub fn uncovered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing: Vec<PolicyRule> = Vec::new();
    for atom in wanted.iter().flat_map(PolicyRule::atoms) {
        if !held.iter().any(|h| h.covers_atomic(&atom)) && !missing.contains(&atom) {
            missing.push(atom);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        PolicyRule { verbs: v(verbs), api_groups: v(groups), resources: v(resources), ..Default::default() }
    }

    #[test]
    fn resources_subresources_and_names() {
        let a = Attributes::of(&Method::GET, "/api/v1/namespaces/ns/pods/p/log", None);
        assert!(rule(&["get"], &[""], &["pods/log"]).allows(&a));
        assert!(rule(&["get"], &[""], &["*/log"]).allows(&a));
        assert!(!rule(&["get"], &[""], &["pods"]).allows(&a));
        assert!(rule(&["*"], &["*"], &["*"]).allows(&a));
        let list = Attributes::of(&Method::GET, "/apis/apps/v1/deployments", None);
        assert!(!rule(&["list"], &[""], &["deployments"]).allows(&list));
        let mut named = rule(&["get"], &[""], &["pods"]);
        named.resource_names = vec!["p".into()];
        let get = Attributes::of(&Method::GET, "/api/v1/namespaces/ns/pods/p", None);
        assert!(named.allows(&get));
        assert!(!named.allows(&Attributes::of(&Method::GET, "/api/v1/namespaces/ns/pods/q", None)));
    }

    #[test]
    fn non_resource_urls_with_trailing_star() {
        let r =
            PolicyRule { verbs: vec!["get".into()], non_resource_urls: vec!["/apis/*".into()], ..Default::default() };
        assert!(r.allows(&Attributes::of(&Method::GET, "/apis/apps/v1", None)));
        assert!(!r.allows(&Attributes::of(&Method::GET, "/api", None)));
        assert!(!r.allows(&Attributes::of(&Method::POST, "/apis/x", None)));
    }

    #[test]
    fn coverage_of_rules() {
        let held = [rule(&["get", "list"], &[""], &["pods", "configmaps"]), rule(&["*"], &["apps"], &["*"])];
        assert!(uncovered(&held, &[rule(&["get"], &[""], &["pods"])]).is_empty());
        assert!(uncovered(&held, &[rule(&["delete"], &["apps"], &["deployments/scale"])]).is_empty());
        let missing = uncovered(&held, &[rule(&["get", "delete"], &[""], &["pods"])]);
        assert_eq!(missing, vec![rule(&["delete"], &[""], &["pods"])]);
        assert_eq!(missing[0].compact(), r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#);
        assert!(!uncovered(&[rule(&["get"], &[""], &["pods"])], &[rule(&["get"], &[""], &["*"])]).is_empty());
    }
}
