//! Objects built with k8s-pb, encoded with prost inside the runtime.Unknown
//! envelope, decoded, and compared with the JSON Kubernetes shows for them;
//! plus bodies captured from kubectl 1.33 and malformed input.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::networking::v1 as networking;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

use super::decode::go_duration;
use super::decode_body;

fn body(api_version: &str, kind: &str, obj: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn decode(api_version: &str, kind: &str, obj: &impl Message) -> Value {
    decode_body(&body(api_version, kind, obj)).unwrap_or_else(|e| panic!("decoding {kind}: {e}"))
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn meta_named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta { name: s(name), ..Default::default() })
}

fn q(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

fn int_or_string_int(v: i32) -> IntOrString {
    IntOrString { r#type: Some(0), int_val: Some(v), str_val: None }
}

fn int_or_string_str(v: &str) -> IntOrString {
    IntOrString { r#type: Some(1), int_val: None, str_val: s(v) }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn protobuf_configmap_data_and_binary_data() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("cfg"),
            namespace: s("default"),
            labels: labels(&[("app", "web")]),
            annotations: labels(&[("note", "x")]),
            ..Default::default()
        }),
        data: labels(&[("a", "b"), ("empty", "")]),
        binary_data: [("bin".to_string(), vec![0u8, 1, 2, 255]), ("none".to_string(), vec![])].into(),
        immutable: Some(true),
    };
    assert_eq!(
        decode("v1", "ConfigMap", &cm),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"app": "web"}, "annotations": {"note": "x"}},
            "data": {"a": "b", "empty": ""},
            "binaryData": {"bin": "AAEC/w==", "none": ""},
            "immutable": true
        })
    );
}

#[test]
fn protobuf_secret_and_namespace() {
    let secret = core::Secret {
        metadata: meta_named("s"),
        data: [("password".to_string(), b"hunter2".to_vec())].into(),
        string_data: labels(&[("user", "admin")]),
        r#type: s("Opaque"),
        immutable: Some(false),
    };
    assert_eq!(
        decode("v1", "Secret", &secret),
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "admin"},
            "type": "Opaque", "immutable": false
        })
    );
    let ns = core::Namespace {
        metadata: meta_named("team-a"),
        spec: Some(core::NamespaceSpec { finalizers: vec!["kubernetes".into()] }),
        status: None,
    };
    assert_eq!(
        decode("v1", "Namespace", &ns),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}})
    );
}

fn pod_template() -> core::PodTemplateSpec {
    core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta { labels: labels(&[("app", "web")]), ..Default::default() }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("nginx"),
                image: s("nginx:1.27"),
                command: vec!["nginx".into(), "-g".into()],
                ports: vec![
                    core::ContainerPort {
                        name: s("http"),
                        container_port: Some(80),
                        protocol: s("TCP"),
                        ..Default::default()
                    },
                    core::ContainerPort { container_port: Some(443), ..Default::default() },
                ],
                env: vec![
                    core::EnvVar { name: s("MODE"), value: s("prod"), value_from: None },
                    core::EnvVar {
                        name: s("POD_NAME"),
                        value: None,
                        value_from: Some(core::EnvVarSource {
                            field_ref: Some(core::ObjectFieldSelector {
                                api_version: s("v1"),
                                field_path: s("metadata.name"),
                            }),
                            ..Default::default()
                        }),
                    },
                    core::EnvVar {
                        name: s("PASSWORD"),
                        value: None,
                        value_from: Some(core::EnvVarSource {
                            secret_key_ref: Some(core::SecretKeySelector {
                                local_object_reference: Some(core::LocalObjectReference { name: s("db") }),
                                key: s("pw"),
                                optional: Some(false),
                            }),
                            ..Default::default()
                        }),
                    },
                ],
                resources: Some(core::ResourceRequirements {
                    limits: [("cpu".to_string(), q("500m")), ("memory".to_string(), q("128Mi"))].into(),
                    requests: [("cpu".to_string(), q("250m"))].into(),
                    claims: vec![],
                }),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(int_or_string_str("http")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    period_seconds: Some(10),
                    ..Default::default()
                }),
                volume_mounts: vec![core::VolumeMount {
                    name: s("cache"),
                    mount_path: s("/cache"),
                    read_only: Some(true),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("cache"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource { medium: s("Memory"), size_limit: Some(q("1Gi")) }),
                    ..Default::default()
                }),
            }],
            termination_grace_period_seconds: Some(0),
            node_selector: labels(&[("disk", "ssd")]),
            ..Default::default()
        }),
    }
}

fn pod_template_json() -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "nginx",
                "image": "nginx:1.27",
                "command": ["nginx", "-g"],
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": false}}}
                ],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": true}]
            }],
            "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
            "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"disk": "ssd"}
        }
    })
}

#[test]
fn protobuf_deployment_full_pod_template() {
    let deploy = apps::Deployment {
        metadata: meta_named("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(3),
            selector: Some(meta::LabelSelector {
                match_labels: labels(&[("app", "web")]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: vec!["fe".into(), "be".into()],
                }],
            }),
            template: Some(pod_template()),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(int_or_string_int(0)),
                    max_surge: Some(int_or_string_str("25%")),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        decode("apps/v1", "Deployment", &deploy),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]
                },
                "template": pod_template_json(),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            }
        })
    );
}

#[test]
fn protobuf_zero_values_follow_go_json() {
    // Kubernetes' marshaller writes every non-pointer field, zero or not;
    // Go's JSON drops the omitempty ones and keeps explicit pointer zeros.
    let deploy = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            generate_name: s(""),
            namespace: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            min_ready_seconds: Some(0),
            paused: Some(false),
            strategy: Some(apps::DeploymentStrategy::default()),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s(""),
                        image: s("nginx"),
                        image_pull_policy: s(""),
                        stdin: Some(false),
                        resources: Some(core::ResourceRequirements::default()),
                        ..Default::default()
                    }],
                    restart_policy: s(""),
                    host_network: Some(false),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus { replicas: Some(0), ..Default::default() }),
    };
    assert_eq!(
        decode("apps/v1", "Deployment", &deploy),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "strategy": {},
                "template": {
                    "metadata": {},
                    "spec": {
                        "containers": [{"name": "", "image": "nginx", "resources": {}}],
                        "automountServiceAccountToken": false
                    }
                }
            },
            "status": {}
        })
    );
}

#[test]
fn protobuf_service_target_ports() {
    let svc = core::Service {
        metadata: meta_named("svc"),
        spec: Some(core::ServiceSpec {
            r#type: s("ClusterIP"),
            selector: labels(&[("app", "web")]),
            ports: vec![
                core::ServicePort {
                    name: s("http"),
                    protocol: s("TCP"),
                    port: Some(80),
                    target_port: Some(int_or_string_int(8080)),
                    ..Default::default()
                },
                core::ServicePort {
                    name: s("metrics"),
                    port: Some(9090),
                    target_port: Some(int_or_string_str("metrics")),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        decode("v1", "Service", &svc),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "port": 9090, "targetPort": "metrics"}
                ]
            }
        })
    );
}

#[test]
fn protobuf_pod_with_timestamps_and_managed_fields() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: s("p"),
            namespace: s("ns"),
            uid: s("0b6a8e7e-1f5c-4f57-9a38-6f7d1c0c1a11"),
            resource_version: s("42"),
            generation: Some(1),
            creation_timestamp: Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(123) }),
            deletion_grace_period_seconds: Some(0),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web-5d4"),
                uid: s("u1"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            finalizers: vec!["f".into()],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time { seconds: Some(0), nanos: None }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 { raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()) }),
                subresource: s(""),
            }],
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container { name: s("c"), image: s("busybox"), ..Default::default() }],
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            start_time: Some(meta::Time { seconds: Some(1_704_164_646), nanos: None }),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode("v1", "Pod", &pod),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "0b6a8e7e-1f5c-4f57-9a38-6f7d1c0c1a11",
                "resourceVersion": "42", "generation": 1,
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "deletionGracePeriodSeconds": 0,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4", "uid": "u1",
                    "controller": true, "blockOwnerDeletion": true
                }],
                "finalizers": ["f"],
                "managedFields": [{
                    "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                    "time": "1970-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}}
                }]
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "startTime": "2024-01-02T03:04:06Z"}
        })
    );
}

#[test]
fn protobuf_job_and_cronjob() {
    let job_spec = batch::JobSpec {
        parallelism: Some(2),
        completions: Some(4),
        backoff_limit: Some(0),
        ttl_seconds_after_finished: Some(100),
        completion_mode: s("Indexed"),
        template: Some(core::PodTemplateSpec {
            metadata: None,
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: s("c"),
                    image: s("busybox"),
                    args: vec!["echo".into(), "hi".into()],
                    ..Default::default()
                }],
                restart_policy: s("Never"),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let job_spec_json = json!({
        "parallelism": 2, "completions": 4, "backoffLimit": 0, "ttlSecondsAfterFinished": 100,
        "completionMode": "Indexed",
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox", "args": ["echo", "hi"]}], "restartPolicy": "Never"}}
    });
    let job = batch::Job { metadata: meta_named("j"), spec: Some(job_spec.clone()), status: None };
    assert_eq!(
        decode("batch/v1", "Job", &job),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": job_spec_json.clone()})
    );
    let cron = batch::CronJob {
        metadata: meta_named("cj"),
        spec: Some(batch::CronJobSpec {
            schedule: s("*/5 * * * *"),
            time_zone: s("Etc/UTC"),
            concurrency_policy: s("Forbid"),
            suspend: Some(false),
            job_template: Some(batch::JobTemplateSpec { metadata: meta_named("cj"), spec: Some(job_spec) }),
            successful_jobs_history_limit: Some(3),
            ..Default::default()
        }),
        status: Some(batch::CronJobStatus {
            last_schedule_time: Some(meta::Time { seconds: Some(1_700_000_000), nanos: None }),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode("batch/v1", "CronJob", &cron),
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
            "spec": {
                "schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid", "suspend": false,
                "jobTemplate": {"metadata": {"name": "cj"}, "spec": job_spec_json},
                "successfulJobsHistoryLimit": 3
            },
            "status": {"lastScheduleTime": "2023-11-14T22:13:20Z"}
        })
    );
}

#[test]
fn protobuf_ingress() {
    let ing = networking::Ingress {
        metadata: meta_named("ing"),
        spec: Some(networking::IngressSpec {
            ingress_class_name: s("nginx"),
            default_backend: None,
            tls: vec![networking::IngressTls { hosts: vec!["foo.com".into()], secret_name: s("cert") }],
            rules: vec![networking::IngressRule {
                host: s("foo.com"),
                ingress_rule_value: Some(networking::IngressRuleValue {
                    http: Some(networking::HttpIngressRuleValue {
                        paths: vec![networking::HttpIngressPath {
                            path: s("/bar"),
                            path_type: s("Prefix"),
                            backend: Some(networking::IngressBackend {
                                service: Some(networking::IngressServiceBackend {
                                    name: s("svc1"),
                                    port: Some(networking::ServiceBackendPort { name: None, number: Some(8080) }),
                                }),
                                resource: None,
                            }),
                        }],
                    }),
                }),
            }],
        }),
        status: None,
    };
    assert_eq!(
        decode("networking.k8s.io/v1", "Ingress", &ing),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing"},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["foo.com"], "secretName": "cert"}],
                "rules": [{
                    "host": "foo.com",
                    "http": {"paths": [{
                        "path": "/bar", "pathType": "Prefix",
                        "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}
                    }]}
                }]
            }
        })
    );
}

#[test]
fn protobuf_lease_micro_time() {
    let lease = coordination::Lease {
        metadata: Some(meta::ObjectMeta {
            name: s("kube-scheduler"),
            namespace: s("kube-system"),
            ..Default::default()
        }),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("node-1_abc"),
            lease_duration_seconds: Some(15),
            acquire_time: Some(meta::MicroTime { seconds: Some(1_704_164_645), nanos: Some(123_456_789) }),
            renew_time: Some(meta::MicroTime { seconds: Some(1_704_164_650), nanos: None }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode("coordination.k8s.io/v1", "Lease", &lease),
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": "node-1_abc", "leaseDurationSeconds": 15,
                "acquireTime": "2024-01-02T03:04:05.123456Z", "renewTime": "2024-01-02T03:04:10.000000Z",
                "leaseTransitions": 0
            }
        })
    );
}

#[test]
fn protobuf_delete_options() {
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions { uid: s("u1"), resource_version: None }),
        orphan_dependents: None,
        propagation_policy: s("Background"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    let want = json!({
        "gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}, "propagationPolicy": "Background", "dryRun": ["All"]
    });
    for api_version in ["v1", "meta.k8s.io/v1", "apps/v1"] {
        let mut expected = json!({"apiVersion": api_version, "kind": "DeleteOptions"});
        expected.as_object_mut().unwrap().extend(want.as_object().unwrap().clone());
        assert_eq!(decode(api_version, "DeleteOptions", &opts), expected);
    }
}

#[test]
fn protobuf_special_forms() {
    // RawExtension, named string slices (ExtraValue), events.k8s.io with
    // MicroTime, Duration, apiextensions JSON and JSONSchemaPropsOr*.
    use k8s_pb::api::apps::v1::ControllerRevision;
    use k8s_pb::api::authentication::v1 as authn;
    let rev = ControllerRevision {
        metadata: meta_named("rev"),
        data: Some(RawExtension { raw: Some(br#"{"spec":{"a":[1,2]}}"#.to_vec()) }),
        revision: Some(2),
    };
    assert_eq!(
        decode("apps/v1", "ControllerRevision", &rev),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "rev"},
               "data": {"spec": {"a": [1, 2]}}, "revision": 2})
    );
    let review = authn::TokenReview {
        metadata: None,
        spec: Some(authn::TokenReviewSpec { token: s("t"), audiences: vec!["api".into()] }),
        status: Some(authn::TokenReviewStatus {
            authenticated: Some(true),
            user: Some(authn::UserInfo {
                username: s("alice"),
                extra: [("scopes".to_string(), authn::ExtraValue { items: vec!["a".into(), "b".into()] })].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode("authentication.k8s.io/v1", "TokenReview", &review),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": "t", "audiences": ["api"]},
               "status": {"authenticated": true, "user": {"username": "alice", "extra": {"scopes": ["a", "b"]}}}})
    );
    let event = k8s_pb::api::events::v1::Event {
        metadata: meta_named("e"),
        event_time: Some(meta::MicroTime { seconds: Some(1_704_164_645), nanos: Some(5_000) }),
        series: Some(k8s_pb::api::events::v1::EventSeries {
            count: Some(2),
            last_observed_time: Some(meta::MicroTime { seconds: Some(1_704_164_646), nanos: None }),
        }),
        reason: s("Started"),
        regarding: Some(core::ObjectReference { kind: s("Pod"), name: s("p"), ..Default::default() }),
        r#type: s("Normal"),
        ..Default::default()
    };
    assert_eq!(
        decode("events.k8s.io/v1", "Event", &event),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
               "eventTime": "2024-01-02T03:04:05.000005Z",
               "series": {"count": 2, "lastObservedTime": "2024-01-02T03:04:06.000000Z"},
               "reason": "Started", "regarding": {"kind": "Pod", "name": "p"}, "type": "Normal"})
    );

    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as metrics;
    let pod_metrics = metrics::PodMetrics {
        metadata: meta_named("p"),
        timestamp: Some(meta::Time { seconds: Some(1_704_164_645), nanos: None }),
        window: Some(meta::Duration { duration: Some(90_500_000_000) }),
        containers: vec![metrics::ContainerMetrics {
            name: s("c"),
            usage: [("cpu".to_string(), q("12m")), ("memory".to_string(), Quantity::default())].into(),
        }],
    };
    assert_eq!(
        decode("metrics.k8s.io/v1beta1", "PodMetrics", &pod_metrics),
        json!({"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics", "metadata": {"name": "p"},
               "timestamp": "2024-01-02T03:04:05Z", "window": "1m30.5s",
               "containers": [{"name": "c", "usage": {"cpu": "12m", "memory": "0"}}]})
    );

    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let props = ext::JsonSchemaProps {
        r#type: s("object"),
        properties: [
            (
                "spec".to_string(),
                ext::JsonSchemaProps {
                    r#type: s("object"),
                    x_kubernetes_preserve_unknown_fields: Some(true),
                    additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool {
                        allows: Some(false),
                        schema: None,
                    })),
                    ..Default::default()
                },
            ),
            (
                "list".to_string(),
                ext::JsonSchemaProps {
                    r#type: s("array"),
                    items: Some(Box::new(ext::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(ext::JsonSchemaProps { r#type: s("string"), ..Default::default() })),
                        j_son_schemas: vec![],
                    })),
                    default: Some(ext::Json { raw: Some(br#"["x"]"#.to_vec()) }),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: meta_named("foos.example.com"),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(ext::CustomResourceDefinitionNames { plural: s("foos"), kind: s("Foo"), ..Default::default() }),
            scope: s("Namespaced"),
            versions: vec![ext::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(ext::CustomResourceValidation { open_apiv3_schema: Some(props) }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        decode("apiextensions.k8s.io/v1", "CustomResourceDefinition", &crd),
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "foos.example.com"},
            "spec": {
                "group": "example.com", "names": {"plural": "foos", "kind": "Foo"}, "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "additionalProperties": false},
                        "list": {"type": "array", "items": {"type": "string"}, "default": ["x"]}
                    }}}
                }]
            }
        })
    );
}

#[test]
fn protobuf_go_duration_strings() {
    let cases = [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (3_723_000_000_000, "1h2m3s"),
        (-90_000_000_000, "-1m30s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ];
    for (ns, want) in cases {
        assert_eq!(go_duration(ns), want, "{ns}ns");
    }
}

// Bodies kubectl 1.33 sent to a capturing listener (`kubectl create ...`).
const KUBECTL_CONFIGMAP: &str =
    "6b3873000a0f0a0276311209436f6e6669674d6170121b0a110a017812001a0022002a0032003800420012060a01611201621a002200";
const KUBECTL_SECRET: &str = "6b3873000a0c0a027631120653656372657412240a110a017312001a0022002a00320038004200120d0a027077120768756e746572321a001a002200";
const KUBECTL_DEPLOYMENT: &str = "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bd010a1f0a0377656212001a0022002a003200380042005a0a0a036170701203776562128b010800120c0a0a0a0361707012037765621a710a1c0a0012001a0022002a003200380042005a0a0a036170701203776562125112330a056e67696e78120a6e67696e783a312e32372a00320a0a001000185022002a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a00280038001a0c0800100018002000280038001a002200";
const KUBECTL_SERVICE: &str = "6b3873000a0d0a02763112075365727669636512690a1f0a0373766312001a0022002a003200380042005a0a0a03617070120373766312420a1b0a0738302d38303830120354435018502207080010903f1a002800120a0a0361707012037376631a002209436c757374657249503a00420052005a00600068001a020a001a002200";
const KUBECTL_INGRESS: &str = "6b3873000a1f0a146e6574776f726b696e672e6b38732e696f2f76311207496e6772657373125e0a130a03696e6712001a0022002a00320038004200124312120a07666f6f2e636f6d12076d792d636572741a2d0a07666f6f2e636f6d12220a200a1e0a042f626172120f220d0a047376633112050a0010903f1a0545786163741a020a001a002200";
const KUBECTL_NAMESPACE: &str =
    "6b3873000a0f0a02763112094e616d657370616365121b0a130a036e733112001a0022002a0032003800420012001a020a001a002200";
const KUBECTL_QUOTA: &str = "6b3873000a130a027631120d5265736f7572636551756f746112400a110a017112001a0022002a0032003800420012290a0a0a0363707512030a01310a0e0a066d656d6f727912040a0231470a0b0a04706f647312030a01321a001a002200";
const KUBECTL_JOB: &str = "6b3873000a0f0a0862617463682f763112034a6f621282010a110a016a12001a0022002a00320038004200126332610a100a0012001a0022002a00320038004200124d122a0a016a120762757379626f781a046563686f1a0268692a0042006a007200800100880100900100a201001a054e65766572320042004a0052005800600068008201008a01009a0100c201001a082000280030003a001a002200";
const KUBECTL_CRONJOB: &str = "6b3873000a130a0862617463682f7631120743726f6e4a6f6212a4010a120a02636a12001a0022002a00320038004200128b010a0b2a2f35202a202a202a202a1a002a7a0a120a02636a12001a0022002a00320038004200126432620a100a0012001a0022002a00320038004200124e12270a02636a120762757379626f781a04646174652a0042006a007200800100880100900100a201001a094f6e4661696c757265320042004a0052005800600068008201008a01009a0100c201001a001a002200";
const KUBECTL_TOKEN_REQUEST: &str = "6b3873000a280a1861757468656e7469636174696f6e2e6b38732e696f2f7631120c546f6b656e52657175657374121a0a100a0012001a0022002a0032003800420012001a040a0012001a002200";

/// Each body next to the Go JSON of the same object, as
/// `kubectl create ... --dry-run=client -o json` printed it (less
/// `creationTimestamp: null`, which Kubernetes now omits: `omitzero`).
const KUBECTL_CASES: &[(&str, &str)] = &[
    (KUBECTL_CONFIGMAP, r#"{"apiVersion":"v1","data":{"a":"b"},"kind":"ConfigMap","metadata":{"name":"x"}}"#),
    (KUBECTL_SECRET, r#"{"apiVersion":"v1","data":{"pw":"aHVudGVyMg=="},"kind":"Secret","metadata":{"name":"s"}}"#),
    (
        KUBECTL_DEPLOYMENT,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"labels":{"app":"web"},"name":"web"},"spec":{"replicas":0,"selector":{"matchLabels":{"app":"web"}},"strategy":{},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1.27","name":"nginx","ports":[{"containerPort":80}],"resources":{}}]}}},"status":{}}"#,
    ),
    (
        KUBECTL_SERVICE,
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app":"svc"},"name":"svc"},"spec":{"ports":[{"name":"80-8080","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":"svc"},"type":"ClusterIP"},"status":{"loadBalancer":{}}}"#,
    ),
    (
        KUBECTL_INGRESS,
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"ing"},"spec":{"rules":[{"host":"foo.com","http":{"paths":[{"backend":{"service":{"name":"svc1","port":{"number":8080}}},"path":"/bar","pathType":"Exact"}]}}],"tls":[{"hosts":["foo.com"],"secretName":"my-cert"}]},"status":{"loadBalancer":{}}}"#,
    ),
    (KUBECTL_NAMESPACE, r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns1"},"spec":{},"status":{}}"#),
    (
        KUBECTL_QUOTA,
        r#"{"apiVersion":"v1","kind":"ResourceQuota","metadata":{"name":"q"},"spec":{"hard":{"cpu":"1","memory":"1G","pods":"2"}},"status":{}}"#,
    ),
    (
        KUBECTL_JOB,
        r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j"},"spec":{"template":{"metadata":{},"spec":{"containers":[{"command":["echo","hi"],"image":"busybox","name":"j","resources":{}}],"restartPolicy":"Never"}}},"status":{}}"#,
    ),
    (
        KUBECTL_CRONJOB,
        r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"cj"},"spec":{"jobTemplate":{"metadata":{"name":"cj"},"spec":{"template":{"metadata":{},"spec":{"containers":[{"command":["date"],"image":"busybox","name":"cj","resources":{}}],"restartPolicy":"OnFailure"}}}},"schedule":"*/5 * * * *"},"status":{}}"#,
    ),
    // kubectl create token: TokenRequestStatus.token and expirationTimestamp
    // have no omitempty, so Go shows their zero values.
    (
        KUBECTL_TOKEN_REQUEST,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","metadata":{},"spec":{},"status":{"expirationTimestamp":null,"token":""}}"#,
    ),
];

#[test]
fn protobuf_kubectl_bodies_match_go_json() {
    for (body, want) in KUBECTL_CASES {
        let want: Value = serde_json::from_str(want).unwrap();
        assert_eq!(decode_body(&hex(body)).unwrap(), want);
    }
}

#[test]
fn protobuf_errors() {
    let cm = hex(KUBECTL_CONFIGMAP);
    assert!(decode_body(b"").unwrap_err().contains("magic"));
    assert!(decode_body(b"{\"kind\":\"ConfigMap\"}").unwrap_err().contains("magic"));
    assert!(decode_body(&cm[4..]).unwrap_err().contains("magic"));
    assert!(decode_body(&cm[..cm.len() - 3]).is_err(), "truncated body");
    let unknown_kind = body("v1", "Gizmo", &core::ConfigMap::default());
    assert!(decode_body(&unknown_kind).unwrap_err().contains("Gizmo"));
    let unknown_group = body("example.com/v1", "Foo", &core::ConfigMap::default());
    assert!(decode_body(&unknown_group).unwrap_err().contains("example.com/v1"));
    let no_kind = body("v1", "", &core::ConfigMap::default());
    assert!(decode_body(&no_kind).is_err());
    // A string field sent as a varint.
    let mut raw = b"k8s\0".to_vec();
    raw.extend(
        Unknown {
            type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("ConfigMap") }),
            raw: Some(vec![0x0a, 0x02, 0x08, 0x01]), // metadata { name: varint 1 }
            content_encoding: None,
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert!(decode_body(&raw).unwrap_err().contains("wire type"));
    // Unknown field numbers of every wire type are skipped.
    let mut raw = b"k8s\0".to_vec();
    raw.extend(
        Unknown {
            type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("ConfigMap") }),
            raw: Some(vec![
                0xf8, 0x07, 0x05, 0xf9, 0x07, 1, 2, 3, 4, 5, 6, 7, 8, 0xfd, 0x07, 1, 2, 3, 4, 0xfa, 0x07, 0x01, 0x00,
            ]),
            content_encoding: None,
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert_eq!(decode_body(&raw).unwrap(), json!({"apiVersion": "v1", "kind": "ConfigMap"}));
}

#[test]
fn protobuf_packed_repeated_scalars() {
    // PodSecurityContext.supplementalGroups: Kubernetes writes it unpacked;
    // a packed run is read too.
    let mut sc = Vec::new();
    sc.extend([0x22, 0x03, 0x01, 0x02, 0x03]); // field 4 packed: 1, 2, 3
    sc.extend([0x20, 0x04]); // field 4 unpacked: 4
    let spec = [vec![0x72, sc.len() as u8], sc].concat(); // PodSpec.securityContext = 14
    let mut raw = b"k8s\0".to_vec();
    raw.extend(
        Unknown {
            type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("Pod") }),
            raw: Some([vec![0x12, spec.len() as u8], spec].concat()),
            content_encoding: None,
            content_type: None,
        }
        .encode_to_vec(),
    );
    assert_eq!(
        decode_body(&raw).unwrap(),
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"securityContext": {"supplementalGroups": [1, 2, 3, 4]}}})
    );
}

#[test]
fn protobuf_nesting_is_bounded() {
    use k8s_pb::api::apps::v1::ControllerRevision;
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    fn nested(depth: usize) -> ext::JsonSchemaProps {
        let mut p = ext::JsonSchemaProps { r#type: s("string"), ..Default::default() };
        for _ in 0..depth {
            p = ext::JsonSchemaProps { not: Some(Box::new(p)), ..Default::default() };
        }
        p
    }
    fn crd(props: ext::JsonSchemaProps) -> Vec<u8> {
        let crd = ext::CustomResourceDefinition {
            metadata: None,
            spec: Some(ext::CustomResourceDefinitionSpec {
                versions: vec![ext::CustomResourceDefinitionVersion {
                    schema: Some(ext::CustomResourceValidation { open_apiv3_schema: Some(props) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        body("apiextensions.k8s.io/v1", "CustomResourceDefinition", &crd)
    }
    let ok = crd(nested(180));
    // Objects inside RawExtensions inside objects ..., built without deep recursion.
    let mut deep = body("apps/v1", "ControllerRevision", &ControllerRevision::default());
    for _ in 0..1000 {
        let rev = ControllerRevision { data: Some(RawExtension { raw: Some(deep) }), ..Default::default() };
        deep = body("apps/v1", "ControllerRevision", &rev);
    }
    // Within a small stack, as on a runtime worker thread.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let v = decode_body(&ok).unwrap();
            let mut p = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            for _ in 0..180 {
                p = &p["not"];
            }
            assert_eq!(p, &json!({"type": "string"}));
            assert!(decode_body(&deep).unwrap_err().contains("nested too deeply"));
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn protobuf_fuzz_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0x6b38_7300);
    let mut samples: Vec<Vec<u8>> = KUBECTL_CASES.iter().map(|(h, _)| hex(h)).collect();
    let deploy = apps::Deployment {
        metadata: meta_named("web"),
        spec: Some(apps::DeploymentSpec { template: Some(pod_template()), ..Default::default() }),
        status: None,
    };
    samples.push(body("apps/v1", "Deployment", &deploy));
    for sample in &samples {
        // Every truncation.
        for n in 0..sample.len() {
            let _ = decode_body(&sample[..n]);
        }
        // Random byte flips, keeping the magic most of the time.
        for _ in 0..300 {
            let mut b = sample.clone();
            for _ in 0..rng.usize(1..4) {
                let from = if rng.bool() { 4 } else { 0 };
                let i = rng.usize(from..b.len());
                b[i] = rng.u8(..);
            }
            let _ = decode_body(&b);
        }
    }
    // Random bodies behind the magic and a plausible envelope.
    for _ in 0..3000 {
        let len = rng.usize(0..64);
        let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let _ = decode_body(&junk);
        let mut b = b"k8s\0".to_vec();
        b.extend(&junk);
        let _ = decode_body(&b);
        let kinds = [("v1", "Pod"), ("apps/v1", "Deployment"), ("apiextensions.k8s.io/v1", "CustomResourceDefinition")];
        let (api_version, kind) = kinds[rng.usize(..kinds.len())];
        let mut b = b"k8s\0".to_vec();
        b.extend(
            Unknown {
                type_meta: Some(TypeMeta { api_version: s(api_version), kind: s(kind) }),
                raw: Some(junk),
                content_encoding: None,
                content_type: None,
            }
            .encode_to_vec(),
        );
        let _ = decode_body(&b);
    }
}
