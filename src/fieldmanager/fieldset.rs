//! Sets of field paths, as managedFields records them, and their FieldsV1 JSON form:
//! each level an object whose keys name children (`f:` field, `k:` list item by its
//! keys, `v:` set item, `i:` item by position) and whose `"."` marks the node itself.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One step of a path. The derived order (fields, keys, values, indices) is the order
/// upstream serializes children in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    /// A list item named by its key fields: compact JSON of them, keys sorted.
    Key(String),
    /// An item of a set: its compact JSON.
    Value(String),
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(text: &str) -> Option<PathElement> {
        let (tag, rest) = text.split_once(':')?;
        let valid_json = || serde_json::from_str::<Value>(rest).is_ok();
        match tag {
            "f" => Some(PathElement::Field(rest.to_string())),
            // re-encoded so that equal keys compare equal whatever spacing a client used
            "k" if valid_json() => Some(PathElement::Key(serde_json::from_str::<Value>(rest).ok()?.to_string())),
            "v" if valid_json() => Some(PathElement::Value(serde_json::from_str::<Value>(rest).ok()?.to_string())),
            "i" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// Upstream's human form inside a path: `.name`, `[name="c"]`, `[="v"]`, `[0]`.
    fn display(&self) -> String {
        match self {
            PathElement::Field(f) => format!(".{f}"),
            PathElement::Key(k) => {
                let fields = serde_json::from_str::<Map<String, Value>>(k).unwrap_or_default();
                let parts: Vec<String> = fields.iter().map(|(name, v)| format!("{name}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// A path as upstream prints it in conflict messages (`.spec.replicas`).
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A node of a set: whether the path itself is in the set, and the set beneath it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub member: bool,
    pub children: FieldSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }
}

/// A set of paths, as a tree. Nodes neither members nor holding members are never kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSet {
    nodes: BTreeMap<PathElement, Node>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, pe: &PathElement) -> Option<&Node> {
        self.nodes.get(pe)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PathElement, &Node)> {
        self.nodes.iter()
    }

    /// Add a node, dropping it when it holds nothing.
    pub fn put(&mut self, pe: PathElement, node: Node) {
        if !node.is_empty() {
            self.nodes.insert(pe, node);
        }
    }

    pub fn remove(&mut self, pe: &PathElement) {
        self.nodes.remove(pe);
    }

    /// Add one path as a member.
    #[cfg(test)]
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else { return };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    #[cfg(test)]
    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            Some((first, [])) => self.nodes.get(first).is_some_and(|n| n.member),
            Some((first, rest)) => self.nodes.get(first).is_some_and(|n| n.children.contains(rest)),
            None => false,
        }
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        for (pe, theirs) in &other.nodes {
            let mine = self.nodes.entry(pe.clone()).or_default();
            mine.member |= theirs.member;
            mine.children.union_with(&theirs.children);
        }
    }

    /// The members of self that are not members of other.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (pe, mine) in &self.nodes {
            let node = match other.nodes.get(pe) {
                None => mine.clone(),
                Some(theirs) => {
                    Node { member: mine.member && !theirs.member, children: mine.children.difference(&theirs.children) }
                }
            };
            out.put(pe.clone(), node);
        }
        out
    }

    /// The members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::default();
        for (pe, mine) in &self.nodes {
            if let Some(theirs) = other.nodes.get(pe) {
                let node = Node {
                    member: mine.member && theirs.member,
                    children: mine.children.intersection(&theirs.children),
                };
                out.put(pe.clone(), node);
            }
        }
        out
    }

    /// Every member path, parents before children.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, node) in &self.nodes {
            prefix.push(pe.clone());
            if node.member {
                out.push(prefix.clone());
            }
            node.children.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON object.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (pe, node) in &self.nodes {
            let mut inner = match node.children.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            if node.member && !inner.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            out.insert(pe.encode(), Value::Object(inner));
        }
        Value::Object(out)
    }

    /// Parse FieldsV1 JSON; None when it is not a valid encoding.
    pub fn from_json(v: &Value) -> Option<FieldSet> {
        let mut set = FieldSet::default();
        for (key, inner) in v.as_object()? {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)?;
            let children = FieldSet::from_json(inner)?;
            // a leaf (`{}`) is a member; an inner node only when it says so with "."
            let member = children.is_empty() || inner.get(".").is_some();
            set.nodes.insert(pe, Node { member, children });
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    #[test]
    fn json_round_trip_with_dot_for_members_that_have_children() {
        let encoded = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
        });
        let set = FieldSet::from_json(&encoded).expect("valid");
        assert!(set.contains(&[f("metadata"), f("labels"), f("app")]));
        assert!(!set.contains(&[f("metadata"), f("labels")]));
        let item = PathElement::Key(r#"{"name":"web"}"#.into());
        assert!(set.contains(&[f("spec"), f("containers"), item.clone()]));
        assert!(set.contains(&[f("spec"), f("containers"), item, f("image")]));
        assert_eq!(set.to_json(), encoded);
        assert!(FieldSet::from_json(&json!({"x:y": {}})).is_none());
    }

    #[test]
    fn set_algebra_and_paths() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        assert_eq!(a.intersection(&b), b);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        assert!(b.difference(&a).is_empty());
        let port = PathElement::Key(r#"{"containerPort":80,"protocol":"TCP"}"#.into());
        assert_eq!(path_string(&[f("ports"), port]), r#".ports[containerPort=80,protocol="TCP"]"#);
        assert_eq!(path_string(&[f("finalizers"), PathElement::Value("\"a\"".into())]), r#".finalizers[="a"]"#);
    }
}
