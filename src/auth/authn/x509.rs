//! x509 client certificate authentication: a chain that verifies against
//! `--client-ca-file` names the user by its subject's common name and the groups by its
//! organizations.

use std::sync::Arc;

use http::request::Parts;

use super::{Authenticate, Outcome};
use crate::auth::request::UserInfo;
use crate::auth::tls::{ClientCa, PeerCertificates};

pub struct X509 {
    pub ca: Arc<ClientCa>,
}

impl Authenticate for X509 {
    fn authenticate(&self, req: &Parts) -> Outcome {
        let Some(PeerCertificates(chain)) = req.extensions.get::<PeerCertificates>() else {
            return Outcome::NoCredentials;
        };
        if chain.is_empty() {
            return Outcome::NoCredentials;
        }
        if let Err(e) = self.ca.verify(chain) {
            return Outcome::Rejected(format!("verifying the client certificate: {e}"));
        }
        match user_of(&chain[0]) {
            Some(user) => Outcome::Authenticated(user),
            // a certificate without a common name names no one; other credentials may
            None => Outcome::NoCredentials,
        }
    }
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
