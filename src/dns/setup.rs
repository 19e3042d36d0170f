//! What a cluster needs around `ferrokube dns` (`ferrokube up` makes it): the
//! `kube-system/kube-dns` Service with kubeadm's ClusterIP, ports and labels but no
//! selector (the DNS is a host process that publishes its own EndpointSlice), and the
//! RBAC of its identity `system:kube-dns` (kubeadm's `system:coredns` rules, plus
//! writing EndpointSlices in kube-system).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The DNS Service's address: the 10th of the default service range 10.96.0.0/12.
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";
pub const SERVICE: &str = "kube-system/kube-dns";
/// The user of the DNS's client certificate.
pub const USER: &str = "system:kube-dns";
const ROLE: &str = "system:coredns";

/// Create what is missing; existing objects are left as they are.
pub async fn ensure_objects(client: &Client) -> anyhow::Result<()> {
    let system = |kind| json!({"name": kind, "namespace": "kube-system"});
    create(
        Api::<Service>::namespaced(client.clone(), "kube-system"),
        json!({
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
                "k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"}},
            "spec": {"clusterIP": CLUSTER_DNS_IP, "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
        }),
    )
    .await?;
    let watch = ["list", "watch"];
    create(
        Api::<ClusterRole>::all(client.clone()),
        json!({"metadata": {"name": ROLE}, "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch}]}),
    )
    .await?;
    let subjects = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]);
    create(
        Api::<ClusterRoleBinding>::all(client.clone()),
        json!({"metadata": {"name": ROLE}, "subjects": subjects,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE}}),
    )
    .await?;
    let publisher = "ferrokube:dns-endpoint-publisher";
    create(
        Api::<Role>::namespaced(client.clone(), "kube-system"),
        json!({"metadata": system(publisher), "rules": [{"apiGroups": ["discovery.k8s.io"],
               "resources": ["endpointslices"], "verbs": ["get", "create", "update", "patch", "delete"]}]}),
    )
    .await?;
    create(
        Api::<RoleBinding>::namespaced(client.clone(), "kube-system"),
        json!({"metadata": system(publisher), "subjects": subjects,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": publisher}}),
    )
    .await
}

async fn create<K>(api: Api<K>, object: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    match api.create(&Default::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => {
            Err(anyhow::Error::from(e).context(format!("creating {}", object.meta().name.as_deref().unwrap_or(""))))
        }
    }
}
