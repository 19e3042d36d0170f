//! Impersonation: `Impersonate-User`, `Impersonate-Uid`, `Impersonate-Group` (repeated)
//! and `Impersonate-Extra-<key>` (repeated) make the request act as another identity,
//! when the authorizer lets the caller `impersonate` each part of it.

use std::collections::BTreeMap;

use http::HeaderMap;

use crate::auth::authn::{AUTHENTICATED, parse};
use crate::auth::authz::{self, Authorizer};
use crate::auth::request::{Attributes, Decision, UserInfo};
use crate::handlers::status::{ApiError, ApiResult};

pub const USER: &str = "impersonate-user";
const UID: &str = "impersonate-uid";
const GROUP: &str = "impersonate-group";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The identity the request acts as: `user` itself without impersonation headers, else
/// the impersonated one, each part authorized. The headers are removed either way.
pub fn apply(authz: &dyn Authorizer, user: UserInfo, headers: &mut HeaderMap) -> ApiResult<UserInfo> {
    let Some(wanted) = requested(headers)? else {
        return Ok(user);
    };
    for attrs in checks(&wanted) {
        let decision = authz.authorize(&user, &attrs);
        if decision != Decision::Allow {
            tracing::debug!(user = user.name, impersonating = wanted.name, "impersonation refused");
            let reason = match &decision {
                Decision::Deny(r) | Decision::NoOpinion(r) => r.as_str(),
                Decision::Allow => "",
            };
            return Err(authz::forbidden(&user, &attrs, reason));
        }
    }
    Ok(with_implied_groups(wanted))
}

/// The identity the headers ask for (taking them out of the request), if any.
fn requested(headers: &mut HeaderMap) -> ApiResult<Option<UserInfo>> {
    let name = values(headers, USER)?.into_iter().next().unwrap_or_default();
    let uid = values(headers, UID)?.into_iter().next().unwrap_or_default();
    let groups = values(headers, GROUP)?;
    let mut extra = BTreeMap::new();
    let extra_headers: Vec<String> =
        headers.keys().map(|k| k.as_str().to_string()).filter(|k| k.starts_with(EXTRA_PREFIX)).collect();
    for header in extra_headers {
        extra.insert(parse::extra_key(&header[EXTRA_PREFIX.len()..]), values(headers, &header)?);
        headers.remove(&header);
    }
    for header in [USER, UID, GROUP] {
        headers.remove(header);
    }
    if name.is_empty() {
        if !groups.is_empty() || !extra.is_empty() || !uid.is_empty() {
            return Err(ApiError::bad_request(
                "impersonating groups, a uid or extra fields requires impersonating a user",
            ));
        }
        return Ok(None);
    }
    Ok(Some(UserInfo { name, uid, groups, extra }))
}

/// Every value of one header. A value that is not text is refused rather than skipped:
/// skipping `Impersonate-User` would run the request as the caller instead.
fn values(headers: &HeaderMap, name: &str) -> ApiResult<Vec<String>> {
    let text = |v: &http::HeaderValue| v.to_str().map(str::to_string);
    let bad = |_| ApiError::bad_request(format!("invalid {name} header value"));
    headers.get_all(name).iter().map(text).collect::<Result<_, _>>().map_err(bad)
}

/// One `impersonate` check per part of the identity: the user (or service account),
/// each group, each extra value, the uid.
fn checks(wanted: &UserInfo) -> Vec<Attributes> {
    let check = |group: &str, resource: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut out = vec![match parse::service_account(&wanted.name) {
        Some((namespace, name)) => check("", "serviceaccounts", namespace, name),
        None => check("", "users", "", &wanted.name),
    }];
    out.extend(wanted.groups.iter().map(|g| check("", "groups", "", g)));
    for (key, values) in &wanted.extra {
        for value in values {
            let mut attrs = check("authentication.k8s.io", "userextras", "", value);
            attrs.subresource = key.clone();
            out.push(attrs);
        }
    }
    if !wanted.uid.is_empty() {
        out.push(check("authentication.k8s.io", "uids", "", &wanted.uid));
    }
    out
}

/// The groups an impersonated identity has without asking: a service account's groups
/// when none are named, and `system:authenticated` for anyone but anonymous unless the
/// caller named it or `system:unauthenticated`.
fn with_implied_groups(mut user: UserInfo) -> UserInfo {
    if user.groups.is_empty()
        && let Some((namespace, _)) = parse::service_account(&user.name)
    {
        user.groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")];
    }
    let named = user.groups.iter().any(|g| g == AUTHENTICATED || g == "system:unauthenticated");
    if user.name != "system:anonymous" && !named {
        user.groups.push(AUTHENTICATED.into());
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OnlyUsers;
    impl Authorizer for OnlyUsers {
        fn authorize(&self, _: &UserInfo, attrs: &Attributes) -> Decision {
            if attrs.resource == "users" { Decision::Allow } else { Decision::NoOpinion(String::new()) }
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn alice() -> UserInfo {
        UserInfo { name: "alice".into(), ..Default::default() }
    }

    #[test]
    fn impersonated_identity_and_implied_groups() {
        let mut h = headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Extra-Scopes%2Fx", "a"),
        ]);
        let bob = apply(&authz::AlwaysAllow, alice(), &mut h).unwrap();
        assert_eq!(bob.groups, ["devs", "ops", AUTHENTICATED]);
        assert_eq!(bob.extra["scopes/x"], ["a"]);
        assert!(h.is_empty(), "impersonation headers are consumed: {h:?}");
        let mut h = headers(&[("Impersonate-User", "system:serviceaccount:ns:sa")]);
        let sa = apply(&authz::AlwaysAllow, alice(), &mut h).unwrap();
        assert_eq!(sa.groups, ["system:serviceaccounts", "system:serviceaccounts:ns", AUTHENTICATED]);
        let mut h = headers(&[("Impersonate-Group", "devs")]);
        assert_eq!(apply(&authz::AlwaysAllow, alice(), &mut h).unwrap_err().code, 400);
        let mut h = HeaderMap::new();
        h.insert("impersonate-user", http::HeaderValue::from_bytes(b"b\xffb").unwrap());
        assert_eq!(apply(&authz::AlwaysAllow, alice(), &mut h).unwrap_err().code, 400, "not text");
    }

    #[test]
    fn each_part_is_authorized() {
        let mut h = headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")]);
        let err = apply(&OnlyUsers, alice(), &mut h).unwrap_err();
        assert_eq!(err.code, 403);
        let want = r#"groups "devs" is forbidden: User "alice" cannot impersonate resource "groups" in API group "" at the cluster scope"#;
        assert_eq!(err.message, want);
        let mut h = headers(&[("Impersonate-User", "system:serviceaccount:ns:sa")]);
        let err = apply(&OnlyUsers, alice(), &mut h).unwrap_err();
        assert!(err.message.ends_with(r#"in API group "" in the namespace "ns""#), "{}", err.message);
    }
}
