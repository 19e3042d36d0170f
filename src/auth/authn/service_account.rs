//! ServiceAccount bearer tokens (JWTs, see `auth::sa_token`): a verified token names its
//! service account, and it counts only while that account, and the pod or secret the
//! token is bound to, still exist with the uids the token recorded. Existence is read from
//! the watch caches, so no request waits on etcd.

use std::collections::BTreeMap;

use http::request::Parts;
use serde_json::Value;

use super::{Authenticate, Outcome, bearer_token};
use crate::auth::request::UserInfo;
use crate::auth::sa_token::{Claims, Ref, Verifier};
use crate::watch::Caches;

pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

pub struct ServiceAccountTokens {
    pub verifier: Verifier,
    pub caches: Caches,
}

impl Authenticate for ServiceAccountTokens {
    fn authenticate(&self, req: &Parts) -> Outcome {
        let Some(token) = bearer_token(&req.headers) else {
            return Outcome::NoCredentials;
        };
        let now = chrono::Utc::now().timestamp();
        let verified = self.verifier.peek(token).and_then(|ours| match ours {
            true => self.verifier.verify(token, now).map(Some),
            // not a JWT of ours: upstream leaves such tokens to the other authenticators
            false => Ok(None),
        });
        let claims = match verified {
            Ok(Some(claims)) => claims,
            Ok(None) => return Outcome::NoCredentials,
            Err(why) => return Outcome::Rejected(format!("service account token: {why}")),
        };
        match self.identify(token, &claims) {
            Ok(user) => Outcome::Authenticated(user),
            Err(why) => Outcome::Rejected(format!("service account token: {why}")),
        }
    }
}

impl ServiceAccountTokens {
    fn identify(&self, token: &str, claims: &Claims) -> Result<UserInfo, String> {
        match &claims.bound {
            Some(bound) => self.identify_bound(claims, bound),
            None => self.identify_legacy(token, claims),
        }
    }

    fn identify_bound(&self, claims: &Claims, b: &crate::auth::sa_token::Bound) -> Result<UserInfo, String> {
        let ns = b.namespace.as_str();
        self.still_there("serviceaccounts", ns, &b.serviceaccount)?;
        let mut extra = BTreeMap::new();
        if let Some(pod) = &b.pod {
            self.still_there("pods", ns, pod)?;
            extra.insert(POD_NAME.to_string(), vec![pod.name.clone()]);
            extra.insert(POD_UID.to_string(), vec![pod.uid.clone()]);
        }
        if let Some(secret) = &b.secret {
            self.still_there("secrets", ns, secret)?;
        }
        if let Some(jti) = &claims.jti {
            extra.insert(CREDENTIAL_ID.to_string(), vec![format!("JTI={jti}")]);
        }
        Ok(UserInfo { extra, ..user(ns, &b.serviceaccount) })
    }

    /// A secret-based token counts while its secret exists and still holds it.
    fn identify_legacy(&self, token: &str, c: &Claims) -> Result<UserInfo, String> {
        let (Some(ns), Some(secret), Some(name), Some(uid)) =
            (&c.legacy_namespace, &c.legacy_secret, &c.legacy_sa_name, &c.legacy_sa_uid)
        else {
            return Err("legacy token without its service account claims".into());
        };
        let sa = Ref { name: name.clone(), uid: uid.clone() };
        self.still_there("serviceaccounts", ns, &sa)?;
        let stored = self.cached("secrets", ns, secret).ok_or_else(|| format!("secret {ns}/{secret} is gone"))?;
        if secret_token(&stored).as_deref() != Some(token) {
            return Err(format!("secret {ns}/{secret} no longer holds this token"));
        }
        Ok(user(ns, &sa))
    }

    /// The object exists in the cache with the uid the token recorded.
    fn still_there(&self, resource: &str, ns: &str, want: &Ref) -> Result<(), String> {
        let obj =
            self.cached(resource, ns, &want.name).ok_or_else(|| format!("{resource} {ns}/{} is gone", want.name))?;
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
        if uid != want.uid {
            return Err(format!("{resource} {ns}/{} has uid {uid}, the token was for {}", want.name, want.uid));
        }
        if deleted_before_grace(&obj) {
            return Err(format!("{resource} {ns}/{} is being deleted", want.name));
        }
        Ok(())
    }

    fn cached(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        crate::auth::cached(&self.caches, resource, ns, name)
    }
}

/// Being deleted for longer than a minute: as upstream, a terminating pod keeps its
/// credentials for a short grace, then loses them even while its deletion lingers.
fn deleted_before_grace(obj: &Value) -> bool {
    let since = obj.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let since = since.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    since.is_some_and(|t| t.timestamp() + DELETION_GRACE_SECONDS < chrono::Utc::now().timestamp())
}

const DELETION_GRACE_SECONDS: i64 = 60;

/// The decoded `data.token` of a service-account-token secret.
fn secret_token(secret: &Value) -> Option<String> {
    use base64::Engine;
    let encoded = secret.pointer("/data/token")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// The identity upstream gives a service account.
pub fn user(ns: &str, sa: &Ref) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{ns}:{}", sa.name),
        uid: sa.uid.clone(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            super::AUTHENTICATED.into(),
        ],
        extra: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminating_objects_keep_their_tokens_for_a_minute() {
        let at = |secs: i64| {
            let t = chrono::Utc::now() - chrono::Duration::seconds(secs);
            json!({"metadata": {"deletionTimestamp": t.to_rfc3339()}})
        };
        assert!(!deleted_before_grace(&json!({"metadata": {}})));
        assert!(!deleted_before_grace(&at(10)));
        assert!(deleted_before_grace(&at(120)));
    }

    #[test]
    fn service_account_identity() {
        let u = user("ns", &Ref { name: "sa".into(), uid: "u1".into() });
        assert_eq!((u.name.as_str(), u.uid.as_str()), ("system:serviceaccount:ns:sa", "u1"));
        assert_eq!(u.groups, ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"]);
    }
}
