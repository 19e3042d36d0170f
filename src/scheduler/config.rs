//! `--config`: upstream's KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1, YAML
//! or JSON), decoded strictly as upstream does (an unknown field is an error). What it
//! sets here: `clientConnection.kubeconfig`, the `leaderElection` block,
//! `percentageOfNodesToScore` (global and per profile), and the profiles: each its own
//! `schedulerName`, `plugins` (enabled/disabled per extension point, score weights) merged
//! into the default plug-ins as upstream merges them, and `pluginConfig` arguments of
//! NodeResourcesFit (scoringStrategy), PodTopologySpread (defaultConstraints,
//! defaultingType) and InterPodAffinity (hardPodAffinityWeight,
//! ignorePreferredTermsOfExistingPods). Flags given on the command line override the file.
//! Accepted but without effect: `parallelism`, the backoff seconds, arguments of other
//! plug-ins (logged), the client's qps/burst/content type. Refused: extenders, plug-in
//! names ferrokube does not have (upstream's unknown names and its plug-ins ferrokube
//! lacks alike), two profiles with one schedulerName, bad arguments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::framework::{FilterPlugin, Profile, ScorePlugin};
use super::plugins::{Defaults, InterPodAffinity, NodeResourcesFit, PodTopologySpread, Strategy};
use crate::leader_election;

/// Fields that have no effect are decoded all the same, so their types are checked.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct KubeSchedulerConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub parallelism: Option<i32>,
    #[serde(default)]
    pub leader_election: LeaderElection,
    #[serde(default)]
    pub client_connection: ClientConnection,
    pub healthz_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub enable_profiling: Option<bool>,
    pub enable_contention_profiling: Option<bool>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff_seconds: Option<i64>,
    pub pod_max_backoff_seconds: Option<i64>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default)]
    pub extenders: Vec<Value>,
    pub delay_cache_until_active: Option<bool>,
}

/// component-base's LeaderElectionConfiguration (durations as Go strings: "15s").
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElection {
    pub leader_elect: Option<bool>,
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
    pub resource_lock: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct ClientConnection {
    pub kubeconfig: Option<PathBuf>,
    pub accept_content_types: Option<String>,
    pub content_type: Option<String>,
    pub qps: Option<f64>,
    pub burst: Option<i32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileConfig {
    pub scheduler_name: Option<String>,
    pub percentage_of_nodes_to_score: Option<i32>,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub plugin_config: Vec<Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    pub weight: Option<i32>,
}

const DEFAULT_PREEMPTION: &str = "DefaultPreemption";

/// Upstream's in-tree plug-ins that ferrokube's scheduler does not (or not as a separate
/// plug-in) have: disabling them is fine, enabling them is an error.
const UPSTREAM_ONLY: &[&str] = &[
    "PrioritySort",
    "SchedulingGates",
    "DefaultBinder",
    "NodeVolumeLimits",
    "EBSLimits",
    "GCEPDLimits",
    "AzureDiskLimits",
    "CinderLimits",
    "DynamicResources",
];

/// The decoded file, with `apiVersion`/`kind` checked.
pub fn load(path: &Path) -> anyhow::Result<KubeSchedulerConfiguration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<KubeSchedulerConfiguration> {
    let config: KubeSchedulerConfiguration =
        serde_yaml::from_str(text).context("not a valid KubeSchedulerConfiguration")?;
    match (config.api_version.as_deref(), config.kind.as_deref()) {
        (Some("kubescheduler.config.k8s.io/v1"), Some("KubeSchedulerConfiguration")) => {}
        (v, k) => bail!(
            "apiVersion/kind must be kubescheduler.config.k8s.io/v1 KubeSchedulerConfiguration, not {}/{}",
            v.unwrap_or("<none>"),
            k.unwrap_or("<none>")
        ),
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &config.profiles {
        let name = p.scheduler_name.as_deref().unwrap_or(DEFAULT_SCHEDULER);
        if !names.insert(name) {
            bail!("profiles: duplicate schedulerName {name:?}");
        }
    }
    if !config.extenders.is_empty() {
        bail!("extenders are not supported");
    }
    let check_pct = |p: Option<i32>, what: &str| match p {
        Some(p) if !(0..=100).contains(&p) => bail!("{what} must be between 0 and 100, not {p}"),
        _ => Ok(()),
    };
    check_pct(config.percentage_of_nodes_to_score, "percentageOfNodesToScore")?;
    for p in &config.profiles {
        check_pct(p.percentage_of_nodes_to_score, "profiles[].percentageOfNodesToScore")?;
    }
    Ok(config)
}

impl KubeSchedulerConfiguration {
    /// Lay the `leaderElection` block over `config` (the component's defaults).
    pub fn apply_leader_election(&self, config: &mut leader_election::Config) -> anyhow::Result<()> {
        let le = &self.leader_election;
        if let Some(on) = le.leader_elect {
            config.enabled = on;
        }
        let duration = |v: &Option<String>, field: &str, slot: &mut Duration| -> anyhow::Result<()> {
            if let Some(text) = v {
                *slot = crate::apiserver::parse_go_duration(text)
                    .map_err(|e| anyhow::anyhow!("leaderElection.{field}: {e}"))?;
            }
            Ok(())
        };
        duration(&le.lease_duration, "leaseDuration", &mut config.lease_duration)?;
        duration(&le.renew_deadline, "renewDeadline", &mut config.renew_deadline)?;
        duration(&le.retry_period, "retryPeriod", &mut config.retry_period)?;
        for (v, slot) in [
            (&le.resource_lock, &mut config.resource_lock),
            (&le.resource_name, &mut config.name),
            (&le.resource_namespace, &mut config.namespace),
        ] {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        }
        Ok(())
    }

    /// The profiles by schedulerName (the default profile alone when the file has none);
    /// `name` (the --scheduler-name flag) renames a single profile.
    pub fn build_profiles(&self, name: Option<&str>) -> anyhow::Result<Vec<(String, Profile)>> {
        let default = [ProfileConfig::default()];
        let profiles = if self.profiles.is_empty() { &default[..] } else { &self.profiles[..] };
        if name.is_some() && profiles.len() > 1 {
            bail!("--scheduler-name names one profile, but the config file has {}", profiles.len());
        }
        let mut out = Vec::new();
        for p in profiles {
            let scheduler = name.or(p.scheduler_name.as_deref()).unwrap_or(DEFAULT_SCHEDULER).to_string();
            let mut profile = build_profile(&p.plugins).with_context(|| format!("profile {scheduler}"))?;
            configure(&mut profile, &p.plugin_config).with_context(|| format!("profile {scheduler}: pluginConfig"))?;
            let pct = p.percentage_of_nodes_to_score.or(self.percentage_of_nodes_to_score);
            profile.percentage_of_nodes_to_score = pct.unwrap_or(0).max(0) as usize;
            out.push((scheduler, profile));
        }
        Ok(out)
    }
}

const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// NodeResourcesFitArgs (ignoredResources and ignoredResourceGroups are refused).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeResourcesFitArgs {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    ignored_resources: Vec<String>,
    #[serde(default)]
    ignored_resource_groups: Vec<String>,
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScoringStrategy {
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    resources: Vec<ResourceSpec>,
    requested_to_capacity_ratio: Option<RequestedToCapacityRatio>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResourceSpec {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestedToCapacityRatio {
    #[serde(default)]
    shape: Vec<ShapePoint>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShapePoint {
    utilization: i64,
    score: i64,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodTopologySpreadArgs {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    default_constraints: Vec<TopologySpreadConstraint>,
    defaulting_type: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InterPodAffinityArgs {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    hard_pod_affinity_weight: Option<i64>,
    ignore_preferred_terms_of_existing_pods: Option<bool>,
}

fn args<T: serde::de::DeserializeOwned + Default>(v: &Value) -> anyhow::Result<T> {
    match v.get("args") {
        None | Some(Value::Null) => Ok(T::default()),
        Some(a) => Ok(serde_json::from_value(a.clone())?),
    }
}

fn node_resources_fit(a: NodeResourcesFitArgs) -> anyhow::Result<NodeResourcesFit> {
    if !a.ignored_resources.is_empty() || !a.ignored_resource_groups.is_empty() {
        bail!("NodeResourcesFit: ignoredResources and ignoredResourceGroups are not supported");
    }
    let mut fit = NodeResourcesFit::default();
    let Some(scoring) = a.scoring_strategy else { return Ok(fit) };
    if !scoring.resources.is_empty() {
        fit.resources = Vec::new();
        for r in scoring.resources {
            // upstream's defaulting: weight 0 (unset) is 1
            let weight = r.weight.filter(|w| *w != 0).unwrap_or(1);
            if !(1..=100).contains(&weight) {
                bail!("NodeResourcesFit: resource {:?} weight {weight} must be between 1 and 100", r.name);
            }
            fit.resources.push((r.name, weight));
        }
    }
    fit.strategy = match scoring.type_.as_deref().unwrap_or("LeastAllocated") {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => {
            let shape = scoring.requested_to_capacity_ratio.map(|r| r.shape).unwrap_or_default();
            if shape.is_empty() {
                bail!("NodeResourcesFit: requestedToCapacityRatio.shape must not be empty");
            }
            let mut points = Vec::new();
            for p in shape {
                if !(0..=100).contains(&p.utilization) || !(0..=10).contains(&p.score) {
                    bail!("NodeResourcesFit: shape points need utilization 0..100 and score 0..10");
                }
                if points.last().is_some_and(|(u, _)| *u >= p.utilization) {
                    bail!("NodeResourcesFit: shape utilization values must be strictly increasing");
                }
                // upstream scales the score from 0..10 to 0..100
                points.push((p.utilization, p.score * 10));
            }
            Strategy::RequestedToCapacityRatio(points)
        }
        other => bail!(
            "NodeResourcesFit: scoringStrategy.type {other:?} is not one of LeastAllocated, MostAllocated, RequestedToCapacityRatio"
        ),
    };
    Ok(fit)
}

fn pod_topology_spread(a: PodTopologySpreadArgs) -> anyhow::Result<PodTopologySpread> {
    for c in &a.default_constraints {
        if c.label_selector.is_some() {
            bail!("PodTopologySpread: defaultConstraints must not define a selector, as they deduced for each pod");
        }
        if c.max_skew <= 0 || c.topology_key.is_empty() {
            bail!("PodTopologySpread: defaultConstraints need a maxSkew above 0 and a topologyKey");
        }
        if !matches!(c.when_unsatisfiable.as_str(), "DoNotSchedule" | "ScheduleAnyway") {
            bail!(
                "PodTopologySpread: whenUnsatisfiable {:?} is not DoNotSchedule or ScheduleAnyway",
                c.when_unsatisfiable
            );
        }
    }
    let defaults = match a.defaulting_type.as_deref().unwrap_or("System") {
        "System" if !a.default_constraints.is_empty() => {
            bail!("PodTopologySpread: when .defaultingType is \"System\", .defaultConstraints must be empty")
        }
        "System" => Defaults::System,
        "List" => Defaults::List(a.default_constraints),
        other => bail!("PodTopologySpread: defaultingType {other:?} is not System or List"),
    };
    Ok(PodTopologySpread { defaults })
}

fn inter_pod_affinity(a: InterPodAffinityArgs) -> anyhow::Result<InterPodAffinity> {
    let mut ipa = InterPodAffinity::default();
    if let Some(w) = a.hard_pod_affinity_weight {
        if !(0..=100).contains(&w) {
            bail!("InterPodAffinity: hardPodAffinityWeight {w} must be between 0 and 100");
        }
        ipa.hard_pod_affinity_weight = w;
    }
    ipa.ignore_preferred_terms_of_existing_pods = a.ignore_preferred_terms_of_existing_pods.unwrap_or(false);
    Ok(ipa)
}

/// Put configured instances of the plug-ins `pluginConfig` gives arguments for in place of
/// the default ones (filter and score alike, keeping the weights).
fn configure(profile: &mut Profile, plugin_config: &[Value]) -> anyhow::Result<()> {
    for pc in plugin_config {
        let name = pc.get("name").and_then(Value::as_str).unwrap_or_default();
        let (filter, score): (Box<dyn FilterPlugin>, Box<dyn ScorePlugin>) = match name {
            "NodeResourcesFit" => (Box::new(node_resources_fit(args(pc)?)?), Box::new(node_resources_fit(args(pc)?)?)),
            "PodTopologySpread" => {
                (Box::new(pod_topology_spread(args(pc)?)?), Box::new(pod_topology_spread(args(pc)?)?))
            }
            "InterPodAffinity" => (Box::new(inter_pod_affinity(args(pc)?)?), Box::new(inter_pod_affinity(args(pc)?)?)),
            other => {
                tracing::warn!(plugin = %other, "pluginConfig arguments of this plug-in are not supported; it keeps its defaults");
                continue;
            }
        };
        if let Some(slot) = profile.filters.iter_mut().find(|f| f.name() == name) {
            *slot = filter;
        }
        if let Some((slot, _)) = profile.scores.iter_mut().find(|(s, _)| s.name() == name) {
            *slot = score;
        }
    }
    Ok(())
}

/// The default profile with `plugins` merged in, as upstream's mergePlugins: per extension
/// point, `disabled` removes defaults (`*`: all of them); an `enabled` plug-in that is a
/// default takes its place (with the new weight), any other is appended in order.
/// multiPoint applies to both extension points; filter and score then override it.
pub fn build_profile(plugins: &Plugins) -> anyhow::Result<Profile> {
    // every plug-in ferrokube has, by name, as instances to take from
    let catalog = Profile::default_plugins();
    let known: Vec<&'static str> = catalog
        .filters
        .iter()
        .map(|f| f.name())
        .chain(catalog.scores.iter().map(|(s, _)| s.name()))
        .chain([DEFAULT_PREEMPTION])
        .collect();
    let mut all_sets: Vec<(&str, &PluginSet)> = Vec::new();
    let sets = [
        ("preEnqueue", &plugins.pre_enqueue),
        ("queueSort", &plugins.queue_sort),
        ("preFilter", &plugins.pre_filter),
        ("filter", &plugins.filter),
        ("postFilter", &plugins.post_filter),
        ("preScore", &plugins.pre_score),
        ("score", &plugins.score),
        ("reserve", &plugins.reserve),
        ("permit", &plugins.permit),
        ("preBind", &plugins.pre_bind),
        ("bind", &plugins.bind),
        ("postBind", &plugins.post_bind),
        ("multiPoint", &plugins.multi_point),
    ];
    for (point, set) in sets {
        if let Some(set) = set {
            all_sets.push((point, set));
        }
    }
    for (point, set) in &all_sets {
        for p in set.enabled.iter().chain(&set.disabled) {
            let name = p.name.as_str();
            if name == "*" && set.disabled.iter().any(|d| d.name == "*") {
                continue;
            }
            if !known.contains(&name) {
                if UPSTREAM_ONLY.contains(&name) {
                    if set.enabled.iter().any(|e| e.name == name) {
                        bail!(
                            "plugins.{point}: plug-in {name:?} is upstream's but ferrokube's scheduler does not have it"
                        );
                    }
                    continue;
                }
                bail!("plugins.{point}: unknown plug-in {name:?} (known: {})", known.join(", "));
            }
            if let Some(w) = p.weight
                && !(0..=100).contains(&w)
            {
                bail!("plugins.{point}: weight {w} of {name:?} must be between 0 and 100");
            }
        }
    }
    // the one PostFilter, preemption: on unless a multiPoint or postFilter set disables it
    let mut preemption = catalog.preemption;
    for set in [&plugins.multi_point, &plugins.post_filter].into_iter().flatten() {
        if set.disabled.iter().any(|d| d.name == "*" || d.name == DEFAULT_PREEMPTION) {
            preemption = false;
        }
        if set.enabled.iter().any(|e| e.name == DEFAULT_PREEMPTION) {
            preemption = true;
        }
    }
    if let Some(other) = plugins.post_filter.iter().flat_map(|s| &s.enabled).find(|e| e.name != DEFAULT_PREEMPTION) {
        bail!("plugins.postFilter: plug-in {:?} has no postFilter extension point", other.name);
    }
    let (mut filters, mut scores) = (catalog.filters, catalog.scores);
    let mut spare = Profile::default_plugins();
    for (point, set) in [("multiPoint", &plugins.multi_point), ("filter", &plugins.filter), ("score", &plugins.score)] {
        let Some(set) = set else { continue };
        let is_filter = point != "score";
        let is_score = point != "filter";
        if is_filter {
            filters = merge(filters, set, point, &mut spare.filters, |f| f.name(), |f, _| f)?;
        }
        if is_score {
            scores = merge(
                scores,
                set,
                point,
                &mut spare.scores,
                |(s, _)| s.name(),
                |(s, w), weight| (s, weight.map_or(w, i64::from)),
            )?;
        }
    }
    Ok(Profile { filters, scores, preemption, percentage_of_nodes_to_score: 0 })
}

/// One extension point's merge. `spare` holds fresh instances to take enabled plug-ins
/// from; `reweigh` sets a configured weight. A multiPoint plug-in that does not
/// implement this extension point is skipped (as upstream's multiPoint expansion).
fn merge<T>(
    current: Vec<T>,
    set: &PluginSet,
    point: &str,
    spare: &mut Vec<T>,
    name: impl Fn(&T) -> &'static str,
    reweigh: impl Fn(T, Option<i32>) -> T,
) -> anyhow::Result<Vec<T>> {
    let disabled_all = set.disabled.iter().any(|d| d.name == "*");
    let mut out: Vec<Option<T>> = current
        .into_iter()
        .filter(|p| !disabled_all && !set.disabled.iter().any(|d| d.name == name(p)))
        .map(Some)
        .collect();
    let mut appended = Vec::new();
    let mut seen = BTreeMap::new();
    for e in &set.enabled {
        if seen.insert(e.name.as_str(), ()).is_some() {
            bail!("plugins.{point}: {:?} is enabled twice", e.name);
        }
        if let Some(slot) = out.iter_mut().find(|p| p.as_ref().is_some_and(|p| name(p) == e.name)) {
            let p = slot.take().expect("present");
            *slot = Some(reweigh(p, e.weight));
            continue;
        }
        match spare.iter().position(|p| name(p) == e.name) {
            Some(i) => appended.push(reweigh(spare.remove(i), e.weight)),
            None if point == "multiPoint" => {}
            None => bail!("plugins.{point}: plug-in {:?} has no {point} extension point", e.name),
        }
    }
    Ok(out.into_iter().flatten().chain(appended).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Profile) -> (Vec<&str>, Vec<(&str, i64)>) {
        (p.filters.iter().map(|f| f.name()).collect(), p.scores.iter().map(|(s, w)| (s.name(), *w)).collect())
    }

    const HEAD: &str = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

    fn first(c: &KubeSchedulerConfiguration) -> anyhow::Result<Profile> {
        Ok(c.build_profiles(None)?.remove(0).1)
    }

    #[test]
    fn weights_and_disabling_merge_into_the_defaults() {
        let c = parse(&format!(
            "{HEAD}profiles:\n- schedulerName: my-scheduler\n  plugins:\n    score:\n      disabled:\n      - name: ImageLocality\n      enabled:\n      - name: NodeResourcesFit\n        weight: 5\n    filter:\n      disabled:\n      - name: NodePorts\n"
        ))
        .expect("parses");
        let mut all = c.build_profiles(None).expect("builds");
        assert_eq!(all[0].0, "my-scheduler");
        let p = all.remove(0).1;
        let (filters, scores) = names(&p);
        assert!(!filters.contains(&"NodePorts"), "{filters:?}");
        assert!(filters.contains(&"NodeResourcesFit"));
        assert!(!scores.iter().any(|(n, _)| *n == "ImageLocality"), "{scores:?}");
        assert!(scores.contains(&("NodeResourcesFit", 5)), "{scores:?}");
        assert!(scores.contains(&("TaintToleration", 3)), "defaults keep their weights: {scores:?}");
    }

    #[test]
    fn plugin_arguments_and_profiles() {
        let c = parse(&format!(
            "{HEAD}percentageOfNodesToScore: 30\nprofiles:\n- schedulerName: a\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n        resources:\n        - name: cpu\n        requestedToCapacityRatio:\n          shape:\n          - utilization: 0\n            score: 10\n          - utilization: 100\n            score: 0\n  - name: PodTopologySpread\n    args:\n      defaultingType: List\n      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: zone\n        whenUnsatisfiable: DoNotSchedule\n- schedulerName: b\n  percentageOfNodesToScore: 70\n"
        ))
        .expect("parses");
        let profiles = c.build_profiles(None).expect("builds");
        let names: Vec<(&str, usize)> =
            profiles.iter().map(|(n, p)| (n.as_str(), p.percentage_of_nodes_to_score)).collect();
        assert_eq!(names, [("a", 30), ("b", 70)]);
        assert!(c.build_profiles(Some("renamed")).is_err(), "one name for two profiles");
        let bad = |args: &str| {
            let text = format!("{HEAD}profiles:\n- pluginConfig:\n  - name: {args}\n");
            format!("{:#}", parse(&text).and_then(|c| first(&c)).err().expect("an error"))
        };
        assert!(bad("NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: Fancy").contains("Fancy"));
        assert!(
            bad("PodTopologySpread\n    args:\n      defaultConstraints:\n      - maxSkew: 1\n        topologyKey: z\n        whenUnsatisfiable: DoNotSchedule")
                .contains("must be empty")
        );
        assert!(bad("NodeResourcesFit\n    args:\n      bogus: 1").contains("unknown field"));
    }

    #[test]
    fn preemption_can_be_turned_off() {
        let off = |set: &str| {
            let text =
                format!("{HEAD}profiles:\n- plugins:\n    {set}:\n      disabled:\n      - name: DefaultPreemption\n");
            !parse(&text).and_then(|c| first(&c)).expect("builds").preemption
        };
        assert!(off("postFilter") && off("multiPoint"));
        assert!(Profile::default_plugins().preemption);
    }

    #[test]
    fn disable_all_then_enable_one() {
        let p = build_profile(&Plugins {
            score: Some(PluginSet {
                enabled: vec![PluginRef { name: "ImageLocality".into(), weight: Some(7) }],
                disabled: vec![PluginRef { name: "*".into(), weight: None }],
            }),
            ..Default::default()
        })
        .expect("builds");
        assert_eq!(names(&p).1, vec![("ImageLocality", 7)]);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |text: &str| {
            let r = parse(text).and_then(|c| first(&c));
            format!("{:#}", r.err().expect("an error"))
        };
        assert!(
            err(&format!("{HEAD}profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: NoSuchPlugin\n"))
                .contains("unknown plug-in \"NoSuchPlugin\"")
        );
        assert!(
            err(&format!("{HEAD}profiles:\n- plugins:\n    score:\n      enabled:\n      - name: NodeName\n"))
                .contains("has no score extension point")
        );
        assert!(
            err(&format!("{HEAD}profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: NodeVolumeLimits\n"))
                .contains("does not have it")
        );
        assert!(err(&format!("{HEAD}percentageOfNodesToScore: 130\n")).contains("between 0 and 100"));
        assert!(err(&format!("{HEAD}bogusField: 1\n")).contains("unknown field"));
        assert!(
            err("apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n")
                .contains("apiVersion/kind")
        );
        assert!(err("{{{").contains("not a valid"));
        // disabling an upstream plug-in ferrokube lacks is harmless
        assert!(
            parse(&format!(
                "{HEAD}profiles:\n- plugins:\n    multiPoint:\n      disabled:\n      - name: NodeVolumeLimits\n"
            ))
            .and_then(|c| first(&c))
            .is_ok()
        );
    }

    #[test]
    fn leader_election_block_lays_over_the_defaults() {
        let c = parse(&format!(
            "{HEAD}leaderElection:\n  leaderElect: true\n  leaseDuration: 30s\n  renewDeadline: 20s\n  retryPeriod: 4s\n  resourceNamespace: other\nclientConnection:\n  kubeconfig: /etc/k.conf\n"
        ))
        .expect("parses");
        let mut le = leader_election::Config::defaults("kube-scheduler");
        c.apply_leader_election(&mut le).expect("applies");
        assert_eq!(le.lease_duration, Duration::from_secs(30));
        assert_eq!(le.retry_period, Duration::from_secs(4));
        assert_eq!((le.namespace.as_str(), le.name.as_str()), ("other", "kube-scheduler"));
        assert_eq!(c.client_connection.kubeconfig.as_deref(), Some(Path::new("/etc/k.conf")));
    }
}
