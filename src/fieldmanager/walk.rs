//! The schema-driven walks over objects: which fields a value sets, how two versions
//! differ, merging an applied configuration, and removing fields nobody applies any more.
//!
//! A position without a schema (unknown fields, RawExtension) is deduced as upstream
//! does: objects are granular maps, lists are atomic.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, Node, PathElement};
use crate::schema::{Kind, ListType, Shape};

type S<'a> = Option<Shape<'a>>;

/// How a list's items are told apart.
enum Items<'a> {
    /// Replaced and owned whole.
    Atomic,
    Set,
    Keys(Vec<&'a str>),
    /// Associative without keys: by position.
    Positional,
}

fn items_of<'a>(shape: S<'a>) -> Items<'a> {
    let Some(shape) = shape else { return Items::Atomic };
    match shape.list_type() {
        ListType::Set => Items::Set,
        ListType::Map([]) => Items::Positional,
        ListType::Map(keys) => Items::Keys(keys.iter().filter_map(Value::as_str).collect()),
        // as upstream's schema conversion, a list without a list type but with a merge
        // patch strategy is associative: by its merge key, or a set of scalars
        ListType::Atomic if shape.patch_strategy().merge && !shape.declares_list_type() => {
            match shape.patch_merge_key() {
                Some(key) => Items::Keys(vec![key]),
                None => Items::Set,
            }
        }
        ListType::Atomic => Items::Atomic,
    }
}

/// True when the value at this position is owned and replaced whole: scalars, atomic
/// lists and maps, and anything whose JSON type is not a container.
fn is_leaf(shape: S, v: &Value) -> bool {
    match v {
        Value::Object(_) => shape.is_some_and(|s| matches!(s.kind(), Kind::Scalar) || s.is_atomic_map()),
        Value::Array(_) => matches!(items_of(shape), Items::Atomic),
        _ => true,
    }
}

/// The shape of a child of an object, and whether it is a declared struct field
/// (struct fields are not members of a set by themselves; map entries are).
fn child_shape<'a>(shape: S<'a>, key: &str) -> (S<'a>, bool) {
    match shape.map(|s| (s, s.kind())) {
        Some((s, Kind::Struct)) => match s.field(key) {
            Some(f) => (Some(f), true),
            None => (None, false),
        },
        Some((s, Kind::Map)) => (s.values(), false),
        _ => (None, false),
    }
}

/// The element naming a list item.
fn item_element(shape: S, items: &Items, item: &Value, index: usize) -> PathElement {
    match items {
        Items::Set => PathElement::Value(item.to_string()),
        Items::Keys(keys) => {
            let item_shape = shape.and_then(|s| s.items());
            let mut fields = Map::new();
            for &key in keys {
                let value = item
                    .get(key)
                    .cloned()
                    .or_else(|| item_shape.and_then(|s| s.field(key)).and_then(|f| f.default_value()));
                if let Some(v) = value {
                    fields.insert(key.to_string(), v);
                }
            }
            PathElement::Key(Value::Object(fields).to_string())
        }
        Items::Positional | Items::Atomic => PathElement::Index(index),
    }
}

/// Whether a child node is a member by itself, as upstream's ToFieldSet decides:
/// leaves, nulls and empty objects, and every map entry or undeclared field.
fn member_of(shape: S, v: &Value, declared_field: bool) -> bool {
    is_leaf(shape, v) || v.is_null() || v.as_object().is_some_and(Map::is_empty) || !declared_field
}

/// The set of paths a value sets, beneath its own position.
pub fn fields(v: &Value, shape: S) -> FieldSet {
    collect(v, shape, false)
}

/// `fields`, for a value that an update adds: there a map that appears (labels,
/// annotations) is a member itself, as upstream's comparison records it.
fn appeared(v: &Value, shape: S) -> FieldSet {
    collect(v, shape, true)
}

fn collect(v: &Value, shape: S, appearing: bool) -> FieldSet {
    let mut out = FieldSet::default();
    if is_leaf(shape, v) {
        return out;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let (cs, declared) = child_shape(shape, k);
                let node = if appearing {
                    added_node(cs, child, declared)
                } else {
                    Node { member: member_of(cs, child, declared), children: fields(child, cs) }
                };
                out.put(PathElement::Field(k.clone()), node);
            }
        }
        Value::Array(list) => {
            let items = items_of(shape);
            let item_shape = shape.and_then(|s| s.items());
            for (i, item) in list.iter().enumerate() {
                let node = Node { member: true, children: collect(item, item_shape, appearing) };
                out.put(item_element(shape, &items, item, i), node);
            }
        }
        _ => {}
    }
    out
}

/// The first field of `v` its schema does not declare, as a path (`.spec.bogus`):
/// an applied configuration must be fully typed, as upstream's typed conversion demands.
pub fn undeclared(v: &Value, shape: S) -> Option<String> {
    let shape = shape?;
    match v {
        Value::Object(map) if shape.kind() == Kind::Struct => map.iter().find_map(|(k, child)| match shape.field(k) {
            Some(f) => undeclared(child, Some(f)).map(|rest| format!(".{k}{rest}")),
            None => Some(format!(".{k}")),
        }),
        Value::Object(map) if shape.kind() == Kind::Map => {
            map.iter().find_map(|(k, child)| undeclared(child, shape.values()).map(|rest| format!(".{k}{rest}")))
        }
        Value::Array(list) if shape.kind() == Kind::List => list
            .iter()
            .enumerate()
            .find_map(|(i, item)| undeclared(item, shape.items()).map(|rest| format!("[{i}]{rest}"))),
        _ => None,
    }
}

/// How one version of an object differs from the next, as sets of paths.
#[derive(Default, Debug)]
pub struct Diff {
    pub added: FieldSet,
    pub removed: FieldSet,
    pub modified: FieldSet,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }

    /// Record the comparison of one child present on both sides.
    fn child(&mut self, pe: PathElement, old: &Value, new: &Value, shape: S) {
        let same_container =
            matches!((old, new), (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)));
        if is_leaf(shape, new) || is_leaf(shape, old) || !same_container {
            if old != new {
                self.modified.put(pe, Node { member: true, children: FieldSet::default() });
            }
            return;
        }
        let sub = diff(old, new, shape);
        if !sub.is_empty() {
            self.added.put(pe.clone(), Node { member: false, children: sub.added });
            self.removed.put(pe.clone(), Node { member: false, children: sub.removed });
            self.modified.put(pe, Node { member: false, children: sub.modified });
        }
    }
}

/// A field an update adds (see `appeared`).
fn added_node(shape: S, v: &Value, declared: bool) -> Node {
    let appearing_map = shape.is_some_and(|s| s.kind() == Kind::Map);
    Node { member: member_of(shape, v, declared) || appearing_map, children: appeared(v, shape) }
}

/// Compare two versions of the value at one position (both containers of one kind).
pub fn diff(old: &Value, new: &Value, shape: S) -> Diff {
    let mut d = Diff::default();
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, nv) in n {
                let (cs, declared) = child_shape(shape, k);
                let pe = PathElement::Field(k.clone());
                match o.get(k) {
                    Some(ov) => d.child(pe, ov, nv, cs),
                    None => d.added.put(pe, added_node(cs, nv, declared)),
                }
            }
            for (k, ov) in o.iter().filter(|(k, _)| !n.contains_key(*k)) {
                let (cs, declared) = child_shape(shape, k);
                let node = Node { member: member_of(cs, ov, declared), children: fields(ov, cs) };
                d.removed.put(PathElement::Field(k.clone()), node);
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            let items = items_of(shape);
            let item_shape = shape.and_then(|s| s.items());
            let old_items: Vec<PathElement> =
                o.iter().enumerate().map(|(i, item)| item_element(shape, &items, item, i)).collect();
            let mut seen = Vec::with_capacity(n.len());
            for (i, nv) in n.iter().enumerate() {
                let pe = item_element(shape, &items, nv, i);
                match old_items.iter().position(|p| *p == pe) {
                    Some(j) => d.child(pe.clone(), &o[j], nv, item_shape),
                    None => d.added.put(pe.clone(), Node { member: true, children: appeared(nv, item_shape) }),
                }
                seen.push(pe);
            }
            for (pe, ov) in old_items.into_iter().zip(o).filter(|(pe, _)| !seen.contains(pe)) {
                d.removed.put(pe, Node { member: true, children: fields(ov, item_shape) });
            }
        }
        _ => {}
    }
    d
}

/// Merge an applied configuration into the live value: granular containers merge by
/// field, key or value; leaves and atomic containers are replaced.
pub fn merge(live: &mut Value, config: &Value, shape: S) {
    if is_leaf(shape, config) {
        *live = config.clone();
        return;
    }
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, cv) in c {
                match l.get_mut(k) {
                    Some(lv) => merge(lv, cv, child_shape(shape, k).0),
                    None => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let items = items_of(shape);
            let item_shape = shape.and_then(|s| s.items());
            let names: Vec<PathElement> =
                l.iter().enumerate().map(|(i, item)| item_element(shape, &items, item, i)).collect();
            for (i, cv) in c.iter().enumerate() {
                let pe = item_element(shape, &items, cv, i);
                match names.iter().position(|p| *p == pe) {
                    Some(j) => merge(&mut l[j], cv, item_shape),
                    None => l.push(cv.clone()),
                }
            }
        }
        (live, config) => *live = config.clone(),
    }
}

/// Remove from `v` the members of `last` (what a manager applied before) that no
/// manager owns now (`owned`), keeping whatever is owned beneath them. Objects emptied
/// by the removal go too, as Go's omitempty drops them.
pub fn prune(v: &mut Value, last: &FieldSet, owned: Option<&FieldSet>, shape: S) {
    for (pe, node) in last.iter() {
        let owned_here = owned.and_then(|o| o.get(pe));
        if node.member && owned_here.is_none() {
            remove_child(v, pe, shape);
            continue;
        }
        let (child, cs) = match child_mut(v, pe, shape) {
            Some(found) => found,
            None => continue,
        };
        let was_empty = child.as_object().is_some_and(Map::is_empty);
        prune(child, &node.children, owned_here.map(|n| &n.children), cs);
        if !was_empty && child.as_object().is_some_and(Map::is_empty) {
            remove_child(v, pe, shape);
        }
    }
}

fn child_mut<'v, 'a>(v: &'v mut Value, pe: &PathElement, shape: S<'a>) -> Option<(&'v mut Value, S<'a>)> {
    match (v, pe) {
        (Value::Object(m), PathElement::Field(k)) => {
            let cs = child_shape(shape, k).0;
            m.get_mut(k).map(|c| (c, cs))
        }
        (Value::Array(list), _) => {
            let items = items_of(shape);
            let i = list.iter().enumerate().position(|(i, item)| item_element(shape, &items, item, i) == *pe)?;
            Some((&mut list[i], shape.and_then(|s| s.items())))
        }
        _ => None,
    }
}

fn remove_child(v: &mut Value, pe: &PathElement, shape: S) {
    match (v, pe) {
        (Value::Object(m), PathElement::Field(k)) => {
            m.remove(k);
        }
        (Value::Array(list), _) => {
            let items = items_of(shape);
            let mut index = 0;
            list.retain(|item| {
                index += 1;
                item_element(shape, &items, item, index - 1) != *pe
            });
        }
        _ => {}
    }
}
