//! Serving certificates: loaded from files, or generated once into `--cert-dir` (a
//! self-signed CA and a serving certificate for localhost and 127.0.0.1), as upstream does;
//! the rustls configuration (TLS 1.2 and 1.3 with rustls' default suites, which are all
//! AEAD with forward secrecy), certificates chosen by SNI and reloaded when their files
//! change, and client certificates requested for x509 authentication.

mod reload;
mod verifier;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;

pub use reload::CertResolver;
pub use verifier::{ClientCa, PeerCertificates};

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

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
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
    pub client_ca: Option<Arc<ClientCa>>,
}

/// rustls config with HTTP/2 and HTTP/1.1 offered through ALPN, certificates from the
/// (reloading) resolver, and client certificates requested but not required when a
/// client CA is configured (token and anonymous clients still connect).
pub fn server_config(opts: &TlsOptions, resolver: Arc<CertResolver>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &opts.client_ca {
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
