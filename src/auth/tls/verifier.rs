//! Client certificates. The handshake asks for one (naming the accepted CAs) but lets a
//! connection through with any certificate or none; the chain is verified against
//! `--client-ca-file` per request by x509 authentication, so a bad certificate answers
//! 401 as upstream does rather than breaking the handshake, and a client with a bad
//! certificate but a good token is still let in by its token.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::read_certs;
use crate::auth::request::UserInfo;

/// The certificate chain a client presented, attached to every request of its connection,
/// with the user x509 authentication found in it: later requests on the connection reuse
/// that answer (until the chain's earliest expiry) instead of verifying signatures again.
#[derive(Clone, Debug)]
pub struct PeerCertificates {
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    verified: Arc<Mutex<Option<(UserInfo, SystemTime)>>>,
}

impl PeerCertificates {
    pub fn new(chain: &[CertificateDer<'_>]) -> PeerCertificates {
        let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        PeerCertificates { chain: Arc::new(chain), verified: Arc::default() }
    }

    /// The user remembered for this chain, while it is still valid.
    pub fn verified_user(&self) -> Option<UserInfo> {
        let memo = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        memo.as_ref().filter(|(_, until)| SystemTime::now() < *until).map(|(user, _)| user.clone())
    }

    pub fn remember(&self, user: UserInfo, until: SystemTime) {
        *self.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some((user, until));
    }
}

/// The CA bundle of `--client-ca-file`.
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
