//! The labels and annotations every sandbox and container we create carries (the shared
//! convention: the kubelet finds a pod's runtime objects by them, also after a restart).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// A filter selecting one pod's sandboxes or containers.
pub fn by_uid(uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID.to_string(), uid.to_string())])
}

/// The labels of a pod's sandbox: the pod's own plus ours.
pub fn sandbox(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod.labels().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend(pod_identity(pod));
    labels
}

pub fn container(pod: &Pod, name: &str) -> HashMap<String, String> {
    let mut labels = pod_identity(pod);
    labels.insert(CONTAINER_NAME.to_string(), name.to_string());
    labels
}

fn pod_identity(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.to_string(), pod.name_any()),
        (POD_NAMESPACE.to_string(), pod.namespace().unwrap_or_default()),
        (POD_UID.to_string(), pod.uid().unwrap_or_default()),
    ])
}
