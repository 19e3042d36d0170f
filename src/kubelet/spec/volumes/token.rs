//! Projected service-account tokens: a TokenRequest bound to the pod, reused until 80%
//! of its life has passed (upstream's token manager), then requested again.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::PostParams;
use kube::{Api, Client};

/// What a projected token asks for when expirationSeconds is left out.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The token to write: `current` (the file's bytes) while it is fresh, else a new one;
/// None when the API server issues no tokens at all (started without a signing key, which
/// a kube-apiserver refuses but ours allows): the pod then runs without one.
pub async fn token(
    client: &Client,
    pod: &Pod,
    projection: &ServiceAccountTokenProjection,
    current: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, String> {
    let now = chrono::Utc::now().timestamp();
    if let Some(current) = current.filter(|t| fresh(t, now)) {
        return Ok(Some(current.to_vec()));
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
            expiration_seconds: Some(projection.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let issued: TokenRequest = match api.create_subresource("token", sa, &PostParams::default(), &request).await {
        Ok(issued) => issued,
        // a 404 not about the account (`serviceaccounts "x" not found`): the path is not served
        Err(kube::Error::Api(s)) if s.code == 404 && !s.message.contains("serviceaccounts") => {
            tracing::warn!(
                namespace = ns,
                service_account = sa,
                "the API server issues no service-account tokens; none projected"
            );
            return Ok(None);
        }
        Err(e) => return Err(format!("failed to fetch token: {e}")),
    };
    let token = issued.status.map(|s| s.token).unwrap_or_default();
    tracing::debug!(namespace = ns, service_account = sa, pod = ?pod.metadata.name, "service-account token requested");
    Ok(Some(token.into_bytes()))
}

/// Whether less than 80% of the token's life (its `iat` to `exp`) has passed.
pub fn fresh(token: &[u8], now: i64) -> bool {
    let Some((iat, exp)) = lifetime(token) else { return false };
    now < iat + (exp - iat) * 8 / 10
}

/// `iat` and `exp` from the JWT's claims (not verified: the kubelet only schedules renewal).
fn lifetime(token: &[u8]) -> Option<(i64, i64)> {
    use base64::Engine;
    let text = std::str::from_utf8(token).ok()?;
    let claims = text.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((claims.get("iat")?.as_i64()?, claims.get("exp")?.as_i64()?))
}
