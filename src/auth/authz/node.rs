//! The Node authorizer: a kubelet (`system:node:<name>` in group `system:nodes`) may read
//! only the secrets, configmaps, persistent volume claims and volumes its own pods use,
//! mint tokens only for its pods' service accounts, and write only its own Node and
//! Lease. Everything else is judged by the system:node rules. Relationships are read from
//! the watch caches (the node's pods, selected by `spec.nodeName`), as upstream reads
//! them from its graph of pods.
//!
//! Pods as upstream's selector authorization (AuthorizeNodeWithSelectors, on by default
//! since 1.32) has it: a node gets only pods bound to it, and lists or watches pods only
//! with a `spec.nodeName=<itself>` field selector (or one pinned by name to a pod bound
//! to it); other pod verbs follow the system:node rules.
//!
//! Not yet: volume attachments and resource claims are not followed.

use std::sync::LazyLock;

use serde_json::Value;

use super::Authorizer;
use crate::auth::rbac::bootstrap;
use crate::auth::rbac::rule::PolicyRule;
use crate::auth::request::{Attributes, Decision, UserInfo};
use crate::registry::filter::Filter;
use crate::registry::find_resource;
use crate::registry::selectors::{FieldSelector, LabelSelector};
use crate::watch::Caches;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

static NODE_RULES: LazyLock<Vec<PolicyRule>> =
    LazyLock::new(|| bootstrap::node_rules().into_iter().filter_map(|r| serde_json::from_value(r).ok()).collect());

pub struct NodeAuthorizer {
    caches: Caches,
}

/// The node a user is, if it is one.
fn node_name(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

fn no(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion(reason.into())
}

/// What a node's pods refer to.
#[derive(Default)]
struct Refs {
    secrets: Vec<(String, String)>,
    config_maps: Vec<(String, String)>,
    claims: Vec<(String, String)>,
    service_accounts: Vec<(String, String)>,
}

fn push(list: &mut Vec<(String, String)>, ns: &str, name: Option<&str>) {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        list.push((ns.to_string(), name.to_string()));
    }
}

fn strs<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

impl Refs {
    fn add_pod(&mut self, pod: &Value) {
        let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let sa = text(pod, "/spec/serviceAccountName").unwrap_or_else(|| "default".into());
        push(&mut self.service_accounts, ns, Some(&sa));
        for s in strs(pod, "/spec/imagePullSecrets") {
            push(&mut self.secrets, ns, s.get("name").and_then(Value::as_str));
        }
        for vol in strs(pod, "/spec/volumes") {
            self.add_volume(ns, pod, vol);
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for c in strs(pod, &format!("/spec/{list}")) {
                self.add_container(ns, c);
            }
        }
    }

    fn add_volume(&mut self, ns: &str, pod: &Value, vol: &Value) {
        let at = |p: &str| vol.pointer(p).and_then(Value::as_str);
        push(&mut self.secrets, ns, at("/secret/secretName"));
        push(&mut self.config_maps, ns, at("/configMap/name"));
        push(&mut self.claims, ns, at("/persistentVolumeClaim/claimName"));
        for key in ["azureFile", "cephfs", "cinder", "flexVolume", "iscsi", "rbd", "scaleIO", "storageos", "csi"] {
            push(&mut self.secrets, ns, vol.pointer(&format!("/{key}/secretRef/name")).and_then(Value::as_str));
        }
        if vol.get("ephemeral").is_some() {
            // a generic ephemeral volume's claim is named <pod>-<volume>
            let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let claim = format!("{pod_name}-{}", at("/name").unwrap_or(""));
            push(&mut self.claims, ns, Some(&claim));
        }
        for source in strs(vol, "/projected/sources") {
            push(&mut self.secrets, ns, source.pointer("/secret/name").and_then(Value::as_str));
            push(&mut self.config_maps, ns, source.pointer("/configMap/name").and_then(Value::as_str));
        }
    }

    fn add_container(&mut self, ns: &str, c: &Value) {
        for env in strs(c, "/env") {
            push(&mut self.secrets, ns, env.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str));
            push(&mut self.config_maps, ns, env.pointer("/valueFrom/configMapKeyRef/name").and_then(Value::as_str));
        }
        for from in strs(c, "/envFrom") {
            push(&mut self.secrets, ns, from.pointer("/secretRef/name").and_then(Value::as_str));
            push(&mut self.config_maps, ns, from.pointer("/configMapRef/name").and_then(Value::as_str));
        }
    }
}

impl NodeAuthorizer {
    pub fn new(caches: Caches) -> NodeAuthorizer {
        NodeAuthorizer { caches }
    }

    /// What the pods bound to `node` refer to, from the pod watch cache.
    fn refs(&self, node: &str) -> Refs {
        let mut refs = Refs::default();
        let Some(pods) = find_resource("", "v1", "pods") else { return refs };
        let Ok(fields) = FieldSelector::parse(&format!("spec.nodeName={node}")) else { return refs };
        let Ok(filter) = Filter::new(pods, LabelSelector::default(), fields) else { return refs };
        let snapshot = self.caches.get(pods).snapshot(&self.caches.range(pods, "", None), &filter);
        for obj in &snapshot.objects {
            if let Ok(pod) = serde_json::from_slice::<Value>(&obj.json) {
                refs.add_pod(&pod);
            }
        }
        refs
    }

    /// The persistent volume a claim is bound to, from the claim watch cache.
    fn volume_of(&self, namespace: &str, claim: &str) -> Option<String> {
        let claims = find_resource("", "v1", "persistentvolumeclaims")?;
        let range = self.caches.range(claims, namespace, Some(claim));
        let snapshot = self.caches.get(claims).snapshot(&range, &Filter::everything(claims));
        let obj: Value = serde_json::from_slice(&snapshot.objects.first()?.json).ok()?;
        obj.pointer("/spec/volumeName").and_then(Value::as_str).map(str::to_string)
    }

    /// get/list/watch of one named object a pod of the node refers to.
    fn read_referenced(&self, node: &str, a: &Attributes, pick: fn(&Refs) -> &Vec<(String, String)>) -> Decision {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot read subresource");
        }
        if a.namespace.is_empty() || a.name.is_empty() {
            return no("can only read individual namespaced objects of this type");
        }
        let refs = self.refs(node);
        let wanted = (a.namespace.clone(), a.name.clone());
        match pick(&refs).contains(&wanted) {
            true => Decision::Allow,
            false => no(format!("no relationship found between node '{node}' and this object")),
        }
    }

    fn persistent_volume(&self, node: &str, a: &Attributes) -> Decision {
        if a.verb != "get" || a.name.is_empty() {
            return no("can only get individual resources of this type");
        }
        let refs = self.refs(node);
        match refs.claims.iter().any(|(ns, claim)| self.volume_of(ns, claim).as_deref() == Some(a.name.as_str())) {
            true => Decision::Allow,
            false => no(format!("no relationship found between node '{node}' and this object")),
        }
    }

    fn token(&self, node: &str, a: &Attributes) -> Decision {
        if a.verb != "create" || a.subresource != "token" || a.name.is_empty() {
            return self.by_rules(a);
        }
        let refs = self.refs(node);
        match refs.service_accounts.contains(&(a.namespace.clone(), a.name.clone())) {
            true => Decision::Allow,
            false => no(format!("no relationship found between node '{node}' and this object")),
        }
    }

    /// A node writes only itself; reading nodes and creating its own follow the rules.
    fn node(&self, node: &str, a: &Attributes) -> Decision {
        let writes = matches!(a.verb.as_str(), "update" | "patch" | "delete");
        if writes && a.name != node {
            return no(format!("node '{node}' cannot modify node '{}'", a.name));
        }
        self.by_rules(a)
    }

    fn lease(&self, node: &str, a: &Attributes) -> Decision {
        let own = a.namespace == NODE_LEASE_NAMESPACE && (a.name == node || (a.verb == "create" && a.name.is_empty()));
        match own && matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
            true => Decision::Allow,
            false => no("can only access node lease with the same name as the requesting node"),
        }
    }

    /// get a pod bound to the node; list/watch only the node's own pods.
    fn pod(&self, node: &str, a: &Attributes) -> Decision {
        match a.verb.as_str() {
            "get" if !a.subresource.is_empty() => no("cannot get subresource"),
            "list" | "watch" if a.field_equals.iter().any(|(f, v)| f == "spec.nodeName" && v == node) => {
                Decision::Allow
            }
            "list" | "watch" if a.name.is_empty() => no("can only list/watch pods with spec.nodeName field selector"),
            "get" | "list" | "watch" => {
                let pod = crate::auth::cached(&self.caches, "pods", &a.namespace, &a.name);
                let bound = pod.as_ref().and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str);
                match bound == Some(node) {
                    true => Decision::Allow,
                    false => no(format!("no relationship found between node '{node}' and this object")),
                }
            }
            _ => self.by_rules(a),
        }
    }

    fn by_rules(&self, a: &Attributes) -> Decision {
        match NODE_RULES.iter().any(|r| r.allows(a)) {
            true => Decision::Allow,
            false => no(""),
        }
    }
}

impl Authorizer for NodeAuthorizer {
    /// A node's permissions depend on its pods and cannot be listed (the answer is then
    /// incomplete); anyone else gets nothing from this authorizer.
    fn rules_for(&self, user: &UserInfo, _namespace: &str) -> Option<Vec<PolicyRule>> {
        node_name(user).is_none().then(Vec::new)
    }

    fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let Some(node) = node_name(user) else { return no("") };
        if node.is_empty() {
            return Decision::Deny(format!("unknown node for user {:?}", user.name));
        }
        if !a.resource_request {
            return self.by_rules(a);
        }
        match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => self.read_referenced(node, a, |r| &r.secrets),
            ("", "configmaps") => self.read_referenced(node, a, |r| &r.config_maps),
            ("", "persistentvolumeclaims") if a.subresource.is_empty() => self.read_referenced(node, a, |r| &r.claims),
            ("", "persistentvolumes") => self.persistent_volume(node, a),
            ("", "serviceaccounts") => self.token(node, a),
            ("", "nodes") => self.node(node, a),
            ("", "pods") => self.pod(node, a),
            ("coordination.k8s.io", "leases") => self.lease(node, a),
            _ => self.by_rules(a),
        }
    }
}
