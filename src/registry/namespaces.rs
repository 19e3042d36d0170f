//! Namespace lifecycle the API server owns until a namespace controller exists:
//! the built-in namespaces and the `kubernetes` Service at start, and deletion that
//! marks a namespace Terminating, removes its contents, then removes it.

use serde_json::{Value, json};

use super::rest::{DeleteOpts, Registry, WriteOpts};
use super::{all_resources, find_resource, meta};
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
    resume_terminating(reg).await
}

fn ignore_exists(r: ApiResult<Value>) -> ApiResult<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mark the namespace Terminating and remove its contents in the background.
pub async fn delete_namespace(reg: &Registry, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
    let ns_res = find_resource("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
    let mut obj = reg.get(ns_res, "", name).await?;
    // NamespaceLifecycle keeps the immortal namespaces
    reg.admit_delete(ns_res, "", &mut obj, opts).await?;
    if opts.dry_run {
        return Ok(obj);
    }
    if obj.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        obj["status"] = json!({"phase": "Terminating"});
        meta::metadata_mut(&mut obj).insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
        // status carries the phase: write through the status path, metadata through main
        obj = write_terminating(reg, &obj).await?;
        spawn_cleanup(reg, name);
    }
    Ok(obj)
}

async fn write_terminating(reg: &Registry, obj: &Value) -> ApiResult<Value> {
    let ns_res = find_resource("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
    let key = reg.key(ns_res, "", meta::name(obj));
    let current = reg.store.get(&key).await?.ok_or_else(|| ApiError::not_found("", "namespaces", meta::name(obj)))?;
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

/// How often cleanup looks again at contents still held by finalizers.
const CLEANUP_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Delete every namespaced object in the namespace, wait until objects held by
/// finalizers are gone too, then delete the namespace itself.
async fn finish_deletion(reg: &Registry, name: &str) -> ApiResult<()> {
    let mut rounds = 0u64;
    while delete_contents(reg, name).await? > 0 {
        rounds += 1;
        if rounds.is_multiple_of(20) {
            tracing::info!(namespace = name, "namespace deletion waits for finalizers of its contents");
        }
        tokio::time::sleep(CLEANUP_RETRY).await;
    }
    let ns_res = find_resource("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
    let key = reg.key(ns_res, "", name);
    if let Some(current) = reg.store.get(&key).await? {
        reg.store.delete(&key, current.mod_revision, &[]).await?;
    }
    tracing::info!(namespace = name, "namespace deleted");
    Ok(())
}

/// One cleanup pass: delete (or mark) everything in the namespace; returns how many
/// objects are still there afterwards (held by finalizers or graceful deletion).
async fn delete_contents(reg: &Registry, name: &str) -> ApiResult<usize> {
    let opts = DeleteOpts { grace_period: Some(0), ..Default::default() };
    let mut remaining = 0;
    for res in all_resources().iter().filter(|r| r.namespaced && r.storage.is_none()) {
        let page = reg.store.list(&reg.keys.collection(res, name), None, 0, 0).await?;
        for stored in page.items {
            let obj = Registry::decode_stored(res, &stored)?;
            match reg.delete(res, name, meta::name(&obj), &opts).await {
                Ok(after) if meta::metadata(&after).is_some_and(|m| m.contains_key("deletionTimestamp")) => {
                    remaining += 1
                }
                Ok(_) => {}
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(remaining)
}

/// Resume the cleanup of namespaces left Terminating by an earlier run.
pub async fn resume_terminating(reg: &Registry) -> ApiResult<()> {
    let ns_res = find_resource("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces missing"))?;
    let page = reg.store.list(&reg.keys.collection(ns_res, ""), None, 0, 0).await?;
    for stored in page.items {
        let obj = Registry::decode_stored(ns_res, &stored)?;
        if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            spawn_cleanup(reg, meta::name(&obj));
        }
    }
    Ok(())
}

fn spawn_cleanup(reg: &Registry, name: &str) {
    let reg = reg.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        if let Err(e) = finish_deletion(&reg, &name).await {
            tracing::warn!(namespace = %name, error = %e.message, "namespace cleanup failed");
        }
    });
}
