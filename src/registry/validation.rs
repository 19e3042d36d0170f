//! Validation shared by every kind: object names, label and annotation syntax,
//! and small field helpers used by the strategies.

use serde_json::{Map, Value};

use crate::handlers::status::FieldError;

/// The naming rule a kind's `metadata.name` follows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most kinds.
    Subdomain,
    /// RFC 1123 label: namespaces.
    Label,
    /// RFC 1035 label: services.
    Dns1035,
    /// Any URL path segment: RBAC kinds (`system:node`).
    PathSegment,
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Upstream's label regex `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, which has no length limit.
fn label_pattern(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Upstream's subdomain regex: dot-separated labels, with no per-label length limit.
fn subdomain_pattern(s: &str) -> bool {
    s.split('.').all(label_pattern)
}

fn dns1035_pattern(s: &str) -> bool {
    label_pattern(s) && s.as_bytes()[0].is_ascii_lowercase()
}

pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && label_pattern(s)
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && subdomain_pattern(s)
}

/// Problems with a name under `rule`, as messages (empty: valid).
pub fn name_problems(name: &str, rule: NameRule) -> Vec<String> {
    let mut out = Vec::new();
    // as upstream: the length and the pattern are separate problems
    if rule == NameRule::PathSegment {
        return path_segment_problems(name);
    }
    let (ok, max, msg) = match rule {
        NameRule::Subdomain => (subdomain_pattern(name), 253, SUBDOMAIN_MSG),
        NameRule::Label => (label_pattern(name), 63, LABEL_MSG),
        NameRule::Dns1035 => (dns1035_pattern(name), 63, DNS1035_MSG),
        NameRule::PathSegment => (true, usize::MAX, ""),
    };
    if name.len() > max {
        out.push(format!("must be no more than {max} characters"));
    }
    if !ok {
        out.push(msg.to_string());
    }
    out
}

/// A name that must survive as one URL path segment.
fn path_segment_problems(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name == "." || name == ".." {
        out.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            out.push(format!("may not contain '{bad}'"));
        }
    }
    out
}

/// Validate `metadata` rules every kind shares.
pub fn validate_object_meta(obj: &Value, rule: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = super::meta::name(obj);
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else {
        for problem in name_problems(name, rule) {
            errs.push(FieldError::invalid("metadata.name", &Value::String(name.into()), &problem));
        }
    }
    let namespace = super::meta::namespace(obj);
    if namespaced && namespace.is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    if !namespaced && !namespace.is_empty() {
        errs.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }
    let meta = super::meta::metadata(obj);
    if let Some(labels) = meta.and_then(|m| m.get("labels")).and_then(Value::as_object) {
        errs.extend(validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = meta.and_then(|m| m.get("annotations")).and_then(Value::as_object) {
        errs.extend(validate_annotations(annotations));
    }
    if let Some(owners) = meta.and_then(|m| m.get("ownerReferences")).and_then(Value::as_array) {
        errs.extend(validate_owner_references(owners));
    }
    errs
}

/// Each owner reference names apiVersion, kind, name and uid; at most one is the
/// controller (upstream's ValidateOwnerReferences).
fn validate_owner_references(owners: &[Value]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let text = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    for (i, o) in owners.iter().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if text(o, field).is_empty() {
                let detail = match field {
                    "apiVersion" => "version must not be empty",
                    "kind" => "kind must not be empty",
                    "name" => "name must not be empty",
                    _ => "uid must not be empty",
                };
                errs.push(FieldError::invalid(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    &Value::String(text(o, field)),
                    detail,
                ));
            }
        }
    }
    let controllers: Vec<String> = owners
        .iter()
        .filter(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|o| format!("{}/{}", text(o, "kind"), text(o, "name")))
        .collect();
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            "metadata.ownerReferences",
            &Value::Array(owners.to_vec()),
            &format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {} and {}",
                controllers[0], controllers[1]
            ),
        ));
    }
    errs
}

/// A qualified name: `[prefix/]name`, name ≤ 63 chars, prefix a DNS subdomain.
pub fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns1123_subdomain(p))
    {
        return Some(format!("prefix part {SUBDOMAIN_MSG}"));
    }
    let b = name.as_bytes();
    let valid = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if valid {
        None
    } else {
        Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string())
    }
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.', starting and
/// ending with an alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

pub fn validate_labels(labels: &Map<String, Value>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        if let Some(p) = qualified_name_problem(k) {
            errs.push(FieldError::invalid(field, &Value::String(k.clone()), &p));
        }
        let value = v.as_str().unwrap_or_default();
        if !is_label_value(value) {
            errs.push(FieldError::invalid(
                field,
                &Value::String(value.into()),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
    errs
}

fn validate_annotations(annotations: &Map<String, Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        if let Some(p) = qualified_name_problem(k) {
            errs.push(FieldError::invalid("metadata.annotations", &Value::String(k.clone()), &p));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        errs.push(FieldError::too_long("metadata.annotations", 256 * 1024));
    }
    errs
}

/// `spec.selector` must be set and match the template's labels (workload kinds).
pub fn validate_selector_matches_template(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(selector) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    };
    let empty = selector.get("matchLabels").and_then(Value::as_object).is_none_or(Map::is_empty)
        && selector.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty);
    if empty {
        errs.push(FieldError::invalid("spec.selector", selector, "empty selector is invalid for deployment"));
        return;
    }
    match super::selectors::LabelSelector::from_object(selector) {
        Ok(sel) => {
            let labels = obj.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
            if !sel.matches(labels) {
                let shown = labels.map(|l| Value::Object(l.clone())).unwrap_or(Value::Null);
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &shown,
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Err(e) => errs.push(FieldError::invalid("spec.selector", selector, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web.example-1"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!dns1035_pattern("1abc"));
        assert_eq!(name_problems(&"a".repeat(64), NameRule::Label), ["must be no more than 63 characters"]);
        assert_eq!(name_problems(&"a".repeat(254), NameRule::Subdomain).len(), 1);
        assert_eq!(name_problems(&"A".repeat(64), NameRule::Label).len(), 2);
    }
}
