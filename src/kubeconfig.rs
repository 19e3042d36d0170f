//! Writing kubeconfig files for dev clusters, and merging a context into an existing one.

use std::path::Path;

use anyhow::Context;
use serde_yaml::{Mapping, Value};

/// A kubeconfig with one cluster/user/context named `name`, trusting the server's
/// self-signed certificate (insecure-skip-tls-verify) until the security work lands.
/// The user carries a bearer token so kubectl does not prompt for a password; a server
/// started without authentication flags takes every request as its admin.
fn entries(server: &str, name: &str) -> (Value, Value, Value) {
    let cluster = serde_yaml::from_str(&format!(
        "name: {name}\ncluster:\n  server: {server}\n  insecure-skip-tls-verify: true\n"
    ))
    .unwrap_or(Value::Null);
    let user =
        serde_yaml::from_str(&format!("name: {name}\nuser:\n  token: ferrokube-dev-admin\n")).unwrap_or(Value::Null);
    let context = serde_yaml::from_str(&format!("name: {name}\ncontext:\n  cluster: {name}\n  user: {name}\n"))
        .unwrap_or(Value::Null);
    (cluster, user, context)
}

/// Write (or merge into) the kubeconfig at `path`, making `name` the current context.
pub fn write(path: &Path, server: &str, name: &str) -> anyhow::Result<()> {
    let mut doc: Value = match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        _ => serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\npreferences: {}\nclusters: []\nusers: []\ncontexts: []\n",
        )?,
    };
    let (cluster, user, context) = entries(server, name);
    let map = doc.as_mapping_mut().context("kubeconfig is not a mapping")?;
    for (key, entry) in [("clusters", cluster), ("users", user), ("contexts", context)] {
        upsert_named(map, key, entry, name);
    }
    map.insert("current-context".into(), name.into());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_yaml::to_string(&doc)?).with_context(|| format!("writing {}", path.display()))?;
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
