//! `ferrokube scheduler` against the real API server and etcd: nodes are plain objects
//! (status written through the status subresource, no kubelet), pods are created through
//! the API, and the real scheduler process binds them. Every wait polls with a deadline.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{Cluster, StatusCode, Value, free_port, json};

const DEADLINE: Duration = Duration::from_secs(30);

/// A running scheduler, killed on drop (its log printed if the test failed).
struct Scheduler {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- scheduler.log (tail) ----\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scheduler {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn https() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("client")
}

/// Start the scheduler and wait until its /readyz says its caches are synced.
async fn start_scheduler(c: &Cluster) -> Scheduler {
    let port = free_port();
    let kubeconfig = c.kubeconfig.display().to_string();
    let child = c.spawn_ferrokube(
        &["scheduler", "--kubeconfig", &kubeconfig, "--secure-port", &port.to_string()],
        "scheduler.log",
    );
    let mut sched = Scheduler { child, log: c.dir.path().join("scheduler.log"), port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(sched.alive(), "the scheduler exited:\n{}", c.log_tail("scheduler.log"));
        if let Ok(r) = https().get(format!("https://127.0.0.1:{port}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return sched;
        }
        assert!(Instant::now() < deadline, "the scheduler never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scheduler_get(s: &Scheduler, path: &str) -> (StatusCode, String) {
    let r = https().get(format!("https://127.0.0.1:{}{path}", s.port)).send().await.expect("scheduler endpoint");
    (r.status(), r.text().await.unwrap_or_default())
}

/// A node object, then its status (allocatable, capacity, images) through the status subresource.
async fn node(c: &Cluster, name: &str, labels: Value, spec: Value, allocatable: Value) {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    c.create(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec}),
    )
    .await;
    let status = json!({"status": {"allocatable": allocatable, "capacity": allocatable}});
    let (code, body) = c.patch(&format!("/api/v1/nodes/{name}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

fn resources(cpu: &str, memory: &str) -> Value {
    json!({"cpu": cpu, "memory": memory, "pods": "110"})
}

/// A pod with one container requesting `requests`, plus extra spec fields.
fn pod(name: &str, requests: Value, extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": requests}}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

async fn create_pod(c: &Cluster, body: Value) {
    c.create("/api/v1/namespaces/default/pods", &body).await;
}

/// Poll the pod until `done` says yes; returns it.
async fn wait_pod(c: &Cluster, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let pod = c.must_get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
        if done(&pod) {
            return pod;
        }
        assert!(Instant::now() < deadline, "pod {name} never {what}: {pod}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_bound(c: &Cluster, name: &str) -> String {
    let pod = wait_pod(c, name, "got bound", |p| p["spec"]["nodeName"].is_string()).await;
    pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string()
}

fn scheduled_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "PodScheduled")
}

/// The events.k8s.io/v1 events about a pod with this reason.
async fn events_for(c: &Cluster, pod: &str, reason: &str) -> Vec<Value> {
    let list = c.must_get("/apis/events.k8s.io/v1/namespaces/default/events").await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == pod && e["reason"] == reason)
        .cloned()
        .collect()
}

async fn wait_event(c: &Cluster, pod: &str, reason: &str) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(e) = events_for(c, pod, reason).await.pop() {
            return e;
        }
        assert!(Instant::now() < deadline, "no {reason} event for {pod}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_pods_by_resources_selectors_taints_and_host_ports() {
    let c = Cluster::start().await;
    node(&c, "small", json!({}), json!({}), resources("1", "2Gi")).await;
    node(&c, "big", json!({"disk": "ssd"}), json!({}), resources("8", "16Gi")).await;
    let taints = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
    node(&c, "gpu", json!({"accelerator": "yes"}), taints, resources("8", "16Gi")).await;
    let _s = start_scheduler(&c).await;

    // only "big" has 4 free cpus and no taint
    create_pod(&c, pod("needs-cpu", json!({"cpu": "4"}), json!({}))).await;
    // the selector names big's label
    create_pod(&c, pod("wants-ssd", json!({"cpu": "10m"}), json!({"nodeSelector": {"disk": "ssd"}}))).await;
    // the selector names the tainted node, whose taint the pod tolerates
    let tolerating = json!({
        "nodeSelector": {"accelerator": "yes"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    });
    create_pod(&c, pod("tolerates", json!({"cpu": "10m"}), tolerating)).await;
    // required affinity by node name (matchFields) keeps these two off the tainted node
    // anyway; the same host port sends them to different nodes
    let host_port = |_: ()| {
        json!({
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["small", "big"]}]}]}}},
        })
    };
    let mut hp1 = pod("port-1", json!({"cpu": "10m"}), host_port(()));
    hp1["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
    let mut hp2 = pod("port-2", json!({"cpu": "10m"}), host_port(()));
    hp2["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
    create_pod(&c, hp1).await;
    create_pod(&c, hp2).await;

    assert_eq!(wait_bound(&c, "needs-cpu").await, "big");
    assert_eq!(wait_bound(&c, "wants-ssd").await, "big");
    assert_eq!(wait_bound(&c, "tolerates").await, "gpu");
    let (p1, p2) = (wait_bound(&c, "port-1").await, wait_bound(&c, "port-2").await);
    assert_ne!(p1, p2, "two pods on one host port of one node");
    assert!(["small", "big"].contains(&p1.as_str()) && ["small", "big"].contains(&p2.as_str()));

    // the binding sets PodScheduled=True; the scheduler reports a Scheduled event
    let bound = c.must_get("/api/v1/namespaces/default/pods/needs-cpu").await;
    assert_eq!(scheduled_condition(&bound).map(|c| c["status"].clone()), Some(json!("True")), "{bound}");
    let event = wait_event(&c, "needs-cpu", "Scheduled").await;
    assert_eq!(event["note"], "Successfully assigned default/needs-cpu to big", "{event}");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reportingController"], "default-scheduler");
    assert_eq!(event["action"], "Binding");
    // the same event through core/v1
    let core = c.must_get("/api/v1/namespaces/default/events").await;
    let found = core["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["involvedObject"]["name"] == "needs-cpu" && e["reason"] == "Scheduled" && e["type"] == "Normal");
    assert!(found, "{core}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_is_reported_and_placed_when_a_node_appears() {
    let c = Cluster::start().await;
    node(&c, "n1", json!({}), json!({}), resources("1", "2Gi")).await;
    let taints = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
    node(&c, "n2", json!({}), taints.clone(), resources("4", "8Gi")).await;
    node(&c, "n3", json!({}), taints, resources("4", "8Gi")).await;
    let mut s = start_scheduler(&c).await;

    create_pod(&c, pod("too-big", json!({"cpu": "2"}), json!({}))).await;
    // pods the scheduler must leave alone or cannot place, without falling over
    create_pod(&c, pod("someone-elses", json!({}), json!({"schedulerName": "other-scheduler"}))).await;
    let impossible = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "no-such-label", "operator": "Exists"}]}]}}}});
    create_pod(&c, pod("impossible", json!({}), impossible)).await;

    let want = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}. \
                preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
                2 Preemption is not helpful for scheduling.";
    let pod = wait_pod(&c, "too-big", "got PodScheduled=False", |p| {
        scheduled_condition(p).is_some_and(|c| c["status"] == "False")
    })
    .await;
    let cond = scheduled_condition(&pod).unwrap();
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    assert_eq!(cond["message"], want, "{cond}");
    let event = wait_event(&c, "too-big", "FailedScheduling").await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], want);
    assert_eq!(event["action"], "Scheduling");
    assert_eq!(event["reportingController"], "default-scheduler");
    assert!(event["reportingInstance"].as_str().unwrap_or_default().starts_with("default-scheduler-"), "{event}");

    let impossible = wait_pod(&c, "impossible", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(
        scheduled_condition(&impossible).unwrap()["message"],
        // the taint filter runs before the affinity filter, so the tainted nodes say so
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         2 node(s) had untolerated taint {k: v}. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );

    // a node with room appears: the pod is retried and placed there
    node(&c, "n4", json!({}), json!({}), resources("4", "8Gi")).await;
    assert_eq!(wait_bound(&c, "too-big").await, "n4");
    let placed = c.must_get("/api/v1/namespaces/default/pods/too-big").await;
    assert_eq!(scheduled_condition(&placed).unwrap()["status"], "True", "{placed}");

    // the new node woke the impossible pod too: a new message in its condition, and a
    // second event (about the pod's newer version, so not the first one's series; it is
    // written before the condition)
    wait_pod(&c, "impossible", "was retried", |p| {
        scheduled_condition(p).is_some_and(|c| c["message"].as_str().unwrap_or_default().starts_with("0/4 nodes"))
    })
    .await;
    let events = events_for(&c, "impossible", "FailedScheduling").await;
    assert_eq!(events.len(), 2, "{events:?}");

    let other = c.must_get("/api/v1/namespaces/default/pods/someone-elses").await;
    assert!(other["spec"]["nodeName"].is_null() && scheduled_condition(&other).is_none(), "{other}");
    assert!(s.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_are_left_alone() {
    let c = Cluster::start().await;
    node(&c, "n", json!({}), json!({}), resources("4", "8Gi")).await;
    let _s = start_scheduler(&c).await;
    create_pod(&c, pod("gated", json!({"cpu": "1"}), json!({"schedulingGates": [{"name": "example.com/wait"}]}))).await;
    // a pod created after it is placed, so the scheduler has looked at the queue since
    create_pod(&c, pod("plain", json!({"cpu": "1"}), json!({}))).await;
    assert_eq!(wait_bound(&c, "plain").await, "n");
    let gated = c.must_get("/api/v1/namespaces/default/pods/gated").await;
    assert!(gated["spec"]["nodeName"].is_null(), "{gated}");
    let cond = scheduled_condition(&gated);
    assert!(cond.is_none_or(|c| c["reason"] != "Unschedulable"), "a gated pod is not tried: {gated}");
    // a gate cannot be added after creation, only lifted; once lifted, the pod is placed
    let path = "/api/v1/namespaces/default/pods/gated";
    let more = json!({"spec": {"schedulingGates": [{"name": "example.com/wait"}, {"name": "example.com/more"}]}});
    let (status, body) = c.patch(path, "application/merge-patch+json", &more).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("only deletion is allowed"), "{body}");
    let (status, body) =
        c.patch(path, "application/merge-patch+json", &json!({"spec": {"schedulingGates": null}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(wait_bound(&c, "gated").await, "n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pods_at_once_spread_without_overcommitting_a_node() {
    let c = Cluster::start().await;
    for name in ["a", "b", "c"] {
        node(&c, name, json!({}), json!({}), json!({"cpu": "2", "memory": "4Gi", "pods": "20"})).await;
    }
    // garbage allocatable: the scheduler counts it as nothing and carries on
    node(&c, "garbage", json!({}), json!({}), json!({"cpu": "lots", "memory": "1Qx", "pods": "110"})).await;
    let mut s = start_scheduler(&c).await;

    // 50 × 110m: 18 fit on each 2-cpu node, so 54 places for 50 pods, if nothing is double-booked
    let creates = (0..50).map(|i| {
        let body = pod(&format!("p{i}"), json!({"cpu": "110m", "memory": "10Mi"}), json!({}));
        let c = &c;
        async move { create_pod(c, body).await }
    });
    futures::future::join_all(creates).await;

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..50 {
        *per_node.entry(wait_bound(&c, &format!("p{i}")).await).or_default() += 1;
    }
    assert!(!per_node.contains_key("garbage"), "{per_node:?}");
    assert_eq!(per_node.len(), 3, "every node took some: {per_node:?}");
    for (node, n) in &per_node {
        assert!(*n <= 18, "node {node} holds {n} pods of 110m on 2 cpus: {per_node:?}");
    }

    assert!(s.alive(), "the scheduler died");
    assert_eq!(scheduler_get(&s, "/healthz").await, (StatusCode::OK, "ok".to_string()));
    let (code, metrics) = scheduler_get(&s, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    let line = "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 50";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    assert!(metrics.contains("scheduler_pending_pods{queue=\"active\"} 0"), "{metrics}");
    assert!(metrics.contains("scheduler_scheduling_attempt_duration_seconds_bucket{"), "{metrics}");
    let log = std::fs::read_to_string(c.dir.path().join("scheduler.log")).unwrap_or_default();
    assert!(log.contains("malformed quantities"), "the garbage node is reported in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_orders_the_queue_and_a_deleted_pod_makes_room() {
    let c = Cluster::start().await;
    node(&c, "only", json!({}), json!({}), resources("1", "2Gi")).await;
    // both pending before the scheduler starts, so both are in its queue when it begins:
    // the later but higher-priority pod goes first and takes the room
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "high"}, "value": 1000});
    c.create("/apis/scheduling.k8s.io/v1/priorityclasses", &class).await;
    create_pod(&c, pod("low", json!({"cpu": "600m"}), json!({}))).await;
    create_pod(&c, pod("high", json!({"cpu": "600m"}), json!({"priorityClassName": "high"}))).await;
    let _s = start_scheduler(&c).await;

    assert_eq!(wait_bound(&c, "high").await, "only");
    let low = wait_pod(&c, "low", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(scheduled_condition(&low).unwrap()["reason"], "Unschedulable", "{low}");
    assert!(low["spec"]["nodeName"].is_null());

    // the running pod goes away (at once: no kubelet here to finish a graceful
    // deletion): the waiting one is retried and fits
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/high", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(wait_bound(&c, "low").await, "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_after_an_api_server_restart() {
    let mut c = Cluster::start().await;
    node(&c, "n", json!({}), json!({}), resources("4", "8Gi")).await;
    let mut s = start_scheduler(&c).await;
    create_pod(&c, pod("before", json!({"cpu": "1"}), json!({}))).await;
    assert_eq!(wait_bound(&c, "before").await, "n");
    c.stop_server();
    c.start_server().await;
    assert!(s.alive(), "the scheduler died with the API server");
    create_pod(&c, pod("after", json!({"cpu": "1"}), json!({}))).await;
    assert_eq!(wait_bound(&c, "after").await, "n");
    // what was bound before the restart still counts: 2 more cpus fit, not 2.5
    create_pod(&c, pod("too-much", json!({"cpu": "2500m"}), json!({}))).await;
    let p = wait_pod(&c, "too-much", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let message = scheduled_condition(&p).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.starts_with("0/1 nodes are available: 1 Insufficient cpu."), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nodes_a_pod_waits_for_the_first() {
    let c = Cluster::start().await;
    let _s = start_scheduler(&c).await;
    create_pod(&c, pod("early", json!({"cpu": "100m"}), json!({}))).await;
    let p = wait_pod(&c, "early", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let cond = scheduled_condition(&p).unwrap();
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    assert_eq!(cond["message"], "no nodes available to schedule pods", "{cond}");
    node(&c, "first", json!({}), json!({}), resources("1", "1Gi")).await;
    assert_eq!(wait_bound(&c, "early").await, "first");
}

/// A pod whose volume "data" is this claim.
fn using(name: &str, claim: &str) -> Value {
    pod(
        name,
        json!({"cpu": "10m"}),
        json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}),
    )
}

/// A pod with labels (and the one-container spec of `pod`).
fn labelled_pod(name: &str, labels: Value, extra: Value) -> Value {
    let mut p = pod(name, json!({"cpu": "100m"}), extra);
    p["metadata"]["labels"] = labels;
    p
}

fn affinity_term(kind: &str, topology_key: &str, app: &str) -> Value {
    json!({"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": topology_key, "labelSelector": {"matchLabels": {"app": app}}}]}}})
}

/// Three nodes in two zones (a: z1, z2; b: z3), `kubernetes.io/hostname` set by `node`.
async fn zoned_nodes(c: &Cluster) {
    for (name, zone) in [("z1", "a"), ("z2", "a"), ("z3", "b")] {
        node(c, name, json!({"topology.kubernetes.io/zone": zone}), json!({}), resources("4", "8Gi")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_anti_affinity_spreads_replicas_and_affinity_co_locates() {
    let c = Cluster::start().await;
    zoned_nodes(&c).await;
    let _s = start_scheduler(&c).await;

    // one replica per host; the fourth has nowhere to go
    let anti = affinity_term("podAntiAffinity", "kubernetes.io/hostname", "web");
    let mut hosts = Vec::new();
    for i in 1..=3 {
        let name = format!("web-{i}");
        create_pod(&c, labelled_pod(&name, json!({"app": "web"}), anti.clone())).await;
        hosts.push(wait_bound(&c, &name).await);
    }
    hosts.sort();
    assert_eq!(hosts, ["z1", "z2", "z3"]);
    create_pod(&c, labelled_pod("web-4", json!({"app": "web"}), anti)).await;
    let p = wait_pod(&c, "web-4", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let cond = scheduled_condition(&p).unwrap();
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
        "{cond}"
    );

    // a labelled pod pinned to z3; its follower must share the host
    let pin = json!({"nodeSelector": {"kubernetes.io/hostname": "z3"}});
    create_pod(&c, labelled_pod("db", json!({"app": "db"}), pin)).await;
    assert_eq!(wait_bound(&c, "db").await, "z3");
    create_pod(&c, labelled_pod("db-client", json!({}), affinity_term("podAffinity", "kubernetes.io/hostname", "db")))
        .await;
    assert_eq!(wait_bound(&c, "db-client").await, "z3");
    // by zone: a pod wanting the zone of db (b) can only have z3 too
    create_pod(
        &c,
        labelled_pod("db-zone", json!({}), affinity_term("podAffinity", "topology.kubernetes.io/zone", "db")),
    )
    .await;
    assert_eq!(wait_bound(&c, "db-zone").await, "z3");
    // a pod that keeps "db" pods out of zone a; a second db pod with no rule of its own,
    // held to zone a by its selector, then fits nowhere (the existing pod's anti-affinity)
    let guard = affinity_term("podAntiAffinity", "topology.kubernetes.io/zone", "db");
    create_pod(
        &c,
        labelled_pod(
            "guard",
            json!({}),
            json!({"nodeSelector": {"kubernetes.io/hostname": "z1"}, "affinity": guard["affinity"]}),
        ),
    )
    .await;
    assert_eq!(wait_bound(&c, "guard").await, "z1");
    let zone_a = json!({"nodeSelector": {"topology.kubernetes.io/zone": "a"}});
    create_pod(&c, labelled_pod("db-2", json!({"app": "db"}), zone_a)).await;
    let p = wait_pod(&c, "db-2", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let message = scheduled_condition(&p).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             2 node(s) didn't satisfy existing pods anti-affinity rules."
        ),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_keeps_zones_within_max_skew() {
    let c = Cluster::start().await;
    zoned_nodes(&c).await;
    let _s = start_scheduler(&c).await;

    // zone a has two nodes, b one: with maxSkew 1 the replicas alternate zones all the same
    let spread = |extra_key: Option<(&str, Value)>| {
        let mut extra = json!({"topologySpreadConstraints": [{"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]});
        if let Some((k, v)) = extra_key {
            extra[k] = v;
        }
        extra
    };
    let zone = |node: &str| if node == "z3" { "b" } else { "a" };
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 1..=4 {
        let name = format!("s-{i}");
        create_pod(&c, labelled_pod(&name, json!({"app": "spread"}), spread(None))).await;
        *per_zone.entry(zone(&wait_bound(&c, &name).await)).or_default() += 1;
        let (a, b) = (per_zone.get("a").copied().unwrap_or(0), per_zone.get("b").copied().unwrap_or(0));
        assert!(a.abs_diff(b) <= 1, "after {name}: {per_zone:?}");
    }
    assert_eq!(per_zone, BTreeMap::from([("a", 2), ("b", 2)]));

    // zone a is full for a pod that must go there and counts zone b too
    // (nodeAffinityPolicy Ignore): 3 − 2 > 1 would follow on the third in a row
    let held = |name: &str| {
        let mut extra = spread(Some(("nodeSelector", json!({"topology.kubernetes.io/zone": "a"}))));
        extra["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
        labelled_pod(name, json!({"app": "spread"}), extra)
    };
    create_pod(&c, held("s-5")).await;
    assert_eq!(zone(&wait_bound(&c, "s-5").await), "a");
    create_pod(&c, held("s-6")).await;
    let p = wait_pod(&c, "s-6", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let cond = scheduled_condition(&p).unwrap();
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         2 node(s) didn't match pod topology spread constraints. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
         2 No preemption victims found for incoming pod.",
        "{cond}"
    );
    // a node with no zone label is not a place for a spread pod (zone a has 3, b 2: z3)
    node(&c, "bare", json!({}), json!({}), resources("4", "8Gi")).await;
    create_pod(&c, labelled_pod("s-7", json!({"app": "spread"}), spread(None))).await;
    assert_eq!(wait_bound(&c, "s-7").await, "z3");
    let pinned = spread(Some(("nodeSelector", json!({"kubernetes.io/hostname": "bare"}))));
    create_pod(&c, labelled_pod("s-8", json!({"app": "spread"}), pinned)).await;
    let p = wait_pod(&c, "s-8", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let message = scheduled_condition(&p).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), \
             3 node(s) didn't match Pod's node affinity/selector."
        ),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_claims_restrict_placement() {
    let c = Cluster::start().await;
    zoned_nodes(&c).await;
    let claim = |name: &str, mode: &str, volume: Option<&str>| {
        let mut spec = json!({"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(v) = volume {
            spec["volumeName"] = json!(v);
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    };
    // (bound claims: an unbound one without a class waits for the volume controller)
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-solo"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod"], "hostPath": {"path": "/tmp/solo"},
            "claimRef": {"namespace": "default", "name": "solo"}}});
    c.create("/api/v1/persistentvolumes", &pv).await;
    c.create("/api/v1/namespaces/default/persistentvolumeclaims", &claim("solo", "ReadWriteOncePod", Some("pv-solo")))
        .await;
    // a local volume on z2, its claim bound to it
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local-z2"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "local": {"path": "/mnt/disk"}, "claimRef": {"namespace": "default", "name": "local"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["z2"]}]}]}}}});
    c.create("/api/v1/persistentvolumes", &pv).await;
    c.create("/api/v1/namespaces/default/persistentvolumeclaims", &claim("local", "ReadWriteOnce", Some("local-z2")))
        .await;
    let _s = start_scheduler(&c).await;

    // the ReadWriteOncePod claim: the first pod has it, the second fits nowhere
    create_pod(&c, using("first", "solo")).await;
    wait_bound(&c, "first").await;
    create_pod(&c, using("second", "solo")).await;
    let p = wait_pod(&c, "second", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let cond = scheduled_condition(&p).unwrap();
    assert_eq!(cond["reason"], "Unschedulable", "{cond}");
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 3 node has pod using PersistentVolumeClaim with the same name and \
         ReadWriteOncePod access mode. preemption: 0/3 nodes are available: \
         3 No preemption victims found for incoming pod.",
        "{cond}"
    );
    // the first pod goes away: the claim is free for the second
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/first", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    wait_bound(&c, "second").await;

    // the local volume's node affinity takes both of its pods to z2
    for name in ["local-1", "local-2"] {
        create_pod(&c, using(name, "local")).await;
        assert_eq!(wait_bound(&c, name).await, "z2");
    }
    // a volume in zone b (a cloud disk, say) keeps its pod to zone b's node
    let zonal = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "disk-b", "labels": {"topology.kubernetes.io/zone": "b"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/b"},
            "claimRef": {"namespace": "default", "name": "zonal"}}});
    c.create("/api/v1/persistentvolumes", &zonal).await;
    c.create("/api/v1/namespaces/default/persistentvolumeclaims", &claim("zonal", "ReadWriteOnce", Some("disk-b")))
        .await;
    create_pod(&c, using("zonal-user", "zonal")).await;
    assert_eq!(wait_bound(&c, "zonal-user").await, "z3");

    // a claim nobody made: rejected before any node is looked at
    create_pod(&c, using("ghost", "missing")).await;
    let p = wait_pod(&c, "ghost", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(
        scheduled_condition(&p).unwrap()["message"],
        "0/3 nodes are available: persistentvolumeclaim \"missing\" not found. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

async fn priority_class(c: &Cluster, name: &str, value: i32, policy: &str) {
    let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value, "preemptionPolicy": policy});
    c.create("/apis/scheduling.k8s.io/v1/priorityclasses", &class).await;
}

async fn exists(c: &Cluster, name: &str) -> bool {
    let (code, _) = c.get(&format!("/api/v1/namespaces/default/pods/{name}")).await;
    code == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_the_fewest_lower_priority_pods() {
    let c = Cluster::start().await;
    node(&c, "n", json!({}), json!({}), resources("2", "4Gi")).await;
    priority_class(&c, "low", 10, "PreemptLowerPriority").await;
    priority_class(&c, "high", 1000, "PreemptLowerPriority").await;
    priority_class(&c, "high-polite", 1000, "Never").await;
    let _s = start_scheduler(&c).await;

    // four low-priority pods fill the node; with no kubelet to stop them, a grace period
    // of 0 makes their deletion final at once
    let lows = ["low-0", "low-1", "low-2", "low-3"];
    for name in lows {
        let extra = json!({"priorityClassName": "low", "terminationGracePeriodSeconds": 0});
        create_pod(&c, pod(name, json!({"cpu": "500m"}), extra)).await;
        assert_eq!(wait_bound(&c, name).await, "n");
    }

    // preemptionPolicy Never: the pod waits and nobody is evicted
    create_pod(&c, pod("polite", json!({"cpu": "1"}), json!({"priorityClassName": "high-polite"}))).await;
    let p = wait_pod(&c, "polite", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(
        scheduled_condition(&p).unwrap()["message"],
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
        "{p}"
    );
    for name in lows {
        assert!(exists(&c, name).await, "{name} was evicted for a pod that may not preempt");
    }
    // it is not retried for ever: out of the way, so the next pod's room is clear
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/polite", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // one cpu for a high-priority pod: two of the four must go, not more
    create_pod(&c, pod("urgent", json!({"cpu": "1"}), json!({"priorityClassName": "high"}))).await;
    assert_eq!(wait_bound(&c, "urgent").await, "n");
    let mut left = Vec::new();
    for name in lows {
        if exists(&c, name).await {
            left.push(name);
        }
    }
    assert_eq!(left.len(), 2, "left: {left:?}");
    let urgent = c.must_get("/api/v1/namespaces/default/pods/urgent").await;
    let uid = urgent["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    for victim in lows.iter().filter(|n| !left.contains(n)) {
        let e = wait_event(&c, victim, "Preempted").await;
        assert_eq!(e["note"], format!("Preempted by pod {uid} on node n"), "{e}");
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["action"], "Preempting");
        assert_eq!(e["related"]["name"], "urgent", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemptor_waits_on_its_nominated_node_for_terminating_victims() {
    let c = Cluster::start().await;
    node(&c, "a", json!({}), json!({}), resources("2", "4Gi")).await;
    node(&c, "b", json!({}), json!({}), resources("3", "4Gi")).await;
    priority_class(&c, "low", 10, "PreemptLowerPriority").await;
    priority_class(&c, "high", 1000, "PreemptLowerPriority").await;
    let _s = start_scheduler(&c).await;
    let on_b = |class: &str| json!({"priorityClassName": class, "nodeSelector": {"kubernetes.io/hostname": "b"}});

    // the victim keeps the default grace period: with no kubelet it stays Terminating
    create_pod(&c, pod("slow", json!({"cpu": "2"}), on_b("low"))).await;
    assert_eq!(wait_bound(&c, "slow").await, "b");
    create_pod(&c, pod("urgent", json!({"cpu": "3"}), on_b("high"))).await;

    // the preemptor is nominated to b, the victim marked and being deleted
    let p = wait_pod(&c, "urgent", "got nominated", |p| p["status"]["nominatedNodeName"] == "b").await;
    let message = scheduled_condition(&p).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."
        ),
        "{p}"
    );
    let slow =
        wait_pod(&c, "slow", "got a deletionTimestamp", |p| p["metadata"]["deletionTimestamp"].is_string()).await;
    let target =
        slow["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "DisruptionTarget");
    let target = target.unwrap_or_else(|| panic!("no DisruptionTarget condition: {slow}"));
    assert_eq!(target["status"], "True");
    assert_eq!(target["reason"], "PreemptionByScheduler");
    assert_eq!(target["message"], "default-scheduler: preempting to accommodate a higher priority pod");

    // b has a free cpu, but the nominated pod claims all of b: a lower-priority pod may
    // not take it (it would be in the preemptor's way once the victim is gone)
    create_pod(&c, pod("filler", json!({"cpu": "1"}), on_b("low"))).await;
    let f = wait_pod(&c, "filler", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let message = scheduled_condition(&f).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."
        ),
        "{f}"
    );

    // the victim's deletion completes (as a kubelet would finish it): the preemptor binds,
    // and the lower-priority pod still has no room
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/slow", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(wait_bound(&c, "urgent").await, "b");
    let f = c.must_get("/api/v1/namespaces/default/pods/filler").await;
    assert!(f["spec"]["nodeName"].is_null(), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_service_are_spread_by_the_system_default_constraints() {
    let c = Cluster::start().await;
    // "roomy" is far larger, so the resource scores alone prefer it
    node(&c, "roomy", json!({}), json!({}), resources("64", "256Gi")).await;
    node(&c, "snug", json!({}), json!({}), resources("2", "4Gi")).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    c.create("/api/v1/namespaces/default/services", &svc).await;
    let _s = start_scheduler(&c).await;

    let on_roomy = json!({"nodeSelector": {"kubernetes.io/hostname": "roomy"}});
    for i in 0..3 {
        let name = format!("web-{i}");
        create_pod(&c, labelled_pod(&name, json!({"app": "web"}), on_roomy.clone())).await;
        assert_eq!(wait_bound(&c, &name).await, "roomy");
    }
    // a pod no workload selects: the resource scores decide
    create_pod(&c, labelled_pod("loner", json!({"app": "other"}), json!({}))).await;
    assert_eq!(wait_bound(&c, "loner").await, "roomy");
    // the Service's pod: three of its kind on roomy already, so the default hostname
    // constraint (maxSkew 3, ScheduleAnyway) outweighs the resource scores
    create_pod(&c, labelled_pod("web-3", json!({"app": "web"}), json!({}))).await;
    assert_eq!(wait_bound(&c, "web-3").await, "snug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_match_label_keys_follow_the_pods_own_labels() {
    let c = Cluster::start().await;
    zoned_nodes(&c).await;
    let _s = start_scheduler(&c).await;
    for (name, tenant, host) in [("web-t1", "t1", "z1"), ("web-t2", "t2", "z3")] {
        let pin = json!({"nodeSelector": {"kubernetes.io/hostname": host}});
        create_pod(&c, labelled_pod(name, json!({"app": "web", "tenant": tenant}), pin)).await;
        assert_eq!(wait_bound(&c, name).await, host);
    }
    // to the zone of the web pods of its own tenant (t2: zone b, z3 only)
    let mut same = affinity_term("podAffinity", "topology.kubernetes.io/zone", "web");
    same["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["matchLabelKeys"] =
        json!(["tenant"]);
    create_pod(&c, labelled_pod("cache-t2", json!({"tenant": "t2"}), same)).await;
    assert_eq!(wait_bound(&c, "cache-t2").await, "z3");
    // away from the zones of other tenants' web pods (t1's cache: not zone b)
    let mut apart = affinity_term("podAntiAffinity", "topology.kubernetes.io/zone", "web");
    apart["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["mismatchLabelKeys"] =
        json!(["tenant"]);
    let mut pod = labelled_pod("cache-t1", json!({"tenant": "t1"}), apart);
    pod["spec"]["nodeSelector"] = json!({"topology.kubernetes.io/zone": "b"});
    create_pod(&c, pod).await;
    let p = wait_pod(&c, "cache-t1", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let message = scheduled_condition(&p).unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(
            "0/3 nodes are available: 1 node(s) didn't match pod anti-affinity rules, \
             2 node(s) didn't match Pod's node affinity/selector."
        ),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_claims_bind_with_the_pod() {
    let c = Cluster::start().await;
    zoned_nodes(&c).await;
    let class = |name: &str, provisioner: &str, mode: &str, extra: Value| {
        let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, "volumeBindingMode": mode});
        for (k, v) in extra.as_object().into_iter().flatten() {
            sc[k] = v.clone();
        }
        sc
    };
    let zone_b = json!({"allowedTopologies": [{"matchLabelExpressions": [
        {"key": "topology.kubernetes.io/zone", "values": ["b"]}]}]});
    for sc in [
        class("local", "kubernetes.io/no-provisioner", "WaitForFirstConsumer", json!({})),
        class("dynamic", "example.com/csi", "WaitForFirstConsumer", zone_b),
        class("instant", "example.com/csi", "Immediate", json!({})),
    ] {
        c.create("/apis/storage.k8s.io/v1/storageclasses", &sc).await;
    }
    // a local volume on z2, and one too small for any claim here on z1
    let local_pv = |name: &str, host: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                "local": {"path": "/mnt/disk"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}})
    };
    c.create("/api/v1/persistentvolumes", &local_pv("pv-z2", "z2", "5Gi")).await;
    c.create("/api/v1/persistentvolumes", &local_pv("pv-z1", "z1", "100Mi")).await;
    for (name, class, size) in
        [("wait", "local", "1Gi"), ("dyn", "dynamic", "1Gi"), ("now", "instant", "1Gi"), ("huge", "local", "50Gi")]
    {
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}}}});
        c.create("/api/v1/namespaces/default/persistentvolumeclaims", &claim).await;
    }
    let _s = start_scheduler(&c).await;
    let claim_path = |name: &str| format!("/api/v1/namespaces/default/persistentvolumeclaims/{name}");
    // what the PersistentVolume controller (or a provisioner) does, which this test plays
    let bind_claim = |name: &str, volume: &str| {
        let (c, path, volume) = (&c, claim_path(name), volume.to_string());
        async move {
            let patch = json!({"spec": {"volumeName": volume}});
            let (code, body) = c.patch(&path, "application/merge-patch+json", &patch).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
    };

    // a matching local volume: the scheduler claims it for the pod, and binds the pod to
    // its node once the claim is bound
    create_pod(&c, using("local-user", "wait")).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let pv = c.must_get("/api/v1/persistentvolumes/pv-z2").await;
        if pv["spec"]["claimRef"]["name"] == "wait" {
            assert_eq!(pv["spec"]["claimRef"]["namespace"], "default", "{pv}");
            break;
        }
        assert!(Instant::now() < deadline, "the volume was never claimed: {pv}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = c.must_get("/api/v1/namespaces/default/pods/local-user").await;
    assert!(waiting["spec"]["nodeName"].is_null(), "bound before its claim: {waiting}");
    bind_claim("wait", "pv-z2").await;
    assert_eq!(wait_bound(&c, "local-user").await, "z2");

    // no volume: provisioned where the class's topology allows (zone b: z3)
    create_pod(&c, using("dyn-user", "dyn")).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let claim = c.must_get(&claim_path("dyn")).await;
        if let Some(node) = claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].as_str() {
            assert_eq!(node, "z3", "{claim}");
            break;
        }
        assert!(Instant::now() < deadline, "no node was selected for provisioning: {claim}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bind_claim("dyn", "provisioned-1").await;
    assert_eq!(wait_bound(&c, "dyn-user").await, "z3");

    // an unbound claim of an Immediate class is the controller's to bind first
    create_pod(&c, using("early", "now")).await;
    let p = wait_pod(&c, "early", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(
        scheduled_condition(&p).unwrap()["message"],
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        "{p}"
    );
    // no volume large enough, and no provisioner
    create_pod(&c, using("greedy", "huge")).await;
    let p = wait_pod(&c, "greedy", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    assert_eq!(
        scheduled_condition(&p).unwrap()["message"],
        "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to bind. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_count_in_one_event_series() {
    let c = Cluster::start().await;
    node(&c, "n", json!({}), json!({}), resources("1", "2Gi")).await;
    let _s = start_scheduler(&c).await;
    for name in ["f1", "f2"] {
        create_pod(&c, pod(name, json!({"cpu": "100m"}), json!({"terminationGracePeriodSeconds": 0}))).await;
        wait_bound(&c, name).await;
    }
    create_pod(&c, pod("big", json!({"cpu": "2"}), json!({}))).await;
    wait_pod(&c, "big", "got PodScheduled=False", |p| scheduled_condition(p).is_some()).await;
    let failed = |n: usize| {
        let c = &c;
        async move {
            let deadline = Instant::now() + DEADLINE;
            loop {
                let events = events_for(c, "big", "FailedScheduling").await;
                if events.len() >= n {
                    return events;
                }
                assert!(Instant::now() < deadline, "{n} FailedScheduling events never came: {events:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // a pod going away retries it: the pod changed since the first event (its condition),
    // so a second event; the message is the same, so the pod is not written again
    let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/f1", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let events = failed(2).await;
    let second = events.iter().max_by_key(|e| e["eventTime"].as_str().map(str::to_string)).expect("two events").clone();
    assert!(second["series"].is_null(), "{second}");
    // the next retry is the same event again: counted in the second one's series
    let (code, body) = c.delete_with("/api/v1/namespaces/default/pods/f2", &now).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = events_for(&c, "big", "FailedScheduling").await;
        let series = events.iter().find(|e| e["metadata"]["name"] == second["metadata"]["name"]);
        if let Some(e) = series.filter(|e| e["series"]["count"] == 2) {
            assert!(e["series"]["lastObservedTime"].is_string(), "{e}");
            assert_eq!(events.len(), 2, "no third event: {events:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no series: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
