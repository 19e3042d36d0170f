//! Stand-in for upstream's ServiceAccount controller and root-CA publisher (moves to
//! the controller-manager in issue 7): every namespace that is not terminating gets a
//! `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap (key `ca.crt`), created
//! again when deleted. Driven by the namespace, service account and config map caches,
//! with a periodic pass as a backstop.

use std::time::Duration;

use serde_json::{Value, json};

use crate::admission::Context;
use crate::handlers::status::ApiResult;
use crate::registry::filter::Filter;
use crate::registry::rest::{Registry, WriteOpts};
use crate::registry::{ResourceDef, builtin};

pub const DEFAULT: &str = "default";
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

fn core(plural: &str) -> &'static ResourceDef {
    builtin("", "v1", plural)
}

/// Create the `default` ServiceAccount of `ns` unless it exists; the account.
pub async fn ensure_default(reg: &Registry, ns: &str) -> ApiResult<Value> {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": DEFAULT}});
    create_or_get(reg, core("serviceaccounts"), ns, sa).await
}

async fn create_or_get(reg: &Registry, res: &'static ResourceDef, ns: &str, obj: Value) -> ApiResult<Value> {
    let name = crate::registry::meta::name(&obj).to_string();
    match reg.create(res, ns, obj, &WriteOpts::default()).await {
        Err(e) if e.reason == "AlreadyExists" => reg.get(res, ns, &name).await,
        other => other,
    }
}

/// The objects every namespace gets: its `default` account and the root CA bundle.
async fn ensure_namespace(reg: &Registry, ns: &str, root_ca: &str) -> ApiResult<()> {
    ensure_default(reg, ns).await?;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
        "data": {"ca.crt": root_ca},
    });
    create_or_get(reg, core("configmaps"), ns, cm).await.map(|_| ())
}

/// A first pass at start, before the server serves, from etcd: the namespaces that exist
/// have their objects from the first request on.
pub async fn ensure_all(reg: &Registry, root_ca: &str) -> ApiResult<()> {
    let res = core("namespaces");
    let page = reg.store.list(&reg.keys.collection(res, ""), None, 0, 0).await?;
    for stored in &page.items {
        let ns = Registry::decode_stored(res, stored)?;
        if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
            ensure_namespace(reg, crate::registry::meta::name(&ns), root_ca).await?;
        }
    }
    Ok(())
}

/// Whether the cache of `res` holds `ns/name` (a cache not yet ready counts as no).
fn cached(ctx: &Context, res: &'static ResourceDef, ns: &str, name: &str) -> bool {
    let cache = ctx.caches.get(res);
    cache.is_ready() && cache.get(ctx.registry.key(res, ns, name).as_bytes()).0.is_some()
}

/// One pass over every namespace.
async fn reconcile(ctx: &Context, root_ca: &str) {
    let namespaces = ctx.caches.get(core("namespaces"));
    if !namespaces.is_ready() {
        return;
    }
    let range = ctx.caches.range(core("namespaces"), "", None);
    let (items, ..) = namespaces.list(&range, &Filter::everything(core("namespaces")), 0, false);
    for ns in items {
        let obj: Value = serde_json::from_slice(&ns.json).unwrap_or_default();
        if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            continue;
        }
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let missing = !cached(ctx, core("serviceaccounts"), name, DEFAULT)
            || !cached(ctx, core("configmaps"), name, ROOT_CA_CONFIGMAP);
        if missing && let Err(e) = ensure_namespace(&ctx.registry, name, root_ca).await {
            tracing::debug!(namespace = name, error = %e.message, "creating the default service account and root CA");
        }
    }
}

/// Run forever: a pass whenever namespaces, service accounts or config maps change,
/// and every 10 s.
pub async fn run(ctx: Context, root_ca: String) {
    let mut ns_rx = ctx.caches.get(core("namespaces")).subscribe();
    let mut sa_rx = ctx.caches.get(core("serviceaccounts")).subscribe();
    let mut cm_rx = ctx.caches.get(core("configmaps")).subscribe();
    loop {
        reconcile(&ctx, &root_ca).await;
        tokio::select! {
            _ = ns_rx.changed() => {}
            _ = sa_rx.changed() => {}
            _ = cm_rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        // coalesce bursts (a namespace and its contents arrive together)
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
