//! Encryption at rest (`--encryption-provider-config`) against the real server and etcd:
//! the bytes in etcd carry upstream's provider prefixes and never the secret, every read
//! path (get, list from etcd and from the watch cache, watch) sees plaintext, values
//! written before or by an older provider still read, and `kubectl replace` rotates them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const K: &str = "1.33";
const KEY1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes
const KEY2: &str = "c2VjcmV0IGlzIHNlY3VyZQ=="; // 16 bytes
const KEY3: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="; // 32 bytes
const SECRET_KEY: &str = "/registry/secrets/default/s";
const HUNTER2_B64: &str = "aHVudGVyMg==";

fn write_config(c: &Cluster, name: &str, rules: &str) -> PathBuf {
    let path = c.dir.path().join(name);
    let text = format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{rules}");
    std::fs::write(&path, text).unwrap();
    path
}

/// One `resources` entry: `providers` are `(provider, key name, secret)`, "identity" with
/// no key.
fn rule(resources: &str, providers: &[(&str, &str, &str)]) -> String {
    let mut out = format!("- resources: [{resources}]\n  providers:\n");
    for (provider, name, secret) in providers {
        out += &match *provider {
            "identity" => "  - identity: {}\n".to_string(),
            _ => format!("  - {provider}:\n      keys: [{{name: {name}, secret: {secret}}}]\n"),
        };
    }
    out
}

async fn restart_with(c: &mut Cluster, config: &Path) {
    c.stop_server();
    c.set_server_flags(&[&format!("--encryption-provider-config={}", config.display())]);
    c.start_server().await;
}

async fn raw(c: &Cluster, key: &str) -> Vec<u8> {
    c.etcd_get(key).await.unwrap_or_else(|| panic!("{key} in etcd")).0
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn password(c: &Cluster, name: &str) -> String {
    c.kubectl_ok(K, &["get", "secret", name, "-o", "jsonpath={.data.password}"])
}

async fn open_watch(c: &Cluster, path: &str) -> common::watch_lines::WatchLines {
    let resp = c.http.get(c.url(path)).timeout(Duration::from_secs(120)).send().await.expect("watch request");
    assert_eq!(resp.status(), StatusCode::OK, "watch {path}");
    common::watch_lines::WatchLines::new(resp)
}

async fn next_event(w: &mut common::watch_lines::WatchLines) -> Value {
    w.next_within(Duration::from_secs(30)).await.expect("a watch event")
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_read_everywhere_and_rotated_by_replace() {
    let mut c = Cluster::start().await;
    // written before encryption: plain JSON in etcd
    c.kubectl_ok(K, &["create", "secret", "generic", "before", "--from-literal=password=old-value"]);
    assert!(raw(&c, "/registry/secrets/default/before").await.starts_with(b"{"));

    let aescbc_first = rule("secrets", &[("aescbc", "key1", KEY1), ("identity", "", "")]);
    let aescbc_first = write_config(&c, "enc1.yaml", &aescbc_first);
    restart_with(&mut c, &aescbc_first).await;
    let mut watch = open_watch(&c, "/api/v1/namespaces/default/secrets?watch=1&resourceVersion=0").await;
    c.kubectl_ok(K, &["create", "secret", "generic", "s", "--from-literal=password=hunter2"]);
    let stored = raw(&c, SECRET_KEY).await;
    assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"), "{}", String::from_utf8_lossy(&stored));
    assert!(!contains(&stored, "hunter2") && !contains(&stored, HUNTER2_B64) && !contains(&stored, "aHVudGVy"));
    // what an operator sees with etcdctl
    let out = std::process::Command::new("etcdctl")
        .args([&format!("--endpoints={}", c.etcd_url), "get", SECRET_KEY, "--print-value-only"])
        .output()
        .expect("running etcdctl");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && shown.starts_with("k8s:enc:aescbc:v1:key1:"), "etcdctl: {shown}");
    assert!(!shown.contains("hunter2") && !shown.contains(HUNTER2_B64), "etcdctl shows plaintext: {shown}");

    // get, lists (etcd, watch cache) and the watch all see plaintext
    assert_eq!(password(&c, "s"), HUNTER2_B64);
    assert_eq!(password(&c, "before"), "b2xkLXZhbHVl");
    for path in ["/api/v1/namespaces/default/secrets?limit=50", "/api/v1/secrets?resourceVersion=0", "/api/v1/secrets"]
    {
        let list = c.must_get(path).await;
        let s = list["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "s").cloned();
        assert_eq!(s.unwrap_or_default()["data"]["password"], HUNTER2_B64, "{path}");
    }
    let listed = c.kubectl_ok(K, &["get", "secrets", "-o", "json"]);
    assert!(listed.contains(HUNTER2_B64), "{listed}");
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Value| e["object"]["metadata"]["name"] == "s") {
        seen.push(next_event(&mut watch).await);
    }
    assert_eq!(seen.last().unwrap()["object"]["data"]["password"], HUNTER2_B64);

    // a configmap is not in the configuration: plaintext
    c.kubectl_ok(K, &["create", "configmap", "cm", "--from-literal=k=plain-value"]);
    let cm = raw(&c, "/registry/configmaps/default/cm").await;
    assert!(cm.starts_with(b"{") && contains(&cm, "plain-value"));

    // replacing an unchanged secret read through identity (not the first provider) rewrites it
    let before_rv =
        c.must_get("/api/v1/namespaces/default/secrets/before").await["metadata"]["resourceVersion"].clone();
    let json = c.kubectl_ok(K, &["get", "secret", "before", "-o", "json"]);
    c.kubectl_stdin_ok(K, &["replace", "-f", "-"], &json);
    assert!(raw(&c, "/registry/secrets/default/before").await.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    let after = c.must_get("/api/v1/namespaces/default/secrets/before").await;
    assert_ne!(after["metadata"]["resourceVersion"], before_rv);
    // ... while an unchanged replace of a value already under the first provider is a no-op
    let rev = c.etcd_get(SECRET_KEY).await.unwrap().1;
    let json = c.kubectl_ok(K, &["get", "secret", "s", "-o", "json"]);
    c.kubectl_stdin_ok(K, &["replace", "-f", "-"], &json);
    assert_eq!(c.etcd_get(SECRET_KEY).await.unwrap().1, rev);

    // rotation: key2 (aesgcm) first, key1 still readable
    let aesgcm_first = rule("secrets", &[("aesgcm", "key2", KEY2), ("aescbc", "key1", KEY1)]);
    let aesgcm_first = write_config(&c, "enc2.yaml", &aesgcm_first);
    restart_with(&mut c, &aesgcm_first).await;
    assert_eq!(password(&c, "s"), HUNTER2_B64);
    assert!(raw(&c, SECRET_KEY).await.starts_with(b"k8s:enc:aescbc:v1:key1:"));
    let all = c.kubectl_ok(K, &["get", "secrets", "-A", "-o", "json"]);
    c.kubectl_stdin_ok(K, &["replace", "-f", "-"], &all);
    for key in [SECRET_KEY, "/registry/secrets/default/before"] {
        let stored = raw(&c, key).await;
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key2:"), "{key}: {}", String::from_utf8_lossy(&stored));
    }
    assert_eq!(password(&c, "s"), HUNTER2_B64);

    // a value no configured provider reads is a 500 for that object, not a crash
    let other_key = write_config(&c, "enc3.yaml", &rule("secrets", &[("secretbox", "key3", KEY3)]));
    restart_with(&mut c, &other_key).await;
    let (status, body) = c.get("/api/v1/namespaces/default/secrets/s").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["reason"], "InternalError");
    assert_eq!(body["message"], "Internal error occurred: no matching prefix found");
    // the watch cache left it out; everything else still serves
    let cached = c.must_get("/api/v1/namespaces/default/secrets?resourceVersion=0").await;
    assert_eq!(cached["items"], json!([]));
    assert_eq!(c.must_get("/api/v1/namespaces/default/configmaps/cm").await["data"]["k"], "plain-value");
}

#[tokio::test]
async fn every_provider_round_trips_and_wildcards_cover_all_resources() {
    let mut c = Cluster::start().await;
    let rules = [
        // identity last: the root CA bundles were written before encryption was configured
        rule("configmaps", &[("secretbox", "sb", KEY3), ("identity", "", "")]),
        rule("'*.apps'", &[("aescbc", "cbc", KEY2)]),
        rule("'*.*'", &[("aesgcm", "gcm", KEY1), ("identity", "", "")]),
    ];
    let config = write_config(&c, "enc.yaml", &rules.concat());
    restart_with(&mut c, &config).await;
    c.kubectl_ok(K, &["create", "namespace", "enc"]);
    c.kubectl_ok(K, &["-n", "enc", "create", "configmap", "cm", "--from-literal=k=v1"]);
    c.kubectl_ok(K, &["-n", "enc", "create", "deployment", "web", "--image=nginx"]);
    c.kubectl_ok(K, &["-n", "enc", "create", "serviceaccount", "robot"]);
    for (key, prefix) in [
        ("/registry/configmaps/enc/cm", "k8s:enc:secretbox:v1:sb:"),
        ("/registry/deployments/enc/web", "k8s:enc:aescbc:v1:cbc:"),
        ("/registry/serviceaccounts/enc/robot", "k8s:enc:aesgcm:v1:gcm:"),
        ("/registry/namespaces/enc", "k8s:enc:aesgcm:v1:gcm:"),
    ] {
        let stored = raw(&c, key).await;
        assert!(stored.starts_with(prefix.as_bytes()), "{key}: {}", String::from_utf8_lossy(&stored));
    }
    // updates, patches and reads go through the same providers
    c.kubectl_ok(K, &["-n", "enc", "label", "configmap", "cm", "team=blue"]);
    c.kubectl_ok(K, &["-n", "enc", "scale", "deployment", "web", "--replicas=3"]);
    let labels =
        c.kubectl_ok(K, &["-n", "enc", "get", "configmap", "cm", "-o", "jsonpath={.metadata.labels.team}/{.data.k}"]);
    assert_eq!(labels, "blue/v1");
    let replicas = c.kubectl_ok(K, &["-n", "enc", "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "3");
    assert!(raw(&c, "/registry/configmaps/enc/cm").await.starts_with(b"k8s:enc:secretbox:v1:sb:"));
    let names = c.kubectl_ok(K, &["get", "namespaces", "-o", "name"]);
    assert!(names.contains("namespace/enc") && names.contains("namespace/default"), "{names}");
    c.kubectl_ok(K, &["delete", "namespace", "enc", "--wait=false"]);
}

#[test]
fn a_bad_configuration_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "- resources: [secrets]\n  providers:\n  - aescbc:\n      keys: [{name: k, secret: c2hvcnQ=}]\n",
            "secret is not of the expected length, got 5",
        ),
        (
            "- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys: [{name: k, secret: '%%%'}]\n",
            "secrets must be base64 encoded",
        ),
        ("- resources: [secrets]\n  providers:\n  - rot13: {}\n", "rot13"),
        ("- resources: [secrets]\n  providers:\n  - kms: {name: vault}\n", "kms"),
    ];
    for (rules, expected) in cases {
        let path = dir.path().join("bad.yaml");
        let text =
            format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n{rules}");
        std::fs::write(&path, text).unwrap();
        let stderr = start_up_error(&[format!("--encryption-provider-config={}", path.display())]);
        assert!(stderr.contains(expected) && stderr.contains("encryption-provider-config"), "{expected}: {stderr}");
    }
}
