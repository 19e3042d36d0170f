//! ImageLocality: favour nodes that already have the pod's images, by their size scaled
//! by how many nodes share them (so one popular image does not pull every pod to one
//! node), clamped between 23 MiB and 1000 MiB per container.

use crate::scheduler::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Snapshot};

pub struct ImageLocality;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// An image name as the kubelet reports it: with `:latest` when it names no tag.
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':');
    let slash = name.rfind('/');
    if colon.is_none() || colon < slash { format!("{name}:latest") } else { name.to_string() }
}

impl ScorePlugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }

    fn score(&self, snapshot: &Snapshot, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(spec) = pod.spec() else { return 0 };
        let total_nodes = snapshot.nodes.len().max(1) as f64;
        let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
        let mut sum = 0i64;
        let mut count = 0i64;
        for c in containers {
            count += 1;
            let name = normalized_image_name(c.image.as_deref().unwrap_or(""));
            if let Some(size) = node.images.get(&name) {
                let spread = *snapshot.image_nodes.get(&name).unwrap_or(&1) as f64 / total_nodes;
                sum = sum.saturating_add((*size as f64 * spread) as i64);
            }
        }
        let max_threshold = MAX_CONTAINER_THRESHOLD * count;
        if max_threshold <= MIN_THRESHOLD {
            return 0;
        }
        let clamped = sum.clamp(MIN_THRESHOLD, max_threshold);
        MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn names_get_latest() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(normalized_image_name("registry:5000/app"), "registry:5000/app:latest");
    }

    #[test]
    fn big_local_images_score() {
        let with = node("a", json!({}), json!({"images": [{"names": ["big:1"], "sizeBytes": 500 * MB}]}));
        let without = node("b", json!({}), json!({}));
        let images = HashMap::from([("big:1".to_string(), 1usize)]);
        let namespaces = HashMap::new();
        let snap = Snapshot {
            nodes: vec![&with, &without],
            image_nodes: &images,
            namespaces: &namespaces,
            volumes: &Default::default(),
            nominated: &Default::default(),
            workloads: &Default::default(),
            cycle: Default::default(),
        };
        let pod = pod_info(json!({"containers": [{"name": "c", "image": "big:1"}]}));
        // 500 MiB on 1 of 2 nodes: 250 MiB → (250-23)*100/(1000-23)
        assert_eq!(ImageLocality.score(&snap, &pod, &with), (250 - 23) * 100 / (1000 - 23));
        assert_eq!(ImageLocality.score(&snap, &pod, &without), 0);
    }
}
