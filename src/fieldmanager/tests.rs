use serde_json::{Value, json};

use super::*;
use crate::registry::builtin;

fn deployments() -> &'static ResourceDef {
    builtin("apps", "v1", "deployments")
}

fn manager(name: &str) -> Manager {
    Manager { name: name.into(), subresource: None }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    })
}

fn assert_mentions(err: &ApiError, text: &str) {
    assert!(err.message.contains(text), "{:?} lacks {text:?}", err.message);
}

fn fields_v1(obj: &Value, manager: &str) -> Value {
    let entries = obj.pointer("/metadata/managedFields").and_then(Value::as_array).expect("managedFields");
    let entry = entries.iter().find(|e| e["manager"] == manager).expect("entry for the manager");
    entry["fieldsV1"].clone()
}

#[test]
fn applied_set_names_items_by_keys_and_atomic_selector_whole() {
    let obj = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let expected = json!({
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                }}},
            },
        },
    });
    assert_eq!(fields_v1(&obj, "a"), expected);
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert!(entry["time"].is_string());
}

#[test]
fn apply_merges_lists_by_key_and_keeps_other_fields() {
    let mut live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    // a field nobody applied (as defaulting adds) stays through later applies
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
    let mut config = deployment(2, "nginx:2");
    config["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox"}));
    let obj = merge_applied(deployments(), Some(&live), &config, &manager("a"), false).expect("apply");
    let containers = obj.pointer("/spec/template/spec/containers").and_then(Value::as_array).unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "nginx:2");
    assert_eq!(containers[0]["imagePullPolicy"], "Always");
    assert_eq!(containers[1]["name"], "side");
}

#[test]
fn other_managers_fields_conflict_unless_forced() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let err = merge_applied(deployments(), Some(&live), &deployment(3, "nginx"), &manager("b"), false)
        .expect_err("replicas belong to a");
    assert_eq!(err.code, http::StatusCode::CONFLICT);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(err.message, "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas");
    let causes = &err.details.as_ref().unwrap()["causes"];
    assert_eq!(
        causes[0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"a\"", "field": ".spec.replicas"})
    );
    // the same value is no conflict: both own it
    let shared =
        merge_applied(deployments(), Some(&live), &deployment(2, "nginx"), &manager("b"), false).expect("same");
    assert!(fields_v1(&shared, "a")["f:spec"].get("f:replicas").is_some());
    assert!(fields_v1(&shared, "b")["f:spec"].get("f:replicas").is_some());
    // forced: b takes replicas from a
    let forced =
        merge_applied(deployments(), Some(&live), &deployment(3, "nginx"), &manager("b"), true).expect("force");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(fields_v1(&forced, "a")["f:spec"].get("f:replicas").is_none());
    assert!(fields_v1(&forced, "b")["f:spec"].get("f:replicas").is_some());
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let err = merge_applied(deployments(), Some(&live), &deployment(3, "httpd"), &manager("b"), false).unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
    );
}

#[test]
fn fields_dropped_from_the_configuration_are_removed_unless_owned() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let mut config = deployment(2, "nginx");
    config["metadata"].as_object_mut().unwrap().remove("labels");
    config["spec"].as_object_mut().unwrap().remove("replicas");
    let obj = merge_applied(deployments(), Some(&live), &config, &manager("a"), false).expect("apply");
    assert!(obj["spec"].get("replicas").is_none());
    assert!(obj["metadata"].get("labels").is_none(), "emptied labels go: {}", obj["metadata"]);
    // a field another manager also owns stays
    let both = merge_applied(deployments(), Some(&live), &deployment(2, "nginx"), &manager("b"), false).expect("b");
    let obj = merge_applied(deployments(), Some(&both), &config, &manager("a"), false).expect("apply");
    assert_eq!(obj["spec"]["replicas"], 2);
}

#[test]
fn updates_own_what_they_change_and_take_it_from_appliers() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let mut new = live.clone();
    new["spec"]["replicas"] = json!(5);
    new["metadata"]["labels"]["tier"] = json!("front");
    record_update(
        deployments(),
        Some(&live),
        &mut new,
        &Manager { name: "kubectl".into(), subresource: Some("scale") },
    );
    let entries = new["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["operation"], "Update");
    assert_eq!(entries[1]["subresource"], "scale");
    assert_eq!(
        entries[1]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:tier": {}}}, "f:spec": {"f:replicas": {}}})
    );
    assert!(fields_v1(&new, "a")["f:spec"].get("f:replicas").is_none());
    // an apply of replicas now conflicts with the updater, named as upstream does
    let err = merge_applied(deployments(), Some(&new), &deployment(2, "nginx"), &manager("a"), false).unwrap_err();
    assert_mentions(&err, "conflict with \"kubectl\" with subresource \"scale\" using apps/v1");
}

#[test]
fn create_records_everything_but_identity_and_status() {
    let mut obj = deployment(1, "nginx");
    obj["metadata"]["uid"] = json!("u");
    obj["status"] = json!({"replicas": 0});
    record_update(deployments(), None, &mut obj, &manager("kubectl-create"));
    let set = fields_v1(&obj, "kubectl-create");
    assert!(set.get("f:status").is_none() && set.get("f:apiVersion").is_none());
    // labels appeared: the map itself is recorded too, as upstream's "." shows
    assert_eq!(set["f:metadata"], json!({"f:labels": {".": {}, "f:app": {}}}));
    assert!(set["f:spec"].get("f:replicas").is_some());
    // a no-op update leaves the entries as they were (same time: no write)
    let mut again = obj.clone();
    record_update(deployments(), Some(&obj), &mut again, &manager("kubectl-edit"));
    assert_eq!(again, obj);
}

#[test]
fn invalid_or_reset_managed_fields_from_clients() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let mut garbage = live.clone();
    garbage["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Bogus"}]);
    record_update(deployments(), Some(&live), &mut garbage, &manager("u"));
    assert_eq!(garbage["metadata"]["managedFields"], live["metadata"]["managedFields"]);
    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    record_update(deployments(), Some(&live), &mut reset, &manager("u"));
    assert!(reset["metadata"].get("managedFields").is_none());
}

#[test]
fn manager_from_user_agent() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, "kubectl/v1.33.0 (linux/amd64) kubernetes/abc".parse().unwrap());
    assert_eq!(Manager::from_request(None, &headers, None).name, "kubectl");
    assert_eq!(Manager::from_request(Some("mine"), &headers, None).name, "mine");
}

#[test]
fn unmanaged_objects_are_owned_before_the_first_apply() {
    let mut live = deployment(2, "nginx");
    live["metadata"]["resourceVersion"] = json!("7");
    let err = merge_applied(deployments(), Some(&live), &deployment(3, "nginx"), &manager("a"), false).unwrap_err();
    assert_mentions(&err, "conflict with \"before-first-apply\" using apps/v1: .spec.replicas");
    let same = merge_applied(deployments(), Some(&live), &deployment(2, "nginx"), &manager("a"), false).expect("same");
    assert_eq!(managers_of(&same), vec!["a".to_string(), "before-first-apply".to_string()]);
}

fn managers_of(obj: &Value) -> Vec<String> {
    let entries = obj["metadata"]["managedFields"].as_array().unwrap();
    entries.iter().map(|e| e["manager"].as_str().unwrap().to_string()).collect()
}

#[test]
fn many_updaters_merge_into_ancient_changes() {
    let mut obj = deployment(1, "nginx");
    let mut live = obj.clone();
    record_update(deployments(), None, &mut live, &manager("creator"));
    live["metadata"]["managedFields"][0]["time"] = json!("2025-12-31T00:00:00Z");
    for i in 0..12 {
        obj = live.clone();
        obj["metadata"]["labels"][format!("l{i}")] = json!("x");
        // distinct times, oldest first, as real writes would have
        record_update(deployments(), Some(&live), &mut obj, &manager(&format!("u{i:02}")));
        let entries = obj["metadata"]["managedFields"].as_array_mut().unwrap();
        for e in entries.iter_mut().filter(|e| e["manager"] == format!("u{i:02}")) {
            e["time"] = json!(format!("2026-01-01T00:00:{i:02}Z"));
        }
        live = obj.clone();
    }
    let names = managers_of(&live);
    assert_eq!(names.len(), MAX_UPDATERS, "{names:?}");
    assert!(names.contains(&"ancient-changes".to_string()), "{names:?}");
    assert!(!names.contains(&"creator".to_string()) && names.contains(&"u11".to_string()), "{names:?}");
    let ancient = fields_v1(&live, "ancient-changes");
    assert!(ancient["f:spec"].get("f:replicas").is_some() && ancient["f:metadata"]["f:labels"].get("f:l0").is_some());
}

#[test]
fn manager_names_are_checked() {
    assert!(Manager::validate("kubectl", "PatchOptions").is_ok());
    let err = Manager::validate(&"m".repeat(129), "CreateOptions").unwrap_err();
    assert_eq!(err.code, http::StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err.message.starts_with("CreateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long"),
        "{}",
        err.message
    );
    assert!(Manager::validate("a\nb", "PatchOptions").is_err());
}

#[test]
fn undeclared_fields_are_refused() {
    let mut config = deployment(1, "nginx");
    config["spec"]["template"]["spec"]["containers"][0]["bogus"] = json!(1);
    let err = merge_applied(deployments(), None, &config, &manager("a"), false).unwrap_err();
    assert_eq!(err.code, http::StatusCode::BAD_REQUEST);
    assert_mentions(&err, ".spec.template.spec.containers[0].bogus: field not declared in schema");
}

#[test]
fn status_applies_own_status_only() {
    let live = merge_applied(deployments(), None, &deployment(2, "nginx"), &manager("a"), false).expect("apply");
    let config =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "status": {"replicas": 2}});
    let ctrl = Manager { name: "ctrl".into(), subresource: Some("status") };
    let obj = merge_applied(deployments(), Some(&live), &config, &ctrl, false).expect("status apply");
    let entry = obj["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "ctrl").cloned();
    let entry = entry.expect("ctrl entry");
    assert_eq!(entry["subresource"], "status");
    assert_eq!(entry["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    // the main resource's manager keeps its fields
    assert!(fields_v1(&obj, "a")["f:spec"].get("f:replicas").is_some());
}

#[test]
fn kubectl_server_side_apply_keeps_the_client_side_annotation_in_step() {
    let mut live = deployment(1, "nginx");
    live["metadata"]["annotations"] = json!({LAST_APPLIED: "{\"old\":true}\n", "other": "x"});
    record_update(deployments(), None, &mut live, &manager("kubectl-client-side-apply"));
    let obj = merge_applied(deployments(), Some(&live), &deployment(1, "nginx:2"), &manager("kubectl"), true).unwrap();
    let text = obj["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
    let recorded: Value = serde_json::from_str(text).unwrap();
    assert_eq!(recorded, deployment(1, "nginx:2"));
    // other managers leave it alone
    let obj = merge_applied(deployments(), Some(&live), &deployment(1, "nginx:3"), &manager("ci"), true).unwrap();
    assert_eq!(obj["metadata"]["annotations"][LAST_APPLIED], "{\"old\":true}\n");
}

#[test]
fn kubectl_may_change_what_client_side_apply_set_and_nobody_changed_since() {
    let mut applied = deployment(1, "nginx");
    applied["metadata"]["annotations"] = json!({LAST_APPLIED: deployment(1, "nginx").to_string()});
    let mut live = applied.clone();
    record_update(deployments(), None, &mut live, &manager("kubectl-client-side-apply"));
    let obj = merge_applied(deployments(), Some(&live), &deployment(4, "nginx"), &manager("kubectl"), false)
        .expect("allowed: replicas still hold what client-side apply set");
    assert_eq!(obj["spec"]["replicas"], 4);
    let err = merge_applied(deployments(), Some(&live), &deployment(4, "nginx"), &manager("other"), false).unwrap_err();
    assert_mentions(&err, "conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas");
    // changed since (here without a new annotation): a real conflict again
    let mut drifted = live.clone();
    drifted["spec"]["replicas"] = json!(2);
    let err =
        merge_applied(deployments(), Some(&drifted), &deployment(4, "nginx"), &manager("kubectl"), false).unwrap_err();
    assert_mentions(&err, ".spec.replicas");
}
