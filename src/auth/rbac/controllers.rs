//! The per-controller roles of the bootstrap policy: a ClusterRole
//! `system:controller:<name>` for each controller of the controller-manager, bound to
//! the ServiceAccount `kube-system/<name>` it runs as (upstream's controller policy, with
//! the rules of Kubernetes 1.33, for the controllers ferrokube serves the objects of).

use serde_json::Value;

use super::bootstrap::{EVENTS_WRITE, READ, binding, cluster_role, rule};

const APPS: &[&str] = &["apps", "extensions"];

fn events() -> Value {
    rule(EVENTS_WRITE, &["", "events.k8s.io"], &["events"])
}

/// A controller's rules, each controller recording events.
fn with_events(mut rules: Vec<Value>) -> Vec<Value> {
    rules.push(events());
    rules
}

/// (controller name, rules)
fn controllers() -> Vec<(&'static str, Vec<Value>)> {
    let crud = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let owner = |group: &'static [&'static str], kind: &'static str, pods: &'static [&'static str]| {
        vec![
            rule(&["get", "list", "update", "watch"], group, &[kind]),
            // ferrokube's controllers patch status where upstream's update it
            rule(&["patch", "update"], group, &[&format!("{kind}/status")]),
            rule(&["update"], group, &[&format!("{kind}/finalizers")]),
            rule(pods, &[""], &["pods"]),
        ]
    };
    let pod_owner = &["create", "delete", "list", "patch", "watch"];
    let mut deployment = owner(APPS, "deployments", &["get", "list", "update", "watch"]);
    // the revision annotations are written with a metadata patch
    deployment[0] = rule(&["get", "list", "patch", "update", "watch"], APPS, &["deployments"]);
    deployment.insert(3, rule(&crud, APPS, &["replicasets"]));
    let mut daemon_set = owner(APPS, "daemonsets", pod_owner);
    daemon_set[0] = rule(READ, APPS, &["daemonsets"]);
    daemon_set.extend([
        rule(&["list", "watch"], &[""], &["nodes"]),
        rule(&["create"], &[""], &["pods/binding"]),
        rule(&crud, &["apps"], &["controllerrevisions"]),
    ]);
    let mut job = owner(&["batch"], "jobs", pod_owner);
    job[0] = rule(&["get", "list", "patch", "update", "watch"], &["batch"], &["jobs"]);
    let mut cronjob = owner(&["batch"], "cronjobs", &["delete", "list", "watch"]);
    cronjob.insert(1, rule(&crud, &["batch"], &["jobs"]));
    let statefulset = vec![
        rule(&["list", "watch"], &[""], &["pods"]),
        rule(READ, &["apps"], &["statefulsets"]),
        rule(&["patch", "update"], &["apps"], &["statefulsets/status"]),
        rule(&["update"], &["apps"], &["statefulsets/finalizers"]),
        rule(&["create", "delete", "get", "patch", "update"], &[""], &["pods"]),
        rule(&crud, &["apps"], &["controllerrevisions"]),
        rule(&["create", "get", "list", "watch"], &[""], &["persistentvolumeclaims"]),
        rule(&["delete", "update"], &[""], &["persistentvolumeclaims"]),
        rule(&["update"], &[""], &["pods/finalizers"]),
    ];
    let everything = ["delete", "deletecollection", "get", "list", "watch"];
    vec![
        (
            "clusterrole-aggregation-controller",
            vec![rule(
                &["escalate", "get", "list", "patch", "update", "watch"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            )],
        ),
        ("cronjob-controller", with_events(cronjob)),
        ("daemon-set-controller", with_events(daemon_set)),
        ("deployment-controller", with_events(deployment)),
        (
            "endpoint-controller",
            with_events(vec![
                rule(READ, &[""], &["pods", "services"]),
                rule(&["create", "delete", "get", "list", "update", "watch"], &[""], &["endpoints"]),
                rule(&["create"], &[""], &["endpoints/restricted"]),
            ]),
        ),
        (
            "endpointslice-controller",
            with_events(vec![
                rule(READ, &[""], &["nodes", "pods", "services"]),
                rule(&["update"], &[""], &["services/finalizers"]),
                rule(
                    &["create", "delete", "get", "list", "update", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ]),
        ),
        (
            "generic-garbage-collector",
            with_events(vec![rule(&["delete", "get", "list", "patch", "update", "watch"], &["*"], &["*"])]),
        ),
        ("job-controller", with_events(job)),
        (
            "namespace-controller",
            vec![
                rule(&["delete", "get", "list", "watch"], &[""], &["namespaces"]),
                rule(&["update"], &[""], &["namespaces/finalize", "namespaces/status"]),
                // ferrokube's namespace controller patches its deletion conditions
                rule(&["patch"], &[""], &["namespaces/status"]),
                rule(&everything, &["*"], &["*"]),
            ],
        ),
        (
            "node-controller",
            with_events(vec![
                rule(&["delete", "get", "list", "patch", "update", "watch"], &[""], &["nodes"]),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
            ]),
        ),
        ("persistent-volume-binder", {
            let mut rules = with_events(vec![
                rule(&["create", "delete", "get", "list", "update", "watch"], &[""], &["persistentvolumes"]),
                rule(&["update"], &[""], &["persistentvolumes/status"]),
                rule(&["get", "list", "update", "watch"], &[""], &["persistentvolumeclaims"]),
                rule(&["update"], &[""], &["persistentvolumeclaims/status"]),
                rule(&["create", "delete", "get", "list", "watch"], &[""], &["pods"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["list", "watch"], &[""], &["nodes"]),
                // ferrokube's binder patches where upstream's updates
                rule(&["patch"], &[""], &["persistentvolumes", "persistentvolumes/status"]),
                rule(&["patch"], &[""], &["persistentvolumeclaims", "persistentvolumeclaims/status"]),
            ]);
            rules.push(rule(&["watch"], &[""], &["events"]));
            rules
        }),
        // ferrokube's own provisioner (as k3s' local-path-provisioner has a role of its own)
        (
            "local-path-provisioner",
            with_events(vec![
                rule(&["create", "delete", "get", "list", "watch"], &[""], &["persistentvolumes"]),
                rule(READ, &[""], &["persistentvolumeclaims"]),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
            ]),
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&["delete", "list", "watch"], &[""], &["pods"]),
                rule(READ, &[""], &["nodes"]),
                rule(&["patch"], &[""], &["pods/status"]),
            ],
        ),
        ("replicaset-controller", with_events(owner(APPS, "replicasets", pod_owner))),
        ("replication-controller", with_events(owner(&[""], "replicationcontrollers", pod_owner))),
        ("root-ca-cert-publisher", with_events(vec![rule(&["create", "update"], &[""], &["configmaps"])])),
        ("service-account-controller", with_events(vec![rule(&["create"], &[""], &["serviceaccounts"])])),
        ("statefulset-controller", with_events(statefulset)),
        (
            "ttl-after-finished-controller",
            with_events(vec![rule(&["delete", "get", "list", "watch"], &["batch"], &["jobs"])]),
        ),
        ("ttl-controller", with_events(vec![rule(&["list", "patch", "update", "watch"], &[""], &["nodes"])])),
    ]
}

/// The `system:controller:*` ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    controllers().into_iter().map(|(name, rules)| cluster_role(&format!("system:controller:{name}"), rules)).collect()
}

/// Their ClusterRoleBindings, each to the controller's ServiceAccount in kube-system.
pub fn cluster_role_bindings() -> Vec<Value> {
    let names = controllers().into_iter().map(|(name, _)| name);
    names.map(|name| binding(&format!("system:controller:{name}"), &[("ServiceAccount/kube-system", name)])).collect()
}
