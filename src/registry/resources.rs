//! The table of served resources.

use std::sync::LazyLock;

use super::printers::{self, Printer};
use super::strategies;
use super::strategy::Strategy;
use super::typed::{self, Decoder};

/// Verbs of a fully writable resource, as discovery lists them.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// One served resource (group/version/plural), everything the generic path needs.
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Has a `/status` subresource: status is written only there.
    pub has_status: bool,
    /// Has a `/scale` subresource (autoscaling/v1 Scale over spec.replicas).
    pub has_scale: bool,
    /// Key segment under the etcd prefix, as upstream lays it out (`minions`, `services/specs` ...).
    pub etcd_resource: &'static str,
    /// The stored form: another group/version whose objects share the key space (events.k8s.io
    /// events are stored as core v1 events). None: stored as served.
    pub storage: Option<(&'static str, &'static str)>,
    pub strategy: &'static (dyn Strategy + Sync),
    pub printer: &'static Printer,
    pub decode: Decoder,
    /// A create-only review (authorization.k8s.io): answered by `handlers::reviews`,
    /// never stored, so it has no etcd keys and no watch cache.
    pub review: bool,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }
    pub fn status_verbs(&self) -> &'static [&'static str] {
        STATUS_VERBS
    }
}

macro_rules! resource {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, namespaced: $ns:expr,
     short: $short:expr, categories: $cat:expr, status: $status:expr, etcd: $etcd:expr,
     strategy: $strategy:expr, printer: $printer:expr, decode: $decode:expr $(, verbs: $verbs:expr)? $(, storage: $storage:expr)? $(, scale: $scale:expr)? $(, review: $review:expr)?) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            verbs: { let _v: &'static [&'static str] = ALL_VERBS; $( let _v = $verbs; )? _v },
            has_status: $status,
            has_scale: { let _s = false; $( let _s = $scale; )? _s },
            etcd_resource: $etcd,
            storage: { let _s: Option<(&'static str, &'static str)> = None; $( let _s = Some($storage); )? _s },
            strategy: $strategy,
            printer: $printer,
            decode: $decode,
            review: { let _r = false; $( let _r = $review; )? _r },
        }
    };
}

use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, coordination::v1 as coord, core::v1 as core};
use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz, rbac::v1 as rbac};
use k8s_openapi::api::{
    discovery::v1 as discovery, events::v1 as eventsv1, networking::v1 as net, policy::v1 as policy,
    scheduling::v1 as sched, storage::v1 as storage,
};

/// The one verb of a review.
const CREATE_ONLY: &[&str] = &["create"];

static RESOURCES: LazyLock<Vec<ResourceDef>> = LazyLock::new(|| {
    let all: &'static [&'static str] = &["all"];
    let none: &'static [&'static str] = &[];
    vec![
        // core/v1
        resource!("", "v1", "namespaces", "namespace", "Namespace", namespaced: false, short: &["ns"], categories: none,
            status: true, etcd: "namespaces", strategy: &strategies::NAMESPACE, printer: &printers::NAMESPACE,
            decode: typed::decoder::<core::Namespace>,
            verbs: &["create", "delete", "get", "list", "patch", "update", "watch"]),
        resource!("", "v1", "pods", "pod", "Pod", namespaced: true, short: &["po"], categories: all,
            status: true, etcd: "pods", strategy: &strategies::POD, printer: &printers::POD,
            decode: typed::decoder::<core::Pod>),
        resource!("", "v1", "nodes", "node", "Node", namespaced: false, short: &["no"], categories: none,
            status: true, etcd: "minions", strategy: &strategies::NODE, printer: &printers::NODE,
            decode: typed::decoder::<core::Node>),
        resource!("", "v1", "services", "service", "Service", namespaced: true, short: &["svc"], categories: all,
            status: true, etcd: "services/specs", strategy: &strategies::SERVICE, printer: &printers::SERVICE,
            decode: typed::decoder::<core::Service>,
            verbs: &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
        resource!("", "v1", "endpoints", "endpoints", "Endpoints", namespaced: true, short: &["ep"], categories: none,
            status: false, etcd: "services/endpoints", strategy: &strategies::PLAIN, printer: &printers::ENDPOINTS,
            decode: typed::decoder::<core::Endpoints>),
        resource!("", "v1", "configmaps", "configmap", "ConfigMap", namespaced: true, short: &["cm"], categories: none,
            status: false, etcd: "configmaps", strategy: &strategies::CONFIG_MAP, printer: &printers::CONFIG_MAP,
            decode: typed::decoder::<core::ConfigMap>),
        resource!("", "v1", "secrets", "secret", "Secret", namespaced: true, short: &[], categories: none,
            status: false, etcd: "secrets", strategy: &strategies::SECRET, printer: &printers::SECRET,
            decode: typed::decoder::<core::Secret>),
        resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", namespaced: true, short: &["sa"],
            categories: none, status: false, etcd: "serviceaccounts", strategy: &strategies::PLAIN,
            printer: &printers::SERVICE_ACCOUNT, decode: typed::decoder::<core::ServiceAccount>),
        resource!("", "v1", "events", "event", "Event", namespaced: true, short: &["ev"], categories: none,
            status: false, etcd: "events", strategy: &strategies::EVENT, printer: &printers::EVENT,
            decode: typed::decoder::<core::Event>),
        resource!("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", namespaced: false,
            short: &["pv"], categories: none, status: true, etcd: "persistentvolumes",
            strategy: &strategies::PERSISTENT_VOLUME, printer: &printers::PERSISTENT_VOLUME,
            decode: typed::decoder::<core::PersistentVolume>),
        resource!("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim",
            namespaced: true, short: &["pvc"], categories: none, status: true, etcd: "persistentvolumeclaims",
            strategy: &strategies::PERSISTENT_VOLUME_CLAIM, printer: &printers::PERSISTENT_VOLUME_CLAIM,
            decode: typed::decoder::<core::PersistentVolumeClaim>),
        resource!("", "v1", "replicationcontrollers", "replicationcontroller", "ReplicationController",
            namespaced: true, short: &["rc"], categories: all, status: true, etcd: "controllers",
            strategy: &strategies::REPLICATION_CONTROLLER, printer: &printers::REPLICATION_CONTROLLER,
            decode: typed::decoder::<core::ReplicationController>, scale: true),
        resource!("", "v1", "limitranges", "limitrange", "LimitRange", namespaced: true, short: &["limits"],
            categories: none, status: false, etcd: "limitranges", strategy: &strategies::LIMIT_RANGE,
            printer: &printers::LIMIT_RANGE, decode: typed::decoder::<core::LimitRange>),
        resource!("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", namespaced: true, short: &["quota"],
            categories: none, status: true, etcd: "resourcequotas", strategy: &strategies::PLAIN,
            printer: &printers::RESOURCE_QUOTA, decode: typed::decoder::<core::ResourceQuota>),
        // apps/v1
        resource!("apps", "v1", "deployments", "deployment", "Deployment", namespaced: true, short: &["deploy"],
            categories: all, status: true, etcd: "deployments", strategy: &strategies::DEPLOYMENT,
            printer: &printers::DEPLOYMENT, decode: typed::decoder::<apps::Deployment>, scale: true),
        resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", namespaced: true, short: &["rs"],
            categories: all, status: true, etcd: "replicasets", strategy: &strategies::REPLICA_SET,
            printer: &printers::REPLICA_SET, decode: typed::decoder::<apps::ReplicaSet>, scale: true),
        resource!("apps", "v1", "statefulsets", "statefulset", "StatefulSet", namespaced: true, short: &["sts"],
            categories: all, status: true, etcd: "statefulsets", strategy: &strategies::STATEFUL_SET,
            printer: &printers::STATEFUL_SET, decode: typed::decoder::<apps::StatefulSet>, scale: true),
        resource!("apps", "v1", "daemonsets", "daemonset", "DaemonSet", namespaced: true, short: &["ds"],
            categories: all, status: true, etcd: "daemonsets", strategy: &strategies::DAEMON_SET,
            printer: &printers::DAEMON_SET, decode: typed::decoder::<apps::DaemonSet>),
        resource!("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", namespaced: true,
            short: &[], categories: none, status: false, etcd: "controllerrevisions", strategy: &strategies::PLAIN,
            printer: &printers::CONTROLLER_REVISION, decode: typed::decoder::<apps::ControllerRevision>),
        // batch/v1
        resource!("batch", "v1", "jobs", "job", "Job", namespaced: true, short: &[], categories: all,
            status: true, etcd: "jobs", strategy: &strategies::JOB, printer: &printers::JOB,
            decode: typed::decoder::<batch::Job>),
        resource!("batch", "v1", "cronjobs", "cronjob", "CronJob", namespaced: true, short: &["cj"],
            categories: all, status: true, etcd: "cronjobs", strategy: &strategies::CRON_JOB,
            printer: &printers::CRON_JOB, decode: typed::decoder::<batch::CronJob>),
        // coordination.k8s.io/v1
        resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease", namespaced: true, short: &[],
            categories: none, status: false, etcd: "leases", strategy: &strategies::PLAIN,
            printer: &printers::LEASE, decode: typed::decoder::<coord::Lease>),
        // scheduling.k8s.io/v1
        resource!("scheduling.k8s.io", "v1", "priorityclasses", "priorityclass", "PriorityClass", namespaced: false,
            short: &["pc"], categories: none, status: false, etcd: "priorityclasses",
            strategy: &strategies::PRIORITY_CLASS, printer: &printers::PRIORITY_CLASS,
            decode: typed::decoder::<sched::PriorityClass>),
        // policy/v1
        resource!("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", namespaced: true,
            short: &["pdb"], categories: none, status: true, etcd: "poddisruptionbudgets",
            strategy: &strategies::POD_DISRUPTION_BUDGET, printer: &printers::POD_DISRUPTION_BUDGET,
            decode: typed::decoder::<policy::PodDisruptionBudget>),
        // storage.k8s.io/v1
        resource!("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", namespaced: false,
            short: &["sc"], categories: none, status: false, etcd: "storageclasses",
            strategy: &strategies::STORAGE_CLASS, printer: &printers::STORAGE_CLASS,
            decode: typed::decoder::<storage::StorageClass>),
        // networking.k8s.io/v1
        resource!("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", namespaced: true, short: &["ing"],
            categories: none, status: true, etcd: "ingress", strategy: &strategies::INGRESS,
            printer: &printers::INGRESS, decode: typed::decoder::<net::Ingress>),
        // discovery.k8s.io/v1
        resource!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", namespaced: true,
            short: &[], categories: none, status: false, etcd: "endpointslices", strategy: &strategies::PLAIN,
            printer: &printers::ENDPOINT_SLICE, decode: typed::decoder::<discovery::EndpointSlice>),
        // events.k8s.io/v1: the same stored objects as core/v1 events, converted on the way.
        resource!("events.k8s.io", "v1", "events", "event", "Event", namespaced: true, short: &["ev"],
            categories: none, status: false, etcd: "events", strategy: &strategies::EVENT,
            printer: &printers::EVENT, decode: typed::decoder::<eventsv1::Event>, storage: ("", "v1")),
        // rbac.authorization.k8s.io/v1
        resource!("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding",
            namespaced: false, short: &[], categories: none, status: false, etcd: "clusterrolebindings",
            strategy: &strategies::CLUSTER_ROLE_BINDING, printer: &printers::CLUSTER_ROLE_BINDING,
            decode: typed::decoder::<rbac::ClusterRoleBinding>),
        resource!("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", namespaced: false,
            short: &[], categories: none, status: false, etcd: "clusterroles", strategy: &strategies::CLUSTER_ROLE,
            printer: &printers::CLUSTER_ROLE, decode: typed::decoder::<rbac::ClusterRole>),
        resource!("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", namespaced: true,
            short: &[], categories: none, status: false, etcd: "rolebindings", strategy: &strategies::ROLE_BINDING,
            printer: &printers::ROLE_BINDING, decode: typed::decoder::<rbac::RoleBinding>),
        resource!("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", namespaced: true, short: &[],
            categories: none, status: false, etcd: "roles", strategy: &strategies::ROLE, printer: &printers::ROLE,
            decode: typed::decoder::<rbac::Role>),
        // authentication.k8s.io: who the caller is (`kubectl auth whoami`); v1beta1 too,
        // which kubectl 1.27 asks for (Kubernetes 1.33 has no schema for it: not typed)
        resource!("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview",
            namespaced: false, short: &[], categories: none, status: false, etcd: "", strategy: &strategies::REVIEW,
            printer: &printers::REVIEW, decode: typed::decoder::<authn::SelfSubjectReview>, verbs: CREATE_ONLY,
            review: true),
        // what a kubelet (Webhook authentication) asks about a bearer token it was shown
        resource!("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview",
            namespaced: false, short: &[], categories: none, status: false, etcd: "", strategy: &strategies::REVIEW,
            printer: &printers::REVIEW, decode: typed::decoder::<authn::TokenReview>, verbs: CREATE_ONLY,
            review: true),
        resource!("authentication.k8s.io", "v1beta1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview",
            namespaced: false, short: &[], categories: none, status: false, etcd: "", strategy: &strategies::REVIEW,
            printer: &printers::REVIEW, decode: typed::untyped, verbs: CREATE_ONLY, review: true),
        // authorization.k8s.io/v1: reviews, answered by the authorizers and never stored
        resource!("authorization.k8s.io", "v1", "localsubjectaccessreviews", "localsubjectaccessreview",
            "LocalSubjectAccessReview", namespaced: true, short: &[], categories: none, status: false, etcd: "",
            strategy: &strategies::REVIEW, printer: &printers::REVIEW,
            decode: typed::decoder::<authz::LocalSubjectAccessReview>, verbs: CREATE_ONLY, review: true),
        resource!("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
            "SelfSubjectAccessReview", namespaced: false, short: &[], categories: none, status: false, etcd: "",
            strategy: &strategies::REVIEW, printer: &printers::REVIEW,
            decode: typed::decoder::<authz::SelfSubjectAccessReview>, verbs: CREATE_ONLY, review: true),
        resource!("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "selfsubjectrulesreview",
            "SelfSubjectRulesReview", namespaced: false, short: &[], categories: none, status: false, etcd: "",
            strategy: &strategies::REVIEW, printer: &printers::REVIEW,
            decode: typed::decoder::<authz::SelfSubjectRulesReview>, verbs: CREATE_ONLY, review: true),
        resource!("authorization.k8s.io", "v1", "subjectaccessreviews", "subjectaccessreview", "SubjectAccessReview",
            namespaced: false, short: &[], categories: none, status: false, etcd: "", strategy: &strategies::REVIEW,
            printer: &printers::REVIEW, decode: typed::decoder::<authz::SubjectAccessReview>, verbs: CREATE_ONLY,
            review: true),
    ]
});

pub fn all_resources() -> &'static [ResourceDef] {
    &RESOURCES
}

/// Find a resource by group, version and plural name.
/// A resource ferrokube's own code names (a built-in kind): the table holds it, so a
/// miss is a programming error every test would catch, not something input can cause.
pub fn builtin(group: &str, version: &str, plural: &str) -> &'static ResourceDef {
    find_resource(group, version, plural)
        .unwrap_or_else(|| panic!("{group}/{version} {plural} is missing from the resource table"))
}

pub fn find_resource(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The group/versions served, in the order discovery lists them (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
