//! Golden cases for strategic merge patch over the Pod and Deployment schemas; expected
//! results follow what kube-apiserver answers for the same patch.

use serde_json::{Value, json};

use super::strategic::{PatchError, apply};
use crate::schema::{Shape, schemas};

fn pod_shape() -> Option<Shape<'static>> {
    schemas().for_kind("", "v1", "Pod")
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}}, "spec": spec})
}

fn patched(original: &Value, patch: Value) -> Value {
    apply(original, &patch, pod_shape()).expect("the patch applies")
}

fn spec(original: &Value, patch: Value) -> Value {
    patched(original, json!({"spec": patch}))["spec"].clone()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
}

fn rejected(original: &Value, patch: Value) -> PatchError {
    apply(original, &patch, pod_shape()).expect_err("the patch is refused")
}

fn two_containers() -> Value {
    pod(json!({"containers": [
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "b", "image": "b:1"},
    ]}))
}

#[test]
fn containers_merge_by_name() {
    let s = spec(&two_containers(), json!({"containers": [{"name": "a", "image": "a:2"}]}));
    assert_eq!(
        s["containers"][0],
        json!({"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]})
    );
    assert_eq!(s["containers"][1], json!({"name": "b", "image": "b:1"}));
}

#[test]
fn new_container_goes_before_the_servers_others() {
    // as upstream: an item only the patch has is placed ahead of server items it
    // cannot be ordered against
    let s = spec(&two_containers(), json!({"containers": [{"name": "c", "image": "c:1", "ports": null}]}));
    assert_eq!(names(&s["containers"]), ["c", "a", "b"]);
    assert_eq!(s["containers"][0], json!({"name": "c", "image": "c:1"}));
    let s =
        spec(&two_containers(), json!({"containers": [{"name": "a", "image": "a:2"}, {"name": "c", "image": "c:1"}]}));
    assert_eq!(names(&s["containers"]), ["a", "c", "b"]);
}

#[test]
fn container_deleted_by_directive() {
    let s = spec(&two_containers(), json!({"containers": [{"name": "a", "$patch": "delete"}]}));
    assert_eq!(s["containers"], json!([{"name": "b", "image": "b:1"}]));
}

#[test]
fn env_merges_by_name_and_ports_by_container_port() {
    let patch = json!({"containers": [{"name": "a",
        "env": [{"name": "Y", "value": "two"}, {"name": "Z", "value": "3"}, {"name": "X", "$patch": "delete"}],
        "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]});
    let s = spec(&two_containers(), patch);
    let a = &s["containers"][0];
    assert_eq!(a["env"], json!([{"name": "Y", "value": "two"}, {"name": "Z", "value": "3"}]));
    assert_eq!(a["ports"], json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]));
}

#[test]
fn volumes_retain_keys_switch_source() {
    let original = pod(json!({"containers": [], "volumes": [
        {"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}]}));
    let patch =
        json!({"volumes": [{"name": "data", "configMap": {"name": "cm"}, "$retainKeys": ["configMap", "name"]}]});
    let s = spec(&original, patch);
    assert_eq!(
        s["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}, {"name": "cache", "emptyDir": {"medium": "Memory"}}])
    );
    // without the directive the two sources would both stay
    let s = spec(&original, json!({"volumes": [{"name": "data", "configMap": {"name": "cm"}}]}));
    assert_eq!(s["volumes"][0], json!({"name": "data", "emptyDir": {}, "configMap": {"name": "cm"}}));
}

#[test]
fn retain_keys_refuses_unlisted_content() {
    let original = pod(json!({"volumes": [{"name": "data", "emptyDir": {}}]}));
    let patch = json!({"spec": {"volumes": [{"name": "data", "configMap": {"name": "cm"}, "$retainKeys": ["name"]}]}});
    assert!(matches!(rejected(&original, patch), PatchError::Invalid(_)));
    let patch = json!({"spec": {"volumes": [{"name": "data", "$retainKeys": "name"}]}});
    assert_eq!(rejected(&original, patch), PatchError::BadRequest("invalid patch format of retainKeys".into()));
}

#[test]
fn deployment_strategy_retain_keys() {
    let shape = schemas().for_kind("apps", "v1", "Deployment");
    let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"type": "Recreate", "$retainKeys": ["type"]}}});
    let result = apply(&original, &patch, shape).expect("applies");
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn tolerations_have_no_merge_strategy_so_are_replaced() {
    let original =
        pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}));
    let s = spec(&original, json!({"tolerations": [{"key": "c", "operator": "Exists"}]}));
    assert_eq!(s["tolerations"], json!([{"key": "c", "operator": "Exists"}]));
}

#[test]
fn finalizers_merge_as_a_set() {
    let original = json!({"metadata": {"name": "p", "finalizers": ["a", "b", "c"]}});
    let result = patched(&original, json!({"metadata": {"finalizers": ["d", "b"]}}));
    // the patch's items in its order; "a" goes before "b", which it preceded on the
    // server, but not before "d", which the server never had
    assert_eq!(result["metadata"]["finalizers"], json!(["d", "a", "b", "c"]));
    let result = patched(&original, json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "x"]}}));
    assert_eq!(result["metadata"]["finalizers"], json!(["a", "c"]));
    let result = patched(&json!({"metadata": {}}), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}));
    assert_eq!(result["metadata"], json!({}));
}

#[test]
fn set_element_order_reorders_containers() {
    let original = pod(json!({"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
    let patch = json!({"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]});
    assert_eq!(names(&spec(&original, patch)["containers"]), ["c", "a", "b"]);
    // with a new item and a server-only item the order list does not name
    let original =
        pod(json!({"containers": [{"name": "1"}, {"name": "2"}, {"name": "9"}, {"name": "3"}, {"name": "4"}]}));
    let patch = json!({"$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "5"}, {"name": "4"}, {"name": "3"}],
        "containers": [{"name": "5", "image": "five"}]});
    assert_eq!(names(&spec(&original, patch)["containers"]), ["2", "1", "5", "9", "4", "3"]);
}

#[test]
fn set_element_order_must_agree_with_the_patch() {
    let original = pod(json!({"containers": [{"name": "a"}, {"name": "b"}]}));
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]}});
    let PatchError::BadRequest(msg) = rejected(&original, patch) else { panic!("400 expected") };
    assert!(msg.starts_with("The order in patch list:"), "{msg}");
}

#[test]
fn patch_replace_on_a_map_and_a_list() {
    let original = two_containers();
    // in a merging list the directive is the list's: the other items become the list
    let s = spec(&original, json!({"containers": [{"$patch": "replace"}, {"name": "z", "image": "z:1", "tty": null}]}));
    assert_eq!(s["containers"], json!([{"name": "z", "image": "z:1"}]));
    let s = spec(&original, json!({"containers": [{"name": "a", "$patch": "replace"}, {"name": "b", "image": "b:2"}]}));
    assert_eq!(s["containers"], json!([{"name": "b", "image": "b:2"}]));
    // on an object it replaces that object
    let original = pod(json!({"securityContext": {"runAsUser": 1, "fsGroup": 2}}));
    let s = spec(&original, json!({"securityContext": {"$patch": "replace", "runAsUser": 3}}));
    assert_eq!(s["securityContext"], json!({"runAsUser": 3}));
    let result = patched(&original, json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}));
    assert_eq!(result["metadata"]["labels"], json!({"only": "this"}));
    let result = patched(&original, json!({"metadata": {"labels": {"$patch": "delete"}}}));
    assert_eq!(result["metadata"]["labels"], json!({}));
}

#[test]
fn null_deletes_and_labels_merge() {
    let original = pod(json!({"nodeSelector": {"disk": "ssd"}, "containers": []}));
    let result = patched(
        &original,
        json!({"metadata": {"labels": {"tier": null, "new": "yes"}}, "spec": {"nodeSelector": null}}),
    );
    assert_eq!(result["metadata"]["labels"], json!({"app": "web", "new": "yes"}));
    assert!(result["spec"].get("nodeSelector").is_none());
}

#[test]
fn untyped_positions_merge_like_a_merge_patch() {
    let original = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"unknownField": {"x": [1, 2], "y": 1}}});
    let result = patched(&original, json!({"spec": {"unknownField": {"x": [3], "y": null}}}));
    assert_eq!(result["spec"]["unknownField"], json!({"x": [3]}));
    let raw = json!({"metadata": {"name": "e"}, "data": {"a": [1], "b": 2}});
    let shape = schemas().for_kind("apps", "v1", "ControllerRevision");
    let result = apply(&raw, &json!({"data": {"a": [2], "c": {"d": null}}}), shape).expect("applies");
    assert_eq!(result["data"], json!({"a": [2], "b": 2, "c": {}}));
}

#[test]
fn directives_never_survive() {
    let original = pod(json!({"containers": [{"name": "a"}]}));
    let patch = json!({"spec": {"containers": [{"name": "n", "env": [{"name": "E", "$patch": "delete"}, {"name": "F"}],
        "$setElementOrder/env": [{"name": "F"}]}], "affinity": {"$patch": "delete"}}});
    let result = patched(&original, patch);
    assert_eq!(result["spec"]["containers"][0], json!({"name": "n", "env": [{"name": "F"}]}));
    assert!(!result.to_string().contains('$'), "{result}");
}

#[test]
fn invalid_patches() {
    let original = two_containers();
    let err = rejected(&original, json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}));
    assert_eq!(err, PatchError::BadRequest("unknown patch type: bogus in map: map[$patch:bogus name:a]".into()));
    let err = rejected(&original, json!({"metadata": {"labels": {"$patch": "merge"}}}));
    assert!(matches!(err, PatchError::BadRequest(m) if m.starts_with("unknown patch type: merge")));
    let err = rejected(&original, json!({"spec": {"containers": [{"image": "x"}]}}));
    assert_eq!(err, PatchError::BadRequest("map: map[image:x] does not contain declared merge key: name".into()));
    let err = rejected(&original, json!({"spec": {"containers": ["a"]}}));
    assert!(matches!(err, PatchError::BadRequest(m) if m.starts_with("list element types are not identical")));
    let err = rejected(&original, json!({"spec": {"containers": [[1]]}}));
    assert!(matches!(err, PatchError::Invalid(_)));
    let err = rejected(&original, json!(["not", "an", "object"]));
    assert!(matches!(err, PatchError::BadRequest(m) if m.contains("cannot unmarshal array")));
    let err = rejected(&original, json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}));
    assert_eq!(err, PatchError::BadRequest("invalid patch format of primitive list".into()));
}

#[test]
fn scale_patch_uses_the_scale_schema() {
    let scale = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": 1}});
    let shape = schemas().for_kind("autoscaling", "v1", "Scale");
    let result = apply(&scale, &json!({"spec": {"replicas": 3}}), shape).expect("applies");
    assert_eq!(result["spec"]["replicas"], 3);
}

#[test]
fn kubectl_three_way_patch() {
    // what kubectl apply sends when a manifest drops a label and env var E2, adds E3 and
    // changes an image (captured from kubectl 1.27)
    let shape = schemas().for_kind("apps", "v1", "Deployment");
    let live = json!({"metadata": {"name": "x", "labels": {"team": "a", "tier": "web"}}, "spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "nginx:1.25", "env": [{"name": "E1", "value": "one"}, {"name": "E2", "value": "two"}]},
                       {"name": "side", "image": "busybox"}]}}}});
    let patch = json!({"metadata": {"labels": {"tier": null}}, "spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
        "containers": [{"$setElementOrder/env": [{"name": "E1"}, {"name": "E3"}],
                        "env": [{"name": "E3", "value": "three"}, {"$patch": "delete", "name": "E2"}],
                        "image": "nginx:1.27", "name": "app"}]}}}});
    let result = apply(&live, &patch, shape).expect("applies");
    assert_eq!(
        result,
        json!({"metadata": {"name": "x", "labels": {"team": "a"}}, "spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "nginx:1.27", "env": [{"name": "E1", "value": "one"}, {"name": "E3", "value": "three"}]},
                       {"name": "side", "image": "busybox"}]}}}})
    );
}

#[test]
fn primitive_list_order_and_deletion() {
    let original = json!({"metadata": {"finalizers": ["a", "b", "x"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"],
        "$deleteFromPrimitiveList/finalizers": ["x"]}});
    assert_eq!(patched(&original, patch)["metadata"]["finalizers"], json!(["c", "b", "a"]));
}

#[test]
fn replace_strategy_replaces_a_map() {
    // PodDisruptionBudget's selector carries patch strategy "replace"
    let shape = schemas().for_kind("policy", "v1", "PodDisruptionBudget");
    let pdb = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "minAvailable": 1}});
    let result = apply(&pdb, &json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}), shape).expect("applies");
    assert_eq!(result["spec"], json!({"selector": {"matchLabels": {"b": "2"}}, "minAvailable": 1}));
}
