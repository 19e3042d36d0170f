//! The OpenAPI documents: `kubectl explain` (v3, and v2 through its protobuf form) with
//! the oldest and newest supported kubectl, and the documents themselves over raw HTTP.

mod common;

use common::*;

/// kubectl's Accept header for the v2 document.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The parts of gnostic's openapi.v2.Document this test reads; a schema stays bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

/// A gnostic Schema reduced to its properties and vendor extensions.
#[derive(Clone, PartialEq, prost::Message)]
struct Schema {
    #[prost(message, optional, tag = "25")]
    properties: Option<Definitions>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Yaml>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Yaml {
    #[prost(string, tag = "2")]
    yaml: String,
}

impl Schema {
    fn property(&self, name: &str) -> Option<&Schema> {
        let properties = self.properties.as_ref()?.additional_properties.iter();
        properties.filter(|p| p.name == name).find_map(|p| p.value.as_ref())
    }

    fn extension(&self, name: &str) -> Option<&str> {
        let ext = self.vendor_extension.iter().find(|e| e.name == name)?;
        ext.value.as_ref().map(|v| v.yaml.trim())
    }
}

/// Every `$ref` under `node`, with `prefix` stripped.
fn refs(node: &Value, prefix: &str, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match value.as_str() {
                    Some(target) if key == "$ref" => out.push(target.trim_start_matches(prefix).to_string()),
                    _ => refs(value, prefix, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, prefix, out)),
        _ => {}
    }
}

fn assert_refs_resolve(doc: &Value, prefix: &str, schemas: &Value, what: &str) {
    let mut found = Vec::new();
    refs(doc, prefix, &mut found);
    assert!(!found.is_empty(), "{what}: no refs");
    for name in found {
        assert!(schemas.get(&name).is_some(), "{what}: {name} does not resolve");
    }
}

/// A field's schema with its `allOf`/`$ref` followed, the way kubectl's OpenAPI 3 patch
/// meta lookup walks a document.
fn field<'a>(schemas: &'a Value, schema: &'a Value, name: &str) -> &'a Value {
    let mut node = &schema["properties"][name];
    if let Some(first) = node["allOf"].get(0) {
        node = first;
    }
    match node["$ref"].as_str() {
        Some(target) => &schemas[target.trim_start_matches("#/components/schemas/")],
        None => node,
    }
}

fn has_line(out: &str, needle: &str) -> bool {
    out.lines().any(|l| l.trim_start().starts_with(needle))
}

#[tokio::test]
async fn kubectl_explain() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let containers = c.kubectl_ok(version, &["explain", "pod.spec.containers"]);
        assert!(containers.contains("FIELDS:"), "{version}: {containers}");
        assert!(has_line(&containers, "imagePullPolicy"), "{version}: {containers}");
        assert!(containers.contains("Image pull policy"), "{version}: descriptions missing: {containers}");

        let recursive = c.kubectl_ok(version, &["explain", "deployment", "--recursive"]);
        assert!(has_line(&recursive, "maxSurge\t<IntOrString>"), "{version}: {recursive}");
        assert!(has_line(&recursive, "imagePullPolicy"), "{version}: {recursive}");

        let v2 = c.kubectl_ok(version, &["explain", "pods", "--output=plaintext-openapiv2"]);
        assert!(v2.contains("KIND:") && v2.contains("Pod"), "{version}: {v2}");
        assert!(has_line(&v2, "spec"), "{version}: {v2}");
        let v2_field = c.kubectl_ok(version, &["explain", "pods.spec.containers", "--output=plaintext-openapiv2"]);
        assert!(has_line(&v2_field, "imagePullPolicy"), "{version}: {v2_field}");

        let lease = c.kubectl_ok(version, &["explain", "leases.spec"]);
        assert!(has_line(&lease, "holderIdentity"), "{version}: {lease}");
        let event = c.kubectl_ok(version, &["explain", "events", "--api-version=events.k8s.io/v1"]);
        assert!(has_line(&event, "reportingController"), "{version}: {event}");
    }
}

/// Every resource discovery lists explains through both documents.
#[tokio::test]
async fn kubectl_explains_every_resource() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let resources = c.kubectl_ok(version, &["api-resources", "--no-headers"]);
        for line in resources.lines() {
            // NAME [SHORTNAMES] APIVERSION NAMESPACED KIND
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (plural, api_version) = (fields[0], fields[fields.len() - 3]);
            for output in ["plaintext", "plaintext-openapiv2"] {
                let args = ["explain", plural, &format!("--api-version={api_version}"), &format!("--output={output}")];
                let out = c.kubectl_ok(version, &args);
                assert!(out.contains("FIELDS:"), "{version} {args:?}: {out}");
            }
        }
    }
}

#[tokio::test]
async fn v2_json_has_schemas_paths_and_patch_strategies() {
    let c = Cluster::start().await;
    let r = c.call(Method::GET, "/openapi/v2", Body::None, &[("accept", "application/json")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json;
    assert_eq!(doc["swagger"], "2.0");
    let defs = &doc["definitions"];
    let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{containers}");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    let gvk = &defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0];
    assert_eq!((gvk["group"].as_str(), gvk["kind"].as_str()), (Some("apps"), Some("Deployment")));
    for name in ["io.k8s.api.autoscaling.v1.Scale", "io.k8s.api.events.v1.Event", "io.k8s.api.policy.v1.Eviction"] {
        assert!(defs.get(name).is_some(), "{name} missing");
    }
    assert_refs_resolve(&doc, "#/definitions/", defs, "v2");

    let read = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"];
    assert_eq!(read["operationId"], "readCoreV1NamespacedPod");
    assert_eq!(read["x-kubernetes-action"], "get");
    assert_eq!(read["responses"]["200"]["schema"]["$ref"], "#/definitions/io.k8s.api.core.v1.Pod");
    let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");

    let etag = r.headers.get("etag").and_then(|v| v.to_str().ok()).expect("etag").to_string();
    let again = c
        .call(Method::GET, "/openapi/v2", Body::None, &[("accept", "application/json"), ("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn v2_protobuf_decodes() {
    use prost::Message;
    let c = Cluster::start().await;
    let json = c.call(Method::GET, "/openapi/v2", Body::None, &[("accept", "application/json")]).await.json;
    let resp = c.http.get(c.url("/openapi/v2")).header("accept", V2_PROTOBUF).send().await.expect("GET /openapi/v2");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap_or_default().to_string();
    assert!(content_type.contains("protobuf"), "{content_type}");
    let body = resp.bytes().await.expect("body");
    let doc = Document::decode(body.as_ref()).expect("a gnostic Document");
    assert_eq!(doc.swagger, "2.0");
    let definitions = doc.definitions.unwrap_or_default().additional_properties;
    assert_eq!(definitions.len(), json["definitions"].as_object().map(|m| m.len()).unwrap_or_default());
    let find = |name: &str| definitions.iter().find(|d| d.name == name).and_then(|d| d.value.as_ref());
    let containers = find("io.k8s.api.core.v1.PodSpec").and_then(|s| s.property("containers")).expect("containers");
    assert_eq!(containers.extension("x-kubernetes-patch-merge-key"), Some("name"));
    assert_eq!(containers.extension("x-kubernetes-patch-strategy"), Some("merge"));
    let gvk = find("io.k8s.api.core.v1.Pod").and_then(|p| p.extension("x-kubernetes-group-version-kind"));
    let gvk = gvk.unwrap_or_default();
    assert!(gvk.contains("kind: Pod") && gvk.contains("version: v1"), "{gvk}");
}

#[tokio::test]
async fn v3_documents_resolve_and_carry_extensions() {
    let c = Cluster::start().await;
    let (status, root) = c.get("/openapi/v3").await;
    assert_eq!(status, StatusCode::OK);
    let paths = root["paths"].as_object().expect("paths").clone();
    for gv in ["api/v1", "apis/apps/v1", "apis/batch/v1", "apis/events.k8s.io/v1", "apis/networking.k8s.io/v1"] {
        assert!(paths.contains_key(gv), "{gv} missing from {paths:?}");
    }
    for (gv, entry) in &paths {
        let url = entry["serverRelativeURL"].as_str().expect("serverRelativeURL");
        let r = c.call(Method::GET, url, Body::None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.header("cache-control"), "public, immutable", "{url}");
        let schemas = &r.json["components"]["schemas"];
        assert_refs_resolve(&r.json, "#/components/schemas/", schemas, gv);
        let with_gvk = schemas.as_object().expect("schemas").values();
        assert!(with_gvk.filter(|s| s.get("x-kubernetes-group-version-kind").is_some()).count() > 0, "{gv}");
        let etag = r.header("etag").to_string();
        let again = c.call(Method::GET, url, Body::None, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{url}");
    }
    let core = c.must_get(paths["api/v1"]["serverRelativeURL"].as_str().unwrap_or_default()).await;
    let pod_spec = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"];
    assert_eq!(pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(pod_spec["properties"]["volumes"]["x-kubernetes-patch-strategy"], "merge,retainKeys");
    // a ref with a description is wrapped, as kubectl expects of OpenAPI 3
    let affinity = &pod_spec["properties"]["affinity"];
    assert_eq!(affinity["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.core.v1.Affinity", "{affinity}");
    assert!(affinity["description"].is_string());
    let apps = c.must_get(paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap_or_default()).await;
    let schemas = &apps["components"]["schemas"];
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    let pod_spec = field(schemas, field(schemas, field(schemas, deployment, "spec"), "template"), "spec");
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{pod_spec}");
    let post = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
    assert_eq!(post["x-kubernetes-group-version-kind"]["kind"], "Pod");
    let field_validation = post["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == "fieldValidation");
    assert!(field_validation, "{post}");
}
