//! The DaemonSet controller against a real API server and etcd, the real
//! controller-manager process, and the pod driver (which binds daemon pods to the node
//! their node affinity names, and starts pods on every `driver-node…`).

mod common;

use std::time::Duration;

use common::controllers::{
    DRIVER_NODE, PodDriver, events_of, eventually, set_pod_phase, start_controller_manager, wait_event,
};
use common::{Cluster, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(60);
const SETS: &str = "/apis/apps/v1/namespaces/default/daemonsets";

async fn add_node(c: &Cluster, name: &str, labels: Value, taints: Value) {
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}});
    c.create("/api/v1/nodes", &node).await;
}

fn daemonset(name: &str, spec: Value) -> Value {
    let mut ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}},
    });
    for (k, v) in spec.as_object().into_iter().flatten() {
        if k == "podSpec" {
            for (pk, pv) in v.as_object().into_iter().flatten() {
                ds["spec"]["template"]["spec"][pk] = pv.clone();
            }
        } else {
            ds["spec"][k] = v.clone();
        }
    }
    ds
}

/// The live pods of a DaemonSet as (node, pod), sorted by node.
async fn placed(c: &Cluster, app: &str) -> Vec<(String, Value)> {
    let (_, list) = c.get(&format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}")).await;
    let mut out: Vec<(String, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| (p["spec"]["nodeName"].as_str().unwrap_or_default().to_string(), p.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn wait_nodes(c: &Cluster, app: &str, nodes: &[&str]) -> Vec<Value> {
    eventually(WAIT, &format!("{app} on {nodes:?}"), || async {
        let pods = placed(c, app).await;
        let on: Vec<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
        let running = pods.iter().all(|(_, p)| p["status"]["phase"] == "Running");
        (on == nodes && running).then(|| pods.into_iter().map(|(_, p)| p).collect())
    })
    .await
}

async fn status(c: &Cluster, name: &str) -> Value {
    c.must_get(&format!("{SETS}/{name}")).await["status"].clone()
}

async fn wait_status(c: &Cluster, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, what, || async {
        let s = status(c, name).await;
        check(&s).then_some(s)
    })
    .await
}

fn hash(pod: &Value) -> String {
    pod["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or_default().to_string()
}

async fn set_image(c: &Cluster, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": image}]}}}});
    let (s, body) = c.patch(&format!("{SETS}/{name}"), "application/strategic-merge-patch+json", &patch).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn one_pod_per_eligible_node_and_rolling_updates() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    add_node(&c, "driver-node-2", json!({"disk": "ssd"}), json!([])).await;
    add_node(&c, "driver-node-3", json!({}), json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}])).await;
    let _cm = start_controller_manager(&c, &["--controllers=daemonset"]).await;

    // every node but the one with a taint the pods do not tolerate
    c.create(SETS, &daemonset("agent", json!({}))).await;
    let pods = wait_nodes(&c, "agent", &[DRIVER_NODE, "driver-node-2"]).await;
    let pod = &pods[0];
    let term =
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(term, &json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [DRIVER_NODE]}]}]));
    let tolerations: Vec<String> = pod["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
        .collect();
    for t in [
        "not-ready:NoExecute",
        "unreachable:NoExecute",
        "disk-pressure:NoSchedule",
        "memory-pressure:NoSchedule",
        "pid-pressure:NoSchedule",
        "unschedulable:NoSchedule",
    ] {
        assert!(tolerations.contains(&format!("node.kubernetes.io/{t}")), "{tolerations:?}");
    }
    assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "1");
    let first_hash = hash(pod);
    assert!(!first_hash.is_empty());
    let s = wait_status(&c, "agent", "2 available", |s| s["numberAvailable"] == 2).await;
    assert_eq!(s["desiredNumberScheduled"], 2);
    assert_eq!(s["currentNumberScheduled"], 2);
    assert_eq!(s["numberReady"], 2);
    assert_eq!(s["updatedNumberScheduled"], 2);
    assert_eq!(s["numberMisscheduled"], 0);
    assert_eq!(s["observedGeneration"], 1);
    assert!(wait_event(&c, "agent", "SuccessfulCreate").await.starts_with("Created pod: agent-"));

    // a node selector: only the ssd node, until another node gets the label
    c.create(SETS, &daemonset("ssd", json!({"podSpec": {"nodeSelector": {"disk": "ssd"}}}))).await;
    wait_nodes(&c, "ssd", &["driver-node-2"]).await;
    let label = json!({"metadata": {"labels": {"disk": "ssd"}}});
    c.patch(&format!("/api/v1/nodes/{DRIVER_NODE}"), "application/merge-patch+json", &label).await;
    wait_nodes(&c, "ssd", &[DRIVER_NODE, "driver-node-2"]).await;

    // a failed pod is replaced
    let (_, victim) = placed(&c, "ssd").await.remove(0);
    let victim = victim["metadata"]["name"].as_str().unwrap().to_string();
    set_pod_phase(&c, "default", &victim, "Failed").await;
    eventually(WAIT, "the failed pod replaced", || async {
        let pods = placed(&c, "ssd").await;
        (pods.len() == 2
            && pods.iter().all(|(_, p)| p["metadata"]["name"] != victim.as_str() && p["status"]["phase"] == "Running"))
        .then_some(())
    })
    .await;
    assert!(events_of(&c, "ssd").await.iter().any(|(r, m)| r == "FailedDaemonPod" && m.contains(&victim)));

    // a NoExecute taint the pods do not tolerate evicts them from that node
    let taint = json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}});
    c.patch("/api/v1/nodes/driver-node-2", "application/merge-patch+json", &taint).await;
    wait_nodes(&c, "agent", &[DRIVER_NODE]).await;
    wait_status(&c, "agent", "1 desired", |s| s["desiredNumberScheduled"] == 1).await;
    c.patch("/api/v1/nodes/driver-node-2", "application/merge-patch+json", &json!({"spec": {"taints": null}})).await;
    wait_nodes(&c, "agent", &[DRIVER_NODE, "driver-node-2"]).await;

    // rolling update, maxUnavailable 1: every pod replaced, a second revision
    set_image(&c, "agent", "agent:2").await;
    let pods = eventually(WAIT, "agent:2 everywhere", || async {
        let pods = placed(&c, "agent").await;
        let done = pods.len() == 2
            && pods
                .iter()
                .all(|(_, p)| p["spec"]["containers"][0]["image"] == "agent:2" && p["status"]["phase"] == "Running");
        done.then_some(pods)
    })
    .await;
    assert_ne!(hash(&pods[0].1), first_hash);
    wait_status(&c, "agent", "2 updated", |s| s["updatedNumberScheduled"] == 2 && s["numberAvailable"] == 2).await;
    let (_, revs) = c.get("/apis/apps/v1/namespaces/default/controllerrevisions?labelSelector=app%3Dagent").await;
    assert_eq!(revs["items"].as_array().unwrap().len(), 2);

    // kubectl reads the rollout from the status and the revisions, and undoes it
    let out = c.kubectl_ok("1.33", &["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = c.kubectl_ok("1.33", &["rollout", "history", "daemonset/agent"]);
    assert!(out.contains('1') && out.contains('2'), "{out}");
    c.kubectl_ok("1.33", &["rollout", "undo", "daemonset/agent"]);
    eventually(WAIT, "agent:1 again", || async {
        let pods = placed(&c, "agent").await;
        let done = pods.len() == 2
            && pods
                .iter()
                .all(|(_, p)| p["spec"]["containers"][0]["image"] == "agent:1" && p["status"]["phase"] == "Running");
        done.then_some(())
    })
    .await;
}

#[tokio::test]
async fn max_surge_keeps_every_node_available_and_on_delete_waits() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    add_node(&c, "driver-node-2", json!({}), json!([])).await;
    let _cm = start_controller_manager(&c, &["--controllers=daemonset"]).await;

    let surge = json!({"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    c.create(SETS, &daemonset("surge", surge)).await;
    wait_nodes(&c, "surge", &[DRIVER_NODE, "driver-node-2"]).await;
    wait_status(&c, "surge", "2 available", |s| s["numberAvailable"] == 2).await;
    set_image(&c, "surge", "agent:2").await;
    eventually(WAIT, "surge updated", || async {
        let s = status(&c, "surge").await;
        assert!(s["numberAvailable"].as_i64().unwrap_or(0) >= 2 || s["observedGeneration"] == 1, "{s}");
        let pods = placed(&c, "surge").await;
        let done = s["updatedNumberScheduled"] == 2
            && pods.len() == 2
            && pods.iter().all(|(_, p)| p["spec"]["containers"][0]["image"] == "agent:2");
        done.then_some(())
    })
    .await;

    // OnDelete: the template changes, the pods do not, until one is deleted
    c.create(SETS, &daemonset("manual", json!({"updateStrategy": {"type": "OnDelete"}}))).await;
    wait_nodes(&c, "manual", &[DRIVER_NODE, "driver-node-2"]).await;
    set_image(&c, "manual", "agent:2").await;
    wait_status(&c, "manual", "generation 2 seen", |s| s["observedGeneration"] == 2).await;
    let pods = placed(&c, "manual").await;
    assert!(pods.iter().all(|(_, p)| p["spec"]["containers"][0]["image"] == "agent:1"));
    let name = pods[0].1["metadata"]["name"].as_str().unwrap().to_string();
    c.delete(&format!("/api/v1/namespaces/default/pods/{name}")).await;
    eventually(WAIT, "a new pod from the new template", || async {
        let pods = placed(&c, "manual").await;
        let images: Vec<&str> =
            pods.iter().map(|(_, p)| p["spec"]["containers"][0]["image"].as_str().unwrap_or("")).collect();
        (pods.len() == 2 && images.contains(&"agent:2") && images.contains(&"agent:1")).then_some(())
    })
    .await;
    wait_status(&c, "manual", "1 updated", |s| s["updatedNumberScheduled"] == 1 && s["currentNumberScheduled"] == 2)
        .await;
}

/// A Ready node with room for pods, as the scheduler needs it.
async fn ready_node(c: &Cluster, name: &str) {
    add_node(c, name, json!({"kubernetes.io/hostname": name}), json!([])).await;
    let status = json!({"status": {
        "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}],
    }});
    let (s, body) = c.patch(&format!("/api/v1/nodes/{name}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn the_scheduler_binds_daemon_pods_to_their_nodes() {
    let c = Cluster::start().await;
    for n in ["node-a", "node-b", "node-c"] {
        ready_node(&c, n).await;
    }
    let kubeconfig = c.kubeconfig.display().to_string();
    let port = common::free_port().to_string();
    let child = c.spawn_ferrokube(
        &["scheduler", "--kubeconfig", &kubeconfig, "--secure-port", &port, "--leader-elect=false"],
        "scheduler.log",
    );
    let _scheduler = common::controllers::Component { child, log: c.dir.path().join("scheduler.log"), port: 0 };
    let _cm = start_controller_manager(&c, &["--controllers=daemonset"]).await;

    c.create(SETS, &daemonset("spread", json!({}))).await;
    let pods = eventually(WAIT, "three bound daemon pods", || async {
        let pods = placed(&c, "spread").await;
        (pods.len() == 3 && pods.iter().all(|(n, _)| !n.is_empty())).then_some(pods)
    })
    .await;
    for (node, pod) in &pods {
        let pinned = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0]["values"][0];
        assert_eq!(pinned, node, "{pod}");
    }
    let nodes: Vec<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes, ["node-a", "node-b", "node-c"]);
    let s = wait_status(&c, "spread", "3 scheduled", |s| s["currentNumberScheduled"] == 3).await;
    assert_eq!((s["desiredNumberScheduled"].clone(), s["numberReady"].clone()), (json!(3), json!(0)));
}
