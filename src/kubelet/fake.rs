//! The fake runtime: pods bound to this process's nodes are reported as a kubelet
//! reports pods whose containers started — after `--fake-start-delay`, phase Running,
//! every condition True, init containers Completed, containers running and ready, a pod
//! IP from the node's podCIDR (or a private range) — and a pod being deleted is finished
//! (containers "stopped" at once, then the final delete with grace period 0 and the
//! pod's uid as precondition). Nothing runs; `kubectl logs/exec` have nothing to reach.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::node::Node;

pub struct Runtime {
    client: Client,
    nodes: HashMap<String, Node>,
    delay: Duration,
    /// Pods (uid) being started or deleted, so a burst of watch events acts once.
    busy: Mutex<HashSet<String>>,
    /// Per node: the next host number handed out as a pod IP.
    next_ip: Mutex<HashMap<String, u32>>,
    /// Per node: its podCIDR once IPAM gave one (it never changes after), so a pod
    /// costs no read of its Node.
    pod_cidrs: Mutex<HashMap<String, IpNet>>,
}

impl Runtime {
    pub fn new(client: Client, nodes: Vec<Node>, delay: Duration) -> Arc<Runtime> {
        Arc::new(Runtime {
            client,
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
            delay,
            busy: Mutex::default(),
            next_ip: Mutex::default(),
            pod_cidrs: Mutex::default(),
        })
    }

    /// Follow the pods of our nodes until the process ends.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::all(self.client.clone());
        // one node: only its pods (all a node's credentials may list); many: all pods
        let config = match self.nodes.keys().next() {
            Some(name) if self.nodes.len() == 1 => watcher::Config::default().fields(&format!("spec.nodeName={name}")),
            _ => watcher::Config::default(),
        };
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => self.clone().observe(pod),
                Ok(watcher::Event::Delete(pod)) => {
                    self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid(&pod));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying with backoff"),
            }
        }
        Ok(())
    }

    fn observe(self: Arc<Self>, pod: Pod) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| self.nodes.contains_key(n))
        else {
            return;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if !deleting && phase != "Pending" && !phase.is_empty() {
            return;
        }
        if !self.busy.lock().unwrap_or_else(|e| e.into_inner()).insert(uid(&pod)) && !deleting {
            return;
        }
        tokio::spawn(async move {
            let result = match deleting {
                true => self.finish_deletion(&pod).await,
                false => self.start(&pod, &node).await,
            };
            if let Err(e) = result {
                tracing::warn!(pod = %pod.name_any(), error = %format!("{e:#}"), "fake runtime");
                // let a later event try again
                self.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid(&pod));
            }
        });
    }

    async fn start(&self, pod: &Pod, node: &str) -> anyhow::Result<()> {
        tokio::time::sleep(self.delay).await;
        let node = &self.nodes[node];
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let ip = if host_network { node.ip.clone() } else { self.pod_ip(node).await };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let status = running_status(pod, &ip, &node.ip);
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        tracing::debug!(pod = %pod.name_any(), node = %node.name, ip, "fake pod running");
        Ok(())
    }

    async fn finish_deletion(&self, pod: &Pod) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn pod_cidr(&self, node: &Node) -> Option<IpNet> {
        if let Some(cidr) = self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()).get(&node.name) {
            return Some(*cidr);
        }
        let nodes: Api<NodeObject> = Api::all(node.client().clone());
        let cidr: IpNet = nodes.get_opt(&node.name).await.ok().flatten()?.spec?.pod_cidr?.parse().ok()?;
        self.pod_cidrs.lock().unwrap_or_else(|e| e.into_inner()).insert(node.name.clone(), cidr);
        Some(cidr)
    }

    /// The next address of the node's podCIDR (as IPAM gave it), else of 10.88.<i>.0/24.
    async fn pod_ip(&self, node: &Node) -> String {
        let cidr = self
            .pod_cidr(node)
            .await
            .unwrap_or_else(|| format!("10.88.{}.0/24", node.index % 256).parse().unwrap_or_else(|_| IpNet::default()));
        let n = {
            let mut next = self.next_ip.lock().unwrap_or_else(|e| e.into_inner());
            let counter = next.entry(node.name.clone()).or_insert(2);
            let n = *counter;
            *counter += 1;
            n
        };
        // wrap within the range, skipping the network address and .1 (the bridge)
        let hosts = || cidr.hosts().skip(1).take(65_000);
        match hosts().count() {
            0 => cidr.addr().to_string(),
            len => hosts().nth((n as usize - 2) % len).map_or_else(|| cidr.addr().to_string(), |ip| ip.to_string()),
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// What a kubelet reports for a pod whose containers all started.
fn running_status(pod: &Pod, ip: &str, host_ip: &str) -> Value {
    let t = Timestamp::now().to_string();
    let spec = pod.spec.clone().unwrap_or_default();
    let container_id = |name: &str| format!("fake://{}-{name}", uid(pod));
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": format!("fake://{}", c.image.clone().unwrap_or_default()),
                "containerID": container_id(&c.name), "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": t}},
            })
        })
        .collect();
    let inits: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": format!("fake://{}", c.image.clone().unwrap_or_default()),
                "containerID": container_id(&c.name), "ready": true, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}},
            })
        })
        .collect();
    let cond = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    let mut status = json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": t,
        "containerStatuses": containers,
    });
    if !inits.is_empty() {
        status["initContainerStatuses"] = json!(inits);
    }
    json!({"status": status})
}
