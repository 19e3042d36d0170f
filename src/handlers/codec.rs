//! Content negotiation and body decoding: which representation a client accepts
//! (JSON, YAML, Table, PartialObjectMetadata), and turning request bodies (JSON or
//! YAML, at most 3 MiB) into checked objects.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::status::{ApiError, ApiResult};
use crate::registry::{ResourceDef, typed};

/// Upstream's request body limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    Json,
    Yaml,
    /// meta.k8s.io Table, of the given version (v1 or v1beta1).
    Table(&'static str),
    PartialMetadata(&'static str),
}

/// Pick the first acceptable media range of the Accept header.
pub fn negotiate(headers: &HeaderMap) -> ApiResult<Output> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        let param = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        let version = match param("v") {
            Some("v1") => "v1",
            Some("v1beta1") => "v1beta1",
            _ => "",
        };
        match (media.as_str(), param("as"), param("g")) {
            ("application/json", Some("Table"), Some("meta.k8s.io")) if !version.is_empty() => {
                return Ok(Output::Table(version));
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"))
                if !version.is_empty() =>
            {
                return Ok(Output::PartialMetadata(version));
            }
            ("application/json" | "application/*" | "*/*" | "*", None, _) => return Ok(Output::Json),
            ("application/yaml", None, _) => return Ok(Output::Yaml),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// Serialize a value in the negotiated plain representation (JSON or YAML).
pub fn respond(code: StatusCode, output: Output, value: &Value) -> Response {
    match output {
        Output::Yaml => match serde_yaml::to_string(value) {
            Ok(s) => (code, [(header::CONTENT_TYPE, "application/yaml")], s).into_response(),
            Err(e) => ApiError::internal(e.to_string()).into_response(),
        },
        _ => json_bytes(code, serde_json::to_vec(value).unwrap_or_default()),
    }
}

pub fn json_bytes(code: StatusCode, body: Vec<u8>) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> ApiResult<FieldValidation> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}. Valid values are Strict, Warn, Ignore"
            ))),
        }
    }
}

/// Parse a body as JSON or YAML according to Content-Type.
pub fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => parse_yaml(body),
        // kubectl 1.32+ sends built-in kinds as Kubernetes protobuf
        crate::protobuf::CONTENT_TYPE => crate::protobuf::decode_body(body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode protobuf body: {e}"))),
        _ => Err(ApiError::unsupported_media_type(content_type)),
    }
}

pub fn parse_yaml(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not valid UTF-8"))?;
    serde_yaml::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Check a body against the resource it is sent to and decode it through the typed
/// schema. Returns the object and warnings (unknown fields under `Warn`).
pub fn decode_object(res: &ResourceDef, obj: Value, validation: FieldValidation) -> ApiResult<(Value, Vec<String>)> {
    decode_object_with(res, obj, validation, &[], false)
}

/// A request body as a checked object: parsed by Content-Type, with keys repeated in a
/// JSON body reported like unknown fields (upstream's strict decoder does the same).
pub fn decode_body(
    res: &ResourceDef,
    headers: &HeaderMap,
    body: &Bytes,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let raw = parse_body(headers, body)?;
    let repeated = match validation {
        FieldValidation::Ignore => Vec::new(),
        _ if is_json(headers) => super::duplicate_keys::find(body),
        _ => Vec::new(),
    };
    decode_object_with(res, raw, validation, &repeated, true)
}

fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    matches!(content_type.split(';').next().unwrap_or("").trim(), "application/json" | "")
}

fn decode_object_with(
    res: &ResourceDef,
    mut obj: Value,
    validation: FieldValidation,
    repeated: &[String],
    whole_body: bool,
) -> ApiResult<(Value, Vec<String>)> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): body is not a JSON object",
            res.kind
        )));
    }
    let api_version = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                res.kind, res.plural
            )));
        }
    }
    let decoded = (res.decode)(&obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            res.kind, res.version, res.kind
        ))
    })?;
    let unknown = typed::unknown_fields(&obj, &decoded);
    let problems: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .chain(repeated.iter().map(|f| format!("duplicate field \"{f}\"")))
        .collect();
    match validation {
        FieldValidation::Strict if !problems.is_empty() => {
            let strict = format!("strict decoding error: {}", problems.join(", "));
            // a body that is the whole object names its kind in the error, as upstream's decoder
            Err(ApiError::bad_request(match whole_body {
                true => {
                    format!("{} in version \"{}\" cannot be handled as a {}: {strict}", res.kind, res.version, res.kind)
                }
                false => strict,
            }))
        }
        FieldValidation::Warn => Ok((decoded, problems)),
        _ => Ok((decoded, Vec::new())),
    }
}

/// Attach `Warning: 299 - "..."` headers, as upstream reports unknown fields.
pub fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> ApiResult<Output> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        negotiate(&h)
    }

    #[test]
    fn accept_forms() {
        assert_eq!(accept("application/json").unwrap(), Output::Json);
        assert_eq!(
            accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").unwrap(),
            Output::Table("v1")
        );
        assert_eq!(accept("application/vnd.kubernetes.protobuf, application/json").unwrap(), Output::Json);
        assert_eq!(accept("application/yaml").unwrap(), Output::Yaml);
        assert!(accept("application/vnd.kubernetes.protobuf").is_err());
        assert!(accept("text/html").is_err());
    }
}
