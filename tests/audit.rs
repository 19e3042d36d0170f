//! Auditing against the real server: stock kubectl and raw HTTPS requests produce
//! upstream's audit.k8s.io/v1 Events, one JSON line per stage, at the level the policy's
//! first matching rule sets; the Audit-Id header names each request's events.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const K: &str = "1.33";

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: [quiet]
- level: None
  userGroups: [hushed]
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*"]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Request
"#;

fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let tokens = dir.join("tokens.csv");
    let text = format!(
        "{DEV_TOKEN},admin,0,system:masters\nalice-token,alice,1,devs\nquiet-token,quiet,2,\nhushed-token,carol,3,hushed\n"
    );
    std::fs::write(&tokens, text).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    (tokens, policy, dir.join("audit.log"))
}

/// The log's events grouped by auditID, once the log holds the ResponseComplete of `last`.
fn read_log(log: &Path, last: &str) -> (String, HashMap<String, Vec<Value>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        let done = events.iter().any(|e| e["auditID"] == last && e["stage"] == "ResponseComplete");
        if done || Instant::now() > deadline {
            let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
            for e in events {
                by_id.entry(e["auditID"].as_str().unwrap().to_string()).or_default().push(e);
            }
            return (text, by_id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn call_as(c: &Cluster, token: &str, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    c.call(method, path, Body::None, &all).await
}

fn stages(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["stage"].as_str().unwrap()).collect()
}

fn completed(by_id: &HashMap<String, Vec<Value>>, id: &str) -> Value {
    let events = by_id.get(id).unwrap_or_else(|| panic!("no events for {id}"));
    events.iter().find(|e| e["stage"] == "ResponseComplete").cloned().unwrap_or_else(|| panic!("{events:?}"))
}

/// The completed event of the first request matching `verb` and `resource` `name`.
fn find<'a>(by_id: &'a HashMap<String, Vec<Value>>, verb: &str, resource: &str, name: &str) -> &'a Vec<Value> {
    by_id
        .values()
        .find(|events| {
            events.iter().any(|e| {
                e["verb"] == verb
                    && e["objectRef"]["resource"] == resource
                    && e["objectRef"]["name"].as_str().unwrap_or("") == name
            })
        })
        .unwrap_or_else(|| panic!("no {verb} {resource}/{name} in the log"))
}

#[tokio::test]
async fn requests_are_audited_at_the_policy_level() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, policy, log) = setup(dir.path());
    let c = Cluster::start_with(&[
        &format!("--token-auth-file={}", tokens.display()),
        "--authorization-mode=RBAC",
        &format!("--audit-policy-file={}", policy.display()),
        &format!("--audit-log-path={}", log.display()),
    ])
    .await;
    c.kubectl_ok(K, &["create", "secret", "generic", "s", "--from-literal=password=hunter2"]);
    c.kubectl_ok(K, &["get", "secret", "s", "-o", "json"]);
    c.kubectl_ok(K, &["create", "configmap", "cm", "--from-literal=colour=teal"]);
    let missing = call_as(&c, DEV_TOKEN, Method::GET, "/api/v1/namespaces/default/configmaps/missing", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let forbidden = call_as(&c, "alice-token", Method::GET, "/api/v1/namespaces/default/pods", &[]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let unauthenticated = call_as(&c, "wrong-token", Method::GET, "/api/v1/namespaces/default/pods", &[]).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let quiet = call_as(&c, "quiet-token", Method::GET, "/api/v1/namespaces", &[]).await;
    let hushed = call_as(&c, "hushed-token", Method::GET, "/api/v1/namespaces", &[]).await;
    let health = call_as(&c, DEV_TOKEN, Method::GET, "/healthz", &[]).await;
    let version = call_as(&c, DEV_TOKEN, Method::GET, "/version", &[]).await;
    let as_bob =
        call_as(&c, DEV_TOKEN, Method::GET, "/api/v1/namespaces/default/configmaps/cm", &[("impersonate-user", "bob")])
            .await;
    let watch =
        call_as(&c, DEV_TOKEN, Method::GET, "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", &[])
            .await;
    assert_eq!(watch.status, StatusCode::OK);
    let last = call_as(&c, DEV_TOKEN, Method::GET, "/api/v1/namespaces/default/secrets", &[]).await;

    let (text, by_id) = read_log(&log, last.header("audit-id"));
    // the secret's value appears nowhere: Metadata level logs no bodies
    assert!(!text.contains("hunter2") && !text.contains("aHVudGVyMg"), "{text}");

    let create_secret = find(&by_id, "create", "secrets", "");
    assert_eq!(stages(create_secret), ["RequestReceived", "ResponseComplete"]);
    let done = &create_secret[1];
    assert_eq!(done["level"], "Metadata");
    assert_eq!(done["kind"], "Event");
    assert_eq!(done["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(done["user"]["username"], "admin");
    assert_eq!(done["user"]["groups"], json!(["system:masters", "system:authenticated"]));
    assert_eq!(done["objectRef"], json!({"resource": "secrets", "namespace": "default", "apiVersion": "v1"}));
    assert_eq!(done["responseStatus"]["code"], 201);
    assert_eq!(done["sourceIPs"], json!(["127.0.0.1"]));
    assert!(done["userAgent"].as_str().unwrap().starts_with("kubectl"), "{done}");
    assert_eq!(done["annotations"]["authorization.k8s.io/decision"], "allow");
    assert!(done.get("requestObject").is_none() && done.get("responseObject").is_none());
    assert!(done["requestReceivedTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(done["stageTimestamp"].as_str().unwrap().len(), "2026-11-24T03:00:00.000000Z".len());
    assert_eq!(find(&by_id, "get", "secrets", "s")[0]["level"], "Metadata");

    // configmaps: RequestResponse (kubectl 1.33 sends protobuf; the log has JSON)
    let create_cm = completed(&by_id, find(&by_id, "create", "configmaps", "")[0]["auditID"].as_str().unwrap());
    assert_eq!(create_cm["level"], "RequestResponse");
    assert_eq!(create_cm["requestObject"]["data"]["colour"], "teal", "{create_cm}");
    assert_eq!(create_cm["responseObject"]["metadata"]["name"], "cm");
    assert!(create_cm["responseObject"]["metadata"]["uid"].is_string());

    // a 404 with its Status, and the Audit-Id header naming the events
    let not_found = completed(&by_id, missing.header("audit-id"));
    assert_eq!(not_found["verb"], "get");
    assert_eq!(not_found["objectRef"]["name"], "missing");
    assert_eq!(not_found["responseStatus"]["code"], 404);
    assert_eq!(not_found["responseStatus"]["reason"], "NotFound");
    assert_eq!(not_found["responseStatus"]["status"], "Failure");
    assert_eq!(not_found["responseStatus"]["message"], "configmaps \"missing\" not found");

    // a 403 with the authorizer's decision
    let refused = completed(&by_id, forbidden.header("audit-id"));
    assert_eq!((refused["user"]["username"].as_str(), refused["verb"].as_str()), (Some("alice"), Some("list")));
    assert_eq!(refused["level"], "Request");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(refused["responseStatus"]["reason"], "Forbidden");
    assert_eq!(refused["annotations"]["authorization.k8s.io/decision"], "forbid");

    // refused by authentication: audited all the same, with no user
    let unknown = &by_id[unauthenticated.header("audit-id")];
    assert_eq!(stages(unknown), ["RequestReceived", "ResponseComplete"]);
    assert_eq!(unknown[1]["user"], json!({}));
    assert_eq!(unknown[1]["level"], "Request");
    assert_eq!(unknown[1]["responseStatus"]["code"], 401);
    assert_eq!(unknown[1]["responseStatus"]["reason"], "Unauthorized");

    // level None: quiet users and groups, health checks; the header is there all the same
    for resp in [&quiet, &hushed, &health] {
        let id = resp.header("audit-id");
        assert!(!id.is_empty());
        assert!(!by_id.contains_key(id), "{id} was logged");
    }
    assert!(!text.contains("\"username\":\"quiet\"") && !text.contains("\"username\":\"carol\""));

    // a non-resource URL: the HTTP method as verb, no objectRef
    let v = completed(&by_id, version.header("audit-id"));
    assert_eq!(
        (v["verb"].as_str(), v["requestURI"].as_str(), v["level"].as_str()),
        (Some("get"), Some("/version"), Some("Request"))
    );
    assert!(v.get("objectRef").is_none());

    // impersonation: the caller is the user, bob the impersonated one
    let imp = completed(&by_id, as_bob.header("audit-id"));
    assert_eq!(imp["user"]["username"], "admin");
    assert_eq!(imp["impersonatedUser"]["username"], "bob");

    // a watch has ResponseStarted too
    let w = &by_id[watch.header("audit-id")];
    assert_eq!(stages(w), ["RequestReceived", "ResponseStarted", "ResponseComplete"]);
    assert_eq!(w[0]["verb"], "watch");
    assert_eq!(w[0]["requestURI"], "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1");
    // every event's ID is the header's
    assert_eq!(completed(&by_id, last.header("audit-id"))["verb"], "list");
}

#[test]
fn a_bad_policy_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n", "Loud"),
        ("apiVersion: v1\nkind: ConfigMap\n", "audit.k8s.io/v1 Policy"),
        (
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: ''}]\n  nonResourceURLs: [/x]\n",
            "rules[0]",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).unwrap();
        let stderr = start_up_error(&[
            format!("--audit-policy-file={}", path.display()),
            format!("--audit-log-path={}", dir.path().join("audit.log").display()),
        ]);
        assert!(stderr.contains(expected) && stderr.contains("audit-policy-file"), "{expected}: {stderr}");
    }
}

#[tokio::test]
async fn audit_log_to_standard_output_with_omitted_stages() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    let text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nomitManagedFields: true\nrules:\n- level: RequestResponse\n  resources: [{group: '', resources: [configmaps]}]\n";
    std::fs::write(&policy, text).unwrap();
    let c = Cluster::start_with(&[&format!("--audit-policy-file={}", policy.display()), "--audit-log-path=-"]).await;
    c.create("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "out"}, "data": {"a": "b"}})).await;
    let resp = c.call(Method::GET, "/api/v1/namespaces/default/configmaps/out", Body::None, &[]).await;
    let id = resp.header("audit-id").to_string();
    // the server's standard output is its log file in the harness
    let deadline = Instant::now() + Duration::from_secs(30);
    let events: Vec<Value> = loop {
        let log = std::fs::read_to_string(c.dir.path().join("server.log")).unwrap_or_default();
        let events: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["auditID"] == id.as_str())
            .collect();
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stages(&events), ["ResponseComplete"]);
    let object = &events[0]["responseObject"];
    assert_eq!((object["data"]["a"].as_str(), object["metadata"].get("managedFields")), (Some("b"), None));
    assert!(resp.json["metadata"]["managedFields"].is_array(), "the response itself keeps them");
}
