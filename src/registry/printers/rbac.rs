//! rbac.authorization.k8s.io kinds, and the create-only authorization reviews.

use serde_json::{Value, json};

use super::{AGE, Column, NAME, Printer, age, col, created_at, list, name, text, wide};

const CREATED_AT: Column = col("Created At", "date", AGE.description);

/// Roles have no printer upstream: the generic table of name and creation time.
const GENERIC: Printer = Printer { columns: &[NAME, CREATED_AT], cells: |o| vec![name(o), created_at(o)] };

pub static ROLE: Printer = GENERIC;
pub static CLUSTER_ROLE: Printer = GENERIC;
/// Reviews are never stored; a Table of one shows the generic columns.
pub static REVIEW: Printer = GENERIC;

const BINDING: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "The role the binding grants: kind/name."),
        AGE,
        wide("Users", "string", "Users the binding applies to."),
        wide("Groups", "string", "Groups the binding applies to."),
        wide("ServiceAccounts", "string", "Service accounts the binding applies to, as namespace:name."),
    ],
    cells: binding_cells,
};

pub static ROLE_BINDING: Printer = BINDING;
pub static CLUSTER_ROLE_BINDING: Printer = BINDING;

fn binding_cells(b: &Value) -> Vec<Value> {
    let role = format!("{}/{}", text(b, "roleRef.kind"), text(b, "roleRef.name"));
    vec![
        name(b),
        json!(role),
        age(b),
        json!(subjects_of_kind(b, "User")),
        json!(subjects_of_kind(b, "Group")),
        json!(subjects_of_kind(b, "ServiceAccount")),
    ]
}

/// The subjects of one kind, comma separated; service accounts carry their namespace.
fn subjects_of_kind(b: &Value, kind: &str) -> String {
    let names: Vec<String> = list(b, "subjects")
        .iter()
        .filter(|s| text(s, "kind") == kind)
        .map(|s| match text(s, "namespace") {
            "" => text(s, "name").to_string(),
            ns => format!("{ns}:{}", text(s, "name")),
        })
        .collect();
    names.join(", ")
}
