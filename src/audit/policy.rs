//! Upstream's audit `Policy` (audit.k8s.io/v1): rules asked in order, the first that
//! matches a request sets its level and omitted stages; no match is level None.

use serde::Deserialize;

use crate::auth::request::{Attributes, UserInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    #[serde(default)]
    omit_managed_fields: bool,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// What the policy says about one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub level: Level,
    pub omit_stages: Vec<Stage>,
    pub omit_managed_fields: bool,
}

impl Policy {
    /// Parse and check a policy file's text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = serde_yaml::from_str(text).map_err(|e| format!("cannot decode: {e}"))?;
        if !matches!(policy.api_version.as_str(), "audit.k8s.io/v1" | "audit.k8s.io/v1beta1") || policy.kind != "Policy"
        {
            return Err(format!(
                "apiVersion/kind must be audit.k8s.io/v1 Policy, not {:?} {:?}",
                policy.api_version, policy.kind
            ));
        }
        for (i, rule) in policy.rules.iter().enumerate() {
            rule.validate().map_err(|e| format!("rules[{i}]: {e}"))?;
        }
        Ok(policy)
    }

    /// The first matching rule's level and stages; None when no rule matches.
    pub fn evaluate(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(user, attrs)) {
            None => Decision { level: Level::None, omit_stages: Vec::new(), omit_managed_fields: false },
            Some(rule) => Decision {
                level: rule.level,
                omit_stages: self.omit_stages.iter().chain(&rule.omit_stages).copied().collect(),
                omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
        }
    }
}

impl Rule {
    fn validate(&self) -> Result<(), String> {
        if !self.non_resource_urls.is_empty() && (!self.resources.is_empty() || !self.namespaces.is_empty()) {
            return Err("rules cannot apply to both regular resources and non-resource URLs".into());
        }
        if self.non_resource_urls.iter().any(|u| u.is_empty() || u[..u.len() - 1].contains('*')) {
            return Err("nonResourceURLs: a '*' is allowed only at the end".into());
        }
        Ok(())
    }

    fn matches(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        let listed = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        if !listed(&self.users, &user.name) || !listed(&self.verbs, &attrs.verb) {
            return false;
        }
        if !self.user_groups.is_empty() && !user.groups.iter().any(|g| self.user_groups.contains(g)) {
            return false;
        }
        if attrs.resource_request {
            self.non_resource_urls.is_empty()
                && listed(&self.namespaces, &attrs.namespace)
                && self.matches_resource(attrs)
        } else {
            self.resources.is_empty() && self.namespaces.is_empty() && self.matches_url(&attrs.path)
        }
    }

    fn matches_url(&self, path: &str) -> bool {
        self.non_resource_urls.is_empty()
            || self.non_resource_urls.iter().any(|spec| match spec.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => spec == path,
            })
    }

    fn matches_resource(&self, a: &Attributes) -> bool {
        self.resources.is_empty()
            || self.resources.iter().any(|gr| {
                gr.group == a.api_group
                    && (gr.resources.is_empty()
                        || (gr.resource_names.is_empty() || gr.resource_names.contains(&a.name))
                            && gr.resources.iter().any(|r| resource_matches(r, a)))
            })
    }
}

/// `pods`, `pods/log`, `*`, `*/status`, `pods/*`, as upstream's policy checker.
fn resource_matches(spec: &str, a: &Attributes) -> bool {
    let combined =
        if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    spec == "*"
        || spec == combined
        || (!a.subresource.is_empty() && spec.strip_prefix("*/") == Some(a.subresource.as_str()))
        || spec.strip_suffix("/*") == Some(a.resource.as_str())
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [system:kube-proxy]
- level: None
  userGroups: [quiet]
- level: None
  nonResourceURLs: ["/healthz*"]
- level: Metadata
  resources: [{group: "", resources: [secrets, pods/log]}]
- level: RequestResponse
  verbs: [create, update]
  namespaces: [prod]
  resources: [{group: apps, resources: ["*/scale"], resourceNames: [web]}]
  omitStages: [ResponseStarted]
  omitManagedFields: true
- level: Request
"#;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }

    fn level(u: &UserInfo, method: Method, path: &str) -> Level {
        Policy::parse(POLICY).unwrap().evaluate(u, &Attributes::of(&method, path, None)).level
    }

    #[test]
    fn first_matching_rule_wins() {
        let alice = user("alice", &["devs"]);
        assert_eq!(level(&user("system:kube-proxy", &[]), Method::GET, "/api/v1/secrets"), Level::None);
        assert_eq!(level(&user("bob", &["quiet"]), Method::GET, "/api/v1/pods"), Level::None);
        assert_eq!(level(&alice, Method::GET, "/healthz/etcd"), Level::None);
        assert_eq!(level(&alice, Method::GET, "/version"), Level::Request);
        assert_eq!(level(&alice, Method::GET, "/api/v1/namespaces/a/secrets/s"), Level::Metadata);
        assert_eq!(level(&alice, Method::GET, "/api/v1/namespaces/a/pods/p/log"), Level::Metadata);
        assert_eq!(level(&alice, Method::GET, "/api/v1/namespaces/a/pods/p"), Level::Request);
        let scale = "/apis/apps/v1/namespaces/prod/deployments/web/scale";
        assert_eq!(level(&alice, Method::PUT, scale), Level::RequestResponse);
        assert_eq!(level(&alice, Method::GET, scale), Level::Request);
        assert_eq!(level(&alice, Method::PUT, "/apis/apps/v1/namespaces/dev/deployments/web/scale"), Level::Request);
        assert_eq!(level(&alice, Method::PUT, "/apis/apps/v1/namespaces/prod/deployments/db/scale"), Level::Request);
    }

    #[test]
    fn stages_and_managed_fields_combine_policy_and_rule() {
        let policy = Policy::parse(POLICY).unwrap();
        let attrs = Attributes::of(&Method::PUT, "/apis/apps/v1/namespaces/prod/deployments/web/scale", None);
        let d = policy.evaluate(&user("a", &[]), &attrs);
        assert_eq!(d.omit_stages, [Stage::RequestReceived, Stage::ResponseStarted]);
        assert!(d.omit_managed_fields);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::parse("apiVersion: v1\nkind: ConfigMap\n").unwrap_err().contains("audit.k8s.io/v1 Policy"));
        let bad_level = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n";
        assert!(Policy::parse(bad_level).unwrap_err().contains("Everything"));
        let both = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [/x]\n  namespaces: [a]\n";
        assert!(Policy::parse(both).unwrap_err().contains("rules[0]"));
        let unknown = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  userz: [a]\n";
        assert!(Policy::parse(unknown).unwrap_err().contains("userz"));
    }
}
