//! ServiceAccount: a pod runs as a service account (`default` unless it names one),
//! which must exist; unless the pod or the account opts out, the pod gets upstream's
//! projected token volume `kube-api-access-<5 chars>` (a bound token, the cluster's
//! root CA from the `kube-root-ca.crt` ConfigMap, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init
//! container that does not mount something there already. Mirror pods are left alone.
//!
//! The account is read from the watch cache, then from etcd (the cache may lag a
//! fresh account). A missing `default` account is created here: the in-apiserver
//! stand-in for the ServiceAccount controller (`apiserver::service_accounts`) may not
//! have reached a namespace created a moment ago.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;
use crate::registry::{ResourceDef, builtin, meta};

pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Upstream's projected token lifetime (kubelet refreshes it; 3607 marks tokens
/// whose extended expiry only warns).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

pub struct ServiceAccount {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(ServiceAccount { ctx: ctx.clone() })
}

pub fn service_accounts() -> &'static ResourceDef {
    builtin("", "v1", "serviceaccounts")
}

/// Read one object of `res` from the watch cache, then from etcd on a miss.
pub async fn lookup(ctx: &Context, res: &'static ResourceDef, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    if ctx.caches.get(res).is_ready()
        && let Some(obj) = ctx.caches.object(res, ns, name)
    {
        return Ok(Some(obj));
    }
    match ctx.registry.get(res, ns, name).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.reason == "NotFound" => Ok(None),
        Err(e) => Err(e),
    }
}

impl ServiceAccount {
    async fn account(&self, a: &Attributes<'_>, name: &str) -> ApiResult<Value> {
        let res = service_accounts();
        if let Some(sa) = lookup(&self.ctx, res, a.namespace, name).await? {
            return Ok(sa);
        }
        if name == crate::apiserver::service_accounts::DEFAULT {
            // a dry run creates nothing: the account its controller will make is assumed
            if a.dry_run {
                return Ok(json!({}));
            }
            return crate::apiserver::service_accounts::ensure_default(&self.ctx.registry, a.namespace).await;
        }
        Err(a.forbidden(&format!(
            "error looking up service account {}/{name}: serviceaccount \"{name}\" not found",
            a.namespace
        )))
    }
}

impl Plugin for ServiceAccount {
    fn handles(&self, a: &Attributes) -> bool {
        a.operation == Operation::Create && a.subresource.is_empty() && a.is("", "pods")
    }

    fn mutate<'a>(&'a self, a: &'a Attributes<'a>, o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let pod = &mut *o.obj;
            let annotations = meta::metadata(pod).and_then(|m| m.get("annotations"));
            if annotations.and_then(|a| a.get(MIRROR_ANNOTATION)).is_some() {
                return Ok(());
            }
            let named = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("");
            let name = if named.is_empty() { crate::apiserver::service_accounts::DEFAULT } else { named }.to_string();
            let sa = self.account(a, &name).await?;
            let spec = &mut pod["spec"];
            spec["serviceAccountName"] = json!(name);
            if spec.get("serviceAccount").is_none_or(Value::is_null) {
                spec["serviceAccount"] = json!(name);
            }
            let automount = spec
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
                .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
                .unwrap_or(true);
            if automount {
                mount_token(spec);
            }
            let has_pull_secrets =
                spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|v| !v.is_empty());
            if let Some(secrets) = sa.get("imagePullSecrets").filter(|v| !has_pull_secrets && v.is_array()) {
                spec["imagePullSecrets"] = secrets.clone();
            }
            Ok(())
        })
    }
}

/// Upstream's projected volume for the API credentials.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Mount the token volume where containers do not mount something at the path
/// already; add the volume when a container mounts it (reusing one the pod has).
fn mount_token(spec: &mut Value) {
    let volumes = spec.get("volumes").and_then(Value::as_array);
    let existing = volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in containers {
            let mounts = c.as_object_mut().map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
            let Some(Value::Array(mounts)) = mounts else { continue };
            if !mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.as_object_mut().map(|s| s.entry("volumes").or_insert_with(|| json!([])));
        if let Some(Value::Array(volumes)) = volumes {
            volumes.push(token_volume(&volume_name));
        }
    }
}

/// Five characters from upstream's name-generation alphabet.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_to_every_container_not_mounting_the_path() {
        let mut spec = json!({
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "nginx"},
                {"name": "b", "image": "nginx", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "own", "emptyDir": {}}],
        });
        mount_token(&mut spec);
        let volume = spec["volumes"][1]["name"].as_str().unwrap().to_string();
        assert!(volume.starts_with("kube-api-access-") && volume.len() == 21, "{volume}");
        assert_eq!(spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], volume.as_str());
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(spec["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        // once is enough: a second pass adds nothing
        let before = spec.clone();
        mount_token(&mut spec);
        assert_eq!(spec, before);
    }
}
