//! `--pod-routes=host-gw`: pods on other nodes are reached without NAT or tunnels by a
//! route per node, `<its podCIDR> via <its InternalIP>`, as flannel's host-gw backend
//! does on nodes that share a link. The kubelet watches Nodes and keeps the kernel's
//! table equal to what they say: routes for new or moved nodes are replaced, those of
//! nodes gone (or of podCIDRs no node has any more, also from before a restart) are
//! deleted. Routes it writes carry their own protocol number, so it never touches
//! anyone else's.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

/// The `proto` of our routes (`ip route … proto 188`); no iproute2 name uses it.
const PROTO: &str = "188";

/// podCIDR → gateway (the node's InternalIP).
type Routes = BTreeMap<String, String>;

/// The routes the other nodes call for: each podCIDR (v4 and v6 of `podCIDRs`) via
/// the node's InternalIP of the same family. Our own nodes and nodes without either are
/// left out.
pub fn desired<'a>(nodes: impl IntoIterator<Item = &'a Node>, ours: &HashSet<String>) -> Routes {
    let mut routes = Routes::new();
    for node in nodes.into_iter().filter(|n| !ours.contains(&n.name_any())) {
        let spec = node.spec.clone().unwrap_or_default();
        let cidrs = spec.pod_cidrs.filter(|c| !c.is_empty()).or_else(|| spec.pod_cidr.map(|c| vec![c]));
        let addresses = node.status.as_ref().and_then(|s| s.addresses.clone()).unwrap_or_default();
        let internal: Vec<String> =
            addresses.into_iter().filter(|a| a.type_ == "InternalIP").map(|a| a.address).collect();
        for cidr in cidrs.into_iter().flatten() {
            let v6 = cidr.contains(':');
            if let Some(via) = internal.iter().find(|ip| ip.contains(':') == v6) {
                routes.insert(cidr, via.clone());
            }
        }
    }
    routes
}

/// What to replace and what to delete to go from `current` to `wanted`.
pub fn changes(current: &Routes, wanted: &Routes) -> (Vec<(String, String)>, Vec<String>) {
    let replace = wanted.iter().filter(|(c, via)| current.get(*c) != Some(via)).map(|(c, v)| (c.clone(), v.clone()));
    let delete = current.keys().filter(|c| !wanted.contains_key(*c)).cloned();
    (replace.collect(), delete.collect())
}

async fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("ip").args(args).output().await?;
    if !out.status.success() {
        anyhow::bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Our routes as the kernel has them now (IPv4 and IPv6).
async fn installed() -> Routes {
    let mut routes = Routes::new();
    for family in ["-4", "-6"] {
        let Ok(table) = ip(&[family, "route", "show", "proto", PROTO]).await else { continue };
        for line in table.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let via = words.iter().position(|w| *w == "via").and_then(|i| words.get(i + 1));
            if let (Some(cidr), Some(via)) = (words.first(), via) {
                routes.insert(cidr.to_string(), via.to_string());
            }
        }
    }
    routes
}

async fn apply(current: &mut Routes, wanted: &Routes) {
    let (replace, delete) = changes(current, wanted);
    for (cidr, via) in replace {
        match ip(&["route", "replace", &cidr, "via", &via, "proto", PROTO]).await {
            Ok(_) => {
                tracing::info!(pod_cidr = %cidr, via = %via, "route to a node's pods");
                current.insert(cidr, via);
            }
            Err(e) => tracing::warn!(pod_cidr = %cidr, via = %via, error = %format!("{e:#}"), "adding a pod route"),
        }
    }
    for cidr in delete {
        match ip(&["route", "del", &cidr, "proto", PROTO]).await {
            Ok(_) => tracing::info!(pod_cidr = %cidr, "pod route removed"),
            Err(e) => tracing::warn!(pod_cidr = %cidr, error = %format!("{e:#}"), "removing a pod route"),
        }
        current.remove(&cidr);
    }
}

/// Keep the routes to other nodes' pods until the process ends (`ours`: this process's
/// node names).
pub async fn sync(client: Client, ours: HashSet<String>) {
    let api: Api<Node> = Api::all(client);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut current = installed().await;
    let mut listed = false;
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                nodes.insert(n.name_any(), n);
            }
            Ok(watcher::Event::Delete(n)) => {
                nodes.remove(&n.name_any());
            }
            Ok(watcher::Event::Init) => nodes.clear(),
            Ok(watcher::Event::InitDone) => listed = true,
            Err(e) => tracing::warn!(error = %e, "node watch for pod routes failed; retrying with backoff"),
        }
        // before the first full list, deleting would drop routes of nodes not yet seen
        if listed {
            apply(&mut current, &desired(nodes.values(), &ours)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        let addresses: Vec<_> = ips.iter().map(|ip| json!({"type": "InternalIP", "address": ip})).collect();
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
            "status": {"addresses": addresses}}))
        .unwrap()
    }

    #[test]
    fn each_other_node_is_reached_through_its_internal_ip() {
        let nodes = [
            node("me", &["10.244.0.0/24"], &["192.168.1.1"]),
            node("b", &["10.244.1.0/24", "fd00:1::/64"], &["192.168.1.2", "fd00::2"]),
            node("no-cidr", &[], &["192.168.1.3"]),
            node("no-ip", &["10.244.3.0/24"], &[]),
        ];
        let routes = desired(&nodes, &HashSet::from(["me".to_string()]));
        let expected: Routes = [("10.244.1.0/24", "192.168.1.2"), ("fd00:1::/64", "fd00::2")]
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .into();
        assert_eq!(routes, expected);
    }

    #[test]
    fn changes_replace_moved_and_new_routes_and_delete_gone_ones() {
        let r =
            |pairs: &[(&str, &str)]| -> Routes { pairs.iter().map(|(c, v)| (c.to_string(), v.to_string())).collect() };
        let current = r(&[("10.244.1.0/24", "10.0.0.2"), ("10.244.2.0/24", "10.0.0.3"), ("10.244.9.0/24", "10.0.0.9")]);
        let wanted = r(&[("10.244.1.0/24", "10.0.0.2"), ("10.244.2.0/24", "10.0.0.4"), ("10.244.3.0/24", "10.0.0.5")]);
        let (replace, delete) = changes(&current, &wanted);
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(c, via)| (c.to_string(), via.to_string())).collect::<Vec<_>>();
        assert_eq!(replace, pairs(&[("10.244.2.0/24", "10.0.0.4"), ("10.244.3.0/24", "10.0.0.5")]));
        assert_eq!(delete, ["10.244.9.0/24"]);
    }
}
