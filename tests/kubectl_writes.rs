//! The write paths kubectl uses beyond create/apply: edit, diff, server-side dry run,
//! apply --prune, drain (pods/eviction), and a scheduler's pods/binding.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn tag(version: &str) -> String {
    version.replace('.', "-")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl edit` with EDITOR set to a script that changes the replicas in place.
#[tokio::test]
async fn kubectl_edit_diff_and_dry_run() {
    let c = Cluster::start().await;
    let web = fixture("manifests/web-deploy.yaml");
    let web = web.to_str().unwrap();
    let editor = c.dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 4/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for version in KUBECTL_VERSIONS {
        let ns = format!("w-{}", tag(version));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;
        let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web-deploy");

        // server-side dry runs write nothing
        let out = c.kubectl_ok(version, &["create", "-n", &ns, "-f", web, "--dry-run=server", "-o", "yaml"]);
        assert!(
            out.contains("uid:") && out.contains("name: web-deploy"),
            "{version} dry-run create shows the object: {out}"
        );
        assert_eq!(c.get(&deploy).await.0, 404, "{version} dry-run create wrote the object");
        c.kubectl_ok(version, &["apply", "-n", &ns, "-f", web, "--dry-run=server"]);
        assert_eq!(c.get(&deploy).await.0, 404, "{version} dry-run apply wrote the object");
        c.kubectl_ok(version, &["apply", "-n", &ns, "-f", web]);
        let rv = c.must_get(&deploy).await["metadata"]["resourceVersion"].clone();
        c.kubectl_ok(version, &["delete", "-n", &ns, "deployment", "web-deploy", "--dry-run=server"]);
        assert_eq!(c.must_get(&deploy).await["metadata"]["resourceVersion"], rv, "{version} dry-run delete");

        // diff: nothing to show for the applied manifest (exit 0), a change shows (exit 1)
        let out = c.kubectl(version, &["diff", "-n", &ns, "-f", web]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{version} diff of the applied manifest: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let changed = std::fs::read_to_string(web).unwrap().replace("minReadySeconds: 5", "minReadySeconds: 8");
        let changed_path = c.dir.path().join(format!("changed-{version}.yaml"));
        std::fs::write(&changed_path, changed).unwrap();
        let out = c.kubectl(version, &["diff", "-n", &ns, "-f", changed_path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{version} diff of a changed manifest: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("+  minReadySeconds: 8"), "{version} diff output: {}", text(&out.stdout));
        assert_eq!(c.must_get(&deploy).await["spec"]["minReadySeconds"], 5, "{version} diff wrote");

        let editor_env = editor.to_str().unwrap();
        let out = c.kubectl_env(
            version,
            &["edit", "-n", &ns, "deployment/web-deploy"],
            &[("EDITOR", editor_env), ("KUBE_EDITOR", editor_env)],
        );
        assert!(out.status.success(), "{version} edit failed: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("edited"), "{version} edit: {}", text(&out.stdout));
        assert_eq!(c.must_get(&deploy).await["spec"]["replicas"], 4, "{version} edit did not land");
    }
}

/// `apply --prune -l` deletes the labelled objects that left the manifest set.
#[tokio::test]
async fn kubectl_apply_prune() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let ns = format!("p-{}", tag(version));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;
        let cm = |name: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    set: pruned\ndata:\n  k: v\n"
            )
        };
        let both = format!("{}---\n{}", cm("one"), cm("two"));
        c.kubectl_stdin_ok(version, &["apply", "-n", &ns, "-f", "-"], &both);
        // a labelled object never applied is not touched by prune (no last-applied annotation)
        let mut other = configmap("manual", json!({"k": "v"}));
        other["metadata"]["labels"] = json!({"set": "pruned"});
        c.create(&format!("/api/v1/namespaces/{ns}/configmaps"), &other).await;
        let out =
            c.kubectl_stdin_ok(version, &["apply", "-n", &ns, "--prune", "-l", "set=pruned", "-f", "-"], &cm("one"));
        assert!(out.contains("configmap/two pruned"), "{version} prune output: {out}");
        let names = item_names(&c.must_get(&format!("/api/v1/namespaces/{ns}/configmaps")).await);
        assert!(names.contains(&"one".to_string()) && names.contains(&"manual".to_string()), "{version}: {names:?}");
        assert!(!names.contains(&"two".to_string()), "{version} two was not pruned: {names:?}");
    }
}

/// A scheduler binds through pods/binding (or the legacy bindings collection);
/// binding twice is a Conflict.
#[tokio::test]
async fn pod_binding() {
    let c = Cluster::start().await;
    let pods = "/api/v1/namespaces/default/pods";
    c.create(pods, &pod("a", "nginx")).await;
    c.create(pods, &pod("b", "nginx")).await;
    let binding = |name: &str, node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let (code, body) = c.post(&format!("{pods}/a/binding"), &binding("a", "node-1")).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"], "Success");
    let a = c.must_get(&format!("{pods}/a")).await;
    assert_eq!(a["spec"]["nodeName"], "node-1");
    let conditions = a["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(conditions.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "True"), "{a}");

    let (code, body) = c.post(&format!("{pods}/a/binding"), &binding("a", "node-2")).await;
    assert_eq!(status_reason(code, &body), "Conflict");
    assert!(body["message"].as_str().unwrap_or("").contains("already assigned to node \"node-1\""), "{body}");
    assert_eq!(c.must_get(&format!("{pods}/a")).await["spec"]["nodeName"], "node-1");

    let (code, body) = c.post("/api/v1/namespaces/default/bindings", &binding("b", "node-2")).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(c.must_get(&format!("{pods}/b")).await["spec"]["nodeName"], "node-2");

    // bad bindings: no target, a name that is not the URL's, a missing pod
    let (code, body) = c.post(&format!("{pods}/b/binding"), &json!({"metadata": {"name": "b"}, "target": {}})).await;
    assert_eq!(status_reason(code, &body), "Invalid");
    let (code, body) = c.post(&format!("{pods}/b/binding"), &binding("a", "n")).await;
    assert_eq!(status_reason(code, &body), "BadRequest");
    let (code, body) = c.post(&format!("{pods}/zz/binding"), &binding("zz", "n")).await;
    assert_eq!(status_reason(code, &body), "NotFound");

    let (_, discovery) = c.get("/api/v1").await;
    let names: Vec<&str> =
        discovery["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    for want in ["bindings", "pods/binding", "pods/eviction"] {
        assert!(names.contains(&want), "{want} missing from discovery: {names:?}");
    }
}

/// policy/v1 Eviction deletes the pod; kubectl drain cordons the node and evicts.
#[tokio::test]
async fn pod_eviction_and_kubectl_drain() {
    let c = Cluster::start().await;
    let pods = "/api/v1/namespaces/default/pods";
    c.create(pods, &pod("gone", "nginx")).await;
    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "gone", "namespace": "default"}});
    let (code, body) = c.post(&format!("{pods}/gone/eviction"), &eviction).await;
    assert_eq!(code, 201, "{body}");
    c.wait_gone(&format!("{pods}/gone")).await;
    let (code, body) = c.post(&format!("{pods}/gone/eviction"), &eviction).await;
    assert_eq!(status_reason(code, &body), "NotFound");
    let (code, body) = c.post(&format!("{pods}/other/eviction"), &eviction).await;
    assert_eq!(status_reason(code, &body), "BadRequest");

    for version in KUBECTL_VERSIONS {
        let node = format!("node-{}", tag(version));
        c.create("/api/v1/nodes", &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})).await;
        let name = format!("on-{}", tag(version));
        let mut p = pod(&name, "nginx");
        p["spec"]["nodeName"] = json!(node);
        c.create(pods, &p).await;
        let out = c.kubectl_ok(version, &["drain", &node, "--force", "--grace-period=0", "--timeout=30s"]);
        assert!(out.contains("drained"), "{version} drain: {out}");
        assert_eq!(c.get(&format!("{pods}/{name}")).await.0, 404, "{version} drain left the pod");
        assert_eq!(c.must_get(&format!("/api/v1/nodes/{node}")).await["spec"]["unschedulable"], true);
        c.kubectl_ok(version, &["uncordon", &node]);
        let spec = c.must_get(&format!("/api/v1/nodes/{node}")).await["spec"].clone();
        assert!(spec.get("unschedulable").is_none_or(|u| u == &Value::Bool(false)), "{version} uncordon: {spec}");
    }
}

/// Patches that cannot apply answer a clear 4xx and write nothing.
#[tokio::test]
async fn bad_patches_write_nothing() {
    let c = Cluster::start().await;
    let path = "/apis/apps/v1/namespaces/default/deployments/d";
    c.create("/apis/apps/v1/namespaces/default/deployments", &deployment("d", "d")).await;
    let before = c.must_get(path).await;
    let call = |ct: &'static str, body: &'static str| {
        let c = &c;
        async move { c.call(Method::PATCH, path, Body::Raw(ct, body.as_bytes().to_vec()), &[]).await }
    };
    let cases: [(&str, &str, u16); 6] = [
        ("application/json-patch+json", r#"[{"op":"test","path":"/spec/replicas","value":9}]"#, 422),
        ("application/json-patch+json", r#"{"op":"nope"}"#, 400),
        ("application/merge-patch+json", r#"{"spec":{"replicas":-3}}"#, 422),
        // the selector of a Deployment is immutable
        ("application/merge-patch+json", r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#, 422),
        ("application/xml", "<x/>", 415),
        ("application/merge-patch+json", "{not json", 400),
    ];
    for (ct, body, want) in cases {
        let resp = call(ct, body).await;
        assert_eq!(resp.status.as_u16(), want, "{ct} {body}: {}", resp.text);
        assert_eq!(resp.json["kind"], "Status", "{ct} {body}");
    }
    assert_eq!(c.must_get(path).await["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);
}

/// kubectl validates strictly by default: a misspelled field is refused by the server
/// with upstream's wording; --validate=warn applies it and prints the warning.
#[tokio::test]
async fn kubectl_field_validation() {
    let c = Cluster::start().await;
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  k: v\n";
    for version in KUBECTL_VERSIONS {
        let ns = format!("v-{}", tag(version));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;
        let out = c.kubectl_stdin(version, &["apply", "-n", &ns, "-f", "-"], manifest);
        assert!(!out.status.success(), "{version}: a misspelled field was accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains(r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "datta""#),
            "{version} stderr: {err}"
        );
        let out = c.kubectl_stdin(version, &["apply", "-n", &ns, "--validate=warn", "-f", "-"], manifest);
        assert!(out.status.success(), "{version} --validate=warn: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(r#"unknown field "datta""#), "{version} warning: {}", text(&out.stderr));
    }
    // duplicate keys in a JSON body: 400 under Strict, a warning under Warn
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#.to_vec();
    let path = "/api/v1/namespaces/default/configmaps";
    let strict = c
        .call(Method::POST, &format!("{path}?fieldValidation=Strict"), Body::Raw("application/json", body.clone()), &[])
        .await;
    assert_eq!(strict.status, 400, "{}", strict.text);
    assert!(strict.json["message"].as_str().unwrap_or("").contains(r#"duplicate field "a""#), "{}", strict.text);
    let warn =
        c.call(Method::POST, &format!("{path}?fieldValidation=Warn"), Body::Raw("application/json", body), &[]).await;
    assert_eq!(warn.status, 201, "{}", warn.text);
    assert!(warn.header_all("warning").iter().any(|w| w.contains(r#"duplicate field \"a\""#)), "{:?}", warn.headers);
    assert_eq!(warn.json["data"]["a"], "2");
}
