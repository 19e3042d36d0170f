//! `--config`: upstream's KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1, YAML
//! or JSON), decoded strictly as upstream does (an unknown field is an error). What it
//! sets here: `clientConnection.kubeconfig`, the `leaderElection` block,
//! `percentageOfNodesToScore` (global and per profile), and one profile's
//! `schedulerName` and `plugins` (enabled/disabled per extension point, score weights),
//! merged into the default plug-ins as upstream merges them. Flags given on the command
//! line override the file. Accepted but without effect: `parallelism`, the backoff
//! seconds, `pluginConfig` (plug-in arguments; logged), the client's qps/burst/content
//! type. Refused: more than one profile, extenders, plug-in names ferrokube does not
//! have (upstream's unknown names and its plug-ins ferrokube lacks alike).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::framework::Profile;
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

/// `percentageOfNodesToScore` (0: upstream's adaptive default), read by the framework.
static PERCENTAGE_OF_NODES_TO_SCORE: AtomicU32 = AtomicU32::new(0);

pub fn percentage_of_nodes_to_score() -> u32 {
    PERCENTAGE_OF_NODES_TO_SCORE.load(Ordering::Relaxed)
}

/// Upstream's in-tree plug-ins that ferrokube's scheduler does not (or not as a separate
/// plug-in) have: disabling them is fine, enabling them is an error.
const UPSTREAM_ONLY: &[&str] = &[
    "PrioritySort",
    "SchedulingGates",
    "DefaultBinder",
    "VolumeZone",
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
    if config.profiles.len() > 1 {
        bail!("{} profiles: ferrokube's scheduler runs one profile (one schedulerName)", config.profiles.len());
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

    /// The profile's schedulerName, if the file names one.
    pub fn scheduler_name(&self) -> Option<&str> {
        self.profiles.first().and_then(|p| p.scheduler_name.as_deref())
    }

    /// The plug-ins of the (only) profile, and the percentage of nodes to score, which
    /// takes effect for the whole process.
    pub fn build_profile(&self) -> anyhow::Result<Profile> {
        let profile = self.profiles.first();
        let pct = profile.and_then(|p| p.percentage_of_nodes_to_score).or(self.percentage_of_nodes_to_score);
        PERCENTAGE_OF_NODES_TO_SCORE.store(pct.unwrap_or(0).max(0) as u32, Ordering::Relaxed);
        let Some(profile) = profile else { return Ok(Profile::default_plugins()) };
        for pc in &profile.plugin_config {
            tracing::warn!(plugin = %pc["name"], "pluginConfig arguments are not supported yet; the plug-in keeps its defaults");
        }
        build_profile(&profile.plugins)
    }
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
    Ok(Profile { filters, scores, preemption })
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

    #[test]
    fn weights_and_disabling_merge_into_the_defaults() {
        let c = parse(&format!(
            "{HEAD}profiles:\n- schedulerName: my-scheduler\n  plugins:\n    score:\n      disabled:\n      - name: ImageLocality\n      enabled:\n      - name: NodeResourcesFit\n        weight: 5\n    filter:\n      disabled:\n      - name: NodePorts\n"
        ))
        .expect("parses");
        assert_eq!(c.scheduler_name(), Some("my-scheduler"));
        let p = c.build_profile().expect("builds");
        let (filters, scores) = names(&p);
        assert!(!filters.contains(&"NodePorts"), "{filters:?}");
        assert!(filters.contains(&"NodeResourcesFit"));
        assert!(!scores.iter().any(|(n, _)| *n == "ImageLocality"), "{scores:?}");
        assert!(scores.contains(&("NodeResourcesFit", 5)), "{scores:?}");
        assert!(scores.contains(&("TaintToleration", 3)), "defaults keep their weights: {scores:?}");
    }

    #[test]
    fn preemption_can_be_turned_off() {
        let off = |set: &str| {
            let text =
                format!("{HEAD}profiles:\n- plugins:\n    {set}:\n      disabled:\n      - name: DefaultPreemption\n");
            !parse(&text).and_then(|c| c.build_profile()).expect("builds").preemption
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
            let r = parse(text).and_then(|c| c.build_profile());
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
            err(&format!("{HEAD}profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: VolumeZone\n"))
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
                "{HEAD}profiles:\n- plugins:\n    multiPoint:\n      disabled:\n      - name: VolumeZone\n"
            ))
            .and_then(|c| c.build_profile())
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
