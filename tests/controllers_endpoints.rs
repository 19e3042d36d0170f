//! The endpoints and EndpointSlice controllers: Services with selectors get the
//! addresses of their ready pods (pods bound and started by the test's pod driver),
//! readiness changes move addresses, deleted services lose their endpoints.

mod common;

use std::time::Duration;

use common::controllers::{PodDriver, eventually, start_controller_manager};
use common::{Cluster, KUBECTL_VERSIONS, StatusCode, Value, json};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "/api/v1/namespaces/default";

async fn web_pod(c: &Cluster, name: &str) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    c.create(&format!("{NS}/pods"), &pod).await;
}

fn addresses(ep: &Value, field: &str) -> Vec<String> {
    let subsets = ep["subsets"].as_array().cloned().unwrap_or_default();
    let mut ips: Vec<String> = subsets
        .iter()
        .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
        .map(|a| a["targetRef"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    ips.sort();
    ips
}

/// (ready pod names, not-ready pod names) over the service's slices.
async fn slice_pods(c: &Cluster, svc: &str) -> (Vec<String>, Vec<String>) {
    let path = format!(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{svc}"
    );
    let list = c.must_get(&path).await;
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for slice in list["items"].as_array().into_iter().flatten() {
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let name = e["targetRef"]["name"].as_str().unwrap_or_default().to_string();
            if e["conditions"]["ready"] == true { ready.push(name) } else { not_ready.push(name) }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

#[tokio::test]
async fn services_follow_their_pods_readiness_and_lifetime() {
    let c = Cluster::start().await;
    let _driver = PodDriver::start(&c).await;
    let _cm = start_controller_manager(&c, &["--controllers=endpoint,endpointslice,garbagecollector"]).await;
    let svc = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    });
    c.create(&format!("{NS}/services"), &svc).await;
    for name in ["web-a", "web-b", "web-c"] {
        web_pod(&c, name).await;
    }
    let ep_path = format!("{NS}/endpoints/web");
    let ep = eventually(WAIT, "three ready addresses", || async {
        let (status, ep) = c.get(&ep_path).await;
        (status == StatusCode::OK && addresses(&ep, "addresses").len() == 3).then_some(ep)
    })
    .await;
    assert_eq!(ep["metadata"]["labels"]["tier"], "front", "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0], json!({"name": "http", "port": 8080, "protocol": "TCP"}), "{ep}");
    assert!(ep["subsets"][0]["addresses"][0]["ip"].as_str().unwrap().starts_with("10.244."), "{ep}");
    eventually(WAIT, "slices with three ready endpoints", || async {
        (slice_pods(&c, "web").await.0.len() == 3).then_some(())
    })
    .await;

    // web-b turns unready: it moves to notReadyAddresses and its slice endpoint is not ready
    let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let (status, body) =
        c.patch(&format!("{NS}/pods/web-b/status"), "application/strategic-merge-patch+json", &unready).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(WAIT, "web-b not ready", || async {
        let ep = c.must_get(&ep_path).await;
        (addresses(&ep, "notReadyAddresses") == ["web-b"] && addresses(&ep, "addresses") == ["web-a", "web-c"])
            .then_some(())
    })
    .await;
    eventually(WAIT, "web-b's slice endpoint not ready", || async {
        (slice_pods(&c, "web").await == (vec!["web-a".into(), "web-c".into()], vec!["web-b".into()])).then_some(())
    })
    .await;
    for v in KUBECTL_VERSIONS {
        let out = c.kubectl_ok(v, &["get", "endpoints", "web"]);
        assert!(out.contains(":8080"), "{out}");
    }

    // a deleted pod leaves; a deleted service takes its Endpoints and (GC) slices along
    c.delete(&format!("{NS}/pods/web-a")).await;
    eventually(WAIT, "web-a gone from the endpoints", || async {
        let ep = c.must_get(&ep_path).await;
        (addresses(&ep, "addresses") == ["web-c"]).then_some(())
    })
    .await;
    c.delete(&format!("{NS}/services/web")).await;
    c.wait_gone(&ep_path).await;
    eventually(WAIT, "the slices to go", || async { (slice_pods(&c, "web").await == (vec![], vec![])).then_some(()) })
        .await;
}

#[tokio::test]
async fn endpoints_of_services_without_selectors_are_left_alone() {
    let c = Cluster::start().await;
    let _cm = start_controller_manager(&c, &["--controllers=endpoint,endpointslice"]).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"}, "spec": {"ports": [{"port": 5432}]}});
    c.create(&format!("{NS}/services"), &svc).await;
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}],
    });
    c.create(&format!("{NS}/endpoints"), &ep).await;
    // a selected service created after it is synced promptly, which shows the workers run
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}});
    c.create(&format!("{NS}/services"), &svc).await;
    eventually(WAIT, "the empty service's Endpoints", || async {
        (c.get(&format!("{NS}/endpoints/empty")).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let kept = c.must_get(&format!("{NS}/endpoints/external")).await;
    assert_eq!(kept["subsets"][0]["addresses"][0]["ip"], "192.0.2.10", "{kept}");
}
