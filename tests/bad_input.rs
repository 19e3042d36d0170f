//! Hostile and malformed requests: every one must be answered with a 4xx Status (never
//! a 5xx), and none may leave an object in etcd.

mod common;

use common::*;

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// One bad request: what it sends and the code it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    accept: Option<&'static str>,
    code: u16,
}

fn case(what: &'static str, method: Method, path: &str, code: u16) -> Case {
    Case { what, method, path: path.to_string(), content_type: None, body: Vec::new(), accept: None, code }
}

impl Case {
    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = serde_json::to_vec(&body).unwrap();
        self
    }
    fn raw(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }
    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }
}

fn sts_as_v1() -> Value {
    json!({
        "apiVersion": "v1", "kind": "StatefulSet", "metadata": {"name": "bad-sts"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "serviceName": "x",
                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
    })
}

fn three_replicas_as_text() -> Value {
    let mut d = deployment("bad-replicas", "x");
    d["spec"]["replicas"] = json!("three");
    d
}

fn with_unknown_field(name: &str) -> Value {
    let mut d = deployment(name, name);
    d["spec"]["bogusField"] = json!(1);
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    d
}

/// The bad requests, and the etcd keys none of them may create.
fn cases() -> Vec<Case> {
    let over_limit = {
        let mut cm = configmap("huge", json!({}));
        cm["data"]["big"] = json!("x".repeat(3 * 1024 * 1024 + 1));
        serde_json::to_vec(&cm).unwrap()
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let yaml_bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n\
                     b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
                     d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
                     f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
                     h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    vec![
        case("malformed JSON", Method::POST, DEPLOYS, 400)
            .raw("application/json", r#"{"apiVersion": "apps/v1", "kind": "#),
        case("JSON with trailing garbage", Method::POST, CMS, 400)
            .raw("application/json", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"trail"}} xyz"#),
        case("empty body", Method::POST, CMS, 400).raw("application/json", ""),
        case("a JSON array", Method::POST, CMS, 400).raw("application/json", "[1,2,3]"),
        case("a JSON string", Method::POST, CMS, 400).raw("application/json", "\"configmap\""),
        case("JSON null", Method::POST, CMS, 400).raw("application/json", "null"),
        case("nesting 100000 deep", Method::POST, CMS, 400).raw("application/json", deep.clone()),
        case("nesting 100000 deep as YAML", Method::POST, CMS, 400).raw("application/yaml", deep),
        case("malformed YAML", Method::POST, DEPLOYS, 400)
            .raw("application/yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: [unclosed\n  : :\n"),
        case("YAML that is not a mapping", Method::POST, CMS, 400).raw("application/yaml", "- just\n- a list\n"),
        case("YAML alias bomb", Method::POST, CMS, 400).raw("application/yaml", yaml_bomb),
        case("YAML that is not UTF-8", Method::POST, CMS, 400)
            .raw("application/yaml", vec![0xff, 0xfe, b'a', b':', b' ', 0xc3]),
        case("a StatefulSet as apiVersion v1", Method::POST, "/apis/apps/v1/namespaces/default/statefulsets", 400)
            .json(sts_as_v1()),
        case("a ConfigMap sent to pods", Method::POST, "/api/v1/namespaces/default/pods", 400)
            .json(configmap("wrong-kind", json!({}))),
        case("a Deployment sent to statefulsets", Method::POST, "/apis/apps/v1/namespaces/default/statefulsets", 400)
            .json(deployment("wrong-kind-2", "x")),
        case("a body over 3 MiB", Method::POST, CMS, 413).raw("application/json", over_limit.clone()),
        case("a YAML body over 3 MiB", Method::POST, CMS, 413).raw("application/yaml", over_limit.clone()),
        case("a PUT over 3 MiB", Method::PUT, &format!("{CMS}/existing"), 413)
            .raw("application/json", over_limit.clone()),
        case("a PATCH over 3 MiB", Method::PATCH, &format!("{CMS}/existing"), 413)
            .raw("application/merge-patch+json", over_limit),
        case("an invalid name", Method::POST, CMS, 422).json(configmap("Not A Valid Name", json!({}))),
        case("replicas as a string", Method::POST, DEPLOYS, 400).json(three_replicas_as_text()),
        case("labels as a list", Method::POST, CMS, 400).json(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "labels-list", "labels": ["a"]}}),
        ),
        case("data values as numbers", Method::POST, CMS, 400)
            .json(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "numbers"}, "data": {"a": 1}})),
        case(
            "an unknown field under fieldValidation=Strict",
            Method::POST,
            &format!("{DEPLOYS}?fieldValidation=Strict"),
            400,
        )
        .json(with_unknown_field("strict")),
        case("fieldValidation=Bogus", Method::POST, &format!("{CMS}?fieldValidation=Bogus"), 400)
            .json(configmap("bogus-validation", json!({}))),
        case("dryRun=Some", Method::POST, &format!("{CMS}?dryRun=Some"), 400)
            .json(configmap("bogus-dryrun", json!({}))),
        case("text/plain", Method::POST, CMS, 415).raw("text/plain", "name: plain"),
        case("an empty protobuf envelope", Method::POST, CMS, 400)
            .raw("application/vnd.kubernetes.protobuf", vec![0x6b, 0x38, 0x73, 0x00]),
        case("protobuf without its magic", Method::POST, CMS, 400)
            .raw("application/vnd.kubernetes.protobuf", vec![0x0a, 0x02, 0x08, 0x01]),
        case("truncated protobuf", Method::POST, CMS, 400)
            .raw("application/vnd.kubernetes.protobuf", vec![0x6b, 0x38, 0x73, 0x00, 0x0a, 0x7f, 0x0a]),
        case("an unknown Accept", Method::GET, CMS, 406).accept("text/html"),
        case("an unknown Accept on get", Method::GET, "/api/v1/namespaces/default", 406).accept("application/xml"),
        case("PUT on a collection", Method::PUT, CMS, 405).json(configmap("put-collection", json!({}))),
        case("POST on an object", Method::POST, &format!("{CMS}/existing"), 405).json(configmap("existing", json!({}))),
        case("DELETE on a status subresource", Method::DELETE, "/api/v1/namespaces/default/pods/p/status", 405),
        case("deletecollection of namespaces", Method::DELETE, "/api/v1/namespaces", 405),
        case("deletecollection across all namespaces", Method::DELETE, "/api/v1/configmaps", 405),
        case("deletecollection of services everywhere", Method::DELETE, "/api/v1/services", 405),
        case("POST to a group version", Method::POST, "/apis/apps/v1", 405).json(json!({})),
        case("an unknown resource", Method::GET, "/api/v1/namespaces/default/widgets", 404),
        case("an unknown group", Method::GET, "/apis/example.com/v1/widgets", 404),
        case("an unknown version", Method::GET, "/apis/apps/v1beta9/deployments", 404),
        case("an unknown subresource", Method::GET, "/api/v1/namespaces/default/configmaps/existing/exec", 404),
        case("a cluster-scoped kind under a namespace", Method::GET, "/api/v1/namespaces/default/nodes", 404),
        case("a path too deep", Method::GET, "/api/v1/namespaces/default/pods/a/b/c", 404),
        case("an unknown top-level path", Method::GET, "/nonsense", 404),
        case("POST to an unknown resource", Method::POST, "/api/v1/namespaces/default/widgets", 404)
            .json(json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}})),
        case("an invalid labelSelector", Method::GET, &format!("{CMS}?labelSelector=a%20in%20(b"), 400),
        case("a labelSelector with a bad key", Method::GET, &format!("{CMS}?labelSelector=-bad-%3Dx"), 400),
        case("a labelSelector with an empty set", Method::GET, &format!("{CMS}?labelSelector=a%20in%20()"), 400),
        case(
            "a labelSelector with a bad set value",
            Method::GET,
            &format!("{CMS}?labelSelector=a%20in%20(b%20c)"),
            400,
        ),
        case("an invalid fieldSelector", Method::GET, &format!("{CMS}?fieldSelector=metadata.name"), 400),
        case("a garbage continue token", Method::GET, &format!("{CMS}?limit=1&continue=garbage!!"), 400),
        case("a base64 continue token of nonsense", Method::GET, &format!("{CMS}?limit=1&continue=e30"), 400),
        case("limit=abc", Method::GET, &format!("{CMS}?limit=abc"), 400),
        case("resourceVersion=abc", Method::GET, &format!("{CMS}?resourceVersion=abc"), 400),
        case(
            "resourceVersionMatch=Sometimes",
            Method::GET,
            &format!("{CMS}?resourceVersion=1&resourceVersionMatch=Sometimes"),
            400,
        ),
        case("watch from resourceVersion=abc", Method::GET, &format!("{CMS}?watch=1&resourceVersion=abc"), 400),
        case("a JSON patch that is not a patch", Method::PATCH, &format!("{CMS}/existing"), 400)
            .raw("application/json-patch+json", r#"{"op": "add"}"#),
        case("a merge patch that is not an object", Method::PATCH, &format!("{CMS}/existing"), 400)
            .raw("application/merge-patch+json", "[1]"),
        case("a merge patch of malformed JSON", Method::PATCH, &format!("{CMS}/existing"), 400)
            .raw("application/merge-patch+json", "{"),
        case("a patch with an unknown patch type", Method::PATCH, &format!("{CMS}/existing"), 415)
            .raw("application/json", r#"{"data": {"a": "b"}}"#),
        case("a patch turning data into a number", Method::PATCH, &format!("{CMS}/existing"), 400)
            .raw("application/merge-patch+json", r#"{"data": 5}"#),
        case("a JSON patch test that fails", Method::PATCH, &format!("{CMS}/existing"), 422)
            .raw("application/json-patch+json", r#"[{"op": "test", "path": "/data/k", "value": "other"}]"#),
        case("a JSON patch renaming the object", Method::PATCH, &format!("{CMS}/existing"), 400)
            .raw("application/json-patch+json", r#"[{"op": "replace", "path": "/metadata/name", "value": "renamed"}]"#),
        case("a DeleteOptions that is not one", Method::DELETE, &format!("{CMS}/existing"), 400)
            .raw("application/json", "{{{"),
        case("a PUT naming another object", Method::PUT, &format!("{CMS}/existing"), 400)
            .json(configmap("someone-else", json!({}))),
        case("a PUT to another namespace", Method::PUT, &format!("{CMS}/existing"), 400).json(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "existing", "namespace": "kube-system"}})),
        case("includeObject=Everything", Method::GET, &format!("{CMS}?includeObject=Everything"), 400)
            .accept("application/json;as=Table;v=v1;g=meta.k8s.io"),
    ]
}

/// Every bad request gets its 4xx Status and writes nothing.
#[tokio::test]
async fn bad_requests_get_4xx_status_and_write_nothing() {
    let c = Cluster::start().await;
    let existing = c.create(CMS, &configmap("existing", json!({"k": "v"}))).await;
    let keys_before = c.etcd_keys("/registry/").await;
    let mut failures = Vec::new();
    for case in cases() {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = case.accept {
            headers.push(("accept", a));
        }
        let body = match case.content_type {
            Some(ct) => Body::Raw(ct, case.body.clone()),
            None => Body::None,
        };
        let r = c.call(case.method.clone(), &case.path, body, &headers).await;
        let code = r.status.as_u16();
        if r.status.is_server_error() {
            failures.push(format!("{}: a server error {code}: {}", case.what, r.text));
            continue;
        }
        if code != case.code {
            failures.push(format!("{}: got {code}, want {}: {}", case.what, case.code, r.text));
            continue;
        }
        if r.json["kind"] != "Status" || r.json["code"] != case.code || r.json["status"] != "Failure" {
            failures.push(format!("{}: not a failure Status with code {}: {}", case.what, case.code, r.text));
        }
        if r.header("content-type") != "application/json" {
            failures.push(format!("{}: Status served as {:?}", case.what, r.header("content-type")));
        }
    }
    assert!(failures.is_empty(), "{} bad requests were mishandled:\n{}", failures.len(), failures.join("\n"));

    // nothing was written, nothing changed
    assert_eq!(c.etcd_keys("/registry/").await, keys_before, "a bad request wrote to etcd");
    let after = c.must_get(&format!("{CMS}/existing")).await;
    assert_eq!(after["metadata"]["resourceVersion"], existing["metadata"]["resourceVersion"], "{after}");
    assert_eq!(after["data"], json!({"k": "v"}));
    // and the server still serves
    let r = c.call(Method::GET, "/readyz", Body::None, &[]).await;
    assert_eq!(r.text, "ok");
}

/// Unknown fields: Strict refuses them, Warn (the default) accepts the object with a
/// Warning header per field, Ignore accepts silently; the fields are never stored.
#[tokio::test]
async fn unknown_fields_by_field_validation() {
    let c = Cluster::start().await;

    let r = c
        .call(Method::POST, &format!("{DEPLOYS}?fieldValidation=Strict"), Body::Json(&with_unknown_field("s")), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let msg = r.json["message"].as_str().unwrap_or_default();
    assert!(msg.contains("spec.bogusField") && msg.contains("imagePullPolcy"), "{msg}");
    assert!(c.etcd_get("/registry/deployments/default/s").await.is_none());

    for (query, name) in [("?fieldValidation=Warn", "warn"), ("", "default-warn")] {
        let r = c.call(Method::POST, &format!("{DEPLOYS}{query}"), Body::Json(&with_unknown_field(name)), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let warnings = r.header_all("warning");
        assert_eq!(warnings.len(), 2, "one Warning per unknown field: {warnings:?}");
        assert!(warnings.iter().all(|w| w.starts_with("299 - ")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("spec.bogusField")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("spec.template.spec.containers[0].imagePullPolcy")), "{warnings:?}");
        let (raw, _) = c.etcd_get(&format!("/registry/deployments/default/{name}")).await.expect("stored");
        let stored = String::from_utf8(raw).unwrap();
        assert!(
            !stored.contains("bogusField") && !stored.contains("imagePullPolcy"),
            "unknown fields stored: {stored}"
        );
    }

    let r = c
        .call(
            Method::POST,
            &format!("{DEPLOYS}?fieldValidation=Ignore"),
            Body::Json(&with_unknown_field("ignore")),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.header_all("warning").is_empty(), "Ignore warned: {:?}", r.header_all("warning"));

    // the same rules on update and patch
    let mut d = c.must_get(&format!("{DEPLOYS}/ignore")).await;
    d["spec"]["alsoBogus"] = json!(true);
    let r = c.call(Method::PUT, &format!("{DEPLOYS}/ignore?fieldValidation=Strict"), Body::Json(&d), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = c.call(Method::PUT, &format!("{DEPLOYS}/ignore"), Body::Json(&d), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header_all("warning").len(), 1, "{:?}", r.header_all("warning"));
    let patch = serde_json::to_vec(&json!({"spec": {"patchBogus": 1}})).unwrap();
    let r = c
        .call(
            Method::PATCH,
            &format!("{DEPLOYS}/ignore?fieldValidation=Strict"),
            Body::Raw("application/merge-patch+json", patch),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // YAML bodies go through the same decoder
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  bogus: 1\ndata:\n  k: v\n";
    let r = c
        .call(Method::POST, &format!("{CMS}?fieldValidation=Strict"), Body::Raw("application/yaml", yaml.into()), &[])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = c.call(Method::POST, CMS, Body::Raw("application/yaml", yaml.into()), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["data"]["k"], "v");
    assert!(r.header_all("warning").iter().any(|w| w.contains("metadata.bogus")), "{:?}", r.header_all("warning"));
    // a YAML answer when asked for one
    let r = c.call(Method::GET, &format!("{CMS}/from-yaml"), Body::None, &[("accept", "application/yaml")]).await;
    assert_eq!(r.header("content-type"), "application/yaml");
    assert!(r.text.contains("name: from-yaml"), "{}", r.text);
}
