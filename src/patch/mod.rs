//! Patch formats the json-patch crate does not cover: strategic merge patch.

pub mod strategic;

use serde_json::Value;

use crate::handlers::status::{ApiError, ApiResult};
use strategic::PatchError;

impl From<PatchError> for ApiError {
    /// Upstream answers a malformed strategic merge patch with 400 and a self-contradicting
    /// one with 422. (The errors it leaves untyped, such as an unknown `$patch` value or a
    /// missing merge key, come out of upstream as 500; they are the client's fault, so 400.)
    fn from(err: PatchError) -> Self {
        match err {
            PatchError::BadRequest(msg) => ApiError::bad_request(msg),
            PatchError::Invalid(msg) => ApiError::new_invalid_patch(&msg),
        }
    }
}

/// Applies a strategic-merge-patch request body to `current`, an object of the given
/// kind, with the merge rules of that kind's schema.
pub fn strategic_merge(current: &Value, body: &[u8], group: &str, version: &str, kind: &str) -> ApiResult<Value> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let shape = crate::schema::schemas().for_kind(group, version, kind);
    Ok(strategic::apply(current, &patch, shape)?)
}

#[cfg(test)]
mod tests;
