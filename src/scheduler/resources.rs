//! Resource arithmetic as the scheduler counts it: cpu in millicores, everything else in
//! whole units (rounded up, as upstream's MilliValue/Value), a pod's requests by upstream's
//! rules (the sum of its containers, at least the largest init container plus the sidecars
//! started before it, plus the pod overhead), and the "non-zero" requests scoring uses
//! (100m cpu and 200Mi memory for a container that asks for none).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::quantity::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// What scoring assumes a container without a cpu request uses (upstream's 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What scoring assumes a container without a memory request uses (upstream's 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of every resource: cpu in millicores, the rest in units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources, hugepages and anything else, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    fn get_mut(&mut self, name: &str) -> &mut i64 {
        match name {
            CPU => &mut self.milli_cpu,
            MEMORY => &mut self.memory,
            EPHEMERAL_STORAGE => &mut self.ephemeral_storage,
            other => self.scalar.entry(other.to_string()).or_default(),
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.combine(other, |a, b| a.saturating_add(b));
    }

    pub fn sub(&mut self, other: &Resources) {
        self.combine(other, |a, b| a.saturating_sub(b));
    }

    /// The larger of each amount.
    pub fn max_with(&mut self, other: &Resources) {
        self.combine(other, i64::max);
    }

    fn combine(&mut self, other: &Resources, f: impl Fn(i64, i64) -> i64) {
        self.milli_cpu = f(self.milli_cpu, other.milli_cpu);
        self.memory = f(self.memory, other.memory);
        self.ephemeral_storage = f(self.ephemeral_storage, other.ephemeral_storage);
        for (name, v) in &other.scalar {
            let mine = self.scalar.entry(name.clone()).or_default();
            *mine = f(*mine, *v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.values().all(|v| *v == 0)
    }
}

/// A resource list (requests, allocatable, overhead) in scheduler units; entries that do
/// not parse are left out and named in the second value. `pods` goes to the third value.
pub fn parse_list(list: Option<&BTreeMap<String, ApiQuantity>>) -> (Resources, Vec<String>, Option<i64>) {
    let mut out = Resources::default();
    let mut bad = Vec::new();
    let mut pods = None;
    for (name, q) in list.into_iter().flatten() {
        let Some(parsed) = Quantity::parse(&q.0) else {
            bad.push(format!("{name}={:?}", q.0));
            continue;
        };
        match name.as_str() {
            PODS => pods = Some(parsed.value()),
            CPU => out.milli_cpu = parsed.milli_value(),
            other => *out.get_mut(other) = parsed.value(),
        }
    }
    (out, bad, pods)
}

fn container_requests(c: &Container, defaults: bool) -> Resources {
    let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let (mut r, _, _) = parse_list(list);
    if defaults {
        let has = |name: &str| list.is_some_and(|l| l.contains_key(name));
        if !has(CPU) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has(MEMORY) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// A pod's requests by upstream's PodRequests rules; with `defaults`, containers without
/// a cpu or memory request count as upstream's scoring defaults.
pub fn pod_requests(pod: &Pod, defaults: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources::default() };
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, defaults));
    }
    // init containers run one at a time, each beside the sidecars (restartable init
    // containers) started before it; sidecars keep running with the main containers
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = container_requests(c, defaults);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.max_with(&r);
    }
    reqs.max_with(&init_max);
    let (overhead, _, _) = parse_list(spec.overhead.as_ref());
    reqs.add(&overhead);
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn containers_sum_and_init_containers_take_the_max() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m", "example.com/gpu": "1"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}],
            "overhead": {"cpu": "10m"},
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.scalar["example.com/gpu"], 1);
        let d = pod_requests(&p, true);
        assert_eq!(d.memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn sidecars_run_beside_later_init_containers_and_the_main_containers() {
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "700m"}}},
            ],
        }));
        assert_eq!(pod_requests(&p, false).milli_cpu, 1200);
    }

    #[test]
    fn bad_quantities_are_reported_not_fatal() {
        let list = BTreeMap::from([
            ("cpu".to_string(), ApiQuantity("lots".into())),
            ("memory".to_string(), ApiQuantity("1Gi".into())),
            ("pods".to_string(), ApiQuantity("110".into())),
        ]);
        let (r, bad, pods) = parse_list(Some(&list));
        assert_eq!((r.milli_cpu, r.memory, pods), (0, 1 << 30, Some(110)));
        assert_eq!(bad, vec!["cpu=\"lots\"".to_string()]);
    }
}
