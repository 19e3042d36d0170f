//! The endpoints and EndpointSlice controllers: for every Service with a selector, the
//! addresses of the pods it selects, kept current as pods come, go and change readiness.
//!
//! Both work from one computation (`backends`): each selected pod that has an IP and has
//! not finished, its readiness (the pod's Ready condition, or always with
//! `publishNotReadyAddresses`), whether it is terminating, and the service's ports
//! resolved against it (a named targetPort looks up the pod's container port; a pod
//! without it serves no port of that name). The core/v1 Endpoints of the same name get
//! ready pods in `addresses` and the rest in `notReadyAddresses`, pods grouped into
//! subsets by the ports they serve; EndpointSlices (`<service>-<random>`, at most 100
//! endpoints each, owned by the Service and labelled `kubernetes.io/service-name`) carry
//! ready/serving/terminating conditions, terminating pods included as upstream does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use super::runtime::{Ctx, Informer, WorkQueue, is_not_found, key_of, split_key};

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MAX_PER_SLICE: usize = 100;

/// (port name, number, protocol) of a service port a pod serves.
type ServedPort = (String, i32, String);

/// One pod behind a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    pod: String,
    uid: String,
    ports: Vec<ServedPort>,
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The container port a service port's targetPort names on this pod.
fn resolve_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            let ports = containers.iter().flat_map(|c| c.ports.iter().flatten());
            ports.into_iter().find(|p| p.name.as_deref() == Some(name.as_str())).map(|p| p.container_port)
        }
    }
}

fn backend(svc: &Service, pod: &Pod) -> Option<Backend> {
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let publish = spec.publish_not_ready_addresses == Some(true);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = (publish || pod_ready(pod)) && !terminating;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let number = resolve_port(pod, p.target_port.as_ref(), p.port)?;
            Some((p.name.clone().unwrap_or_default(), number, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
        .collect();
    let pod_spec = pod.spec.as_ref();
    let hostname = pod_spec
        .and_then(|s| s.hostname.clone())
        .filter(|_| pod_spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref());
    Some(Backend {
        ip,
        ready,
        serving: publish || pod_ready(pod),
        terminating,
        node: pod_spec.and_then(|s| s.node_name.clone()),
        hostname,
        pod: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ports,
    })
}

/// What each controller shares: the service and pod informers and the mapping from pod
/// changes to the services to sync.
struct Shared {
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
}

impl Shared {
    fn new(ctx: &Ctx, queue: &Arc<WorkQueue>) -> Arc<Shared> {
        let shared = Arc::new(Shared { services: ctx.informer::<Service>(), pods: ctx.informer::<Pod>() });
        let q = queue.clone();
        shared.services.on_change(move |ev| q.add(key_of(ev.object().as_ref())));
        let (q, s) = (queue.clone(), shared.clone());
        shared.pods.on_change(move |ev| {
            let (old, new) = match ev {
                super::runtime::Event::Updated { old, new } => (Some(*old), *new),
                other => (None, other.object()),
            };
            let ns = new.metadata.namespace.clone().unwrap_or_default();
            for svc in s.services.list_namespace(&ns) {
                if selects(&svc, new) || old.is_some_and(|o| selects(&svc, o)) {
                    q.add(key_of(svc.as_ref()));
                }
            }
        });
        shared
    }

    /// The service (if it exists and has a selector) and its backends, sorted.
    fn backends(&self, key: &str) -> Option<(Arc<Service>, Vec<Backend>)> {
        let svc = self.services.get(key)?;
        svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty())?;
        let (ns, _) = split_key(key);
        let mut backends: Vec<Backend> =
            self.pods.list_namespace(ns).iter().filter(|p| selects(&svc, p)).filter_map(|p| backend(&svc, p)).collect();
        backends.sort();
        Some((svc, backends))
    }
}

fn target_ref(ns: &str, b: &Backend) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: Some(b.pod.clone()),
        namespace: Some(ns.to_string()),
        uid: Some(b.uid.clone()),
        ..Default::default()
    }
}

// ---- core/v1 Endpoints ----

pub fn start(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("endpoint");
    let shared = Shared::new(ctx, &queue);
    let endpoints = ctx.informer::<Endpoints>();
    let q = queue.clone();
    // an Endpoints changed or deleted by someone else is put back
    endpoints.on_change(move |ev| q.add(key_of(ev.object().as_ref())));
    let client = ctx.client.clone();
    ctx.run_workers(queue, 5, move |key| {
        let (shared, endpoints, client) = (shared.clone(), endpoints.clone(), client.clone());
        async move { sync_endpoints(&shared, &endpoints, &client, &key).await }
    });
    Ok(())
}

/// Subsets grouping the backends by the ports they serve, as upstream repacks them.
fn subsets(ns: &str, backends: &[Backend]) -> Vec<EndpointSubset> {
    // port set → (ready addresses, not-ready addresses)
    type Addresses = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut by_ports: BTreeMap<Vec<ServedPort>, Addresses> = BTreeMap::new();
    for b in backends.iter().filter(|b| !b.terminating && !b.ports.is_empty()) {
        let address = EndpointAddress {
            ip: b.ip.clone(),
            hostname: b.hostname.clone(),
            node_name: b.node.clone(),
            target_ref: Some(target_ref(ns, b)),
        };
        let entry = by_ports.entry(b.ports.clone()).or_default();
        if b.ready { entry.0.push(address) } else { entry.1.push(address) }
    }
    by_ports
        .into_iter()
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: Some(name).filter(|n| !n.is_empty()),
                        port,
                        protocol: Some(protocol),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
        .collect()
}

async fn sync_endpoints(
    shared: &Shared,
    endpoints: &Informer<Endpoints>,
    client: &kube::Client,
    key: &str,
) -> anyhow::Result<()> {
    let (ns, name) = split_key(key);
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let existing = endpoints.get(key);
    let Some((svc, backends)) = shared.backends(key) else {
        // the service is gone: so is its Endpoints (one of a selector-less service,
        // written by its owner, stays)
        if existing.is_some() && shared.services.get(key).is_none() {
            match api.delete(name, &DeleteParams::default()).await {
                Err(e) if !is_not_found(&e) => return Err(e).context("deleting the Endpoints of a deleted service"),
                _ => {}
            }
        }
        return Ok(());
    };
    let subsets = subsets(ns, &backends);
    let labels = svc.metadata.labels.clone();
    if let Some(current) = &existing
        && current.subsets.clone().unwrap_or_default() == subsets
        && current.metadata.labels == labels
    {
        return Ok(());
    }
    let mut desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels,
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    };
    let result = match &existing {
        Some(current) => {
            desired.metadata.resource_version = current.metadata.resource_version.clone();
            desired.metadata.annotations = current.metadata.annotations.clone();
            api.replace(name, &PostParams::default(), &desired).await
        }
        None => api.create(&PostParams::default(), &desired).await,
    };
    result.map(|_| ()).with_context(|| format!("writing the Endpoints of {key}"))
}

// ---- discovery.k8s.io/v1 EndpointSlices ----

pub fn start_slices(ctx: &Ctx) -> anyhow::Result<()> {
    let queue = ctx.queue("endpoint_slice");
    let shared = Shared::new(ctx, &queue);
    let slices = ctx.informer::<EndpointSlice>();
    let q = queue.clone();
    slices.on_change(move |ev| {
        let slice = ev.object();
        let labels = slice.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(SLICE_CONTROLLER)
            && let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME))
        {
            q.add(format!("{}/{svc}", slice.metadata.namespace.as_deref().unwrap_or_default()));
        }
    });
    let client = ctx.client.clone();
    ctx.run_workers(queue, 5, move |key| {
        let (shared, slices, client) = (shared.clone(), slices.clone(), client.clone());
        async move { sync_slices(&shared, &slices, &client, &key).await }
    });
    Ok(())
}

/// The slices' content for a service: endpoints in chunks of 100 per distinct port set.
fn desired_slices(ns: &str, backends: &[Backend]) -> Vec<(Vec<SlicePort>, Vec<Endpoint>)> {
    let mut by_ports: BTreeMap<Vec<ServedPort>, Vec<Endpoint>> = BTreeMap::new();
    for b in backends {
        let endpoint = Endpoint {
            addresses: vec![b.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(b.ready),
                serving: Some(b.serving),
                terminating: Some(b.terminating),
            }),
            hostname: b.hostname.clone(),
            node_name: b.node.clone(),
            target_ref: Some(target_ref(ns, b)),
            ..Default::default()
        };
        by_ports.entry(b.ports.clone()).or_default().push(endpoint);
    }
    let mut out = Vec::new();
    for (ports, endpoints) in by_ports {
        let ports: Vec<SlicePort> = ports
            .into_iter()
            .map(|(name, port, protocol)| SlicePort {
                name: Some(name),
                port: Some(port),
                protocol: Some(protocol),
                ..Default::default()
            })
            .collect();
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    out
}

fn same_content(slice: &EndpointSlice, ports: &[SlicePort], endpoints: &[Endpoint]) -> bool {
    slice.ports.as_deref().unwrap_or_default() == ports && slice.endpoints.as_slice() == endpoints
}

async fn sync_slices(
    shared: &Shared,
    slices: &Informer<EndpointSlice>,
    client: &kube::Client,
    key: &str,
) -> anyhow::Result<()> {
    let (ns, name) = split_key(key);
    let Some((svc, backends)) = shared.backends(key) else {
        // the garbage collector removes the slices of a deleted service (they are owned)
        return Ok(());
    };
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let mut existing: Vec<Arc<EndpointSlice>> = slices
        .list_namespace(ns)
        .into_iter()
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            labels.and_then(|l| l.get(SERVICE_NAME)).map(String::as_str) == Some(name)
                && labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(SLICE_CONTROLLER)
        })
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let mut desired = desired_slices(ns, &backends);
    // a service with no backends still has one (empty) slice, as upstream
    if desired.is_empty() {
        desired.push((Vec::new(), Vec::new()));
    }
    // keep the slices whose content is already right, rewrite the rest in place
    let mut spare: Vec<Arc<EndpointSlice>> = Vec::new();
    let mut todo: Vec<(Vec<SlicePort>, Vec<Endpoint>)> = Vec::new();
    let mut unmatched: BTreeSet<usize> = (0..existing.len()).collect();
    for (ports, endpoints) in desired {
        match unmatched.iter().copied().find(|i| same_content(&existing[*i], &ports, &endpoints)) {
            Some(i) => {
                unmatched.remove(&i);
            }
            None => todo.push((ports, endpoints)),
        }
    }
    spare.extend(unmatched.into_iter().map(|i| existing[i].clone()));
    for (ports, endpoints) in todo {
        let slice = slice_object(&svc, ports, endpoints);
        match spare.pop() {
            Some(old) => {
                let mut slice = slice;
                slice.metadata.name = old.metadata.name.clone();
                slice.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(&old.name_any(), &PostParams::default(), &slice)
                    .await
                    .context("updating an EndpointSlice")?;
            }
            None => {
                api.create(&PostParams::default(), &slice).await.context("creating an EndpointSlice")?;
            }
        }
    }
    for extra in spare {
        match api.delete(&extra.name_any(), &DeleteParams::default()).await {
            Err(e) if !is_not_found(&e) => return Err(e).context("deleting a surplus EndpointSlice"),
            _ => {}
        }
    }
    Ok(())
}

fn slice_object(svc: &Service, ports: Vec<SlicePort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let name = svc.name_any();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), SLICE_CONTROLLER.into());
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.clone(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    }
}
