//! WATCH over raw HTTPS: JSON lines of ADDED / MODIFIED / DELETED (`kubectl get -w` is
//! checked in kubectl.rs).

mod common;

use std::time::Duration;

use common::*;

const CMS: &str = "/api/v1/namespaces/default/configmaps";
/// How long to wait for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// An open watch response, read one JSON line at a time.
struct Watch {
    lines: common::watch_lines::WatchLines,
}

impl Watch {
    async fn open(c: &Cluster, path: &str) -> Watch {
        let resp = c.http.get(c.url(path)).timeout(Duration::from_secs(300)).send().await.expect("watch request");
        assert_eq!(resp.status(), StatusCode::OK, "watch {path}");
        Watch { lines: common::watch_lines::WatchLines::new(resp) }
    }

    /// The next event, or None when the stream ended or nothing came within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        self.lines.next_within(wait).await
    }

    async fn next(&mut self) -> Value {
        self.next_within(EVENT_WAIT).await.expect("a watch event")
    }

    /// The next event must be `kind` for the object `name`; returns the object.
    async fn expect(&mut self, kind: &str, name: &str) -> Value {
        self.expect_skipping(kind, name, None).await
    }

    /// `expect`, passing over events for `skip`: objects that controllers write at their
    /// own pace (the root-CA publisher's `kube-root-ca.crt` in a new namespace), whose
    /// order among the test's own writes is not fixed.
    async fn expect_skipping(&mut self, kind: &str, name: &str, skip: Option<&str>) -> Value {
        let mut ev = self.next().await;
        while skip.is_some() && ev["object"]["metadata"]["name"].as_str() == skip {
            ev = self.next().await;
        }
        assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some(kind), Some(name)), "{ev}");
        ev["object"].clone()
    }
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{obj}"))
}

/// ?watch=1 streams ADDED / MODIFIED / DELETED after a resourceVersion, replays history
/// from an old one, sends the current state without one, follows selectors, reports
/// compaction as a 410 ERROR event and ends at timeoutSeconds.
#[tokio::test]
async fn http_watch_streams_changes() {
    let c = Cluster::start().await;
    // the server publishes its root CA bundle in every namespace: let it be there first
    while c.get(&format!("{CMS}/kube-root-ca.crt")).await.0 != StatusCode::OK {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.create(CMS, &configmap("before", json!({}))).await;
    let start = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    // live: open first, then change things
    let mut w = Watch::open(&c, &format!("{CMS}?watch=1&resourceVersion={start}")).await;
    let created = c.create(CMS, &configmap("live", json!({"v": "1"}))).await;
    let mut changed = created.clone();
    changed["data"]["v"] = json!("2");
    let (_, updated) = c.put(&format!("{CMS}/live"), &changed).await;
    let (status, _) = c.delete(&format!("{CMS}/live")).await;
    assert_eq!(status, StatusCode::OK);
    let added = w.expect("ADDED", "live").await;
    assert_eq!(rv(&added), rv(&created));
    assert_eq!(added["kind"], "ConfigMap");
    assert_eq!(added["apiVersion"], "v1");
    let modified = w.expect("MODIFIED", "live").await;
    assert_eq!(rv(&modified), rv(&updated));
    assert_eq!(modified["data"]["v"], "2");
    let deleted = w.expect("DELETED", "live").await;
    assert!(rv(&deleted) > rv(&updated), "DELETED carries the deletion's revision: {deleted}");
    // "before" existed before the watch's resourceVersion: never reported
    drop(w);

    // replay: the same three events from history, opened after the fact
    let mut w = Watch::open(&c, &format!("{CMS}?watch=true&resourceVersion={start}")).await;
    w.expect("ADDED", "live").await;
    w.expect("MODIFIED", "live").await;
    w.expect("DELETED", "live").await;
    drop(w);

    // no resourceVersion: the current state first, as ADDED
    let mut w = Watch::open(&c, &format!("{CMS}?watch=1")).await;
    w.expect("ADDED", "before").await;
    w.expect("ADDED", "kube-root-ca.crt").await;
    c.create(CMS, &configmap("after", json!({}))).await;
    w.expect("ADDED", "after").await;
    drop(w);

    // the legacy /watch/ path form
    let now = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut w = Watch::open(&c, &format!("/api/v1/watch/namespaces/default/configmaps?resourceVersion={now}")).await;
    c.create(CMS, &configmap("legacy", json!({}))).await;
    w.expect("ADDED", "legacy").await;
    drop(w);

    // selectors: entering the selection is ADDED, leaving it DELETED, others unseen
    let now = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut w = Watch::open(&c, &format!("{CMS}?watch=1&resourceVersion={now}&labelSelector=team%3Dblue")).await;
    c.create(CMS, &configmap("unlabelled", json!({}))).await;
    let mut blue = configmap("blue", json!({}));
    blue["metadata"]["labels"] = json!({"team": "blue"});
    let b = c.create(CMS, &blue).await;
    w.expect("ADDED", "blue").await;
    let mut red = b.clone();
    red["metadata"]["labels"]["team"] = json!("red");
    assert_eq!(c.put(&format!("{CMS}/blue"), &red).await.0, StatusCode::OK);
    w.expect("DELETED", "blue").await;
    let (_, mut un) = c.get(&format!("{CMS}/unlabelled")).await;
    un["metadata"]["labels"] = json!({"team": "blue"});
    assert_eq!(c.put(&format!("{CMS}/unlabelled"), &un).await.0, StatusCode::OK);
    w.expect("ADDED", "unlabelled").await;
    drop(w);

    // one object by name, and all namespaces
    let now = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut one =
        Watch::open(&c, &format!("{CMS}?watch=1&resourceVersion={now}&fieldSelector=metadata.name%3Dpinned")).await;
    let mut everywhere = Watch::open(&c, &format!("/api/v1/configmaps?watch=1&resourceVersion={now}")).await;
    c.create("/api/v1/namespaces", &namespace("other")).await;
    c.create("/api/v1/namespaces/other/configmaps", &configmap("elsewhere", json!({}))).await;
    c.create(CMS, &configmap("pinned-not", json!({}))).await;
    c.create(CMS, &configmap("pinned", json!({}))).await;
    one.expect("ADDED", "pinned").await;
    let root_ca = Some("kube-root-ca.crt");
    let ev = everywhere.expect_skipping("ADDED", "elsewhere", root_ca).await;
    assert_eq!(ev["metadata"]["namespace"], "other");
    everywhere.expect_skipping("ADDED", "pinned-not", root_ca).await;
    everywhere.expect_skipping("ADDED", "pinned", root_ca).await;
    drop(one);
    drop(everywhere);

    // Table watches (what kubectl get -w asks for)
    let now = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let resp = c
        .http
        .get(c.url(&format!("{CMS}?watch=1&resourceVersion={now}")))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap();
    let mut w = Watch { lines: common::watch_lines::WatchLines::new(resp) };
    c.create(CMS, &configmap("tabled", json!({}))).await;
    let ev = w.next().await;
    assert_eq!(ev["type"], "ADDED", "{ev}");
    assert_eq!(ev["object"]["kind"], "Table", "{ev}");
    assert_eq!(ev["object"]["rows"][0]["cells"][0], "tabled", "{ev}");
    drop(w);

    // events.k8s.io watches see core/v1 events converted (one stored key space)
    let ev_start = c.must_get(CMS).await["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut w = Watch::open(
        &c,
        &format!("/apis/events.k8s.io/v1/namespaces/default/events?watch=1&resourceVersion={ev_start}"),
    )
    .await;
    let core_event = json!({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev"},
        "involvedObject": {"kind": "ConfigMap", "name": "tabled", "namespace": "default"},
        "reason": "Seen", "message": "converted", "type": "Normal",
    });
    c.create("/api/v1/namespaces/default/events", &core_event).await;
    let ev = w.expect("ADDED", "ev").await;
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1", "{ev}");
    assert_eq!(ev["note"], "converted", "{ev}");
    assert_eq!(ev["regarding"]["name"], "tabled", "{ev}");
    drop(w);

    // timeoutSeconds ends the stream
    let mut w = Watch::open(&c, &format!("{CMS}?watch=1&resourceVersion={now}&timeoutSeconds=1")).await;
    w.expect("ADDED", "tabled").await;
    assert!(w.next_within(Duration::from_secs(30)).await.is_none(), "the watch outlived timeoutSeconds");

    // from a compacted revision: an ERROR event with a 410 Expired Status
    let head = c.etcd_revision().await;
    c.create(CMS, &configmap("last", json!({}))).await;
    c.etcd_compact(head).await;
    let mut w = Watch::open(&c, &format!("{CMS}?watch=1&resourceVersion={}", head - 5)).await;
    let ev = w.next().await;
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["kind"], "Status", "{ev}");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    assert_eq!(ev["object"]["reason"], "Expired", "{ev}");
}
