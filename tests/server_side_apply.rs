//! Server-side apply and managedFields, through stock kubectl (oldest and newest
//! supported version) and raw HTTP, against the real server over etcd.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn tag(version: &str) -> String {
    version.replace('.', "-")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A Deployment manifest in YAML, optionally with labels on the object.
fn manifest(name: &str, replicas: Option<i64>, labels: &[(&str, &str)]) -> String {
    let mut d = deployment(name, name);
    match replicas {
        Some(r) => d["spec"]["replicas"] = json!(r),
        None => {
            d["spec"].as_object_mut().unwrap().remove("replicas");
        }
    }
    if !labels.is_empty() {
        let map: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        d["metadata"]["labels"] = Value::Object(map);
    }
    serde_yaml::to_string(&d).unwrap()
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| (e["manager"].as_str().unwrap_or("").into(), e["operation"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

fn get_json(c: &Cluster, version: &str, name: &str) -> Value {
    let out = c.kubectl_ok(version, &["get", "deployment", name, "-o", "json", "--show-managed-fields"]);
    serde_json::from_str(&out).unwrap()
}

/// Create, change, drop a field, conflict between two managers, force, managedFields.
fn check_apply_lifecycle(c: &Cluster, version: &str) {
    let name = format!("ssa-{}", tag(version));
    let out = c.kubectl_stdin_ok(
        version,
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        &manifest(&name, Some(2), &[("team", "x")]),
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let obj = get_json(c, version, &name);
    assert_eq!(obj["spec"]["replicas"], 2);
    assert_eq!(obj["metadata"]["labels"]["team"], "x");
    assert_eq!(managers(&obj), vec![("a".to_string(), "Apply".to_string())]);

    // re-applied without the label: the label goes
    c.kubectl_stdin_ok(
        version,
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        &manifest(&name, Some(2), &[]),
    );
    let obj = get_json(c, version, &name);
    assert!(obj["metadata"].get("labels").is_none_or(|l| l.get("team").is_none()), "{}", obj["metadata"]);

    // a second manager changing replicas conflicts, with kubectl's message
    let out = c.kubectl_stdin(
        version,
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        &manifest(&name, Some(3), &[]),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"), "{err}");
    assert_eq!(get_json(c, version, &name)["spec"]["replicas"], 2);

    // forced, b takes replicas over
    c.kubectl_stdin_ok(
        version,
        &["apply", "--server-side", "--field-manager=b", "--force-conflicts", "-f", "-"],
        &manifest(&name, Some(3), &[]),
    );
    let obj = get_json(c, version, &name);
    assert_eq!(obj["spec"]["replicas"], 3);
    let entries = obj["metadata"]["managedFields"].as_array().unwrap();
    let a = entries.iter().find(|e| e["manager"] == "a").unwrap();
    assert!(a["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "{a}");

    // an imperative change is an Update entry next to the Apply ones
    c.kubectl_ok(version, &["label", "deployment", &name, "tier=web"]);
    let obj = get_json(c, version, &name);
    let ops = managers(&obj);
    assert!(ops.contains(&("kubectl-label".into(), "Update".into())), "{ops:?}");
    assert!(ops.contains(&("a".into(), "Apply".into())), "{ops:?}");
    // hidden unless asked for
    let plain = c.kubectl_ok(version, &["get", "deployment", &name, "-o", "yaml"]);
    assert!(!plain.contains("managedFields"), "{plain}");
}

/// Client-side apply first, then server-side apply of a different replicas: another
/// manager conflicts with kubectl-client-side-apply; kubectl itself may take over what
/// client-side apply set and nobody changed since, as upstream allows, and keeps the
/// annotation in step.
fn check_client_then_server_side(c: &Cluster, version: &str) {
    let name = format!("csa-{}", tag(version));
    c.kubectl_stdin_ok(version, &["apply", "-f", "-"], &manifest(&name, Some(1), &[]));
    let obj = get_json(c, version, &name);
    assert!(managers(&obj).contains(&("kubectl-client-side-apply".into(), "Update".into())), "{:?}", managers(&obj));
    let other = ["apply", "--server-side", "--field-manager=other", "-f", "-"];
    let out = c.kubectl_stdin(version, &other, &manifest(&name, Some(4), &[]));
    let err = stderr(&out);
    assert!(err.contains("conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"), "{err}");
    c.kubectl_stdin_ok(version, &["apply", "--server-side", "-f", "-"], &manifest(&name, Some(4), &[]));
    let obj = get_json(c, version, &name);
    assert_eq!(obj["spec"]["replicas"], 4);
    let last = obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str().unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["spec"]["replicas"], 4, "{last}");
}

/// `kubectl scale` owns replicas through the scale subresource.
fn check_scale_then_apply(c: &Cluster, version: &str) {
    let name = format!("scale-{}", tag(version));
    c.kubectl_stdin_ok(version, &["apply", "--server-side", "-f", "-"], &manifest(&name, Some(1), &[]));
    c.kubectl_ok(version, &["scale", "deployment", &name, "--replicas=5"]);
    let obj = get_json(c, version, &name);
    let scaler = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "scale")
        .cloned()
        .unwrap_or_else(|| panic!("no scale entry: {}", obj["metadata"]));
    assert_eq!(scaler["operation"], "Update");
    let out = c.kubectl_stdin(version, &["apply", "--server-side", "-f", "-"], &manifest(&name, Some(2), &[]));
    let err = stderr(&out);
    let who = scaler["manager"].as_str().unwrap();
    assert!(
        err.contains(&format!("conflict with \"{who}\" with subresource \"scale\" using apps/v1: .spec.replicas")),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_server_side_apply() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        check_apply_lifecycle(&c, version);
        check_client_then_server_side(&c, version);
        check_scale_then_apply(&c, version);
    }
}

async fn apply(c: &Cluster, path: &str, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap();
    c.call(Method::PATCH, path, Body::Raw("application/apply-patch+yaml", bytes), &[]).await
}

#[tokio::test]
async fn raw_apply_requests() {
    let c = Cluster::start().await;
    let base = "/api/v1/namespaces/default/configmaps";
    let cm = configmap("raw", json!({"a": "1"}));

    // no fieldManager: PatchOptions are invalid, as upstream
    let r = apply(&c, &format!("{base}/raw"), &cm).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.json["message"].as_str().unwrap().contains("fieldManager: Required value"), "{}", r.text);

    // a body naming another object: rejected, nothing written
    let r = apply(&c, &format!("{base}/other?fieldManager=m"), &cm).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(c.get(&format!("{base}/other")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&format!("{base}/raw")).await.0, StatusCode::NOT_FOUND);

    // a missing object is created
    let r = apply(&c, &format!("{base}/raw?fieldManager=m"), &cm).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["data"]["a"], "1");
    assert_eq!(r.json["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));

    // the same apply again changes nothing
    let rv = r.json["metadata"]["resourceVersion"].clone();
    let r = apply(&c, &format!("{base}/raw?fieldManager=m"), &cm).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["metadata"]["resourceVersion"], rv);

    // a plain update records its manager from the User-Agent-less request's fieldManager
    let mut changed = r.json.clone();
    changed["data"]["b"] = json!("2");
    let (status, updated) = c.put(&format!("{base}/raw?fieldManager=editor"), &changed).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let editor =
        updated["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "editor").cloned();
    assert_eq!(editor.unwrap()["fieldsV1"], json!({"f:data": {"f:b": {}}}));

    // a resourceVersion in the configuration is a precondition
    let mut stale = cm.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let r = apply(&c, &format!("{base}/raw?fieldManager=m"), &stale).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // force belongs to apply only
    let (status, body) = c.patch(&format!("{base}/raw?force=true"), "application/merge-patch+json", &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // a field the schema does not declare is refused, nothing written
    let mut bogus = cm.clone();
    bogus["spec"] = json!({"x": 1});
    let r = apply(&c, &format!("{base}/raw?fieldManager=m"), &bogus).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // status applied through its subresource, recorded as such
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let mut d = deployment("st", "st");
    let r = apply(&c, &format!("{deployments}/st?fieldManager=m"), &d).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    d.as_object_mut().unwrap().remove("spec");
    d["status"] = json!({"replicas": 1});
    let r = apply(&c, &format!("{deployments}/st/status?fieldManager=ctrl"), &d).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"]["replicas"], 1);
    assert_eq!(r.json["spec"]["replicas"], 1, "the spec stays");
    let entries = r.json["metadata"]["managedFields"].as_array().unwrap();
    let ctrl = entries.iter().find(|e| e["manager"] == "ctrl").unwrap_or_else(|| panic!("{}", r.text));
    assert_eq!(ctrl["subresource"], "status");
    assert_eq!(ctrl["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));

    // managedFields in an applied body are refused
    let mut with_fields = cm.clone();
    with_fields["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Update"}]);
    let r = apply(&c, &format!("{base}/raw?fieldManager=m"), &with_fields).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}
