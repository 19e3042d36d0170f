//! The Job controller against a real API server and etcd, the real controller-manager
//! process, and the pod driver for pod phases.

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, set_pod_phase, start_controller_manager, wait_event};
use common::{Cluster, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(60);
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";

fn job(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox"}],
    }});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

/// The Job's pods (by the job-name label), as JSON.
async fn pods_of(c: &Cluster, job: &str) -> Vec<Value> {
    let (_, list) =
        c.get(&format!("/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io/job-name%3D{job}")).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn running(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .map(name)
        .collect()
}

/// Wait for `n` running pods of the job and return their names.
async fn running_pods(c: &Cluster, job: &str, n: usize) -> Vec<String> {
    eventually(WAIT, &format!("{n} running pods of {job}"), || async {
        let names = running(&pods_of(c, job).await);
        (names.len() == n).then_some(names)
    })
    .await
}

/// Wait until the Job has the condition `type_` True; returns the Job.
async fn condition(c: &Cluster, job: &str, type_: &str) -> Value {
    eventually(WAIT, &format!("{job} {type_}"), || async {
        let j = c.must_get(&format!("{JOBS}/{job}")).await;
        let conds = j["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conds.iter().any(|k| k["type"] == type_ && k["status"] == "True").then_some(j)
    })
    .await
}

fn cond<'a>(job: &'a Value, type_: &str) -> &'a Value {
    let conds = job["status"]["conditions"].as_array().expect("conditions");
    conds.iter().find(|k| k["type"] == type_).expect("the condition")
}

#[tokio::test]
async fn jobs_run_to_completion_fail_on_backoff_and_deadline_and_suspend() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=job"]).await;

    // completions 3, parallelism 2: two pods at a time until three succeeded
    let created = c.create(JOBS, &job("pi", json!({"completions": 3, "parallelism": 2}))).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let first = running_pods(&c, "pi", 2).await;
    let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{}", first[0])).await;
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid.as_str());
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], uid.as_str());
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(pod["metadata"]["finalizers"], json!(["batch.kubernetes.io/job-tracking"]));
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    let j = eventually(WAIT, "active 2, ready 2", || async {
        let j = c.must_get(&format!("{JOBS}/pi")).await;
        (j["status"]["active"] == 2 && j["status"]["ready"] == 2).then_some(j)
    })
    .await;
    assert!(j["status"]["startTime"].is_string());
    for p in &first {
        set_pod_phase(&c, "default", p, "Succeeded").await;
    }
    let third = eventually(WAIT, "a third pod", || async {
        let names = running(&pods_of(&c, "pi").await);
        names.into_iter().find(|n| !first.contains(n))
    })
    .await;
    set_pod_phase(&c, "default", &third, "Succeeded").await;
    let done = condition(&c, "pi", "Complete").await;
    assert_eq!(done["status"]["succeeded"], 3);
    assert_eq!(done["status"]["active"], 0);
    assert!(done["status"]["completionTime"].is_string());
    assert_eq!(cond(&done, "Complete")["reason"], "CompletionsReached");
    assert_eq!(cond(&done, "SuccessCriteriaMet")["status"], "True");
    for p in pods_of(&c, "pi").await {
        assert!(p["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()), "finalizer left: {p}");
    }
    assert_eq!(wait_event(&c, "pi", "Completed").await, "Job completed");
    assert!(wait_event(&c, "pi", "SuccessfulCreate").await.starts_with("Created pod: pi-"));

    // backoffLimit 1: the second failure fails the Job (the replacement waits out 10 s)
    c.create(JOBS, &job("flaky", json!({"backoffLimit": 1}))).await;
    let p = running_pods(&c, "flaky", 1).await;
    set_pod_phase(&c, "default", &p[0], "Failed").await;
    let p2 = eventually(WAIT, "a replacement pod", || async {
        running(&pods_of(&c, "flaky").await).into_iter().find(|n| *n != p[0])
    })
    .await;
    set_pod_phase(&c, "default", &p2, "Failed").await;
    let failed = condition(&c, "flaky", "Failed").await;
    assert_eq!(failed["status"]["failed"], 2);
    assert_eq!(cond(&failed, "Failed")["reason"], "BackoffLimitExceeded");
    assert_eq!(cond(&failed, "FailureTarget")["reason"], "BackoffLimitExceeded");
    assert_eq!(wait_event(&c, "flaky", "BackoffLimitExceeded").await, "Job has reached the specified backoff limit");

    // activeDeadlineSeconds: its running pod is deleted and the Job fails
    c.create(JOBS, &job("slow", json!({"activeDeadlineSeconds": 2}))).await;
    let failed = condition(&c, "slow", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "DeadlineExceeded");
    assert_eq!(cond(&failed, "Failed")["message"], "Job was active longer than specified deadline");
    eventually(WAIT, "slow's pods gone", || async { pods_of(&c, "slow").await.is_empty().then_some(()) }).await;

    // suspend: no pods until resumed
    c.create(JOBS, &job("later", json!({"suspend": true}))).await;
    let j = condition(&c, "later", "Suspended").await;
    assert_eq!(cond(&j, "Suspended")["reason"], "JobSuspended");
    assert!(pods_of(&c, "later").await.is_empty());
    let resume = json!({"spec": {"suspend": false}});
    let (s, body) = c.patch(&format!("{JOBS}/later"), "application/merge-patch+json", &resume).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    running_pods(&c, "later", 1).await;
    let j = c.must_get(&format!("{JOBS}/later")).await;
    assert_eq!(cond(&j, "Suspended")["status"], "False");
    assert_eq!(cond(&j, "Suspended")["reason"], "JobResumed");
}

#[tokio::test]
async fn indexed_jobs_and_pod_failure_policy() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=job"]).await;

    c.create(JOBS, &job("idx", json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}))).await;
    let names = running_pods(&c, "idx", 3).await;
    let mut by_index = std::collections::BTreeMap::new();
    for n in &names {
        let p = c.must_get(&format!("/api/v1/namespaces/default/pods/{n}")).await;
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap().to_string();
        assert_eq!(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"], i.as_str());
        assert_eq!(p["spec"]["hostname"], format!("idx-{i}"));
        assert!(n.starts_with(&format!("idx-{i}-")), "{n}");
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        by_index.insert(i, n.clone());
    }
    assert_eq!(by_index.keys().cloned().collect::<Vec<_>>(), ["0", "1", "2"]);
    set_pod_phase(&c, "default", &by_index["0"], "Succeeded").await;
    set_pod_phase(&c, "default", &by_index["2"], "Succeeded").await;
    eventually(WAIT, "completedIndexes 0,2", || async {
        let j = c.must_get(&format!("{JOBS}/idx")).await;
        (j["status"]["completedIndexes"] == "0,2" && j["status"]["succeeded"] == 2).then_some(())
    })
    .await;
    set_pod_phase(&c, "default", &by_index["1"], "Failed").await;
    let again = eventually(WAIT, "index 1 again", || async {
        running(&pods_of(&c, "idx").await).into_iter().find(|n| n.starts_with("idx-1-") && *n != by_index["1"])
    })
    .await;
    set_pod_phase(&c, "default", &again, "Succeeded").await;
    let done = condition(&c, "idx", "Complete").await;
    assert_eq!(done["status"]["completedIndexes"], "0-2");
    assert_eq!(done["status"]["failed"], 1);

    // podFailurePolicy: a disruption is ignored (not counted, replaced at once), exit code 1 fails the Job
    let policy = json!({"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1]}},
    ]});
    c.create(JOBS, &job("strict", json!({"backoffLimit": 6, "podFailurePolicy": policy}))).await;
    let p = running_pods(&c, "strict", 1).await;
    let disrupted = json!({"status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}});
    let path = format!("/api/v1/namespaces/default/pods/{}/status", p[0]);
    let (s, body) = c.patch(&path, "application/merge-patch+json", &disrupted).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let p2 = eventually(WAIT, "a replacement pod", || async {
        running(&pods_of(&c, "strict").await).into_iter().find(|n| *n != p[0])
    })
    .await;
    let j = c.must_get(&format!("{JOBS}/strict")).await;
    assert!(j["status"]["failed"].as_i64().unwrap_or(0) == 0, "{j:#}");
    set_pod_phase(&c, "default", &p2, "Failed").await;
    let failed = condition(&c, "strict", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "PodFailurePolicy");
    let message = cond(&failed, "Failed")["message"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        format!("Container main for pod default/{p2} failed with exit code 1 matching FailJob rule at index 1")
    );

    // a Job deleted in the background leaves its pods to the garbage collector, without
    // the tracking finalizer no one would remove any more
    c.create(JOBS, &job("gone", json!({}))).await;
    let p = running_pods(&c, "gone", 1).await;
    let (s, body) = c.delete_with(&format!("{JOBS}/gone"), &json!({"propagationPolicy": "Background"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    eventually(WAIT, "the orphan's finalizer removed", || async {
        let (_, pod) = c.get(&format!("/api/v1/namespaces/default/pods/{}", p[0])).await;
        pod["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty()).then_some(())
    })
    .await;

    // restartPolicy OnFailure: container restarts count towards backoffLimit
    let mut restarting = job("restarting", json!({"backoffLimit": 2}));
    restarting["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
    c.create(JOBS, &restarting).await;
    let p = running_pods(&c, "restarting", 1).await;
    let restarted = json!({"status": {"containerStatuses": [{"name": "main", "image": "busybox", "imageID": "",
        "ready": true, "started": true, "restartCount": 3, "state": {"running": {}}}]}});
    let path = format!("/api/v1/namespaces/default/pods/{}/status", p[0]);
    let (s, body) = c.patch(&path, "application/merge-patch+json", &restarted).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let failed = condition(&c, "restarting", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "BackoffLimitExceeded");

    // successPolicy: index 0 done is enough; the other pods are stopped
    let policy = json!({"rules": [{"succeededIndexes": "0"}]});
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "successPolicy": policy});
    c.create(JOBS, &job("leader", spec)).await;
    let names = running_pods(&c, "leader", 3).await;
    let leader = names.iter().find(|n| n.starts_with("leader-0-")).unwrap().clone();
    set_pod_phase(&c, "default", &leader, "Succeeded").await;
    let done = condition(&c, "leader", "Complete").await;
    assert_eq!(cond(&done, "SuccessCriteriaMet")["reason"], "SuccessPolicy");
    assert_eq!(cond(&done, "Complete")["message"], "Matched rules at index 0");
    assert_eq!(done["status"]["completedIndexes"], "0");
    assert!(running(&pods_of(&c, "leader").await).is_empty());

    // backoffLimitPerIndex 0: a failed index is not retried, the others run on, and the Job fails
    let spec = json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 0});
    c.create(JOBS, &job("per-index", spec)).await;
    let names = running_pods(&c, "per-index", 3).await;
    let pod_of = |i: usize| names.iter().find(|n| n.starts_with(&format!("per-index-{i}-"))).unwrap().clone();
    let first = c.must_get(&format!("/api/v1/namespaces/default/pods/{}", pod_of(1))).await;
    assert_eq!(first["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"], "0");
    set_pod_phase(&c, "default", &pod_of(1), "Failed").await;
    eventually(WAIT, "failedIndexes 1", || async {
        let j = c.must_get(&format!("{JOBS}/per-index")).await;
        (j["status"]["failedIndexes"] == "1").then_some(())
    })
    .await;
    set_pod_phase(&c, "default", &pod_of(0), "Succeeded").await;
    set_pod_phase(&c, "default", &pod_of(2), "Succeeded").await;
    let failed = condition(&c, "per-index", "Failed").await;
    assert_eq!(cond(&failed, "Failed")["reason"], "FailedIndexes");
    assert_eq!(failed["status"]["completedIndexes"], "0,2");
    let pods = pods_of(&c, "per-index").await;
    assert_eq!(pods.len(), 3, "index 1 was not retried");
}
