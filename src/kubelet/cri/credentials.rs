//! Registry credentials from a pod's `imagePullSecrets` (the ServiceAccount's are copied
//! into the pod by admission, as upstream): Secrets of type
//! `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`: `{"auths": {KEY: entry}}`) and
//! `kubernetes.io/dockercfg` (`.dockercfg`: `{KEY: entry}`), an entry holding
//! username/password or `auth` (base64 `user:password`), or an identity/registry token.
//! An image gets every entry whose KEY matches it as upstream's keyring matches: KEY
//! without scheme is `host[:port][/path]`, the host may have `*` globs per dot-separated
//! part, the port must be the image's, the path a prefix of the image's repository;
//! Docker Hub's aliases (`docker.io`, `index.docker.io`, `registry-1.docker.io`, the
//! classic `https://index.docker.io/v1/`) are one registry. The most specific KEY (in
//! reverse lexical order, as upstream sorts) comes first; the kubelet tries each in turn.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_cri::v1::AuthConfig;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

const DOCKER_HUB: &str = "docker.io";

/// Credentials by registry KEY, most specific first.
#[derive(Default, Debug)]
pub struct Keyring {
    entries: Vec<(String, AuthConfig)>,
}

impl Keyring {
    pub fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Keyring {
        let mut entries = Vec::new();
        for secret in secrets {
            let data =
                |key: &str| secret.data.as_ref()?.get(key).and_then(|b| serde_json::from_slice::<Value>(&b.0).ok());
            let map = match secret.type_.as_deref() {
                Some("kubernetes.io/dockerconfigjson") => data(".dockerconfigjson").map(|v| v["auths"].clone()),
                Some("kubernetes.io/dockercfg") => data(".dockercfg"),
                _ => None,
            };
            let Some(Value::Object(map)) = map else { continue };
            entries.extend(map.iter().filter_map(|(key, entry)| Some((normalize_key(key), auth_of(key, entry)?))));
        }
        // reverse lexical order puts `host/longer/path` before `host/path` before `host`
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        Keyring { entries }
    }

    /// The credentials to try for `image`, best first (none: pull anonymously).
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let (host, repo) = split_image(image);
        self.entries.iter().filter(|(key, _)| key_matches(key, &host, &repo)).map(|(_, a)| a.clone()).collect()
    }
}

/// One config entry as CRI wants it; `auth` is split into username and password.
fn auth_of(key: &str, entry: &Value) -> Option<AuthConfig> {
    let field = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
    let (mut username, mut password) = (field("username"), field("password"));
    let auth = field("auth");
    if username.is_empty() && !auth.is_empty() {
        let decoded = String::from_utf8(STANDARD.decode(auth.trim()).ok()?).ok()?;
        let (u, p) = decoded.split_once(':')?;
        (username, password) = (u.to_string(), p.to_string());
    }
    let auth = AuthConfig {
        username,
        password,
        auth: String::new(),
        server_address: key.to_string(),
        identity_token: field("identitytoken"),
        registry_token: field("registrytoken"),
    };
    let empty = auth.username.is_empty() && auth.identity_token.is_empty() && auth.registry_token.is_empty();
    (!empty).then_some(auth)
}

fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// A KEY without scheme or trailing slash, Docker Hub's forms as `docker.io` (the
/// classic `index.docker.io/v1/` key names the whole registry, not a `v1` path).
fn normalize_key(key: &str) -> String {
    let bare = key.trim().trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
    match (is_docker_hub(host), path) {
        (true, "v1" | "v2" | "") => DOCKER_HUB.into(),
        (true, path) => format!("{DOCKER_HUB}/{path}"),
        (false, _) => bare.to_string(),
    }
}

/// An image's registry (`host[:port]`, Docker Hub when the first part is no host) and
/// its repository path without tag or digest (`library/` added for official images).
fn split_image(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_host = first.contains('.') || first.contains(':') || first == "localhost";
    let (host, repo) = match (has_host, first) {
        (true, host) => (host.to_string(), rest.to_string()),
        (false, "") => (DOCKER_HUB.to_string(), format!("library/{rest}")),
        (false, first) => (DOCKER_HUB.to_string(), format!("{first}/{rest}")),
    };
    // the tag: a colon after the last slash
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r.to_string(),
        _ => repo,
    };
    let host = if is_docker_hub(&host) { DOCKER_HUB.to_string() } else { host };
    (host, repo)
}

/// Whether a normalized KEY covers the image at `host` (with port) and `repo`.
fn key_matches(key: &str, host: &str, repo: &str) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (key_name, key_port) = key_host.split_once(':').unwrap_or((key_host, ""));
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    if key_port != port {
        return false;
    }
    let (key_parts, parts): (Vec<&str>, Vec<&str>) = (key_name.split('.').collect(), name.split('.').collect());
    if key_parts.len() != parts.len() || !key_parts.iter().zip(&parts).all(|(k, p)| glob(k, p)) {
        return false;
    }
    key_path.is_empty() || repo == key_path || repo.starts_with(&format!("{key_path}/"))
}

/// `*` matches any run of characters (within one host part); the rest literally.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else { return false };
            (0..=rest.len()).filter(|i| rest.is_char_boundary(*i)).any(|i| glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn secret(type_: &str, key: &str, value: Value) -> Secret {
        let mut s = Secret { type_: Some(type_.into()), ..Default::default() };
        s.data = Some([(key.to_string(), ByteString(serde_json::to_vec(&value).unwrap()))].into());
        s
    }

    fn users(ring: &Keyring, image: &str) -> Vec<String> {
        ring.lookup(image).into_iter().map(|a| a.username).collect()
    }

    #[test]
    fn images_split_into_registry_and_repository() {
        assert_eq!(split_image("busybox"), ("docker.io".into(), "library/busybox".into()));
        assert_eq!(split_image("me/app:1.0"), ("docker.io".into(), "me/app".into()));
        assert_eq!(split_image("127.0.0.1:5000/team/app:v2"), ("127.0.0.1:5000".into(), "team/app".into()));
        assert_eq!(split_image("localhost/app@sha256:ab"), ("localhost".into(), "app".into()));
        assert_eq!(split_image("index.docker.io/library/nginx"), ("docker.io".into(), "library/nginx".into()));
    }

    #[test]
    fn keys_match_by_host_glob_port_and_path_prefix() {
        let auth = |user: &str| json!({"auth": STANDARD.encode(format!("{user}:pw"))});
        let ring = Keyring::from_secrets(&[
            secret(
                "kubernetes.io/dockerconfigjson",
                ".dockerconfigjson",
                json!({"auths": {
                    "https://index.docker.io/v1/": auth("hub"),
                    "127.0.0.1:5000": {"username": "local", "password": "pw"},
                    "127.0.0.1:5000/team": auth("team"),
                    "*.example.com": auth("glob"),
                }}),
            ),
            secret("kubernetes.io/dockercfg", ".dockercfg", json!({"registry.example.com": auth("cfg")})),
            secret("Opaque", ".dockerconfigjson", json!({"auths": {"127.0.0.1:5000": auth("ignored")}})),
        ]);
        assert_eq!(users(&ring, "busybox"), ["hub"]);
        assert_eq!(users(&ring, "docker.io/me/app:1"), ["hub"]);
        assert_eq!(users(&ring, "127.0.0.1:5000/team/app:v2"), ["team", "local"]);
        assert_eq!(users(&ring, "127.0.0.1:5000/teammate/app"), ["local"]);
        assert_eq!(users(&ring, "127.0.0.1:5001/team/app"), Vec::<String>::new(), "another port");
        assert_eq!(users(&ring, "127.0.0.1/team/app"), Vec::<String>::new(), "no port");
        assert_eq!(users(&ring, "registry.example.com/x"), ["cfg", "glob"]);
        assert_eq!(users(&ring, "a.b.example.com/x"), Vec::<String>::new(), "a glob is one host part");
        let first = &ring.lookup("127.0.0.1:5000/team/app")[0];
        assert_eq!((first.password.as_str(), first.server_address.as_str()), ("pw", "127.0.0.1:5000/team"));
    }

    #[test]
    fn unusable_entries_are_skipped() {
        let ring = Keyring::from_secrets(&[secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            json!({"auths": {"a.io": {"auth": "not base64!"}, "b.io": {}, "c.io": {"identitytoken": "tok"}}}),
        )]);
        assert!(ring.lookup("a.io/x").is_empty() && ring.lookup("b.io/x").is_empty());
        assert_eq!(ring.lookup("c.io/x")[0].identity_token, "tok");
        assert!(Keyring::from_secrets(&[]).lookup("busybox").is_empty());
    }
}
