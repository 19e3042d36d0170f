//! What a pod's spec becomes inside a real container (`kubelet --runtime=cri` with a
//! containerd of the test's own): env from ConfigMaps, Secrets, the downward API and
//! service links; configMap, secret, downwardAPI, projected service-account, emptyDir
//! (disk and memory) volumes with items, modes, subPathExpr and read-only API data; the
//! managed /etc/hosts; cgroup limits from resources; a readiness probe flipping.

mod common;

use std::time::Duration;

use common::containerd::start_cri_cluster;
use common::containerd::{CriCluster, CriNode};
use common::controllers::{events_of, eventually, start_scheduler};
use common::{Cluster, Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// Prints `KEY=value` lines the test checks, then is ready for 8 s, then not.
const SCRIPT: &str = r#"
echo COLOR=$COLOR; echo PASSWORD=$PASSWORD; echo GREETING=$GREETING; echo MEM=$MEM_LIMIT
echo CFG=$CFG_color; echo K8S=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; echo NOTEXPANDED=$LITERAL
echo FILECOLOR=$(cat /etc/app/colors/color); echo SECRET=$(cat /etc/secret/password)
echo SECMODE=$(stat -L -c %a /etc/secret/password); echo INFOMEM=$(cat /etc/info/mem)
echo LABELS=$(cat /etc/info/labels)
echo TOKEN=$(test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes)
echo NS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)
echo CA=$(grep -c BEGIN /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)
echo HOSTS=$(grep -c 'box.grp.default.svc.cluster.local' /etc/hosts); echo ALIAS=$(grep -c alias.example /etc/hosts)
echo RO=$(touch /etc/app/x 2>/dev/null && echo no || echo yes)
echo SUB=$(touch /pod-scratch/f && ls /scratch/spec-pod)
echo RAM=$(grep ' /ram ' /proc/mounts | cut -d' ' -f3)
echo MEMCG=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); echo QUOTA=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
echo DONE
touch /tmp/ready; sleep 8; rm /tmp/ready; sleep 3600
"#;

fn spec_pod() -> Value {
    let env = json!([
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "color"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "GREETING", "value": "hello-$(POD_NAME)-$(COLOR)"},
        {"name": "LITERAL", "value": "$$(POD_NAME)"},
    ]);
    let mounts = json!([
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "sec", "mountPath": "/etc/secret"},
        {"name": "info", "mountPath": "/etc/info"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "scratch", "mountPath": "/pod-scratch", "subPathExpr": "$(POD_NAME)"},
        {"name": "ram", "mountPath": "/ram"},
    ]);
    let volumes = json!([
        {"name": "cfg", "configMap": {"name": "app-config", "items": [{"key": "color", "path": "colors/color"}]}},
        {"name": "sec", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "main", "resource": "limits.memory", "divisor": "1Mi"}}]}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "spec-pod", "labels": {"app": "demo"}},
        "spec": {"terminationGracePeriodSeconds": 2, "hostname": "box", "subdomain": "grp",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["alias.example"]}],
            "volumes": volumes,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", SCRIPT],
                "env": env, "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "app-config"}}],
                "volumeMounts": mounts,
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1}}]}})
}

/// Unmounts whatever is still mounted under the kubelet's root dir when the test ends
/// (declared before the cluster, so it runs after the kubelet and containerd stopped): a
/// failed test leaves its memory-backed emptyDir behind otherwise.
struct UnmountUnder(Option<std::path::PathBuf>);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        let Some(root) = &self.0 else { return };
        let mut mounts: Vec<String> = mounts_under(root);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let Ok(target) = std::ffi::CString::new(m) else { continue };
            // SAFETY: target is a valid NUL-terminated path
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn mounts_under(root: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = format!("{}/", root.display());
    text.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).map(str::to_string).collect()
}

async fn ready_condition(cc: &CriCluster) -> String {
    let pod = cc.cluster.must_get("/api/v1/namespaces/default/pods/spec-pod").await;
    let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let ready = conditions.iter().find(|c| c["type"] == "Ready");
    ready.and_then(|c| c["status"].as_str()).unwrap_or("").to_string()
}

/// A real node under an API server that issues service-account tokens (as `ferrokube up`
/// runs it), so pods get their projected tokens.
async fn start_cluster_with_tokens(keys: &std::path::Path) -> CriCluster {
    let key = keys.join("sa.key");
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    // with an authenticator configured, the harness's admin token must be listed
    let tokens = keys.join("tokens.csv");
    std::fs::write(&tokens, format!("{},admin,0,system:masters\n", common::DEV_TOKEN)).unwrap();
    let flags = [
        format!("--token-auth-file={}", tokens.display()),
        format!("--service-account-signing-key-file={}", key.display()),
        format!("--service-account-key-file={}", key.display()),
        "--service-account-issuer=https://kubernetes.default.svc".to_string(),
    ];
    let cluster = Cluster::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let scheduler = start_scheduler(&cluster).await;
    let node = CriNode::start(&cluster, "node-1", &[]).await;
    CriCluster { node, scheduler, cluster }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_env_volumes_resources_and_probe_reach_its_container() {
    let keys = tempfile::tempdir().unwrap();
    let mut unmount = UnmountUnder(None);
    let cc = start_cluster_with_tokens(keys.path()).await;
    unmount.0 = Some(cc.node.root_dir.clone());
    let c = &cc.cluster;
    c.create("/api/v1/namespaces/default/configmaps", &common::configmap("app-config", json!({"color": "blue"}))).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret"},
        "stringData": {"password": "s3cret"}});
    c.create("/api/v1/namespaces/default/secrets", &secret).await;
    c.create("/api/v1/namespaces/default/pods", &spec_pod()).await;

    let output = eventually(WAIT, "the container's report", || async {
        let pod = c.must_get("/api/v1/namespaces/default/pods/spec-pod").await;
        let out = cc.node.container_output(&pod, "main", 0);
        out.contains("DONE").then_some(out)
    })
    .await;
    let line = |key: &str| -> String {
        let prefix = format!("{key}=");
        output
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{key} missing: {output}"))
            .to_string()
    };
    assert_eq!(line("COLOR"), "blue");
    assert_eq!(line("PASSWORD"), "s3cret");
    assert_eq!(line("GREETING"), "hello-spec-pod-blue");
    assert_eq!(line("NOTEXPANDED"), "$(POD_NAME)");
    assert_eq!(line("MEM"), "64");
    assert_eq!(line("CFG"), "blue");
    assert!(line("K8S").starts_with("10.") && line("K8S").ends_with(":443"), "{output}");
    assert_eq!(line("FILECOLOR"), "blue");
    assert_eq!(line("SECRET"), "s3cret");
    assert_eq!(line("SECMODE"), "400");
    assert_eq!(line("INFOMEM"), "64");
    assert_eq!(line("LABELS"), "app=\"demo\"");
    assert_eq!(line("TOKEN"), "yes", "the projected service-account token: {output}");
    assert_eq!(line("NS"), "default");
    assert!(line("CA") != "0" && !line("CA").is_empty(), "kube-root-ca.crt: {output}");
    assert_eq!((line("HOSTS"), line("ALIAS")), ("1".to_string(), "1".to_string()), "{output}");
    assert_eq!(line("RO"), "yes", "configMap volumes are read-only");
    assert_eq!(line("SUB"), "f", "subPathExpr: {output}");
    assert_eq!(line("RAM"), "tmpfs");
    assert_eq!(line("MEMCG"), (64 << 20).to_string());
    assert_eq!(line("QUOTA"), "50000");

    eventually(WAIT, "the pod to be Ready", || async { (ready_condition(&cc).await == "True").then_some(()) }).await;
    eventually(WAIT, "the readiness probe to fail", || async { (ready_condition(&cc).await == "False").then_some(()) })
        .await;
    let pod = c.must_get("/api/v1/namespaces/default/pods/spec-pod").await;
    assert_eq!(pod["status"]["qosClass"], "Burstable", "{pod}");
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false, "{pod}");
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "readiness does not restart: {pod}");

    // deleted: the kubelet tears the volumes down, tmpfs included
    assert!(!mounts_under(&cc.node.root_dir).is_empty(), "the memory emptyDir is mounted");
    let (code, _) = c.delete("/api/v1/namespaces/default/pods/spec-pod").await;
    assert!(code.is_success(), "{code}");
    eventually(WAIT, "the pod to be gone", || async {
        let (code, _) = c.get("/api/v1/namespaces/default/pods/spec-pod").await;
        (code == common::StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    eventually(WAIT, "the pod's mounts to be gone", || async {
        mounts_under(&cc.node.root_dir).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_that_cannot_be_set_up_are_failed_mounts_until_they_can() {
    let cc = start_cri_cluster().await;
    let c = &cc.cluster;
    let missing_dir = cc.node.dir.join("not-there");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mounts"},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "sec", "secret": {"secretName": "later"}},
                        {"name": "host", "hostPath": {"path": missing_dir.display().to_string(), "type": "Directory"}}],
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "cat /s/k; echo; sleep 3600"],
                "volumeMounts": [{"name": "sec", "mountPath": "/s"}, {"name": "host", "mountPath": "/h"}]}]}});
    c.create("/api/v1/namespaces/default/pods", &pod).await;
    let failed_mount = |want: String| async move {
        eventually(WAIT, &format!("FailedMount {want}"), || async {
            let events = events_of(c, "mounts").await;
            events.iter().any(|(r, m)| r == "FailedMount" && *m == want).then_some(())
        })
        .await
    };
    failed_mount("MountVolume.SetUp failed for volume \"sec\" : secret \"later\" not found".into()).await;
    let status = c.must_get("/api/v1/namespaces/default/pods/mounts").await;
    assert_eq!(status["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating", "{status}");

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later"}, "stringData": {"k": "v"}});
    c.create("/api/v1/namespaces/default/secrets", &secret).await;
    let dir = missing_dir.display();
    failed_mount(format!(
        "MountVolume.SetUp failed for volume \"host\" : hostPath type check failed: {dir} is not a directory"
    ))
    .await;
    std::fs::create_dir_all(&missing_dir).unwrap();
    eventually(WAIT, "the pod to run", || async {
        let pod = c.must_get("/api/v1/namespaces/default/pods/mounts").await;
        (pod["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let pod: Value = c.must_get("/api/v1/namespaces/default/pods/mounts").await;
    eventually(WAIT, "the secret's content", || async {
        (cc.node.container_output(&pod, "main", 0) == "v\n").then_some(())
    })
    .await;
}
