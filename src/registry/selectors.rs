//! Label and field selectors, parsed from their query-string forms as upstream does:
//! `a=b,c!=d,e in (f,g),h notin (i),j,!k` for labels; `f=v,g!=w` for fields.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

impl LabelSelector {
    pub fn parse(input: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for term in split_terms(input)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_label_term(term)?);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|req| match req {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }

    /// Build a selector from a `metav1.LabelSelector` object (matchLabels/matchExpressions).
    pub fn from_object(sel: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(LabelReq::Eq(k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
        }
        for expr in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values: Vec<String> = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            let req = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => LabelReq::In(key, values),
                "NotIn" => LabelReq::NotIn(key, values),
                "Exists" => LabelReq::Exists(key),
                "DoesNotExist" => LabelReq::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }
}

/// Split on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unable to parse requirement: unbalanced parentheses in {input:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unable to parse requirement: unbalanced parentheses in {input:?}"));
    }
    out.push(&input[start..]);
    Ok(out)
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(checked_key(key.trim())?));
    }
    for (op, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some(pos) = term.find(op) {
            let key = checked_key(term[..pos].trim())?;
            let rest = term[pos + op.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
            let values: Vec<String> =
                inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            if values.is_empty() {
                return Err(format!(
                    "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty: {term:?}"
                ));
            }
            for v in &values {
                check_value(v)?;
            }
            return Ok(if is_in { LabelReq::In(key, values) } else { LabelReq::NotIn(key, values) });
        }
    }
    for op in ["!=", "==", "=", ">", "<"] {
        if let Some(pos) = term.find(op) {
            let key = checked_key(term[..pos].trim())?;
            let value = term[pos + op.len()..].trim().to_string();
            check_value(&value)?;
            return match op {
                "!=" => Ok(LabelReq::NotEq(key, value)),
                ">" | "<" => {
                    let n = value.parse::<i64>().map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"))?;
                    Ok(if op == ">" { LabelReq::Gt(key, n) } else { LabelReq::Lt(key, n) })
                }
                _ => Ok(LabelReq::Eq(key, value)),
            };
        }
    }
    Ok(LabelReq::Exists(checked_key(term)?))
}

/// A key must be a qualified name, as in a label (upstream's validateLabelKey).
fn checked_key(key: &str) -> Result<String, String> {
    match super::validation::qualified_name_problem(key) {
        None => Ok(key.to_string()),
        Some(problem) => Err(format!("unable to parse requirement: invalid label key {key:?}: {problem}")),
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if super::validation::is_label_value(value) {
        Ok(())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// One `field=value` or `field!=value` requirement.
#[derive(Debug, Clone)]
pub struct FieldReq {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    pub reqs: Vec<FieldReq>,
}

impl FieldSelector {
    pub fn parse(input: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{term}'"));
            };
            reqs.push(FieldReq { field: field.trim().to_string(), value: value.trim().to_string(), negated });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The name this selector pins (`metadata.name=x`), for single-key watches and lists.
    pub fn pinned_name(&self) -> Option<&str> {
        self.reqs.iter().find(|r| r.field == "metadata.name" && !r.negated).map(|r| r.value.as_str())
    }

    pub fn matches(&self, value_of: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| {
            let actual = value_of(&r.field).unwrap_or_default();
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_selector_forms() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front)", true),
            ("n>3", true),
            ("n<3", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(Some(&l)), want, "{sel}");
        }
        assert!(LabelSelector::parse("app in (web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
        assert!(LabelSelector::parse("-bad-=x").is_err());
        assert!(LabelSelector::parse("a in ()").is_err());
        assert!(LabelSelector::parse("a in (b c)").is_err());
        assert!(LabelSelector::parse("a notin (b,c-)").is_err());
        assert!(LabelSelector::parse("app=-x-").is_err());
        assert!(LabelSelector::parse("example.com/app=x,k8s.io/").is_err());
        assert!(LabelSelector::parse("example.com/app=x,!example.com/y").is_ok());
    }

    #[test]
    fn field_selector_forms() {
        let sel = FieldSelector::parse("metadata.name=a,status.phase!=Failed").unwrap();
        assert_eq!(sel.pinned_name(), Some("a"));
        assert!(sel.matches(|f| Some(if f == "metadata.name" { "a".into() } else { "Running".into() })));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
