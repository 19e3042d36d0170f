//! core/v1 kinds other than pods, services and endpoints, and leases.

use serde_json::{Value, json};

use super::{
    AGE, Column, NAME, Printer, access_modes, age, col, created_at, deleting, int, list, map_len, name, or_none, since,
    text, time_at, wide,
};
use crate::registry::{events, meta};

pub static NAMESPACE: Printer = Printer {
    columns: &[NAME, col("Status", "string", "The namespace's lifecycle phase."), AGE],
    cells: |o| vec![name(o), json!(text(o, "status.phase")), age(o)],
};

pub static CONFIG_MAP: Printer = Printer {
    columns: &[NAME, col("Data", "string", "Number of keys in data and binaryData."), AGE],
    cells: |o| vec![name(o), json!(map_len(o, "data") + map_len(o, "binaryData")), age(o)],
};

pub static SECRET: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "The kind of secret, which decides the keys it must hold."),
        col("Data", "string", "Number of keys in data."),
        AGE,
    ],
    cells: |o| vec![name(o), json!(text(o, "type")), json!(map_len(o, "data")), age(o)],
};

pub static PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", "The priority pods of this class get."),
        col("Global-Default", "boolean", "Whether pods naming no class get this one."),
        AGE,
        col("PreemptionPolicy", "string", "Whether pods of this class may preempt lower-priority pods."),
    ],
    cells: |o| {
        let default = o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false);
        vec![name(o), json!(int(o, "value")), json!(default), age(o), json!(text(o, "preemptionPolicy"))]
    },
};

pub static STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", "The volume plug-in or CSI driver that provisions volumes of this class."),
        col("ReclaimPolicy", "string", "What happens to a provisioned volume when its claim is released."),
        col("VolumeBindingMode", "string", "When volumes are bound and provisioned."),
        col("AllowVolumeExpansion", "string", "Whether claims of this class may grow."),
        AGE,
    ],
    cells: |o| {
        // upstream marks the default class in the name column
        let default = meta::metadata(o)
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
            .and_then(Value::as_str)
            == Some("true");
        let name_cell = if default { json!(format!("{} (default)", meta::name(o))) } else { name(o) };
        let expand = o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false);
        vec![
            name_cell,
            json!(text(o, "provisioner")),
            json!(text(o, "reclaimPolicy")),
            json!(text(o, "volumeBindingMode")),
            json!(expand.to_string()),
            age(o),
        ]
    },
};

pub static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[NAME, col("Secrets", "string", "Number of secrets listed on the service account."), AGE],
    cells: |o| vec![name(o), json!(list(o, "secrets").len()), age(o)],
};

pub static LEASE: Printer = Printer {
    columns: &[NAME, col("Holder", "string", "Identity of the current holder of the lease."), AGE],
    cells: |o| vec![name(o), json!(text(o, "spec.holderIdentity")), age(o)],
};

/// LimitRanges have no printer upstream, so they get the generic table: the name and
/// the creation time as an RFC 3339 timestamp.
pub static LIMIT_RANGE: Printer =
    Printer { columns: &[NAME, col("Created At", "date", AGE.description)], cells: |o| vec![name(o), created_at(o)] };

pub static RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        col("Request", "string", "Used out of hard limit for each quota item that is not a limits.* item."),
        col("Limit", "string", "Used out of hard limit for each limits.* quota item."),
        AGE,
    ],
    cells: |o| {
        let hard = meta::value_at(o, "status.hard").and_then(Value::as_object);
        let mut names: Vec<&String> = hard.into_iter().flat_map(|h| h.keys()).collect();
        names.sort();
        let (mut requests, mut limits) = (Vec::new(), Vec::new());
        for res in names {
            let amount = |m: &str| {
                meta::value_at(o, m).and_then(|v| v.get(res)).and_then(Value::as_str).unwrap_or("0").to_string()
            };
            let item = format!("{res}: {}/{}", amount("status.used"), amount("status.hard"));
            match res.split_once('.') {
                Some(("limits", _)) => limits.push(item),
                _ => requests.push(item),
            }
        }
        vec![name(o), json!(requests.join(", ")), json!(limits.join(", ")), age(o)]
    },
};

pub static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Whether the node is Ready, and whether scheduling on it is disabled."),
        col("Roles", "string", "Roles taken from the node-role.kubernetes.io/* labels."),
        AGE,
        col("Version", "string", "Version of the kubelet on the node."),
        wide("Internal-IP", "string", "The node's first InternalIP address."),
        wide("External-IP", "string", "The node's first ExternalIP address."),
        wide("OS-Image", "string", "Operating system image reported by the kubelet."),
        wide("Kernel-Version", "string", "Kernel version reported by the kubelet."),
        wide("Container-Runtime", "string", "Container runtime name and version reported by the kubelet."),
    ],
    cells: node_cells,
};

fn node_cells(node: &Value) -> Vec<Value> {
    let ready = list(node, "status.conditions").iter().rev().find(|c| text(c, "type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, "status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if meta::value_at(node, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles: Vec<&str> = meta::labels(node)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => Some(role),
            None if k == "kubernetes.io/role" => v.as_str(),
            None => None,
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    roles.dedup();

    let address = |ty: &str| {
        let found = list(node, "status.addresses").iter().find(|a| text(a, "type") == ty);
        or_none(found.map_or("", |a| text(a, "address")))
    };
    let info = |field: &str| match text(node, &format!("status.nodeInfo.{field}")) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        name(node),
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        age(node),
        json!(text(node, "status.nodeInfo.kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// The storage class of a PV or PVC: the beta annotation wins over the spec field.
fn storage_class(obj: &Value) -> &str {
    meta::metadata(obj)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(obj, "spec.storageClassName"))
}

/// The phase, or Terminating while the object is being deleted.
fn phase(obj: &Value) -> &str {
    if deleting(obj) { "Terminating" } else { text(obj, "status.phase") }
}

fn or_unset(obj: &Value, path: &str) -> String {
    meta::str_at(obj, path).unwrap_or("<unset>").to_string()
}

const STORAGE_CLASS_DOC: &str = "Name of the StorageClass the volume belongs to.";
const VOLUME_ATTRIBUTES_CLASS: &str = "Name of the VolumeAttributesClass, <unset> when there is none.";
const VOLUME_MODE: &str = "Whether the volume is a filesystem or a raw block device.";

pub static PERSISTENT_VOLUME: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", "Storage capacity of the volume."),
        col("Access Modes", "string", "Ways the volume can be mounted (RWO, ROX, RWX, RWOP)."),
        col("Reclaim Policy", "string", "What happens to the volume when its claim is released."),
        col("Status", "string", "The volume's lifecycle phase."),
        col("Claim", "string", "namespace/name of the claim bound to the volume."),
        col("StorageClass", "string", STORAGE_CLASS_DOC),
        col("VolumeAttributesClass", "string", VOLUME_ATTRIBUTES_CLASS),
        col("Reason", "string", "Why the volume is in its phase, if it failed."),
        AGE,
        wide("VolumeMode", "string", VOLUME_MODE),
    ],
    cells: |o| {
        let claim = match meta::value_at(o, "spec.claimRef") {
            Some(r) if r.is_object() => format!("{}/{}", text(r, "namespace"), text(r, "name")),
            _ => String::new(),
        };
        vec![
            name(o),
            json!(meta::str_at(o, "spec.capacity.storage").unwrap_or("0")),
            json!(access_modes(list(o, "spec.accessModes"))),
            json!(text(o, "spec.persistentVolumeReclaimPolicy")),
            json!(phase(o)),
            json!(claim),
            json!(storage_class(o)),
            json!(or_unset(o, "spec.volumeAttributesClassName")),
            json!(text(o, "status.reason")),
            age(o),
            json!(or_unset(o, "spec.volumeMode")),
        ]
    },
};

pub static PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The claim's lifecycle phase."),
        col("Volume", "string", "Name of the volume bound to the claim."),
        col("Capacity", "string", "Storage capacity of the bound volume."),
        col("Access Modes", "string", "Ways the bound volume can be mounted (RWO, ROX, RWX, RWOP)."),
        col("StorageClass", "string", STORAGE_CLASS_DOC),
        col("VolumeAttributesClass", "string", VOLUME_ATTRIBUTES_CLASS),
        AGE,
        wide("VolumeMode", "string", VOLUME_MODE),
    ],
    cells: |o| {
        let volume = text(o, "spec.volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            let capacity = meta::str_at(o, "status.capacity.storage").unwrap_or("0").to_string();
            (capacity, access_modes(list(o, "status.accessModes")))
        };
        vec![
            name(o),
            json!(phase(o)),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(o)),
            json!(or_unset(o, "spec.volumeAttributesClassName")),
            age(o),
            json!(or_unset(o, "spec.volumeMode")),
        ]
    },
};

pub static EVENT: Printer = Printer {
    columns: &[
        col("Last Seen", "string", "Time since the event was last observed."),
        col("Type", "string", "Normal or Warning."),
        col("Reason", "string", "Short machine-readable reason for the event."),
        col("Object", "string", "kind/name of the object the event is about."),
        wide("Subobject", "string", "Field path within the object, such as a container."),
        wide("Source", "string", "Component (and host) that reported the event."),
        col("Message", "string", "Human-readable description of the event."),
        wide("First Seen", "string", "Time since the event was first observed."),
        wide("Count", "string", "How many times the event has occurred."),
        Column { priority: 1, ..NAME },
    ],
    cells: event_cells,
};

/// Both core/v1 and events.k8s.io/v1 events: the latter is read through its core form.
fn event_cells(obj: &Value) -> Vec<Value> {
    let ev = events::to_core(obj);
    let first = match time_at(&ev, "firstTimestamp") {
        Some(t) => since(Some(t)),
        None => since(time_at(&ev, "eventTime")),
    };
    let mut last = match time_at(&ev, "lastTimestamp") {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = int(&ev, "count");
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last = since(time_at(series, "lastObservedTime"));
        count = int(series, "count");
    } else if count == 0 {
        count = 1;
    }

    let kind = text(&ev, "involvedObject.kind").to_lowercase();
    let target = match text(&ev, "involvedObject.name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let either = |a: &str, b: &str| Some(text(&ev, a)).filter(|s| !s.is_empty()).unwrap_or_else(|| text(&ev, b));
    let component = either("source.component", "reportingComponent");
    let source = match either("source.host", "reportingInstance") {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    };
    vec![
        json!(last),
        json!(text(&ev, "type")),
        json!(text(&ev, "reason")),
        json!(target),
        json!(text(&ev, "involvedObject.fieldPath")),
        json!(source),
        json!(text(&ev, "message").trim()),
        json!(first),
        json!(count),
        name(&ev),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::{ago, test_object};
    use super::*;

    fn row(p: &Printer, name: &str, body: Value) -> Vec<Value> {
        (p.cells)(&test_object(name, body))
    }

    #[test]
    fn simple_kinds() {
        assert_eq!(
            row(&NAMESPACE, "prod", json!({"status": {"phase": "Active"}}))[..2],
            [json!("prod"), json!("Active")]
        );
        let cm = row(&CONFIG_MAP, "cfg", json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}));
        assert_eq!(cm[1], 3);
        let secret = row(&SECRET, "tls", json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}));
        assert_eq!(secret[..3], [json!("tls"), json!("kubernetes.io/tls"), json!(2)]);
        assert_eq!(row(&SERVICE_ACCOUNT, "default", json!({"secrets": [{"name": "t"}]}))[1], 1);
        assert_eq!(row(&LEASE, "kcm", json!({"spec": {"holderIdentity": "node-1_abc"}}))[1], "node-1_abc");
        assert_eq!(row(&LEASE, "kcm", json!({"spec": {}}))[1], "");
    }

    #[test]
    fn limit_range_created_at() {
        let mut lr = test_object("limits", json!({}));
        lr["metadata"]["creationTimestamp"] = json!("2024-05-01T12:00:00+02:00");
        assert_eq!((LIMIT_RANGE.cells)(&lr), vec![json!("limits"), json!("2024-05-01T10:00:00Z")]);
        assert_eq!(LIMIT_RANGE.columns[1].ty, "date");
        assert_eq!((LIMIT_RANGE.cells)(&json!({}))[1], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn resource_quota_requests_and_limits() {
        let q = row(
            &RESOURCE_QUOTA,
            "compute",
            json!({"status": {
                "hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "2Gi", "limits.cpu": "2"},
                "used": {"pods": "1", "requests.cpu": "500m", "limits.cpu": "1"},
            }}),
        );
        assert_eq!(q[1], "pods: 1/10, requests.cpu: 500m/1");
        assert_eq!(q[2], "limits.cpu: 1/2, limits.memory: 0/2Gi");
        assert_eq!(RESOURCE_QUOTA.columns[3].name, "Age");
        assert_eq!(row(&RESOURCE_QUOTA, "empty", json!({}))[1..3], [json!(""), json!("")]);
    }

    #[test]
    fn nodes() {
        let mut n = test_object(
            "cp-1",
            json!({
                "spec": {"unschedulable": true},
                "status": {
                    "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "Hostname", "address": "cp-1"}, {"type": "InternalIP", "address": "10.0.0.10"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                 "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.22"},
                },
            }),
        );
        n["metadata"]["labels"] = json!({"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master",
            "node-role.kubernetes.io/": "", "kubernetes.io/hostname": "cp-1"});
        let c = (NODE.cells)(&n);
        assert_eq!(c[1], "Ready,SchedulingDisabled");
        assert_eq!(c[2], "control-plane,master");
        assert_eq!(c[4], "v1.33.1");
        assert_eq!(
            c[5..],
            [
                json!("10.0.0.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("containerd://1.7.22")
            ]
        );

        let not_ready = row(&NODE, "w", json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        assert_eq!(not_ready[1..3], [json!("NotReady"), json!("<none>")]);
        let bare = row(&NODE, "w", json!({}));
        assert_eq!(bare[1], "Unknown");
        assert_eq!(bare[4], "");
        assert_eq!(bare[7], "<unknown>");
    }

    #[test]
    fn persistent_volumes_and_claims() {
        let pv = row(
            &PERSISTENT_VOLUME,
            "pv-1",
            json!({
                "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                         "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
                "status": {"phase": "Bound"},
            }),
        );
        assert_eq!(
            pv[1..9],
            [
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!("")
            ]
        );
        assert_eq!(pv[10], "Filesystem");

        let pending = row(
            &PERSISTENT_VOLUME_CLAIM,
            "data",
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                            "storageClassName": "standard"},
                   "status": {"phase": "Pending"}}),
        );
        assert_eq!(
            pending[1..7],
            [json!("Pending"), json!(""), json!(""), json!(""), json!("standard"), json!("<unset>")]
        );
        assert_eq!(pending[8], "<unset>");

        let mut bound = test_object(
            "data",
            json!({"spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeAttributesClassName": "gold",
                            "volumeMode": "Block"},
                   "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}}),
        );
        bound["metadata"]["annotations"] = json!({"volume.beta.kubernetes.io/storage-class": "legacy"});
        bound["metadata"]["deletionTimestamp"] = json!("2020-01-02T00:00:00Z");
        let c = (PERSISTENT_VOLUME_CLAIM.cells)(&bound);
        assert_eq!(
            c[1..7],
            [json!("Terminating"), json!("pv-1"), json!("10Gi"), json!("RWO"), json!("legacy"), json!("gold")]
        );
        assert_eq!(c[8], "Block");
    }

    #[test]
    fn core_event() {
        let ev = row(
            &EVENT,
            "web.17a3",
            json!({
                "apiVersion": "v1", "kind": "Event", "type": "Normal", "reason": "Pulling",
                "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
                "message": "Pulling image \"nginx\"\n", "source": {"component": "kubelet", "host": "node-1"},
                "firstTimestamp": ago(40 * 60), "lastTimestamp": ago(20 * 60), "count": 3,
            }),
        );
        assert_eq!(
            ev,
            vec![
                json!("20m"),
                json!("Normal"),
                json!("Pulling"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Pulling image \"nginx\""),
                json!("40m"),
                json!(3),
                json!("web.17a3")
            ]
        );
    }

    #[test]
    fn events_k8s_io_event() {
        let micro = (chrono::Utc::now() - chrono::Duration::minutes(40)).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let body = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "type": "Normal", "reason": "ScalingReplicaSet",
            "eventTime": micro, "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up replica set web-5d to 3", "reportingController": "deployment-controller",
            "reportingInstance": "", "action": "Scale",
        });
        let ev = row(&EVENT, "web.1", body.clone());
        assert_eq!(ev[0], "40m", "last seen falls back to the first time seen");
        assert_eq!(ev[7], "40m");
        assert_eq!(
            ev[1..7],
            [
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up replica set web-5d to 3")
            ]
        );
        assert_eq!(ev[8], 1, "singleton events count once");

        let mut series = body;
        series["series"] = json!({"count": 5, "lastObservedTime": ago(20 * 60)});
        series["deprecatedSource"] = json!({"component": "kcm", "host": "cp-1"});
        series["regarding"] = json!({"kind": "Node"});
        let ev = row(&EVENT, "web.1", series);
        assert_eq!(ev[0], "20m");
        assert_eq!(ev[3], "node");
        assert_eq!(ev[5], "kcm, cp-1");
        assert_eq!(ev[8], 5);
    }
}
