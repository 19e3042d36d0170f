//! The RBAC authorizer: Roles, ClusterRoles and their bindings, read from the watch
//! caches (never from etcd per request) into an index by subject that is rebuilt when
//! one of the four caches moves on. Also the bootstrap policy, ClusterRole aggregation
//! and escalation prevention.

pub mod aggregation;
pub mod bootstrap;
pub mod escalation;
pub mod rule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Deserialize;
use serde_json::Value;

use self::rule::PolicyRule;
use super::request::{Attributes, Decision, UserInfo};
use crate::registry::filter::Filter;
use crate::registry::{ResourceDef, find_resource};
use crate::watch::Caches;
use crate::watch::cache::Cache;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The four RBAC resources, in the order the index reads them.
pub fn resources() -> [&'static ResourceDef; 4] {
    ["clusterroles", "roles", "clusterrolebindings", "rolebindings"]
        .map(|r| find_resource(GROUP, "v1", r).expect("RBAC kinds are in the resource table"))
}

#[derive(Deserialize, Default)]
struct ObjMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
struct RoleObj {
    metadata: ObjMeta,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
}

#[derive(Deserialize)]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct BindingObj {
    metadata: ObjMeta,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
    #[serde(rename = "roleRef")]
    role_ref: RoleRef,
}

/// Rules one binding gives one subject, and where.
struct Grant {
    /// None: everywhere (a ClusterRoleBinding); Some(ns): requests in that namespace.
    namespace: Option<String>,
    rules: Arc<[PolicyRule]>,
    /// `ClusterRoleBinding "x" of ClusterRole "y"`, for the reason of an allow.
    via: Arc<str>,
    /// `User "bob"`: the subject the binding names.
    to: Arc<str>,
}

/// Every binding's rules, by the user or group it names.
#[derive(Default)]
struct Index {
    revisions: [i64; 4],
    users: HashMap<String, Vec<Grant>>,
    groups: HashMap<String, Vec<Grant>>,
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
}

pub struct Rbac {
    caches: Caches,
    /// The four caches, looked up once (`Caches::get` takes a lock).
    watched: OnceLock<[Arc<Cache>; 4]>,
    index: RwLock<Arc<Index>>,
    rebuild: Mutex<()>,
}

fn objects<T: for<'de> Deserialize<'de>>(caches: &Caches, res: &'static ResourceDef) -> Vec<T> {
    let cache = caches.get(res);
    let snapshot = cache.snapshot(&caches.range(res, "", None), &Filter::everything(res));
    snapshot.objects.iter().filter_map(|o| serde_json::from_slice(&o.json).ok()).collect()
}

impl Index {
    fn build(caches: &Caches, revisions: [i64; 4]) -> Index {
        let [cluster_roles, roles, crbs, rbs] = resources();
        let mut index = Index { revisions, ..Default::default() };
        for r in objects::<RoleObj>(caches, cluster_roles) {
            index.cluster_roles.insert(r.metadata.name, r.rules.unwrap_or_default().into());
        }
        for r in objects::<RoleObj>(caches, roles) {
            index.roles.insert((r.metadata.namespace, r.metadata.name), r.rules.unwrap_or_default().into());
        }
        for b in objects::<BindingObj>(caches, crbs).into_iter().chain(objects(caches, rbs)) {
            index.add_binding(b);
        }
        index
    }

    /// The rules a roleRef names; empty when the role does not exist (yet).
    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Arc<[PolicyRule]> {
        let found = match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role_ref.name),
            _ => self.roles.get(&(namespace.to_string(), role_ref.name.clone())),
        };
        found.cloned().unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn add_binding(&mut self, b: BindingObj) {
        let ns = b.metadata.namespace;
        let rules = self.role_rules(&b.role_ref, &ns);
        let via: Arc<str> = match ns.as_str() {
            "" => format!("ClusterRoleBinding {:?} of {} {:?}", b.metadata.name, b.role_ref.kind, b.role_ref.name),
            _ => format!("RoleBinding \"{}/{ns}\" of {} {:?}", b.metadata.name, b.role_ref.kind, b.role_ref.name),
        }
        .into();
        let namespace = Some(ns.clone()).filter(|n| !n.is_empty());
        for s in b.subjects.unwrap_or_default() {
            let (map, key) = match s.kind.as_str() {
                "User" => (&mut self.users, s.name),
                "Group" => (&mut self.groups, s.name),
                "ServiceAccount" => {
                    let sa_ns = if s.namespace.is_empty() { ns.clone() } else { s.namespace };
                    (&mut self.users, format!("system:serviceaccount:{sa_ns}:{}", s.name))
                }
                _ => continue,
            };
            let to = format!("{} {:?}", s.kind, key).into();
            let grant = Grant { namespace: namespace.clone(), rules: rules.clone(), via: via.clone(), to };
            map.entry(key).or_default().push(grant);
        }
    }

    /// Each grant that applies to `user` for requests in `namespace` ("" = cluster scope).
    fn grants<'a>(&'a self, user: &'a UserInfo, namespace: &'a str) -> impl Iterator<Item = &'a Grant> {
        let by_user = self.users.get(&user.name).into_iter().flatten();
        let by_group = user.groups.iter().filter_map(|g| self.groups.get(g)).flatten();
        by_user.chain(by_group).filter(move |g| g.namespace.as_deref().is_none_or(|n| n == namespace))
    }
}

/// Where escalation checks read what a user holds and what a role grants.
pub trait RuleResolver: Send + Sync {
    /// Every rule `user` holds for requests in `namespace` ("" = cluster scope only).
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule>;
    /// The rules of a Role or ClusterRole; None when it does not exist.
    fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>>;
}

impl RuleResolver for Rbac {
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let index = self.current();
        index.grants(user, namespace).flat_map(|g| g.rules.iter().cloned()).collect()
    }

    fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
        let index = self.current();
        match kind {
            "ClusterRole" => index.cluster_roles.get(name).map(|r| r.to_vec()),
            _ => index.roles.get(&(namespace.to_string(), name.to_string())).map(|r| r.to_vec()),
        }
    }
}

impl Rbac {
    pub fn new(caches: Caches) -> Rbac {
        Rbac { caches, watched: OnceLock::new(), index: RwLock::default(), rebuild: Mutex::new(()) }
    }

    /// The index for the caches' current state, rebuilt when any of them moved on.
    fn current(&self) -> Arc<Index> {
        let watched = self.watched.get_or_init(|| resources().map(|r| self.caches.get(r)));
        let revisions = [0, 1, 2, 3].map(|i| watched[i].revision());
        let fresh_enough = |index: &Index| index.revisions == revisions && revisions.iter().all(|r| *r > 0);
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        if fresh_enough(&index) {
            return index;
        }
        // one rebuild at a time; whoever waited finds it done
        let _rebuilding = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        if fresh_enough(&index) {
            return index;
        }
        let fresh = Arc::new(Index::build(&self.caches, revisions));
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        fresh
    }

    /// The decision and, for an allow, which binding allowed it.
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (Decision, String) {
        let index = self.current();
        let ns = if attrs.resource_request { attrs.namespace.as_str() } else { "" };
        for grant in index.grants(user, ns) {
            if grant.rules.iter().any(|r| r.allows(attrs)) {
                return (Decision::Allow, format!("RBAC: allowed by {} to {}", grant.via, grant.to));
            }
        }
        (Decision::NoOpinion(String::new()), String::new())
    }
}

/// Rules as the `rules` of a stored role (for aggregation and bootstrap).
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default()
}
