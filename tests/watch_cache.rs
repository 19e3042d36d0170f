//! The watch cache and watch semantics against a real etcd and the real server binary:
//! start modes, bookmarks, WatchList, selector transitions, 410s, no lost or reordered
//! events (checked against etcd's own history), server restarts, re-lists after etcd
//! compaction, many watchers, lists from the cache, stock kubectl 1.27 and 1.33, and
//! bad input. Self-contained: its own small harness below.

#[path = "common/watch_lines.rs"]
mod watch_lines;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::EventType;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// Longest wait for anything the test expects to happen.
const WAIT: Duration = Duration::from_secs(60);
const CMS: &str = "/api/v1/namespaces/default/configmaps";

// ---------------------------------------------------------------------------------------
// harness

struct Cluster {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    server: Option<Child>,
    etcd_url: String,
    peer_url: String,
    port: u16,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn signal(child: &Option<Child>, sig: &str) {
    let pid = child.as_ref().expect("running").id();
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("kill").success();
    assert!(ok, "kill -{sig} {pid}");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            let _ = Command::new("kill").arg("-CONT").arg(server.id().to_string()).status();
        }
        kill(&mut self.server);
        kill(&mut self.etcd);
    }
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    async fn start_with(server_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(300))
            .build()
            .expect("http client");
        let mut c = Cluster {
            dir,
            etcd: None,
            server: None,
            etcd_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            port: free_port(),
            http,
        };
        c.start_etcd().await;
        c.start_server(server_args).await;
        c
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(name)).expect("log file")
    }

    async fn start_etcd(&mut self) {
        let child = Command::new("etcd")
            .arg(format!("--data-dir={}", self.dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={}", self.etcd_url))
            .arg(format!("--advertise-client-urls={}", self.etcd_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=default={}", self.peer_url))
            .arg("--experimental-watch-progress-notify-interval=1s")
            .stdin(Stdio::null())
            .stdout(self.log("etcd.log"))
            .stderr(self.log("etcd.log"))
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.etcd = Some(child);
        let url = self.etcd_url.clone();
        poll_until(&|| format!("etcd did not start: {}", self.log_tail("etcd.log")), || async {
            match etcd_client::Client::connect([url.as_str()], None).await {
                Ok(mut e) => e.get("/", None).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Start the server and wait until it is ready; if it exits (another test took its
    /// port between our pick and its bind), try again on another port.
    async fn start_server(&mut self, extra: &[&str]) {
        for _ in 0..5 {
            let child = Command::new(env!("CARGO_BIN_EXE_ferrokube"))
                .arg("apiserver")
                .arg(format!("--etcd-servers={}", self.etcd_url))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={}", self.port))
                .arg(format!("--cert-dir={}", self.dir.path().join("certs").display()))
                .arg(format!("--write-kubeconfig={}", self.kubeconfig().display()))
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(self.log("server.log"))
                .stderr(self.log("server.log"))
                .spawn()
                .expect("start the server");
            self.server = Some(child);
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                if self.http.get(self.url("/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return;
                }
                if self.server.as_mut().and_then(|s| s.try_wait().ok().flatten()).is_some() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the server did not get ready: {}",
                    self.log_tail("server.log")
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.server = None;
            self.port = free_port();
        }
        panic!("the server keeps exiting: {}", self.log_tail("server.log"));
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.etcd_url.as_str()], None).await.expect("etcd client")
    }

    async fn etcd_revision(&self) -> i64 {
        self.etcd().await.get("/", None).await.expect("etcd get").header().expect("header").revision()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        ctype: &str,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.header("content-type", ctype).body(serde_json::to_vec(b).unwrap());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>, ctype: &str) -> Value {
        let (status, v) = self.send(method.clone(), path, body, ctype).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        self.ok(reqwest::Method::GET, path, None, "").await
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.ok(reqwest::Method::POST, path, Some(body), "application/json").await
    }

    async fn merge_patch(&self, path: &str, body: &Value) -> Value {
        self.ok(reqwest::Method::PATCH, path, Some(body), "application/merge-patch+json").await
    }

    async fn delete(&self, path: &str) -> Value {
        self.ok(reqwest::Method::DELETE, path, None, "").await
    }

    async fn create_cm(&self, ns: &str, name: &str, labels: Value) -> i64 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}});
        rv(&self.post(&format!("/api/v1/namespaces/{ns}/configmaps"), &cm).await)
    }

    async fn label_cm(&self, ns: &str, name: &str, labels: Value) -> i64 {
        let patch = json!({"metadata": {"labels": labels}});
        rv(&self.merge_patch(&format!("/api/v1/namespaces/{ns}/configmaps/{name}"), &patch).await)
    }

    async fn delete_cm(&self, ns: &str, name: &str) -> i64 {
        rv(&self.delete(&format!("/api/v1/namespaces/{ns}/configmaps/{name}")).await)
    }

    async fn namespace(&self, name: &str) {
        self.post("/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
            .await;
    }

    async fn watch(&self, path_and_query: &str) -> Watch {
        self.watch_as(path_and_query, "application/json").await
    }

    async fn watch_as(&self, path_and_query: &str, accept: &str) -> Watch {
        let resp = self.http.get(self.url(path_and_query)).header("accept", accept).send().await.expect("watch");
        assert_eq!(resp.status(), StatusCode::OK, "watch {path_and_query}");
        Watch { lines: watch_lines::WatchLines::new(resp) }
    }
}

/// Poll `ready` until it holds; panic with `what` after WAIT.
async fn poll_until<F: std::future::Future<Output = bool>>(what: &dyn Fn() -> String, ready: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no rv: {obj}"))
}

/// An open watch response, read one JSON line at a time.
struct Watch {
    lines: watch_lines::WatchLines,
}

impl Watch {
    /// The next event, or None when the stream ended (or nothing came within `wait`).
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        self.lines.next_within(wait).await
    }

    async fn next(&mut self) -> Value {
        self.next_within(WAIT).await.expect("a watch event")
    }

    /// Events (not bookmarks) until one, or a bookmark, carries a revision >= `rev`.
    async fn until(&mut self, rev: i64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let ev = self.next().await;
            assert_ne!(ev["type"], "ERROR", "{ev}");
            let at = rv(&ev["object"]);
            if ev["type"] != "BOOKMARK" {
                out.push(ev);
            }
            if at >= rev {
                return out;
            }
        }
    }
}

/// (type, name, resourceVersion) of watch events, for comparing sequences.
fn summary(events: &[Value]) -> Vec<(String, String, i64)> {
    events
        .iter()
        .map(|e| {
            let obj = &e["object"];
            (e["type"].as_str().unwrap().to_string(), obj["metadata"]["name"].as_str().unwrap().to_string(), rv(obj))
        })
        .collect()
}

/// One etcd event under a prefix, as etcd's history has it.
#[derive(Clone, Debug)]
struct EtcdEvent {
    rev: i64,
    key: String,
    cur: Option<Value>,
    prev: Option<Value>,
}

/// Every event under `prefix` after revision `after`, up to revision `upto`, read from
/// etcd's own history with an etcd watch.
async fn etcd_history(c: &Cluster, prefix: &str, after: i64, upto: i64) -> Vec<EtcdEvent> {
    let mut client = c.etcd().await.watch_client().max_decoding_message_size(1 << 30);
    let options = etcd_client::WatchOptions::new().with_prefix().with_start_revision(after + 1).with_prev_key();
    let mut stream = client.watch(prefix, Some(options)).await.expect("etcd watch");
    let mut out = Vec::new();
    if after >= upto {
        return out;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = tokio::time::timeout_at(deadline, stream.message()).await.expect("etcd history").unwrap().unwrap();
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            if kv.mod_revision() > upto {
                continue;
            }
            let parse = |v: &[u8]| serde_json::from_slice::<Value>(v).ok();
            out.push(EtcdEvent {
                rev: kv.mod_revision(),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                cur: (ev.event_type() == EventType::Put).then(|| parse(kv.value())).flatten(),
                prev: ev.prev_kv().and_then(|p| parse(p.value())),
            });
        }
        if out.last().is_some_and(|e| e.rev >= upto) {
            return out;
        }
    }
}

/// What a watcher with `selects` over `prefix` must see for these etcd events.
fn expected(history: &[EtcdEvent], prefix: &str, selects: &dyn Fn(&Value) -> bool) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for e in history.iter().filter(|e| e.key.starts_with(prefix)) {
        let was = e.prev.as_ref().is_some_and(selects);
        let is = e.cur.as_ref().is_some_and(selects);
        let kind = match (was, is) {
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
            (false, false) => continue,
        };
        let name = e.key.rsplit('/').next().unwrap().to_string();
        out.push((kind.to_string(), name, e.rev));
    }
    out
}

fn label_is(key: &'static str, value: &'static str) -> impl Fn(&Value) -> bool {
    move |obj: &Value| obj["metadata"]["labels"][key] == value
}

// ---------------------------------------------------------------------------------------
// tests

/// Unset, "0" and N start modes; a pinned name; Table output's first event carries the
/// column definitions and later ones none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_modes() {
    let c = Cluster::start().await;
    c.create_cm("default", "one", json!({})).await;
    let after_one = c.create_cm("default", "two", json!({})).await;

    for query in ["watch=1", "watch=1&resourceVersion=0"] {
        let mut w = c.watch(&format!("{CMS}?{query}")).await;
        let mut names = BTreeSet::new();
        // with the root CA bundle the server publishes in every namespace
        for _ in 0..3 {
            let ev = w.next().await;
            assert_eq!(ev["type"], "ADDED", "{query}: {ev}");
            names.insert(ev["object"]["metadata"]["name"].as_str().unwrap().to_string());
        }
        let want = ["one", "two", "kube-root-ca.crt"].map(String::from);
        assert_eq!(names, BTreeSet::from(want), "{query}");
    }

    // N: only what came after N
    let mut from_n = c.watch(&format!("{CMS}?watch=1&resourceVersion={after_one}")).await;
    let mut pinned =
        c.watch(&format!("{CMS}?watch=1&resourceVersion={after_one}&fieldSelector=metadata.name%3Dfour")).await;
    let mut table = c
        .watch_as(&format!("{CMS}?watch=1&resourceVersion={after_one}"), "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    let three = c.create_cm("default", "three", json!({})).await;
    let four = c.create_cm("default", "four", json!({})).await;
    let events = from_n.until(four).await;
    assert_eq!(
        summary(&events),
        [("ADDED".into(), "three".into(), three), ("ADDED".into(), "four".into(), four)],
        "{events:?}"
    );
    let ev = pinned.next().await;
    assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("four")));
    let first = table.next().await;
    let second = table.next().await;
    assert_eq!(first["object"]["kind"], "Table", "{first}");
    assert!(!first["object"]["columnDefinitions"].as_array().unwrap().is_empty(), "{first}");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "three", "{first}");
    assert_eq!(second["object"]["columnDefinitions"], json!([]), "{second}");
    assert_eq!(second["object"]["rows"][0]["cells"][0], "four", "{second}");

    // GET and LIST with resourceVersion=0 come from the cache and agree with etcd
    let cm = c.get(&format!("{CMS}/four?resourceVersion=0")).await;
    assert_eq!(rv(&cm), four);
    let (status, _) = c.send(reqwest::Method::GET, &format!("{CMS}/nope?resourceVersion=0"), None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // sendInitialEvents=false: changes only, from the cache's current state ("0") or
    // from etcd's current revision (unset)
    for rv_param in ["&resourceVersion=0", ""] {
        let query = format!("{CMS}?watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan{rv_param}");
        let mut w = c.watch(&query).await;
        let name = format!("late{}", rv_param.len());
        let late = c.create_cm("default", &name, json!({})).await;
        let ev = w.next().await;
        assert_eq!(ev["type"], "ADDED", "{query}: {ev}");
        assert_eq!((ev["object"]["metadata"]["name"].as_str(), rv(&ev["object"])), (Some(name.as_str()), late));
    }

    // a timeout ends the stream
    let now = c.etcd_revision().await;
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={now}&timeoutSeconds=1")).await;
    assert!(w.next_within(WAIT).await.is_none(), "the watch outlived timeoutSeconds");
}

/// Lists from the cache: resourceVersion=0 with limit pages, continued from etcd at the
/// cache's revision; consistent lists; both agree with an exact list from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_from_the_cache_agree_with_etcd() {
    let c = Cluster::start().await;
    for i in 0..25 {
        c.create_cm("default", &format!("cm-{i:02}"), json!({"half": if i % 2 == 0 { "even" } else { "odd" }})).await;
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    let consistent = c.get(CMS).await;
    let at = rv(&consistent);
    let exact = c.get(&format!("{CMS}?resourceVersion={at}&resourceVersionMatch=Exact")).await;
    assert_eq!(consistent["items"], exact["items"]);
    // 25 and the root CA bundle the server publishes in every namespace
    assert_eq!(names(&exact).len(), 26);

    // NotOlderThan waits for the cache (a consistent list may have been served by etcd
    // while the cache lagged on a busy machine), or past its wait is served by etcd
    let not_older = c.get(&format!("{CMS}?resourceVersion={at}&resourceVersionMatch=NotOlderThan")).await;
    assert_eq!(not_older["items"], exact["items"]);
    // rv=0 takes the cache as it is: once it has reached `at`, it sees every object
    let first_page = format!("{CMS}?resourceVersion=0&limit=10");
    poll_until(&|| format!("the cache never reached {at}"), || async { rv(&c.get(&first_page).await) >= at }).await;
    let mut paged = Vec::new();
    let mut page = c.get(&first_page).await;
    assert_eq!(page["metadata"]["remainingItemCount"], 16, "{}", page["metadata"]);
    loop {
        paged.extend(names(&page));
        let Some(token) = page["metadata"]["continue"].as_str().map(str::to_string) else { break };
        page = c.get(&format!("{CMS}?limit=10&continue={token}")).await;
    }
    assert_eq!(paged, names(&exact));
    let odd = c.get(&format!("{CMS}?resourceVersion=0&labelSelector=half%3Dodd")).await;
    assert_eq!(names(&odd).len(), 12);
    let everywhere = c.get("/api/v1/configmaps?resourceVersion=0").await;
    // and kube-root-ca.crt in each of the four built-in namespaces
    assert_eq!(names(&everywhere).len(), 25 + 4);
}

/// allowWatchBookmarks: periodic BOOKMARKs carry the cache's newest revision, also when
/// this resource is idle and others change. WatchList: the current objects, then a
/// BOOKMARK annotated initial-events-end, then changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_watch_list() {
    let c = Cluster::start().await;
    let start = c.create_cm("default", "a", json!({})).await;
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={start}&allowWatchBookmarks=true")).await;
    // a write elsewhere moves etcd's revision; this watch's bookmarks follow it
    c.namespace("elsewhere").await;
    let later = c.etcd_revision().await;
    loop {
        let ev = w.next().await;
        assert_eq!(ev["type"], "BOOKMARK", "{ev}");
        assert_eq!(ev["object"]["kind"], "ConfigMap");
        assert_eq!(ev["object"]["apiVersion"], "v1");
        if rv(&ev["object"]) >= later {
            break;
        }
    }

    for (i, rv_param) in ["", "&resourceVersion=0", &format!("&resourceVersion={start}")].into_iter().enumerate() {
        let query = format!(
            "{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true{rv_param}"
        );
        let mut w = c.watch(&query).await;
        let listed: BTreeSet<String> =
            c.get(CMS).await["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].to_string()).collect();
        let mut initial = BTreeSet::new();
        let end = loop {
            let ev = w.next().await;
            if ev["type"] == "BOOKMARK" {
                break ev;
            }
            assert_eq!(ev["type"], "ADDED", "{query}: {ev}");
            initial.insert(ev["object"]["metadata"]["name"].to_string());
        };
        assert_eq!(initial, listed, "{query}");
        assert_eq!(end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true", "{end}");
        assert!(rv(&end["object"]) >= start);
        let b = c.create_cm("default", &format!("b{i}"), json!({})).await;
        let events = w.until(b).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["type"], "ADDED");
    }
}

/// Selectors: entering is ADDED, changing inside MODIFIED, leaving DELETED (with the
/// object as it was, at the change's revision), deletion of a selected object DELETED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_transitions() {
    let c = Cluster::start().await;
    let start = c.create_cm("default", "x", json!({"team": "red"})).await;
    let mut blue = c.watch(&format!("{CMS}?watch=1&resourceVersion={start}&labelSelector=team%3Dblue")).await;
    let mut not_red = c.watch(&format!("{CMS}?watch=1&resourceVersion={start}&labelSelector=team%21%3Dred")).await;
    let r1 = c.label_cm("default", "x", json!({"team": "blue"})).await;
    let r2 = c.label_cm("default", "x", json!({"team": "blue", "more": "yes"})).await;
    let r3 = c.label_cm("default", "x", json!({"team": "red"})).await;
    let r4 = c.label_cm("default", "x", json!({"team": "blue"})).await;
    let r5 = c.delete_cm("default", "x").await;
    let events = blue.until(r5).await;
    let want = vec![
        ("ADDED".to_string(), "x".to_string(), r1),
        ("MODIFIED".into(), "x".into(), r2),
        ("DELETED".into(), "x".into(), r3),
        ("ADDED".into(), "x".into(), r4),
        ("DELETED".into(), "x".into(), r5),
    ];
    assert_eq!(summary(&events), want);
    assert_eq!(events[2]["object"]["metadata"]["labels"]["team"], "blue", "leaving carries the old object");
    assert_eq!(summary(&not_red.until(r5).await), want);
}

/// A watch from a revision etcd compacted (and the cache's history, re-read after a
/// restart, no longer reaches) gets an ERROR event with a 410 Expired Status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_revision_is_410() {
    let mut c = Cluster::start().await;
    let old = c.create_cm("default", "a", json!({})).await;
    for i in 0..5 {
        c.create_cm("default", &format!("b{i}"), json!({})).await;
    }
    let head = c.etcd_revision().await;
    c.etcd().await.compact(head, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    // the running cache still holds the events, but etcd's compaction rules
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={old}")).await;
    let ev = w.next().await;
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    assert_eq!(ev["object"]["reason"], "Expired", "{ev}");
    let msg = ev["object"]["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("too old resource version: {old} (")), "{msg}");
    // after a restart the cache's history starts at the compaction
    kill(&mut c.server);
    c.start_server(&[]).await;
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={old}")).await;
    assert_eq!(w.next().await["object"]["code"], 410);
    // from the compaction on, watches work
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={head}")).await;
    let next = c.create_cm("default", "c", json!({})).await;
    assert_eq!(summary(&w.until(next).await), [("ADDED".into(), "c".into(), next)]);
}

/// Several writers, several watchers starting at different revisions with different
/// selectors: each sees exactly etcd's history through its selector, in etcd order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_or_reordered_events() {
    let c = std::sync::Arc::new(Cluster::start().await);
    c.namespace("other").await;
    let begin = c.etcd_revision().await;
    let writer = |w: usize, ops: usize| {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..ops {
                let name = format!("w{w}-{}", i % 7);
                let ns = if i % 3 == 0 { "other" } else { "default" };
                let grp = if i % 2 == 0 { "a" } else { "b" };
                let path = format!("/api/v1/namespaces/{ns}/configmaps/{name}");
                let (status, _) = c.send(reqwest::Method::GET, &path, None, "").await;
                if status == StatusCode::NOT_FOUND {
                    c.create_cm(ns, &name, json!({"grp": grp, "writer": w.to_string()})).await;
                } else if i % 5 == 0 {
                    c.delete_cm(ns, &name).await;
                } else {
                    c.label_cm(ns, &name, json!({"grp": grp, "writer": w.to_string()})).await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..4).map(|w| writer(w, 60)).collect();

    // watchers start while the writers run
    let mut watchers = Vec::new();
    for (i, (path, selector)) in [
        ("/api/v1/configmaps", ""),
        (CMS, "&labelSelector=grp%3Da"),
        ("/api/v1/configmaps", "&labelSelector=writer%3D1"),
        (CMS, "&fieldSelector=metadata.name%3Dw2-3"),
        ("/api/v1/namespaces/other/configmaps", "&labelSelector=grp%21%3Db"),
    ]
    .into_iter()
    .enumerate()
    {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let from = if i == 0 { begin } else { c.etcd_revision().await - (i as i64) };
        let w = c.watch(&format!("{path}?watch=1&allowWatchBookmarks=true&resourceVersion={from}{selector}")).await;
        watchers.push((path, selector, from, w));
    }
    // one WatchList watcher, whose snapshot is checked against etcd at its revision
    let mut listed = c
        .watch(&format!(
            "{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=grp%3Db"
        ))
        .await;
    for w in writers {
        w.await.unwrap();
    }
    let end = c.etcd_revision().await;
    let history = etcd_history(&c, "/registry/configmaps/", begin, end).await;

    for (path, selector, from, mut w) in watchers {
        let prefix = match path {
            "/api/v1/configmaps" => "/registry/configmaps/".to_string(),
            p => format!("/registry/configmaps/{}/", p.split('/').nth(4).unwrap()),
        };
        let select: Box<dyn Fn(&Value) -> bool> = match selector {
            "" => Box::new(|_| true),
            "&labelSelector=grp%3Da" => Box::new(label_is("grp", "a")),
            "&labelSelector=writer%3D1" => Box::new(label_is("writer", "1")),
            "&fieldSelector=metadata.name%3Dw2-3" => Box::new(|o: &Value| o["metadata"]["name"] == "w2-3"),
            _ => Box::new(|o: &Value| o["metadata"]["labels"]["grp"] != "b"),
        };
        let after: Vec<EtcdEvent> = history.iter().filter(|e| e.rev > from).cloned().collect();
        let want = expected(&after, &prefix, &*select);
        let got = summary(&w.until(end).await);
        assert_eq!(got, want, "watcher {path}{selector} from {from}");
    }

    // the WatchList watcher: its snapshot is etcd's state at its bookmark's revision
    let mut initial = BTreeMap::new();
    let snapshot_rev = loop {
        let ev = listed.next().await;
        if ev["type"] == "BOOKMARK" {
            break rv(&ev["object"]);
        }
        assert_eq!(ev["type"], "ADDED", "{ev}");
        initial.insert(ev["object"]["metadata"]["name"].as_str().unwrap().to_string(), rv(&ev["object"]));
    };
    let kvs = c
        .etcd()
        .await
        .get(
            "/registry/configmaps/default/",
            Some(etcd_client::GetOptions::new().with_prefix().with_revision(snapshot_rev)),
        )
        .await
        .unwrap();
    let at_snapshot: BTreeMap<String, i64> = kvs
        .kvs()
        .iter()
        .filter(|kv| label_is("grp", "b")(&serde_json::from_slice(kv.value()).unwrap()))
        .map(|kv| (String::from_utf8_lossy(kv.key()).rsplit('/').next().unwrap().to_string(), kv.mod_revision()))
        .collect();
    assert_eq!(initial, at_snapshot);
    let after: Vec<EtcdEvent> = history.iter().filter(|e| e.rev > snapshot_rev).cloned().collect();
    let want = expected(&after, "/registry/configmaps/default/", &label_is("grp", "b"));
    assert_eq!(summary(&listed.until(end).await), want);
}

/// The server restarts mid-stream, with changes written to etcd while it is down:
/// watchers resuming from their last resourceVersion miss nothing and repeat nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_resumes_without_loss() {
    let mut c = Cluster::start().await;
    let begin = c.create_cm("default", "seed", json!({"grp": "a"})).await;
    let selectors = ["", "&labelSelector=grp%3Da"];
    let mut seen: Vec<Vec<(String, String, i64)>> = vec![Vec::new(); selectors.len()];
    let mut last = vec![begin; selectors.len()];
    let mut watches = Vec::new();
    for sel in selectors {
        watches.push(c.watch(&format!("{CMS}?watch=1&allowWatchBookmarks=true&resourceVersion={begin}{sel}")).await);
    }
    for i in 0..5 {
        c.create_cm("default", &format!("before-{i}"), json!({"grp": if i % 2 == 0 { "a" } else { "b" }})).await;
    }
    let mid = c.label_cm("default", "seed", json!({"grp": "b"})).await;
    for (i, w) in watches.iter_mut().enumerate() {
        let events = w.until(mid).await;
        seen[i].extend(summary(&events));
        last[i] = mid;
    }
    drop(watches);

    // down: changes land in etcd directly
    kill(&mut c.server);
    let mut etcd = c.etcd().await;
    let raw = |name: &str, grp: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"grp": grp}}})
        .to_string()
    };
    etcd.put("/registry/configmaps/default/while-down", raw("while-down", "a"), None).await.unwrap();
    etcd.put("/registry/configmaps/default/before-1", raw("before-1", "a"), None).await.unwrap();
    etcd.delete("/registry/configmaps/default/before-0", None).await.unwrap();
    c.start_server(&[]).await;
    c.create_cm("default", "after", json!({"grp": "a"})).await;
    let end = c.label_cm("default", "seed", json!({"grp": "a"})).await;

    let history = etcd_history(&c, "/registry/configmaps/default/", begin, end).await;
    for (i, sel) in selectors.iter().enumerate() {
        let mut w = c.watch(&format!("{CMS}?watch=1&allowWatchBookmarks=true&resourceVersion={}{sel}", last[i])).await;
        seen[i].extend(summary(&w.until(end).await));
        let select: Box<dyn Fn(&Value) -> bool> =
            if sel.is_empty() { Box::new(|_| true) } else { Box::new(label_is("grp", "a")) };
        let want = expected(&history, "/registry/configmaps/default/", &*select);
        assert_eq!(seen[i], want, "watcher {sel:?}");
    }
}

/// etcd restarts and compacts while the server is frozen: the cache's watch cannot
/// resume, so it re-lists and sends its watchers the difference; a new watch from inside
/// the gap it cannot replay gets a 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relist_after_compaction_sends_the_difference() {
    let mut c = Cluster::start().await;
    for name in ["keep", "gone", "changed"] {
        c.create_cm("default", name, json!({"v": "1"})).await;
    }
    let start = c.etcd_revision().await;
    let mut w = c.watch(&format!("{CMS}?watch=1&allowWatchBookmarks=true&resourceVersion={start}")).await;
    // the cache must hold the three before the server freezes (on a busy machine its feed
    // can lag the writes), or the re-list has nothing to compare with
    poll_until(&|| "the cache never saw the three configmaps".to_string(), || async {
        let list = c.get(&format!("{CMS}?resourceVersion=0")).await;
        let names: BTreeSet<&str> =
            list["items"].as_array().into_iter().flatten().filter_map(|i| i["metadata"]["name"].as_str()).collect();
        ["keep", "gone", "changed"].iter().all(|n| names.contains(n))
    })
    .await;
    signal(&c.server, "STOP");
    kill(&mut c.etcd);
    c.start_etcd().await;
    let mut etcd = c.etcd().await;
    etcd.delete("/registry/configmaps/default/gone", None).await.unwrap();
    let changed = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "changed", "namespace": "default", "uid": "u1", "labels": {"v": "2"}}});
    etcd.put("/registry/configmaps/default/changed", changed.to_string(), None).await.unwrap();
    let new = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "new", "namespace": "default", "uid": "u2"}});
    etcd.put("/registry/configmaps/default/new", new.to_string(), None).await.unwrap();
    etcd.put("/registry/unrelated", "x", None).await.unwrap();
    let head = c.etcd_revision().await;
    etcd.compact(head, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    signal(&c.server, "CONT");

    let events = w.until(head).await;
    let got: BTreeSet<(String, String)> = summary(&events).into_iter().map(|(t, n, _)| (t, n)).collect();
    let want: BTreeSet<(String, String)> = [("DELETED", "gone"), ("MODIFIED", "changed"), ("ADDED", "new")]
        .into_iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(got, want, "{events:?}");
    let revs: Vec<i64> = events.iter().map(|e| rv(&e["object"])).collect();
    assert!(revs.windows(2).all(|p| p[0] <= p[1]), "events in revision order: {revs:?}");

    // inside the gap: the cache knows only the difference, not the events
    let mut gap = c.watch(&format!("{CMS}?watch=1&resourceVersion={}", start + 1)).await;
    assert_eq!(gap.next().await["object"]["code"], 410);
    // the state after agrees with etcd
    let list = c.get(&format!("{CMS}?resourceVersion=0")).await;
    let names: BTreeSet<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["keep", "changed", "new", "kube-root-ca.crt"]));
}

/// Many watchers all receive every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_receive_every_event() {
    let c = Cluster::start().await;
    let start = c.etcd_revision().await;
    let clients: Vec<reqwest::Client> = (0..4)
        .map(|_| reqwest::Client::builder().danger_accept_invalid_certs(true).http1_only().build().unwrap())
        .collect();
    let mut watches = Vec::new();
    for i in 0..200 {
        let resp = clients[i % clients.len()]
            .get(c.url(&format!("{CMS}?watch=1&resourceVersion={start}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        watches.push(Watch { lines: watch_lines::WatchLines::new(resp) });
    }
    let mut last = 0;
    for i in 0..20 {
        last = c.create_cm("default", &format!("m{i}"), json!({})).await;
    }
    let readers: Vec<_> =
        watches.into_iter().map(|mut w| tokio::spawn(async move { summary(&w.until(last).await).len() })).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 20);
    }
}

/// A watcher that stops reading falls behind the cache's (here small) history: its stream
/// ends after a gap-free prefix of the events, instead of holding the others up or
/// growing memory; resuming from its last version then says 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_cut_off_without_gaps() {
    let c = Cluster::start_with(&["--watch-cache-history=50"]).await;
    let start = c.create_cm("default", "big", json!({})).await;
    let http1 = reqwest::Client::builder().danger_accept_invalid_certs(true).http1_only().build().unwrap();
    let resp = http1.get(c.url(&format!("{CMS}?watch=1&resourceVersion={start}"))).send().await.unwrap();
    let mut slow = Watch { lines: watch_lines::WatchLines::new(resp) };
    let mut fast = c.watch(&format!("{CMS}?watch=1&resourceVersion={start}")).await;
    let fast = tokio::spawn(async move {
        let mut n = 0;
        while n < 800 {
            let ev = fast.next().await;
            assert_eq!(ev["type"], "MODIFIED", "{ev}");
            n += 1;
        }
    });
    let filler = "x".repeat(32 * 1024);
    let mut last = start;
    for i in 0..800 {
        let patch = json!({"data": {"v": format!("{i}{filler}")}});
        last = rv(&c.merge_patch(&format!("{CMS}/big"), &patch).await);
    }
    // the reading watcher got everything
    fast.await.unwrap();
    let history = etcd_history(&c, "/registry/configmaps/default/", start, last).await;
    let want = expected(&history, "/registry/configmaps/default/", &|_| true);
    let mut got = Vec::new();
    while let Some(ev) = slow.next_within(WAIT).await {
        got.push(ev);
    }
    let got = summary(&got);
    assert!(got.len() < want.len(), "the slow watcher was never cut off");
    assert_eq!(got, want[..got.len()], "what it got is a gap-free prefix");
    let resume = got.last().map_or(start, |e| e.2);
    let mut again = c.watch(&format!("{CMS}?watch=1&resourceVersion={resume}")).await;
    assert_eq!(again.next().await["object"]["code"], 410);
}

/// Bad input is a 400 Status, before any stream starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_watch_and_list_options_are_400() {
    let c = Cluster::start().await;
    for query in [
        "watch=1&resourceVersion=abc",
        "resourceVersion=abc",
        "sendInitialEvents=true",
        "watch=1&sendInitialEvents=true",
        "watch=1&sendInitialEvents=maybe&resourceVersionMatch=NotOlderThan",
        "watch=1&resourceVersionMatch=NotOlderThan",
        "watch=1&sendInitialEvents=true&resourceVersionMatch=Exact",
        "resourceVersion=1&resourceVersionMatch=Sometimes",
        "resourceVersionMatch=NotOlderThan",
        "resourceVersion=0&resourceVersionMatch=Exact",
        "watch=1&labelSelector=a%20in%20(b",
        "watch=1&fieldSelector=nonsense",
        "watch=1&fieldSelector=spec.nothing%3Dx",
        "watch=1&allowWatchBookmarks=perhaps",
    ] {
        let (status, body) = c.send(reqwest::Method::GET, &format!("{CMS}?{query}"), None, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["kind"], "Status", "{query}: {body}");
        assert_eq!(body["reason"], "BadRequest", "{query}: {body}");
    }
    // a future resourceVersion: Too large, after a short wait, in the stream
    let future = c.etcd_revision().await + 1000;
    let mut w = c.watch(&format!("{CMS}?watch=1&resourceVersion={future}")).await;
    let ev = w.next().await;
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 504, "{ev}");
    assert!(ev["object"]["message"].as_str().unwrap().starts_with("Too large resource version"), "{ev}");
}

/// Stock kubectl: get -w, --watch-only, -o json -w, wait --for=delete,
/// --for=condition=Ready and --for=jsonpath, with the oldest and newest supported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_and_wait() {
    let c = Cluster::start().await;
    let kubectl_dir = which_kubectl_dir();
    for version in ["1.27", "1.33"] {
        let bin = kubectl_dir.join(format!("kubectl.{version}"));
        let ns = format!("kc{}", version.replace('.', ""));
        c.namespace(&ns).await;
        let pod = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        };
        let pods = format!("/api/v1/namespaces/{ns}/pods");
        c.post(&pods, &pod("existing")).await;

        // get -w: the existing pod, then a new one
        let mut get_w = Kubectl::spawn(&bin, &c, &["get", "pods", "-n", &ns, "-w"]);
        get_w.line_with("existing").await;
        c.post(&pods, &pod("new")).await;
        get_w.line_with("new").await;
        drop(get_w);

        // --watch-only: only what changes after it started
        let mut only = Kubectl::spawn(&bin, &c, &["get", "pods", "-n", &ns, "--watch-only", "-o", "name", "-v=6"]);
        // -v=6 logs each request: once the watch is open, what changes is printed
        only.stderr_line_with("watch=true").await;
        c.post(&pods, &pod("third")).await;
        let first = only.line_with("pod/").await;
        assert_eq!(first.trim(), "pod/third", "kubectl {version} --watch-only printed {first:?}");
        drop(only);

        // -o json -w: whole objects
        let mut json_w = Kubectl::spawn(&bin, &c, &["get", "pod", "third", "-n", &ns, "-o", "json", "-w"]);
        json_w.line_with("\"name\": \"third\"").await;
        c.merge_patch(&format!("{pods}/third"), &json!({"metadata": {"labels": {"seen": "yes"}}})).await;
        json_w.line_with("\"seen\": \"yes\"").await;
        drop(json_w);

        // wait --for=delete
        let wait_delete =
            Kubectl::spawn(&bin, &c, &["wait", "--for=delete", "pod/existing", "-n", &ns, "--timeout=60s"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.delete(&format!("{pods}/existing")).await;
        wait_delete.success().await;

        // wait --for=condition=Ready, the status set by hand
        let wait_ready =
            Kubectl::spawn(&bin, &c, &["wait", "--for=condition=Ready", "pod/new", "-n", &ns, "--timeout=60s"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        c.merge_patch(&format!("{pods}/new/status"), &status).await;
        wait_ready.success().await;

        // wait --for=jsonpath
        let wait_path = Kubectl::spawn(
            &bin,
            &c,
            &["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/third", "-n", &ns, "--timeout=60s"],
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.merge_patch(&format!("{pods}/third/status"), &json!({"status": {"phase": "Succeeded"}})).await;
        wait_path.success().await;
    }
}

fn which_kubectl_dir() -> PathBuf {
    let out = Command::new("sh").arg("-c").arg("readlink -f \"$(command -v kubectl)\"").output().expect("kubectl");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.parent().expect("kubectl's directory").to_path_buf()
}

/// A kubectl child process whose output is read line by line.
struct Kubectl {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    errors: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    seen: Vec<String>,
}

impl Kubectl {
    fn spawn(bin: &std::path::Path, c: &Cluster, args: &[&str]) -> Kubectl {
        let mut child = tokio::process::Command::new(bin)
            .arg(format!("--kubeconfig={}", c.kubeconfig().display()))
            .args(args)
            .env("HOME", c.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Kubectl {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
            errors: tokio::io::BufReader::new(stderr).lines(),
            seen: Vec::new(),
        }
    }

    async fn line_with(&mut self, needle: &str) -> String {
        Kubectl::read_until(&mut self.lines, &mut self.seen, needle).await
    }

    async fn stderr_line_with(&mut self, needle: &str) -> String {
        Kubectl::read_until(&mut self.errors, &mut self.seen, needle).await
    }

    async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
        lines: &mut tokio::io::Lines<R>,
        seen: &mut Vec<String>,
        needle: &str,
    ) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                other => panic!("kubectl never printed {needle:?} ({other:?}); printed {seen:?}"),
            }
        }
    }

    async fn success(mut self) {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("kubectl finished").unwrap();
        let mut err = Vec::new();
        while let Ok(Some(line)) = self.errors.next_line().await {
            err.push(line);
        }
        assert!(status.success(), "kubectl failed: {err:?}");
    }
}
