//! The namespace lifecycle's API-server half, as upstream's: the built-in namespaces
//! and the `kubernetes` Service at start; deleting a namespace marks it Terminating
//! (the namespace controller of the controller-manager then empties it and removes
//! its `kubernetes` finalizer through `namespaces/<name>/finalize`); the namespace
//! itself goes once no finalizer is left.

use serde_json::{Value, json};

use super::rest::{DeleteOpts, Registry, WriteOpts};
use super::{find_resource, meta};
use crate::handlers::status::{ApiError, ApiResult};

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Create what every cluster starts with (the system namespaces, the `kubernetes`
/// Service, the system PriorityClasses); existing objects are left alone.
pub async fn bootstrap(reg: &Registry, advertise_port: u16) -> ApiResult<()> {
    let ns_res = find_resource("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        ignore_exists(reg.create(ns_res, "", obj, &WriteOpts::default()).await)?;
    }
    let svc_res = find_resource("", "v1", "services").ok_or_else(|| ApiError::internal("services missing"))?;
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": reg.alloc.first_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": advertise_port}],
        },
    });
    ignore_exists(reg.create(svc_res, "default", svc, &WriteOpts::default()).await)?;
    let pc_res = find_resource("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::internal("priorityclasses missing"))?;
    for class in crate::registry::strategies::system_priority_classes() {
        ignore_exists(reg.create(pc_res, "", class, &WriteOpts::default()).await)?;
    }
    Ok(())
}

fn ignore_exists(r: ApiResult<Value>) -> ApiResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mark the namespace Terminating; with no finalizers, delete it at once.
pub async fn delete_namespace(reg: &Registry, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
    let mut obj = reg.get(namespaces(), "", name).await?;
    // NamespaceLifecycle keeps the immortal namespaces
    reg.admit_delete(namespaces(), "", &mut obj, opts).await?;
    if opts.dry_run {
        return Ok(obj);
    }
    if obj.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        obj["status"]["phase"] = json!("Terminating");
        let m = meta::metadata_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        obj = write(reg, &obj).await?;
    }
    if finalizers_left(&obj) {
        return Ok(obj);
    }
    remove(reg, &obj).await?;
    Ok(obj)
}

fn namespaces() -> &'static super::ResourceDef {
    super::builtin("", "v1", "namespaces")
}

fn finalizers_left(ns: &Value) -> bool {
    let spec = ns.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    spec || meta::metadata(ns)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// PUT namespaces/<name>/finalize: replace `spec.finalizers` (nothing else), as the
/// namespace controller does once the namespace is empty; a terminating namespace
/// with no finalizer left is then deleted.
pub async fn finalize(reg: &Registry, name: &str, body: &Value) -> ApiResult<Value> {
    let wanted = body.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
    if !wanted.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
        return Err(ApiError::bad_request("spec.finalizers must be a list of strings"));
    }
    if meta::name(body) != name && !meta::name(body).is_empty() {
        return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
    }
    for _ in 0..5 {
        let mut obj = reg.get(namespaces(), "", name).await?;
        let rv = meta::meta_str(body, "resourceVersion");
        if !rv.is_empty() && rv != meta::meta_str(&obj, "resourceVersion") {
            return Err(ApiError::modified("", "namespaces", name));
        }
        obj["spec"]["finalizers"] = wanted.clone();
        let written = match write(reg, &obj).await {
            Ok(w) => w,
            Err(e) if e.reason == "Conflict" && rv.is_empty() => continue,
            Err(e) => return Err(e),
        };
        let terminating = meta::metadata(&written).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if terminating && !finalizers_left(&written) {
            remove(reg, &written).await?;
        }
        return Ok(written);
    }
    Err(ApiError::modified("", "namespaces", name))
}

/// Write the namespace as given (spec, status and metadata together), if unchanged
/// since it was read.
async fn write(reg: &Registry, obj: &Value) -> ApiResult<Value> {
    let key = reg.key(namespaces(), "", meta::name(obj));
    let current = reg.store.get(&key).await?.ok_or_else(|| ApiError::not_found("", "namespaces", meta::name(obj)))?;
    if meta::meta_str(obj, "resourceVersion") != current.mod_revision.to_string() {
        return Err(ApiError::modified("", "namespaces", meta::name(obj)));
    }
    let mut stored = obj.clone();
    meta::metadata_mut(&mut stored).remove("resourceVersion");
    let bytes = serde_json::to_vec(&stored).unwrap_or_default();
    match reg.store.update(&key, bytes, current.mod_revision, &[], &[]).await? {
        super::store::WriteOutcome::Written(rev) => {
            let mut out = obj.clone();
            meta::set_resource_version(&mut out, rev);
            Ok(out)
        }
        _ => Err(ApiError::modified("", "namespaces", meta::name(obj))),
    }
}

async fn remove(reg: &Registry, obj: &Value) -> ApiResult<()> {
    let key = reg.key(namespaces(), "", meta::name(obj));
    if let Some(current) = reg.store.get(&key).await? {
        reg.store.delete(&key, current.mod_revision, &[]).await?;
    }
    tracing::info!(namespace = meta::name(obj), "namespace deleted");
    Ok(())
}
