//! x509 client certificate authentication: a chain that verifies against
//! `--client-ca-file` names the user by its subject's common name and the groups by its
//! organizations.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::request::Parts;
use rustls::pki_types::CertificateDer;

use super::{Authenticate, Outcome};
use crate::auth::request::UserInfo;
use crate::auth::tls::{ClientCaFile, PeerCertificates};

pub struct X509 {
    pub ca: Arc<ClientCaFile>,
}

impl Authenticate for X509 {
    fn authenticate(&self, req: &Parts) -> Outcome {
        let Some(peer) = req.extensions.get::<PeerCertificates>().filter(|p| !p.chain.is_empty()) else {
            return Outcome::NoCredentials;
        };
        let generation = self.ca.generation();
        if let Some(user) = peer.verified_user(generation) {
            return Outcome::Authenticated(user);
        }
        if let Err(e) = self.ca.current().verify(&peer.chain) {
            return Outcome::Rejected(format!("verifying the client certificate: {e}"));
        }
        match user_of(&peer.chain[0]) {
            Some(user) => {
                peer.remember(user.clone(), expiry(&peer.chain), generation);
                Outcome::Authenticated(user)
            }
            // a certificate without a common name names no one; other credentials may
            None => Outcome::NoCredentials,
        }
    }
}

/// The earliest notAfter in the chain: until then a verified chain stays verified.
/// Unparsable (never the case for a chain that verified): already past.
fn expiry(chain: &[CertificateDer<'static>]) -> SystemTime {
    let not_after = |der: &CertificateDer| {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        u64::try_from(cert.validity().not_after.timestamp()).ok()
    };
    let earliest = chain.iter().map(not_after).try_fold(u64::MAX, |min, t| t.map(|t| min.min(t)));
    earliest.map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs))
}

fn user_of(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_string).collect();
    Some(UserInfo { name, groups, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(org) = orgs.first() {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *org);
        }
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn user_from_subject() {
        let user = user_of(&certificate("alice", &["devs"])).unwrap();
        assert_eq!((user.name.as_str(), user.groups.as_slice()), ("alice", ["devs".to_string()].as_slice()));
        assert!(user_of(&certificate("", &[])).is_none(), "no common name, no user");
        let until = expiry(&[CertificateDer::from(certificate("alice", &[]))]);
        assert!(until > SystemTime::now() + Duration::from_secs(365 * 86400), "rcgen's default validity");
        assert_eq!(expiry(&[CertificateDer::from(vec![1, 2, 3])]), UNIX_EPOCH);
    }

    /// Truncated and corrupted certificates are no user and no panic.
    #[test]
    fn damaged_certificates() {
        let der = certificate("alice", &["devs"]);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let mut bytes = der[..rng.usize(..=der.len())].to_vec();
            if !bytes.is_empty() {
                let i = rng.usize(..bytes.len());
                bytes[i] ^= rng.u8(1..);
            }
            let _ = user_of(&bytes);
        }
    }
}
