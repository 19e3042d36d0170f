//! The v2 document as gnostic's `openapi.v2.Document` protobuf, which kubectl asks for
//! first. Only the messages and fields our document uses are declared; the field
//! numbers are gnostic's (openapiv2/OpenAPIv2.proto). Vendor extensions carry their
//! value as YAML text, which is how kubectl's readers decode them.

use prost::Message;
use serde_json::{Map, Value};

/// gnostic's `Named<T>` messages: a map entry, name in field 1 and value in field 2.
macro_rules! named {
    ($($name:ident($value:ident)),* $(,)?) => {$(
        #[derive(Clone, PartialEq, Message)]
        pub struct $name {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<$value>,
        }
    )*};
}

/// Messages with one field worth sending: a wrapper (`ResponseValue`, `SchemaItem`,
/// `ParametersItem` are oneofs whose first member is all we use) or a list.
macro_rules! wrapper {
    ($($name:ident { $field:ident: $label:ident $ty:ty = $tag:literal }),* $(,)?) => {$(
        #[derive(Clone, PartialEq, Message)]
        pub struct $name {
            #[prost(message, $label, tag = $tag)]
            pub $field: $ty,
        }
    )*};
}

named!(NamedPathItem(PathItem), NamedResponse(ResponseValue), NamedSchema(Schema), NamedAny(Any));

wrapper!(
    Paths { path: repeated Vec<NamedPathItem> = "2" },
    Definitions { additional_properties: repeated Vec<NamedSchema> = "1" },
    Properties { additional_properties: repeated Vec<NamedSchema> = "1" },
    Responses { response_code: repeated Vec<NamedResponse> = "1" },
    ItemsItem { schema: repeated Vec<Schema> = "1" },
    ParametersItem { parameter: optional Option<Parameter> = "1" },
    ResponseValue { response: optional Option<Response> = "1" },
    SchemaItem { schema: optional Option<Schema> = "1" },
);

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Parameter {
    #[prost(oneof = "ParameterKind", tags = "1, 2")]
    pub kind: Option<ParameterKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterKind {
    #[prost(message, tag = "1")]
    Body(BodyParameter),
    #[prost(message, tag = "2")]
    NonBody(NonBodyParameter),
}

#[derive(Clone, PartialEq, Message)]
pub struct BodyParameter {
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "NonBodyKind", tags = "3, 4")]
    pub kind: Option<NonBodyKind>,
}

/// Query and path parameters share their first fields' numbers (required 1, in 2,
/// name 4) but not the later ones, hence two messages.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NonBodyKind {
    #[prost(message, tag = "3")]
    Query(QueryParameter),
    #[prost(message, tag = "4")]
    Path(PathParameter),
}

#[derive(Clone, PartialEq, Message)]
pub struct QueryParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "6")]
    pub r#type: String,
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PathParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub r#type: String,
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    /// gnostic's SchemaItem, a wrapper with the Schema in field 1.
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalProperties>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalProperties {
    #[prost(oneof = "AdditionalKind", tags = "1, 2")]
    pub kind: Option<AdditionalKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalKind {
    #[prost(message, tag = "1")]
    Schema(Box<Schema>),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// gnostic's Any: field 1 (a protobuf Any) is unused, the value is YAML in field 2.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn texts(v: &Value, key: &str) -> Vec<String> {
    v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

fn entries<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    v.get(key).and_then(Value::as_object).into_iter().flatten()
}

/// The `x-` keys of an object, each value as YAML.
fn extensions(v: &Value) -> Vec<NamedAny> {
    let map = v.as_object().map(Map::iter).into_iter().flatten();
    map.filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, value)| NamedAny {
            name: k.clone(),
            value: Some(Any { yaml: serde_yaml::to_string(value).unwrap_or_default() }),
        })
        .collect()
}

fn named_schemas(v: &Value, key: &str) -> Vec<NamedSchema> {
    entries(v, key).map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) }).collect()
}

pub fn schema(v: &Value) -> Schema {
    let additional_properties = v.get("additionalProperties").map(|a| AdditionalProperties {
        kind: Some(match a {
            Value::Bool(b) => AdditionalKind::Boolean(*b),
            other => AdditionalKind::Schema(Box::new(schema(other))),
        }),
    });
    Schema {
        r#ref: text(v, "$ref"),
        format: text(v, "format"),
        description: text(v, "description"),
        required: texts(v, "required"),
        additional_properties,
        r#type: v.get("type").and_then(Value::as_str).map(|t| TypeItem { value: vec![t.to_string()] }),
        items: v.get("items").map(|i| ItemsItem { schema: vec![schema(i)] }),
        all_of: v.get("allOf").and_then(Value::as_array).into_iter().flatten().map(schema).collect(),
        properties: v.get("properties").map(|_| Properties { additional_properties: named_schemas(v, "properties") }),
        vendor_extension: extensions(v),
    }
}

fn parameter(v: &Value) -> ParametersItem {
    let (name, place, required) = (text(v, "name"), text(v, "in"), v["required"].as_bool().unwrap_or(false));
    let unique_items = v["uniqueItems"].as_bool().unwrap_or(false);
    let kind = match place.as_str() {
        "body" => {
            ParameterKind::Body(BodyParameter { name, r#in: place, required, schema: v.get("schema").map(schema) })
        }
        "path" => ParameterKind::NonBody(NonBodyParameter {
            kind: Some(NonBodyKind::Path(PathParameter {
                required,
                r#in: place,
                name,
                r#type: text(v, "type"),
                unique_items,
            })),
        }),
        _ => ParameterKind::NonBody(NonBodyParameter {
            kind: Some(NonBodyKind::Query(QueryParameter {
                required,
                r#in: place,
                name,
                r#type: text(v, "type"),
                unique_items,
            })),
        }),
    };
    ParametersItem { parameter: Some(Parameter { kind: Some(kind) }) }
}

fn parameters(v: &Value) -> Vec<ParametersItem> {
    v.get("parameters").and_then(Value::as_array).into_iter().flatten().map(parameter).collect()
}

fn operation(v: &Value) -> Operation {
    let responses = entries(v, "responses").map(|(code, r)| NamedResponse {
        name: code.clone(),
        value: Some(ResponseValue {
            response: Some(Response {
                description: text(r, "description"),
                schema: r.get("schema").map(|s| SchemaItem { schema: Some(schema(s)) }),
            }),
        }),
    });
    Operation {
        tags: texts(v, "tags"),
        description: text(v, "description"),
        operation_id: text(v, "operationId"),
        produces: texts(v, "produces"),
        consumes: texts(v, "consumes"),
        parameters: parameters(v),
        responses: Some(Responses { response_code: responses.collect() }),
        schemes: texts(v, "schemes"),
        vendor_extension: extensions(v),
    }
}

fn path_item(v: &Value) -> PathItem {
    let op = |method: &str| v.get(method).map(operation);
    PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        patch: op("patch"),
        parameters: parameters(v),
    }
}

/// The Swagger 2.0 JSON document (as `v2::document` builds it), encoded.
pub fn encode(doc: &Value) -> Vec<u8> {
    let paths =
        entries(doc, "paths").map(|(name, item)| NamedPathItem { name: name.clone(), value: Some(path_item(item)) });
    Document {
        swagger: text(doc, "swagger"),
        info: Some(Info { title: text(&doc["info"], "title"), version: text(&doc["info"], "version") }),
        paths: Some(Paths { path: paths.collect() }),
        definitions: Some(Definitions { additional_properties: named_schemas(doc, "definitions") }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_round_trips_through_protobuf() {
        let field = json!({
            "type": "array",
            "description": "list",
            "items": {"$ref": "#/definitions/a.B"},
            "x-kubernetes-patch-merge-key": "name",
            "x-kubernetes-list-map-keys": ["name"],
        });
        let decoded = Schema::decode(schema(&field).encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.r#type.map(|t| t.value), Some(vec!["array".to_string()]));
        assert_eq!(decoded.items.map(|i| i.schema[0].r#ref.clone()).as_deref(), Some("#/definitions/a.B"));
        let yaml: Vec<(String, String)> = decoded
            .vendor_extension
            .into_iter()
            .map(|e| (e.name, e.value.map(|v| v.yaml).unwrap_or_default()))
            .collect();
        assert!(yaml.contains(&("x-kubernetes-patch-merge-key".into(), "name\n".into())), "{yaml:?}");
        assert!(yaml.contains(&("x-kubernetes-list-map-keys".into(), "- name\n".into())), "{yaml:?}");
    }
}
