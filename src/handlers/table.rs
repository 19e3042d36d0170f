//! meta.k8s.io Table and PartialObjectMetadata renderings.

use serde_json::{Value, json};

use super::query::Query;
use super::status::{ApiError, ApiResult};
use crate::registry::ResourceDef;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_query(q: &Query) -> ApiResult<IncludeObject> {
        match q.get("includeObject") {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

pub fn partial_metadata(obj: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

pub fn partial_metadata_list(objs: impl IntoIterator<Item = Value>, list_meta: Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "items": objs.into_iter().map(|o| partial_metadata(&o, version)).collect::<Vec<_>>(),
    })
}

fn row(res: &ResourceDef, obj: &Value, include: IncludeObject, version: &str) -> Value {
    let mut row = json!({ "cells": (res.printer.cells)(obj) });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(obj, version),
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table of `objs`, consumed one at a time so a large list never holds every decoded
/// object at once. `with_columns` is false for watch events after the first.
pub fn table(
    res: &ResourceDef,
    objs: impl IntoIterator<Item = Value>,
    list_meta: Value,
    version: &str,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let columns = if with_columns { res.printer.column_definitions() } else { Vec::new() };
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": objs.into_iter().map(|o| row(res, &o, include, version)).collect::<Vec<_>>(),
    })
}

/// The same Table as `table`, written straight to bytes row by row: a list of many
/// objects never holds more than one decoded object and its row at a time.
pub fn table_bytes(
    res: &ResourceDef,
    objs: impl IntoIterator<Item = Value>,
    list_meta: &Value,
    version: &str,
    include: IncludeObject,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    let head = json!({"kind": "Table", "apiVersion": format!("meta.k8s.io/{version}"), "metadata": list_meta,
        "columnDefinitions": res.printer.column_definitions()});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // reopen the head object to append the rows array
    out.extend_from_slice(&head[..head.len().saturating_sub(1)]);
    out.extend_from_slice(b",\"rows\":[");
    for (i, obj) in objs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &row(res, &obj, include, version));
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find_resource;

    #[test]
    fn streamed_table_equals_built_table() {
        let res = find_resource("", "v1", "configmaps").unwrap();
        let objs = vec![
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}),
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}),
        ];
        let lm = json!({"resourceVersion": "5"});
        let built = table(res, objs.clone(), lm.clone(), "v1", IncludeObject::Metadata, true);
        let streamed: Value =
            serde_json::from_slice(&table_bytes(res, objs, &lm, "v1", IncludeObject::Metadata)).unwrap();
        assert_eq!(built, streamed);
    }
}
