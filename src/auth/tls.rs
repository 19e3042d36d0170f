//! Serving certificates: loaded from files, or generated once into `--cert-dir` (a
//! self-signed CA and a serving certificate for localhost and 127.0.0.1), as upstream does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

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

/// rustls config with HTTP/2 and HTTP/1.1 offered through ALPN.
pub fn server_config(paths: &CertPaths) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .with_context(|| format!("reading {}", paths.cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).with_context(|| format!("reading {}", paths.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
