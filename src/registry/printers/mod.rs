//! Printer columns per kind: what `kubectl get` shows, served as meta.k8s.io/v1 Table
//! rows. Column names, types, priorities and cell wording follow upstream's printers.
//! The server always fills the `-o wide` cells too (priority 1 columns); kubectl hides
//! them unless asked.

mod core;
mod network;
mod pod;
mod rbac;
mod workloads;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::meta;

pub use self::core::{
    CONFIG_MAP, EVENT, LEASE, LIMIT_RANGE, NAMESPACE, NODE, PERSISTENT_VOLUME, PERSISTENT_VOLUME_CLAIM, PRIORITY_CLASS,
    RESOURCE_QUOTA, SECRET, SERVICE_ACCOUNT, STORAGE_CLASS,
};
pub use self::network::{ENDPOINT_SLICE, ENDPOINTS, INGRESS, SERVICE};
pub use self::pod::POD;
pub use self::rbac::{CLUSTER_ROLE, CLUSTER_ROLE_BINDING, REVIEW, ROLE, ROLE_BINDING};
pub use self::workloads::{
    CONTROLLER_REVISION, CRON_JOB, DAEMON_SET, DEPLOYMENT, JOB, REPLICA_SET, REPLICATION_CONTROLLER, STATEFUL_SET,
};

/// One column of a Table. `priority` 1 columns appear only with `-o wide`; `format`
/// "name" marks the column that holds the object's name.
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: u8,
    pub description: &'static str,
}

/// The columns of a kind and the function that fills one row's cells, one cell per
/// column in order. Usually the name is the first column; events put it last.
pub struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value) -> Vec<Value>,
}

impl Printer {
    pub fn column_definitions(&self) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.ty,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    }
}

/// A column shown by default.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 0, description }
}

/// A column shown only with `-o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 1, description }
}

const NAME: Column = Column { format: "name", ..col("Name", "string", "Name must be unique within a namespace.") };
const AGE: Column =
    col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.");
const CONTAINERS: Column = wide("Containers", "string", "Names of the containers in the pod template.");
const IMAGES: Column = wide("Images", "string", "Images of the containers in the pod template.");
const SELECTOR: Column = wide("Selector", "string", "Label query over the pods this object manages.");

/// Upstream's human duration: 45s, 5m3s, 17m, 3h5m, 20h, 3d4h, 12d, 2y30d, 9y.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
    } else {
        format!("{}y", d / 365)
    }
}

/// Age of an RFC 3339 timestamp, `<unknown>` when absent.
pub fn age_of(ts: Option<&str>) -> String {
    since(ts.and_then(parse_time))
}

pub fn age(obj: &Value) -> Value {
    json!(age_of(meta::metadata(obj).and_then(|m| m.get("creationTimestamp")).and_then(Value::as_str)))
}

/// The creation time as an RFC 3339 timestamp, the "Created At" cell of the generic table.
fn created_at(obj: &Value) -> Value {
    let created = time_at(obj, "metadata.creationTimestamp")
        .map_or_else(|| "0001-01-01T00:00:00Z".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    json!(created)
}

pub fn name(obj: &Value) -> Value {
    json!(meta::name(obj))
}

/// A timestamp (metav1.Time or MicroTime); the zero time counts as unset, as upstream.
fn parse_time(ts: &str) -> Option<DateTime<Utc>> {
    /// 0001-01-01T00:00:00Z, Go's zero time.
    const ZERO: i64 = -62_135_596_800;
    let t = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    (t.timestamp() != ZERO).then_some(t)
}

/// The timestamp at a dotted path.
fn time_at(obj: &Value, path: &str) -> Option<DateTime<Utc>> {
    meta::str_at(obj, path).and_then(parse_time)
}

/// Time elapsed since `t`, `<unknown>` when unset.
fn since(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => human_duration((Utc::now() - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

/// The string at a dotted path, "" when absent or not a string.
fn text<'a>(obj: &'a Value, path: &str) -> &'a str {
    meta::str_at(obj, path).unwrap_or("")
}

/// The integer at a dotted path, 0 when absent (Go's zero value).
fn int(obj: &Value, path: &str) -> i64 {
    meta::value_at(obj, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at a dotted path, empty when absent.
fn list<'a>(obj: &'a Value, path: &str) -> &'a [Value] {
    meta::value_at(obj, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Number of entries of the map at a dotted path.
fn map_len(obj: &Value, path: &str) -> usize {
    meta::value_at(obj, path).and_then(Value::as_object).map_or(0, |m| m.len())
}

/// Whether the object is being deleted (metadata.deletionTimestamp is set).
fn deleting(obj: &Value) -> bool {
    meta::metadata(obj).and_then(|m| m.get("deletionTimestamp")).is_some_and(|t| !t.is_null())
}

/// `s`, or `<none>` when empty.
fn or_none(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() { "<none>".into() } else { s }
}

/// A label map as `a=1,b=2` (sorted by key), `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(pairs.join(","))
}

/// A metav1.LabelSelector in selector syntax (`app=web,tier in (a,b),!legacy`), terms
/// sorted by key; "" for an empty or absent selector, None when it cannot be converted.
fn selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel.filter(|s| !s.is_null()) else { return Some(String::new()) };
    let mut terms: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push((k.clone(), format!("{k}={}", v.as_str()?)));
        }
    }
    for expr in list(sel, "matchExpressions") {
        let key = text(expr, "key");
        let mut values: Vec<&str> = list(expr, "values").iter().map(|v| v.as_str().unwrap_or("")).collect();
        values.sort_unstable();
        values.dedup();
        let term = match (text(expr, "operator"), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.to_string(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return None,
        };
        terms.push((key.to_string(), term));
    }
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    Some(terms.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(","))
}

/// A label selector as upstream's FormatLabelSelector: `<none>` when empty, `<error>`
/// when it cannot be converted.
fn format_label_selector(sel: Option<&Value>) -> String {
    selector_string(sel).map_or_else(|| "<error>".into(), or_none)
}

/// The container names and images of a pod spec, each comma-joined.
fn containers_and_images(pod_spec: Option<&Value>) -> (String, String) {
    let containers = pod_spec.map_or(&[][..], |s| list(s, "containers"));
    let field = |f: &str| containers.iter().map(|c| text(c, f)).collect::<Vec<_>>().join(",");
    (field("name"), field("image"))
}

/// Access modes in upstream's short form and fixed order (RWO,ROX,RWX,RWOP).
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(long, _)| has(long))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// An object named `name` with `body` merged in, created a year ago.
#[cfg(test)]
fn test_object(name: &str, mut body: Value) -> Value {
    body["metadata"] = json!({"name": name, "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"});
    body
}

/// RFC 3339 time `secs` seconds ago.
#[cfg(test)]
fn ago(secs: i64) -> String {
    (Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_upstream() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (303, "5m3s"),
            (1020, "17m"),
            (3 * 3600 + 300, "3h5m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (12 * 86400, "12d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want);
        }
    }

    #[test]
    fn zero_time_is_unset() {
        assert_eq!(age_of(Some("0001-01-01T00:00:00Z")), "<unknown>");
        assert_eq!(age_of(Some("garbage")), "<unknown>");
        assert_eq!(age_of(None), "<unknown>");
        assert!(parse_time("2024-01-01T00:00:00.123456Z").is_some());
    }

    #[test]
    fn label_selectors_as_upstream() {
        let sel = json!({
            "matchLabels": {"tier": "web", "app": "x"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["b"]},
                {"key": "canary", "operator": "Exists"},
            ],
        });
        assert_eq!(format_label_selector(Some(&sel)), "app=x,canary,env in (dev,prod),!legacy,tier=web,zone notin (b)");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        assert_eq!(selector_string(Some(&bad)), None);
    }

    #[test]
    fn labels_and_modes() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(access_modes(&[json!("ReadWriteOncePod"), json!("ReadWriteOnce")]), "RWO,RWOP");
        assert_eq!(access_modes(&[]), "");
    }

    #[test]
    fn name_column_definitions() {
        let defs = NAMESPACE.column_definitions();
        assert_eq!(
            defs[0],
            json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": NAME.description})
        );
        assert_eq!(defs[1]["format"], "");
        assert_eq!(defs[2]["name"], "Age");
        // events carry the name last, shown only with -o wide
        let defs = EVENT.column_definitions();
        let names: Vec<_> = defs.iter().filter(|d| d["format"] == "name").collect();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0]["name"], "Name");
        assert_eq!(names[0]["priority"], 1);
        assert_eq!(defs[0]["name"], "Last Seen");
    }

    /// Every printer fills exactly one cell per column, whatever the object looks like,
    /// and the cells of integer columns are integers.
    #[test]
    fn every_printer_fills_every_column() {
        let all = [
            &NAMESPACE,
            &POD,
            &NODE,
            &SERVICE,
            &ENDPOINTS,
            &ENDPOINT_SLICE,
            &STORAGE_CLASS,
            &CONFIG_MAP,
            &SECRET,
            &SERVICE_ACCOUNT,
            &EVENT,
            &PERSISTENT_VOLUME,
            &PERSISTENT_VOLUME_CLAIM,
            &REPLICATION_CONTROLLER,
            &LIMIT_RANGE,
            &RESOURCE_QUOTA,
            &DEPLOYMENT,
            &REPLICA_SET,
            &STATEFUL_SET,
            &DAEMON_SET,
            &CONTROLLER_REVISION,
            &JOB,
            &CRON_JOB,
            &LEASE,
            &INGRESS,
        ];
        let odd = [
            json!(null),
            json!({}),
            json!([1, 2]),
            json!({"metadata": 3, "spec": "x", "status": [1]}),
            json!({"metadata": {"name": "n", "ownerReferences": [{"controller": true, "apiVersion": "a/b/c"}]},
                   "spec": {"ports": [7], "rules": [null], "selector": {"matchLabels": {"a": 1}},
                            "template": {"spec": {"containers": [{"name": 5}]}}},
                   "status": {"conditions": [{}], "hard": {"pods": 3}, "loadBalancer": {"ingress": [{}]}},
                   "subsets": [{"addresses": [{"ip": "::1"}], "ports": [{}]}], "involvedObject": 4, "series": {}}),
        ];
        for p in all {
            assert_eq!(p.columns.iter().filter(|c| c.format == "name").count(), 1);
            for obj in &odd {
                let cells = (p.cells)(obj);
                assert_eq!(cells.len(), p.columns.len(), "{:?}", p.columns.first().map(|c| c.name));
                for (c, v) in p.columns.iter().zip(&cells) {
                    assert!(v.is_string() || v.is_number(), "{}: {v}", c.name);
                    if c.ty == "integer" {
                        assert!(v.is_i64(), "{}: {v}", c.name);
                    }
                }
            }
        }
    }
}
