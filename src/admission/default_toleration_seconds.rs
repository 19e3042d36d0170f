//! DefaultTolerationSeconds: a new pod that does not tolerate the `not-ready` and
//! `unreachable` NoExecute taints gets upstream's default tolerations for them (300 s),
//! so the node lifecycle controller evicts it five minutes after its node is lost
//! rather than at once.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const SECONDS: i64 = 300;

pub struct DefaultTolerationSeconds;

pub fn build(_: &Context) -> Box<dyn Plugin> {
    Box::new(DefaultTolerationSeconds)
}

/// Whether a toleration already covers the NoExecute taint `key`.
fn covers(t: &Value, key: &str) -> bool {
    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
    let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
    let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
    (effect.is_empty() || effect == "NoExecute") && (t_key == key || (t_key.is_empty() && exists))
}

impl Plugin for DefaultTolerationSeconds {
    fn handles(&self, a: &Attributes) -> bool {
        a.operation == Operation::Create && a.is("", "pods") && a.subresource.is_empty()
    }

    fn mutate<'a>(&'a self, _a: &'a Attributes<'a>, o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(spec) = o.obj.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
            let list = spec.entry("tolerations").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            let Some(list) = list.as_array_mut() else { return Ok(()) };
            for key in [NOT_READY, UNREACHABLE] {
                if !list.iter().any(|t| covers(t, key)) {
                    list.push(
                        json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": SECONDS}),
                    );
                }
            }
            Ok(())
        })
    }
}
