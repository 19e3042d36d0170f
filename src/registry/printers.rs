//! Printer columns per kind: what `kubectl get` shows, served as meta.k8s.io/v1 Table
//! rows. Column names and cell wording follow upstream's printers.

use serde_json::{Value, json};

use super::meta;

/// One column of a Table. `priority` 1 columns appear only with `-o wide`.
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub priority: u8,
    pub description: &'static str,
}

/// The columns of a kind and the function that fills one row's cells.
/// The first cell is always the object's name (the NAME column).
pub struct Printer {
    pub columns: &'static [Column],
    pub cells: fn(&Value) -> Vec<Value>,
}

impl Printer {
    pub fn column_definitions(&self) -> Vec<Value> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "name": c.name,
                    "type": c.ty,
                    "format": if i == 0 { "name" } else { "" },
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    }
}

const fn col(name: &'static str, ty: &'static str, priority: u8, description: &'static str) -> Column {
    Column { name, ty, priority, description }
}

const NAME: Column = col("Name", "string", 0, "Name must be unique within a namespace.");
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

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
    match ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

pub fn age(obj: &Value) -> Value {
    json!(age_of(meta::metadata(obj).and_then(|m| m.get("creationTimestamp")).and_then(Value::as_str)))
}

pub fn name(obj: &Value) -> Value {
    json!(meta::name(obj))
}

/// NAME and AGE only: kinds whose upstream printer shows nothing else.
pub const NAME_AGE: Printer = Printer { columns: &[NAME, AGE], cells: |o| vec![name(o), age(o)] };

pub static NAMESPACE: Printer = NAME_AGE;
pub static POD: Printer = NAME_AGE;
pub static NODE: Printer = NAME_AGE;
pub static SERVICE: Printer = NAME_AGE;
pub static ENDPOINTS: Printer = NAME_AGE;
pub static CONFIG_MAP: Printer = NAME_AGE;
pub static SECRET: Printer = NAME_AGE;
pub static SERVICE_ACCOUNT: Printer = NAME_AGE;
pub static EVENT: Printer = NAME_AGE;
pub static PERSISTENT_VOLUME: Printer = NAME_AGE;
pub static PERSISTENT_VOLUME_CLAIM: Printer = NAME_AGE;
pub static REPLICATION_CONTROLLER: Printer = NAME_AGE;
pub static LIMIT_RANGE: Printer = NAME_AGE;
pub static RESOURCE_QUOTA: Printer = NAME_AGE;
pub static DEPLOYMENT: Printer = NAME_AGE;
pub static REPLICA_SET: Printer = NAME_AGE;
pub static STATEFUL_SET: Printer = NAME_AGE;
pub static DAEMON_SET: Printer = NAME_AGE;
pub static CONTROLLER_REVISION: Printer = NAME_AGE;
pub static JOB: Printer = NAME_AGE;
pub static CRON_JOB: Printer = NAME_AGE;
pub static LEASE: Printer = NAME_AGE;
pub static INGRESS: Printer = NAME_AGE;

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
}
