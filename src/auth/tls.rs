//! Serving certificates: loaded from files, or generated once into `--cert-dir` (a
//! self-signed CA and a serving certificate for localhost and 127.0.0.1), as upstream does;
//! the rustls configuration (TLS 1.2 and 1.3 with rustls' default suites, which are all
//! AEAD with forward secrecy), certificates chosen by SNI and reloaded when their files
//! change, and client certificates requested for x509 authentication.

mod reload;
mod verifier;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsAcceptor;

pub use reload::CertResolver;
pub use verifier::{ClientCa, ClientCaFile, PeerCertificates};

#[derive(Clone, Debug)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The serving cert/key: the given files, or `apiserver.crt/key` in `cert_dir`,
/// generated on first start and reused after.
pub fn ensure_serving_cert(cert_dir: &Path, extra_sans: &[String]) -> anyhow::Result<CertPaths> {
    let paths = CertPaths { cert: cert_dir.join("apiserver.crt"), key: cert_dir.join("apiserver.key") };
    if paths.cert.exists() && paths.key.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(cert_dir).with_context(|| format!("creating {}", cert_dir.display()))?;
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    sans.extend(extra_sans.iter().cloned());
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver");
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params.self_signed(&key)?;
    std::fs::write(&paths.cert, cert.pem())?;
    write_private(&paths.key, &key.serialize_pem())?;
    tracing::info!(cert = %paths.cert.display(), "generated a self-signed serving certificate");
    Ok(paths)
}

/// Write a file only its owner may read (keys, kubeconfigs holding keys); an existing
/// file loses any wider permissions before the contents go in.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// A `--tls-sni-cert-key` entry: `cert,key` or `cert,key:name1,name2`. Without names,
/// the certificate serves the DNS names and common name it carries.
#[derive(Clone, Debug)]
pub struct SniCert {
    pub paths: CertPaths,
    pub names: Vec<String>,
}

impl std::str::FromStr for SniCert {
    type Err = String;
    fn from_str(value: &str) -> Result<SniCert, String> {
        let (files, names) = value.split_once(':').unwrap_or((value, ""));
        let (cert, key) = files
            .split_once(',')
            .filter(|(c, k)| !c.is_empty() && !k.is_empty() && !k.contains(','))
            .ok_or_else(|| format!("expected comma separated certificate and key file paths in {value:?}"))?;
        let names = names.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
        Ok(SniCert { paths: CertPaths { cert: cert.into(), key: key.into() }, names })
    }
}

/// Everything the TLS listener needs from the flags.
pub struct TlsOptions {
    pub serving: CertPaths,
    pub sni: Vec<SniCert>,
    pub client_ca: Option<PathBuf>,
}

/// The listener's TLS state: serving certificates and client CAs, followed as their files
/// change. A new client CA bundle needs a new rustls config (the handshake names the
/// accepted CAs), which new connections pick up through `acceptor`.
pub struct Tls {
    resolver: Arc<CertResolver>,
    pub client_ca: Option<Arc<ClientCaFile>>,
    acceptor: RwLock<TlsAcceptor>,
}

impl Tls {
    pub fn new(opts: &TlsOptions) -> anyhow::Result<Arc<Tls>> {
        let resolver = Arc::new(CertResolver::new(&opts.serving, &opts.sni)?);
        let client_ca = opts.client_ca.as_deref().map(ClientCaFile::load).transpose()?.map(Arc::new);
        let config = server_config(resolver.clone(), client_ca.as_ref().map(|ca| ca.current()).as_deref())?;
        Ok(Arc::new(Tls { resolver, client_ca, acceptor: RwLock::new(TlsAcceptor::from(config)) }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Poll the files every RELOAD_INTERVAL for as long as the listener is in use.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reload::RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || tls.reload_changed()).await;
            }
        });
    }

    fn reload_changed(&self) {
        self.resolver.reload_changed();
        let Some(ca) = self.client_ca.as_ref().filter(|ca| ca.reload_if_changed()) else { return };
        match server_config(self.resolver.clone(), Some(&ca.current())) {
            Ok(config) => *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(config),
            Err(e) => tracing::warn!(error = %e, "cannot use the new client CA bundle in the handshake"),
        }
    }
}

/// rustls config with HTTP/2 and HTTP/1.1 offered through ALPN, certificates from the
/// (reloading) resolver, and client certificates requested but not required when a
/// client CA is configured (token and anonymous clients still connect).
fn server_config(resolver: Arc<CertResolver>, client_ca: Option<&ClientCa>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca.handshake_verifier()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file.
fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_flag_values() {
        let sni: SniCert = "a.crt,a.key".parse().unwrap();
        assert_eq!((sni.paths.cert, sni.paths.key, sni.names.len()), ("a.crt".into(), "a.key".into(), 0));
        let sni: SniCert = "a.crt,a.key:Foo.example, *.bar.example".parse().unwrap();
        assert_eq!(sni.names, ["foo.example", "*.bar.example"]);
        for bad in ["a.crt", "a.crt,", ",a.key", "a.crt,a.key,b.key"] {
            assert!(bad.parse::<SniCert>().is_err(), "{bad}");
        }
    }
}
