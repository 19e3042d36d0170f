//! Authorization: the RBAC kinds, the bootstrap policy, ClusterRole aggregation, the
//! authorizer chain answering SubjectAccessReviews, and `kubectl auth can-i`. Without
//! an authenticator every request comes from the development superuser, so who-may-do-what
//! is asked through SubjectAccessReview (spec.user / spec.groups) over raw HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

fn binding(kind: &str, name: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn user(name: &str) -> Value {
    json!([{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}])
}

/// A request to ask about: `verb resource[/sub] [group] [namespace]` or `verb /path`.
struct Ask<'a> {
    verb: &'a str,
    what: &'a str,
    group: &'a str,
    namespace: &'a str,
}

const fn ask<'a>(verb: &'a str, what: &'a str, group: &'a str, namespace: &'a str) -> Ask<'a> {
    Ask { verb, what, group, namespace }
}

fn review_spec(a: &Ask) -> Value {
    if a.what.starts_with('/') {
        return json!({"nonResourceAttributes": {"verb": a.verb, "path": a.what}});
    }
    let (resource, sub) = a.what.split_once('/').unwrap_or((a.what, ""));
    json!({"resourceAttributes": {"verb": a.verb, "group": a.group, "resource": resource, "subresource": sub,
        "namespace": a.namespace}})
}

/// status of a SubjectAccessReview for `name` (in group system:authenticated).
async fn sar(c: &Cluster, name: &str, a: &Ask<'_>) -> Value {
    let mut spec = review_spec(a);
    spec["user"] = json!(name);
    spec["groups"] = json!(["system:authenticated"]);
    let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec});
    let (status, review) = c.post(SAR, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{review}");
    review["status"].clone()
}

async fn allowed(c: &Cluster, name: &str, a: &Ask<'_>) -> bool {
    sar(c, name, a).await["allowed"] == true
}

/// Poll until `name` may do `a` (the caches and the aggregation loop follow etcd).
async fn wait_allowed(c: &Cluster, name: &str, a: &Ask<'_>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !allowed(c, name, a).await {
        assert!(Instant::now() < deadline, "{name} never allowed to {} {}", a.verb, a.what);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The RBAC kinds at upstream's keys with upstream's validation, the bootstrap policy,
/// discovery, OpenAPI, printer columns and `kubectl auth can-i` for the superuser.
#[tokio::test]
async fn rbac_kinds_bootstrap_policy_and_kubectl() {
    let c = Cluster::start().await;
    let admin = c.must_get(&format!("{RBAC}/clusterroles/cluster-admin")).await;
    assert_eq!(admin["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults");
    assert_eq!(admin["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"], "true");
    assert_eq!(admin["rules"][0]["verbs"], json!(["*"]));
    assert!(c.etcd_get("/registry/clusterroles/system:node").await.is_some());
    assert!(c.etcd_get("/registry/clusterrolebindings/cluster-admin").await.is_some());
    let masters = c.must_get(&format!("{RBAC}/clusterrolebindings/cluster-admin")).await;
    assert_eq!(masters["subjects"][0]["name"], "system:masters");
    assert!(c.etcd_get("/registry/roles/kube-system/system::leader-locking-kube-scheduler").await.is_some());
    let signer =
        c.must_get(&format!("{RBAC}/namespaces/kube-public/rolebindings/system:controller:bootstrap-signer")).await;
    assert_eq!(signer["subjects"][0]["namespace"], "kube-system");

    // a Role and a RoleBinding in a namespace, at upstream's keys
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
    c.create(&format!("{RBAC}/namespaces/default/roles"), &role).await;
    let rb = binding("RoleBinding", "read", "Role", "reader", json!([{"kind": "User", "name": "alice"}]));
    let created = c.create(&format!("{RBAC}/namespaces/default/rolebindings"), &rb).await;
    assert_eq!(created["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io", "subject apiGroup defaulted");
    assert!(c.etcd_get("/registry/roles/default/reader").await.is_some());
    assert!(c.etcd_get("/registry/rolebindings/default/read").await.is_some());

    // validation: rules need verbs; roleRef is immutable; subjects need a known kind
    let bad = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "bad"},
        "rules": [{"apiGroups": [""], "resources": ["pods"]}]});
    let (status, body) = c.post(&format!("{RBAC}/namespaces/default/roles"), &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(cause_fields(&body), vec!["rules[0].verbs"]);
    let mut changed = created.clone();
    changed["roleRef"]["name"] = json!("other");
    let (status, body) = c.put(&format!("{RBAC}/namespaces/default/rolebindings/read"), &changed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("cannot change roleRef"), "{body}");
    let weird = binding("ClusterRoleBinding", "w", "Role", "x", json!([{"kind": "Robot", "name": "r"}]));
    let (status, body) = c.post(&format!("{RBAC}/clusterrolebindings"), &weird).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(cause_fields(&body), vec!["roleRef.kind", "subjects[0].kind"]);

    // discovery and OpenAPI know both groups
    let (_, rbac_list) = c.get(RBAC).await;
    let names: Vec<&str> =
        rbac_list["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["clusterrolebindings", "clusterroles", "rolebindings", "roles"]);
    let (_, authz) = c.get("/apis/authorization.k8s.io/v1").await;
    let ssar = authz["resources"].as_array().unwrap().iter().find(|r| r["name"] == "selfsubjectaccessreviews");
    assert_eq!(ssar.expect("selfsubjectaccessreviews in discovery")["verbs"], json!(["create"]));
    let (status, doc) = c.get("/openapi/v3/apis/rbac.authorization.k8s.io/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["components"]["schemas"]["io.k8s.api.rbac.v1.ClusterRole"].is_object());
    let (status, doc) = c.get("/openapi/v3/apis/authorization.k8s.io/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]["post"].is_object());

    for version in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(version, &["get", "clusterroles"]);
        let header = out.lines().next().unwrap_or("");
        assert!(header.starts_with("NAME") && header.contains("CREATED AT"), "{out}");
        for role in ["cluster-admin", "admin", "edit", "view", "system:basic-user", "system:node"] {
            assert!(out.lines().any(|l| l.split_whitespace().next() == Some(role)), "{role} missing:\n{out}");
        }
        let out = c.kubectl_ok(version, &["get", "rolebindings", "-o", "wide"]);
        assert!(out.lines().next().unwrap_or("").contains("ROLE"), "{out}");
        assert!(out.contains("Role/reader") && out.contains("alice"), "{out}");
        assert_eq!(c.kubectl_ok(version, &["auth", "can-i", "list", "pods"]).trim(), "yes");
        assert_eq!(c.kubectl_ok(version, &["auth", "can-i", "create", "clusterroles"]).trim(), "yes");
        let list = c.kubectl_ok(version, &["auth", "can-i", "--list"]);
        assert!(list.contains("*.*"), "{list}");
        // kubectl creates bindings through the typed client (protobuf on newer versions)
        let name = format!("view-{}", version.replace('.', "-"));
        c.kubectl_ok(version, &["create", "clusterrolebinding", &name, "--clusterrole=view", "--user=carol"]);
        c.kubectl_ok(version, &["create", "role", &name, "--verb=get", "--resource=pods", "-n", "default"]);
    }
}

/// The bootstrap roles bound to users, against upstream's documented policy: view, edit
/// and admin in a namespace (RoleBinding), cluster-admin everywhere, and nothing.
#[tokio::test]
async fn bootstrap_roles_policy_matrix() {
    let c = Cluster::start_with(&["--authorization-mode=Node,RBAC"]).await;
    c.create("/api/v1/namespaces", &namespace("team")).await;
    for (who, role) in [("viewer", "view"), ("editor", "edit"), ("nsadmin", "admin")] {
        let b = binding("RoleBinding", who, "ClusterRole", role, user(who));
        c.create(&format!("{RBAC}/namespaces/team/rolebindings"), &b).await;
    }
    c.create(
        &format!("{RBAC}/clusterrolebindings"),
        &binding("ClusterRoleBinding", "root", "ClusterRole", "cluster-admin", user("root")),
    )
    .await;
    // the aggregation loop fills view, then edit from view, then admin from edit: wait
    // for the end of that chain
    wait_allowed(&c, "nsadmin", &ask("get", "pods", "", "team")).await;
    wait_allowed(&c, "editor", &ask("get", "pods", "", "team")).await;
    wait_allowed(&c, "root", &ask("update", "nodes", "", "")).await;

    let users = ["viewer", "editor", "nsadmin", "root", "nobody"];
    let rbac = "rbac.authorization.k8s.io";
    let matrix: &[(Ask, [bool; 5])] = &[
        (ask("get", "pods", "", "team"), [true, true, true, true, false]),
        (ask("watch", "services", "", "team"), [true, true, true, true, false]),
        (ask("get", "pods/log", "", "team"), [true, true, true, true, false]),
        (ask("list", "secrets", "", "team"), [false, true, true, true, false]),
        (ask("create", "deployments", "apps", "team"), [false, true, true, true, false]),
        (ask("delete", "configmaps", "", "team"), [false, true, true, true, false]),
        (ask("create", "pods/exec", "", "team"), [false, true, true, true, false]),
        (ask("impersonate", "serviceaccounts", "", "team"), [false, true, true, true, false]),
        (ask("create", "rolebindings", rbac, "team"), [false, false, true, true, false]),
        (ask("create", "localsubjectaccessreviews", "authorization.k8s.io", "team"), [false, false, true, true, false]),
        (ask("get", "pods", "", "elsewhere"), [false, false, false, true, false]),
        (ask("update", "nodes", "", ""), [false, false, false, true, false]),
        (ask("list", "namespaces", "", ""), [false, false, false, true, false]),
        (ask("get", "namespaces", "", "team"), [true, true, true, true, false]),
        (ask("create", "selfsubjectaccessreviews", "authorization.k8s.io", ""), [true; 5]),
        (ask("get", "/healthz", "", ""), [true; 5]),
        (ask("get", "/apis/apps/v1", "", ""), [true; 5]),
        (ask("get", "/metrics", "", ""), [false, false, false, true, false]),
    ];
    let mut wrong = Vec::new();
    for (a, expected) in matrix {
        for (who, want) in users.iter().zip(expected) {
            if allowed(&c, who, a).await != *want {
                wrong.push(format!("{who} {} {} in {:?}: expected {want}", a.verb, a.what, a.namespace));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // the namespaced bootstrap roles: leader election in kube-system only
    let candidates = |ns| ask("list", "leasecandidates", "coordination.k8s.io", ns);
    assert!(allowed(&c, "system:kube-scheduler", &candidates("kube-system")).await);
    assert!(!allowed(&c, "system:kube-scheduler", &candidates("default")).await);
    // the controllers' roles, bound to their service accounts in kube-system
    let controller = |name: &str| format!("system:serviceaccount:kube-system:{name}");
    for (who, a, want) in [
        ("deployment-controller", ask("create", "replicasets", "apps", "team"), true),
        ("deployment-controller", ask("update", "deployments/status", "apps", "team"), true),
        ("deployment-controller", ask("create", "pods", "", "team"), false),
        ("replicaset-controller", ask("create", "pods", "", "team"), true),
        ("replicaset-controller", ask("get", "secrets", "", "team"), false),
        ("statefulset-controller", ask("create", "persistentvolumeclaims", "", "team"), true),
        ("daemon-set-controller", ask("create", "pods/binding", "", "team"), true),
        ("job-controller", ask("update", "jobs/finalizers", "batch", "team"), true),
        ("cronjob-controller", ask("create", "jobs", "batch", "team"), true),
        ("generic-garbage-collector", ask("delete", "configmaps", "", "team"), true),
        ("generic-garbage-collector", ask("create", "configmaps", "", "team"), false),
        ("namespace-controller", ask("deletecollection", "secrets", "", "team"), true),
        ("node-controller", ask("patch", "nodes/status", "", ""), true),
        ("endpoint-controller", ask("update", "endpoints", "", "team"), true),
        ("endpointslice-controller", ask("create", "endpointslices", "discovery.k8s.io", "team"), true),
        ("service-account-controller", ask("create", "serviceaccounts", "", "team"), true),
        ("service-account-controller", ask("delete", "serviceaccounts", "", "team"), false),
        ("root-ca-cert-publisher", ask("update", "configmaps", "", "team"), true),
        ("persistent-volume-binder", ask("create", "persistentvolumes", "", ""), true),
        ("ttl-after-finished-controller", ask("delete", "jobs", "batch", "team"), true),
        ("ttl-after-finished-controller", ask("delete", "pods", "", "team"), false),
    ] {
        assert_eq!(allowed(&c, &controller(who), &a).await, want, "{who} {} {}", a.verb, a.what);
    }
    // the superuser's rules, listed by RBAC through the cluster-admin binding of system:masters
    for version in KUBECTL_VERSIONS {
        let list = c.kubectl_ok(version, &["auth", "can-i", "--list", "-n", "team"]);
        assert!(list.lines().any(|l| l.starts_with("*.*")), "{list}");
        assert_eq!(c.kubectl_ok(version, &["auth", "can-i", "create", "pods", "--subresource=eviction"]).trim(), "yes");
    }
    let reason = sar(&c, "root", &ask("delete", "nodes", "", "")).await["reason"].clone();
    assert_eq!(reason, r#"RBAC: allowed by ClusterRoleBinding "root" of ClusterRole "cluster-admin" to User "root""#);
}

/// A Role with resourceNames bound to a user, a service account and a group; a
/// LocalSubjectAccessReview; a rules review; aggregation of a new labelled ClusterRole.
#[tokio::test]
async fn roles_bindings_subjects_and_aggregation() {
    let c = Cluster::start_with(&["--authorization-mode=RBAC"]).await;
    c.create("/api/v1/namespaces", &namespace("dev")).await;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "one-pod"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p1"]},
                  {"verbs": ["list"], "apiGroups": ["apps"], "resources": ["deployments"]}]});
    c.create(&format!("{RBAC}/namespaces/dev/roles"), &role).await;
    let subjects = json!([{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "robot"},
        {"kind": "Group", "name": "system:serviceaccounts:qa"}]);
    c.create(&format!("{RBAC}/namespaces/dev/rolebindings"), &binding("RoleBinding", "b", "Role", "one-pod", subjects))
        .await;

    let p1 = json!({"resourceAttributes": {"verb": "get", "resource": "pods", "name": "p1", "namespace": "dev"}});
    let body =
        |spec: Value| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec});
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, r) = c.post(SAR, &body(json!({"user": "alice", "resourceAttributes": p1["resourceAttributes"]}))).await;
        if r["status"]["allowed"] == true {
            assert_eq!(
                r["status"]["reason"],
                r#"RBAC: allowed by RoleBinding "b/dev" of Role "one-pod" to User "alice""#
            );
            break;
        }
        assert!(Instant::now() < deadline, "alice never allowed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut p2 = p1.clone();
    p2["resourceAttributes"]["name"] = json!("p2");
    let cases = [
        (json!({"user": "alice"}), p2.clone(), false),
        (json!({"user": "system:serviceaccount:dev:robot"}), p1.clone(), true),
        (json!({"user": "system:serviceaccount:other:robot"}), p1.clone(), false),
        (json!({"user": "x", "groups": ["system:serviceaccounts:qa"]}), p1.clone(), true),
        (json!({"user": "bob"}), p1.clone(), false),
    ];
    for (who, attrs, want) in cases {
        let mut spec = who.clone();
        spec["resourceAttributes"] = attrs["resourceAttributes"].clone();
        let (_, r) = c.post(SAR, &body(spec)).await;
        assert_eq!(r["status"]["allowed"], want, "{who} {attrs}: {r}");
    }
    // a SubjectAccessReview must name someone and exactly one kind of attributes
    let (status, r) = c.post(SAR, &body(json!({"resourceAttributes": p1["resourceAttributes"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    let (status, r) = c.post(SAR, &body(json!({"user": "alice"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{r}");

    // LocalSubjectAccessReview: the namespace of the URL
    let lsar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": "dev"}, "spec": {"user": "alice", "resourceAttributes": p1["resourceAttributes"]}});
    let (status, r) = c.post("/apis/authorization.k8s.io/v1/namespaces/dev/localsubjectaccessreviews", &lsar).await;
    assert_eq!((status, r["status"]["allowed"].clone()), (StatusCode::CREATED, json!(true)), "{r}");
    let (status, r) = c.post("/apis/authorization.k8s.io/v1/namespaces/other/localsubjectaccessreviews", &lsar).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{r}");

    // the superuser's own rules: everything, complete
    let ssrr = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "dev"}});
    let (status, r) = c.post("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", &ssrr).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert!(r["status"]["resourceRules"].as_array().unwrap().iter().any(|x| x["verbs"] == json!(["*"])), "{r}");
    assert_eq!(r["status"]["incomplete"], false);

    // aggregation: a new ClusterRole labelled aggregate-to-view extends view, edit and admin
    c.create(
        &format!("{RBAC}/clusterrolebindings"),
        &binding("ClusterRoleBinding", "viewers", "ClusterRole", "view", user("vera")),
    )
    .await;
    let widgets = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widget-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"verbs": ["get", "list"], "apiGroups": ["example.com"], "resources": ["widgets"]}]});
    c.create(&format!("{RBAC}/clusterroles"), &widgets).await;
    wait_allowed(&c, "vera", &ask("list", "widgets", "example.com", "dev")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let admin = c.must_get(&format!("{RBAC}/clusterroles/admin")).await;
        if admin["rules"].as_array().into_iter().flatten().any(|r| r["resources"] == json!(["widgets"])) {
            break;
        }
        assert!(Instant::now() < deadline, "admin never aggregated widgets: {admin}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // and removing the label takes the rules away again
    let path = format!("{RBAC}/clusterroles/widget-viewer");
    let unlabel = json!({"metadata": {"labels": {"rbac.authorization.k8s.io/aggregate-to-view": null}}});
    let (status, _) = c.patch(&path, "application/merge-patch+json", &unlabel).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(15);
    while allowed(&c, "vera", &ask("list", "widgets", "example.com", "dev")).await {
        assert!(Instant::now() < deadline, "view kept the widget rules");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// AlwaysDeny refuses everyone outside the privileged group (which upstream always
/// allows, so the development superuser still gets through).
#[tokio::test]
async fn always_deny_refuses_all_but_the_privileged_group() {
    let c = Cluster::start_with(&["--authorization-mode=AlwaysDeny"]).await;
    let status = sar(&c, "bob", &ask("list", "pods", "", "default")).await;
    assert_eq!(status["allowed"], false);
    assert_eq!(status["reason"], "Everything is forbidden.");
    let (status, _) = c.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(status, StatusCode::OK, "system:masters is allowed whatever the modes");
    for version in KUBECTL_VERSIONS {
        assert_eq!(c.kubectl_ok(version, &["auth", "can-i", "delete", "nodes"]).trim(), "yes");
    }
}

/// A SubjectAccessReview spec limited by a field selector.
fn with_fields(mut spec: Value, raw: &str) -> Value {
    spec["resourceAttributes"]["fieldSelector"] = json!({"rawSelector": raw});
    spec
}

/// The Node authorizer: a kubelet reads only its own pods and what they use, and writes
/// only its own Node and Lease; the rest follows the system:node rules.
#[tokio::test]
async fn node_authorizer_follows_the_pods_of_the_node() {
    let c = Cluster::start_with(&["--authorization-mode=Node,RBAC"]).await;
    for name in ["s1", "s2", "pull"] {
        c.create("/api/v1/namespaces/default/secrets", &json!({"metadata": {"name": name}, "data": {}})).await;
    }
    c.create("/api/v1/namespaces/default/configmaps", &configmap("c1", json!({}))).await;
    // the ServiceAccount admission plug-in wants the pod's account to exist
    c.create("/api/v1/namespaces/default/serviceaccounts", &json!({"metadata": {"name": "robot"}})).await;
    let mut p1 = pod("p1", "nginx");
    p1["spec"]["nodeName"] = json!("n1");
    p1["spec"]["serviceAccountName"] = json!("robot");
    p1["spec"]["imagePullSecrets"] = json!([{"name": "pull"}]);
    p1["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s1"}}]);
    p1["spec"]["containers"][0]["envFrom"] = json!([{"configMapRef": {"name": "c1"}}]);
    c.create("/api/v1/namespaces/default/pods", &p1).await;
    let mut p2 = pod("p2", "nginx");
    p2["spec"]["nodeName"] = json!("n2");
    p2["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s2"}}]);
    c.create("/api/v1/namespaces/default/pods", &p2).await;

    let node = |verb: &'static str, resource: &'static str, sub: &'static str, ns: &'static str, name: &'static str| {
        json!({"user": "system:node:n1", "groups": ["system:nodes", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub, "namespace": ns, "name": name,
                "group": if resource == "leases" { "coordination.k8s.io" } else { "" }}})
    };
    let cases = [
        (node("get", "secrets", "", "default", "s1"), true),
        (node("watch", "secrets", "", "default", "pull"), true),
        (node("get", "secrets", "", "default", "s2"), false),
        (node("list", "secrets", "", "default", ""), false),
        (node("delete", "secrets", "", "default", "s1"), false),
        (node("get", "configmaps", "", "default", "c1"), true),
        (node("create", "serviceaccounts", "token", "default", "robot"), true),
        (node("create", "serviceaccounts", "token", "default", "default"), false),
        (node("patch", "nodes", "status", "", "n1"), true),
        (node("update", "nodes", "", "", "n2"), false),
        (node("get", "nodes", "", "", "n2"), true),
        (node("update", "leases", "", "kube-node-lease", "n1"), true),
        (node("update", "leases", "", "kube-node-lease", "n2"), false),
        // pods: only its own (upstream's selector authorization, 1.32+)
        (node("list", "pods", "", "", ""), false),
        (with_fields(node("list", "pods", "", "", ""), "spec.nodeName=n1"), true),
        (with_fields(node("watch", "pods", "", "", ""), "spec.nodeName=n2"), false),
        (with_fields(node("watch", "pods", "", "", ""), "status.phase!=Failed,spec.nodeName=n1"), true),
        (node("get", "pods", "", "default", "p1"), true),
        (node("get", "pods", "", "default", "p2"), false),
        (node("watch", "pods", "", "default", "p1"), true),
        (node("get", "pods", "status", "default", "p1"), false),
        (node("patch", "pods", "status", "default", "p1"), true),
        (node("create", "deployments", "", "default", ""), false),
    ];
    let body =
        |spec: &Value| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec});
    // the pods reach the cache shortly after their creation
    let deadline = Instant::now() + Duration::from_secs(15);
    while c.post(SAR, &body(&cases[0].0)).await.1["status"]["allowed"] != true {
        assert!(Instant::now() < deadline, "n1 never allowed to read s1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut wrong = Vec::new();
    for (spec, want) in &cases {
        let (_, r) = c.post(SAR, &body(spec)).await;
        if r["status"]["allowed"] != *want {
            wrong.push(format!("{} → {}", spec["resourceAttributes"], r["status"]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // a node identity without a node name is denied outright, not merely unanswered
    let nameless = json!({"user": "system:node:", "groups": ["system:nodes"],
        "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}});
    let (_, r) = c.post(SAR, &body(&nameless)).await;
    assert_eq!((r["status"]["allowed"].clone(), r["status"]["denied"].clone()), (json!(false), json!(true)), "{r}");
}

/// At start the bootstrap policy is reconciled: deleted objects come back, missing rules
/// and subjects are added again, and objects annotated autoupdate "false" are left alone.
#[tokio::test]
async fn bootstrap_policy_is_reconciled_at_start() {
    let mut c = Cluster::start().await;
    let role = |name: &str| format!("{RBAC}/clusterroles/{name}");
    let mut basic = c.must_get(&role("system:basic-user")).await;
    basic["rules"] = json!([]);
    assert_eq!(c.put(&role("system:basic-user"), &basic).await.0, StatusCode::OK);
    let mut discovery = c.must_get(&role("system:discovery")).await;
    discovery["rules"] = json!([]);
    discovery["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
    assert_eq!(c.put(&role("system:discovery"), &discovery).await.0, StatusCode::OK);
    let viewer_path = format!("{RBAC}/clusterrolebindings/system:public-info-viewer");
    let mut viewer = c.must_get(&viewer_path).await;
    viewer["subjects"] = json!([{"kind": "User", "name": "keep-me", "apiGroup": "rbac.authorization.k8s.io"}]);
    assert_eq!(c.put(&viewer_path, &viewer).await.0, StatusCode::OK);
    assert_eq!(c.delete(&role("system:monitoring")).await.0, StatusCode::OK);

    c.stop_server();
    c.start_server().await;
    let basic = c.must_get(&role("system:basic-user")).await;
    let resources: Vec<Value> = basic["rules"].as_array().unwrap().iter().map(|r| r["resources"].clone()).collect();
    assert!(resources.contains(&json!(["selfsubjectaccessreviews"])), "{basic}");
    assert_eq!(c.must_get(&role("system:discovery")).await["rules"], json!([]), "autoupdate false is respected");
    let subjects = c.must_get(&viewer_path).await["subjects"].clone();
    let names: Vec<&str> = subjects.as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["keep-me", "system:authenticated", "system:unauthenticated"]);
    c.must_get(&role("system:monitoring")).await;
}
