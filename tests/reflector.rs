//! A client built on the `kube` crate's watcher and reflector keeps an exact mirror of
//! the server through creates, updates, deletes, an etcd compaction and an API server
//! restart — once with list+watch, once with streaming lists (WatchList).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};

async fn kube_client(c: &Cluster) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// name → (resourceVersion, data) of every ConfigMap.
type Mirror = BTreeMap<String, (String, BTreeMap<String, String>)>;

fn summarize<'a>(items: impl Iterator<Item = &'a ConfigMap>) -> Mirror {
    items
        .map(|cm| {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let rv = cm.metadata.resource_version.clone().unwrap_or_default();
            (name, (rv, cm.data.clone().unwrap_or_default()))
        })
        .collect()
}

async fn server_state(api: &Api<ConfigMap>) -> Mirror {
    let list = api.list(&Default::default()).await.expect("list");
    summarize(list.items.iter())
}

/// Wait until every store mirrors the server exactly.
async fn wait_mirrored(api: &Api<ConfigMap>, stores: &[(&str, &Store<ConfigMap>)], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = server_state(api).await;
        let mut lagging = Vec::new();
        for (label, store) in stores {
            let state = store.state();
            let got = summarize(state.iter().map(|arc| arc.as_ref()));
            if got != want {
                lagging.push(format!("{label}: {} objects, server {}", got.len(), want.len()));
            }
        }
        if lagging.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: mirrors never caught up: {lagging:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.data = Some(BTreeMap::from([("v".to_string(), value.to_string())]));
    cm
}

async fn churn(api: &Api<ConfigMap>, round: usize) {
    for i in 0..15 {
        api.create(&PostParams::default(), &configmap(&format!("r{round}-{i}"), "0")).await.expect("create");
    }
    for i in 0..8 {
        let patch = serde_json::json!({"data": {"v": format!("{round}")}});
        api.patch(&format!("r{round}-{i}"), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    }
    for i in 10..15 {
        api.delete(&format!("r{round}-{i}"), &DeleteParams::default()).await.expect("delete");
    }
}

#[tokio::test]
async fn kube_reflectors_mirror_the_server_through_compaction_and_restart() {
    let mut c = Cluster::start().await;
    let client = kube_client(&c).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let (list_watch, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff().reflect(writer).applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    let (streaming, writer) = reflector::store();
    let config = watcher::Config::default().streaming_lists();
    let stream = watcher(api.clone(), config).default_backoff().reflect(writer).applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    let stores = [("list+watch", &list_watch), ("streaming list", &streaming)];

    churn(&api, 1).await;
    wait_mirrored(&api, &stores, "after creates, updates and deletes").await;

    // compact everything etcd has: the reflectors' next resume point is gone
    let revision = c.etcd_revision().await;
    c.etcd_compact(revision).await;
    churn(&api, 2).await;
    wait_mirrored(&api, &stores, "after a compaction").await;

    // restart the API server; the reflectors reconnect and resume
    c.stop_server();
    c.start_server().await;
    let api_after: Api<ConfigMap> = Api::namespaced(kube_client(&c).await, "default");
    churn(&api_after, 3).await;
    wait_mirrored(&api_after, &stores, "after an API server restart").await;
}
