//! Judging one failed pod of a Job: `spec.podFailurePolicy` rules in order (exit codes of
//! its containers, or its conditions such as DisruptionTarget), upstream's
//! matchPodFailurePolicy. No rule matching counts the failure against backoffLimit.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// What a failed pod means for its Job.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Counts towards backoffLimit (no rule, or a Count rule).
    Count,
    /// Not counted; the pod is replaced.
    Ignore,
    /// The whole Job fails at once, with this message.
    FailJob(String),
    /// The pod's index fails at once (backoffLimitPerIndex).
    FailIndex,
}

pub fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else { return Verdict::Count };
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(why) = matches(rule, pod) {
            return match rule.action.as_str() {
                "Ignore" => Verdict::Ignore,
                "FailIndex" => Verdict::FailIndex,
                "FailJob" => Verdict::FailJob(format!("{why} matching FailJob rule at index {i}")),
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// Why the rule matches the pod (the start of upstream's message), if it does.
fn matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(req) = &rule.on_exit_codes {
        let status = pod.status.as_ref()?;
        let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        for c in all {
            if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                continue;
            }
            let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code) else {
                continue;
            };
            let listed = req.values.contains(&code);
            let hit = match req.operator.as_str() {
                "In" => listed,
                "NotIn" => code != 0 && !listed,
                _ => false,
            };
            if hit {
                return Some(format!("Container {} for pod {ns}/{name} failed with exit code {code}", c.name));
            }
        }
        return None;
    }
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    for pattern in rule.on_pod_conditions.iter().flatten() {
        // an omitted status means True (the API server stores it as "")
        let want = Some(pattern.status.as_str()).filter(|s| !s.is_empty()).unwrap_or("True");
        if conditions.iter().any(|c| c.type_ == pattern.type_ && c.status == want) {
            return Some(format!("Pod {ns}/{name} has condition {}", pattern.type_));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_pod(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "x", "ready": false, "restartCount": 0, "imageID": "", "containerID": "",
                 "state": {"terminated": {"exitCode": code}}}]},
        }))
        .unwrap()
    }

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    #[test]
    fn exit_codes_and_conditions_pick_the_first_matching_rule() {
        let p = policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]));
        assert_eq!(
            judge(Some(&p), &failed_pod(42, json!([]))),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into()
            )
        );
        let disrupted = json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(judge(Some(&p), &failed_pod(1, disrupted)), Verdict::Ignore);
        assert_eq!(judge(Some(&p), &failed_pod(1, json!([]))), Verdict::Count);
        assert_eq!(judge(None, &failed_pod(42, json!([]))), Verdict::Count);
    }
}
