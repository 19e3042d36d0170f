//! Serving certificates chosen by SNI and re-read when their files change, so a rotated
//! certificate is served without a restart (upstream watches the files the same way).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{CertPaths, SniCert, read_certs};

/// How often the files' modification times and sizes are compared with the loaded ones.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies one version of a file on disk: its modification time and length.
pub(super) type FileStamp = Option<(SystemTime, u64)>;

pub(super) fn file_stamp(path: &std::path::Path) -> FileStamp {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// One version of a cert/key pair: both files' stamps.
type Stamp = Option<[(SystemTime, u64); 2]>;

fn stamp(paths: &CertPaths) -> Stamp {
    Some([file_stamp(&paths.cert)?, file_stamp(&paths.key)?])
}

fn certified_key(paths: &CertPaths) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).with_context(|| format!("reading {}", paths.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).with_context(|| format!("loading {}", paths.cert.display()))
}

/// One cert/key pair and the version of its files that is being served.
#[derive(Debug)]
struct Pair {
    paths: CertPaths,
    stamp: Mutex<Stamp>,
    key: RwLock<Arc<CertifiedKey>>,
}

impl Pair {
    fn load(paths: &CertPaths) -> anyhow::Result<Pair> {
        let stamp = stamp(paths);
        let key = certified_key(paths)?;
        Ok(Pair { paths: paths.clone(), stamp: Mutex::new(stamp), key: RwLock::new(Arc::new(key)) })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-read the files if they changed. A pair caught half-written (a new cert with the
    /// old key) fails to load and is retried on the next tick; the old one keeps serving.
    fn reload_if_changed(&self) {
        let now = stamp(&self.paths);
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || now == *last {
            return;
        }
        match certified_key(&self.paths) {
            Ok(key) => {
                *self.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                *last = now;
                tracing::info!(cert = %self.paths.cert.display(), "reloaded a serving certificate");
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "serving certificate changed but cannot be loaded yet"),
        }
    }
}

/// The default serving certificate plus the `--tls-sni-cert-key` ones, by server name.
#[derive(Debug)]
pub struct CertResolver {
    default: Pair,
    sni: Vec<Pair>,
    /// lower-case name (or `*.suffix`) → index into `sni`
    names: HashMap<String, usize>,
}

impl CertResolver {
    pub fn new(serving: &CertPaths, sni: &[SniCert]) -> anyhow::Result<CertResolver> {
        let default = Pair::load(serving)?;
        let pairs: Vec<Pair> = sni.iter().map(|s| Pair::load(&s.paths)).collect::<anyhow::Result<_>>()?;
        let mut names = HashMap::new();
        // names given on the flag win over names read from certificates; earlier flags win
        for (i, pair) in pairs.iter().enumerate() {
            for name in names_in(&pair.current()) {
                names.entry(name).or_insert(i);
            }
        }
        for (i, entry) in sni.iter().enumerate().rev() {
            names.extend(entry.names.iter().map(|n| (n.clone(), i)));
        }
        Ok(CertResolver { default, sni: pairs, names })
    }

    pub(super) fn reload_changed(&self) {
        self.default.reload_if_changed();
        self.sni.iter().for_each(Pair::reload_if_changed);
    }

    /// An exact name first, then a wildcard covering its first label.
    fn lookup(&self, server_name: &str) -> Option<&Pair> {
        let name = server_name.to_ascii_lowercase();
        let wildcard = || name.split_once('.').and_then(|(_, rest)| self.names.get(&format!("*.{rest}")));
        self.names.get(&name).or_else(wildcard).map(|&i| &self.sni[i])
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pair = hello.server_name().and_then(|n| self.lookup(n)).unwrap_or(&self.default);
        Some(pair.current())
    }
}

/// The DNS names a certificate serves: its subject alternative names and common name.
fn names_in(key: &CertifiedKey) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Some(Ok((_, cert))) = key.cert.first().map(|c| x509_parser::parse_x509_certificate(c)) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|a| a.as_str().ok()).map(str::to_string).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for general in &san.value.general_names {
            if let GeneralName::DNSName(dns) = general {
                names.push(dns.to_string());
            }
        }
    }
    names.iter().map(|n| n.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &std::path::Path, name: &str, sans: &[&str]) -> CertPaths {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let paths = CertPaths { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&paths.cert, params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    /// Exact names before wildcards; names on the flag before names in certificates.
    #[test]
    fn sni_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let default = pair(dir.path(), "default", &["localhost"]);
        let wild = SniCert { paths: pair(dir.path(), "wild", &["*.example"]), names: vec![] };
        let exact = SniCert { paths: pair(dir.path(), "exact", &["a.example"]), names: vec![] };
        let claimed = SniCert { paths: pair(dir.path(), "claimed", &["c.example"]), names: vec!["a.example".into()] };
        let resolver = CertResolver::new(&default, &[wild, exact, claimed]).unwrap();
        let chosen = |name: &str| resolver.lookup(name).map(|p| p.paths.cert.file_stem().unwrap().to_owned());
        assert_eq!(chosen("b.example").as_deref(), Some("wild".as_ref()));
        assert_eq!(chosen("A.Example").as_deref(), Some("claimed".as_ref()), "the flag's name wins");
        assert_eq!(chosen("c.example").as_deref(), Some("claimed".as_ref()));
        assert_eq!(chosen("x.y.example"), None, "a wildcard covers one label");
        assert_eq!(chosen("localhost"), None, "the default certificate serves the rest");
    }
}
