//! ServiceAccount tokens: the keys (`--service-account-signing-key-file`,
//! `--service-account-key-file`), the claims of bound and legacy tokens, signing for
//! the TokenRequest API and signature checks for the authenticator. Which objects a token
//! is bound to, and whether they still exist, is the authenticator's business.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::sa_discovery::key_id;

/// The issuer of secret-based tokens minted by upstream's old token controller.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// A uid and name pair as bound tokens carry them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim of a bound token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
}

/// The claims of both token forms; which one a token is depends on what it carries.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io", default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Bound>,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default, skip_serializing_if = "Option::is_none")]
    pub legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name", default, skip_serializing_if = "Option::is_none")]
    pub legacy_secret: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_sa_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_sa_uid: Option<String>,
}

/// JWT `aud` may be one string or a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(v) => v,
    })
}

/// Signs tokens with `--service-account-signing-key-file` as the first issuer.
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    /// The key's id, in every token's header, as upstream sets it (None for a key rcgen
    /// cannot read, such as PKCS#1 RSA: such tokens still verify, by trying every key).
    kid: Option<String>,
    /// `--service-account-max-token-expiration`: longer requests are cut to this.
    pub max_seconds: Option<i64>,
    pub issuer: String,
    /// `--api-audiences`: what a TokenRequest without audiences gets.
    pub audiences: Vec<String>,
}

impl Signer {
    pub fn load(path: &Path, issuer: String, audiences: Vec<String>) -> anyhow::Result<Signer> {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (key, alg) = signing_key(&pem).with_context(|| format!("signing key {}", path.display()))?;
        let kid = std::str::from_utf8(&pem)
            .ok()
            .and_then(|text| rcgen::KeyPair::from_pem(text).ok())
            .map(|pair| key_id(&rcgen::PublicKeyData::subject_public_key_info(&pair)));
        let signer = Signer { key, alg, kid, max_seconds: None, issuer, audiences };
        // a key of an unsupported curve or size only fails when it signs: find out now
        signer.sign(&Claims::default()).with_context(|| format!("signing with {}", path.display()))?;
        Ok(signer)
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let header = Header { kid: self.kid.clone(), ..Header::new(self.alg) };
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

/// RSA (PKCS#1 or PKCS#8) signs RS256; EC P-256 (PKCS#8) signs ES256.
fn signing_key(pem: &[u8]) -> anyhow::Result<(EncodingKey, Algorithm)> {
    if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    anyhow::bail!("not an RSA or PKCS#8 EC P-256 private key")
}

/// A key that verifies tokens, with the algorithm its family signs and, when known, its
/// DER SubjectPublicKeyInfo (for its key id and the published key set).
pub struct VerifyKey {
    key: DecodingKey,
    alg: Algorithm,
    spki: Option<Vec<u8>>,
}

impl VerifyKey {
    fn kid(&self) -> Option<String> {
        self.spki.as_deref().map(key_id)
    }
}

/// Every public key in a PEM file: public keys as they are, private keys by their public
/// half (upstream accepts both in `--service-account-key-file`).
pub fn load_verify_keys(path: &Path) -> anyhow::Result<Vec<VerifyKey>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let blocks = pem::parse_many(&text).with_context(|| format!("parsing {}", path.display()))?;
    let keys: Vec<VerifyKey> = blocks.iter().filter_map(verify_key).collect();
    anyhow::ensure!(!keys.is_empty(), "{}: no RSA or EC P-256 key found", path.display());
    Ok(keys)
}

fn verify_key(block: &pem::Pem) -> Option<VerifyKey> {
    let encoded = pem::encode(block);
    if block.tag().contains("PRIVATE KEY") {
        let pair = rcgen::KeyPair::from_pem(&encoded).ok()?;
        let (raw, spki) = (pair.public_key_raw(), Some(rcgen::PublicKeyData::subject_public_key_info(&pair)));
        return if pair.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            Some(VerifyKey { key: DecodingKey::from_rsa_der(raw), alg: Algorithm::RS256, spki })
        } else if pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
            Some(VerifyKey { key: DecodingKey::from_ec_der(raw), alg: Algorithm::ES256, spki })
        } else {
            None
        };
    }
    // a "PUBLIC KEY" block is the SubjectPublicKeyInfo itself
    let spki = (block.tag() == "PUBLIC KEY").then(|| block.contents().to_vec());
    if let Ok(key) = DecodingKey::from_rsa_pem(encoded.as_bytes()) {
        return Some(VerifyKey { key, alg: Algorithm::RS256, spki });
    }
    DecodingKey::from_ec_pem(encoded.as_bytes()).ok().map(|key| VerifyKey { key, alg: Algorithm::ES256, spki })
}

/// The verification side: keys and the issuers tokens may come from.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    /// `--service-account-issuer`, all of them (tokens of a previous issuer keep working).
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// Tokens whose signature was verified, with their claims: a client sends the same
    /// token with every request, and the signature check is the expensive part.
    signed: Mutex<HashMap<String, Claims>>,
}

/// Verified tokens remembered at most; the memory is dropped whole when full.
const SIGNED_CACHE_ENTRIES: usize = 4096;

/// Clock skew tolerated on exp and nbf.
const LEEWAY_SECONDS: i64 = 60;

/// Why a token is refused (logged, never sent).
pub type Refusal = String;

impl Verifier {
    pub fn new(keys: Vec<VerifyKey>, issuers: Vec<String>, audiences: Vec<String>) -> Verifier {
        Verifier { keys, issuers, audiences, signed: Mutex::default() }
    }

    /// Every verification key as a JWK, for `/openid/v1/jwks`.
    pub fn jwks(&self) -> Vec<serde_json::Value> {
        self.keys.iter().filter_map(|k| k.spki.as_deref().and_then(super::sa_discovery::jwk)).collect()
    }

    /// Whether a token is ours to judge: not when it is no JWT, or one of another issuer
    /// (other token authenticators may know it); a JWT that does not even parse is bad.
    pub fn peek(&self, token: &str) -> Result<bool, Refusal> {
        if token.split('.').count() != 3 {
            return Ok(false);
        }
        jsonwebtoken::decode_header(token).map_err(|e| format!("malformed header: {e}"))?;
        let claims: Claims =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|e| format!("malformed claims: {e}"))?;
        Ok(claims.iss == LEGACY_ISSUER || self.issuers.contains(&claims.iss))
    }

    /// Signature, then issuer-specific checks: bound tokens need our audience and time
    /// window; legacy tokens carry neither.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Refusal> {
        let claims = self.signature_checked(token)?;
        if claims.iss == LEGACY_ISSUER {
            return Ok(claims);
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(format!("audiences {:?} are not among {:?}", claims.aud, self.audiences));
        }
        let exp = claims.exp.ok_or("no expiry")?;
        if now > exp + LEEWAY_SECONDS {
            return Err("expired".into());
        }
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return Err("not valid yet".into());
        }
        Ok(claims)
    }

    /// The claims of a token with a good signature, verified once per token.
    fn signature_checked(&self, token: &str) -> Result<Claims, Refusal> {
        if let Some(claims) = self.signed.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
            return Ok(claims.clone());
        }
        let claims = self.check_signature(token)?;
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if signed.len() >= SIGNED_CACHE_ENTRIES {
            signed.clear();
        }
        signed.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    fn check_signature(&self, token: &str) -> Result<Claims, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(header.alg);
        // time and audience are checked by `verify`, which knows the token's form
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        // the key the header names first; then the others, as a token may come from a
        // signer that sets no key id or another one
        let mut keys: Vec<&VerifyKey> = self.keys.iter().filter(|k| k.alg == header.alg).collect();
        if header.kid.is_some() {
            keys.sort_by_key(|k| k.kid() != header.kid);
        }
        for key in keys {
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                return Ok(data.claims);
            }
        }
        Err("no key verifies the signature".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EC P-256 key pair as PEM files in `dir`: (private, public).
    fn ec_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        (private, public)
    }

    fn bound(aud: &str, exp: i64) -> Claims {
        Claims {
            iss: "https://issuer".into(),
            sub: "system:serviceaccount:ns:sa".into(),
            aud: vec![aud.into()],
            exp: Some(exp),
            bound: Some(Bound { namespace: "ns".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn verifier(keys: Vec<VerifyKey>) -> Verifier {
        Verifier::new(keys, vec!["https://issuer".into()], vec!["api".into()])
    }

    #[test]
    fn signs_and_verifies_with_public_or_private_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_pair(dir.path(), "sa");
        let signer = Signer::load(&private, "https://issuer".into(), vec!["api".into()]).unwrap();
        let token = signer.sign(&bound("api", 1_000)).unwrap();
        for file in [&public, &private] {
            let claims = verifier(load_verify_keys(file).unwrap()).verify(&token, 1_000).unwrap();
            assert_eq!(claims.bound.unwrap().namespace, "ns");
        }
    }

    #[test]
    fn refuses_foreign_keys_audiences_and_expired_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_pair(dir.path(), "sa");
        let (other, _) = ec_pair(dir.path(), "other");
        let signer = Signer::load(&private, "https://issuer".into(), vec![]).unwrap();
        let foreign = Signer::load(&other, "https://issuer".into(), vec![]).unwrap();
        let v = verifier(load_verify_keys(&public).unwrap());
        assert!(v.verify(&foreign.sign(&bound("api", 1_000)).unwrap(), 1_000).is_err(), "another key");
        assert!(v.verify(&signer.sign(&bound("vault", 1_000)).unwrap(), 1_000).is_err(), "audience");
        let token = signer.sign(&bound("api", 1_000)).unwrap();
        assert!(v.verify(&token, 1_000 + LEEWAY_SECONDS).is_ok(), "within the leeway");
        assert!(v.verify(&token, 1_001 + LEEWAY_SECONDS).is_err(), "expired, though its signature is remembered");
    }

    #[test]
    fn only_jwts_of_our_issuers_are_ours() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_pair(dir.path(), "sa");
        let v = verifier(load_verify_keys(&public).unwrap());
        assert_eq!(v.peek("not-a-jwt"), Ok(false));
        assert!(v.peek("a.b.c").is_err(), "shaped like a JWT but not one");
        let ours = Signer::load(&private, "https://issuer".into(), vec![]).unwrap();
        assert_eq!(v.peek(&ours.sign(&bound("api", 1)).unwrap()), Ok(true));
        let theirs = Claims { iss: "https://elsewhere".into(), ..bound("api", 1) };
        assert_eq!(v.peek(&ours.sign(&theirs).unwrap()), Ok(false), "another issuer's token");
        let legacy = Claims { iss: LEGACY_ISSUER.into(), ..Default::default() };
        assert!(v.verify(&ours.sign(&legacy).unwrap(), 0).is_ok(), "legacy tokens carry no audience or expiry");
    }

    #[test]
    fn audience_is_a_string_or_a_list() {
        let one: Claims = serde_json::from_str(r#"{"iss":"i","sub":"s","aud":"a"}"#).unwrap();
        let many: Claims = serde_json::from_str(r#"{"iss":"i","sub":"s","aud":["a","b"]}"#).unwrap();
        assert_eq!((one.aud, many.aud), (vec!["a".to_string()], vec!["a".to_string(), "b".to_string()]));
    }
}
