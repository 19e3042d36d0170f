//! Bootstrap tokens (`--enable-bootstrap-token-auth`): bearer tokens `<id>.<secret>`
//! (`[a-z0-9]{6}.[a-z0-9]{16}`) backed by Secrets `kube-system/bootstrap-token-<id>` of
//! type `bootstrap.kubernetes.io/token`, as kubeadm makes them for nodes joining a
//! cluster. A token whose Secret exists, holds the same secret (compared in constant
//! time), has `usage-bootstrap-authentication: "true"` and has not passed its
//! `expiration` is the user `system:bootstrap:<id>` in `system:bootstrappers` and the
//! Secret's `auth-extra-groups`. The Secret is read from the watch cache.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;
use serde_json::Value;

use super::{Authenticate, Outcome, bearer_token};
use crate::auth::request::UserInfo;
use crate::watch::Caches;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const USER_PREFIX: &str = "system:bootstrap:";
pub const DEFAULT_GROUP: &str = "system:bootstrappers";
const NAMESPACE: &str = "kube-system";

pub struct BootstrapTokens {
    pub caches: Caches,
}

/// `<id>.<secret>` of a bootstrap token, or None for any other token.
fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Equal bytes, in time that depends on the length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decoded `data[key]` of a Secret.
fn data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    String::from_utf8(STANDARD.decode(encoded).ok()?).ok()
}

/// A group a token may add: `system:bootstrappers:` followed by `[a-z0-9:-]`, not
/// ending in `:` or `-` (upstream's rule).
fn valid_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else { return false };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-';
    let last_ok = rest.bytes().last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    rest.len() <= 256 && last_ok && rest.bytes().all(allowed)
}

/// Past its `expiration`, or with one that does not parse (upstream treats both alike).
fn expired(secret: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    match data(secret, "expiration") {
        None => false,
        Some(text) => chrono::DateTime::parse_from_rfc3339(&text).map_or(true, |t| t < now),
    }
}

/// Whether `secret` backs the token `id.token_secret`, and as whom.
pub fn identify(secret: &Value, id: &str, token_secret: &str) -> Result<UserInfo, String> {
    let name = format!("{SECRET_PREFIX}{id}");
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("secret {name} is being deleted"));
    }
    if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
        return Err(format!("secret {name} is not of type {SECRET_TYPE}"));
    }
    let stored = data(secret, "token-secret").unwrap_or_default();
    if !constant_time_eq(stored.as_bytes(), token_secret.as_bytes()) {
        return Err(format!("secret {name} holds another token-secret"));
    }
    if data(secret, "token-id").as_deref() != Some(id) {
        return Err(format!("secret {name} has another token-id"));
    }
    if expired(secret, chrono::Utc::now()) {
        return Err(format!("secret {name} has expired"));
    }
    if data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!("secret {name} is not marked usage-bootstrap-authentication=true"));
    }
    let mut groups = BTreeSet::from([DEFAULT_GROUP.to_string()]);
    for group in data(secret, "auth-extra-groups").unwrap_or_default().split(',').map(str::trim) {
        match group {
            "" => {}
            g if valid_group(g) => {
                groups.insert(g.to_string());
            }
            g => return Err(format!("secret {name} has an invalid auth-extra-groups entry {g:?}")),
        }
    }
    Ok(UserInfo { name: format!("{USER_PREFIX}{id}"), groups: groups.into_iter().collect(), ..Default::default() })
}

impl Authenticate for BootstrapTokens {
    fn authenticate(&self, req: &Parts) -> Outcome {
        let Some((id, token_secret)) = bearer_token(&req.headers).and_then(parse) else {
            return Outcome::NoCredentials;
        };
        let name = format!("{SECRET_PREFIX}{id}");
        let Some(secret) = crate::auth::cached(&self.caches, "secrets", NAMESPACE, &name) else {
            return Outcome::Rejected(format!("bootstrap token: no secret {name}"));
        };
        match identify(&secret, id, token_secret) {
            Ok(user) => Outcome::Authenticated(user),
            Err(why) => Outcome::Rejected(format!("bootstrap token: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(pairs: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> =
            pairs.iter().map(|(k, v)| (k.to_string(), json!(STANDARD.encode(v)))).collect();
        json!({"metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
               "type": SECRET_TYPE, "data": data})
    }

    const GOOD: &[(&str, &str)] =
        &[("token-id", "abcdef"), ("token-secret", "0123456789abcdef"), ("usage-bootstrap-authentication", "true")];

    #[test]
    fn token_shapes() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        for bad in ["abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", "abc.def", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn identities_and_refusals() {
        let user = identify(&secret(GOOD), "abcdef", "0123456789abcdef").unwrap();
        assert_eq!(
            (user.name.as_str(), user.groups.as_slice()),
            ("system:bootstrap:abcdef", [DEFAULT_GROUP.into()].as_slice())
        );
        assert!(identify(&secret(GOOD), "abcdef", "0123456789abcdee").is_err(), "wrong secret");

        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = GOOD.to_vec();
            pairs.retain(|(k, _)| *k != extra.0);
            pairs.push(extra);
            identify(&secret(&pairs), "abcdef", "0123456789abcdef")
        };
        let groups =
            with(("auth-extra-groups", "system:bootstrappers:kubeadm:default-node-token, system:bootstrappers:b"));
        assert_eq!(
            groups.unwrap().groups,
            ["system:bootstrappers", "system:bootstrappers:b", "system:bootstrappers:kubeadm:default-node-token"]
        );
        assert!(with(("auth-extra-groups", "system:masters")).is_err(), "only bootstrapper groups");
        assert!(with(("auth-extra-groups", "system:bootstrappers:")).is_err());
        assert!(with(("usage-bootstrap-authentication", "false")).is_err());
        assert!(with(("token-id", "abcdeg")).is_err());
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        assert!(with(("expiration", Box::leak(past.into_boxed_str()))).is_err());
        assert!(with(("expiration", Box::leak(future.into_boxed_str()))).is_ok());
        assert!(with(("expiration", "tomorrow")).is_err(), "an unreadable expiration is an expired one");
        let mut wrong_type = secret(GOOD);
        wrong_type["type"] = json!("Opaque");
        assert!(identify(&wrong_type, "abcdef", "0123456789abcdef").is_err());
    }
}
