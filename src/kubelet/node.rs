//! A node as its kubelet keeps it: registered (created, or its status refreshed when it
//! exists), its Lease renewed, its status (conditions' heartbeats) re-posted every
//! five minutes as upstream's kubelet does once leases carry the liveness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node as NodeObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::KubeletArgs;

/// How often the node status is re-posted when nothing changed (upstream's 5 minutes).
const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(300);
const LEASE_SECONDS: i32 = 40;

/// What every node of this process looks like.
pub struct Shape {
    cpu: String,
    memory: String,
    pods: u32,
    labels: BTreeMap<String, String>,
    /// The kubelet API's port, published as status.daemonEndpoints for the API server.
    kubelet_port: u16,
    /// `containerd://1.6.20` for a real runtime.
    pub runtime_version: String,
    pub os_image: String,
    /// The node's InternalIP (a real node's address; fake nodes get loopback ones).
    pub ip: Option<String>,
}

pub(crate) fn machine_memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(4 * 1024 * 1024);
    format!("{kib}Ki")
}

impl Shape {
    pub fn from_args(args: &KubeletArgs) -> anyhow::Result<Shape> {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut labels = BTreeMap::new();
        for pair in args.node_labels.iter().filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').with_context(|| format!("--node-labels: {pair:?} is not key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(Shape {
            cpu: args.fake_cpu.clone().unwrap_or_else(|| cpus.to_string()),
            memory: args.fake_memory.clone().unwrap_or_else(machine_memory),
            pods: args.max_pods,
            labels,
            kubelet_port: args.server.port,
            runtime_version: "fake://0.1.0".into(),
            os_image: "ferrokube fake node".into(),
            ip: None,
        })
    }
}

/// The distribution's name as /etc/os-release gives it (`Debian GNU/Linux 12 (bookworm)`).
pub fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

#[derive(Clone)]
pub struct Node {
    pub name: String,
    /// The node's address (127.0.0.1 for the first, 127.0.1.<i> for the others).
    pub ip: String,
    /// Where pod IPs come from: the node's podCIDR once IPAM gave one, else a private range.
    pub index: usize,
    client: Client,
    uid: Arc<String>,
    /// Why the node is not Ready (the runtime is down), or None when it is.
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

/// Where in the renewal interval node `index` renews, as a fraction: the golden-ratio
/// sequence, which spreads any number of nodes evenly (node 0, a real kubelet, at once).
fn spread(index: usize) -> f64 {
    (index as f64 * 0.618_033_988_75).fract()
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn ready_condition(problem: Option<&str>, heartbeat: &Time, transition: &Time) -> Value {
    match problem {
        None => {
            json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                       "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition})
        }
        Some(message) => json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": message,
                       "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition}),
    }
}

fn conditions(heartbeat: &Time, transition: &Time) -> Value {
    let c = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition})
    };
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ready_condition(None, heartbeat, transition),
    ])
}

impl Node {
    pub async fn register(client: Client, name: &str, index: usize, shape: &Shape) -> anyhow::Result<Node> {
        let api: Api<NodeObject> = Api::all(client.clone());
        let mut labels = shape.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), name.to_string());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert(
            "kubernetes.io/arch".into(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        );
        labels.insert("beta.kubernetes.io/os".into(), "linux".into());
        labels.insert("beta.kubernetes.io/arch".into(), labels["kubernetes.io/arch"].clone());
        let node: NodeObject = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
        let created = match api.create(&PostParams::default(), &node).await {
            Ok(n) => n,
            Err(kube::Error::Api(e)) if e.code == 409 => api.get(name).await?,
            Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
        };
        let ip = match (&shape.ip, index) {
            (Some(ip), _) => ip.clone(),
            (None, 0) => "127.0.0.1".to_string(),
            (None, _) => format!("127.0.{}.{}", 1 + index / 250, 1 + index % 250),
        };
        let n = Node {
            name: name.to_string(),
            ip,
            index,
            client,
            uid: Arc::new(created.metadata.uid.unwrap_or_default()),
            problem: Arc::default(),
        };
        n.post_status(shape).await?;
        Ok(n)
    }

    async fn post_status(&self, shape: &Shape) -> anyhow::Result<()> {
        let t = now();
        let resources = json!({"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods.to_string(), "ephemeral-storage": "100Gi"});
        let status = json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": conditions(&t, &t),
            "addresses": [{"type": "InternalIP", "address": self.ip}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": shape.kubelet_port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "osImage": shape.os_image, "containerRuntimeVersion": shape.runtime_version,
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        }});
        let api: Api<NodeObject> = Api::all(self.client.clone());
        api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("posting the status of node {}", self.name))?;
        Ok(())
    }

    /// Renew the Lease every `interval`; re-post the Ready heartbeat every five minutes.
    /// The first renewal of node `index` is offset within the interval, so a process
    /// playing 1,000 fake nodes spreads its renewals instead of sending them (and opening
    /// a connection each) in one burst every interval; upstream kubelets are spread by
    /// their own start times and jitter.
    pub async fn keep_alive(self, interval: Duration) {
        tokio::time::sleep(interval.mul_f64(spread(self.index))).await;
        let mut last_status = tokio::time::Instant::now();
        let mut lease = None;
        loop {
            match self.renew_lease(lease.take()).await {
                Ok(renewed) => lease = Some(renewed),
                Err(e) => tracing::warn!(node = %self.name, error = %format!("{e:#}"), "renewing the node lease"),
            }
            if last_status.elapsed() >= STATUS_REPORT_INTERVAL {
                let t = now();
                let ready = match self.problem() {
                    None => json!({"type": "Ready", "status": "True", "lastHeartbeatTime": t}),
                    Some(_) => json!({"type": "Ready", "lastHeartbeatTime": t}),
                };
                self.patch_conditions(ready).await;
                last_status = tokio::time::Instant::now();
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Renew the Lease from the copy the last renewal returned (one PUT, as upstream's
    /// lease controller does); without one, or when that copy is stale (409) or gone,
    /// from a fresh GET, creating the Lease if there is none.
    async fn renew_lease(&self, cached: Option<Lease>) -> anyhow::Result<Lease> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        if let Some(lease) = cached {
            match api.replace(&self.name, &PostParams::default(), &self.renewed(lease)).await {
                Ok(renewed) => return Ok(renewed),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    tracing::debug!(node = %self.name, code = e.code, "cached lease stale; reading it again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        match api.get_opt(&self.name).await? {
            Some(lease) => Ok(api.replace(&self.name, &PostParams::default(), &self.renewed(lease)).await?),
            None => Ok(api.create(&PostParams::default(), &self.new_lease()).await?),
        }
    }

    fn renewed(&self, mut lease: Lease) -> Lease {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.holder_identity = Some(self.name.clone());
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        lease
    }

    fn new_lease(&self) -> Lease {
        // owned by the Node, so the garbage collector removes it with the node
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.name.clone(),
            uid: self.uid.to_string(),
            ..Default::default()
        };
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        }
    }

    fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn patch_conditions(&self, condition: Value) {
        let patch = json!({"status": {"conditions": [condition]}});
        let api: Api<NodeObject> = Api::all(self.client.clone());
        if let Err(e) = api.patch_status(&self.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::warn!(node = %self.name, error = %e, "posting the node's Ready condition");
        }
    }

    /// Ready False with `problem` as its message (upstream's "container runtime is
    /// down"), or Ready again with None; posted at once when it changes.
    pub async fn set_not_ready(&self, problem: Option<String>) {
        {
            let mut current = self.problem.lock().unwrap_or_else(|e| e.into_inner());
            if *current == problem {
                return;
            }
            current.clone_from(&problem);
        }
        let t = now();
        tracing::info!(node = %self.name, ready = problem.is_none(), problem = problem.as_deref().unwrap_or(""), "node readiness changed");
        self.patch_conditions(ready_condition(problem.as_deref(), &t, &t)).await;
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
