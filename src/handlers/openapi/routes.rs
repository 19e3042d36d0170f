//! Every operation the server answers, described once and rendered by both the Swagger
//! 2.0 (`v2.rs`) and the OpenAPI 3 (`v3.rs`) documents. Operation ids, tags and actions
//! follow upstream's naming so clients that look operations up by them find ours.

use serde_json::{Map, Value, json};

use crate::registry::ResourceDef;
use crate::schema::schemas;

pub const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// Media types of ordinary responses and request bodies.
pub const OBJECT_TYPES: &[&str] = &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];
/// Media types of watch streams.
pub const WATCH_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
pub const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// A query parameter: name and JSON type.
pub type Param = (&'static str, &'static str);

const WRITE_PARAMS: &[Param] =
    &[("pretty", "string"), ("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string")];
const PATCH_PARAMS: &[Param] = &[
    ("pretty", "string"),
    ("dryRun", "string"),
    ("fieldManager", "string"),
    ("fieldValidation", "string"),
    ("force", "boolean"),
];
const READ_PARAMS: &[Param] = &[("pretty", "string")];
const DELETE_PARAMS: &[Param] = &[
    ("pretty", "string"),
    ("dryRun", "string"),
    ("gracePeriodSeconds", "integer"),
    ("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean"),
    ("orphanDependents", "boolean"),
    ("propagationPolicy", "string"),
];
const LIST_PARAMS: &[Param] = &[
    ("pretty", "string"),
    ("allowWatchBookmarks", "boolean"),
    ("continue", "string"),
    ("fieldSelector", "string"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("sendInitialEvents", "boolean"),
    ("timeoutSeconds", "integer"),
    ("watch", "boolean"),
];
const DELETE_COLLECTION_PARAMS: &[Param] = &[
    ("pretty", "string"),
    ("continue", "string"),
    ("dryRun", "string"),
    ("fieldSelector", "string"),
    ("gracePeriodSeconds", "integer"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("propagationPolicy", "string"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("sendInitialEvents", "boolean"),
    ("timeoutSeconds", "integer"),
];

/// One HTTP operation.
pub struct Op {
    pub method: &'static str,
    pub id: String,
    pub description: String,
    pub tag: String,
    /// `x-kubernetes-action`; None for discovery operations, which upstream leaves bare.
    pub action: Option<&'static str>,
    /// `x-kubernetes-group-version-kind` of the object the operation is about.
    pub gvk: Option<(String, String, String)>,
    pub query: &'static [Param],
    /// Definition name of the request body.
    pub body: Option<String>,
    pub consumes: &'static [&'static str],
    pub produces: &'static [&'static str],
    /// Status codes and the definition each returns.
    pub responses: Vec<(&'static str, String)>,
}

/// One URL path with its operations.
pub struct Route {
    pub path: String,
    pub ops: Vec<Op>,
}

impl Op {
    /// Add the operation's `x-kubernetes-*` extensions to its rendered form (the same
    /// in both OpenAPI versions).
    pub fn add_extensions(&self, out: &mut Value) {
        if let Some(action) = self.action {
            out["x-kubernetes-action"] = action.into();
        }
        if let Some((group, version, kind)) = &self.gvk {
            out["x-kubernetes-group-version-kind"] = json!({"group": group, "version": version, "kind": kind});
        }
    }
}

/// The text of a response code.
pub fn response_text(code: &str) -> &'static str {
    match code {
        "201" => "Created",
        "202" => "Accepted",
        _ => "OK",
    }
}

impl Route {
    /// The path item: each operation as `operation` renders it, and the path's own
    /// parameters (`{namespace}`, `{name}`) as `parameter` does, in either version's form.
    pub fn render(&self, operation: fn(&Op) -> Value, parameter: fn(&str) -> Value) -> Value {
        let mut item: Map<String, Value> = self.ops.iter().map(|op| (op.method.to_string(), operation(op))).collect();
        let params: Vec<Value> = self.path_params().into_iter().map(parameter).collect();
        if !params.is_empty() {
            item.insert("parameters".into(), params.into());
        }
        item.into()
    }

    /// The `{name}` and `{namespace}` segments of the path, in order.
    pub fn path_params(&self) -> Vec<&str> {
        self.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect()
    }
}

/// URL prefix of a group-version.
pub fn base(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

/// `CoreV1`, `AppsV1`, `NetworkingV1`: the group-version part of operation ids.
fn id_prefix(group: &str, version: &str) -> String {
    let word = match group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("{}{}", capitalize(word), capitalize(version))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect()
}

fn tag(group: &str, version: &str) -> String {
    format!("{}_{version}", id_prefix(group, "").to_lowercase())
}

/// The definition name of a kind, falling back to upstream's naming if the schema set
/// lacks it (it never should; a unit test checks every served kind).
pub fn definition_for(group: &str, version: &str, kind: &str) -> String {
    schemas().name_for_kind(group, version, kind).map(str::to_string).unwrap_or_else(|| {
        let pkg = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
        format!("io.k8s.api.{pkg}.{version}.{kind}")
    })
}

/// The operations of one resource, as a builder over its naming.
struct Resource<'a> {
    r: &'a ResourceDef,
    prefix: String,
    /// `Namespaced` for namespaced resources: upstream puts it in operation ids.
    scope: &'static str,
    kind_def: String,
}

impl Resource<'_> {
    fn op(&self, method: &'static str, verb: &str, action: &'static str, suffix: &str) -> Op {
        let r = self.r;
        Op {
            method,
            id: format!("{verb}{}{}{}{suffix}", self.prefix, self.scope, r.kind),
            description: match suffix {
                "" => format!("{action} {}", r.kind),
                _ => format!("{action} {} of {}", suffix.to_lowercase(), r.kind),
            },
            tag: tag(r.group, r.version),
            action: Some(action),
            gvk: Some((r.group.into(), r.version.into(), r.kind.into())),
            query: READ_PARAMS,
            body: None,
            consumes: &["*/*"],
            produces: OBJECT_TYPES,
            responses: vec![("200", self.kind_def.clone())],
        }
    }

    /// get, put and patch of the object itself or a subresource with the same shape.
    fn read_write(&self, suffix: &str, def: &str) -> Vec<Op> {
        let mut get = self.op("get", "read", "get", suffix);
        let mut put = self.op("put", "replace", "put", suffix);
        let mut patch = self.op("patch", "patch", "patch", suffix);
        get.responses = vec![("200", def.to_string())];
        put.query = WRITE_PARAMS;
        put.body = Some(def.to_string());
        put.responses = vec![("200", def.to_string()), ("201", def.to_string())];
        patch.query = PATCH_PARAMS;
        patch.body = Some(format!("{META}.Patch"));
        patch.consumes = PATCH_TYPES;
        patch.responses = put.responses.clone();
        let verbs = [("get", get), ("update", put), ("patch", patch)];
        verbs.into_iter().filter(|(verb, _)| self.r.allows(verb)).map(|(_, op)| op).collect()
    }

    fn collection(&self) -> Vec<Op> {
        let r = self.r;
        let mut list = self.op("get", "list", "list", "");
        list.query = LIST_PARAMS;
        list.produces = WATCH_TYPES;
        list.responses = vec![("200", definition_for(r.group, r.version, &r.list_kind()))];
        let mut create = self.op("post", "create", "post", "");
        create.query = WRITE_PARAMS;
        create.body = Some(self.kind_def.clone());
        create.responses = ["200", "201", "202"].map(|code| (code, self.kind_def.clone())).into();
        let mut delete = self.op("delete", "deleteCollection", "deletecollection", "");
        delete.query = DELETE_COLLECTION_PARAMS;
        delete.body = Some(format!("{META}.DeleteOptions"));
        delete.responses = vec![("200", format!("{META}.Status"))];
        let verbs = [("list", list), ("create", create), ("deletecollection", delete)];
        verbs.into_iter().filter(|(verb, _)| r.allows(verb)).map(|(_, op)| op).collect()
    }

    fn item(&self) -> Vec<Op> {
        let mut ops = self.read_write("", &self.kind_def);
        if self.r.allows("delete") {
            let mut delete = self.op("delete", "delete", "delete", "");
            delete.query = DELETE_PARAMS;
            delete.body = Some(format!("{META}.DeleteOptions"));
            delete.responses = vec![("200", format!("{META}.Status")), ("202", format!("{META}.Status"))];
            ops.push(delete);
        }
        ops
    }

    /// The deprecated `/watch/` paths upstream still documents.
    fn watch(&self, action: &'static str, suffix: &str) -> Op {
        let mut op = self.op("get", "watch", action, suffix);
        op.query = LIST_PARAMS;
        op.produces = WATCH_TYPES;
        op.responses = vec![("200", format!("{META}.WatchEvent"))];
        op
    }

    fn for_all_namespaces(&self, mut op: Op) -> Op {
        op.id = op.id.replacen("Namespaced", "", 1) + "ForAllNamespaces";
        op
    }

    fn routes(&self) -> Vec<Route> {
        let r = self.r;
        let base = base(r.group, r.version);
        let ns = if r.namespaced { "/namespaces/{namespace}" } else { "" };
        let collection = format!("{base}{ns}/{}", r.plural);
        let item = format!("{collection}/{{name}}");
        let mut routes = vec![Route { path: collection, ops: self.collection() }];
        if r.has_status {
            routes.push(Route { path: format!("{item}/status"), ops: self.read_write("Status", &self.kind_def) });
        }
        if r.has_scale {
            routes.push(Route { path: format!("{item}/scale"), ops: self.scale_ops() });
        }
        routes.push(Route { path: item, ops: self.item() });
        if r.namespaced {
            let list = self.collection().into_iter().filter(|op| op.method == "get");
            let list_all = list.map(|op| self.for_all_namespaces(op)).collect();
            routes.push(Route { path: format!("{base}/{}", r.plural), ops: list_all });
        }
        if r.allows("watch") {
            routes.extend(self.watch_routes(&base, ns));
        }
        // a path none of whose verbs the resource has is not served
        routes.retain(|route| !route.ops.is_empty());
        routes
    }

    fn watch_routes(&self, base: &str, ns: &str) -> Vec<Route> {
        let plural = self.r.plural;
        let mut routes = vec![
            Route { path: format!("{base}/watch{ns}/{plural}"), ops: vec![self.watch("watchlist", "List")] },
            Route { path: format!("{base}/watch{ns}/{plural}/{{name}}"), ops: vec![self.watch("watch", "")] },
        ];
        if self.r.namespaced {
            let all = vec![self.for_all_namespaces(self.watch("watchlist", "List"))];
            routes.push(Route { path: format!("{base}/watch/{plural}"), ops: all });
        }
        routes
    }

    /// `/scale` speaks autoscaling/v1 Scale whatever the resource's group.
    fn scale_ops(&self) -> Vec<Op> {
        let mut ops = self.read_write("Scale", SCALE);
        for op in &mut ops {
            op.gvk = Some(("autoscaling".into(), "v1".into(), "Scale".into()));
        }
        ops
    }
}

/// The definitions an operation refers to.
pub fn operation_refs(op: &Op) -> impl Iterator<Item = String> + '_ {
    op.body.iter().cloned().chain(op.responses.iter().map(|(_, def)| def.clone()))
}

/// A discovery GET: no action, no kind.
fn discovery(path: String, id: String, tag: String, def: &str) -> Route {
    let op = Op {
        method: "get",
        id,
        description: "get discovery information".into(),
        tag,
        action: None,
        gvk: None,
        query: &[],
        body: None,
        consumes: OBJECT_TYPES,
        produces: OBJECT_TYPES,
        responses: vec![("200", def.to_string())],
    };
    Route { path, ops: vec![op] }
}

/// `/api/`, `/apis/`, `/apis/<group>/` and `/version/`, which only the v2 document lists.
pub fn discovery_routes() -> Vec<Route> {
    let mut routes = vec![
        discovery("/api/".into(), "getCoreAPIVersions".into(), "core".into(), &format!("{META}.APIVersions")),
        discovery("/apis/".into(), "getAPIVersions".into(), "apis".into(), &format!("{META}.APIGroupList")),
        discovery(
            "/version/".into(),
            "getCodeVersion".into(),
            "version".into(),
            "io.k8s.apimachinery.pkg.version.Info",
        ),
    ];
    let mut groups: Vec<&str> =
        crate::registry::resources::group_versions().into_iter().map(|(g, _)| g).filter(|g| !g.is_empty()).collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let word = id_prefix(group, "");
        let path = format!("/apis/{group}/");
        routes.push(discovery(path, format!("get{word}APIGroup"), word.to_lowercase(), &format!("{META}.APIGroup")));
    }
    routes
}

/// Every route of one group-version: its discovery document and its resources.
pub fn group_version_routes(group: &str, version: &str) -> Vec<Route> {
    let prefix = id_prefix(group, version);
    let path = format!("{}/", base(group, version));
    let resources = format!("{META}.APIResourceList");
    let mut routes = vec![discovery(path, format!("get{prefix}APIResources"), tag(group, version), &resources)];
    // a kind served in a version Kubernetes 1.33 has no schema for (v1beta1
    // SelfSubjectReview, kept for kubectl 1.27) is served but not described
    let described = |r: &&ResourceDef| schemas().name_for_kind(r.group, r.version, r.kind).is_some();
    for r in
        crate::registry::all_resources().iter().filter(|r| r.group == group && r.version == version).filter(described)
    {
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let kind_def = definition_for(r.group, r.version, r.kind);
        routes.extend(Resource { r, prefix: prefix.clone(), scope, kind_def }.routes());
    }
    if (group, version) == ("", "v1") {
        routes.extend(core_actions());
    }
    routes
}

/// core/v1's create-only actions (served by `handlers::pods`): the legacy `bindings`
/// collection, `pods/binding` and `pods/eviction`.
fn core_actions() -> Vec<Route> {
    let ns = "/api/v1/namespaces/{namespace}";
    let actions = [
        ("bindings", "createCoreV1NamespacedBinding", ("", "v1", "Binding")),
        ("pods/{name}/binding", "createCoreV1NamespacedPodBinding", ("", "v1", "Binding")),
        ("pods/{name}/eviction", "createCoreV1NamespacedPodEviction", ("policy", "v1", "Eviction")),
        (
            "serviceaccounts/{name}/token",
            "createCoreV1NamespacedServiceAccountToken",
            ("authentication.k8s.io", "v1", "TokenRequest"),
        ),
    ];
    let route = |(path, id, gvk): (&str, &str, _)| create_only(format!("{ns}/{path}"), id.into(), tag("", "v1"), gvk);
    actions.into_iter().map(route).collect()
}

/// A POST that takes and returns one kind, as upstream documents create-only resources.
fn create_only(path: String, id: String, tag: String, (group, version, kind): (&str, &str, &str)) -> Route {
    let def = definition_for(group, version, kind);
    let op = Op {
        method: "post",
        id,
        description: format!("create a {kind}"),
        tag,
        action: Some("post"),
        gvk: Some((group.into(), version.into(), kind.into())),
        query: WRITE_PARAMS,
        body: Some(def.clone()),
        consumes: &["*/*"],
        produces: OBJECT_TYPES,
        responses: ["200", "201", "202"].map(|code| (code, def.clone())).into(),
    };
    Route { path, ops: vec![op] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_has_a_definition() {
        for r in crate::registry::all_resources() {
            if (r.group, r.version, r.kind) == ("authentication.k8s.io", "v1beta1", "SelfSubjectReview") {
                continue; // kept for kubectl 1.27; Kubernetes 1.33 documents only v1
            }
            assert!(schemas().name_for_kind(r.group, r.version, r.kind).is_some(), "{}", r.kind);
            let listed = r.allows("list");
            assert!(!listed || schemas().name_for_kind(r.group, r.version, &r.list_kind()).is_some(), "{}List", r.kind);
        }
    }

    #[test]
    fn operation_ids_follow_upstream() {
        let routes = group_version_routes("apps", "v1");
        let ids: Vec<&str> = routes.iter().flat_map(|r| r.ops.iter().map(|o| o.id.as_str())).collect();
        for id in [
            "getAppsV1APIResources",
            "listAppsV1NamespacedDeployment",
            "createAppsV1NamespacedDeployment",
            "deleteCollectionAppsV1NamespacedDeployment",
            "readAppsV1NamespacedDeploymentScale",
            "patchAppsV1NamespacedDeploymentStatus",
            "listAppsV1DeploymentForAllNamespaces",
            "watchAppsV1DeploymentListForAllNamespaces",
            "watchAppsV1NamespacedDeploymentList",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        let core = group_version_routes("networking.k8s.io", "v1");
        assert!(core.iter().any(|r| r.ops.iter().any(|o| o.id == "readNetworkingV1NamespacedIngress")));
        assert_eq!(tag("networking.k8s.io", "v1"), "networking_v1");
        let auth = group_version_routes("authentication.k8s.io", "v1");
        let review = auth.iter().find(|r| r.path == "/apis/authentication.k8s.io/v1/selfsubjectreviews").unwrap();
        assert_eq!(review.ops[0].id, "createAuthenticationV1SelfSubjectReview");
        let core = group_version_routes("", "v1");
        let eviction = core.iter().find(|r| r.path.ends_with("/pods/{name}/eviction")).unwrap();
        assert_eq!(eviction.ops[0].gvk, Some(("policy".into(), "v1".into(), "Eviction".into())));
    }
}
