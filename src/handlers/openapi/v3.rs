//! The OpenAPI 3 documents under `/openapi/v3/<api/v1|apis/G/V>`: the group-version's
//! operations with request and response schemas, and in `components.schemas` every
//! definition they reach. kubectl reads these for `explain`, for the strategic merge
//! patch rules of client-side apply, and to learn that the server validates fields.

use serde_json::{Map, Value, json};

use super::closure;
use super::routes::{Op, group_version_routes, operation_refs, response_text};

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A v2 definition in v3 form: refs point into `components.schemas`, and a ref with
/// siblings (a field's description, its patch strategy) becomes `allOf: [ref]` beside
/// them, since OpenAPI 3.0 ignores a `$ref`'s siblings; kubectl's explain templates and
/// its v3 patch-meta lookup both read that shape, as upstream serves it.
fn to_v3(node: &Value) -> Value {
    match node {
        Value::Object(map) => {
            let mut out: Map<String, Value> = Map::new();
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", _) => {}
                    // field names, not schema keywords: a field may be called `$ref`
                    ("properties", Value::Object(fields)) => {
                        let fields = fields.iter().map(|(name, field)| (name.clone(), to_v3(field)));
                        out.insert(key.clone(), fields.collect::<Map<_, _>>().into());
                    }
                    _ => {
                        out.insert(key.clone(), to_v3(value));
                    }
                }
            }
            let Some(target) = map.get("$ref").and_then(Value::as_str) else { return out.into() };
            let reference = schema_ref(target.trim_start_matches("#/definitions/"));
            if out.is_empty() {
                return reference;
            }
            out.insert("allOf".into(), json!([reference]));
            out.into()
        }
        Value::Array(items) => items.iter().map(to_v3).collect(),
        other => other.clone(),
    }
}

/// Scalars that take more than one JSON type. Swagger 2.0 can only call them strings;
/// in OpenAPI 3 upstream lists their types with `oneOf` and drops `type`, which is also
/// what makes kubectl explain name them (`<IntOrString>`) rather than say `<string>`.
const MULTI_TYPED: &[(&str, &[&str])] = &[
    ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", &["integer", "string"]),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", &["string", "number"]),
];

fn definition(name: &str, v2: &Value) -> Value {
    let mut out = to_v3(v2);
    if let Some((_, types)) = MULTI_TYPED.iter().find(|(n, _)| *n == name)
        && let Some(map) = out.as_object_mut()
    {
        map.remove("type");
        map.insert("oneOf".into(), types.iter().map(|t| json!({ "type": t })).collect());
    }
    out
}

fn content(types: &[&str], schema: &Value) -> Value {
    types.iter().map(|t| (t.to_string(), json!({ "schema": schema }))).collect::<Map<_, _>>().into()
}

fn operation(op: &Op) -> Value {
    let params: Vec<Value> = op
        .query
        .iter()
        .map(|(name, ty)| json!({"name": name, "in": "query", "schema": {"type": ty, "uniqueItems": true}}))
        .collect();
    let responses: Map<String, Value> = op
        .responses
        .iter()
        .map(|(code, def)| {
            (
                code.to_string(),
                json!({"description": response_text(code), "content": content(op.produces, &schema_ref(def))}),
            )
        })
        .chain([("401".to_string(), json!({"description": "Unauthorized"}))])
        .collect();
    let mut out = json!({
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.id,
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = &op.body {
        out["requestBody"] = json!({"content": content(op.consumes, &schema_ref(body)), "required": true});
    }
    op.add_extensions(&mut out);
    out
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

pub fn document(group: &str, version: &str) -> Value {
    let routes = group_version_routes(group, version);
    let roots = routes.iter().flat_map(|r| r.ops.iter().flat_map(operation_refs));
    let schemas: Map<String, Value> =
        closure(roots).into_iter().map(|(name, def)| (name.clone(), definition(&name, def))).collect();
    let paths: Map<String, Value> =
        routes.iter().map(|r| (r.path.clone(), r.render(operation, path_parameter))).collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::super::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_with_siblings_are_wrapped() {
        let field = json!({"$ref": "#/definitions/a.B", "description": "d"});
        assert_eq!(to_v3(&field), json!({"allOf": [{"$ref": "#/components/schemas/a.B"}], "description": "d"}));
        let item = json!({"items": {"$ref": "#/definitions/a.B"}, "type": "array"});
        assert_eq!(to_v3(&item), json!({"items": {"$ref": "#/components/schemas/a.B"}, "type": "array"}));
    }
}
