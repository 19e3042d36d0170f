//! Upstream's `EncryptionConfiguration` (apiserver.config.k8s.io/v1), YAML or JSON:
//! which resources are encrypted, and by which providers in order. Errors name the
//! field as upstream's validation does (`resources[0].providers[1].aescbc.keys[0].secret`).

use base64::Engine;
use serde::Deserialize;

use super::ciphers::Cipher;

const API_VERSION: &str = "apiserver.config.k8s.io/v1";
const KIND: &str = "EncryptionConfiguration";
const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    aescbc: Option<KeysConfig>,
    aesgcm: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
    identity: Option<serde_yaml::Value>,
    kms: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

/// One way of storing values: its prefix (empty for identity) and cipher.
#[derive(Clone)]
pub struct Provider {
    pub prefix: Vec<u8>,
    pub cipher: Cipher,
}

/// One `resources` entry: the resource names it covers and its providers in order.
pub struct Rule {
    pub resources: Vec<String>,
    pub providers: Vec<Provider>,
}

/// Parse and validate a configuration file's text.
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let file: File = serde_yaml::from_str(text).map_err(|e| format!("cannot decode: {e}"))?;
    if file.api_version != API_VERSION || file.kind != KIND {
        return Err(format!(
            "apiVersion/kind must be {API_VERSION} {KIND}, not {:?} {:?}",
            file.api_version, file.kind
        ));
    }
    if file.resources.is_empty() {
        return Err("resources: Required value: at least one resources is required".into());
    }
    file.resources.iter().enumerate().map(|(i, r)| rule(&format!("resources[{i}]"), r)).collect()
}

fn rule(path: &str, r: &ResourceConfig) -> Result<Rule, String> {
    if r.resources.is_empty() {
        return Err(format!("{path}.resources: Required value: at least one resource is required"));
    }
    if r.providers.is_empty() {
        return Err(format!("{path}.providers: Required value: at least one provider is required"));
    }
    let mut providers = Vec::new();
    for (i, p) in r.providers.iter().enumerate() {
        providers.extend(provider(&format!("{path}.providers[{i}]"), p)?);
    }
    Ok(Rule { resources: r.resources.clone(), providers })
}

/// The providers one entry stands for: one per key, in the order given.
fn provider(path: &str, p: &ProviderConfig) -> Result<Vec<Provider>, String> {
    let set = [p.aescbc.is_some(), p.aesgcm.is_some(), p.secretbox.is_some(), p.identity.is_some(), p.kms.is_some()];
    match set.iter().filter(|s| **s).count() {
        0 => {
            return Err(format!(
                "{path}: Invalid value: \"{{}}\": provider does not contain any of the expected providers: KMS, secretbox, aesgcm, aescbc or identity"
            ));
        }
        1 => {}
        _ => {
            return Err(format!(
                "{path}: Invalid value: \"\": more than one provider specified in a single element, should split into different list elements"
            ));
        }
    }
    if p.kms.is_some() {
        return Err(format!(
            "{path}.kms: Unsupported value: the kms provider is not supported by this server (use aescbc, aesgcm, secretbox or identity)"
        ));
    }
    if p.identity.is_some() {
        return Ok(vec![Provider { prefix: Vec::new(), cipher: Cipher::Identity }]);
    }
    let (name, keys, sizes, make): (_, _, _, fn(Vec<u8>) -> Cipher) = match (&p.aescbc, &p.aesgcm, &p.secretbox) {
        (Some(k), _, _) => ("aescbc", k, AES_KEY_SIZES, Cipher::AesCbc),
        (_, Some(k), _) => ("aesgcm", k, AES_KEY_SIZES, Cipher::AesGcm),
        (_, _, Some(k)) => ("secretbox", k, SECRETBOX_KEY_SIZES, Cipher::Secretbox),
        _ => unreachable!("one provider is set"),
    };
    let path = format!("{path}.{name}");
    if keys.keys.is_empty() {
        return Err(format!("{path}.keys: Required value: at least one key is required"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, k) in keys.keys.iter().enumerate() {
        let path = format!("{path}.keys[{i}]");
        let secret = key_secret(&path, k, sizes)?;
        if !seen.insert(k.name.as_str()) {
            return Err(format!("{path}.name: Duplicate value: \"{}\"", k.name));
        }
        let prefix = format!("k8s:enc:{name}:v1:{}:", k.name).into_bytes();
        out.push(Provider { prefix, cipher: make(secret) });
    }
    Ok(out)
}

/// A key's secret, decoded and checked (the secret itself is never echoed).
fn key_secret(path: &str, k: &KeyConfig, sizes: &[usize]) -> Result<Vec<u8>, String> {
    if k.name.is_empty() {
        return Err(format!("{path}.name: Required value: key name is required"));
    }
    if k.name.contains(':') {
        return Err(format!("{path}.name: Invalid value: {:?}: key name must not contain \":\"", k.name));
    }
    if k.secret.is_empty() {
        return Err(format!("{path}.secret: Required value: secret is required"));
    }
    let secret = base64::engine::general_purpose::STANDARD
        .decode(k.secret.trim())
        .map_err(|_| format!("{path}.secret: Invalid value: \"REDACTED\": secrets must be base64 encoded"))?;
    if !sizes.contains(&secret.len()) {
        return Err(format!(
            "{path}.secret: Invalid value: \"REDACTED\": secret is not of the expected length, got {}, expected one of [{}]",
            secret.len(),
            sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(" ")
        ));
    }
    Ok(secret)
}
