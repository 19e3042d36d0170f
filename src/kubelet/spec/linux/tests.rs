use serde_json::json;

use super::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec})).unwrap()
}

fn with_resources(list: &[serde_json::Value]) -> Pod {
    let containers: Vec<_> =
        list.iter().enumerate().map(|(i, r)| json!({"name": format!("c{i}"), "resources": r})).collect();
    pod(json!({"containers": containers}))
}

#[test]
fn qos_classes() {
    let g = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    let g_explicit = json!({"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
    let b = json!({"requests": {"cpu": "100m"}});
    let b_limits = json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
    let none = json!({});
    let zero = json!({"requests": {"cpu": "0"}});
    assert_eq!(qos_class(&with_resources(&[g.clone(), g_explicit])), "Guaranteed");
    assert_eq!(qos_class(&with_resources(&[g.clone(), none.clone()])), "Burstable");
    assert_eq!(qos_class(&with_resources(&[b])), "Burstable");
    assert_eq!(qos_class(&with_resources(&[b_limits])), "Burstable");
    assert_eq!(qos_class(&with_resources(&[none.clone(), zero])), "BestEffort");
    assert_eq!(qos_class(&pod(json!({"containers": []}))), "BestEffort");
    let with_init = pod(json!({"containers": [{"name": "c", "resources": g}], "initContainers": [{"name": "i"}]}));
    assert_eq!(qos_class(&with_init), "Burstable", "init containers count");
}

#[test]
fn resources_to_cgroup_values() {
    let gib: i64 = 1 << 30;
    let p = with_resources(&[
        json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}),
    ]);
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 4 * gib);
    assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (256, 50_000, 100_000));
    assert_eq!((r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes), (512 << 20, 512 << 20));
    assert_eq!(r.oom_score_adj, 1000 - 1000 * 256 / 4096);

    let p = with_resources(&[json!({"limits": {"cpu": "2", "memory": "1Gi"}})]);
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 4 * gib);
    assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (2048, 200_000, -997), "requests default to limits");

    let p = with_resources(&[json!({})]);
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 4 * gib);
    assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes, r.oom_score_adj), (2, 0, 0, 1000));

    let p = with_resources(&[json!({"requests": {"cpu": "1m", "memory": "1"}, "limits": {"cpu": "1m"}})]);
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 4 * gib);
    assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (2, 1000, 999), "minimums; burstable stays under 1000");

    let p = with_resources(&[json!({"requests": {"memory": "8Gi"}})]);
    let r = container_resources(&p, &p.spec.as_ref().unwrap().containers[0], 4 * gib);
    assert_eq!(r.oom_score_adj, 3, "burstable never below guaranteed's score");
}

#[test]
fn security_context_merges_pod_and_container() {
    let p = pod(json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000],
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "shareProcessNamespace": true,
        "containers": [
            {"name": "a", "securityContext": {"runAsUser": 2000, "readOnlyRootFilesystem": true,
             "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}},
            {"name": "b", "securityContext": {"privileged": true, "seccompProfile": {"type": "Unconfined"}}},
        ],
    }));
    let spec = p.spec.as_ref().unwrap();
    let a = container_linux(&p, &spec.containers[0]).security_context.unwrap();
    assert_eq!(a.run_as_user, Some(Int64Value { value: 2000 }));
    assert_eq!(a.run_as_group, Some(Int64Value { value: 3000 }));
    assert_eq!(a.supplemental_groups, [4000, 2000]);
    assert!(a.readonly_rootfs && a.no_new_privs && !a.privileged);
    let caps = a.capabilities.unwrap();
    assert_eq!(
        (caps.add_capabilities, caps.drop_capabilities),
        (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
    );
    assert_eq!(a.seccomp.unwrap().profile_type, ProfileType::RuntimeDefault as i32);
    assert!(a.masked_paths.contains(&"/proc/kcore".to_string()));
    assert_eq!(a.namespace_options.unwrap().pid, NamespaceMode::Pod as i32);

    let b = container_linux(&p, &spec.containers[1]).security_context.unwrap();
    assert!(b.privileged && b.masked_paths.is_empty() && b.readonly_paths.is_empty());
    assert_eq!(b.seccomp.unwrap().profile_type, ProfileType::Unconfined as i32);

    let sandbox = sandbox_linux(&p);
    assert_eq!(sandbox.sysctls.get("net.ipv4.ip_unprivileged_port_start").map(String::as_str), Some("0"));
    let ssc = sandbox.security_context.unwrap();
    assert!(ssc.privileged, "a privileged container makes the sandbox privileged");
    assert_eq!(ssc.run_as_user, Some(Int64Value { value: 1000 }));
}

#[test]
fn namespaces_and_default_seccomp() {
    let p = pod(json!({"hostNetwork": true, "hostIPC": true, "containers": [{"name": "c"}]}));
    let ns = namespace_options(&p);
    assert_eq!(
        (ns.network, ns.pid, ns.ipc),
        (NamespaceMode::Node as i32, NamespaceMode::Container as i32, NamespaceMode::Node as i32)
    );
    let sc = container_linux(&p, &p.spec.as_ref().unwrap().containers[0]).security_context.unwrap();
    assert_eq!(sc.seccomp.unwrap().profile_type, ProfileType::Unconfined as i32, "no profile is Unconfined");
    assert!(!sc.no_new_privs, "allowPrivilegeEscalation unset keeps privileges");
}

#[test]
fn run_as_non_root_is_checked_as_upstream() {
    let p = |sc: serde_json::Value| {
        pod(json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c", "securityContext": sc}]}))
    };
    let check = |p: &Pod, uid: Option<i64>, user: &str| {
        verify_run_as_non_root(p, &p.spec.as_ref().unwrap().containers[0], uid, user).map_err(|e| e.to_string())
    };
    let root = p(json!({"runAsUser": 0}));
    assert_eq!(
        check(&root, Some(1000), ""),
        Err("container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)".into())
    );
    assert_eq!(check(&p(json!({"runAsUser": 1000})), Some(0), ""), Ok(()));
    let plain = p(json!({}));
    let as_root =
        Err("container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)".to_string());
    assert_eq!(check(&plain, None, ""), as_root, "an image without a user runs as root");
    assert_eq!(check(&plain, Some(0), ""), as_root);
    assert_eq!(check(&plain, Some(65534), ""), Ok(()));
    assert!(check(&plain, None, "nobody").unwrap_err().contains("image has non-numeric user (nobody)"));
    assert_eq!(check(&p(json!({"runAsNonRoot": false})), None, ""), Ok(()), "the container's setting wins");
}
