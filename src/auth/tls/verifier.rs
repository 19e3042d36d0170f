//! Client certificates. The handshake asks for one (naming the accepted CAs) but lets a
//! connection through with any certificate or none; the chain is verified against
//! `--client-ca-file` per request by x509 authentication, so a bad certificate answers
//! 401 as upstream does rather than breaking the handshake, and a client with a bad
//! certificate but a good token is still let in by its token.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::read_certs;
use super::reload::{FileStamp, file_stamp};
use crate::auth::request::UserInfo;

/// The certificate chain a client presented, attached to every request of its connection,
/// with the user x509 authentication found in it: later requests on the connection reuse
/// that answer (until the chain's earliest expiry) instead of verifying signatures again.
#[derive(Clone, Debug)]
pub struct PeerCertificates {
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    /// the user, until when, and the CA generation it was verified against
    verified: Arc<Mutex<Option<(UserInfo, SystemTime, u64)>>>,
}

impl PeerCertificates {
    pub fn new(chain: &[CertificateDer<'_>]) -> PeerCertificates {
        let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        PeerCertificates { chain: Arc::new(chain), verified: Arc::default() }
    }

    /// The user remembered for this chain, while it is valid and the CAs unchanged.
    pub fn verified_user(&self, generation: u64) -> Option<UserInfo> {
        let memo = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let fresh =
            |(_, until, r#gen): &&(UserInfo, SystemTime, u64)| *r#gen == generation && SystemTime::now() < *until;
        memo.as_ref().filter(fresh).map(|(user, _, _)| user.clone())
    }

    pub fn remember(&self, user: UserInfo, until: SystemTime, generation: u64) {
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some((user, until, generation));
    }
}

/// `--client-ca-file`, re-read when it changes (see `Tls::spawn_reloader`).
#[derive(Debug)]
pub struct ClientCaFile {
    path: PathBuf,
    stamp: Mutex<FileStamp>,
    current: RwLock<Arc<ClientCa>>,
    /// Bumped on every reload, so chains verified against older CAs are verified again.
    generation: AtomicU64,
}

impl ClientCaFile {
    pub fn load(path: &Path) -> anyhow::Result<ClientCaFile> {
        let stamp = Mutex::new(file_stamp(path));
        let current = RwLock::new(Arc::new(ClientCa::load(path)?));
        Ok(ClientCaFile { path: path.to_path_buf(), stamp, current, generation: AtomicU64::new(0) })
    }

    pub fn current(&self) -> Arc<ClientCa> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-read the bundle if the file changed; true when a new one is in use. A bundle
    /// that does not load (half written, empty) is retried on the next poll.
    pub fn reload_if_changed(&self) -> bool {
        let now = file_stamp(&self.path);
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || now == *last {
            return false;
        }
        match ClientCa::load(&self.path) {
            Ok(ca) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ca);
                self.generation.fetch_add(1, Ordering::AcqRel);
                *last = now;
                tracing::info!(path = %self.path.display(), "reloaded the client CA bundle");
                true
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "client CA file changed but cannot be loaded yet");
                false
            }
        }
    }
}

/// One version of the CA bundle of `--client-ca-file`.
#[derive(Debug)]
pub struct ClientCa {
    strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    pub fn load(path: &Path) -> anyhow::Result<ClientCa> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots.add(cert).with_context(|| format!("a CA certificate in {}", path.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .with_context(|| format!("client CAs from {}", path.display()))?;
        Ok(ClientCa { strict })
    }

    /// The verifier the TLS handshake uses: proof of key possession only.
    pub fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Handshake { strict: self.strict.clone() })
    }

    /// Whether the chain leads to one of the CAs and its leaf is valid now for client
    /// authentication (webpki checks dates, signatures and extended key usage).
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        self.strict.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ())
    }
}

#[derive(Debug)]
struct Handshake {
    strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for Handshake {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.strict.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // deferred to ClientCa::verify, per request
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.strict.supported_verify_schemes()
    }
}
