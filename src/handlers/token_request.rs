//! `serviceaccounts/token`: the TokenRequest API (authentication.k8s.io/v1), a create-only
//! subresource that answers a signed, bound token for the service account
//! (`kubectl create token`). Nothing is stored.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::codec::{self, Output};
use super::status::{ApiError, ApiResult, FieldError};
use crate::admission::Admit;
use crate::auth::sa_token::{Bound, Claims, Ref, Signer};
use crate::registry::rest::Registry;
use crate::registry::{ResourceDef, builtin, meta};

const DEFAULT_SECONDS: i64 = 3600;
/// Upstream refuses shorter lifetimes: a token must outlive its refresh by the kubelet.
const MIN_SECONDS: i64 = 600;
/// Upstream's ceiling (2^32 seconds).
const MAX_SECONDS: i64 = 1 << 32;
/// How long a TokenRequest waits for the watch caches to see what it read.
const CACHE_WAIT: Duration = Duration::from_secs(2);

fn core(resource: &str) -> &'static ResourceDef {
    builtin("", "v1", resource)
}

/// What the request asks for, validated as upstream validates a TokenRequest.
struct Wanted {
    audiences: Vec<String>,
    seconds: i64,
    bound: Option<(String, Ref)>,
}

fn parse_request(req: &Value, sa: &str, signer: &Signer) -> ApiResult<Wanted> {
    let spec = req.get("spec").cloned().unwrap_or(Value::Null);
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| signer.audiences.clone());
    let seconds = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(DEFAULT_SECONDS);
    let invalid = |detail: &str| {
        let cause = FieldError::invalid("spec.expirationSeconds", &json!(seconds), detail);
        ApiError::invalid("authentication.k8s.io", "TokenRequest", sa, vec![cause])
    };
    if seconds < MIN_SECONDS {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid("may not specify a duration larger than 2^32 seconds"));
    }
    // upstream cuts a request beyond --service-account-max-token-expiration to it
    let seconds = signer.max_seconds.map_or(seconds, |max| seconds.min(max));
    let bound = match spec.get("boundObjectRef").filter(|v| v.is_object()) {
        Some(r) => Some(bound_ref(r, sa)?),
        None => None,
    };
    Ok(Wanted { audiences, seconds, bound })
}

/// The kind (Pod or Secret) and name/uid a boundObjectRef names.
fn bound_ref(r: &Value, sa: &str) -> ApiResult<(String, Ref)> {
    let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let kind = field("kind");
    if !matches!(kind.as_str(), "Pod" | "Secret") || !matches!(field("apiVersion").as_str(), "" | "v1") {
        let cause = FieldError::unsupported("spec.boundObjectRef.kind", &kind, &["Pod", "Secret"]);
        return Err(ApiError::invalid("authentication.k8s.io", "TokenRequest", sa, vec![cause]));
    }
    Ok((kind, Ref { name: field("name"), uid: field("uid") }))
}

/// POST serviceaccounts/{name}/token.
pub async fn create(
    state: &AppState,
    (ns, name): (&str, &str),
    headers: &HeaderMap,
    body: &Bytes,
    admit: Admit,
) -> ApiResult<Response> {
    // upstream serves no token subresource without a signing key
    let signer = state.signer.as_deref().ok_or_else(ApiError::not_found_path)?;
    let mut req = codec::parse_body(headers, body)?;
    state.registry.admit_action(core("serviceaccounts"), ns, name, Some(&admit), &mut req, false).await?;
    let wanted = parse_request(&req, name, signer)?;
    let reg = &state.registry;
    let account = reg.get(core("serviceaccounts"), ns, name).await?;
    let sa = Ref { name: name.to_string(), uid: meta::meta_str(&account, "uid").to_string() };
    let mut bound = Bound { namespace: ns.to_string(), serviceaccount: sa, ..Default::default() };
    let mut seen = vec![(core("serviceaccounts"), account)];
    if let Some((kind, want)) = &wanted.bound {
        seen.push(bind_object(reg, ns, name, kind, want, &mut bound).await?);
    }
    // the authenticator reads the caches: a token handed out before they saw these
    // objects would be refused on its first use
    for (res, obj) in &seen {
        let rv = meta::meta_str(obj, "resourceVersion").parse().unwrap_or(0);
        state.caches.get(res).wait_revision(rv, CACHE_WAIT).await;
    }
    let now = chrono::Utc::now();
    let exp = now.timestamp() + wanted.seconds;
    let claims = Claims {
        iss: signer.issuer.clone(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: wanted.audiences.clone(),
        exp: Some(exp),
        nbf: Some(now.timestamp()),
        iat: Some(now.timestamp()),
        jti: Some(uuid::Uuid::new_v4().to_string()),
        bound: Some(bound),
        ..Default::default()
    };
    let token = signer.sign(&claims).map_err(|e| ApiError::internal(format!("signing the token: {e}")))?;
    Ok(codec::respond(StatusCode::CREATED, Output::Json, &answer(req, ns, name, &wanted, token, exp)))
}

/// Check the object the token is bound to and record its uid in the claims.
/// Answers the object read, for the cache wait.
async fn bind_object(
    reg: &Registry,
    ns: &str,
    sa: &str,
    kind: &str,
    want: &Ref,
    bound: &mut Bound,
) -> ApiResult<(&'static ResourceDef, Value)> {
    let resource = if kind == "Pod" { "pods" } else { "secrets" };
    let obj = reg.get(core(resource), ns, &want.name).await?;
    let uid = meta::meta_str(&obj, "uid").to_string();
    if !want.uid.is_empty() && want.uid != uid {
        let why = format!(
            "the UID in the bound object reference ({}) does not match the UID in record ({uid}); it may have been recreated",
            want.uid
        );
        return Err(ApiError::conflict("", resource, &want.name, &why));
    }
    let got = Ref { name: want.name.clone(), uid };
    if kind == "Pod" {
        let runs_as = obj.pointer("/spec/serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty());
        if runs_as.unwrap_or("default") != sa {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
            )));
        }
        bound.pod = Some(got);
    } else {
        bound.secret = Some(got);
    }
    Ok((core(resource), obj))
}

/// The request echoed back with the defaults applied and the token in status.
fn answer(mut req: Value, ns: &str, name: &str, wanted: &Wanted, token: String, exp: i64) -> Value {
    let expires = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": meta::now_rfc3339()});
    if !req.get("spec").is_some_and(Value::is_object) {
        req["spec"] = json!({});
    }
    req["spec"]["audiences"] = json!(wanted.audiences);
    req["spec"]["expirationSeconds"] = json!(wanted.seconds);
    req["status"] = json!({
        "token": token,
        "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    req
}
