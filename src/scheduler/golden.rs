//! The golden table: a mixed set of pods placed one after the other (each assumed on its
//! node, so it counts for the next) on four unlike nodes, with the placements and score
//! totals worked out by hand from upstream's formulas (see each row's comment).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::cache::Cache;
use super::framework::{self, PodInfo, Profile};
use super::plugins::testing::named_pod;

fn node(name: &str, labels: Value, taints: Value, allocatable: Value, images: Value) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"allocatable": allocatable, "images": images},
        }))
        .expect("a node"),
    )
}

fn cluster() -> Cache {
    let mut c = Cache::default();
    let alloc = |cpu: &str, mem: &str| json!({"cpu": cpu, "memory": mem, "pods": "110"});
    let app = json!([{"names": ["app:1"], "sizeBytes": 500 * 1024 * 1024}]);
    c.apply_node(node("small", json!({"zone": "a"}), json!([]), alloc("2", "4Gi"), app));
    c.apply_node(node("large", json!({"zone": "b"}), json!([]), alloc("16", "64Gi"), json!([])));
    let soft = json!([{"key": "soft", "value": "yes", "effect": "PreferNoSchedule"}]);
    c.apply_node(node("tainted", json!({"zone": "a"}), soft, alloc("8", "32Gi"), json!([])));
    let hard = json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]);
    let gpu_alloc = json!({"cpu": "8", "memory": "32Gi", "pods": "110", "example.com/gpu": "2"});
    c.apply_node(node("gpu", json!({"zone": "b"}), hard, gpu_alloc, json!([])));
    c
}

fn pod(name: &str, image: &str, requests: Value, extra: Value) -> PodInfo {
    let mut spec = json!({"containers": [{"name": "c", "image": image, "resources": {"requests": requests}}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    named_pod("default", name, spec)
}

fn preferring_zone(zone: &str, weight: i32) -> Value {
    json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": weight, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": [zone]}]}}]}})
}

/// A pod, the node it must land on, and (when given) every feasible node's total, best first.
type Row = (PodInfo, &'static str, Vec<(&'static str, i64)>);

#[test]
fn golden_placements_and_scores() {
    let mut cache = cluster();
    let profile = Profile::default_plugins();
    let rows: Vec<Row> = vec![
        // fit 95/99/98, balance 99 each, taint 100×3 except the soft-tainted node; gpu is
        // kept out by its hard taint
        (
            pod("p1", "nginx", json!({"cpu": "100m", "memory": "128Mi"}), json!({})),
            "large",
            vec![("large", 498), ("small", 494), ("tainted", 197)],
        ),
        // app:1 is on small only (1 of 4 nodes): 500 MiB/4 scores 10, enough to beat
        // large (now holding p1: fit 98)
        (
            pod("p2", "app:1", json!({"cpu": "100m", "memory": "128Mi"}), json!({})),
            "small",
            vec![("small", 504), ("large", 497), ("tainted", 197)],
        ),
        // zone a with 3 free cpus: small has 1.9, so tainted is the only fit (no scoring)
        (
            pod("p3", "nginx", json!({"cpu": "3", "memory": "1Gi"}), json!({"nodeSelector": {"zone": "a"}})),
            "tainted",
            vec![],
        ),
        // only the gpu node has the extended resource; the pod tolerates its taint
        (
            pod(
                "p4",
                "nginx",
                json!({"cpu": "1", "example.com/gpu": "1"}),
                json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
            ),
            "gpu",
            vec![],
        ),
        // preferring zone b (weight 10 → 100 × 2) wins large the day
        (
            pod("p5", "nginx", json!({"cpu": "1", "memory": "1Gi"}), json!({"affinity": preferring_zone("b", 10)})),
            "large",
            vec![],
        ),
        // zone a preferred and the soft taint tolerated: small (fit 77, balance 92) beats
        // tainted (fit 75, balance 80, p3 on it), large trails without the affinity
        (
            pod(
                "p6",
                "nginx",
                json!({"cpu": "500m", "memory": "512Mi"}),
                json!({"affinity": preferring_zone("a", 5), "tolerations": [{"key": "soft", "operator": "Exists"}]}),
            ),
            "small",
            vec![("small", 669), ("tainted", 655), ("large", 489)],
        ),
        // 2 cpus: small (1.4 free) cannot, the gpu node is tainted; of tainted and large,
        // the soft taint (0 × 3 against 100 × 3) decides
        (pod("p7", "nginx", json!({"cpu": "2", "memory": "2Gi"}), json!({})), "large", vec![]),
    ];
    let mut start = 0;
    for (info, want_node, want_scores) in rows {
        let info = Arc::new(info);
        let placement = {
            let snapshot = cache.snapshot();
            if !want_scores.is_empty() {
                let feasible: Vec<_> =
                    snapshot.nodes.iter().copied().filter(|n| profile.filter(&snapshot, &info, n).is_ok()).collect();
                let totals = framework::score(&profile, &snapshot, &info, &feasible);
                let mut got: Vec<(&str, i64)> = feasible.iter().map(|n| n.name.as_str()).zip(totals).collect();
                got.sort_by_key(|(_, total)| std::cmp::Reverse(*total));
                assert_eq!(got, want_scores, "{}", info.key);
            }
            framework::schedule(&profile, &snapshot, &info, &mut start).unwrap_or_else(|e| panic!("{}: {e}", info.key))
        };
        assert_eq!(placement.node, want_node, "{}", info.key);
        cache.assume(info, &placement.node);
    }
}

#[test]
fn golden_failure_message() {
    let cache = cluster();
    let profile = Profile::default_plugins();
    let snapshot = cache.snapshot();
    let info = pod("huge", "nginx", json!({"cpu": "20"}), json!({}));
    let err = framework::schedule(&profile, &snapshot, &info, &mut 0).expect_err("fits nowhere");
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 3 Insufficient cpu. \
         preemption: 0/4 nodes are available: 1 Preemption is not helpful for scheduling, \
         3 No preemption victims found for incoming pod."
    );
}

#[test]
fn golden_messages_of_pods_pinned_by_node_name() {
    let cache = cluster();
    let profile = Profile::default_plugins();
    let snapshot = cache.snapshot();
    let pinned = |fields: Value| {
        let terms = json!([{"matchFields": fields}]);
        let affinity =
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
        pod("pinned", "nginx", json!({"cpu": "20"}), json!({"affinity": affinity}))
    };
    let name_in = |names: Value| json!({"key": "metadata.name", "operator": "In", "values": names});
    // the other nodes are never filtered: they count as rejected by the narrowing plug-in
    let err = framework::schedule(&profile, &snapshot, &pinned(json!([name_in(json!(["small"]))])), &mut 0)
        .expect_err("too big");
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
         preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, \
         3 Preemption is not helpful for scheduling."
    );
    // one term needing two names at once
    let conflicting = pinned(json!([name_in(json!(["small"])), name_in(json!(["large"]))]));
    let err = framework::schedule(&profile, &snapshot, &conflicting, &mut 0).expect_err("conflict");
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: pod affinity terms conflict. \
         preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
    );
}

fn labelled(name: &str, labels: Value, extra: Value) -> PodInfo {
    let mut p = pod(name, "nginx", json!({"cpu": "100m", "memory": "128Mi"}), extra).pod.as_ref().clone();
    p.metadata.labels = serde_json::from_value(labels).ok();
    PodInfo::new(Arc::new(p))
}

fn pod_affinity(kind: &str, required: bool, app: &str) -> Value {
    let term = json!({"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": app}}});
    let rules = if required {
        json!({"requiredDuringSchedulingIgnoredDuringExecution": [term]})
    } else {
        json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]})
    };
    json!({"affinity": {kind: rules}})
}

/// Place each pod in turn (assumed, so it counts for the next): the node, or the message.
fn place_all(cache: &mut Cache, pods: Vec<PodInfo>) -> Vec<Result<String, String>> {
    let profile = Profile::default_plugins();
    let mut out = Vec::new();
    for info in pods {
        let info = Arc::new(info);
        let placed = framework::schedule(&profile, &cache.snapshot(), &info, &mut 0).map(|p| p.node);
        if let Ok(node) = &placed {
            cache.assume(info.clone(), node);
        }
        out.push(placed.map_err(|e| e.to_string()));
    }
    out
}

#[test]
fn golden_pod_affinity_and_anti_affinity() {
    let mut cache = cluster();
    let pin = |node: &str| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}})
    };
    let ok = |n: &str| Ok(n.to_string());
    let anti_full = "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, \
        3 node(s) didn't match pod anti-affinity rules. preemption: 0/4 nodes are available: \
        1 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.";
    let placed = place_all(
        &mut cache,
        vec![
            // pinned to large (zone b)
            labelled("db", json!({"app": "db"}), pin("large")),
            // must share db's zone: large, the gpu node being tainted
            labelled("web", json!({"app": "web"}), pod_affinity("podAffinity", true, "db")),
            // one per zone: the first to large (the most free room), the second must take
            // zone a (small: the soft taint keeps it off tainted), the third finds no zone
            labelled("cache-1", json!({"app": "cache"}), pod_affinity("podAntiAffinity", true, "cache")),
            labelled("cache-2", json!({"app": "cache"}), pod_affinity("podAntiAffinity", true, "cache")),
            labelled("cache-3", json!({"app": "cache"}), pod_affinity("podAntiAffinity", true, "cache")),
            // keeps "batch" pods out of its zone (b, preferring db's zone: weight 100 → 2 × 100)
            labelled(
                "guard",
                json!({}),
                json!({"affinity": {
                    "podAntiAffinity": pod_affinity("podAntiAffinity", true, "batch")["affinity"]["podAntiAffinity"],
                    "podAffinity": pod_affinity("podAffinity", false, "db")["affinity"]["podAffinity"],
                }}),
            ),
            // symmetry: zone b is closed to a batch pod by the guard's anti-affinity
            labelled("batch", json!({"app": "batch"}), pin("large")),
            // a self-affine first pod may go where no pod of its group is (zone a by its
            // selector: small); the next one must follow it there rather than to large
            labelled("grp-1", json!({"app": "grp"}), {
                let mut extra = pod_affinity("podAffinity", true, "grp");
                extra["nodeSelector"] = json!({"zone": "a"});
                extra
            }),
            labelled("grp-2", json!({"app": "grp"}), pod_affinity("podAffinity", true, "grp")),
        ],
    );
    let existing = "0/4 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, \
        3 node(s) didn't satisfy plugin(s) [NodeAffinity]. preemption: 0/4 nodes are available: \
        1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.";
    let want = vec![
        ok("large"),
        ok("large"),
        ok("large"),
        ok("small"),
        Err(anti_full.to_string()),
        ok("large"),
        Err(existing.to_string()),
        ok("small"),
        ok("small"),
    ];
    assert_eq!(placed, want);
}

#[test]
fn golden_topology_spread() {
    let mut cache = cluster();
    let spread = |when: &str| {
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "s"}}}]})
    };
    let ok = |n: &str| Ok(n.to_string());
    let placed = place_all(
        &mut cache,
        vec![
            // the first goes where it fits best (large, zone b); then the zones take turns:
            // small for zone a (the soft taint keeps it off tainted)
            labelled("s1", json!({"app": "s"}), spread("DoNotSchedule")),
            labelled("s2", json!({"app": "s"}), spread("DoNotSchedule")),
            labelled("s3", json!({"app": "s"}), spread("DoNotSchedule")),
            labelled("s4", json!({"app": "s"}), spread("DoNotSchedule")),
            // held to zone b by its selector: with nodeAffinityPolicy Honor (the default)
            // zone a's nodes do not count, so b is its own minimum and takes it
            labelled("s5", json!({"app": "s"}), in_zone_b(spread("DoNotSchedule"))),
            // with Ignore, zone a (2) counts and b (3) cannot take a fourth
            labelled("s6", json!({"app": "s"}), {
                let mut extra = in_zone_b(spread("DoNotSchedule"));
                extra["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
                extra
            }),
            // the soft variant goes to zone a despite large's room (2 × 100 for the
            // emptier zone against 2 × 0)
            labelled("s7", json!({"app": "s"}), spread("ScheduleAnyway")),
        ],
    );
    let skew = "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints, \
        1 node(s) had untolerated taint {gpu: true}, \
        2 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: \
        1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.";
    let want = [ok("large"), ok("small"), ok("large"), ok("small"), ok("large"), Err(skew.to_string()), ok("small")];
    assert_eq!(placed, want);
}

fn in_zone_b(mut extra: Value) -> Value {
    extra["nodeSelector"] = json!({"zone": "b"});
    extra
}
