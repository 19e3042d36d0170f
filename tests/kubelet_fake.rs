//! `ferrokube kubelet --runtime=fake`: nodes registered and kept alive as a kubelet
//! does, pods reported Running and Ready, deletions finished; with the real scheduler
//! and controller-manager, stock kubectl sees a working cluster (no containers run).

mod common;

use std::time::Duration;

use common::controllers::{Component, eventually, start_controller_manager, start_scheduler};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, json};

const WAIT: Duration = Duration::from_secs(60);

fn start_kubelet(c: &Cluster, extra: &[&str]) -> Component {
    let kubeconfig = c.kubeconfig.display().to_string();
    let mut args = vec!["kubelet", "--kubeconfig", &kubeconfig, "--runtime=fake", "--fake-start-delay=200ms"];
    args.extend_from_slice(extra);
    Component { child: c.spawn_ferrokube(&args, "kubelet.log"), log: c.dir.path().join("kubelet.log"), port: 0 }
}

#[tokio::test]
async fn a_fake_node_runs_a_deployment_that_kubectl_sees_ready() {
    let c = Cluster::start().await;
    let _kubelet = start_kubelet(&c, &["--node-name=fake-1", "--node-lease-renew-interval=1s"]);
    for v in KUBECTL_VERSIONS {
        eventually(WAIT, "the node to be Ready", || async {
            let out = c.kubectl(v, &["get", "nodes"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines()
                .any(|l| l.starts_with("fake-1") && l.contains(" Ready ") && l.contains("v1.33.0"))
                .then_some(())
        })
        .await;
    }
    let node = c.must_get("/api/v1/nodes/fake-1").await;
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux", "{node}");
    assert_eq!(node["status"]["capacity"]["pods"], "110", "{node}");
    assert_eq!(node["status"]["nodeInfo"]["containerRuntimeVersion"], "fake://0.1.0", "{node}");
    let lease = c.must_get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fake-1").await;
    assert_eq!(lease["spec"]["holderIdentity"], "fake-1", "{lease}");
    let first = lease["spec"]["renewTime"].clone();
    eventually(WAIT, "the lease to be renewed", || async {
        let lease = c.must_get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fake-1").await;
        (lease["spec"]["renewTime"] != first).then_some(())
    })
    .await;

    let _scheduler = start_scheduler(&c).await;
    let _cm = start_controller_manager(&c, &[]).await;
    let v = "1.33";
    c.kubectl_ok(v, &["create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80"]);
    c.kubectl_ok(v, &["expose", "deployment", "web", "--port=80"]);
    let out = c.kubectl_ok(v, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = c.kubectl_ok(v, &["get", "pods", "-l", "app=web", "--no-headers"]);
    assert_eq!(pods.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{pods}");
    let wide = c.kubectl_ok(v, &["get", "pods", "-l", "app=web", "-o", "wide", "--no-headers"]);
    assert!(wide.lines().all(|l| l.contains("10.88.0.") && l.contains("fake-1")), "{wide}");
    eventually(WAIT, "three endpoints", || async {
        let ep = c.must_get("/api/v1/namespaces/default/endpoints/web").await;
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;

    // a deleted pod is finished by its kubelet and replaced by its ReplicaSet
    let victim = pods.lines().next().unwrap().split_whitespace().next().unwrap().to_string();
    c.kubectl_ok(v, &["delete", "pod", &victim, "--timeout=60s"]);
    assert_eq!(c.get(&format!("/api/v1/namespaces/default/pods/{victim}")).await.0, StatusCode::NOT_FOUND);
    let out = c.kubectl_ok(v, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[tokio::test]
async fn one_process_plays_many_nodes_with_their_pod_cidrs() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(
        &c,
        &["--controllers=nodeipam", "--allocate-node-cidrs", "--cluster-cidr=10.244.0.0/16"],
    )
    .await;
    let _kubelet = start_kubelet(&c, &["--node-name=sim", "--fake-nodes=5", "--fake-cpu=8", "--fake-memory=32Gi"]);
    let nodes = eventually(WAIT, "five nodes with pod CIDRs", || async {
        let (_, list) = c.get("/api/v1/nodes").await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let with_cidr = items.iter().filter(|n| n["spec"]["podCIDR"].is_string()).count();
        (items.len() == 5 && with_cidr == 5).then_some(items)
    })
    .await;
    let mut names: Vec<&str> = nodes.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["sim-0", "sim-1", "sim-2", "sim-3", "sim-4"]);
    assert!(nodes.iter().all(|n| n["status"]["capacity"]["cpu"] == "8"));
    // a pod bound to sim-3 gets an address of sim-3's CIDR
    let cidr = nodes.iter().find(|n| n["metadata"]["name"] == "sim-3").unwrap()["spec"]["podCIDR"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-3"},
        "spec": {"nodeName": "sim-3", "containers": [{"name": "c", "image": "busybox"}]}});
    c.create("/api/v1/namespaces/default/pods", &pod).await;
    let ip = eventually(WAIT, "the pod to run", || async {
        let pod = c.must_get("/api/v1/namespaces/default/pods/on-3").await;
        (pod["status"]["phase"] == "Running").then(|| pod["status"]["podIP"].as_str().unwrap_or_default().to_string())
    })
    .await;
    let prefix = cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "{ip} not in {cidr}");
}

/// The tutorial's database StatefulSet on a fake node: its claim gets the default class,
/// the local-path provisioner makes the volume, the binder binds it, the scheduler
/// places the pod, the fake kubelet runs it.
#[tokio::test]
async fn the_tutorial_statefulset_gets_its_volume_and_runs() {
    let c = Cluster::start().await;
    let dir = c.dir.path().join("local-path");
    let _kubelet = start_kubelet(&c, &["--node-name=fake-db"]);
    let _scheduler = start_scheduler(&c).await;
    let _cm = start_controller_manager(&c, &[&format!("--local-path-dir={}", dir.display())]).await;
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "ferrokube.io/local-path",
    });
    c.create("/apis/storage.k8s.io/v1/storageclasses", &class).await;
    let manifest = common::fixture("manifests/database-statefulset.yaml");
    c.kubectl_ok("1.33", &["apply", "-f", manifest.to_str().unwrap()]);
    let out = c.kubectl_ok("1.33", &["rollout", "status", "statefulset/database-statefulset", "--timeout=60s"]);
    assert!(out.contains("roll out complete") || out.contains("rolling update complete"), "{out}");
    let pvc = c.kubectl_ok("1.33", &["get", "pvc", "database-data-database-statefulset-0", "--no-headers"]);
    assert!(pvc.contains("Bound") && pvc.contains("standard"), "{pvc}");
    let pod = c.must_get("/api/v1/namespaces/default/pods/database-statefulset-0").await;
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(pod["spec"]["nodeName"], "fake-db", "{pod}");
}
