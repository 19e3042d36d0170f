//! Query parameters of resource requests, parsed once.

use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::selectors::{FieldSelector, LabelSelector};

#[derive(Default, Debug)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let pairs = match raw {
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?,
            None => Vec::new(),
        };
        Ok(Query { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | ""))
    }

    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::bad_request(format!("unsupported dry run mode {other:?}: supported value is \"All\"")))
            }
        }
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))),
        }
    }

    /// A boolean parameter as Go's strconv.ParseBool reads it; None when absent.
    pub fn bool_param(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("" | "0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {key}: strconv.ParseBool: parsing {other:?}: invalid syntax"
            ))),
        }
    }

    /// The combinations of list/watch options upstream's ValidateListOptions rejects,
    /// with its field-error wording.
    pub fn validate_list_options(&self, watch: bool) -> ApiResult<()> {
        let rv = self.get("resourceVersion").unwrap_or("");
        let rv_match = self.get("resourceVersionMatch").unwrap_or("");
        let has_continue = self.get("continue").is_some_and(|c| !c.is_empty());
        let send_initial = self.bool_param("sendInitialEvents")?;
        let forbidden = |field: &str, why: &str| format!("{field}: Forbidden: {why}");
        let unsupported = |value: &str, allowed: &str| {
            format!("resourceVersionMatch: Unsupported value: {value:?}: supported values: {allowed}")
        };
        let mut errs = Vec::new();
        if watch {
            if send_initial.is_some() && rv_match != "NotOlderThan" {
                errs.push(forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !rv_match.is_empty() {
                if send_initial.is_none() {
                    errs.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if rv_match != "NotOlderThan" {
                    errs.push(unsupported(rv_match, "\"NotOlderThan\""));
                }
                if has_continue {
                    errs.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if !rv_match.is_empty() {
                if rv.is_empty() {
                    errs.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if has_continue {
                    errs.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if rv_match != "Exact" && rv_match != "NotOlderThan" {
                    errs.push(unsupported(rv_match, "\"Exact\", \"NotOlderThan\", \"\""));
                }
                if rv_match == "Exact" && rv == "0" {
                    errs.push(forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if send_initial.is_some() {
                errs.push(forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
            }
        }
        match errs.as_slice() {
            [] => Ok(()),
            [one] => Err(ApiError::bad_request(format!("ListOptions.meta.k8s.io \"\" is invalid: {one}"))),
            many => {
                Err(ApiError::bad_request(format!("ListOptions.meta.k8s.io \"\" is invalid: [{}]", many.join(", "))))
            }
        }
    }

    pub fn label_selector(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }

    pub fn field_selector(&self) -> ApiResult<FieldSelector> {
        FieldSelector::parse(self.get("fieldSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }
}
