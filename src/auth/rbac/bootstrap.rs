//! The default roles and bindings every cluster starts with (upstream's bootstrap
//! policy), created at start when missing. Existing objects are left as they are, so
//! an administrator's edits survive restarts.

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use super::controllers;
use super::rule::uncovered;
use super::{GROUP, rules_of};
use crate::handlers::status::ApiResult;
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin, meta};

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
pub(super) const EVENTS_WRITE: &[&str] = &["create", "patch", "update"];

pub(super) fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn metadata(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE: "true"},
    })
}

pub(super) fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": metadata(name, &[]), "rules": rules})
}

/// A role whose rules the aggregation loop fills from roles labelled `aggregate-to-<to>`.
fn aggregated(name: &str, labels: &[(&str, &str)]) -> Value {
    let selector = json!({"matchLabels": {format!("{GROUP}/aggregate-to-{name}"): "true"}});
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [selector]},
    })
}

fn aggregate_to(to: &str, rules: Vec<Value>) -> Value {
    let label = format!("{GROUP}/aggregate-to-{to}");
    let mut role = cluster_role(&format!("system:aggregate-to-{to}"), rules);
    role["metadata"]["labels"][label] = json!("true");
    role
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        rule(
            READ,
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
        ),
        rule(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
    ]
}

fn edit_rules() -> Vec<Value> {
    let pod_io = ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy"];
    vec![
        rule(READ, &[""], &[&pod_io[..], &["secrets", "services/proxy"]].concat()),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(WRITE, &[""], &[&["pods"], &pod_io[..]].concat()),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(
            WRITE,
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
        ),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
        rule(ALL, &["coordination.k8s.io"], &["leases"]),
    ]
}

fn admin_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
        rule(ALL, &[GROUP], &["rolebindings", "roles"]),
    ]
}

/// What the scheduler and the controller-manager both need to run and lead.
fn leader_rules(lease: &str) -> Vec<Value> {
    vec![
        rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named(&["get", "update"], &["coordination.k8s.io"], &["leases"], &[lease]),
    ]
}

fn scheduler_rules() -> Vec<Value> {
    let mut rules = leader_rules("kube-scheduler");
    rules.extend([
        rule(READ, &[""], &["nodes"]),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(READ, &[""], &["replicationcontrollers", "services"]),
        rule(READ, &["apps", "extensions"], &["replicasets"]),
        rule(READ, &["apps"], &["statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(READ, &[""], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
        rule(READ, &["storage.k8s.io"], &["csinodes"]),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["storage.k8s.io"], &["csidrivers"]),
        rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
    ]);
    rules
}

fn controller_manager_rules() -> Vec<Value> {
    let mut rules = leader_rules("kube-controller-manager");
    rules.extend([
        rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[""], &["secrets"]),
        rule(&["get"], &[""], &["configmaps", "namespaces", "secrets", "serviceaccounts"]),
        rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
    ]);
    rules
}

/// The system:node ClusterRole; the Node authorizer applies it to every node directly.
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews", "subjectaccessreviews"]),
        rule(READ, &[""], &["services"]),
        rule(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        rule(&["patch", "update"], &[""], &["nodes/status"]),
        rule(&["patch", "update"], &[""], &["nodes"]),
        rule(EVENTS_WRITE, &[""], &["events"]),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(READ, &[""], &["configmaps", "secrets"]),
        rule(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"], &[""], &["endpoints"]),
        rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"]),
        rule(&["create", "delete", "get", "patch", "update"], &["coordination.k8s.io"], &["leases"]),
        rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(&["get", "patch", "update"], &[""], &["persistentvolumeclaims/status"]),
        rule(READ, &["storage.k8s.io"], &["csidrivers"]),
        rule(&["create", "delete", "get", "patch", "update"], &["storage.k8s.io"], &["csinodes"]),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

fn proxier_rules() -> Vec<Value> {
    vec![
        rule(&["list", "watch"], &[""], &["endpoints", "services"]),
        rule(READ, &[""], &["nodes"]),
        rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]),
        rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
    ]
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let health = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let discovery = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"];
    let to_admin = [(concat!("rbac.authorization.k8s.io", "/aggregate-to-admin"), "true")];
    let to_edit = [(concat!("rbac.authorization.k8s.io", "/aggregate-to-edit"), "true")];
    vec![
        aggregated("admin", &[]),
        cluster_role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        aggregated("edit", &to_admin),
        aggregate_to("admin", admin_rules()),
        aggregate_to("edit", edit_rules()),
        aggregate_to("view", view_rules()),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role("system:discovery", vec![urls(&["get"], &[&discovery[..], &health[..]].concat())]),
        cluster_role("system:kube-controller-manager", controller_manager_rules()),
        cluster_role("system:kube-dns", vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])]),
        cluster_role("system:kube-scheduler", scheduler_rules()),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"],
            )],
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"])],
        ),
        cluster_role("system:node-proxier", proxier_rules()),
        cluster_role("system:public-info-viewer", vec![urls(&["get"], &health)]),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(&["get"], &["/.well-known/openid-configuration", "/openid/v1/jwks"])],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(&["get", "list", "patch", "update", "watch"], &[""], &["persistentvolumes"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["get", "list", "patch", "update", "watch"], &[""], &["persistentvolumeclaims"]),
            ],
        ),
        aggregated("view", &to_edit),
    ]
}

fn subject(kind: &str, name: &str) -> Value {
    match kind.split_once('/') {
        // a service account: "ServiceAccount/<namespace>"
        Some((kind, ns)) => json!({"kind": kind, "name": name, "namespace": ns}),
        None => json!({"apiGroup": GROUP, "kind": kind, "name": name}),
    }
}

pub(super) fn binding(role: &str, subjects: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": metadata(role, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects.iter().map(|(k, n)| subject(k, n)).collect::<Vec<_>>(),
    })
}

/// The default ClusterRoleBindings, each named after its role.
pub fn cluster_role_bindings() -> Vec<Value> {
    let everyone = [("Group", "system:authenticated"), ("Group", "system:unauthenticated")];
    vec![
        binding("cluster-admin", &[("Group", "system:masters")]),
        binding("system:basic-user", &[("Group", "system:authenticated")]),
        binding("system:discovery", &[("Group", "system:authenticated")]),
        binding("system:kube-controller-manager", &[("User", "system:kube-controller-manager")]),
        binding("system:kube-dns", &[("ServiceAccount/kube-system", "kube-dns")]),
        binding("system:kube-scheduler", &[("User", "system:kube-scheduler")]),
        binding("system:monitoring", &[("Group", "system:monitoring")]),
        // nodes are authorized by the Node authorizer; the binding is kept without subjects
        binding("system:node", &[]),
        binding("system:node-proxier", &[("User", "system:kube-proxy")]),
        binding("system:public-info-viewer", &everyone),
        binding("system:service-account-issuer-discovery", &[("Group", "system:serviceaccounts")]),
        binding("system:volume-scheduler", &[("User", "system:kube-scheduler")]),
    ]
}

fn role(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
    let mut metadata = metadata(name, &[]);
    metadata["namespace"] = json!(namespace);
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": metadata, "rules": rules})
}

/// A RoleBinding of the Role `role` in `namespace`.
fn role_binding(namespace: &str, name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let mut metadata = metadata(name, &[]);
    metadata["namespace"] = json!(namespace);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": metadata,
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": role},
        "subjects": subjects.iter().map(|(k, n)| subject(k, n)).collect::<Vec<_>>(),
    })
}

const SYSTEM: &str = "kube-system";
const PUBLIC: &str = "kube-public";

fn leader_locking_rules() -> Vec<Value> {
    let verbs = ["create", "get", "list", "update", "watch"];
    vec![
        rule(&verbs, &["coordination.k8s.io"], &["leases"]),
        rule(&verbs, &["coordination.k8s.io"], &["leasecandidates"]),
    ]
}

/// The default Roles of kube-system and kube-public.
pub fn namespace_roles() -> Vec<Value> {
    let events = || rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"]);
    vec![
        role(
            PUBLIC,
            "system:controller:bootstrap-signer",
            vec![
                rule(READ, &[""], &["configmaps"]),
                named(&["update"], &[""], &["configmaps"], &["cluster-info"]),
                events(),
            ],
        ),
        role(
            SYSTEM,
            "extension-apiserver-authentication-reader",
            vec![named(READ, &[""], &["configmaps"], &["extension-apiserver-authentication"])],
        ),
        role(SYSTEM, "system::leader-locking-kube-controller-manager", leader_locking_rules()),
        role(SYSTEM, "system::leader-locking-kube-scheduler", leader_locking_rules()),
        role(SYSTEM, "system:controller:bootstrap-signer", vec![rule(READ, &[""], &["secrets"])]),
        role(
            SYSTEM,
            "system:controller:cloud-provider",
            vec![rule(&["create", "get", "list", "watch"], &[""], &["configmaps"])],
        ),
        role(
            SYSTEM,
            "system:controller:token-cleaner",
            vec![rule(&["delete", "get", "list", "watch"], &[""], &["secrets"]), events()],
        ),
    ]
}

/// The default RoleBindings of kube-system and kube-public.
pub fn namespace_role_bindings() -> Vec<Value> {
    let sa = "ServiceAccount/kube-system";
    let signer = "system:controller:bootstrap-signer";
    let controller = |name: &str, account: &'static str| role_binding(SYSTEM, name, name, &[(sa, account)]);
    vec![
        role_binding(PUBLIC, signer, signer, &[(sa, "bootstrap-signer")]),
        role_binding(
            SYSTEM,
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            &[("User", "system:kube-controller-manager"), ("User", "system:kube-scheduler")],
        ),
        role_binding(
            SYSTEM,
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            &[
                ("User", "system:kube-controller-manager"),
                (sa, "kube-controller-manager"),
                (sa, "leader-election-controller"),
            ],
        ),
        role_binding(
            SYSTEM,
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            &[("User", "system:kube-scheduler"), (sa, "kube-scheduler")],
        ),
        controller(signer, "bootstrap-signer"),
        controller("system:controller:cloud-provider", "cloud-provider"),
        controller("system:controller:token-cleaner", "token-cleaner"),
    ]
}

/// Create every default role and binding that does not exist yet, and bring back what
/// is missing from those that do, unless an administrator set their
/// `rbac.authorization.kubernetes.io/autoupdate` annotation to "false" (upstream's
/// reconciliation at start: a newer server's added permissions reach an older cluster;
/// nothing is ever taken away).
pub async fn ensure(reg: &Registry) -> ApiResult<()> {
    let kinds = ["clusterroles", "clusterrolebindings", "roles", "rolebindings"].map(|r| builtin(GROUP, "v1", r));
    let [cluster_roles_res, cluster_bindings_res, roles_res, bindings_res] = kinds;
    let objects = (cluster_roles().into_iter().map(|o| (cluster_roles_res, o)))
        .chain(controllers::cluster_roles().into_iter().map(|o| (cluster_roles_res, o)))
        .chain(cluster_role_bindings().into_iter().map(|o| (cluster_bindings_res, o)))
        .chain(controllers::cluster_role_bindings().into_iter().map(|o| (cluster_bindings_res, o)))
        .chain(namespace_roles().into_iter().map(|o| (roles_res, o)))
        .chain(namespace_role_bindings().into_iter().map(|o| (bindings_res, o)));
    // the objects are independent: written concurrently, so start-up waits for a few
    // etcd round trips rather than one per object
    let writes = futures::stream::iter(objects).map(|(res, obj)| ensure_one(reg, res, obj)).buffer_unordered(16);
    writes.try_collect::<Vec<()>>().await?;
    Ok(())
}

async fn ensure_one(reg: &Registry, res: &'static ResourceDef, obj: Value) -> ApiResult<()> {
    let namespace = meta::namespace(&obj).to_string();
    match reg.create(res, &namespace, obj.clone(), &WriteOpts::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => reconcile(reg, res, &obj).await,
        Err(e) => Err(e),
    }
}

async fn reconcile(reg: &Registry, res: &'static ResourceDef, expected: &Value) -> ApiResult<()> {
    let (namespace, name) = (meta::namespace(expected), meta::name(expected));
    let mut current = reg.get(res, namespace, name).await?;
    let annotations = meta::metadata(&current).and_then(|m| m.get("annotations"));
    if annotations.and_then(|a| a.get(AUTOUPDATE)).and_then(Value::as_str) == Some("false") {
        return Ok(());
    }
    let mut changed = add_missing_keys(&mut current, expected, "labels");
    changed |= add_missing_keys(&mut current, expected, "annotations");
    changed |= match res.plural {
        "clusterroles" | "roles" => add_missing_rules(&mut current, expected),
        _ => add_missing_entries(&mut current, expected, "subjects"),
    };
    if !changed {
        return Ok(());
    }
    tracing::info!(kind = res.kind, name, "reconciling bootstrap RBAC object");
    match reg.update(res, namespace, name, current, Part::Main, &WriteOpts::default()).await {
        Ok(_) => Ok(()),
        // someone else wrote it meanwhile; the next start reconciles again
        Err(e) if e.reason == "Conflict" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Put the expected metadata map entries (labels, annotations) the object lacks.
fn add_missing_keys(current: &mut Value, expected: &Value, field: &str) -> bool {
    let Some(want) = expected.pointer(&format!("/metadata/{field}")).and_then(Value::as_object) else {
        return false;
    };
    let have = meta::metadata_mut(current).entry(field).or_insert_with(|| json!({}));
    let Some(have) = have.as_object_mut() else { return false };
    let mut changed = false;
    for (k, v) in want {
        if !have.contains_key(k) {
            have.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// Append the expected array entries (subjects, selectors) the object lacks.
fn add_missing_entries(current: &mut Value, expected: &Value, pointer: &str) -> bool {
    let want = expected.pointer(&format!("/{pointer}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let (parent, field) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let Some(holder) =
        (if parent.is_empty() { Some(&mut *current) } else { current.pointer_mut(&format!("/{parent}")) })
    else {
        return false;
    };
    if !holder.get(field).is_some_and(Value::is_array) {
        holder[field] = json!([]);
    }
    let Some(have) = holder[field].as_array_mut() else { return false };
    let missing: Vec<Value> = want.into_iter().filter(|w| !have.contains(w)).collect();
    have.extend(missing.iter().cloned());
    !missing.is_empty()
}

/// Rules the role does not cover yet; an aggregated role's rules belong to the
/// aggregation loop, so only its selectors are completed.
fn add_missing_rules(current: &mut Value, expected: &Value) -> bool {
    if expected.get("aggregationRule").is_some() {
        if !current.get("aggregationRule").is_some_and(Value::is_object) {
            current["aggregationRule"] = json!({});
        }
        return add_missing_entries(current, expected, "aggregationRule/clusterRoleSelectors");
    }
    let missing = uncovered(&rules_of(current), &rules_of(expected));
    if missing.is_empty() {
        return false;
    }
    let rules = current.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
    let added = missing.iter().filter_map(|r| serde_json::to_value(r).ok());
    current["rules"] = Value::Array(rules.into_iter().chain(added).collect());
    true
}
