//! NodeRestriction: a kubelet (`system:node:<name>` in `system:nodes`) may change only
//! its own Node (not its taints, configSource, nor labels it must not steer workloads
//! with), only pods bound to it (mirror pods it creates, status, delete, eviction),
//! only its own Lease in kube-node-lease, and may request tokens only for pods bound to
//! it. Other users pass untouched, so the plug-in is harmless to enable by default.
//! The messages are upstream's.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::service_account::{MIRROR_ANNOTATION, lookup};
use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::{builtin, meta};

const NODE_PREFIX: &str = "system:node:";

/// Labels a kubelet may set on its Node although they are in kubernetes.io / k8s.io.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

pub struct NodeRestriction {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(NodeRestriction { ctx: ctx.clone() })
}

/// The node a user is, as upstream's node identifier: `system:node:<name>` in group
/// `system:nodes` (the name may be empty: such a node is refused everything).
fn node_name<'a>(a: &'a Attributes) -> Option<&'a str> {
    let name = a.user.name.strip_prefix(NODE_PREFIX)?;
    a.user.groups.iter().any(|g| g == "system:nodes").then_some(name)
}

fn in_namespace(label_ns: &str, ns: &str) -> bool {
    label_ns == ns || label_ns.strip_suffix(ns).is_some_and(|p| p.ends_with('.'))
}

fn forbidden_label(label: &str) -> bool {
    let ns = label.split_once('/').map_or("", |(ns, _)| ns);
    if in_namespace(ns, "node-restriction.kubernetes.io") {
        return true;
    }
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    let kubelet = KUBELET_LABELS.contains(&label) || KUBELET_LABEL_NAMESPACES.iter().any(|n| in_namespace(ns, n));
    kubernetes && !kubelet
}

/// Labels added, removed or changed, that a kubelet may not touch, sorted.
fn forbidden_changes(new: Option<&Map<String, Value>>, old: Option<&Map<String, Value>>) -> Vec<String> {
    let empty = Map::new();
    let (new, old) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
    let changed: BTreeSet<&String> = new.keys().chain(old.keys()).filter(|k| new.get(*k) != old.get(*k)).collect();
    changed.into_iter().filter(|l| forbidden_label(l)).cloned().collect()
}

fn spec_nodename(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("")
}

impl NodeRestriction {
    async fn pod(&self, a: &Attributes<'_>, name: &str) -> ApiResult<Value> {
        let pods = builtin("", "v1", "pods");
        lookup(&self.ctx, pods, a.namespace, name).await?.ok_or_else(|| ApiError::not_found("", "pods", name))
    }

    async fn check(&self, a: &Attributes<'_>, node: &str, o: &Objects<'_>) -> ApiResult<()> {
        if node.is_empty() {
            return Err(a.forbidden(&format!("could not determine node from user {:?}", a.user.name)));
        }
        let deny = |why: String| Err(a.forbidden(&why));
        let obj = &*o.obj;
        match (a.res.group, a.res.plural) {
            ("", "pods") => match (a.subresource, a.operation) {
                ("", Operation::Create) => pod_create(node, obj).map_or(Ok(()), deny),
                ("", Operation::Delete) if spec_nodename(obj) != node => {
                    deny(format!("node {node:?} can only delete pods with spec.nodeName set to itself"))
                }
                ("", Operation::Delete) => Ok(()),
                ("", op) => deny(format!(
                    "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
                    op_name(op)
                )),
                ("status", Operation::Update) => {
                    let old = o.old.unwrap_or(obj);
                    if spec_nodename(old) != node {
                        deny(format!(
                            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                        ))
                    } else if meta::labels(old) != meta::labels(obj) {
                        deny(format!("node {node:?} cannot update labels through pod status"))
                    } else {
                        Ok(())
                    }
                }
                ("eviction", Operation::Create) => {
                    let pod = self.pod(a, a.name).await?;
                    if spec_nodename(&pod) != node {
                        return deny(format!("node {node} can only evict pods with spec.nodeName set to itself"));
                    }
                    Ok(())
                }
                ("status" | "eviction", op) => deny(format!("unexpected operation {}", op_name(op))),
                (sub, _) => deny(format!("unexpected subresource {sub:?}")),
            },
            ("", "nodes") => node_write(a, node, obj, o.old).map_or(Ok(()), deny),
            ("", "persistentvolumeclaims") if a.subresource != "status" => deny("may only update PVC status".into()),
            ("", "serviceaccounts") if a.subresource == "token" && a.operation == Operation::Create => {
                self.token(a, node, obj).await
            }
            ("coordination.k8s.io", "leases") => lease(a, node, obj).map_or(Ok(()), deny),
            _ => Ok(()),
        }
    }

    async fn token(&self, a: &Attributes<'_>, node: &str, tr: &Value) -> ApiResult<()> {
        let r = tr.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null);
        let field = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        if field("apiVersion") != "v1" || field("kind") != "Pod" || field("name").is_empty() {
            return Err(a.forbidden("node requested token not bound to a pod"));
        }
        if field("uid").is_empty() {
            return Err(a.forbidden("node requested token with a pod binding without a uid"));
        }
        let pod = self.pod(a, &field("name")).await?;
        if meta::meta_str(&pod, "uid") != field("uid") {
            return Err(a.forbidden(&format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                field("uid")
            )));
        }
        if spec_nodename(&pod) != node {
            return Err(a.forbidden("node requested token bound to a pod scheduled on a different node"));
        }
        Ok(())
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// A kubelet creates only mirror pods of its own, owned by its Node, that reference
/// no other API objects. Returns why not.
fn pod_create(node: &str, pod: &Value) -> Option<String> {
    let annotations = meta::metadata(pod).and_then(|m| m.get("annotations"));
    if annotations.and_then(|a| a.get(MIRROR_ANNOTATION)).is_none() {
        return Some(format!(
            "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        ));
    }
    if spec_nodename(pod) != node {
        return Some(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
    }
    let owners = meta::metadata(pod).and_then(|m| m.get("ownerReferences")).and_then(Value::as_array);
    match owners.map(Vec::as_slice).unwrap_or_default() {
        [] => return Some(format!("node {node:?} can only create pods with an owner reference set to itself")),
        [owner] => {
            let f = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or("");
            if f("apiVersion") != "v1" || f("kind") != "Node" || f("name") != node {
                return Some(format!("node {node:?} can only create pods with an owner reference set to itself"));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return Some(format!(
                    "node {node:?} can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return Some(format!("node {node:?} must not set blockOwnerDeletion on an owner reference"));
            }
        }
        _ => {
            return Some(format!("node {node:?} can only create pods with a single owner reference set to itself"));
        }
    }
    let spec = &pod["spec"];
    if spec.get("serviceAccountName").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        return Some(format!("node {node:?} can not create pods that reference a service account"));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (field, what) in
        [("secret", "secrets"), ("configMap", "configmaps"), ("persistentVolumeClaim", "persistentvolumeclaims")]
    {
        if volumes.iter().any(|v| v.get(field).is_some()) {
            return Some(format!("node {node:?} can not create pods that reference {what}"));
        }
    }
    None
}

/// A kubelet writes only its own Node, and not its taints, configSource or labels
/// outside the kubelet's set. Returns why not.
fn node_write(a: &Attributes, node: &str, obj: &Value, old: Option<&Value>) -> Option<String> {
    if a.name != node {
        return Some(format!("node {node:?} is not allowed to modify node {:?}", a.name));
    }
    match (a.operation, old) {
        (Operation::Create, _) => {
            if obj.pointer("/spec/configSource").is_some_and(|v| !v.is_null()) {
                return Some(format!("node {node:?} is not allowed to create pods with a non-nil configSource"));
            }
            let forbidden = forbidden_changes(meta::labels(obj), None);
            (!forbidden.is_empty())
                .then(|| format!("node {node:?} is not allowed to set the following labels: {}", forbidden.join(", ")))
        }
        (Operation::Update, Some(old)) => {
            let source = obj.pointer("/spec/configSource").filter(|v| !v.is_null());
            if source.is_some() && source != old.pointer("/spec/configSource") {
                return Some(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            let taints = |o: &Value| o.pointer("/spec/taints").filter(|t| !t.is_null()).cloned();
            if taints(obj) != taints(old) {
                return Some(format!("node {node:?} is not allowed to modify taints"));
            }
            let forbidden = forbidden_changes(meta::labels(obj), meta::labels(old));
            (!forbidden.is_empty()).then(|| format!("is not allowed to modify labels: {}", forbidden.join(", ")))
        }
        _ => None,
    }
}

/// A kubelet's Lease lives in kube-node-lease and is named after it. Returns why not.
fn lease(a: &Attributes, node: &str, obj: &Value) -> Option<String> {
    if a.namespace != "kube-node-lease" {
        return Some("can only access leases in the \"kube-node-lease\" system namespace".into());
    }
    let name = if a.operation == Operation::Create { meta::name(obj) } else { a.name };
    (name != node).then(|| "can only access node lease with the same name as the requesting node".into())
}

impl Plugin for NodeRestriction {
    fn handles(&self, a: &Attributes) -> bool {
        a.user.name.starts_with(NODE_PREFIX)
            && matches!(
                (a.res.group, a.res.plural),
                ("", "pods" | "nodes" | "persistentvolumeclaims" | "serviceaccounts")
                    | ("coordination.k8s.io", "leases")
            )
    }

    fn validate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            match node_name(a) {
                Some(node) => self.check(a, node, o).await,
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_a_kubelet_may_not_touch() {
        assert!(forbidden_label("node-restriction.kubernetes.io/pool"));
        assert!(forbidden_label("example.node-restriction.kubernetes.io/pool"));
        assert!(forbidden_label("node-role.kubernetes.io/control-plane"));
        assert!(forbidden_label("foo.k8s.io/x"));
        assert!(!forbidden_label("kubernetes.io/hostname"));
        assert!(!forbidden_label("node.kubernetes.io/exclude-from-external-load-balancers"));
        assert!(!forbidden_label("example.com/team"));
        assert!(!forbidden_label("plain"));
        let old = serde_json::json!({"kubernetes.io/hostname": "n1", "a": "1"});
        let new = serde_json::json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/x": "", "b": "2"});
        assert_eq!(forbidden_changes(new.as_object(), old.as_object()), ["node-role.kubernetes.io/x"]);
    }
}
