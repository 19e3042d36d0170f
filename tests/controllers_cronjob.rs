//! The CronJob and TTL-after-finished controllers (with the Job controller) against a
//! real API server and etcd, the real controller-manager process, and the pod driver.
//! No test waits for a minute boundary: a CronJob's `status.lastScheduleTime` is set in
//! the past so a missed time is due at once, or the schedule is `@every` seconds.

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, seconds_ago, set_pod_phase, start_controller_manager, wait_event};
use common::{Cluster, StatusCode, Value, fixture, json};

const WAIT: Duration = Duration::from_secs(60);
const CRONJOBS: &str = "/apis/batch/v1/namespaces/default/cronjobs";
const JOBS: &str = "/apis/batch/v1/namespaces/default/jobs";

fn cronjob(name: &str, schedule: &str, spec: Value) -> Value {
    let mut cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
        "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {"test.ferrokube.io/hold": "true"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
        }}}},
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        cj["spec"][k] = v.clone();
    }
    cj
}

async fn set_cron_status(c: &Cluster, name: &str, status: Value) {
    let path = format!("{CRONJOBS}/{name}/status");
    let (s, body) = c.patch(&path, "application/merge-patch+json", &json!({ "status": status })).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// The Jobs a CronJob owns, not being deleted.
async fn jobs_of(c: &Cluster, cronjob: &str) -> Vec<Value> {
    let (_, list) = c.get(JOBS).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items
        .into_iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"][0]["name"] == cronjob && j["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

async fn pods_of_job(c: &Cluster, job: &str) -> Vec<String> {
    let (_, list) =
        c.get(&format!("/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io/job-name%3D{job}")).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// An every-minute CronJob with `policy` whose active Job `<name>-old` (held Pending) is
/// from an earlier run, and whose last run was three minutes ago: a time is due now.
async fn running_earlier_job(c: &Cluster, name: &str, policy: &str) {
    let cj = c.create(CRONJOBS, &cronjob(name, "* * * * *", json!({"concurrencyPolicy": policy}))).await;
    let owner = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": name,
        "uid": cj["metadata"]["uid"], "controller": true}]);
    let mut old = cronjob(name, "", json!({}))["spec"]["jobTemplate"].clone();
    old["apiVersion"] = json!("batch/v1");
    old["kind"] = json!("Job");
    old["metadata"] = json!({"name": format!("{name}-old"), "ownerReferences": owner});
    let old = c.create(JOBS, &old).await;
    let reference = json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": "default",
        "name": format!("{name}-old"), "uid": old["metadata"]["uid"]});
    set_cron_status(c, name, json!({"active": [reference], "lastScheduleTime": seconds_ago(180)})).await;
}

#[tokio::test]
async fn the_tutorial_cronjob_runs_a_missed_schedule_and_records_success() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=job,cronjob,ttl-after-finished,garbagecollector"]).await;

    let manifest = fixture("manifests/hello-cronjob.yaml");
    c.kubectl_ok("1.33", &["apply", "-f", manifest.to_str().unwrap()]);
    // as if the last run was three minutes ago: the latest minute is due now
    set_cron_status(&c, "hello", json!({"lastScheduleTime": seconds_ago(180)})).await;
    let job = eventually(WAIT, "hello's job", || async { jobs_of(&c, "hello").await.into_iter().next() }).await;
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: i64 = name.strip_prefix("hello-").unwrap().parse().unwrap();
    let stamp =
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap().to_string();
    assert!(stamp.ends_with(":00Z"), "{stamp}");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
    let cj = eventually(WAIT, "hello's status", || async {
        let cj = c.must_get(&format!("{CRONJOBS}/hello")).await;
        (cj["status"]["active"][0]["name"] == name.as_str()).then_some(cj)
    })
    .await;
    let last = cj["status"]["lastScheduleTime"].as_str().unwrap();
    assert!(last.ends_with(":00Z"), "{last}");
    assert!(minutes > 0);
    assert_eq!(wait_event(&c, "hello", "SuccessfulCreate").await, format!("Created job {name}"));

    // the job runs (the driver) and succeeds: active empties, lastSuccessfulTime is set
    let pod = eventually(WAIT, "the job's pod", || async { pods_of_job(&c, &name).await.into_iter().next() }).await;
    set_pod_phase(&c, "default", &pod, "Succeeded").await;
    let cj = eventually(WAIT, "lastSuccessfulTime", || async {
        let cj = c.must_get(&format!("{CRONJOBS}/hello")).await;
        (cj["status"]["active"].is_null() && cj["status"]["lastSuccessfulTime"].is_string()).then_some(cj)
    })
    .await;
    assert!(cj["status"]["lastScheduleTime"].is_string());
    assert_eq!(
        wait_event(&c, "hello", "SawCompletedJob").await,
        format!("Saw completed job: {name}, condition: Complete")
    );

    // kubectl create job --from=cronjob: a Job from the template, owned by the CronJob
    c.kubectl_ok("1.33", &["create", "job", "manual", "--from=cronjob/hello"]);
    let manual = c.must_get(&format!("{JOBS}/manual")).await;
    assert_eq!(manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    let pod =
        eventually(WAIT, "the manual job's pod", || async { pods_of_job(&c, "manual").await.into_iter().next() }).await;
    set_pod_phase(&c, "default", &pod, "Succeeded").await;
    eventually(WAIT, "manual complete", || async {
        let j = c.must_get(&format!("{JOBS}/manual")).await;
        (j["status"]["succeeded"] == 1).then_some(())
    })
    .await;

    // ttlSecondsAfterFinished: a finished Job goes after its TTL
    let ttl = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "short-lived"},
        "spec": {"ttlSecondsAfterFinished": 1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    c.create(JOBS, &ttl).await;
    let pod =
        eventually(WAIT, "short-lived's pod", || async { pods_of_job(&c, "short-lived").await.into_iter().next() })
            .await;
    set_pod_phase(&c, "default", &pod, "Succeeded").await;
    c.wait_gone(&format!("{JOBS}/short-lived")).await;
}

#[tokio::test]
async fn concurrency_policies_history_limits_suspend_and_validation() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let mut cm = start_controller_manager(&c, &["--controllers=job,cronjob"]).await;

    // validation as upstream: TZ prefixes, bad fields, unknown zones
    for (schedule, zone) in
        [("TZ=UTC * * * * *", None), ("* * * *", None), ("61 * * * *", None), ("@daily", Some("Mars/Base"))]
    {
        let mut cj = cronjob("bad", schedule, json!({}));
        if let Some(z) = zone {
            cj["spec"]["timeZone"] = json!(z);
        }
        let (s, body) = c.post(CRONJOBS, &cj).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{schedule}: {body}");
    }
    c.create(CRONJOBS, &cronjob("zoned", "0 9 * * 1-5", json!({"timeZone": "Europe/Berlin", "suspend": true}))).await;

    // Forbid: a Job of an earlier time still runs, so the due time is skipped
    running_earlier_job(&c, "forbid", "Forbid").await;
    let message = wait_event(&c, "forbid", "JobAlreadyActive").await;
    assert_eq!(message, "Not starting job because prior execution is running and concurrency policy is Forbid");
    assert_eq!(jobs_of(&c, "forbid").await.len(), 1);

    // Replace: the running Job of an earlier time is deleted for the due one
    running_earlier_job(&c, "replace", "Replace").await;
    assert_eq!(wait_event(&c, "replace", "SuccessfulDelete").await, "Deleted job replace-old");
    eventually(WAIT, "the due job instead", || async {
        let jobs = jobs_of(&c, "replace").await;
        (jobs.len() == 1 && jobs[0]["metadata"]["name"] != "replace-old").then_some(())
    })
    .await;

    // history limits on a suspended CronJob whose last run is long past: nothing starts,
    // and only the newest finished Job of each kind is kept
    let limits = json!({"suspend": true, "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1});
    let cj = c.create(CRONJOBS, &cronjob("keep", "* * * * *", limits)).await;
    set_cron_status(&c, "keep", json!({"lastScheduleTime": seconds_ago(600)})).await;
    let owner = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "keep",
        "uid": cj["metadata"]["uid"], "controller": true}]);
    let finished = [
        ("keep-1", "Complete", 500),
        ("keep-2", "Complete", 400),
        ("keep-3", "Complete", 300),
        ("keep-4", "Failed", 200),
        ("keep-5", "Failed", 100),
    ];
    for (name, condition, ago) in finished {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "ownerReferences": owner},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}});
        c.create(JOBS, &job).await;
        let t = seconds_ago(ago);
        let mut conditions = vec![json!({"type": condition, "status": "True", "lastTransitionTime": t})];
        if condition == "Complete" {
            conditions.insert(0, json!({"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t}));
        } else {
            conditions.insert(0, json!({"type": "FailureTarget", "status": "True", "lastTransitionTime": t}));
        }
        let mut status = json!({"startTime": t, "conditions": conditions});
        if condition == "Complete" {
            status["completionTime"] = json!(t);
            status["succeeded"] = json!(1);
        } else {
            status["failed"] = json!(1);
        }
        let path = format!("{JOBS}/{name}/status");
        let (s, body) = c.patch(&path, "application/merge-patch+json", &json!({ "status": status })).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    eventually(WAIT, "history pruned to one of each", || async {
        let mut names: Vec<String> =
            jobs_of(&c, "keep").await.iter().map(|j| j["metadata"]["name"].as_str().unwrap().to_string()).collect();
        names.sort();
        (names == ["keep-3", "keep-5"]).then_some(())
    })
    .await;

    // a schedule stored before validation knew better (written to etcd behind the API
    // server's back) is a Warning event, not a crash; the controller goes on
    let key = "/registry/cronjobs/default/zoned";
    let (raw, _) = c.etcd_get(key).await.expect("stored");
    let text = String::from_utf8(raw).unwrap().replace("0 9 * * 1-5", "0 9 * * 8");
    let text = text.replace("\"suspend\":true", "\"suspend\":false");
    c.etcd().await.put(key, text, None).await.expect("etcd put");
    let message = wait_event(&c, "zoned", "UnparseableSchedule").await;
    assert!(message.starts_with("unparseable schedule: \"0 9 * * 8\" : "), "{message}");
    // one that parses but never comes (30 February) is an InvalidSchedule Warning event
    c.create(CRONJOBS, &cronjob("never", "0 0 30 2 *", json!({}))).await;
    let message = wait_event(&c, "never", "InvalidSchedule").await;
    assert!(message.starts_with("invalid schedule: 0 0 30 2 * : "), "{message}");
    assert!(cm.alive(), "the controller-manager exited");
}
