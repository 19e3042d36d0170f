//! Create-only resources that answer a question about the request itself instead of
//! storing an object: authentication.k8s.io SelfSubjectReview (`kubectl auth whoami`).
//! Each is one `Review` entry; the resource handler routes to it and discovery lists it.

use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::codec::{self, Output};
use super::path::ResourcePath;
use super::status::{ApiError, ApiResult};
use crate::auth::request::UserInfo;

pub struct Review {
    pub group: &'static str,
    /// preferred first
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// The `status` of the answer for the asking user.
    answer: fn(&UserInfo) -> Value,
}

/// kubectl 1.27 asks v1beta1, later versions v1 first.
pub const REVIEWS: &[Review] = &[Review {
    group: "authentication.k8s.io",
    versions: &["v1", "v1beta1"],
    plural: "selfsubjectreviews",
    singular: "selfsubjectreview",
    kind: "SelfSubjectReview",
    namespaced: false,
    answer: self_subject,
}];

/// The review a resource path addresses (its collection; reviews have no names).
pub fn find(p: &ResourcePath) -> Option<&'static Review> {
    let addressed = p.name.is_none() && p.subresource.is_none() && !p.watch;
    REVIEWS.iter().find(|r| {
        addressed
            && r.group == p.group
            && r.versions.contains(&p.version.as_str())
            && r.plural == p.resource
            && r.namespaced == p.namespace.is_some()
    })
}

/// The reviews served in one group version.
pub fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Review> + 'a {
    REVIEWS.iter().filter(move |r| r.group == group && r.versions.contains(&version))
}

/// The (group, version) pairs reviews are served in.
pub fn group_versions() -> impl Iterator<Item = (&'static str, &'static str)> {
    REVIEWS.iter().flat_map(|r| r.versions.iter().map(move |v| (r.group, *v)))
}

impl Review {
    /// POST: the review with its status filled in. The request body carries nothing the
    /// answer depends on (these kinds have no spec, or one only the user can fill), so
    /// it is not decoded; kubectl may send it as protobuf.
    pub fn handle(&self, method: &Method, version: &str, user: &UserInfo) -> ApiResult<Response> {
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let review = json!({
            "kind": self.kind,
            "apiVersion": format!("{}/{version}", self.group),
            "metadata": {"creationTimestamp": null},
            "status": (self.answer)(user),
        });
        Ok(codec::respond(StatusCode::CREATED, Output::Json, &review))
    }
}

/// SelfSubjectReview: who the server takes the caller for (after impersonation).
fn self_subject(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.groups.is_empty() {
        info["groups"] = json!(user.groups);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    json!({"userInfo": info})
}
