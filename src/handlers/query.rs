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

    pub fn label_selector(&self) -> ApiResult<LabelSelector> {
        LabelSelector::parse(self.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }

    pub fn field_selector(&self) -> ApiResult<FieldSelector> {
        FieldSelector::parse(self.get("fieldSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }
}
