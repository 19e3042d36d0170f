//! Field management: who set which field of an object (`metadata.managedFields`), and
//! server-side apply on top of it, with upstream's semantics (the apiserver's
//! fieldmanager and structured-merge-diff) driven by the schemas in `crate::schema`.
//!
//! Every write records an `Update` entry for its manager owning the fields it changed,
//! taken from whoever owned them before. An apply merges a configuration into the object,
//! records an `Apply` entry owning exactly the applied fields, removes fields the manager
//! applied before and nobody owns now, and refuses to change fields other managers own
//! unless forced.

mod apply;
pub mod fieldset;
mod walk;

use http::HeaderMap;
use serde_json::{Map, Value, json};

pub use apply::{APPLY_PATCH, Target, apply, reject_force};
use fieldset::{FieldSet, PathElement, path_string};

use crate::handlers::status::{ApiError, FieldError};
use crate::registry::{ResourceDef, meta};
use crate::schema::{Shape, schemas};

/// Who is writing, and through which subresource.
#[derive(Clone, Debug, PartialEq)]
pub struct Manager {
    pub name: String,
    pub subresource: Option<&'static str>,
}

/// Upstream's limit on a manager's name.
const MAX_MANAGER_LEN: usize = 128;

impl Manager {
    /// Upstream's checks on a `fieldManager` parameter: at most 128 printable characters.
    /// `options` names the request's options kind (CreateOptions, PatchOptions, …).
    pub fn validate(name: &str, options: &str) -> Result<(), ApiError> {
        let why = if name.chars().count() > MAX_MANAGER_LEN {
            FieldError::too_long("fieldManager", MAX_MANAGER_LEN)
        } else if name.chars().any(|c| c.is_control()) {
            FieldError::invalid("fieldManager", &json!(name), "must only contain printable characters")
        } else {
            return Ok(());
        };
        Err(ApiError::invalid("meta.k8s.io", options, "", vec![why]))
    }

    /// The `fieldManager` parameter, else the User-Agent up to its first `/`
    /// ("kubectl/v1.33.0 (linux/amd64) …" → "kubectl"), as upstream names writers.
    pub fn from_request(field_manager: Option<&str>, headers: &HeaderMap, subresource: Option<&'static str>) -> Self {
        let name = match field_manager.filter(|m| !m.is_empty()) {
            Some(m) => m.to_string(),
            None => {
                let agent = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
                let prefix = agent.split('/').next().unwrap_or("");
                prefix.chars().take(MAX_MANAGER_LEN).collect()
            }
        };
        Manager { name, subresource }
    }
}

/// One managedFields entry, its set decoded.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    apply: bool,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    fn new(manager: &Manager, apply: bool, api_version: &str) -> Entry {
        Entry {
            manager: manager.name.clone(),
            apply,
            api_version: api_version.to_string(),
            time: None,
            subresource: manager.subresource.unwrap_or("").to_string(),
            set: FieldSet::default(),
        }
    }

    /// Upstream keys an appliers' entry without its version, so re-applying through
    /// another version is still the same applier; updaters are keyed per version.
    fn same_writer(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.apply == other.apply
            && self.subresource == other.subresource
            && (self.apply || self.api_version == other.api_version)
    }

    fn operation(&self) -> &'static str {
        if self.apply { "Apply" } else { "Update" }
    }

    /// How conflict messages name the manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if !self.apply {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation(),
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_json(),
        });
        if let Some(t) = &self.time {
            v["time"] = json!(t);
        }
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }

    fn from_json(v: &Value) -> Option<Entry> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let apply = match v.get("operation").and_then(Value::as_str)? {
            "Apply" => true,
            "Update" => false,
            _ => return None,
        };
        if v.get("fieldsType").and_then(Value::as_str).is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_json(f)?,
            None => FieldSet::default(),
        };
        let time = v.get("time").and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: text("manager"),
            apply,
            api_version: text("apiVersion"),
            time,
            subresource: text("subresource"),
            set,
        })
    }
}

/// The entries stored in an object; None when they are not a valid encoding.
fn decode_entries(obj: &Value) -> Option<Vec<Entry>> {
    match meta::metadata(obj).and_then(|m| m.get("managedFields")) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(list)) => list.iter().map(Entry::from_json).collect(),
        Some(_) => None,
    }
}

/// The entries a write starts from, as upstream decides: a subresource write, or a
/// body without (valid) managedFields, keeps the live ones; `[{}]` clears them; valid
/// ones sent by the client replace them.
fn base_entries(old: Option<&Value>, new: &Value, subresource: bool) -> Vec<Entry> {
    let live = || old.and_then(decode_entries).unwrap_or_default();
    if subresource {
        return live();
    }
    let sent = meta::metadata(new).and_then(|m| m.get("managedFields"));
    if sent.and_then(Value::as_array).is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty)) {
        return Vec::new();
    }
    match decode_entries(new) {
        Some(entries) if !entries.is_empty() => entries,
        _ => live(),
    }
}

/// Drop empty entries, order them as upstream (operation, time, manager, version,
/// subresource) and store them in the object.
fn store_entries(mut entries: Vec<Entry>, obj: &mut Value) {
    entries.retain(|e| !e.set.is_empty());
    cap_updaters(&mut entries);
    entries.sort_by(|a, b| {
        (a.operation(), &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            b.operation(),
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let m = meta::metadata_mut(obj);
    if entries.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(entries.iter().map(Entry::to_json).collect()));
    }
}

/// Upstream keeps at most this many Update entries; older ones merge into one.
const MAX_UPDATERS: usize = 10;

/// Merge the oldest Update entries into one "ancient-changes" entry (per version)
/// until at most MAX_UPDATERS remain, so objects written by many clients stay small.
fn cap_updaters(entries: &mut Vec<Entry>) {
    let updaters = entries.iter().filter(|e| !e.apply).count();
    if updaters <= MAX_UPDATERS {
        return;
    }
    let (mut updates, appliers): (Vec<Entry>, Vec<Entry>) = std::mem::take(entries).into_iter().partition(|e| !e.apply);
    updates.sort_by(|a, b| a.time.cmp(&b.time));
    let kept = updates.split_off(updaters - MAX_UPDATERS + 1);
    let mut buckets: Vec<Entry> = Vec::new();
    for old in updates {
        match buckets.iter_mut().find(|b| b.api_version == old.api_version) {
            Some(bucket) => {
                bucket.set.union_with(&old.set);
                bucket.time = old.time;
            }
            None => buckets.push(Entry { manager: "ancient-changes".into(), subresource: String::new(), ..old }),
        }
    }
    entries.extend(appliers);
    entries.extend(buckets);
    entries.extend(kept);
}

/// Set a writer's fields, stamping the time only when they changed.
fn set_fields(entries: &mut Vec<Entry>, me: Entry, set: FieldSet) {
    match entries.iter_mut().find(|e| e.same_writer(&me)) {
        Some(e) if e.set == set => {}
        Some(e) => {
            e.set = set;
            e.time = Some(meta::now_rfc3339());
        }
        None => entries.push(Entry { time: Some(meta::now_rfc3339()), set, ..me }),
    }
}

/// The metadata every manager shares and nobody owns, as upstream strips it.
const UNOWNED_METADATA: [&str; 8] =
    ["name", "namespace", "creationTimestamp", "selfLink", "uid", "generation", "managedFields", "resourceVersion"];

/// Remove what no manager owns from a set: identity and server metadata, and the part
/// of the object this write cannot change (status for the main resource, everything
/// but status for the status subresource).
fn strip(set: &mut FieldSet, status_only: bool) {
    let status = PathElement::Field("status".into());
    if status_only {
        let kept = set.get(&status).cloned();
        *set = FieldSet::default();
        if let Some(node) = kept {
            set.put(status, node);
        }
        return;
    }
    for top in ["apiVersion", "kind", "status"] {
        set.remove(&PathElement::Field(top.into()));
    }
    let metadata = PathElement::Field("metadata".into());
    if let Some(mut node) = set.get(&metadata).cloned() {
        for field in UNOWNED_METADATA {
            node.children.remove(&PathElement::Field(field.into()));
        }
        set.remove(&metadata);
        set.put(metadata, node);
    }
}

fn strip_diff(d: &mut walk::Diff, status_only: bool) {
    for set in [&mut d.added, &mut d.removed, &mut d.modified] {
        strip(set, status_only);
    }
}

/// Other writers lose the fields this write changed or removed.
fn take_over(entries: &mut [Entry], me: &Entry, d: &walk::Diff) {
    let mut lost = d.modified.clone();
    lost.union_with(&d.added);
    lost.union_with(&d.removed);
    for e in entries.iter_mut().filter(|e| !e.same_writer(me)) {
        e.set = e.set.difference(&lost);
    }
}

fn shape_of(res: &ResourceDef) -> Option<Shape<'static>> {
    schemas().for_kind(res.group, res.version, res.kind)
}

/// Record a create (`old` None) or update by `manager`: it owns what it changed.
/// `new` is the object about to be written; its managedFields are set here.
pub fn record_update(res: &ResourceDef, old: Option<&Value>, new: &mut Value, manager: &Manager) {
    let mut entries = base_entries(old, new, manager.subresource.is_some());
    let empty = Value::Object(Map::new());
    let mut d = walk::diff(old.unwrap_or(&empty), new, shape_of(res));
    strip_diff(&mut d, manager.subresource == Some("status"));
    let me = Entry::new(manager, false, &res.api_version());
    take_over(&mut entries, &me, &d);
    let mut set = entries.iter().find(|e| e.same_writer(&me)).map(|e| e.set.difference(&d.removed)).unwrap_or_default();
    set.union_with(&d.modified);
    set.union_with(&d.added);
    set_fields(&mut entries, me, set);
    store_entries(entries, new);
}

/// An object nobody manages yet (written before fields were tracked) is first owned
/// whole by "before-first-apply", as upstream does, so an apply cannot silently change
/// what was there.
fn before_first_apply(res: &ResourceDef, live: &Value, status_only: bool) -> Entry {
    let manager = Manager { name: "before-first-apply".into(), subresource: None };
    let mut set = walk::fields(live, shape_of(res));
    strip(&mut set, status_only);
    Entry { time: Some(meta::now_rfc3339()), set, ..Entry::new(&manager, false, &res.api_version()) }
}

/// The 409 upstream answers an apply that would change other managers' fields.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let message = match conflicts {
        [(manager, path)] => format!("Apply failed with 1 conflict: conflict with {manager}: {path}"),
        _ => {
            let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
            managers.sort();
            managers.dedup();
            let groups: Vec<String> = managers
                .iter()
                .map(|m| {
                    let paths: Vec<&str> =
                        conflicts.iter().filter(|(cm, _)| cm == *m).map(|(_, p)| p.as_str()).collect();
                    format!("conflicts with {m}:\n- {}", paths.join("\n- "))
                })
                .collect();
            format!("Apply failed with {} conflicts: {}", conflicts.len(), groups.join("\n"))
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": p}))
        .collect();
    ApiError {
        code: http::StatusCode::CONFLICT,
        reason: "Conflict",
        message,
        details: Some(json!({ "causes": causes })),
    }
}

/// Apply `config` for `manager` on top of `live` (None: the object does not exist).
/// Returns the object to write, managedFields included, or the conflicts as a 409.
fn merge_applied(
    res: &ResourceDef,
    live: Option<&Value>,
    config: &Value,
    manager: &Manager,
    force: bool,
) -> Result<Value, ApiError> {
    let shape = shape_of(res);
    check_declared(res, config)?;
    let status_only = manager.subresource == Some("status");
    let mut merged = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = live.and_then(decode_entries).unwrap_or_default();
    if let (Some(live), true) = (live, entries.is_empty()) {
        entries.push(before_first_apply(res, live, status_only));
    }
    walk::merge(&mut merged, config, shape);
    let mut applied = walk::fields(config, shape);
    strip(&mut applied, status_only);
    let me = Entry::new(manager, true, &res.api_version());
    let last = entries.iter().find(|e| e.same_writer(&me)).map(|e| e.set.clone()).unwrap_or_default();
    set_fields(&mut entries, me.clone(), applied);
    if !last.is_empty() {
        let mut owned = FieldSet::default();
        entries.iter().for_each(|e| owned.union_with(&e.set));
        walk::prune(&mut merged, &last, Some(&owned), shape);
    }
    let empty = Value::Object(Map::new());
    let mut d = walk::diff(live.unwrap_or(&empty), &merged, shape);
    strip_diff(&mut d, status_only);
    if !force {
        check_conflicts(res, live, &entries, &me, &d)?;
    }
    take_over(&mut entries, &me, &d);
    store_entries(entries, &mut merged);
    if manager.name == "kubectl" {
        sync_last_applied(config, &mut merged);
    }
    Ok(merged)
}

/// An applied configuration must be fully typed, as upstream's typed conversion demands.
fn check_declared(res: &ResourceDef, config: &Value) -> Result<(), ApiError> {
    match walk::undeclared(config, shape_of(res)) {
        Some(path) => Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={}): {path}: field not declared in schema",
            res.api_version(),
            res.kind
        ))),
        None => Ok(()),
    }
}

/// The 409 when the apply changes (or adds) fields other managers own.
fn check_conflicts(
    res: &ResourceDef,
    live: Option<&Value>,
    entries: &[Entry],
    me: &Entry,
    d: &walk::Diff,
) -> Result<(), ApiError> {
    let mut changed = d.modified.clone();
    changed.union_with(&d.added);
    // kubectl taking over from client-side apply may change what that apply set and
    // nobody changed since, as upstream allows
    let taking_over = live.filter(|_| me.manager == "kubectl").and_then(|l| unchanged_since_last_applied(res, l));
    if let Some(allowed) = taking_over {
        changed = changed.difference(&allowed);
    }
    let conflicts: Vec<(String, String)> = entries
        .iter()
        .filter(|e| !e.same_writer(me))
        .flat_map(|e| e.set.intersection(&changed).paths().into_iter().map(|p| (e.describe(), path_string(&p))))
        .collect();
    if conflicts.is_empty() { Ok(()) } else { Err(conflict_error(&conflicts)) }
}

/// The fields client-side apply last set (its annotation) that still hold the value it
/// set; None without a usable annotation.
fn unchanged_since_last_applied(res: &ResourceDef, live: &Value) -> Option<FieldSet> {
    let text = meta::metadata(live)?.get("annotations")?.get(LAST_APPLIED)?.as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(res.api_version().as_str()) {
        return None;
    }
    let shape = shape_of(res);
    Some(walk::fields(&last, shape).difference(&walk::diff(&last, live, shape).modified))
}

/// The annotation client-side `kubectl apply` keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// When kubectl's server-side apply takes over an object managed by client-side
/// apply, upstream keeps that annotation in step with what was applied (outside of
/// field ownership), so a later client-side apply computes the right patch.
fn sync_last_applied(config: &Value, merged: &mut Value) {
    let annotations = meta::metadata_mut(merged).get_mut("annotations").and_then(Value::as_object_mut);
    let Some(annotations) = annotations.filter(|a| a.contains_key(LAST_APPLIED)) else { return };
    let mut applied = config.clone();
    if let Some(a) = applied.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
    }
    annotations.insert(LAST_APPLIED.into(), Value::String(format!("{applied}\n")));
}

#[cfg(test)]
mod tests;
