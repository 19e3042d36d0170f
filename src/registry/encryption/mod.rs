//! Encryption at rest (`--encryption-provider-config`): a transformer per etcd key
//! prefix, applied by `Store` to every value it writes and reads and by the watch cache
//! to the values its etcd watch delivers. The first provider of a resource encrypts; every
//! provider is tried on read by its `k8s:enc:<provider>:v1:<key>:` prefix (identity: no
//! prefix). A value read through any provider but the first is *stale*, so an update
//! rewrites it even when the object is unchanged (key rotation by re-writing).

mod ciphers;
mod config;

#[cfg(test)]
mod tests;

use std::path::Path;

use config::{Provider, Rule};

use super::keys::KeySpace;
use super::{ResourceDef, all_resources};

/// Upstream's message for a value no provider recognises.
const NO_MATCH: &str = "no matching prefix found";
const ENCRYPTED: &[u8] = b"k8s:enc:";

/// The providers of one resource, in order.
pub struct Transformer {
    providers: Vec<Provider>,
}

/// A decrypted value and whether it was stored by a provider other than the first.
pub struct Opened {
    pub value: Vec<u8>,
    pub stale: bool,
}

impl Transformer {
    /// The stored form of `plain` at etcd key `key` (the key authenticates AES-GCM values).
    pub fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
        let first = &self.providers[0];
        let body = first.cipher.seal(plain, key)?;
        Ok([first.prefix.as_slice(), &body].concat())
    }

    /// The plain value of stored bytes, trying each provider whose prefix they carry.
    pub fn open(&self, key: &[u8], data: &[u8]) -> Result<Opened, String> {
        let mut errors = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            if !data.starts_with(&p.prefix) {
                continue;
            }
            // identity does not read encrypted data; a later provider may
            if p.prefix.is_empty() && data.starts_with(ENCRYPTED) {
                continue;
            }
            match p.cipher.open(&data[p.prefix.len()..], key) {
                Ok(value) => return Ok(Opened { value, stale: i != 0 }),
                Err(e) => errors.push(e),
            }
        }
        Err(if errors.is_empty() { self.no_key(data) } else { errors.join(", ") })
    }

    /// Upstream's message when no provider read a value: a provider's own when the value
    /// carries its prefix under a key name it does not have.
    fn no_key(&self, data: &[u8]) -> String {
        let family = |p: &&Provider| {
            let kind = format!("k8s:enc:{}:v1:", p.cipher.provider());
            !p.prefix.is_empty() && data.starts_with(kind.as_bytes())
        };
        match self.providers.iter().find(family).map(|p| p.cipher.transformer_name()) {
            Some(name) => format!("no matching key was found for the provided {name} transformer"),
            None => NO_MATCH.to_string(),
        }
    }

    fn describe(&self) -> String {
        let first = &self.providers[0];
        if first.prefix.is_empty() {
            first.cipher.provider().to_string()
        } else {
            String::from_utf8_lossy(&first.prefix).into_owned()
        }
    }
}

/// Which etcd key prefixes are transformed, and how.
pub struct Encryption {
    by_prefix: Vec<(String, Transformer)>,
}

impl Encryption {
    /// Read and validate a configuration file; every error names the file and the field.
    pub fn load(path: &Path, keys: &KeySpace) -> anyhow::Result<Encryption> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --encryption-provider-config {}: {e}", path.display()))?;
        let rules = config::parse(&text)
            .map_err(|e| anyhow::anyhow!("--encryption-provider-config {}: {e}", path.display()))?;
        Ok(Self::from_rules(&rules, keys))
    }

    fn from_rules(rules: &[Rule], keys: &KeySpace) -> Encryption {
        let mut by_prefix: Vec<(String, Transformer)> = Vec::new();
        for res in all_resources().iter().filter(|r| !r.review) {
            let prefix = keys.collection(res, "");
            if by_prefix.iter().any(|(p, _)| *p == prefix) {
                continue;
            }
            if let Some(rule) = rules.iter().find(|rule| rule.resources.iter().any(|n| covers(n, res))) {
                by_prefix.push((prefix, Transformer { providers: rule.providers.clone() }));
            }
        }
        for (prefix, t) in &by_prefix {
            tracing::info!(prefix, writes = t.describe(), "encryption at rest");
        }
        Encryption { by_prefix }
    }

    /// The transformer of the resource stored at `key`, if it is encrypted.
    pub fn transformer(&self, key: &[u8]) -> Option<&Transformer> {
        self.by_prefix.iter().find(|(p, _)| key.starts_with(p.as_bytes())).map(|(_, t)| t)
    }
}

/// Does a configured resource name (`secrets`, `deployments.apps`, `*.apps`, `*.` for the
/// core group, `*.*`) cover `res`?
fn covers(name: &str, res: &ResourceDef) -> bool {
    let (resource, group) = name.split_once('.').unwrap_or((name, ""));
    (resource == "*" || resource == res.plural) && (group == "*" || group == res.group)
}
