//! The ReplicaSet, ReplicationController and Deployment controllers (issue 7), run as
//! the real `ferrokube controller-manager` against a real API server and etcd; the pod
//! driver stands in for the scheduler and kubelet (pods annotated
//! `test.ferrokube.io/hold: "true"` stay Pending and unready).

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, start_controller_manager};
use common::{Cluster, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(60);
const RS_PATH: &str = "/apis/apps/v1/namespaces/default/replicasets";
const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods";

async fn start() -> (Cluster, common::controllers::Component, PodDriver) {
    let c = Cluster::start().await;
    let cm = start_controller_manager(&c, &["--controllers=replicaset,replicationcontroller,deployment"]).await;
    let driver = PodDriver::start(&c).await;
    (c, cm, driver)
}

fn replica_set(name: &str, app: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    })
}

/// The pods with label `app`, not being deleted.
async fn live_pods(c: &Cluster, app: &str) -> Vec<Value> {
    let (_, list) = c.get(&format!("{PODS}?labelSelector=app%3D{app}")).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn controller_of(pod: &Value) -> Option<String> {
    let refs = pod["metadata"]["ownerReferences"].as_array()?;
    refs.iter().find(|r| r["controller"] == true).map(|r| r["name"].as_str().unwrap_or_default().to_string())
}

async fn scale_rs(c: &Cluster, name: &str, replicas: i64) {
    let patch = json!({"spec": {"replicas": replicas}});
    let (s, body) = c.patch(&format!("{RS_PATH}/{name}"), "application/merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// Wait until `path`'s status has these values (and observedGeneration its generation).
async fn wait_status(c: &Cluster, path: &str, want: &[(&str, i64)]) -> Value {
    let what = format!("{path} status {want:?}");
    eventually(WAIT, &what, || async {
        let obj = c.must_get(path).await;
        let status = &obj["status"];
        let ok = want.iter().all(|(k, v)| status[*k].as_i64().unwrap_or(0) == *v)
            && status["observedGeneration"] == obj["metadata"]["generation"];
        ok.then_some(obj)
    })
    .await
}

async fn events_for(c: &Cluster, object: &str) -> Vec<(String, String)> {
    let (_, list) =
        c.get(&format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{object}")).await;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let field = |e: &Value, f: &str| e[f].as_str().unwrap_or_default().to_string();
    items.iter().map(|e| (field(e, "reason"), field(e, "message"))).collect()
}

async fn wait_event(c: &Cluster, object: &str, reason: &str, message_part: &str) {
    let what = format!("event {reason} {message_part:?} on {object}");
    eventually(WAIT, &what, || async {
        let events = events_for(c, object).await;
        events.iter().any(|(r, m)| r == reason && m.contains(message_part)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicaset_scales_up_and_down_deleting_unready_pods_first() {
    let (c, _cm, _driver) = start().await;
    c.create(RS_PATH, &replica_set("fe", "fe", 3)).await;
    let path = format!("{RS_PATH}/fe");
    wait_status(
        &c,
        &path,
        &[("replicas", 3), ("readyReplicas", 3), ("availableReplicas", 3), ("fullyLabeledReplicas", 3)],
    )
    .await;
    let pods = live_pods(&c, "fe").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p["metadata"]["generateName"], "fe-");
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!((r["kind"].as_str(), r["name"].as_str()), (Some("ReplicaSet"), Some("fe")));
        assert_eq!((&r["controller"], &r["blockOwnerDeletion"]), (&json!(true), &json!(true)));
    }
    wait_event(&c, "fe", "SuccessfulCreate", "Created pod: fe-").await;

    // two more pods that will never be ready
    let hold =
        json!({"spec": {"replicas": 5, "template": {"metadata": {"annotations": {"test.ferrokube.io/hold": "true"}}}}});
    let (s, body) = c.patch(&path, "application/merge-patch+json", &hold).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    wait_status(&c, &path, &[("replicas", 5), ("readyReplicas", 3), ("availableReplicas", 3)]).await;
    let held: Vec<String> =
        live_pods(&c, "fe").await.iter().filter(|p| p["status"]["phase"] == "Pending").map(name).collect();
    assert_eq!(held.len(), 2, "two held pods");

    scale_rs(&c, "fe", 3).await;
    wait_status(&c, &path, &[("replicas", 3), ("readyReplicas", 3)]).await;
    let left: Vec<String> = live_pods(&c, "fe").await.iter().map(name).collect();
    assert!(held.iter().all(|h| !left.contains(h)), "the unready pods {held:?} go first; left {left:?}");
    wait_event(&c, "fe", "SuccessfulDelete", &format!("Deleted pod: {}", held[0])).await;

    scale_rs(&c, "fe", 0).await;
    wait_status(&c, &path, &[("replicas", 0), ("readyReplicas", 0)]).await;
    eventually(WAIT, "no pods", || async { live_pods(&c, "fe").await.is_empty().then_some(()) }).await;
}

#[tokio::test]
async fn replicaset_adopts_orphans_releases_strays_and_leaves_others_pods() {
    let (c, _cm, _driver) = start().await;
    let mut orphan = common::pod("orphan", "busybox");
    orphan["metadata"]["labels"] = json!({"app": "ad"});
    c.create(PODS, &orphan).await;
    // controlled by someone else: never adopted, never counted
    let mut foreign = common::pod("foreign", "busybox");
    foreign["metadata"]["labels"] = json!({"app": "ad"});
    foreign["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "00000000-0000-0000-0000-000000000001",
        "controller": true,
    }]);
    c.create(PODS, &foreign).await;

    c.create(RS_PATH, &replica_set("ad", "ad", 2)).await;
    let path = format!("{RS_PATH}/ad");
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2)]).await;
    let orphan = c.must_get(&format!("{PODS}/orphan")).await;
    assert_eq!(controller_of(&orphan).as_deref(), Some("ad"), "adopted: {orphan}");
    let foreign = c.must_get(&format!("{PODS}/foreign")).await;
    assert_eq!(controller_of(&foreign).as_deref(), Some("other"));
    let owned: Vec<Value> =
        live_pods(&c, "ad").await.into_iter().filter(|p| controller_of(p).as_deref() == Some("ad")).collect();
    assert_eq!(owned.len(), 2, "the orphan plus one new pod");

    // a pod relabelled out of the selector is released and replaced
    let relabel = json!({"metadata": {"labels": {"app": "gone"}}});
    let (s, body) = c.patch(&format!("{PODS}/orphan"), "application/merge-patch+json", &relabel).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    eventually(WAIT, "the relabelled pod released", || async {
        let pod = c.must_get(&format!("{PODS}/orphan")).await;
        controller_of(&pod).is_none().then_some(())
    })
    .await;
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2)]).await;
}

#[tokio::test]
async fn replication_controller_keeps_its_replicas() {
    let (c, _cm, _driver) = start().await;
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc"},
        "spec": {
            "replicas": 2, "selector": {"app": "rc"}, "minReadySeconds": 1,
            "template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    });
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    c.create(rcs, &rc).await;
    let path = format!("{rcs}/rc");
    wait_status(&c, &path, &[("replicas", 2), ("readyReplicas", 2), ("availableReplicas", 2)]).await;
    let victim = name(&live_pods(&c, "rc").await[0]);
    c.delete(&format!("{PODS}/{victim}")).await;
    eventually(WAIT, "a replacement pod", || async {
        let pods = live_pods(&c, "rc").await;
        (pods.len() == 2 && pods.iter().all(|p| name(p) != victim)).then_some(())
    })
    .await;
    wait_event(&c, "rc", "SuccessfulCreate", "Created pod: rc-").await;
}

#[tokio::test]
async fn replicaset_reports_quota_refusals_as_replica_failure() {
    let (c, _cm, _driver) = start().await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
    c.create("/api/v1/namespaces/default/resourcequotas", &quota).await;
    c.create(RS_PATH, &replica_set("qq", "qq", 3)).await;
    let path = format!("{RS_PATH}/qq");
    let rs = eventually(WAIT, "the ReplicaFailure condition", || async {
        let rs = c.must_get(&path).await;
        let conds = rs["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conds.iter().any(|c| c["type"] == "ReplicaFailure" && c["reason"] == "FailedCreate").then_some(rs)
    })
    .await;
    assert!(rs["status"]["conditions"][0]["message"].as_str().unwrap_or_default().contains("exceeded quota"), "{rs}");
    wait_event(&c, "qq", "FailedCreate", "exceeded quota").await;
    // the quota raised: the set catches up and the condition goes
    let raise = json!({"spec": {"hard": {"pods": "10"}}});
    c.patch("/api/v1/namespaces/default/resourcequotas/q", "application/merge-patch+json", &raise).await;
    let rs = wait_status(&c, &path, &[("replicas", 3), ("readyReplicas", 3)]).await;
    assert!(rs["status"]["conditions"].is_null(), "{rs}");
}

/// `kubectl rollout status` until it succeeds (kubectl waits for the rollout itself).
fn rollout_status(c: &Cluster, deploy: &str) -> String {
    let target = format!("deployment/{deploy}");
    c.kubectl_ok("1.33", &["rollout", "status", &target, "--timeout=120s"])
}

async fn replica_sets(c: &Cluster, app: &str) -> Vec<Value> {
    let (_, list) = c.get(&format!("{RS_PATH}?labelSelector=app%3D{app}")).await;
    list["items"].as_array().cloned().unwrap_or_default()
}

fn annotation(obj: &Value, key: &str) -> String {
    obj["metadata"]["annotations"][key].as_str().unwrap_or_default().to_string()
}

fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(0)
}

fn condition(obj: &Value, type_: &str) -> Value {
    let conds = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conds.into_iter().find(|c| c["type"] == type_).unwrap_or(Value::Null)
}

async fn wait_condition(c: &Cluster, path: &str, type_: &str, status: &str, reason: &str) -> Value {
    let what = format!("{type_}={status} ({reason}) on {path}");
    eventually(WAIT, &what, || async {
        let obj = c.must_get(path).await;
        let cond = condition(&obj, type_);
        (cond["status"] == status && cond["reason"] == reason).then_some(obj)
    })
    .await
}

/// Watches availability until stopped: the least number of available pods seen, by
/// the ReplicaSets' status and by the pods themselves (ready and not terminating).
struct AvailabilityWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(i64, i64, usize)>,
}

impl AvailabilityWatch {
    fn start(c: &Cluster, app: &str) -> AvailabilityWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (http, base, app, flag) = (c.http.clone(), c.base.clone(), app.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut min_rs, mut min_pods, mut samples) = (i64::MAX, i64::MAX, 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let get = |path: String| {
                    let http = http.clone();
                    async move { http.get(path).send().await.ok()?.json::<Value>().await.ok() }
                };
                let sets = get(format!("{base}{RS_PATH}?labelSelector=app%3D{app}")).await;
                let pods = get(format!("{base}{PODS}?labelSelector=app%3D{app}")).await;
                if let (Some(sets), Some(pods)) = (sets, pods) {
                    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
                    let available: i64 =
                        items(&sets).iter().map(|rs| rs["status"]["availableReplicas"].as_i64().unwrap_or(0)).sum();
                    let ready = items(&pods)
                        .iter()
                        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                        .filter(|p| {
                            let conds = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
                            conds.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                        .count() as i64;
                    min_rs = min_rs.min(available);
                    min_pods = min_pods.min(ready);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (min_rs, min_pods, samples)
        });
        AvailabilityWatch { stop, task }
    }

    async fn finish(self) -> (i64, i64, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("watch task")
    }
}

fn manifest(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/manifests").join(name);
    let path = if path.is_file() { path } else { std::path::PathBuf::from("/work/shared/manifests").join(name) };
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_deploy_rolls_from_v1_to_v2_without_losing_availability_and_undoes() {
    let (c, _cm, _driver) = start().await;
    c.kubectl_ok("1.33", &["apply", "-f", &manifest("web-deploy.yaml")]);
    let out = rollout_status(&c, "web-deploy");
    assert!(out.contains("successfully rolled out"), "{out}");
    let path = format!("{DEPLOY_PATH}/web-deploy");
    let d = wait_status(&c, &path, &[("replicas", 5), ("updatedReplicas", 5), ("availableReplicas", 5)]).await;
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "1");
    assert_eq!(condition(&d, "Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(condition(&d, "Progressing")["reason"], "NewReplicaSetAvailable");
    let v1 = replica_sets(&c, "web").await;
    assert_eq!(v1.len(), 1);
    let hash = v1[0]["metadata"]["labels"]["pod-template-hash"].as_str().unwrap().to_string();
    assert_eq!(name(&v1[0]), format!("web-deploy-{hash}"));
    assert!(hash.chars().all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)), "{hash}");
    assert_eq!(v1[0]["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
    assert_eq!(annotation(&v1[0], "deployment.kubernetes.io/desired-replicas"), "5");
    assert_eq!(annotation(&v1[0], "deployment.kubernetes.io/max-replicas"), "6");

    let watch = AvailabilityWatch::start(&c, "web");
    c.kubectl_ok("1.33", &["set", "image", "deployment/web-deploy", "web-ctr=nginx:v2"]);
    let out = rollout_status(&c, "web-deploy");
    assert!(out.contains("successfully rolled out"), "{out}");
    let (min_rs, min_pods, samples) = watch.finish().await;
    assert!(samples > 10, "the watch sampled {samples} times");
    assert!(min_rs >= 5 && min_pods >= 5, "available dropped to {min_rs} (sets) / {min_pods} (pods)");

    let sets = replica_sets(&c, "web").await;
    assert_eq!(sets.len(), 2);
    let (old, new): (Vec<_>, Vec<_>) = sets.iter().partition(|rs| name(rs) == name(&v1[0]));
    assert_eq!((spec_replicas(old[0]), spec_replicas(new[0])), (0, 5));
    assert_eq!(annotation(new[0], "deployment.kubernetes.io/revision"), "2");
    assert_eq!(annotation(&c.must_get(&path).await, "deployment.kubernetes.io/revision"), "2");
    let new_name = name(new[0]);
    wait_event(&c, "web-deploy", "ScalingReplicaSet", &format!("Scaled up replica set {new_name} from 0 to 1")).await;
    wait_event(&c, "web-deploy", "ScalingReplicaSet", &format!("Scaled down replica set {} from 5 to 4", name(&v1[0])))
        .await;

    let history = c.kubectl_ok("1.33", &["rollout", "history", "deployment/web-deploy"]);
    let revisions: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(revisions.contains(&"1") && revisions.contains(&"2"), "{history}");

    let out = c.kubectl_ok("1.33", &["rollout", "undo", "deployment/web-deploy"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(&c, "web-deploy");
    let d = c.must_get(&path).await;
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:latest");
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "3");
    let restored = c.must_get(&format!("{RS_PATH}/{}", name(&v1[0]))).await;
    assert_eq!(annotation(&restored, "deployment.kubernetes.io/revision"), "3");
    assert_eq!(annotation(&restored, "deployment.kubernetes.io/revision-history"), "1");
    assert_eq!(replica_sets(&c, "web").await.len(), 2, "undo reuses the v1 set");
    let out = c.kubectl_ok("1.27", &["rollout", "history", "deployment/web-deploy", "--revision=3"]);
    assert!(out.contains("nginx:latest"), "{out}");
}

fn app_deployment(name: &str, replicas: i64, strategy: Value) -> Value {
    let mut d = common::deployment(name, name);
    d["spec"]["replicas"] = json!(replicas);
    d["spec"]["strategy"] = strategy;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_scale_resume_and_restart_with_kubectl() {
    let (c, _cm, _driver) = start().await;
    c.create(DEPLOY_PATH, &app_deployment("app", 3, json!({"type": "RollingUpdate"}))).await;
    rollout_status(&c, "app");
    let path = format!("{DEPLOY_PATH}/app");

    c.kubectl_ok("1.33", &["rollout", "pause", "deployment/app"]);
    wait_condition(&c, &path, "Progressing", "Unknown", "DeploymentPaused").await;
    c.kubectl_ok("1.33", &["set", "image", "deployment/app", "c=nginx:2"]);
    c.kubectl_ok("1.33", &["scale", "deployment/app", "--replicas=5"]);
    // paused: the size follows, the template does not
    wait_status(&c, &path, &[("replicas", 5), ("availableReplicas", 5)]).await;
    assert_eq!(replica_sets(&c, "app").await.len(), 1, "no rollout while paused");

    c.kubectl_ok("1.27", &["rollout", "resume", "deployment/app"]);
    rollout_status(&c, "app");
    let d = wait_status(&c, &path, &[("replicas", 5), ("updatedReplicas", 5), ("availableReplicas", 5)]).await;
    assert_eq!(annotation(&d, "deployment.kubernetes.io/revision"), "2");
    assert_eq!(replica_sets(&c, "app").await.len(), 2);

    c.kubectl_ok("1.33", &["rollout", "restart", "deployment/app"]);
    rollout_status(&c, "app");
    let sets = replica_sets(&c, "app").await;
    assert_eq!(sets.len(), 3, "restart makes a new set");
    let newest = sets.iter().find(|rs| spec_replicas(rs) == 5).expect("the new set");
    assert!(!newest["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_null());
    for pod in live_pods(&c, "app").await {
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], newest["metadata"]["labels"]["pod-template-hash"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_never_runs_old_and_new_pods_together() {
    let (c, _cm, _driver) = start().await;
    c.create(DEPLOY_PATH, &app_deployment("rec", 3, json!({"type": "Recreate"}))).await;
    rollout_status(&c, "rec");
    let old_hash = replica_sets(&c, "rec").await[0]["metadata"]["labels"]["pod-template-hash"].clone();
    let (http, base, flag) =
        (c.http.clone(), c.base.clone(), std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let stop = flag.clone();
    let mixed = tokio::spawn(async move {
        let mut mixed = false;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let url = format!("{base}{PODS}?labelSelector=app%3Drec");
            if let Ok(r) = http.get(url).send().await
                && let Ok(list) = r.json::<Value>().await
            {
                let hashes: std::collections::HashSet<String> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["metadata"]["labels"]["pod-template-hash"].to_string())
                    .collect();
                mixed |= hashes.len() > 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mixed
    });
    c.kubectl_ok("1.33", &["set", "image", "deployment/rec", "c=nginx:2"]);
    rollout_status(&c, "rec");
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(!mixed.await.unwrap(), "old and new pods existed at once");
    let pods = live_pods(&c, "rec").await;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["metadata"]["labels"]["pod-template-hash"] != old_hash));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revision_history_limit_deletes_the_oldest_empty_sets() {
    let (c, _cm, _driver) = start().await;
    let mut d = app_deployment("hist", 1, json!({"type": "RollingUpdate"}));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    c.create(DEPLOY_PATH, &d).await;
    rollout_status(&c, "hist");
    for version in 2..=4 {
        c.kubectl_ok("1.33", &["set", "image", "deployment/hist", &format!("c=nginx:{version}")]);
        rollout_status(&c, "hist");
    }
    let sets = eventually(WAIT, "two sets left", || async {
        let sets = replica_sets(&c, "hist").await;
        (sets.len() == 2).then_some(sets)
    })
    .await;
    let mut revisions: Vec<String> =
        sets.iter().map(|rs| annotation(rs, "deployment.kubernetes.io/revision")).collect();
    revisions.sort();
    assert_eq!(revisions, ["3", "4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unready_pods_exceed_the_progress_deadline() {
    let (c, _cm, _driver) = start().await;
    let mut d = app_deployment("slow", 2, json!({"type": "RollingUpdate"}));
    d["spec"]["progressDeadlineSeconds"] = json!(3);
    d["spec"]["template"]["metadata"]["annotations"] = json!({"test.ferrokube.io/hold": "true"});
    c.create(DEPLOY_PATH, &d).await;
    let path = format!("{DEPLOY_PATH}/slow");
    let d = wait_condition(&c, &path, "Progressing", "False", "ProgressDeadlineExceeded").await;
    let message = condition(&d, "Progressing")["message"].as_str().unwrap_or_default().to_string();
    assert!(message.ends_with("has timed out progressing."), "{message}");
    assert_eq!(condition(&d, "Available")["reason"], "MinimumReplicasUnavailable");
    let out = c.kubectl("1.33", &["rollout", "status", "deployment/slow", "--timeout=60s"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_mid_rollout_is_proportional() {
    let (c, _cm, _driver) = start().await;
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    c.create(DEPLOY_PATH, &app_deployment("prop", 10, strategy)).await;
    rollout_status(&c, "prop");
    let v1 = name(&replica_sets(&c, "prop").await[0]);
    // v2's pods never become ready: the rollout stops at 8 old + 5 new
    let hold = json!({"spec": {"template": {"metadata": {"annotations": {"test.ferrokube.io/hold": "true"}}}}});
    let path = format!("{DEPLOY_PATH}/prop");
    c.patch(&path, "application/merge-patch+json", &hold).await;
    let sizes = |sets: &[Value]| {
        let old = sets.iter().find(|rs| name(rs) == v1).map(spec_replicas).unwrap_or(-1);
        let new = sets.iter().find(|rs| name(rs) != v1).map(spec_replicas).unwrap_or(-1);
        (old, new)
    };
    eventually(WAIT, "8 old + 5 new", || async { (sizes(&replica_sets(&c, "prop").await) == (8, 5)).then_some(()) })
        .await;
    c.kubectl_ok("1.33", &["scale", "deployment/prop", "--replicas=15"]);
    eventually(WAIT, "11 old + 7 new", || async { (sizes(&replica_sets(&c, "prop").await) == (11, 7)).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_sets_of_other_controllers_are_left_alone() {
    let (c, _cm, _driver) = start().await;
    let mut foreign = replica_set("foreign", "shared", 1);
    foreign["metadata"]["labels"] = json!({"app": "shared"});
    foreign["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "someone", "uid": "00000000-0000-0000-0000-000000000002",
        "controller": true,
    }]);
    c.create(RS_PATH, &foreign).await;
    c.create(DEPLOY_PATH, &app_deployment("shared", 2, json!({"type": "RollingUpdate"}))).await;
    rollout_status(&c, "shared");
    let foreign = c.must_get(&format!("{RS_PATH}/foreign")).await;
    assert_eq!(foreign["metadata"]["ownerReferences"][0]["name"], "someone");
    assert_eq!(spec_replicas(&foreign), 1, "not scaled by the deployment");
    let d = c.must_get(&format!("{DEPLOY_PATH}/shared")).await;
    assert_eq!(d["status"]["replicas"], 2, "the foreign set's pod is not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_pods_surface_in_the_deployment_conditions() {
    let (c, cm, _driver) = start().await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
    c.create("/api/v1/namespaces/default/resourcequotas", &quota).await;
    c.create(DEPLOY_PATH, &app_deployment("capped", 3, json!({"type": "RollingUpdate"}))).await;
    let path = format!("{DEPLOY_PATH}/capped");
    let d = wait_condition(&c, &path, "ReplicaFailure", "True", "FailedCreate").await;
    assert!(condition(&d, "ReplicaFailure")["message"].as_str().unwrap_or_default().contains("exceeded quota"), "{d}");
    wait_condition(&c, &path, "Available", "False", "MinimumReplicasUnavailable").await;
    // the one pod the quota allows is counted
    wait_status(&c, &path, &[("replicas", 1), ("updatedReplicas", 1)]).await;
    let mut cm = cm;
    assert!(cm.alive(), "the controller-manager keeps running");
}
