//! Strategic merge patch end to end: raw PATCH requests, `kubectl patch`, `kubectl set
//! image` and client-side `kubectl apply` of changed manifests (a three-way strategic
//! merge patch computed from the last-applied annotation), with kubectl 1.27 and 1.33.

mod common;

use common::*;

const SMP: &str = "application/strategic-merge-patch+json";

fn tag(version: &str) -> String {
    version.replace('.', "-")
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().into_iter().flatten().filter_map(|i| i["name"].as_str()).collect()
}

fn with_env(mut deploy: Value) -> Value {
    deploy["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    deploy
}

/// A raw SMP adds a container and an env var and keeps what was there; malformed ones
/// are 4xx Status answers that change nothing.
#[tokio::test]
async fn raw_strategic_merge_patch() {
    let c = Cluster::start().await;
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    c.create("/apis/apps/v1/namespaces/default/deployments", &with_env(deployment("web", "web"))).await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "B", "value": "2"}]},
        {"name": "side", "image": "busybox:1.36"},
    ]}}}});
    let (status, body) = c.patch(path, SMP, &patch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let containers = &body["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["c", "side"], "{containers}");
    assert_eq!(containers[0]["image"], "nginx:1.25");
    assert_eq!(names(&containers[0]["env"]), ["B", "A"], "as upstream, an item only the patch has goes first");
    assert_eq!(containers[1]["imagePullPolicy"], "IfNotPresent", "defaults apply to the added container");

    let (status, body) = c.patch(path, SMP, &json!({"metadata": {"labels": {"x": "1", "y": "2"}}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c.patch(path, SMP, &json!({"metadata": {"labels": {"x": null}}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["labels"], json!({"y": "2"}));

    let before = c.must_get(path).await;
    for (bad, code) in [
        (json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "$patch": "bogus"}]}}}}), 400),
        (json!({"spec": {"template": {"spec": {"containers": [{"image": "nameless"}]}}}}), 400),
        (json!({"metadata": {"labels": {"$patch": "sideways"}}}), 400),
        (
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "v", "emptyDir": {}, "$retainKeys": ["name"]}]}}}}),
            422,
        ),
        (json!(["not", "an", "object"]), 400),
        (json!({"spec": {"template": {"spec": {"containers": {"name": "c"}}}}}), 400),
    ] {
        let (status, body) = c.patch(path, SMP, &bad).await;
        assert_eq!(status.as_u16(), code, "{bad}: {body}");
        status_reason(status, &body);
    }
    assert_eq!(c.must_get(path).await, before, "a refused patch changed the object");
}

/// SMP on `/status` merges pod conditions by type and leaves the spec alone; on `/scale`
/// it uses the Scale schema.
#[tokio::test]
async fn strategic_merge_patch_on_subresources() {
    let c = Cluster::start().await;
    let path = "/api/v1/namespaces/default/pods/p";
    c.create("/api/v1/namespaces/default/pods", &pod("p", "nginx:1.25")).await;
    let ready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
    let (status, body) = c.patch(&format!("{path}/status"), SMP, &ready).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scheduled = json!({"spec": {"nodeName": "ignored"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}});
    let (status, body) = c.patch(&format!("{path}/status"), SMP, &scheduled).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let conditions = &body["status"]["conditions"];
    let types: Vec<&str> = conditions.as_array().unwrap().iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(types, ["PodScheduled", "Ready"], "{conditions}");
    assert_eq!(conditions[1]["status"], "True");
    assert_eq!(body["status"]["phase"], "Running");
    assert!(body["spec"].get("nodeName").is_none(), "/status changed the spec: {body}");

    let deploy = "/apis/apps/v1/namespaces/default/deployments/web";
    c.create("/apis/apps/v1/namespaces/default/deployments", &deployment("web", "web")).await;
    let (status, body) = c.patch(&format!("{deploy}/scale"), SMP, &json!({"spec": {"replicas": 4}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "Scale");
    assert_eq!(c.must_get(deploy).await["spec"]["replicas"], 4);
}

/// `kubectl patch --type strategic` and `kubectl set image` (an SMP naming one container).
#[tokio::test]
async fn kubectl_patch_strategic_and_set_image() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let name = format!("smp-{}", tag(version));
        let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
        c.create("/apis/apps/v1/namespaces/default/deployments", &with_env(deployment(&name, &name))).await;
        let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:1.36"},{"name":"c","env":[{"name":"B","value":"2"}]}]}}}}"#;
        let out = c.kubectl_ok(version, &["patch", "deployment", &name, "--type", "strategic", "-p", patch]);
        assert!(out.contains("patched"), "{version}: {out}");
        let d = c.must_get(&path).await;
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["side", "c"], "{version}: {containers}");
        assert_eq!(names(&containers[1]["env"]), ["B", "A"], "{version}");

        let out = c.kubectl_ok(version, &["set", "image", &format!("deployment/{name}"), "c=nginx:1.27"]);
        assert!(out.contains("image updated"), "{version}: {out}");
        let d = c.must_get(&path).await;
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[1]["image"], "nginx:1.27", "{version}: {containers}");
        assert_eq!(containers[0]["image"], "busybox:1.36", "{version}");
        assert_eq!(names(&containers[1]["env"]), ["B", "A"], "{version}");

        let out = c.kubectl(
            version,
            &["patch", "deployment", &name, "-p", r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#],
        );
        assert!(!out.status.success(), "{version}: a list item without its merge key was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("does not contain declared merge key: name"), "{version}: {stderr}");
    }
}

fn manifest(name: &str, labels: &str, image: &str, env: &str, containers_order_swapped: bool) -> String {
    let app = format!("  - name: app\n    image: {image}\n    env:\n{env}    ports:\n    - containerPort: 80\n");
    let side = "  - name: side\n    image: busybox:1.36\n    command: [sleep, infinity]\n".to_string();
    let containers = if containers_order_swapped { side + &app } else { app + &side };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels:\n{labels}spec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n{}",
        containers.lines().map(|l| format!("    {l}\n")).collect::<String>()
    )
}

/// Client-side `kubectl apply` of changed manifests: kubectl computes a three-way SMP
/// against its last-applied annotation; the object ends up exactly as the manifest says.
#[tokio::test]
async fn kubectl_apply_changed_manifests() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let name = format!("apply-{}", tag(version));
        let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
        let env = "    - name: E1\n      value: one\n    - name: E2\n      value: two\n";
        let first = manifest(&name, "    team: a\n    tier: web\n", "nginx:1.25", env, false);
        c.kubectl_stdin_ok(version, &["apply", "-f", "-"], &first);

        // image changed, E3 added, E2 removed, label tier removed
        let env = "    - name: E1\n      value: one\n    - name: E3\n      value: three\n";
        let second = manifest(&name, "    team: a\n", "nginx:1.27", env, false);
        let out = c.kubectl_stdin_ok(version, &["apply", "-f", "-"], &second);
        assert!(out.contains("configured"), "{version}: {out}");
        let d = c.must_get(&path).await;
        assert_eq!(d["metadata"]["labels"], json!({"team": "a"}), "{version}");
        let containers = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["app", "side"], "{version}");
        assert_eq!(containers[0]["image"], "nginx:1.27", "{version}");
        assert_eq!(containers[0]["env"], json!([{"name": "E1", "value": "one"}, {"name": "E3", "value": "three"}]));
        assert_eq!(containers[0]["ports"][0]["containerPort"], 80);

        // the same containers, listed the other way round
        let third = manifest(&name, "    team: a\n", "nginx:1.27", env, true);
        let out = c.kubectl_stdin_ok(version, &["apply", "-f", "-"], &third);
        assert!(out.contains("configured"), "{version}: {out}");
        let d = c.must_get(&path).await;
        assert_eq!(names(&d["spec"]["template"]["spec"]["containers"]), ["side", "app"], "{version}");

        // unchanged: nothing to send
        let out = c.kubectl_stdin_ok(version, &["apply", "-f", "-"], &third);
        assert!(out.contains("unchanged"), "{version}: {out}");
    }
}
