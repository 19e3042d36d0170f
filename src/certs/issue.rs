//! The cluster CA and the certificates it issues (ECDSA P-256, which rcgen makes in
//! microseconds where RSA takes most of a second), and the checks that decide whether
//! a certificate on disk can stay: signed by the current CA, its key beside it, the
//! subject and names wanted, and more than `RENEW_BEFORE` left.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};

use crate::auth::tls::write_private;

/// The CA lives ten years, the certificates it issues one (kubeadm's periods).
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(365);
/// A certificate with less than this left is issued again.
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// Backdated a little, so a client whose clock lags accepts a fresh certificate.
const BACKDATE: Duration = Duration::minutes(5);

pub const CA_NAME: &str = "kubernetes";

/// What a certificate must say: subject and, for serving certificates, names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP addresses; non-empty for serving certificates.
    pub sans: Vec<String>,
    pub server: bool,
}

impl Subject {
    pub fn client(cn: &str, orgs: &[&str]) -> Subject {
        Subject {
            common_name: cn.into(),
            organizations: orgs.iter().map(|o| o.to_string()).collect(),
            sans: Vec::new(),
            server: false,
        }
    }
}

/// A certificate and key file pair (`<name>.crt`, `<name>.key`).
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn new(dir: &Path, name: &str) -> Pair {
        Pair { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) }
    }

    fn read(&self) -> Option<(String, String)> {
        Some((std::fs::read_to_string(&self.cert).ok()?, std::fs::read_to_string(&self.key).ok()?))
    }

    fn write(&self, cert: &str, key: &KeyPair) -> anyhow::Result<()> {
        // the key first: a reloading server seeing a new cert with the old key would refuse it
        write_private(&self.key, &key.serialize_pem()).with_context(|| format!("writing {}", self.key.display()))?;
        std::fs::write(&self.cert, cert).with_context(|| format!("writing {}", self.cert.display()))
    }
}

/// The loaded cluster CA.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Its subject key identifier: what the certificates it signed carry as their
    /// authority key identifier.
    key_id: Vec<u8>,
}

impl Ca {
    /// The CA at `pair`, made when either file is missing or it is about to expire
    /// (`renewed` is then true: everything it signed must be issued again).
    pub fn ensure(pair: &Pair) -> anyhow::Result<(Ca, bool)> {
        if let Some((pem, key_pem)) = pair.read() {
            let key = KeyPair::from_pem(&key_pem).with_context(|| format!("parsing {}", pair.key.display()))?;
            let der = pem::parse(&pem).with_context(|| format!("parsing {}", pair.cert.display()))?;
            let check = inspect(der.contents(), &key).with_context(|| format!("parsing {}", pair.cert.display()))?;
            anyhow::ensure!(check.key_matches, "{} is not the key of {}", pair.key.display(), pair.cert.display());
            if !check.expiring {
                let key_id = check.subject_key_id.unwrap_or_default();
                let issuer = Issuer::from_ca_cert_pem(&pem, key)?;
                return Ok((Ca { pem, issuer, key_id }, false));
            }
            tracing::warn!(cert = %pair.cert.display(), "the cluster CA is about to expire; making a new one");
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = (now - BACKDATE, now + CA_VALIDITY);
        let key_id = params.key_identifier(&key);
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        pair.write(&pem, &key)?;
        tracing::info!(cert = %pair.cert.display(), "made the cluster CA");
        Ok((Ca { pem, issuer: Issuer::new(params, key), key_id }, true))
    }

    /// The certificate at `pair` if it is still good for `subject`, else a new one;
    /// true when it was issued now.
    pub fn ensure_cert(&self, pair: &Pair, subject: &Subject) -> anyhow::Result<bool> {
        if self.still_good(pair, subject) {
            return Ok(false);
        }
        let key = KeyPair::generate()?;
        pair.write(&self.issue(subject, &key)?, &key)?;
        tracing::info!(cert = %pair.cert.display(), cn = subject.common_name, "issued a certificate");
        Ok(true)
    }

    fn issue(&self, subject: &Subject, key: &KeyPair) -> anyhow::Result<String> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = subject.sans.iter().map(|s| san(s)).collect::<anyhow::Result<_>>()?;
        params.distinguished_name.push(DnType::CommonName, subject.common_name.as_str());
        // rcgen keeps one value per attribute type: further organizations go in by OID
        for (i, org) in subject.organizations.iter().enumerate() {
            let ty = if i == 0 { DnType::OrganizationName } else { DnType::CustomDnType(vec![2, 5, 4, 10]) };
            params.distinguished_name.push(ty, org.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match subject.server {
            true => ExtendedKeyUsagePurpose::ServerAuth,
            false => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = (now - BACKDATE, now + LEAF_VALIDITY);
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }

    fn still_good(&self, pair: &Pair, subject: &Subject) -> bool {
        let Some((pem, key_pem)) = pair.read() else { return false };
        let (Ok(der), Ok(key)) = (pem::parse(&pem), KeyPair::from_pem(&key_pem)) else { return false };
        let Ok(check) = inspect(der.contents(), &key) else { return false };
        let signed_by_us = check.authority_key_id.as_deref() == Some(self.key_id.as_slice());
        let names_ok = subject.sans.iter().all(|s| check.sans.contains(&normalize_san(s)));
        let subject_ok = check.common_name == subject.common_name && check.organizations == subject.organizations;
        signed_by_us && check.key_matches && !check.expiring && names_ok && subject_ok
    }
}

/// An IP address or a DNS name.
fn san(name: &str) -> anyhow::Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_ascii_lowercase().try_into()?),
    })
}

fn normalize_san(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// What a certificate on disk says.
struct Inspected {
    common_name: String,
    organizations: Vec<String>,
    sans: Vec<String>,
    key_matches: bool,
    expiring: bool,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
}

fn inspect(der: &[u8], key: &KeyPair) -> anyhow::Result<Inspected> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("{e}"))?;
    let subject = cert.subject();
    let text = |v: Result<&str, _>| v.map(str::to_string).unwrap_or_default();
    let common_name = subject.iter_common_name().next().map(|c| text(c.as_str())).unwrap_or_default();
    let organizations = subject.iter_organization().map(|o| text(o.as_str())).collect();
    let (mut sans, mut subject_key_id, mut authority_key_id) = (Vec::new(), None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(names) => {
                for name in &names.general_names {
                    match name {
                        GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase()),
                        GeneralName::IPAddress(b) => sans.extend(ip_of(b)),
                        _ => {}
                    }
                }
            }
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => {}
        }
    }
    let left = cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    Ok(Inspected {
        common_name,
        organizations,
        sans,
        key_matches: cert.public_key().subject_public_key.data.as_ref() == rcgen::PublicKeyData::der_bytes(key),
        expiring: left < RENEW_BEFORE.whole_seconds(),
        subject_key_id,
        authority_key_id,
    })
}

fn ip_of(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// The ServiceAccount token signing key (`sa.key`, EC P-256 PKCS#8, signs ES256) and
/// its public half (`sa.pub`), made once and kept: a new key would void every token.
pub fn ensure_sa_key(key_path: &Path, pub_path: &Path) -> anyhow::Result<()> {
    let key = match std::fs::read_to_string(key_path) {
        Ok(pem) => KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", key_path.display()))?,
        Err(_) => {
            let key = KeyPair::generate()?;
            write_private(key_path, &key.serialize_pem())?;
            tracing::info!(key = %key_path.display(), "made the service account signing key");
            key
        }
    };
    let public = key.public_key_pem();
    if std::fs::read_to_string(pub_path).ok().as_deref() != Some(public.as_str()) {
        std::fs::write(pub_path, public).with_context(|| format!("writing {}", pub_path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) fn describe(pair: &Pair) -> (String, Vec<String>, Vec<String>) {
    let pem = std::fs::read_to_string(&pair.cert).unwrap();
    let key = KeyPair::from_pem(&std::fs::read_to_string(&pair.key).unwrap()).unwrap();
    let i = inspect(pem::parse(&pem).unwrap().contents(), &key).unwrap();
    assert!(i.key_matches);
    (i.common_name, i.organizations, i.sans)
}
