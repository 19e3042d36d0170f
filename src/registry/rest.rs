//! The generic operations every resource shares (create, get, update, delete, list),
//! applying the kind's strategy and writing through the store's transactions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::allocator::Allocator;
use super::keys::KeySpace;
use super::meta;
use super::store::{Claim, CreateOutcome, Guard, Store, Stored, WriteOutcome};
use super::strategy::Allocations;
use super::validation::validate_object_meta;
use super::{ResourceDef, events};
use crate::admission::{self, Admit, Objects, Operation};
use crate::fieldmanager::{self, Manager};
use crate::handlers::status::{ApiError, ApiResult};

/// How often a write retries after losing a race it can recover from.
const MAX_RETRIES: usize = 8;

#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub keys: KeySpace,
    pub alloc: Allocator,
    /// Namespace name → (mod_revision, terminating), so a create needs no extra read;
    /// a stale entry fails the create's compare and is refreshed. Bounded by the
    /// number of namespaces.
    pub namespaces: Arc<Mutex<HashMap<String, (i64, bool)>>>,
    /// The admission chain, set once at start (shared by every clone); writes whose
    /// options carry an `Admit` pass through it.
    pub admission: Arc<OnceLock<admission::Chain>>,
}

impl Registry {
    pub fn new(store: Store, keys: KeySpace, alloc: Allocator) -> Registry {
        Registry { store, keys, alloc, namespaces: Arc::default(), admission: Arc::default() }
    }
}

/// Which part of an object an update writes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Part {
    Main,
    Status,
    /// Spec and status together: server-side writes such as pod binding, which sets
    /// spec.nodeName and the PodScheduled condition in one step.
    Whole,
}

/// How a create or update is carried out: for real or as a dry run, and who writes it
/// (recorded in managedFields; None for the server's own writes and for server-side
/// apply, which records its own entry). `admit`: the requester, for admission; None
/// for the server's own writes, which skip it.
#[derive(Default, Debug)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub manager: Option<Manager>,
    pub admit: Option<Admit>,
}

impl Part {
    /// The subresource a write through this part is recorded under.
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Part::Main | Part::Whole => None,
            Part::Status => Some("status"),
        }
    }
}

/// DeleteOptions preconditions and grace period.
#[derive(Default, Debug)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub grace_period: Option<i64>,
    pub dry_run: bool,
    /// `propagationPolicy` (or the legacy `orphanDependents`): Foreground and Orphan leave
    /// the object marked with the `foregroundDeletion` or `orphan` finalizer for the
    /// garbage collector; Background (the default) deletes it at once.
    pub propagation: Option<Propagation>,
    /// The requester, for admission (None: the server's own delete).
    pub admit: Option<Admit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> ApiResult<Propagation> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }

    /// The finalizer a marked object carries until the garbage collector is done with it.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
        }
    }
}

impl DeleteOpts {
    /// Take the options a DeleteOptions body carries (grace period, dry run, preconditions).
    pub fn merge_body(&mut self, v: &Value) -> ApiResult<()> {
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(Propagation::parse(p)?);
        } else if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
            self.propagation = Some(if orphan { Propagation::Orphan } else { Propagation::Background });
        }
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period = Some(g);
        }
        if v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All")) {
            self.dry_run = true;
        }
        self.uid = v.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
        self.resource_version = v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        Ok(())
    }
}

impl Registry {
    pub fn key(&self, res: &ResourceDef, ns: &str, name: &str) -> String {
        self.keys.object(res, ns, name)
    }

    /// Decode a stored value into the served form of `res`, with its resourceVersion.
    pub fn decode_stored(res: &ResourceDef, stored: &Stored) -> ApiResult<Value> {
        Self::decode_bytes(res, &stored.value, stored.mod_revision)
    }

    /// Decode stored bytes (with or without a resourceVersion in them) into the served
    /// form of `res`, with resourceVersion `rv`.
    pub fn decode_bytes(res: &ResourceDef, bytes: &[u8], rv: i64) -> ApiResult<Value> {
        let mut obj: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
        if res.storage.is_some() {
            obj = events::from_core(&obj);
        }
        meta::set_resource_version(&mut obj, rv);
        Ok(obj)
    }

    /// The stored bytes of a served object: storage conversion, no resourceVersion.
    fn encode(res: &ResourceDef, obj: &Value) -> Vec<u8> {
        let mut stored = if res.storage.is_some() { events::to_core(obj) } else { obj.clone() };
        meta::metadata_mut(&mut stored).remove("resourceVersion");
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    pub async fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        let stored = self.get_stored(res, ns, name).await?;
        Self::decode_stored(res, &stored)
    }

    async fn get_stored(&self, res: &ResourceDef, ns: &str, name: &str) -> ApiResult<Stored> {
        self.store.get(&self.key(res, ns, name)).await?.ok_or_else(|| ApiError::not_found(res.group, res.plural, name))
    }

    /// The guard a create into `ns` needs: the namespace's key at the mod_revision we
    /// know, so the transaction's compare catches any change since admission
    /// (NamespaceLifecycle) judged the namespace; on a change the create is admitted
    /// again. For requests the policy (missing: NotFound, terminating: Forbidden) is the
    /// plug-in's, and without it a create into a missing namespace has no guard, as
    /// upstream then stores it anyway. The server's own writes (`own`: no admission)
    /// keep that policy here, so a controller never leaves an object behind in a
    /// namespace being cleaned up.
    async fn namespace_guard(&self, res: &ResourceDef, ns: &str, name: &str, own: bool) -> ApiResult<Option<Guard>> {
        if !res.namespaced {
            return Ok(None);
        }
        let state = self.namespace_state(ns).await?;
        match state {
            None if own => Err(ApiError::not_found("", "namespaces", ns)),
            Some((_, true)) if own => Err(ApiError::forbidden(
                res.group,
                res.plural,
                name,
                &format!("unable to create new content in namespace {ns} because it is being terminated"),
            )),
            _ => Ok(state.map(|(mod_revision, _)| Guard { key: self.namespace_key(ns), mod_revision })),
        }
    }

    /// A namespace's (mod_revision, terminating), None when it does not exist: from
    /// the registry's cache, read from etcd on a miss.
    pub async fn namespace_state(&self, ns: &str) -> ApiResult<Option<(i64, bool)>> {
        let cached = self.namespaces.lock().ok().and_then(|c| c.get(ns).copied());
        match cached {
            Some(state) => Ok(Some(state)),
            None => {
                let stored = self.store.get(&self.namespace_key(ns)).await?;
                Ok(self.remember_namespace(ns, stored.as_ref()))
            }
        }
    }

    fn namespace_key(&self, ns: &str) -> String {
        format!("{}/namespaces/{ns}", self.keys.prefix)
    }

    /// Record a namespace's state (None: gone) and return it.
    fn remember_namespace(&self, ns: &str, stored: Option<&Stored>) -> Option<(i64, bool)> {
        let state = stored.map(|s| {
            let obj: Value = serde_json::from_slice(&s.value).unwrap_or(Value::Null);
            let terminating = obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
            (s.mod_revision, terminating)
        });
        if let Ok(mut cache) = self.namespaces.lock() {
            match state {
                Some(st) => cache.insert(ns.to_string(), st),
                None => cache.remove(ns),
            };
        }
        state
    }

    pub async fn create(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        set_namespace(res, &mut obj, ns);
        let generated = generate_name(&mut obj);
        meta::init_on_create(&mut obj, res.strategy.tracks_generation());
        res.strategy.default(&mut obj);
        if let Some(manager) = &opts.manager {
            fieldmanager::record_update(res, None, &mut obj, manager);
        }
        if res.has_status
            && let Some(status) = res.strategy.initial_status(&obj)
        {
            obj["status"] = status;
        }
        let admission = self.admission_of(opts.admit.as_ref());
        if let Some((chain, admit)) = admission {
            let name = meta::name(&obj).to_string();
            let a = attributes(res, admit, Operation::Create, ns, &name, opts.dry_run);
            chain.mutate(&a, &mut Objects { obj: &mut obj, old: None }).await?;
        }
        self.validate(res, &obj, None)?;
        if let Some((chain, admit)) = admission {
            self.validate_admission(chain, res, admit, ns, &mut obj, opts.dry_run).await?;
        }
        let mut taken = HashSet::new();
        for _ in 0..MAX_RETRIES {
            let name = meta::name(&obj).to_string();
            let guard = self.namespace_guard(res, ns, &name, opts.admit.is_none()).await?;
            let key = self.key(res, ns, &name);
            let mut candidate = obj.clone();
            let allocs = res.strategy.allocate(&mut candidate, None, &self.alloc, &taken)?;
            if opts.dry_run {
                return Ok(candidate);
            }
            let bytes = Self::encode(res, &candidate);
            match self.store.create(&key, bytes, &allocs.claims, guard.as_ref()).await? {
                CreateOutcome::Created(rev) => {
                    meta::set_resource_version(&mut candidate, rev);
                    tracing::debug!(resource = res.plural, namespace = ns, name, rev, "created");
                    return Ok(candidate);
                }
                CreateOutcome::Exists if generated => regenerate_name(&mut obj),
                CreateOutcome::Exists => return Err(ApiError::already_exists(res.group, res.plural, &name)),
                CreateOutcome::ClaimTaken => taken = self.taken_allocations(&allocs).await?,
                CreateOutcome::GuardChanged(current) => {
                    // the namespace changed since admission judged it: judge again
                    self.remember_namespace(ns, current.as_ref());
                    if let Some((chain, admit)) = admission {
                        self.validate_admission(chain, res, admit, ns, &mut obj, opts.dry_run).await?;
                    }
                }
            }
        }
        let name = meta::name(&obj).to_string();
        Err(ApiError::conflict(res.group, res.plural, &name, "too many concurrent allocations, try again"))
    }

    /// The chain and the requester, when this write is admitted.
    fn admission_of<'a>(&'a self, admit: Option<&'a Admit>) -> Option<(&'a admission::Chain, &'a Admit)> {
        let chain = self.admission.get().filter(|c| !c.is_empty())?;
        Some((chain, admit?))
    }

    /// The validating phase of a create.
    async fn validate_admission(
        &self,
        chain: &admission::Chain,
        res: &'static ResourceDef,
        admit: &Admit,
        ns: &str,
        obj: &mut Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let name = meta::name(obj).to_string();
        let a = attributes(res, admit, Operation::Create, ns, &name, dry_run);
        chain.validate(&a, &Objects { obj, old: None }).await
    }

    /// Admit a delete of `obj` (validating phase; upstream's mutating phase has no
    /// object to change on delete).
    pub async fn admit_delete(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        obj: &mut Value,
        opts: &DeleteOpts,
    ) -> ApiResult<()> {
        let Some((chain, admit)) = self.admission_of(opts.admit.as_ref()) else {
            return Ok(());
        };
        let name = meta::name(obj).to_string();
        let a = attributes(res, admit, Operation::Delete, ns, &name, opts.dry_run);
        chain.validate(&a, &Objects { obj, old: None }).await
    }

    /// Admit a create-only action (binding, eviction, token request) on its body.
    pub async fn admit_action(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        admit: Option<&Admit>,
        body: &mut Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let Some((chain, admit)) = self.admission_of(admit) else {
            return Ok(());
        };
        chain.admit(&attributes(res, admit, Operation::Create, ns, name, dry_run), body).await
    }

    async fn taken_allocations(&self, allocs: &Allocations) -> ApiResult<HashSet<String>> {
        let mut taken = HashSet::new();
        let prefixes: HashSet<String> = allocs
            .claims
            .iter()
            .map(|c: &Claim| c.key.rsplit_once('/').map_or(String::new(), |(p, _)| format!("{p}/")))
            .collect();
        for prefix in prefixes {
            taken.extend(self.store.keys_under(&prefix).await?);
        }
        Ok(taken)
    }

    fn validate(&self, res: &ResourceDef, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
        let mut errs = validate_object_meta(obj, res.strategy.name_rule(), res.namespaced);
        errs.extend(match old {
            Some(old) => res.strategy.validate_update(obj, old),
            None => res.strategy.validate(obj),
        });
        if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(res.group, res.kind, meta::name(obj), errs)) }
    }

    /// Replace an object (PUT), or its status. A body without resourceVersion is an
    /// unconditional update, retried on races; with one, a stale version is a Conflict.
    pub async fn update(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        part: Part,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let dry_run = opts.dry_run;
        let body_name = meta::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let expected_rv = meta::meta_str(&body, "resourceVersion").to_string();
        let expected = if expected_rv.is_empty() {
            None
        } else {
            Some(meta::parse_resource_version(&expected_rv).ok_or_else(|| {
                ApiError::bad_request(format!("invalid resourceVersion {expected_rv:?}: must be an integer"))
            })?)
        };
        let key = self.key(res, ns, name);
        let mut taken = HashSet::new();
        // an unconditional update retries every lost race, as upstream's
        // GuaranteedUpdate; only allocation races are bounded
        let mut claim_races = 0;
        loop {
            let current = self.get_stored(res, ns, name).await?;
            if expected.is_some_and(|rv| rv != current.mod_revision) {
                return Err(ApiError::modified(res.group, res.plural, name));
            }
            let old = Self::decode_stored(res, &current)?;
            // a uid in the body is a precondition, as upstream's defaultUpdatedObjectInfo
            let (body_uid, uid) = (meta::meta_str(&body, "uid"), meta::meta_str(&old, "uid"));
            if !body_uid.is_empty() && body_uid != uid {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    &format!("Precondition failed: UID in precondition: {body_uid}, UID in object meta: {uid}"),
                ));
            }
            let mut new = merge_update(res, &old, body.clone(), part, ns);
            if part != Part::Status {
                res.strategy.default(&mut new);
            }
            let admission = self.admission_of(opts.admit.as_ref());
            let a = admission.map(|(_, admit)| attributes(res, admit, Operation::Update, ns, name, dry_run));
            if let (Some((chain, _)), Some(a)) = (admission, &a) {
                chain.mutate(a, &mut Objects { obj: &mut new, old: Some(&old) }).await?;
            }
            if part != Part::Status {
                self.validate(res, &new, Some(&old))?;
                if res.strategy.tracks_generation() {
                    meta::bump_generation_if_spec_changed(&mut new, &old);
                }
            }
            if let (Some((chain, _)), Some(a)) = (admission, &a) {
                chain.validate(a, &Objects { obj: &mut new, old: Some(&old) }).await?;
            }
            if let Some(manager) = &opts.manager {
                fieldmanager::record_update(res, Some(&old), &mut new, manager);
            }
            if part != Part::Status && completes_deletion(&old, &new) {
                // the last finalizer of an object being deleted is gone: delete it now
                if dry_run {
                    return Ok(new);
                }
                let releases = res.strategy.releases(&old, &self.alloc);
                match self.store.delete(&key, current.mod_revision, &releases).await? {
                    WriteOutcome::Written(rev) => {
                        meta::set_resource_version(&mut new, rev);
                        tracing::debug!(resource = res.plural, namespace = ns, name, rev, "finalized and deleted");
                        return Ok(new);
                    }
                    WriteOutcome::Mismatch(None) => return Err(ApiError::not_found(res.group, res.plural, name)),
                    WriteOutcome::Mismatch(Some(_)) if expected.is_some() => {
                        return Err(ApiError::modified(res.group, res.plural, name));
                    }
                    _ => continue,
                }
            }
            let allocs = res.strategy.allocate(&mut new, Some(&old), &self.alloc, &taken)?;
            // no-op writes keep the resourceVersion, as upstream; a value stored by an
            // older encryption provider is rewritten all the same (key rotation)
            if (strip_rv(&new) == strip_rv(&old) && !current.stale) || dry_run {
                return Ok(if dry_run { new } else { old });
            }
            let bytes = Self::encode(res, &new);
            match self.store.update(&key, bytes, current.mod_revision, &allocs.claims, &allocs.releases).await? {
                WriteOutcome::Written(rev) => {
                    meta::set_resource_version(&mut new, rev);
                    return Ok(new);
                }
                WriteOutcome::Mismatch(None) => return Err(ApiError::not_found(res.group, res.plural, name)),
                WriteOutcome::Mismatch(Some(_)) if expected.is_some() => {
                    return Err(ApiError::modified(res.group, res.plural, name));
                }
                WriteOutcome::Mismatch(Some(_)) => continue,
                WriteOutcome::ClaimTaken => {
                    claim_races += 1;
                    if claim_races >= MAX_RETRIES {
                        return Err(ApiError::modified(res.group, res.plural, name));
                    }
                    taken = self.taken_allocations(&allocs).await?;
                }
            }
        }
    }

    /// Delete one object. Objects with finalizers, and pods still on a node, are only
    /// marked (deletionTimestamp) and stay until their owner finishes them.
    pub async fn delete(&self, res: &'static ResourceDef, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
        let key = self.key(res, ns, name);
        for _ in 0..MAX_RETRIES {
            let current = self.get_stored(res, ns, name).await?;
            let mut obj = Self::decode_stored(res, &current)?;
            check_preconditions(res, name, &obj, opts)?;
            self.admit_delete(res, ns, &mut obj, opts).await?;
            if let Some(marked) = deletion_mark(res, &obj, opts) {
                // already marked: nothing to write
                if opts.dry_run || marked == obj {
                    return Ok(marked);
                }
                match self.store.update(&key, Self::encode(res, &marked), current.mod_revision, &[], &[]).await? {
                    WriteOutcome::Written(rev) => {
                        let mut marked = marked;
                        meta::set_resource_version(&mut marked, rev);
                        return Ok(marked);
                    }
                    _ => continue,
                }
            }
            if opts.dry_run {
                return Ok(obj);
            }
            let releases = res.strategy.releases(&obj, &self.alloc);
            match self.store.delete(&key, current.mod_revision, &releases).await? {
                WriteOutcome::Written(rev) => {
                    meta::set_resource_version(&mut obj, rev);
                    return Ok(obj);
                }
                WriteOutcome::Mismatch(None) => return Err(ApiError::not_found(res.group, res.plural, name)),
                _ => continue,
            }
        }
        Err(ApiError::modified(res.group, res.plural, name))
    }
}

fn attributes<'a>(
    res: &'static ResourceDef,
    admit: &'a Admit,
    operation: Operation,
    namespace: &'a str,
    name: &'a str,
    dry_run: bool,
) -> admission::Attributes<'a> {
    admission::Attributes {
        operation,
        res,
        subresource: admit.subresource,
        namespace,
        name,
        user: &admit.user,
        dry_run,
    }
}

/// An update that leaves an object being deleted (with no grace period left) without
/// finalizers completes its deletion, as upstream's shouldDeleteDuringUpdate.
fn completes_deletion(old: &Value, new: &Value) -> bool {
    let old_meta = meta::metadata(old);
    let deleting = old_meta.is_some_and(|m| m.contains_key("deletionTimestamp"))
        && old_meta.and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64) == Some(0);
    let finalizers =
        meta::metadata(new).and_then(|m| m.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    deleting && !finalizers
}

/// A namespaced object takes the request's namespace; a cluster-scoped one has none,
/// whatever the body said (upstream's BeforeCreate/BeforeUpdate clear it).
fn set_namespace(res: &ResourceDef, obj: &mut Value, ns: &str) {
    let m = meta::metadata_mut(obj);
    if res.namespaced {
        m.insert("namespace".into(), json!(ns));
    } else {
        m.remove("namespace");
    }
}

fn strip_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    meta::metadata_mut(&mut o).remove("resourceVersion");
    o
}

/// The object an update writes: the main resource keeps the old status; the status
/// subresource keeps everything but status.
fn merge_update(res: &ResourceDef, old: &Value, mut body: Value, part: Part, ns: &str) -> Value {
    match part {
        Part::Status => {
            let mut new = old.clone();
            new["status"] = body.get("status").cloned().unwrap_or(json!({}));
            // a server-side apply of status brings its computed managedFields; any
            // other status write has them recomputed from the live ones
            if let Some(managed) = meta::metadata(&body).and_then(|m| m.get("managedFields")) {
                meta::metadata_mut(&mut new).insert("managedFields".into(), managed.clone());
            }
            new
        }
        Part::Whole => {
            meta::carry_over_on_update(&mut body, old);
            set_namespace(res, &mut body, ns);
            body
        }
        Part::Main => {
            meta::carry_over_on_update(&mut body, old);
            set_namespace(res, &mut body, ns);
            if res.has_status {
                match old.get("status") {
                    Some(s) => body["status"] = s.clone(),
                    None => {
                        if let Some(m) = body.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            body
        }
    }
}

fn check_preconditions(res: &ResourceDef, name: &str, obj: &Value, opts: &DeleteOpts) -> ApiResult<()> {
    if let Some(uid) = opts.uid.as_deref() {
        let actual = meta::meta_str(obj, "uid");
        if uid != actual {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
            ));
        }
    }
    if let Some(rv) = opts.resource_version.as_deref() {
        let actual = meta::meta_str(obj, "resourceVersion");
        if rv != actual {
            return Err(ApiError::conflict(
                res.group,
                res.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// When a delete only marks the object: finalizers pending (including the one a
/// Foreground or Orphan propagation adds), or a pod that a kubelet still has to stop.
/// Returns the marked object, or None to delete now.
fn deletion_mark(res: &ResourceDef, obj: &Value, opts: &DeleteOpts) -> Option<Value> {
    let already_marked = meta::metadata(obj).is_some_and(|m| m.contains_key("deletionTimestamp"));
    let mut obj = obj.clone();
    // the propagation finalizer is added by the first delete only, as upstream
    if let Some(f) = opts.propagation.and_then(Propagation::finalizer).filter(|_| !already_marked) {
        add_finalizer(&mut obj, f);
    }
    let has_finalizers =
        meta::metadata(&obj).and_then(|m| m.get("finalizers")).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    let is_pod = res.group.is_empty() && res.plural == "pods";
    let pod_running_on_node = is_pod
        && obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
        && !matches!(obj.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let grace = opts
        .grace_period
        .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30);
    let graceful = pod_running_on_node && grace > 0;
    if !has_finalizers && !graceful {
        return None;
    }
    if already_marked && !graceful {
        return Some(obj);
    }
    let grace = if graceful { grace } else { 0 };
    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let m = meta::metadata_mut(&mut obj);
    if !m.contains_key("deletionTimestamp") {
        m.insert("deletionTimestamp".into(), json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
    }
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    Some(obj)
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let m = meta::metadata_mut(obj);
    let list = m.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

/// Fill `metadata.name` from `generateName`; true when it did.
fn generate_name(obj: &mut Value) -> bool {
    let has_name = !meta::name(obj).is_empty();
    let base = meta::meta_str(obj, "generateName").to_string();
    if has_name || base.is_empty() {
        return false;
    }
    regenerate_name(obj);
    true
}

fn regenerate_name(obj: &mut Value) {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut base = meta::meta_str(obj, "generateName").to_string();
    base.truncate(58);
    let suffix: String = (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect();
    meta::metadata_mut(obj).insert("name".into(), json!(format!("{base}{suffix}")));
}
