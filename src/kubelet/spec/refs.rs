//! The API objects a pod's env and volumes refer to (ConfigMaps, Secrets), read once per
//! sync and kept with their absence, so the pure builders can report upstream's messages
//! (`configmap "x" not found`) and honour `optional`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use super::ConfigError;

/// One read: the object, `None` when it does not exist, or the error of the read.
pub type Read<T> = Result<Option<T>, String>;

/// ConfigMaps and Secrets of one namespace, by name.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub config_maps: HashMap<String, Read<ConfigMap>>,
    pub secrets: HashMap<String, Read<Secret>>,
}

impl Objects {
    /// Read every named ConfigMap and Secret of `namespace` (each once).
    pub async fn fetch<'a>(
        client: &Client,
        namespace: &str,
        config_maps: impl IntoIterator<Item = &'a str>,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Objects {
        let mut out = Objects::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for name in config_maps {
            if !out.config_maps.contains_key(name) {
                out.config_maps.insert(name.to_string(), read(&cm_api, name).await);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in secrets {
            if !out.secrets.contains_key(name) {
                out.secrets.insert(name.to_string(), read(&secret_api, name).await);
            }
        }
        out
    }

    /// The ConfigMap, `Ok(None)` if it is missing and optional, else upstream's error.
    pub fn config_map(&self, name: &str, optional: bool) -> Result<Option<&ConfigMap>, ConfigError> {
        found(self.config_maps.get(name), "configmap", name, optional)
    }

    pub fn secret(&self, name: &str, optional: bool) -> Result<Option<&Secret>, ConfigError> {
        found(self.secrets.get(name), "secret", name, optional)
    }
}

fn found<'a, T>(
    read: Option<&'a Read<T>>,
    kind: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a T>, ConfigError> {
    match read {
        Some(Ok(Some(obj))) => Ok(Some(obj)),
        Some(Err(e)) => Err(ConfigError(e.clone())),
        // never read counts as missing: the caller did not ask for it
        Some(Ok(None)) | None if optional => Ok(None),
        Some(Ok(None)) | None => Err(ConfigError(format!("{kind} {name:?} not found"))),
    }
}

async fn read<K>(api: &Api<K>, name: &str) -> Read<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(obj) => Ok(obj),
        Err(e) => {
            tracing::warn!(name, error = %e, "reading an object a pod refers to");
            Err(format!("couldn't get {name}: {e}"))
        }
    }
}
