//! The shape of every Kubernetes type, read from `openapi/definitions.json` (generated
//! by `scripts/gen-openapi-definitions.py` for the Kubernetes version the server speaks).
//!
//! The same definitions are published under `/openapi`, and strategic merge patch and
//! server-side apply read their merge rules from here: patch strategies and merge keys
//! (`x-kubernetes-patch-*`), list types and map keys (`x-kubernetes-list-*`) and
//! atomic maps and structs (`x-kubernetes-map-type`). Nothing about merging is kept by hand.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

/// The definitions file, embedded so the binary is self-contained.
const DEFINITIONS_JSON: &str = include_str!("../../openapi/definitions.json");

pub struct Schemas {
    definitions: &'static Map<String, Value>,
    /// The same definitions hashed by name: merging resolves a `$ref` at every step,
    /// and the ordered map's string comparisons dominated that.
    by_name: HashMap<&'static str, &'static Value>,
    /// (group, version, kind) → definition name, from `x-kubernetes-group-version-kind`.
    by_gvk: HashMap<(String, String, String), String>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    // parsed once for the life of the process, so its nodes can be borrowed for 'static
    let definitions: &'static Map<String, Value> =
        Box::leak(Box::new(serde_json::from_str(DEFINITIONS_JSON).expect("openapi/definitions.json is valid JSON")));
    let by_name = definitions.iter().map(|(name, node)| (name.as_str(), node)).collect();
    let mut by_gvk = HashMap::new();
    for (name, schema) in definitions {
        for gvk in schema["x-kubernetes-group-version-kind"].as_array().into_iter().flatten() {
            let field = |f: &str| gvk[f].as_str().unwrap_or_default().to_string();
            by_gvk.insert((field("group"), field("version"), field("kind")), name.clone());
        }
    }
    Schemas { definitions, by_name, by_gvk }
});

/// The process-wide schema set, parsed on first use.
pub fn schemas() -> &'static Schemas {
    &SCHEMAS
}

impl Schemas {
    /// All definitions by upstream name (`io.k8s.api.core.v1.Pod`), OpenAPI v2 form.
    pub fn definitions(&self) -> &Map<String, Value> {
        self.definitions
    }

    /// The definition name for a group/version/kind (core group is "").
    pub fn name_for_kind(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.by_gvk.get(&(group.to_string(), version.to_string(), kind.to_string())).map(String::as_str)
    }

    /// The shape of a top-level object of that kind.
    pub fn for_kind(&self, group: &str, version: &str, kind: &str) -> Option<Shape<'_>> {
        self.name_for_kind(group, version, kind).and_then(|name| self.definition(name))
    }

    /// The shape of a named definition.
    pub fn definition(&self, name: &str) -> Option<Shape<'_>> {
        self.by_name.get(name).map(|node| Shape { schemas: self, node })
    }

    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        let mut node = node;
        // Refs never chain more than once upstream; the bound guards against a cycle.
        for _ in 0..4 {
            match node.get("$ref").and_then(Value::as_str) {
                Some(r) => match self.by_name.get(r.strip_prefix("#/definitions/").unwrap_or(r)) {
                    Some(target) => node = *target,
                    None => return node,
                },
                None => return node,
            }
        }
        node
    }
}

/// What kind of value a position holds, for merging purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An object with named, typed fields.
    Struct,
    /// A string-keyed map with values of one shape (`additionalProperties`).
    Map,
    List,
    /// Strings, numbers, booleans, and IntOrString/Quantity/Time.
    Scalar,
    /// Arbitrary JSON (RawExtension, FieldsV1, JSON): merged as a plain JSON object.
    Untyped,
}

/// How a list merges (`x-kubernetes-list-type`); lists without one are atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType<'a> {
    Atomic,
    /// Scalars, each one owned or merged on its own.
    Set,
    /// Items identified by the values of these keys.
    Map(&'a [Value]),
}

/// One position in a type: a field, list item or map value. It keeps the referring
/// node, whose extensions (patch strategy, list type) describe the position, and looks
/// through `$ref` for the type's own properties.
#[derive(Clone, Copy)]
pub struct Shape<'a> {
    schemas: &'a Schemas,
    node: &'a Value,
}

impl std::fmt::Debug for Shape<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.node.get("$ref").and_then(Value::as_str).unwrap_or("(inline)");
        write!(f, "Shape({name}, {:?})", self.kind())
    }
}

impl<'a> Shape<'a> {
    fn target(&self) -> &'a Value {
        self.schemas.resolve(self.node)
    }

    fn at(&self, node: &'a Value) -> Shape<'a> {
        Shape { schemas: self.schemas, node }
    }

    /// An extension on the position or, failing that, on the referenced type.
    fn extension(&self, key: &str) -> Option<&'a Value> {
        self.node.get(key).or_else(|| self.target().get(key))
    }

    pub fn kind(&self) -> Kind {
        let target = self.target();
        if target.get("properties").is_some() {
            return Kind::Struct;
        }
        if target.get("additionalProperties").is_some() {
            return Kind::Map;
        }
        match target.get("type").and_then(Value::as_str) {
            Some("array") => Kind::List,
            Some("object") | None => Kind::Untyped,
            Some(_) => Kind::Scalar,
        }
    }

    /// A named field of a struct.
    pub fn field(&self, name: &str) -> Option<Shape<'a>> {
        self.target().get("properties")?.get(name).map(|node| self.at(node))
    }

    /// The shape of a list's items.
    pub fn items(&self) -> Option<Shape<'a>> {
        self.target().get("items").map(|node| self.at(node))
    }

    /// The shape of a map's values.
    pub fn values(&self) -> Option<Shape<'a>> {
        self.target().get("additionalProperties").map(|node| self.at(node))
    }

    /// `x-kubernetes-list-type`: atomic unless declared otherwise.
    pub fn list_type(&self) -> ListType<'a> {
        match self.extension("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => match self.extension("x-kubernetes-list-map-keys").and_then(Value::as_array) {
                Some(keys) => ListType::Map(keys),
                None => ListType::Atomic,
            },
            _ => ListType::Atomic,
        }
    }

    /// Whether the position declares `x-kubernetes-list-type` at all (an undeclared
    /// list falls back to its patch strategy when server-side apply reads it).
    pub fn declares_list_type(&self) -> bool {
        self.extension("x-kubernetes-list-type").is_some()
    }

    /// `x-kubernetes-map-type: atomic` on a map or struct: replaced and owned whole.
    pub fn is_atomic_map(&self) -> bool {
        self.extension("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The strategic-merge-patch strategy of this position.
    pub fn patch_strategy(&self) -> PatchStrategy {
        let text = self.node.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("");
        PatchStrategy {
            merge: text.split(',').any(|s| s == "merge"),
            retain_keys: text.split(',').any(|s| s == "retainKeys"),
        }
    }

    /// `x-kubernetes-patch-strategy: replace` (a map strategic merge patch replaces whole).
    pub fn patch_replaces(&self) -> bool {
        let text = self.node.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("");
        text.split(',').any(|s| s == "replace")
    }

    /// `x-kubernetes-patch-merge-key` of a list merged by strategic merge patch.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.node.get("x-kubernetes-patch-merge-key").and_then(Value::as_str)
    }

    /// A field's default: `default` when the definitions carry one, else the value its
    /// description states ("Defaults to \"TCP\".", "Default is TCP."). OpenAPI v2 drops
    /// defaults, and server-side apply needs them to name list items by their keys.
    pub fn default_value(&self) -> Option<Value> {
        if let Some(v) = self.extension("default") {
            return Some(v.clone());
        }
        let text = self.node.get("description").and_then(Value::as_str)?;
        let (_, rest) = text.split_once("Defaults to ").or_else(|| text.split_once("Default is "))?;
        let word = rest.split_whitespace().next()?.trim_end_matches(['.', ',']).trim_matches('"');
        if word.is_empty() {
            return None;
        }
        match self.target().get("type").and_then(Value::as_str) {
            Some("integer" | "number" | "boolean") => serde_json::from_str(word).ok(),
            _ => Some(Value::String(word.to_string())),
        }
    }
}

/// Strategic merge patch strategy (`x-kubernetes-patch-strategy`): lists merge by key
/// (or as a set of scalars) rather than being replaced; retainKeys clears the fields of a
/// union the patch does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatchStrategy {
    pub merge: bool,
    pub retain_keys: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_containers_merge_by_name() {
        let pod = schemas().for_kind("", "v1", "Pod").expect("Pod");
        let containers = pod.field("spec").and_then(|s| s.field("containers")).expect("containers");
        assert_eq!(containers.kind(), Kind::List);
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert!(containers.patch_strategy().merge);
        assert_eq!(containers.list_type(), ListType::Map(&[Value::from("name")]));
        let ports = containers.items().and_then(|c| c.field("ports")).expect("ports");
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        let volumes = pod.field("spec").and_then(|s| s.field("volumes")).expect("volumes");
        assert!(volumes.patch_strategy().retain_keys);
    }

    #[test]
    fn documented_defaults() {
        let port = schemas().definition("io.k8s.api.core.v1.ContainerPort").expect("ContainerPort");
        assert_eq!(port.field("protocol").and_then(|p| p.default_value()), Some(Value::from("TCP")));
        let svc = schemas().definition("io.k8s.api.core.v1.ServicePort").expect("ServicePort");
        assert_eq!(svc.field("protocol").and_then(|p| p.default_value()), Some(Value::from("TCP")));
        assert_eq!(port.field("containerPort").and_then(|p| p.default_value()), None);
    }

    #[test]
    fn kinds_and_atomic_maps() {
        let deploy = schemas().for_kind("apps", "v1", "Deployment").expect("Deployment");
        let spec = deploy.field("spec").expect("spec");
        assert_eq!(spec.kind(), Kind::Struct);
        assert_eq!(spec.field("replicas").map(|s| s.kind()), Some(Kind::Scalar));
        let selector = spec.field("selector").expect("selector");
        assert!(selector.is_atomic_map());
        let labels = deploy.field("metadata").and_then(|m| m.field("labels")).expect("labels");
        assert_eq!(labels.kind(), Kind::Map);
        assert!(!labels.is_atomic_map());
        let node_selector =
            schemas().for_kind("", "v1", "Pod").and_then(|p| p.field("spec")).and_then(|s| s.field("nodeSelector"));
        assert!(node_selector.expect("nodeSelector").is_atomic_map());
        let tolerations =
            schemas().for_kind("", "v1", "Pod").and_then(|p| p.field("spec")).and_then(|s| s.field("tolerations"));
        assert_eq!(tolerations.expect("tolerations").list_type(), ListType::Atomic);
        let raw = schemas().definition("io.k8s.apimachinery.pkg.runtime.RawExtension").expect("RawExtension");
        assert_eq!(raw.kind(), Kind::Untyped);
        let port = schemas().definition("io.k8s.api.core.v1.ServicePort").and_then(|p| p.field("targetPort"));
        assert_eq!(port.expect("targetPort").kind(), Kind::Scalar);
    }
}
