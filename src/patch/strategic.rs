//! Strategic merge patch (`application/strategic-merge-patch+json`) applied as
//! kube-apiserver applies it. Which lists merge, and by which key, comes only from the
//! schema (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`); positions the
//! schema does not describe merge as in a JSON merge patch.
//!
//! Where upstream keeps a patch value verbatim (a field the original lacks, an item
//! appended to a list), it is merged into an empty value here instead, so nulls and
//! directives inside it never reach the stored object.

use serde_json::{Map, Value, json};

use crate::schema::{Kind, Shape};

type Object = Map<String, Value>;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_FROM: &str = "$deleteFromPrimitiveList";

/// Why a patch cannot be applied, split by the status upstream answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchError {
    /// A malformed patch: 400.
    BadRequest(String),
    /// A patch that contradicts itself (content outside its `$retainKeys`, lists of lists): 422.
    Invalid(String),
}

type Result<T> = std::result::Result<T, PatchError>;

fn bad(msg: impl Into<String>) -> PatchError {
    PatchError::BadRequest(msg.into())
}

/// Applies `patch` to `original`, an object of the type `shape` describes (None: no
/// schema, every position merges as in a JSON merge patch).
pub fn apply(original: &Value, patch: &Value, shape: Option<Shape<'_>>) -> Result<Value> {
    let patch = match patch {
        Value::Object(p) => p.clone(),
        // upstream decodes `null` into an empty patch
        Value::Null => Object::new(),
        other => {
            let found = json_type(other);
            return Err(bad(format!("json: cannot unmarshal {found} into Go value of type map[string]interface {{}}")));
        }
    };
    let original = original.as_object().cloned().unwrap_or_default();
    merge_map(original, patch, shape).map(Value::Object)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null | Value::Object(_) => "object",
    }
}

/// The shape of a struct field or map value; None where the schema stops.
fn child<'a>(shape: Option<Shape<'a>>, key: &str) -> Option<Shape<'a>> {
    let shape = shape?;
    match shape.kind() {
        Kind::Struct => shape.field(key),
        Kind::Map => shape.values(),
        _ => None,
    }
}

fn merge_map(mut original: Object, mut patch: Object, shape: Option<Shape>) -> Result<Object> {
    if let Some(directive) = patch.remove(PATCH) {
        return map_directive(directive, patch, shape);
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_orders(&mut original, &mut patch, shape)?;
    for (key, value) in patch {
        merge_entry(&mut original, key, value, shape)?;
    }
    Ok(original)
}

/// `$patch` on a map: `replace` makes the rest of the patch the whole map, `delete`
/// empties it; upstream accepts no other value there (not even `merge`).
fn map_directive(directive: Value, patch: Object, shape: Option<Shape>) -> Result<Object> {
    match directive.as_str() {
        Some("replace") => merge_map(Object::new(), patch, shape),
        Some("delete") => Ok(Object::new()),
        _ => {
            let mut shown = patch;
            shown.insert(PATCH.into(), directive.clone());
            Err(unknown_patch_type(&directive, &shown))
        }
    }
}

fn unknown_patch_type(directive: &Value, map: &Object) -> PatchError {
    bad(format!("unknown patch type: {} in map: {}", go_fmt(directive), go_fmt_map(map)))
}

/// `$retainKeys`: the keys of the original not listed are cleared (a union such as a
/// volume source switching kind); the patch itself may only set listed keys.
fn retain_keys(original: &mut Object, patch: &mut Object) -> Result<()> {
    let Some(list) = patch.remove(RETAIN_KEYS) else { return Ok(()) };
    let Value::Array(list) = list else { return Err(bad("invalid patch format of retainKeys")) };
    let retained = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    let stray = patch
        .iter()
        .any(|(k, v)| !v.is_null() && !k.starts_with(DELETE_FROM) && !k.starts_with(SET_ORDER) && !retained(k));
    if stray {
        return Err(PatchError::Invalid("patch content doesn't match retainKeys list".into()));
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// The field a parallel-list directive (`$setElementOrder/containers`) refers to.
fn directive_target<'k>(key: &'k str, prefix: &str, format_error: &str) -> Result<&'k str> {
    match key.split_once('/') {
        Some((p, field)) if p == prefix => Ok(field),
        _ => Err(bad(format_error)),
    }
}

fn set_element_orders(original: &mut Object, patch: &mut Object, shape: Option<Shape>) -> Result<()> {
    let keys: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ORDER)).cloned().collect();
    for key in keys {
        let order = patch.remove(&key).unwrap_or_default();
        let field = directive_target(&key, SET_ORDER, "invalid patch format of setElementOrder list")?;
        set_element_order(original, patch, field, order, child(shape, field))?;
    }
    Ok(())
}

/// Merges the list `field` (if the patch has it) and puts its items in the order the
/// `$setElementOrder` list gives; items it does not name keep their place among the others.
fn set_element_order(
    original: &mut Object,
    patch: &mut Object,
    field: &str,
    order: Value,
    shape: Option<Shape>,
) -> Result<()> {
    let Value::Array(order) = order else { return Err(bad("invalid patch format of setElementOrder list")) };
    let patch_list = patch.remove(field).map(expect_list).transpose()?;
    let original_list = original.remove(field).map(expect_list).transpose()?;
    let key = shape.and_then(|s| s.patch_merge_key());
    validate_order(patch_list.as_deref().unwrap_or_default(), &order, key)?;
    let server = ids(original_list.as_deref().unwrap_or_default(), key);
    let merged = match (original_list, patch_list) {
        (None, None) => return Ok(()),
        (Some(o), None) => o,
        // merging a list always gives a list
        (o, Some(p)) => match merge_value(o.map(Value::Array), Value::Array(p), shape)? {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        },
    };
    original.insert(field.to_string(), Value::Array(reorder(merged, &order, &server, key)));
    Ok(())
}

fn expect_list(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(list) => Ok(list),
        other => Err(bad(format!("expected a []interface {{}}, but received a {}", go_type(&other)))),
    }
}

/// Go's name for the type of a decoded JSON value, as upstream's messages print it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The patch's items (deletions aside) must appear in the order list, in its order.
fn validate_order(patch: &[Value], order: &[Value], key: Option<&str>) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut remaining = order.iter();
    for item in patch.iter().filter(|i| i.get(PATCH).is_none()) {
        let id = identity(item, key).ok_or_else(|| no_merge_key(item, key.unwrap_or_default()))?;
        if !remaining.any(|o| identity(o, key) == Some(id)) {
            let (p, o) = (go_fmt_list(patch), go_fmt_list(order));
            return Err(bad(format!("The order in patch list:\n{p}\n doesn't match {SET_ORDER} list:\n{o}\n")));
        }
    }
    Ok(())
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    bad(format!("map: {} does not contain declared merge key: {key}", go_fmt(item)))
}

/// What identifies a list item: its merge key's value, or the scalar itself.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(k) => item.get(k),
        None => Some(item),
    }
}

fn merge_entry(original: &mut Object, key: String, value: Value, shape: Option<Shape>) -> Result<()> {
    if key.starts_with(DELETE_FROM) {
        let field = directive_target(&key, DELETE_FROM, "invalid patch format of primitive list")?;
        return delete_from_list(original, field, value);
    }
    if value.is_null() {
        original.remove(&key);
        return Ok(());
    }
    if let Some(merged) = merge_value(original.remove(&key), value, child(shape, &key))? {
        original.insert(key, merged);
    }
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: drops those scalars from the list. (Upstream sets
/// an absent list to the deletion list; deleting from nothing leaves nothing here.)
fn delete_from_list(original: &mut Object, field: &str, doomed: Value) -> Result<()> {
    let doomed = match doomed {
        Value::Null => return Ok(()),
        Value::Array(d) => d,
        _ => return Err(bad("invalid patch format of primitive list")),
    };
    if let Some(Value::Array(items)) = original.get_mut(field) {
        items.retain(|v| !doomed.contains(v));
    }
    Ok(())
}

/// One position: maps merge, lists with the merge strategy merge, the rest is replaced.
/// None: the position is to be left out.
fn merge_value(original: Option<Value>, patch: Value, shape: Option<Shape>) -> Result<Option<Value>> {
    let replaces = shape.is_some_and(|s| s.patch_replaces());
    let merges_lists = shape.is_some_and(|s| s.patch_strategy().merge);
    match (original, patch) {
        (Some(Value::Object(o)), Value::Object(p)) if !replaces => merge_map(o, p, shape).map(|m| Some(m.into())),
        (Some(Value::Array(o)), Value::Array(p)) if merges_lists => merge_list(o, p, shape).map(|l| Some(l.into())),
        (_, p) => fresh(p, shape),
    }
}

/// A patch value that replaces rather than merges, without its nulls; as upstream, a map
/// carrying a `$patch` directive there (nothing to delete or replace) is left out.
fn fresh(patch: Value, shape: Option<Shape>) -> Result<Option<Value>> {
    match patch {
        Value::Object(p) if p.contains_key(PATCH) => Ok(None),
        Value::Object(p) => merge_map(Object::new(), p, shape).map(|m| Some(m.into())),
        Value::Array(list) => {
            let items = shape.and_then(|s| s.items());
            let kept: Result<Vec<Option<Value>>> = list.into_iter().map(|v| fresh(v, items)).collect();
            Ok(Some(kept?.into_iter().flatten().collect()))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// Merges a list with the merge strategy: scalars as a set, objects by merge key.
fn merge_list(original: Vec<Value>, patch: Vec<Value>, shape: Option<Shape>) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if !objects_only(&original, &patch)? {
        return Ok(merge_scalars(original, patch));
    }
    let key = shape.and_then(|s| s.patch_merge_key());
    let key = key.ok_or_else(|| bad("cannot merge lists without merge key for type struct"))?;
    merge_by_key(original, patch, key, shape.and_then(|s| s.items()))
}

/// Whether a merging list holds objects (else scalars); a mixture or nested lists is an error.
fn objects_only(original: &[Value], patch: &[Value]) -> Result<bool> {
    let all = || original.iter().chain(patch);
    if all().any(Value::is_array) {
        return Err(PatchError::Invalid("lists of lists are not supported".into()));
    }
    let objects = all().filter(|v| v.is_object()).count();
    if objects != 0 && objects != original.len() + patch.len() {
        let (o, p) = (go_fmt_list(original), go_fmt_list(patch));
        return Err(bad(format!("list element types are not identical: [{o} {p}]")));
    }
    Ok(objects != 0)
}

/// A set union: patch items in the patch's order, interleaved with the original's others.
fn merge_scalars(original: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for v in original.iter().chain(&patch) {
        if !merged.contains(v) {
            merged.push(v.clone());
        }
    }
    reorder(merged, &patch, &original, None)
}

fn merge_by_key(original: Vec<Value>, patch: Vec<Value>, key: &str, items: Option<Shape>) -> Result<Vec<Value>> {
    let (mut merged, plain) = item_directives(original, patch, key, items)?;
    let server = ids(&merged, Some(key));
    let mut order = Vec::with_capacity(plain.len());
    for item in plain {
        let id = item.get(key).cloned().ok_or_else(|| no_merge_key(&Value::Object(item.clone()), key))?;
        match merged.iter().position(|o| o.get(key) == Some(&id)) {
            Some(i) => {
                let base = match merged[i].take() {
                    Value::Object(o) => o,
                    _ => Object::new(),
                };
                merged[i] = Value::Object(merge_map(base, item, items)?);
            }
            None => merged.push(Value::Object(merge_map(Object::new(), item, items)?)),
        }
        order.push(json!({ key: id }));
    }
    Ok(reorder(merged, &order, &server, Some(key)))
}

/// Applies the `$patch` items of a merging list: `delete` removes the original's items
/// with that key, `replace` makes the patch's other items the whole list. Returns the
/// original left and the patch's plain items.
fn item_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    items: Option<Shape>,
) -> Result<(Vec<Value>, Vec<Object>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(item) = item else { return Err(bad("list items must be objects")) };
        let Some(directive) = item.get(PATCH) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let id = item.get(key).ok_or_else(|| no_merge_key(&Value::Object(item.clone()), key))?;
                original.retain(|o| o.get(key) != Some(id));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(bad("merging lists cannot yet be specified in the patch")),
            _ => return Err(unknown_patch_type(directive, &item)),
        }
    }
    if !replace {
        return Ok((original, plain));
    }
    let whole = plain.into_iter().map(|i| merge_map(Object::new(), i, items).map(Value::Object));
    Ok((whole.collect::<Result<_>>()?, Vec::new()))
}

/// What `reorder` needs of the server's list: each item's identity, in order.
fn ids(list: &[Value], key: Option<&str>) -> Vec<Value> {
    match key {
        Some(k) => list.iter().filter_map(|v| v.get(k)).map(|id| json!({ k: id })).collect(),
        None => list.to_vec(),
    }
}

/// Orders merged list items as upstream does: those named in `order` (by identity) in
/// that order, the others in their `server` order, the two interleaved so that an item
/// of the server goes first when it came first on the server.
fn reorder(merged: Vec<Value>, order: &[Value], server: &[Value], key: Option<&str>) -> Vec<Value> {
    let position = |list: &[Value], item: &Value| {
        let id = identity(item, key)?;
        list.iter().position(|o| identity(o, key) == Some(id))
    };
    let (mut named, mut others): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| position(order, v).is_some());
    named.sort_by_key(|v| position(order, v));
    others.sort_by_key(|v| position(server, v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(named.len() + others.len());
    let (mut named, mut others) = (named.into_iter().peekable(), others.into_iter().peekable());
    loop {
        let server_first = match (others.peek(), named.peek()) {
            (Some(o), Some(n)) => matches!((position(server, o), position(server, n)), (Some(a), Some(b)) if a < b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if server_first { others.next() } else { named.next() });
    }
}

/// A value as Go's `%v` prints decoded JSON, for upstream's error wording.
fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(list) => go_fmt_list(list),
        Value::Object(map) => go_fmt_map(map),
        other => other.to_string(),
    }
}

fn go_fmt_list(list: &[Value]) -> String {
    format!("[{}]", list.iter().map(go_fmt).collect::<Vec<_>>().join(" "))
}

fn go_fmt_map(map: &Object) -> String {
    format!("map[{}]", map.iter().map(|(k, v)| format!("{k}:{}", go_fmt(v))).collect::<Vec<_>>().join(" "))
}
