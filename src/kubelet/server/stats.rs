//! `/stats/summary` and `/metrics/resource`, kept minimal: the node's CPU and memory
//! from /proc, each container's from CRI ListContainerStats, grouped by pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use k8s_cri::v1::{ContainerStats, ListContainerStatsRequest};
use serde_json::{Value, json};

use super::Kubelet;

/// Cumulative CPU time of the machine in nanoseconds (user+nice+system+irq+softirq+steal).
fn node_cpu_nanos() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| fields.get(*i)).sum();
    // USER_HZ is 100 on Linux
    busy * 10_000_000
}

/// (total, available) memory in bytes.
fn node_memory() -> (u64, u64) {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("MemTotal:"), kib("MemAvailable:"))
}

async fn container_stats(k: &Kubelet) -> Vec<ContainerStats> {
    let Some(cri) = &k.cri else { return Vec::new() };
    match cri.runtime.clone().list_container_stats(ListContainerStatsRequest { filter: None }).await {
        Ok(r) => r.into_inner().stats,
        Err(e) => {
            tracing::warn!(error = %e, "CRI ListContainerStats failed");
            Vec::new()
        }
    }
}

/// One container's identity: (namespace, pod, uid, container).
fn identity(s: &ContainerStats) -> Option<(String, String, String, String)> {
    let labels = &s.attributes.as_ref()?.labels;
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Some((
        get("io.kubernetes.pod.namespace"),
        get("io.kubernetes.pod.name"),
        get(super::runtime::POD_UID),
        get(super::runtime::CONTAINER_NAME),
    ))
}

fn cpu_nanos(s: &ContainerStats) -> u64 {
    s.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).map_or(0, |v| v.value)
}

fn working_set(s: &ContainerStats) -> u64 {
    s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).map_or(0, |v| v.value)
}

pub async fn summary(State(k): State<Arc<Kubelet>>) -> Response {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (total, available) = node_memory();
    let mut pods: BTreeMap<(String, String, String), Vec<Value>> = BTreeMap::new();
    for s in container_stats(&k).await {
        let Some((ns, pod, uid, name)) = identity(&s) else { continue };
        pods.entry((ns, pod, uid)).or_default().push(json!({
            "name": name,
            "cpu": {"time": now, "usageCoreNanoSeconds": cpu_nanos(&s)},
            "memory": {"time": now, "workingSetBytes": working_set(&s)},
        }));
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|((namespace, name, uid), containers)| {
            json!({"podRef": {"name": name, "namespace": namespace, "uid": uid}, "containers": containers})
        })
        .collect();
    let body = json!({
        "node": {
            "nodeName": k.node_name,
            "cpu": {"time": now, "usageCoreNanoSeconds": node_cpu_nanos()},
            "memory": {"time": now, "availableBytes": available, "workingSetBytes": total.saturating_sub(available)},
        },
        "pods": pods,
    });
    axum::Json(body).into_response()
}

/// The Prometheus text metrics-server scrapes.
pub async fn resource_metrics(State(k): State<Arc<Kubelet>>) -> Response {
    let (total, available) = node_memory();
    let mut out = String::new();
    out.push_str("# TYPE node_cpu_usage_seconds_total counter\n");
    out.push_str(&format!("node_cpu_usage_seconds_total {}\n", node_cpu_nanos() as f64 / 1e9));
    out.push_str("# TYPE node_memory_working_set_bytes gauge\n");
    out.push_str(&format!("node_memory_working_set_bytes {}\n", total.saturating_sub(available)));
    let stats = container_stats(&k).await;
    let labelled: Vec<(String, &ContainerStats)> = stats
        .iter()
        .filter_map(|s| {
            let (ns, pod, _, name) = identity(s)?;
            Some((format!("{{container=\"{name}\",namespace=\"{ns}\",pod=\"{pod}\"}}"), s))
        })
        .collect();
    out.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
    for (labels, s) in &labelled {
        out.push_str(&format!("container_cpu_usage_seconds_total{labels} {}\n", cpu_nanos(s) as f64 / 1e9));
    }
    out.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    for (labels, s) in &labelled {
        out.push_str(&format!("container_memory_working_set_bytes{labels} {}\n", working_set(s)));
    }
    out.push_str("# TYPE scrape_error gauge\nscrape_error 0\n");
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
