//! Reviews: create-only kinds that are never stored. authentication.k8s.io
//! SelfSubjectReview tells callers who they are; the authorization.k8s.io/v1 ones are
//! answered by the authorizer chain. SubjectAccessReview asks about anyone, LocalSubjectAccessReview
//! about anyone within one namespace, SelfSubjectAccessReview about the requester, and
//! SelfSubjectRulesReview lists the requester's rules in a namespace.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::codec::{self, FieldValidation, Output};
use super::query::Query;
use super::status::{ApiError, ApiResult, FieldError};
use crate::auth::authz::Authorizer;
use crate::auth::rbac::rule::PolicyRule;
use crate::auth::request::{Attributes, Decision, UserInfo, equalities};
use crate::registry::selectors::FieldSelector;
use crate::registry::{ResourceDef, meta};

/// What a review request carries besides its body.
pub struct Request<'a> {
    pub res: &'static ResourceDef,
    pub namespace: &'a str,
    pub user: Arc<UserInfo>,
    pub headers: &'a HeaderMap,
    pub query: &'a Query,
}

pub async fn create(state: &AppState, req: Request<'_>, body: Bytes) -> ApiResult<Response> {
    let validation = FieldValidation::parse(req.query.get("fieldValidation"))?;
    let (mut review, warnings) = codec::decode_body(req.res, req.headers, &body, validation)?;
    let status = match req.res.kind {
        "SelfSubjectReview" => self_subject(&req.user),
        "TokenReview" => token_review(state, &review),
        "SelfSubjectRulesReview" => rules_review(state, &req.user, &review),
        "SelfSubjectAccessReview" => access_review(state, &req.user, &review, req.res)?,
        "LocalSubjectAccessReview" => {
            local_namespace(&mut review, req.namespace, req.res)?;
            access_review(state, &subject_of(&review, req.res)?, &review, req.res)?
        }
        _ => access_review(state, &subject_of(&review, req.res)?, &review, req.res)?,
    };
    review["status"] = status;
    let response = codec::respond(StatusCode::CREATED, Output::Json, &review);
    Ok(codec::with_warnings(response, &warnings))
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

/// TokenReview: whether the token of the spec authenticates, and as whom. Without
/// authentication flags no token authenticates (the development admin is no token's user).
fn token_review(state: &AppState, review: &Value) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    match state.authn.authenticate_token(token) {
        Some(user) => {
            let mut status = self_subject(&user);
            status["user"] = status["userInfo"].take();
            status.as_object_mut().map(|o| o.remove("userInfo"));
            status["authenticated"] = json!(true);
            if let Some(audiences) = review["spec"]["audiences"].as_array() {
                status["audiences"] = json!(audiences);
            }
            status
        }
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    }
}

fn invalid(res: &ResourceDef, review: &Value, cause: FieldError) -> ApiError {
    ApiError::invalid(res.group, res.kind, meta::name(review), vec![cause])
}

/// The user a (Local)SubjectAccessReview asks about.
fn subject_of(review: &Value, res: &ResourceDef) -> ApiResult<UserInfo> {
    let spec = review.get("spec").cloned().unwrap_or_default();
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    };
    let user = UserInfo {
        name: spec.get("user").and_then(Value::as_str).unwrap_or("").to_string(),
        uid: spec.get("uid").and_then(Value::as_str).unwrap_or("").to_string(),
        groups: strings(spec.get("groups")),
        extra: spec
            .get("extra")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), strings(Some(v))))
            .collect(),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        let why = "at least one of user or group must be specified";
        return Err(invalid(res, review, FieldError::invalid("spec.user", &json!(""), why)));
    }
    Ok(user)
}

/// A LocalSubjectAccessReview is about its own namespace only.
fn local_namespace(review: &mut Value, namespace: &str, res: &ResourceDef) -> ApiResult<()> {
    let asked = review.pointer("/spec/resourceAttributes/namespace").and_then(Value::as_str).unwrap_or("");
    if review.pointer("/spec/resourceAttributes").is_none_or(Value::is_null) {
        let cause = FieldError::required("spec.resourceAttributes", "");
        return Err(invalid(res, review, cause));
    }
    if asked != namespace {
        let why = format!("must match metadata.namespace: {namespace}");
        let cause = FieldError::invalid("spec.resourceAttributes.namespace", &json!(asked), &why);
        return Err(invalid(res, review, cause));
    }
    meta::metadata_mut(review).insert("namespace".into(), json!(namespace));
    Ok(())
}

/// The equality requirements of `resourceAttributes.fieldSelector`: its `rawSelector`
/// (parsed as a query's) or its `requirements` (`In` with one value; other operators
/// cannot narrow a request to one value); not both, as upstream validates.
fn review_field_selector(attrs: &Value) -> Result<Vec<(String, String)>, FieldError> {
    let Some(sel) = attrs.get("fieldSelector").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let raw = sel.get("rawSelector").and_then(Value::as_str).unwrap_or("");
    let reqs = sel.get("requirements").and_then(Value::as_array).cloned().unwrap_or_default();
    if !raw.is_empty() && !reqs.is_empty() {
        let field = "spec.resourceAttributes.fieldSelector.rawSelector";
        return Err(FieldError::invalid(field, &json!(raw), "may not be specified at the same time as requirements"));
    }
    if !raw.is_empty() {
        // upstream authorizes an unparsable selector as no selector (the widest request)
        return Ok(FieldSelector::parse(raw).map(|f| equalities(&f)).unwrap_or_default());
    }
    let one_value = |r: &Value| match (r.get("operator").and_then(Value::as_str), r.get("values")) {
        (Some("In"), Some(Value::Array(v))) if v.len() == 1 => {
            Some((r.get("key")?.as_str()?.to_string(), v[0].as_str()?.to_string()))
        }
        _ => None,
    };
    Ok(reqs.iter().filter_map(one_value).collect())
}

/// The request a review's spec describes.
fn attributes_of(review: &Value, res: &ResourceDef) -> ApiResult<Attributes> {
    let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    let spec = review.get("spec").cloned().unwrap_or_default();
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            verb: text(r, "verb"),
            resource_request: true,
            api_group: text(r, "group"),
            api_version: text(r, "version"),
            namespace: text(r, "namespace"),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            name: text(r, "name"),
            path: String::new(),
            field_equals: review_field_selector(r).map_err(|cause| invalid(res, review, cause))?,
        }),
        (None, Some(n)) => Ok(Attributes { verb: text(n, "verb"), path: text(n, "path"), ..Default::default() }),
        _ => {
            let why = "exactly one of nonResourceAttributes or resourceAttributes must be specified";
            Err(invalid(res, review, FieldError::invalid("spec.resourceAttributes", &json!(null), why)))
        }
    }
}

fn access_review(state: &AppState, user: &UserInfo, review: &Value, res: &ResourceDef) -> ApiResult<Value> {
    let attrs = attributes_of(review, res)?;
    let (decision, reason) = state.authz.decide(user, &attrs);
    let mut status = json!({"allowed": decision == Decision::Allow});
    if matches!(decision, Decision::Deny(_)) {
        status["denied"] = json!(true);
    }
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    Ok(status)
}

fn rules_review(state: &AppState, user: &UserInfo, review: &Value) -> Value {
    let namespace = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or("");
    let (rules, incomplete) = state.authz.rules_for(user, namespace);
    let (non_resource, resource): (Vec<PolicyRule>, Vec<PolicyRule>) =
        rules.into_iter().partition(|r| !r.non_resource_urls.is_empty());
    let resource: Vec<Value> = resource
        .iter()
        .map(|r| json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources, "resourceNames": r.resource_names}))
        .collect();
    let non_resource: Vec<Value> =
        non_resource.iter().map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})).collect();
    let mut status = json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": incomplete});
    if incomplete {
        // the Node authorizer: what a kubelet may read depends on its pods
        status["evaluationError"] = json!("some authorization modes cannot list the rules they allow for this user");
    }
    status
}
