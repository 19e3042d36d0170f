//! Stock kubectl, oldest and newest supported version, against the real server.

mod common;

use std::time::Duration;

use common::*;

/// How long to wait for kubectl get -w to print a line that must come.
const LINE_WAIT: Duration = Duration::from_secs(20);

/// `1.27` -> `1-27`, for names.
fn tag(version: &str) -> String {
    version.replace('.', "-")
}

fn lines(out: &str) -> Vec<String> {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// cluster-info, api-resources and api-versions list this server and every kind.
fn check_discovery_commands(c: &Cluster) {
    let expected: &[(&str, &str, &str)] = &[
        ("namespaces", "v1", "Namespace"),
        ("pods", "v1", "Pod"),
        ("nodes", "v1", "Node"),
        ("services", "v1", "Service"),
        ("endpoints", "v1", "Endpoints"),
        ("configmaps", "v1", "ConfigMap"),
        ("secrets", "v1", "Secret"),
        ("serviceaccounts", "v1", "ServiceAccount"),
        ("events", "v1", "Event"),
        ("persistentvolumes", "v1", "PersistentVolume"),
        ("persistentvolumeclaims", "v1", "PersistentVolumeClaim"),
        ("replicationcontrollers", "v1", "ReplicationController"),
        ("limitranges", "v1", "LimitRange"),
        ("resourcequotas", "v1", "ResourceQuota"),
        ("deployments", "apps/v1", "Deployment"),
        ("replicasets", "apps/v1", "ReplicaSet"),
        ("statefulsets", "apps/v1", "StatefulSet"),
        ("daemonsets", "apps/v1", "DaemonSet"),
        ("controllerrevisions", "apps/v1", "ControllerRevision"),
        ("jobs", "batch/v1", "Job"),
        ("cronjobs", "batch/v1", "CronJob"),
        ("leases", "coordination.k8s.io/v1", "Lease"),
        ("ingresses", "networking.k8s.io/v1", "Ingress"),
        ("events", "events.k8s.io/v1", "Event"),
    ];
    for version in KUBECTL_VERSIONS {
        let info = strip_ansi(&c.kubectl_ok(version, &["cluster-info"]));
        assert!(
            info.contains(&format!("Kubernetes control plane is running at https://127.0.0.1:{}", c.port)),
            "kubectl {version} cluster-info: {info}"
        );

        let out = c.kubectl_ok(version, &["api-resources"]);
        let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
        for (name, api_version, kind) in expected {
            let found =
                rows.iter().any(|r| r.first() == Some(name) && r.contains(api_version) && r.last() == Some(kind));
            assert!(found, "kubectl {version} api-resources lacks {name} {api_version} {kind}:\n{out}");
        }
        let pods = rows.iter().find(|r| r.first() == Some(&"pods")).unwrap();
        assert_eq!(pods, &["pods", "po", "v1", "true", "Pod"], "kubectl {version}");
        let nodes = rows.iter().find(|r| r.first() == Some(&"nodes")).unwrap();
        assert_eq!(nodes, &["nodes", "no", "v1", "false", "Node"], "kubectl {version}");
        let deploy = rows.iter().find(|r| r.first() == Some(&"deployments")).unwrap();
        assert_eq!(deploy, &["deployments", "deploy", "apps/v1", "true", "Deployment"], "kubectl {version}");
        // narrower listings
        let out = c.kubectl_ok(version, &["api-resources", "--api-group=apps", "-o", "name"]);
        assert_eq!(
            sorted(lines(&out)),
            [
                "controllerrevisions.apps",
                "daemonsets.apps",
                "deployments.apps",
                "replicasets.apps",
                "statefulsets.apps"
            ],
            "kubectl {version}"
        );
        let out = c.kubectl_ok(version, &["api-resources", "--namespaced=false", "-o", "name"]);
        let cluster_scoped = [
            "clusterrolebindings.rbac.authorization.k8s.io",
            "clusterroles.rbac.authorization.k8s.io",
            "namespaces",
            "nodes",
            "persistentvolumes",
            "priorityclasses.scheduling.k8s.io",
            "selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io",
            "storageclasses.storage.k8s.io",
            "subjectaccessreviews.authorization.k8s.io",
            "tokenreviews.authentication.k8s.io",
        ];
        assert_eq!(sorted(lines(&out)), cluster_scoped, "kubectl {version}");
        let out = c.kubectl_ok(version, &["api-resources", "--verbs=deletecollection", "-o", "name"]);
        assert!(!lines(&out).contains(&"namespaces".to_string()), "kubectl {version}: {out}");
        assert!(lines(&out).contains(&"configmaps".to_string()), "kubectl {version}: {out}");

        let out = c.kubectl_ok(version, &["api-versions"]);
        assert_eq!(
            sorted(lines(&out)),
            [
                "apps/v1",
                "authentication.k8s.io/v1",
                "authentication.k8s.io/v1beta1",
                "authorization.k8s.io/v1",
                "batch/v1",
                "coordination.k8s.io/v1",
                "discovery.k8s.io/v1",
                "events.k8s.io/v1",
                "networking.k8s.io/v1",
                "policy/v1",
                "rbac.authorization.k8s.io/v1",
                "scheduling.k8s.io/v1",
                "storage.k8s.io/v1",
                "v1"
            ],
            "kubectl {version} api-versions"
        );

        let out = c.kubectl_ok(version, &["version", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["serverVersion"]["minor"], "33", "kubectl {version}: {out}");
    }
}

/// `kubectl get pods -w` prints a pod created while it watches; the pod "existing"
/// must already be there.
async fn check_get_watch(c: &Cluster) {
    for version in KUBECTL_VERSIONS {
        let name = format!("watched-{}", tag(version));
        let watch = c.kubectl_stream(version, &["get", "pods", "-w"]);
        // the initial listing comes first: once it is printed the watch is open
        watch
            .wait_for_line("existing", LINE_WAIT)
            .unwrap_or_else(|seen| panic!("kubectl {version} get -w printed no initial list: {seen:?}"));
        c.create("/api/v1/namespaces/default/pods", &pod(&name, "nginx:1.25")).await;
        let line = watch
            .wait_for_line(&name, LINE_WAIT)
            .unwrap_or_else(|seen| panic!("kubectl {version} get -w never printed {name}: {seen:?}"));
        assert!(line.starts_with(&name), "{line}");
        drop(watch);

        // -w with -o name and a label selector
        let labelled = format!("labelled-{}", tag(version));
        let watch = c.kubectl_stream(version, &["get", "pods", "-w", "-o", "name", "-l", "watch=me"]);
        // nothing matches yet, so there is no initial line to wait for: a pod created
        // before kubectl lists shows in its list, one created after in its watch
        let mut p = pod(&labelled, "nginx:1.25");
        p["metadata"]["labels"] = json!({"watch": "me"});
        c.create("/api/v1/namespaces/default/pods", &p).await;
        let line = watch
            .wait_for_line(&labelled, LINE_WAIT)
            .unwrap_or_else(|seen| panic!("kubectl {version} get -w -l never printed {labelled}: {seen:?}"));
        assert_eq!(line.trim(), format!("pod/{labelled}"));
    }
}

/// Read-only kubectl: cluster-info, api-resources, api-versions; get in every form
/// (-A, -o wide|yaml|json|name, -l, --field-selector, --chunk-size), describe, raw GETs
/// of /api/v1/pods, and get -w printing a pod created while it watches.
#[tokio::test]
async fn kubectl_read_commands() {
    let c = Cluster::start().await;
    c.create("/api/v1/namespaces", &namespace("reads")).await;
    let pods = "/api/v1/namespaces/reads/pods";
    for (name, app) in [("p1", "web"), ("p2", "web"), ("p3", "web"), ("p4", "db"), ("p5", "db")] {
        let mut p = pod(name, "nginx:1.25");
        p["metadata"]["labels"] = json!({"app": app});
        if name == "p5" {
            p["spec"]["nodeName"] = json!("node-a");
        }
        c.create(pods, &p).await;
    }
    let mut running = c.must_get(&format!("{pods}/p4")).await;
    running["status"] = json!({"phase": "Running", "podIP": "10.244.1.4"});
    assert_eq!(c.put(&format!("{pods}/p4/status"), &running).await.0, StatusCode::OK);
    c.create("/api/v1/namespaces/default/pods", &pod("elsewhere", "nginx:1.25")).await;
    c.create("/api/v1/namespaces/reads/configmaps", &configmap("settings", json!({"a": "b"}))).await;
    let all5 = ["p1", "p2", "p3", "p4", "p5"].map(String::from).to_vec();
    let as_names = |ns: &[&str]| ns.iter().map(|n| format!("pod/{n}")).collect::<Vec<_>>();

    for version in KUBECTL_VERSIONS {
        let k = |args: &[&str]| c.kubectl_ok(version, args);

        // table
        let out = k(&["get", "pods", "-n", "reads"]);
        let rows = lines(&out);
        assert!(rows[0].starts_with("NAME"), "kubectl {version}: {out}");
        let names: Vec<String> = rows[1..].iter().map(|r| r.split_whitespace().next().unwrap().to_string()).collect();
        assert_eq!(names, all5, "kubectl {version}: {out}");
        let out = k(&["get", "po", "p1", "-n", "reads"]);
        assert_eq!(lines(&out).len(), 2, "kubectl {version}: {out}");

        // all namespaces
        let out = k(&["get", "pods", "-A"]);
        let rows = lines(&out);
        assert!(rows[0].starts_with("NAMESPACE") && rows[0].contains("NAME"), "kubectl {version}: {out}");
        assert_eq!(rows.len(), 7, "kubectl {version}: {out}");
        assert!(rows.iter().any(|r| r.starts_with("default") && r.contains("elsewhere")), "{out}");
        assert!(rows.iter().any(|r| r.starts_with("reads") && r.contains("p3")), "{out}");

        // output formats
        let out = k(&["get", "pods", "-n", "reads", "-o", "wide"]);
        assert_eq!(lines(&out).len(), 6, "kubectl {version} -o wide: {out}");
        let out = k(&["get", "pods", "-n", "reads", "-o", "json"]);
        let list: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {version} -o json: {e}: {out}"));
        assert_eq!(list["kind"], "List");
        assert_eq!(item_names(&list), all5);
        assert!(list["items"].as_array().unwrap().iter().all(|i| i["kind"] == "Pod" && i["apiVersion"] == "v1"));
        let out = k(&["get", "pods", "-n", "reads", "-o", "yaml"]);
        let list: Value =
            serde_yaml::from_str(&out).unwrap_or_else(|e| panic!("kubectl {version} -o yaml: {e}: {out}"));
        assert_eq!(item_names(&list), all5);
        let out = k(&["get", "pod", "p1", "-n", "reads", "-o", "json"]);
        let p: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(p["spec"]["containers"][0]["image"], "nginx:1.25");
        let out = k(&["get", "pods", "-n", "reads", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p1", "p2", "p3", "p4", "p5"]), "kubectl {version}");
        let out = k(&["get", "pod", "p2", "-n", "reads", "-o", "jsonpath={.metadata.labels.app}"]);
        assert_eq!(out, "web");

        // selectors
        let out = k(&["get", "pods", "-n", "reads", "-l", "app=web", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p1", "p2", "p3"]), "kubectl {version}");
        let out = k(&["get", "pods", "-n", "reads", "-l", "app in (db),app!=web", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p4", "p5"]), "kubectl {version}");
        let out = k(&["get", "pods", "-A", "-l", "!app", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["elsewhere"]), "kubectl {version}");
        let out = k(&["get", "pods", "-n", "reads", "--field-selector", "spec.nodeName=node-a", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p5"]), "kubectl {version}");
        let out = k(&["get", "pods", "-n", "reads", "--field-selector", "status.phase=Running", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p4"]), "kubectl {version}");
        let out = k(&["get", "pods", "-n", "reads", "--field-selector", "metadata.name=p3", "-o", "name"]);
        assert_eq!(lines(&out), as_names(&["p3"]), "kubectl {version}");
        let out = c.kubectl(version, &["get", "pods", "-n", "reads", "--field-selector", "spec.bogus=1"]);
        assert!(!out.status.success(), "kubectl {version}: an unsupported field selector succeeded");
        assert!(stderr(&out).contains("field label not supported"), "kubectl {version}: {}", stderr(&out));
        let out = c.kubectl(version, &["get", "pods", "-n", "reads", "-l", "app=web", "-o", "name", "--no-headers"]);
        assert!(out.status.success());

        // chunked: five objects two at a time, every page requested with limit=2
        let out = c.kubectl(version, &["get", "pods", "-n", "reads", "--chunk-size=2", "-o", "name", "-v=6"]);
        assert!(out.status.success(), "kubectl {version}: {}", stderr(&out));
        assert_eq!(lines(&String::from_utf8_lossy(&out.stdout)), as_names(&["p1", "p2", "p3", "p4", "p5"]));
        let log = stderr(&out);
        let pages = log.lines().filter(|l| l.contains("/namespaces/reads/pods?") && l.contains("limit=2")).count();
        assert_eq!(pages, 3, "kubectl {version}: expected three limit=2 requests:\n{log}");
        assert_eq!(log.matches("continue=").count(), 2, "kubectl {version}:\n{log}");
        // chunked table output too
        let out = k(&["get", "pods", "-n", "reads", "--chunk-size=2"]);
        assert_eq!(lines(&out).len(), 6, "kubectl {version}: {out}");

        // several kinds at once, and `all`
        let out = k(&["get", "pods,configmaps", "-n", "reads", "-o", "name"]);
        assert!(lines(&out).contains(&"configmap/settings".to_string()), "kubectl {version}: {out}");
        assert!(lines(&out).contains(&"pod/p1".to_string()), "kubectl {version}: {out}");
        let out = k(&["get", "all", "-n", "default", "-o", "name"]);
        assert!(lines(&out).contains(&"service/kubernetes".to_string()), "kubectl {version}: {out}");
        assert!(lines(&out).contains(&"pod/elsewhere".to_string()), "kubectl {version}: {out}");
        let out = k(&["get", "ns"]);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease", "reads"] {
            assert!(out.lines().any(|l| l.starts_with(ns)), "kubectl {version} get ns lacks {ns}: {out}");
        }

        // missing things
        let out = c.kubectl(version, &["get", "pod", "missing", "-n", "reads"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("pods \"missing\" not found"), "kubectl {version}: {}", stderr(&out));
        let out = c.kubectl(version, &["get", "widgets"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("the server doesn't have a resource type \"widgets\""), "{}", stderr(&out));
        let out = k(&["get", "pods", "-n", "kube-public"]);
        assert_eq!(out.trim(), "", "kubectl {version}: {out}");

        // describe
        let out = k(&["describe", "pod", "p5", "-n", "reads"]);
        for want in ["Name:", "p5", "Namespace:", "reads", "node-a", "Status:", "Pending", "nginx:1.25", "app=db"] {
            assert!(out.contains(want), "kubectl {version} describe pod lacks {want:?}:\n{out}");
        }
        let out = k(&["describe", "pods", "-n", "reads", "-l", "app=web"]);
        let described: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("Name:")).map(str::trim).collect();
        assert_eq!(described, ["p1", "p2", "p3"], "kubectl {version}:\n{out}");
        let out = k(&["describe", "configmap", "settings", "-n", "reads"]);
        assert!(out.contains("settings") && out.contains('a'), "kubectl {version}:\n{out}");
        let out = k(&["describe", "namespace", "reads"]);
        assert!(out.contains("Active"), "kubectl {version}:\n{out}");

        // curl-style
        let out = k(&["get", "--raw", "/api/v1/pods"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["items"].as_array().unwrap().len(), 6);
        let out = k(&["get", "--raw", "/api/v1/namespaces/reads/pods?labelSelector=app%3Ddb&limit=1"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(item_names(&list), ["p4"]);
        // as upstream, a selected list has a continue token but no remainingItemCount
        assert!(list["metadata"]["continue"].is_string(), "{list}");
        assert!(list["metadata"].get("remainingItemCount").is_none(), "{list}");
    }
    let r = c.call(Method::GET, "/api/v1/pods", Body::None, &[("accept", "application/json")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json["kind"], "PodList");
    assert_eq!(r.json["items"].as_array().unwrap().len(), 6);

    check_discovery_commands(&c);
    c.create("/api/v1/namespaces/default/pods", &pod("existing", "nginx:1.25")).await;
    check_get_watch(&c).await;
}

/// kubectl's generators: create deployment / configmap / secret generic / namespace /
/// service / job. kubectl 1.32 and later send these typed-client bodies as protobuf.
#[tokio::test]
async fn kubectl_create_generators() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let ns = format!("gen-{}", tag(version));
        let out = c.kubectl_ok(version, &["create", "namespace", &ns]);
        assert_eq!(out.trim(), format!("namespace/{ns} created"));
        assert_eq!(c.must_get(&format!("/api/v1/namespaces/{ns}")).await["status"]["phase"], "Active");

        let out =
            c.kubectl_ok(version, &["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "-n", &ns]);
        assert_eq!(out.trim(), "deployment.apps/web created");
        let d = c.must_get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/web")).await;
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");

        let out = c.kubectl_ok(
            version,
            &["create", "configmap", "cfg", "--from-literal=color=blue", "--from-literal=size=L", "-n", &ns],
        );
        assert_eq!(out.trim(), "configmap/cfg created");
        let cm = c.must_get(&format!("/api/v1/namespaces/{ns}/configmaps/cfg")).await;
        assert_eq!(cm["data"], json!({"color": "blue", "size": "L"}));

        let out = c.kubectl_ok(
            version,
            &["create", "secret", "generic", "creds", "--from-literal=password=s3cr3t", "-n", &ns],
        );
        assert_eq!(out.trim(), "secret/creds created");
        let s = c.must_get(&format!("/api/v1/namespaces/{ns}/secrets/creds")).await;
        assert_eq!(s["data"]["password"], "czNjcjN0");
        assert_eq!(s["type"], "Opaque");

        let out = c.kubectl_ok(version, &["create", "service", "clusterip", "websvc", "--tcp=80:8080", "-n", &ns]);
        assert_eq!(out.trim(), "service/websvc created");
        let out = c.kubectl_ok(version, &["create", "job", "once", "--image=busybox:1.36", "-n", &ns]);
        assert_eq!(out.trim(), "job.batch/once created");

        // dry runs write nothing
        let out =
            c.kubectl_ok(version, &["create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server", "-n", &ns]);
        assert!(out.contains("configmap/dry created"), "{out}");
        assert!(c.etcd_get(&format!("/registry/configmaps/{ns}/dry")).await.is_none());
        // and a second create is refused
        let out = c.kubectl(version, &["create", "configmap", "cfg", "--from-literal=a=b", "-n", &ns]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("already exists"), "kubectl {version}: {}", stderr(&out));
    }
}

const APP_YAML: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  labels:
    app: demo
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels:
    app: demo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: demo
  template:
    metadata:
      labels:
        app: demo
    spec:
      containers:
      - name: app
        image: nginx:1.25
        ports:
        - containerPort: 80
";

/// create -f, apply (and re-apply: unchanged), label, annotate, and delete by name,
/// by label and --all, each waiting for the deletion to finish.
#[tokio::test]
async fn kubectl_create_apply_label_annotate_delete() {
    let c = Cluster::start().await;
    // deleting the namespace at the end waits for the namespace controller
    let _cm = common::controllers::start_controller_manager(&c, &["--controllers=namespace"]).await;
    let app_file = c.dir.path().join("app.yaml");
    std::fs::write(&app_file, APP_YAML).unwrap();
    let app_file = app_file.to_str().unwrap().to_string();
    let pod_file = fixture("manifests/example-pod.yaml");
    let pod_file = pod_file.to_str().unwrap();

    for version in KUBECTL_VERSIONS {
        let ns = format!("w-{}", tag(version));
        let out = c.kubectl_stdin_ok(
            version,
            &["create", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
        );
        assert_eq!(out.trim(), format!("namespace/{ns} created"));
        let k = |args: &[&str]| {
            let mut full: Vec<&str> = args.to_vec();
            full.extend(["-n", ns.as_str()]);
            c.kubectl_ok(version, &full)
        };
        let pods = format!("/api/v1/namespaces/{ns}/pods");

        // create -f
        assert_eq!(k(&["create", "-f", pod_file]).trim(), "pod/example-pod created");
        let p = c.must_get(&format!("{pods}/example-pod")).await;
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
        let out = c.kubectl(version, &["create", "-f", pod_file, "-n", &ns]);
        assert!(!out.status.success(), "kubectl {version}: a second create -f succeeded");
        assert!(stderr(&out).contains("AlreadyExists") || stderr(&out).contains("already exists"), "{}", stderr(&out));

        // apply, then apply the same file again
        let out = k(&["apply", "-f", &app_file]);
        assert_eq!(lines(&out), ["configmap/app-config created", "deployment.apps/app created"], "kubectl {version}");
        let d = c.must_get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/app")).await;
        let last = d["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str();
        assert!(last.is_some_and(|l| l.contains("\"replicas\":2")), "no last-applied annotation: {d}");
        let rv = d["metadata"]["resourceVersion"].clone();
        let out = k(&["apply", "-f", &app_file]);
        assert_eq!(
            lines(&out),
            ["configmap/app-config unchanged", "deployment.apps/app unchanged"],
            "kubectl {version}"
        );
        let d = c.must_get(&format!("/apis/apps/v1/namespaces/{ns}/deployments/app")).await;
        assert_eq!(d["metadata"]["resourceVersion"], rv, "re-applying an unchanged file wrote the object");
        // a changed map field applies as "configured"
        let changed = c.dir.path().join(format!("app-{}.yaml", tag(version)));
        std::fs::write(&changed, APP_YAML.replace("mode: fast", "mode: slow")).unwrap();
        let out = k(&["apply", "-f", changed.to_str().unwrap()]);
        assert_eq!(
            lines(&out),
            ["configmap/app-config configured", "deployment.apps/app unchanged"],
            "kubectl {version}"
        );
        assert_eq!(c.must_get(&format!("/api/v1/namespaces/{ns}/configmaps/app-config")).await["data"]["mode"], "slow");
        // apply from stdin
        let out = c.kubectl_stdin_ok(version, &["apply", "-n", &ns, "-f", "-"], APP_YAML);
        assert_eq!(
            lines(&out),
            ["configmap/app-config configured", "deployment.apps/app unchanged"],
            "kubectl {version}"
        );

        // a typo is refused (server-side strict field validation), unless told otherwise
        let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  a: b\n";
        let out = c.kubectl_stdin(version, &["apply", "-n", &ns, "-f", "-"], typo);
        assert!(!out.status.success(), "kubectl {version}: a manifest with an unknown field applied");
        assert!(stderr(&out).contains("unknown field \"datta\""), "kubectl {version}: {}", stderr(&out));
        assert!(c.etcd_get(&format!("/registry/configmaps/{ns}/typo")).await.is_none());
        let out = c.kubectl_stdin_ok(version, &["create", "-n", &ns, "--validate=false", "-f", "-"], typo);
        assert_eq!(out.trim(), "configmap/typo created");
        k(&["delete", "cm", "typo"]);

        // replace what get -o yaml printed
        let mut exported = k(&["get", "pod", "example-pod", "-o", "yaml"]);
        exported = exported.replace("image: nginx:latest", "image: nginx:1.26");
        let out = c.kubectl_stdin_ok(version, &["replace", "-n", &ns, "-f", "-"], &exported);
        assert_eq!(out.trim(), "pod/example-pod replaced");
        let out = k(&[
            "get",
            "pods",
            "--sort-by=.metadata.name",
            "-o",
            "custom-columns=N:.metadata.name,I:.spec.containers[0].image",
        ]);
        assert_eq!(lines(&out), ["N             I", "example-pod   nginx:1.26"], "kubectl {version}");
        // a stale copy cannot be replaced
        let out = c.kubectl_stdin(version, &["replace", "-n", &ns, "-f", "-"], &exported);
        assert!(!out.status.success(), "kubectl {version}: replacing with a stale resourceVersion worked");
        assert!(stderr(&out).contains("the object has been modified"), "kubectl {version}: {}", stderr(&out));

        // label and annotate
        assert_eq!(k(&["label", "pod", "example-pod", "tier=front"]).trim(), "pod/example-pod labeled");
        assert_eq!(c.must_get(&format!("{pods}/example-pod")).await["metadata"]["labels"]["tier"], "front");
        let out = c.kubectl(version, &["label", "pod", "example-pod", "tier=back", "-n", &ns]);
        assert!(!out.status.success(), "kubectl {version}: relabelling without --overwrite succeeded");
        k(&["label", "pod", "example-pod", "tier=back", "--overwrite"]);
        assert_eq!(c.must_get(&format!("{pods}/example-pod")).await["metadata"]["labels"]["tier"], "back");
        assert_eq!(lines(&k(&["get", "pods", "-l", "tier=back", "-o", "name"])), ["pod/example-pod"]);
        k(&["label", "pod", "example-pod", "tier-"]);
        let p = c.must_get(&format!("{pods}/example-pod")).await;
        assert!(p["metadata"]["labels"].get("tier").is_none(), "{p}");
        assert_eq!(p["metadata"]["labels"]["app"], "web", "{p}");
        let out = k(&["annotate", "pod", "example-pod", "note=hello world"]);
        assert!(out.trim().starts_with("pod/example-pod annotate"), "kubectl {version}: {out}");
        let p = c.must_get(&format!("{pods}/example-pod")).await;
        assert_eq!(p["metadata"]["annotations"]["note"], "hello world");
        k(&["annotate", "pod", "example-pod", "note-"]);
        let p = c.must_get(&format!("{pods}/example-pod")).await;
        assert!(p["metadata"].get("annotations").is_none_or(|a| a.get("note").is_none()), "{p}");
        k(&["label", "configmap", "--all", "sweep=yes"]);
        // (the root CA bundle the server publishes in every namespace may be swept too)
        let mut swept = lines(&k(&["get", "cm", "-l", "sweep=yes", "-o", "name"]));
        swept.retain(|n| n != "configmap/kube-root-ca.crt");
        assert_eq!(swept, ["configmap/app-config"]);

        // delete by name: kubectl waits until the object is gone
        let out = k(&["delete", "pod", "example-pod", "--timeout=60s"]);
        assert_eq!(out.trim(), "pod \"example-pod\" deleted", "kubectl {version}");
        assert_eq!(c.get(&format!("{pods}/example-pod")).await.0, StatusCode::NOT_FOUND);
        assert!(c.etcd_get(&format!("/registry/pods/{ns}/example-pod")).await.is_none());
        let out = c.kubectl(version, &["delete", "pod", "example-pod", "-n", &ns]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
        k(&["delete", "pod", "example-pod", "--ignore-not-found"]);

        // a pod bound to a node deletes gracefully; --force --grace-period=0 at once
        let mut bound = pod("bound", "nginx:1.25");
        bound["spec"]["nodeName"] = json!("node-x");
        c.create(&pods, &bound).await;
        let out = k(&["delete", "pod", "bound", "--force", "--grace-period=0"]);
        assert!(out.contains("pod \"bound\" force deleted"), "kubectl {version}: {out}");
        assert!(c.etcd_get(&format!("/registry/pods/{ns}/bound")).await.is_none());
        // wait --for=delete returns once the object is gone: a finalizer holds the
        // deletion until kubectl waits, removing it completes the deletion
        let mut awaited = configmap("awaited", json!({}));
        awaited["metadata"]["finalizers"] = json!(["example.com/hold"]);
        let cms = format!("/api/v1/namespaces/{ns}/configmaps");
        c.create(&cms, &awaited).await;
        assert_eq!(c.delete(&format!("{cms}/awaited")).await.0, StatusCode::OK);
        let waiter =
            c.kubectl_stream(version, &["wait", "-n", &ns, "--for=delete", "cm/awaited", "--timeout=60s", "-v=6"]);
        // -v=6 logs each request: once the watch is open, the deletion may complete
        waiter
            .wait_for_line("watch=", LINE_WAIT)
            .unwrap_or_else(|seen| panic!("kubectl {version} wait never watched: {seen:?}"));
        let unhold = json!({"metadata": {"finalizers": null}});
        assert_eq!(c.patch(&format!("{cms}/awaited"), "application/merge-patch+json", &unhold).await.0, StatusCode::OK);
        waiter
            .wait_for_line("condition met", LINE_WAIT)
            .unwrap_or_else(|seen| panic!("kubectl {version} wait --for=delete: {seen:?}"));

        // by label
        for i in 0..3 {
            let mut cm = configmap(&format!("batch-{i}"), json!({}));
            cm["metadata"]["labels"] = json!({"batch": "x"});
            c.create(&format!("/api/v1/namespaces/{ns}/configmaps"), &cm).await;
        }
        let out = k(&["delete", "cm", "-l", "batch=x", "--timeout=60s"]);
        assert_eq!(
            sorted(lines(&out)),
            ["configmap \"batch-0\" deleted", "configmap \"batch-1\" deleted", "configmap \"batch-2\" deleted"],
            "kubectl {version}"
        );
        assert!(c.etcd_keys(&format!("/registry/configmaps/{ns}/batch-")).await.is_empty());
        assert!(c.etcd_get(&format!("/registry/configmaps/{ns}/app-config")).await.is_some(), "-l deleted too much");

        // --all, and delete -f
        for i in 0..2 {
            c.create(&pods, &pod(&format!("doomed-{i}"), "nginx:1.25")).await;
        }
        let out = k(&["delete", "pods", "--all", "--timeout=60s"]);
        assert_eq!(sorted(lines(&out)), ["pod \"doomed-0\" deleted", "pod \"doomed-1\" deleted"], "kubectl {version}");
        assert!(c.etcd_keys(&format!("/registry/pods/{ns}/")).await.is_empty());
        let out = k(&["delete", "-f", &app_file, "--timeout=60s"]);
        assert_eq!(
            lines(&out),
            ["configmap \"app-config\" deleted", "deployment.apps \"app\" deleted"],
            "kubectl {version}"
        );
        assert!(c.etcd_get(&format!("/registry/deployments/{ns}/app")).await.is_none());

        // and the namespace itself
        let out = c.kubectl_ok(version, &["delete", "namespace", &ns, "--timeout=60s"]);
        assert_eq!(out.trim(), format!("namespace \"{ns}\" deleted"));
        assert_eq!(c.get(&format!("/api/v1/namespaces/{ns}")).await.0, StatusCode::NOT_FOUND);
    }
}

/// Every tutorial manifest (tests/fixtures/manifests, copied from shared/manifests)
/// applies cleanly, re-applies unchanged, reads back and deletes, with both versions.
#[tokio::test]
async fn kubectl_applies_tutorial_manifests() {
    let c = Cluster::start().await;
    let dir = fixture("manifests");
    let dir = dir.to_str().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{files:?}");
    let objects = [
        "statefulset.apps/database-statefulset",
        "pod/example-pod",
        "cronjob.batch/hello",
        "service/example-nodeport",
        "service/example-en",
        "pod/test-app-pod",
        "deployment.apps/web-deploy",
        "ingress.networking.k8s.io/webapp-ingress",
        "configmap/webapp-config",
        "secret/db-credentials",
        "persistentvolumeclaim/database-pvc",
        "deployment.apps/webapp-deployment",
        "service/webapp-service",
    ];

    for version in KUBECTL_VERSIONS {
        let ns = format!("m-{}", tag(version));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;

        // one file at a time, as a tutorial reader would
        let mut created = Vec::new();
        for file in &files {
            let out = c.kubectl_ok(version, &["apply", "-f", file, "-n", &ns]);
            for line in lines(&out) {
                assert!(line.ends_with(" created"), "kubectl {version} apply -f {file}: {line}");
                created.push(line.trim_end_matches(" created").to_string());
            }
        }
        assert_eq!(sorted(created), sorted(objects.iter().map(|s| s.to_string()).collect()), "kubectl {version}");

        // what landed
        let get = |path: String| {
            let c = &c;
            async move { c.must_get(&path).await }
        };
        let web = get(format!("/apis/apps/v1/namespaces/{ns}/deployments/web-deploy")).await;
        assert_eq!(web["spec"]["replicas"], 5);
        assert_eq!(web["spec"]["minReadySeconds"], 5);
        assert_eq!(web["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": 1, "maxUnavailable": 0}));
        assert_eq!(web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 1);
        let np = get(format!("/api/v1/namespaces/{ns}/services/example-nodeport")).await;
        assert_eq!(np["spec"]["ports"][0]["nodePort"], 31111);
        assert_eq!(np["spec"]["ports"][0]["targetPort"], 8080);
        let en = get(format!("/api/v1/namespaces/{ns}/services/example-en")).await;
        assert_eq!(en["spec"]["externalName"], "example-nodeport.default.svc.cluster.local");
        let stack = get(format!("/apis/apps/v1/namespaces/{ns}/deployments/webapp-deployment")).await;
        let containers = stack["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["envFrom"][0]["configMapRef"]["name"], "webapp-config");
        assert_eq!(containers[1]["env"][0]["valueFrom"]["secretKeyRef"]["key"], "username");
        let sts = get(format!("/apis/apps/v1/namespaces/{ns}/statefulsets/database-statefulset")).await;
        assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "1Gi");
        let cron = get(format!("/apis/batch/v1/namespaces/{ns}/cronjobs/hello")).await;
        assert_eq!(cron["spec"]["schedule"], "* * * * *");
        let ing = get(format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/webapp-ingress")).await;
        assert_eq!(ing["spec"]["rules"][0]["host"], "mywebapp.example.com");
        let secret = get(format!("/api/v1/namespaces/{ns}/secrets/db-credentials")).await;
        assert_eq!(secret["data"]["username"], "YWRtaW4=");
        let pvc = get(format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/database-pvc")).await;
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));

        // re-applying the whole directory changes nothing. Upstream's kubectl always
        // re-sends a StatefulSet's volumeClaimTemplates (kubernetes#66450), so that one
        // line may say "configured"; the object must still not change.
        let sts_rv = sts["metadata"]["resourceVersion"].clone();
        let out = c.kubectl_ok(version, &["apply", "-f", dir, "-n", &ns]);
        for line in lines(&out) {
            let sts_line = line.starts_with("statefulset.apps/database-statefulset ");
            assert!(
                line.ends_with(" unchanged") || (sts_line && line.ends_with(" configured")),
                "kubectl {version} re-apply: {line}\n{out}"
            );
        }
        assert_eq!(lines(&out).len(), objects.len());
        let sts = get(format!("/apis/apps/v1/namespaces/{ns}/statefulsets/database-statefulset")).await;
        assert_eq!(sts["metadata"]["resourceVersion"], sts_rv, "re-applying changed the StatefulSet: {sts}");
        assert_eq!(sts["metadata"]["generation"], 1);

        // read back through kubectl
        let out = c.kubectl_ok(version, &["get", "-f", dir, "-n", &ns, "-o", "name"]);
        assert_eq!(lines(&out).len(), objects.len(), "kubectl {version}: {out}");
        let out = c.kubectl_ok(version, &["get", "all", "-n", &ns, "-o", "name"]);
        for want in ["pod/example-pod", "service/example-nodeport", "deployment.apps/web-deploy", "cronjob.batch/hello"]
        {
            assert!(lines(&out).contains(&want.to_string()), "kubectl {version} get all lacks {want}: {out}");
        }
        c.kubectl_ok(version, &["describe", "-f", dir, "-n", &ns]);

        // a second create of the same files is refused, object by object
        let out = c.kubectl(version, &["create", "-f", dir, "-n", &ns]);
        assert!(!out.status.success());
        assert_eq!(stderr(&out).matches("AlreadyExists").count(), objects.len(), "{}", stderr(&out));

        // delete -f: everything goes, and the node port is free for the next version
        let out = c.kubectl_ok(version, &["delete", "-f", dir, "-n", &ns, "--timeout=60s"]);
        assert_eq!(lines(&out).len(), objects.len(), "kubectl {version}: {out}");
        for prefix in ["pods", "services/specs", "deployments", "statefulsets", "cronjobs", "ingress", "configmaps"] {
            let mut keys = c.etcd_keys(&format!("/registry/{prefix}/{ns}/")).await;
            // the root CA bundle the server publishes in every namespace stays
            keys.retain(|k| !k.ends_with("/kube-root-ca.crt"));
            assert!(keys.is_empty(), "kubectl {version} delete -f left {keys:?}");
        }
        assert!(c.etcd_get("/registry/ranges/servicenodeports/31111").await.is_none());
    }
}

/// Patches kubectl sends as merge and JSON patches, and `kubectl scale` through the scale
/// subresource. (Strategic merge patch, apply of changed manifests and `set image` are in
/// tests/patch.rs; server-side apply and `explain` belong to issue 4.)
#[tokio::test]
async fn kubectl_patch_and_scale() {
    let c = Cluster::start().await;
    let web = fixture("manifests/web-deploy.yaml");
    for version in KUBECTL_VERSIONS {
        let ns = format!("x-{}", tag(version));
        c.create("/api/v1/namespaces", &namespace(&ns)).await;
        let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web-deploy");
        c.kubectl_ok(version, &["apply", "-n", &ns, "-f", web.to_str().unwrap()]);

        for (ty, patch, want) in [
            ("merge", r#"{"spec":{"minReadySeconds":7}}"#, 7),
            ("json", r#"[{"op":"replace","path":"/spec/minReadySeconds","value":9}]"#, 9),
        ] {
            let ty_flag = format!("--type={ty}");
            let out = c.kubectl_ok(version, &["patch", "-n", &ns, "deployment", "web-deploy", &ty_flag, "-p", patch]);
            assert!(out.contains("patched"), "{version} patch --type={ty}: {out}");
            assert_eq!(c.must_get(&deploy).await["spec"]["minReadySeconds"], want, "{version} patch --type={ty}");
        }
        // a JSON patch whose test fails changes nothing
        let failing = r#"[{"op":"test","path":"/spec/minReadySeconds","value":1},{"op":"replace","path":"/spec/minReadySeconds","value":3}]"#;
        let out = c.kubectl(version, &["patch", "-n", &ns, "deployment", "web-deploy", "--type=json", "-p", failing]);
        assert!(!out.status.success(), "{version} a failing JSON patch test was applied");
        assert_eq!(c.must_get(&deploy).await["spec"]["minReadySeconds"], 9);

        let out = c.kubectl_ok(version, &["scale", "-n", &ns, "deployment/web-deploy", "--replicas=2"]);
        assert!(out.contains("scaled"), "{version} scale: {out}");
        assert_eq!(c.must_get(&deploy).await["spec"]["replicas"], 2, "{version} scale");
        let out =
            c.kubectl(version, &["scale", "-n", &ns, "deployment/web-deploy", "--current-replicas=5", "--replicas=3"]);
        assert!(!out.status.success(), "{version} scale with a wrong --current-replicas succeeded");
        assert_eq!(c.must_get(&deploy).await["spec"]["replicas"], 2);

        let scale = c.must_get(&format!("{deploy}/scale")).await;
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web");
    }
}

/// `kubectl rollout status` follows a Deployment's status through the watch and returns
/// once it is rolled out. No controllers run yet, so the test writes the status a
/// deployment controller would (through `/status`).
#[tokio::test]
async fn kubectl_rollout_status_follows_the_watch() {
    let c = Cluster::start().await;
    for version in KUBECTL_VERSIONS {
        let name = format!("roll-{}", tag(version));
        let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
        c.kubectl_ok(version, &["create", "deployment", &name, "--image=nginx:1.25", "--replicas=2"]);
        let watch = c.kubectl_stream(version, &["rollout", "status", &format!("deployment/{name}"), "--timeout=60s"]);
        let waiting = watch.wait_for_line("Waiting", LINE_WAIT);
        assert!(waiting.is_ok(), "{version} rollout status never waited: {waiting:?}");

        let mut d = c.must_get(&path).await;
        let generation = d["metadata"]["generation"].clone();
        d["status"] = json!({
            "observedGeneration": generation,
            "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        });
        let (status, body) = c.put(&format!("{path}/status"), &d).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let done = watch.wait_for_line("successfully rolled out", LINE_WAIT);
        assert!(done.is_ok(), "{version} rollout status did not see the rollout finish: {done:?}");
    }
}
