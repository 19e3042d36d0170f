//! Services and EndpointSlices (shared informers) → the zone. Handlers only note which
//! Service changed; one task rebuilds those Services' records in batches, so a burst of
//! slice updates for one Service costs one rebuild.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::mpsc;

use super::records;
use super::server::Server;
use crate::controllers::runtime::{Event, Informer, Informers, key_of};

/// The label joining an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Slice keys by the key of the Service they belong to.
type SliceIndex = Arc<Mutex<HashMap<String, BTreeSet<String>>>>;

/// Start following the API; returns once both informers have their first list and the
/// zone holds it.
pub async fn start(client: kube::Client, server: Arc<Server>) {
    let informers = Informers::new(client);
    let services = informers.get::<Service>();
    let slices = informers.get::<EndpointSlice>();
    let index: SliceIndex = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();

    let t = tx.clone();
    services.on_change(move |ev| {
        let _ = t.send(key_of(ev.object().as_ref()));
    });
    let idx = index.clone();
    slices.on_change(move |ev| slice_changed(&idx, &tx, ev));
    informers.start();
    informers.wait_synced().await;

    let rebuild = move |keys: BTreeSet<String>| {
        let built: Vec<_> = keys.iter().map(|key| (key, build(&services, &slices, &index, key, &server))).collect();
        let mut zone = server.zone.write().unwrap_or_else(|e| e.into_inner());
        for (key, records) in built {
            zone.set_service(key, records);
        }
        tracing::debug!(changed = keys.len(), services = zone.services(), "zone updated");
    };
    let mut first = BTreeSet::new();
    while let Ok(key) = rx.try_recv() {
        first.insert(key);
    }
    rebuild(first);
    tracing::info!("services and endpoint slices synced");
    tokio::spawn(async move {
        while let Some(key) = rx.recv().await {
            let mut keys = BTreeSet::from([key]);
            while let Ok(more) = rx.try_recv() {
                keys.insert(more);
            }
            rebuild(keys);
        }
    });
}

fn service_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{name}", slice.metadata.namespace.as_deref().unwrap_or_default()))
}

fn slice_changed(index: &SliceIndex, tx: &mpsc::UnboundedSender<String>, ev: &Event<EndpointSlice>) {
    let key = key_of(ev.object().as_ref());
    let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
    let mut unlink = |svc: String| {
        if let Some(set) = index.get_mut(&svc) {
            set.remove(&key);
            if set.is_empty() {
                index.remove(&svc);
            }
        }
        let _ = tx.send(svc);
    };
    match ev {
        Event::Deleted(old) => service_key(old).into_iter().for_each(&mut unlink),
        Event::Updated { old, new } if service_key(old) != service_key(new) => {
            service_key(old).into_iter().for_each(&mut unlink)
        }
        _ => {}
    }
    if !matches!(ev, Event::Deleted(_))
        && let Some(svc) = service_key(ev.object())
    {
        index.entry(svc.clone()).or_default().insert(key);
        let _ = tx.send(svc);
    }
}

fn build(
    services: &Informer<Service>,
    slices: &Informer<EndpointSlice>,
    index: &SliceIndex,
    key: &str,
    server: &Server,
) -> Option<records::ServiceRecords> {
    let svc = services.get(key)?;
    let keys: Vec<String> = index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let owned: Vec<_> = keys.iter().filter_map(|k| slices.get(k)).collect();
    Some(records::build(&svc, &owned, &server.auth.domain, server.auth.ttl))
}
