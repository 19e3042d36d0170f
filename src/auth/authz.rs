//! The authorizer seam. Authentication needs one answer from authorization before the
//! request reaches the authorization step proper: whether the caller may impersonate
//! whom it asks to (`impersonate` on users, groups, uids, service accounts, user extras).

use super::request::{Attributes, Decision, UserInfo};
use crate::handlers::status::ApiError;

pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision;
}

/// Allows everything: `--authorization-mode=AlwaysAllow`, and the default until another
/// mode is configured.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _user: &UserInfo, _attrs: &Attributes) -> Decision {
        Decision::Allow
    }
}

/// Upstream's wording for a refused request: who cannot do what, where.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    let who = &user.name;
    if !attrs.resource_request {
        return format!("User {who:?} cannot {} path {:?}", attrs.verb, attrs.path);
    }
    let mut resource = attrs.resource.clone();
    if !attrs.subresource.is_empty() {
        resource = format!("{resource}/{}", attrs.subresource);
    }
    let verb = &attrs.verb;
    let group = &attrs.api_group;
    match attrs.namespace.as_str() {
        "" => format!("User {who:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"),
        ns => {
            format!("User {who:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {ns:?}")
        }
    }
}

/// The 403 for a request `decision` did not allow; the authorizer's reason, if any,
/// follows the message.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, decision: &Decision) -> ApiError {
    let mut why = forbidden_message(user, attrs);
    if let Decision::Deny(reason) | Decision::NoOpinion(reason) = decision
        && !reason.is_empty()
    {
        why = format!("{why}: {reason}");
    }
    if !attrs.resource_request {
        return ApiError::forbidden_path(&why);
    }
    ApiError::forbidden(&attrs.api_group, &attrs.resource, &attrs.name, &why)
}
