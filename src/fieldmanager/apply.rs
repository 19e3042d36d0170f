//! The server-side apply request: `PATCH` with `application/apply-patch+yaml`.

use http::StatusCode;
use serde_json::{Value, json};

use super::{Manager, merge_applied};
use crate::admission::Admit;
use crate::handlers::codec::{self, FieldValidation};
use crate::handlers::query::Query;
use crate::handlers::status::{ApiError, ApiResult, FieldError};
use crate::registry::rest::{Part, Registry, WriteOpts};
use crate::registry::{ResourceDef, meta};

pub const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The end of the message of a write that lost a race (`ApiError::modified`).
const MODIFIED: &str = "please apply your changes to the latest version and try again";

/// What an apply addresses.
pub struct Target<'a> {
    pub res: &'static ResourceDef,
    pub namespace: &'a str,
    pub name: &'a str,
    pub part: Part,
    /// Checks the handler runs on the object about to be written, as on any write
    /// (RBAC escalation prevention).
    pub admit: &'a (dyn Fn(&Value) -> ApiResult<()> + Sync),
    /// The requester, for the admission chain.
    pub admission: Admit,
}

/// Apply the body for the request's `fieldManager`: 200 with the object, or 201 when
/// the apply created it. Also returns the decoder's warnings.
pub async fn apply(
    reg: &Registry,
    target: Target<'_>,
    body: &[u8],
    query: &Query,
) -> ApiResult<(StatusCode, Value, Vec<String>)> {
    let Target { res, namespace: ns, name, part, admit, admission } = target;
    let manager_name = query.get("fieldManager").unwrap_or("");
    if manager_name.is_empty() {
        let cause = FieldError::required("fieldManager", "is required for apply patch");
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![cause]));
    }
    Manager::validate(manager_name, "PatchOptions")?;
    let subresource = (part == Part::Status).then_some("status");
    let manager = Manager { name: manager_name.to_string(), subresource };
    let force = query.bool_param("force")?.unwrap_or(false);
    let validation = FieldValidation::parse(query.get("fieldValidation"))?;
    let opts = WriteOpts { dry_run: query.dry_run()?, manager: None, admit: Some(admission) };
    let config = parse_config(res, ns, name, body)?;
    // recomputed on every lost race, as upstream's patcher
    loop {
        let live = match reg.get(res, ns, name).await {
            Ok(live) => Some(live),
            Err(e) if e.reason == "NotFound" && part == Part::Main => None,
            Err(e) => return Err(e),
        };
        let merged = merge_applied(res, live.as_ref(), &config, &manager, force)?;
        let (mut obj, warnings) = codec::decode_object(res, merged, validation)?;
        admit(&obj)?;
        let Some(live) = live else {
            match reg.create(res, ns, obj, &opts).await {
                Ok(created) => return Ok((StatusCode::CREATED, created, warnings)),
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        };
        // written only over the version it was merged into; a resourceVersion in the
        // configuration is a precondition, as in any update
        let rv = meta::meta_str(&live, "resourceVersion");
        let pinned = meta::meta_str(&config, "resourceVersion");
        if !pinned.is_empty() && pinned != rv {
            return Err(ApiError::modified(res.group, res.plural, name));
        }
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
        match reg.update(res, ns, name, obj, part, &opts).await {
            Ok(updated) => return Ok((StatusCode::OK, updated, warnings)),
            // lost a race with another writer: merge again into the new version
            Err(e) if e.reason == "Conflict" && e.message.ends_with(MODIFIED) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Parse and check the applied configuration: an object of this kind, named as the
/// URL names it, without managedFields.
fn parse_config(res: &ResourceDef, ns: &str, name: &str, body: &[u8]) -> ApiResult<Value> {
    let config = codec::parse_yaml(body)?;
    if !config.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be an object"));
    }
    let api_version = config.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != res.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {api_version}, expected: {}",
            res.api_version()
        )));
    }
    if kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({}) for {}",
            res.kind, res.plural
        )));
    }
    let body_name = meta::name(&config);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_ns = meta::namespace(&config);
    if res.namespaced && !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if meta::metadata(&config).is_some_and(|m| m.get("managedFields").is_some_and(|v| !v.is_null())) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(config)
}

/// Upstream refuses `force` on any patch but an apply.
pub fn reject_force(query: &Query) -> ApiResult<()> {
    match query.get("force") {
        Some(_) => {
            let cause = FieldError::forbidden("force", "may not be specified for non-apply patch");
            Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![cause]))
        }
        None => Ok(()),
    }
}
