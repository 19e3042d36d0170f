//! The one error type of the request path, rendered once as a `metav1.Status`
//! with upstream's code, reason and message wording.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::{Value, json};

/// One field-level validation failure, as upstream's `field.Error`.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// upstream's cause type, e.g. `FieldValueRequired`, `FieldValueInvalid`
    pub reason: &'static str,
    /// dotted field path, e.g. `spec.containers[0].image`
    pub field: String,
    /// full message, e.g. `Required value` or `Invalid value: "x": must be ...`
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired", field: field.into(), message }
    }
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let mut message = format!("Invalid value: {shown}");
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldError { reason: "FieldValueInvalid", field: field.into(), message }
    }
    pub fn unsupported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value:?}: supported values: {}", list.join(", ")),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError { reason: "FieldValueDuplicate", field: field.into(), message: format!("Duplicate value: {value}") }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }
    pub fn immutable(field: impl Into<String>, value: &Value) -> Self {
        FieldError::invalid(field, value, "field is immutable")
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
    /// `spec.x: Required value` as upstream prints a cause inside a message.
    fn summary(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Every way a request can fail. Constructors take the words upstream uses.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }
    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        let mut details = json!({ "kind": kind });
        if !name.is_empty() {
            details["name"] = json!(name);
        }
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        self.details = Some(details);
        self
    }
    /// `qualified` is `resource` or `resource.group`, as upstream names it in messages.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", qualified(group, resource));
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", msg).with_details(group, resource, name)
    }
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", qualified(group, resource));
        ApiError::new(StatusCode::CONFLICT, "AlreadyExists", msg).with_details(group, resource, name)
    }
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(group, resource));
        ApiError::new(StatusCode::CONFLICT, "Conflict", msg).with_details(group, resource, name)
    }
    pub fn modified(group: &str, resource: &str, name: &str) -> Self {
        ApiError::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let what = match causes.as_slice() {
            [one] => one.summary(),
            many => format!("[{}]", many.iter().map(FieldError::summary).collect::<Vec<_>>().join(", ")),
        };
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let msg = format!("{qualified_kind} \"{name}\" is invalid: {what}");
        let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", msg).with_details(group, kind, name);
        let causes: Vec<Value> =
            causes.iter().map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field })).collect();
        if let Some(d) = err.details.as_mut() {
            d["causes"] = Value::Array(causes);
        }
        err
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", msg)
    }
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!("{} \"{name}\" is forbidden: {why}", qualified(group, resource));
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden", msg).with_details(group, resource, name)
    }
    /// A request the authorizers refused: the resource (and name) when there is one.
    pub fn forbidden_request(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = match (resource, name) {
            ("", _) => format!("forbidden: {why}"),
            (r, "") => format!("{} is forbidden: {why}", qualified(group, r)),
            (r, n) => format!("{} \"{n}\" is forbidden: {why}", qualified(group, r)),
        };
        let err = ApiError::new(StatusCode::FORBIDDEN, "Forbidden", msg);
        if resource.is_empty() { err } else { err.with_details(group, resource, name) }
    }
    /// 401 for credentials that fail (or none, where anonymous requests are off). The
    /// message never says why, so a client cannot probe which part was wrong.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }
    pub fn not_acceptable(accept: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io (requested {accept})"
            ),
        )
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }
    pub fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }
    pub fn expired(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GONE, "Expired", msg)
    }
    pub fn not_found_path() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
    }
    pub fn timeout(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg)
    }
    /// 429 TooManyRequests, as an eviction a disruption budget refuses; `causes` are
    /// (reason, message) pairs.
    pub fn too_many_requests(msg: impl Into<String>, causes: &[(&str, String)]) -> Self {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", msg);
        if !causes.is_empty() {
            let causes: Vec<Value> = causes.iter().map(|(r, m)| json!({"reason": r, "message": m})).collect();
            err.details = Some(json!({"causes": causes}));
        }
        err
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", msg)
    }

    /// The `metav1.Status` object, also used inside watch ERROR events.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl From<etcd_client::Error> for ApiError {
    fn from(err: etcd_client::Error) -> Self {
        tracing::warn!(error = %err, "etcd request failed");
        ApiError::unavailable(format!("etcd: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code.is_server_error() {
            tracing::warn!(code = self.code.as_u16(), reason = self.reason, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = self.code.as_u16(), reason = self.reason, message = %self.message, "request rejected");
        }
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        (self.code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A JSON patch that cannot be applied (a failed `test`, a missing path).
    pub fn new_invalid_patch(why: &str) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {why}"),
        )
    }
}
