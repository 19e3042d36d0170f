//! Defaulting, validation and Service allocation (cluster IPs and node ports), as
//! upstream's strategies do them.

mod common;

use common::*;

const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SVCS: &str = "/api/v1/namespaces/default/services";

/// A Service on port 80 with one more `spec` field.
fn service_with(name: &str, key: &str, value: Value) -> Value {
    let mut svc = service(name, 80);
    svc["spec"][key] = value;
    svc
}

/// Pod and Deployment defaults.
#[tokio::test]
async fn defaulting() {
    let c = Cluster::start().await;

    let mut body = pod("defaults", "nginx:latest");
    body["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "pinned", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}));
    body["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "untagged", "image": "nginx"}));
    let p = c.create(PODS, &body).await;
    let spec = &p["spec"];
    assert_eq!(spec["restartPolicy"], "Always", "{spec}");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst", "{spec}");
    assert_eq!(spec["schedulerName"], "default-scheduler", "{spec}");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30, "{spec}");
    assert_eq!(spec["serviceAccountName"], "default", "{spec}");
    assert_eq!(spec["enableServiceLinks"], true, "{spec}");
    let containers = spec["containers"].as_array().unwrap();
    for (c, policy) in containers.iter().zip(["Always", "IfNotPresent", "Always"]) {
        assert_eq!(c["imagePullPolicy"], policy, "{c}");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log", "{c}");
        assert_eq!(c["terminationMessagePolicy"], "File", "{c}");
    }
    assert_eq!(containers[1]["ports"][0]["protocol"], "TCP");
    assert_eq!(p["status"]["phase"], "Pending", "{p}");
    assert_eq!(p["status"]["qosClass"], "BestEffort", "{p}");
    let tolerations = spec["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["tolerationSeconds"] == 300));
    // the defaults are stored, not only answered
    let (raw, _) = c.etcd_get("/registry/pods/default/defaults").await.unwrap();
    let stored: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(stored["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(stored["spec"]["dnsPolicy"], "ClusterFirst");
    // what the client set wins over a default
    let mut explicit = pod("explicit", "nginx:latest");
    explicit["spec"]["restartPolicy"] = json!("Never");
    explicit["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
    explicit["spec"]["terminationGracePeriodSeconds"] = json!(5);
    let p = c.create(PODS, &explicit).await;
    assert_eq!(p["spec"]["restartPolicy"], "Never");
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 5);

    let mut d = deployment("defaults", "defaults");
    d["spec"].as_object_mut().unwrap().remove("replicas");
    let d = c.create(DEPLOYS, &d).await;
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1, "{spec}");
    assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{spec}");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], "25%", "{spec}");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%", "{spec}");
    assert_eq!(spec["revisionHistoryLimit"], 10, "{spec}");
    assert_eq!(spec["progressDeadlineSeconds"], 600, "{spec}");
    let tpl = &spec["template"]["spec"];
    assert_eq!(tpl["restartPolicy"], "Always", "{tpl}");
    assert_eq!(tpl["dnsPolicy"], "ClusterFirst", "{tpl}");
    assert_eq!(tpl["containers"][0]["imagePullPolicy"], "IfNotPresent", "{tpl}");
    assert_eq!(tpl["containers"][0]["terminationMessagePath"], "/dev/termination-log", "{tpl}");
    // Recreate gets no rollingUpdate block
    let mut recreate = deployment("recreate", "recreate");
    recreate["spec"]["strategy"] = json!({"type": "Recreate"});
    let r = c.create(DEPLOYS, &recreate).await;
    assert!(r["spec"]["strategy"].get("rollingUpdate").is_none_or(Value::is_null), "{}", r["spec"]);
}

/// ClusterIPs from 10.96.0.0/12, never shared (20 concurrent creates), NodePorts in
/// 30000-32767, a requested nodePort honoured once, and deletion freeing both.
#[tokio::test]
async fn service_ip_and_node_port_allocation() {
    let c = Cluster::start().await;
    let range = |ip: &str| -> bool {
        let o: Vec<u32> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        o.len() == 4 && o[0] == 10 && (96..112).contains(&o[1])
    };

    // 20 services at once
    let cluster = &c;
    let creates: Vec<_> =
        (0..20).map(|i| async move { cluster.post(SVCS, &service(&format!("svc-{i}"), 80)).await }).collect();
    let results = futures::future::join_all(creates).await;
    let mut ips = Vec::new();
    for (status, svc) in &results {
        assert_eq!(*status, StatusCode::CREATED, "{svc}");
        let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(range(&ip), "{ip} is outside 10.96.0.0/12");
        assert_ne!(ip, "10.96.0.1", "the kubernetes service's address was handed out again");
        assert_eq!(svc["spec"]["clusterIPs"], json!([ip]));
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["sessionAffinity"], "None");
        ips.push(ip);
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "two services share a cluster IP: {ips:?}");
    let claimed = c.etcd_keys("/registry/ipaddresses/").await;
    for ip in &ips {
        assert!(claimed.contains(&format!("/registry/ipaddresses/{ip}")), "{ip} not recorded in etcd");
    }

    // an explicit clusterIP: honoured once, refused when taken or out of range
    let s = c.create(SVCS, &service_with("fixed-ip", "clusterIP", json!("10.96.100.100"))).await;
    assert_eq!(s["spec"]["clusterIP"], "10.96.100.100");
    let (status, body) = c.post(SVCS, &service_with("fixed-ip-2", "clusterIP", json!("10.96.100.100"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(c.etcd_get("/registry/services/specs/default/fixed-ip-2").await.is_none());
    let (status, body) = c.post(SVCS, &service_with("outside", "clusterIP", json!("192.168.0.10"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // the cluster IP may not change
    let mut moved = s.clone();
    moved["spec"]["clusterIP"] = json!("10.96.100.101");
    moved["spec"]["clusterIPs"] = json!(["10.96.100.101"]);
    let (status, body) = c.put(&format!("{SVCS}/fixed-ip"), &moved).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // a headless service gets no address
    let h = c.create(SVCS, &service_with("headless", "clusterIP", json!("None"))).await;
    assert_eq!(h["spec"]["clusterIP"], "None");

    // NodePort: allocated in range
    let s = c.create(SVCS, &service_with("np-auto", "type", json!("NodePort"))).await;
    let port = s["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    assert!((30000..=32767).contains(&port), "nodePort {port}");
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert!(c.etcd_get(&format!("/registry/ranges/servicenodeports/{port}")).await.is_some());

    // NodePort 31111: honoured, then refused for a second service
    let mut fixed_np = service_with("np-31111", "type", json!("NodePort"));
    fixed_np["spec"]["ports"][0]["nodePort"] = json!(31111);
    // a dry run takes nothing
    let (status, dry) = c.post(&format!("{SVCS}?dryRun=All"), &fixed_np).await;
    assert_eq!(status, StatusCode::CREATED, "{dry}");
    assert_eq!(dry["spec"]["ports"][0]["nodePort"], 31111);
    assert!(c.etcd_get("/registry/ranges/servicenodeports/31111").await.is_none(), "a dry run claimed the port");
    assert!(c.etcd_get("/registry/services/specs/default/np-31111").await.is_none(), "a dry run wrote the service");
    let s = c.create(SVCS, &fixed_np).await;
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 31111);
    let ip_31111 = s["spec"]["clusterIP"].as_str().unwrap().to_string();
    let mut clash = fixed_np.clone();
    clash["metadata"]["name"] = json!("np-clash");
    let (status, body) = c.post(SVCS, &clash).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(status_reason(status, &body), "Invalid");
    assert!(cause_fields(&body).iter().any(|f| f.contains("nodePort")), "{body}");
    assert!(c.etcd_get("/registry/services/specs/default/np-clash").await.is_none(), "the clash was written");
    // a nodePort outside the range, or on a ClusterIP service
    let mut low = fixed_np.clone();
    low["metadata"]["name"] = json!("np-low");
    low["spec"]["ports"][0]["nodePort"] = json!(80);
    assert_eq!(c.post(SVCS, &low).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let mut wrong_type = service("np-wrong-type", 80);
    wrong_type["spec"]["ports"][0]["nodePort"] = json!(31112);
    assert_eq!(c.post(SVCS, &wrong_type).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // deleting frees the IP and the port
    let (status, _) = c.delete(&format!("{SVCS}/np-31111")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(c.etcd_get("/registry/ranges/servicenodeports/31111").await.is_none(), "port key outlived the service");
    assert!(c.etcd_get(&format!("/registry/ipaddresses/{ip_31111}")).await.is_none(), "IP key outlived the service");
    let s = c.create(SVCS, &clash).await;
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 31111, "port 31111 not reusable after delete");
    let s = c.create(SVCS, &service_with("reuse-ip", "clusterIP", json!(ip_31111))).await;
    assert_eq!(s["spec"]["clusterIP"], ip_31111.as_str(), "IP not reusable after delete");

    // switching to ClusterIP releases the node port
    let mut back = c.must_get(&format!("{SVCS}/np-clash")).await;
    back["spec"]["type"] = json!("ClusterIP");
    back["spec"]["ports"][0].as_object_mut().unwrap().remove("nodePort");
    back["spec"].as_object_mut().unwrap().remove("externalTrafficPolicy");
    let (status, body) = c.put(&format!("{SVCS}/np-clash"), &back).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["spec"]["ports"][0].get("nodePort").is_none(), "{body}");
    assert!(c.etcd_get("/registry/ranges/servicenodeports/31111").await.is_none(), "port kept after type change");

    // an ExternalName service takes neither
    let en = c
        .create(
            SVCS,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                    "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        )
        .await;
    assert!(en["spec"].get("clusterIP").is_none_or(|ip| ip == "" || ip.is_null()), "{en}");
}

/// `spec.healthCheckNodePort`, as upstream: allocated from the node-port range for a
/// LoadBalancer with `externalTrafficPolicy: Local` (unique among all node ports, a
/// requested one honoured), refused on any other Service, kept across updates, released
/// when the policy goes back to Cluster and when the Service is deleted.
#[tokio::test]
async fn health_check_node_port_allocation() {
    let c = Cluster::start().await;
    let lb_local = |name: &str| {
        let mut svc = service_with(name, "type", json!("LoadBalancer"));
        svc["spec"]["externalTrafficPolicy"] = json!("Local");
        svc
    };
    let s = c.create(SVCS, &lb_local("lb-local")).await;
    let hc = s["spec"]["healthCheckNodePort"].as_u64().expect("a healthCheckNodePort");
    let np = s["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    assert!((30000..=32767).contains(&hc) && hc != np, "{s}");
    assert!(c.etcd_get(&format!("/registry/ranges/servicenodeports/{hc}")).await.is_some());
    // a Cluster-policy LoadBalancer gets none; a NodePort may not ask for one
    let cluster = c.create(SVCS, &service_with("lb-cluster", "type", json!("LoadBalancer"))).await;
    assert!(cluster["spec"].get("healthCheckNodePort").is_none(), "{cluster}");
    let mut np_hc = service_with("np-hc", "type", json!("NodePort"));
    np_hc["spec"]["healthCheckNodePort"] = json!(31500);
    let (status, body) = c.post(SVCS, &np_hc).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("spec.healthCheckNodePort: Forbidden: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"), "{body}");
    // outside the node-port range, or not a port at all: 422, nothing written
    for bad in [json!(80), json!(70000)] {
        let mut out_of_range = lb_local("lb-range");
        out_of_range["spec"]["healthCheckNodePort"] = bad;
        let (status, body) = c.post(SVCS, &out_of_range).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(cause_fields(&body).contains(&"spec.healthCheckNodePort".to_string()), "{body}");
    }
    assert!(c.etcd_get("/registry/services/specs/default/lb-range").await.is_none());
    // asked for: honoured once; a port another Service holds is refused
    let mut fixed = lb_local("lb-fixed");
    fixed["spec"]["healthCheckNodePort"] = json!(31501);
    assert_eq!(c.create(SVCS, &fixed).await["spec"]["healthCheckNodePort"], 31501);
    let mut clash = lb_local("lb-clash");
    clash["spec"]["healthCheckNodePort"] = json!(hc);
    let (status, body) = c.post(SVCS, &clash).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(cause_fields(&body).contains(&"spec.healthCheckNodePort".to_string()), "{body}");
    // kept across an update that does not mention it
    let mut relabel = c.must_get(&format!("{SVCS}/lb-local")).await;
    relabel["metadata"]["labels"] = json!({"a": "b"});
    relabel["spec"].as_object_mut().unwrap().remove("healthCheckNodePort");
    let (status, body) = c.put(&format!("{SVCS}/lb-local"), &relabel).await;
    assert_eq!((status, body["spec"]["healthCheckNodePort"].as_u64()), (StatusCode::OK, Some(hc)), "{body}");
    // back to Cluster policy: dropped and released
    let mut back = c.must_get(&format!("{SVCS}/lb-local")).await;
    back["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let (status, body) = c.put(&format!("{SVCS}/lb-local"), &back).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["spec"].get("healthCheckNodePort").is_none(), "{body}");
    assert!(c.etcd_get(&format!("/registry/ranges/servicenodeports/{hc}")).await.is_none(), "kept after the change");
    // deleting releases it
    assert_eq!(c.delete(&format!("{SVCS}/lb-fixed")).await.0, StatusCode::OK);
    assert!(c.etcd_get("/registry/ranges/servicenodeports/31501").await.is_none(), "kept after delete");
}

/// 422 Invalid with field causes for invalid names, pods without containers or images,
/// selectors that miss the template, immutable selectors and pod spec changes.
#[tokio::test]
async fn validation_rejects_invalid_objects() {
    let c = Cluster::start().await;

    // invalid names, per kind rule
    for (collection, body, name) in [
        ("/api/v1/namespaces/default/configmaps", configmap("Bad_Name", json!({})), "Bad_Name"),
        ("/api/v1/namespaces/default/configmaps", configmap(&"a".repeat(254), json!({})), "long"),
        ("/api/v1/namespaces/default/configmaps", configmap("-leading-dash", json!({})), "-leading-dash"),
        (SVCS, service("1starts-with-digit", 80), "1starts-with-digit"),
        (SVCS, service("has.dot", 80), "has.dot"),
        ("/api/v1/namespaces", namespace("dotted.namespace"), "dotted.namespace"),
        ("/api/v1/namespaces", namespace("UPPER"), "UPPER"),
        (PODS, pod("Pod", "nginx"), "Pod"),
    ] {
        let (status, resp) = c.post(collection, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{collection} name {name}: {resp}");
        assert_eq!(status_reason(status, &resp), "Invalid");
        assert_eq!(cause_fields(&resp), ["metadata.name"], "{resp}");
        let cause = &resp["details"]["causes"][0];
        assert_eq!(cause["reason"], "FieldValueInvalid", "{resp}");
        assert!(resp["message"].as_str().unwrap().contains("is invalid"), "{resp}");
    }
    // (the root CA bundle the server publishes in every namespace aside)
    let mut written = c.etcd_keys("/registry/configmaps/").await;
    written.retain(|k| !k.ends_with("/kube-root-ca.crt"));
    assert!(written.is_empty(), "an invalid object was written: {written:?}");
    assert!(c.etcd_get("/registry/namespaces/UPPER").await.is_none());

    // bad labels
    let mut bad_label = configmap("bad-label", json!({}));
    bad_label["metadata"]["labels"] = json!({"a b": "c", "ok": "not ok!"});
    let (status, resp) = c.post("/api/v1/namespaces/default/configmaps", &bad_label).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["metadata.labels", "metadata.labels"], "{resp}");
    // bad configmap keys
    let (status, resp) =
        c.post("/api/v1/namespaces/default/configmaps", &configmap("bad-key", json!({"a/b": "x"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");

    // pods: no containers, no image, duplicate names, bad restart policy
    let no_containers =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}});
    let (status, resp) = c.post(PODS, &no_containers).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.containers"], "{resp}");
    assert_eq!(resp["details"]["causes"][0]["reason"], "FieldValueRequired");
    let no_spec = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nospec"}});
    assert_eq!(c.post(PODS, &no_spec).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let no_image = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "noimage"},
                          "spec": {"containers": [{"name": "c"}]}});
    let (status, resp) = c.post(PODS, &no_image).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.containers[0].image"], "{resp}");
    let dup = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dup"},
                     "spec": {"containers": [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]}});
    let (status, resp) = c.post(PODS, &dup).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.containers[1].name"], "{resp}");
    let mut bad_restart = pod("bad-restart", "nginx");
    bad_restart["spec"]["restartPolicy"] = json!("Sometimes");
    let (status, resp) = c.post(PODS, &bad_restart).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(resp["details"]["causes"][0]["reason"], "FieldValueNotSupported", "{resp}");
    assert!(c.etcd_keys("/registry/pods/").await.is_empty(), "an invalid pod was written");

    // deployments: selector must match the template, and is immutable
    let mut mismatch = deployment("mismatch", "one");
    mismatch["spec"]["template"]["metadata"]["labels"] = json!({"app": "two"});
    let (status, resp) = c.post(DEPLOYS, &mismatch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.template.metadata.labels"], "{resp}");
    let mut no_selector = deployment("no-selector", "x");
    no_selector["spec"].as_object_mut().unwrap().remove("selector");
    let (status, resp) = c.post(DEPLOYS, &no_selector).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert!(cause_fields(&resp).contains(&"spec.selector".to_string()), "{resp}");
    let mut negative = deployment("negative", "neg");
    negative["spec"]["replicas"] = json!(-1);
    let (status, resp) = c.post(DEPLOYS, &negative).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.replicas"], "{resp}");
    assert!(c.etcd_keys("/registry/deployments/").await.is_empty());

    let d = c.create(DEPLOYS, &deployment("stable", "stable")).await;
    let mut changed = d.clone();
    changed["spec"]["selector"] = json!({"matchLabels": {"app": "stable", "extra": "x"}});
    changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "stable", "extra": "x"});
    let (status, resp) = c.put(&format!("{DEPLOYS}/stable"), &changed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.selector"], "{resp}");
    let (status, resp) = c
        .patch(
            &format!("{DEPLOYS}/stable"),
            "application/merge-patch+json",
            &json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a patch may not change the selector either: {resp}");
    assert_eq!(c.must_get(&format!("{DEPLOYS}/stable")).await["spec"]["selector"], d["spec"]["selector"]);

    // pods: only the image (and a few scheduling fields) may change
    let p = c.create(PODS, &pod("mutable", "nginx:1.25")).await;
    let mut image = p.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let (status, resp) = c.put(&format!("{PODS}/mutable"), &image).await;
    assert_eq!(status, StatusCode::OK, "changing the image is allowed: {resp}");
    let mut env = resp.clone();
    env["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    let (status, resp2) = c.put(&format!("{PODS}/mutable"), &env).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp2}");
    assert_eq!(status_reason(status, &resp2), "Invalid");
    assert_eq!(cause_fields(&resp2), ["spec"], "{resp2}");
    let mut restart = resp.clone();
    restart["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(c.put(&format!("{PODS}/mutable"), &restart).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let stored = c.must_get(&format!("{PODS}/mutable")).await;
    assert_eq!(stored["spec"]["containers"][0]["image"], "nginx:1.26");
    assert!(stored["spec"]["containers"][0].get("env").is_none());

    // jobs: restartPolicy must be OnFailure or Never; the template is immutable
    let bad_job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "always"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let (status, resp) = c.post("/apis/batch/v1/namespaces/default/jobs", &bad_job).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.template.spec.restartPolicy"], "{resp}");
    // cronjobs: the schedule must parse
    let bad_cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad-cron"},
        "spec": {"schedule": "every day", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let (status, resp) = c.post("/apis/batch/v1/namespaces/default/cronjobs", &bad_cron).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.schedule"], "{resp}");
    // services: ports required, bad type
    let no_ports = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "noports"}, "spec": {}});
    let (status, resp) = c.post(SVCS, &no_ports).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(cause_fields(&resp), ["spec.ports"], "{resp}");
    assert_eq!(
        c.post(SVCS, &service_with("badtype", "type", json!("Magic"))).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // secrets: the type is immutable
    let s = c
        .create(
            "/api/v1/namespaces/default/secrets",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "typed"}, "stringData": {"k": "v"}}),
        )
        .await;
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"]["k"], "dg==", "stringData is folded into data: {s}");
    assert!(s.get("stringData").is_none());
    let mut retyped = s.clone();
    retyped["type"] = json!("kubernetes.io/tls");
    let (status, resp) = c.put("/api/v1/namespaces/default/secrets/typed", &retyped).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    // immutable configmaps keep their data
    let mut frozen = configmap("frozen", json!({"k": "v"}));
    frozen["immutable"] = json!(true);
    let f = c.create("/api/v1/namespaces/default/configmaps", &frozen).await;
    let mut thawed = f.clone();
    thawed["data"]["k"] = json!("changed");
    let (status, resp) = c.put("/api/v1/namespaces/default/configmaps/frozen", &thawed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
}

/// Owner references must be complete, and at most one may be the controller: a
/// conflicting second controller is refused before any controller could act on it.
#[tokio::test]
async fn owner_references_are_validated() {
    let c = Cluster::start().await;
    let owner = |name: &str, uid: &str| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true});
    let mut cm = configmap("two-controllers", json!({}));
    cm["metadata"]["ownerReferences"] = json!([owner("a", "1"), owner("b", "2")]);
    let (status, body) = c.post("/api/v1/namespaces/default/configmaps", &cm).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"),
        "{message}"
    );
    let mut cm = configmap("no-uid", json!({}));
    cm["metadata"]["ownerReferences"] = json!([owner("a", "")]);
    let (status, body) = c.post("/api/v1/namespaces/default/configmaps", &cm).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(cause_fields(&body), ["metadata.ownerReferences[0].uid"], "{body}");
}
