//! Writing kubeconfig files, and merging a context into an existing one.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_yaml::{Mapping, Value};

/// How a kubeconfig's user authenticates.
pub enum Credentials<'a> {
    /// The placeholder token of a development server started without authentication
    /// flags (it takes every request as its admin); the server's certificate is not
    /// verified (insecure-skip-tls-verify).
    DevToken,
    /// A client certificate and key (PEM), and the CA (PEM) that verifies the server.
    ClientCert { ca: &'a str, cert: &'a str, key: &'a str },
}

/// The cluster, user and context entries named `name`.
fn entries(server: &str, name: &str, creds: &Credentials) -> (Value, Value, Value) {
    let b64 = |pem: &str| Value::from(STANDARD.encode(pem));
    let mut cluster = Mapping::new();
    cluster.insert("server".into(), server.into());
    let mut user = Mapping::new();
    match creds {
        Credentials::DevToken => {
            cluster.insert("insecure-skip-tls-verify".into(), true.into());
            user.insert("token".into(), "ferrokube-dev-admin".into());
        }
        Credentials::ClientCert { ca, cert, key } => {
            cluster.insert("certificate-authority-data".into(), b64(ca));
            user.insert("client-certificate-data".into(), b64(cert));
            user.insert("client-key-data".into(), b64(key));
        }
    }
    let mut context = Mapping::new();
    context.insert("cluster".into(), name.into());
    context.insert("user".into(), name.into());
    let named = |key: &str, body: Mapping| {
        let mut m = Mapping::new();
        m.insert("name".into(), name.into());
        m.insert(key.into(), Value::Mapping(body));
        Value::Mapping(m)
    };
    (named("cluster", cluster), named("user", user), named("context", context))
}

fn empty_config() -> Value {
    serde_yaml::from_str("apiVersion: v1\nkind: Config\npreferences: {}\nclusters: []\nusers: []\ncontexts: []\n")
        .unwrap_or(Value::Null)
}

/// The text of a kubeconfig holding only the context `name`.
pub fn render(server: &str, name: &str, creds: &Credentials) -> anyhow::Result<String> {
    let mut doc = empty_config();
    put(&mut doc, server, name, creds)?;
    Ok(serde_yaml::to_string(&doc)?)
}

/// Write (or merge into) the kubeconfig at `path`, making `name` the current context.
/// The file is only readable by its owner, since it may hold a private key.
pub fn write(path: &Path, server: &str, name: &str, creds: &Credentials) -> anyhow::Result<()> {
    let mut doc: Value = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        _ => empty_config(),
    };
    put(&mut doc, server, name, creds)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::auth::tls::write_private(path, &serde_yaml::to_string(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn put(doc: &mut Value, server: &str, name: &str, creds: &Credentials) -> anyhow::Result<()> {
    let (cluster, user, context) = entries(server, name, creds);
    let map = doc.as_mapping_mut().context("kubeconfig is not a mapping")?;
    for (key, entry) in [("clusters", cluster), ("users", user), ("contexts", context)] {
        upsert_named(map, key, entry, name);
    }
    map.insert("current-context".into(), name.into());
    Ok(())
}

fn upsert_named(map: &mut Mapping, key: &str, entry: Value, name: &str) {
    let list = map.entry(key.into()).or_insert_with(|| Value::Sequence(Vec::new()));
    if !list.is_sequence() {
        *list = Value::Sequence(Vec::new());
    }
    if let Some(seq) = list.as_sequence_mut() {
        seq.retain(|e| e.get("name").and_then(Value::as_str) != Some(name));
        seq.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_embeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: x}\n")
            .unwrap();
        let creds = Credentials::ClientCert { ca: "CA", cert: "CERT", key: "KEY" };
        write(&path, "https://127.0.0.1:6443", "ferrokube", &creds).unwrap();
        write(&path, "https://127.0.0.1:6443", "ferrokube", &creds).unwrap();
        let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let clusters = doc["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 2, "the other cluster stays, ours once");
        assert_eq!(clusters[1]["cluster"]["certificate-authority-data"], STANDARD.encode("CA"));
        assert!(clusters[1]["cluster"].get("insecure-skip-tls-verify").is_none());
        assert_eq!(doc["users"][0]["user"]["client-key-data"], STANDARD.encode("KEY"));
        assert_eq!(doc["current-context"], "ferrokube");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
