//! ServiceAccount issuer discovery: key ids, the public keys as a JSON Web Key Set
//! (`/openid/v1/jwks`) and the OpenID provider configuration
//! (`/.well-known/openid-configuration`), so that a party outside the cluster can verify
//! ServiceAccount tokens as upstream lets it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The id upstream gives a key: the SHA-256 of its DER SubjectPublicKeyInfo, base64url.
pub fn key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// One key as a JWK (RSA, or EC P-256), or None for a key of another kind.
pub fn jwk(spki_der: &[u8]) -> Option<Value> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let kid = key_id(spki_der);
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => Some(json!({
            "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
            "n": b64(strip_leading_zeros(rsa.modulus)), "e": b64(strip_leading_zeros(rsa.exponent)),
        })),
        // an uncompressed P-256 point: 0x04, then x and y of 32 bytes each
        PublicKey::EC(point) if point.data().len() == 65 && point.data()[0] == 4 => {
            let xy = &point.data()[1..];
            Some(json!({
                "use": "sig", "kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
                "x": b64(&xy[..32]), "y": b64(&xy[32..]),
            }))
        }
        _ => None,
    }
}

/// DER integers carry a leading zero when the top bit is set; a JWK does not.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

/// The two documents, rendered once at start.
pub struct Documents {
    pub configuration: Vec<u8>,
    pub jwks: Vec<u8>,
}

impl Documents {
    /// Documents for `issuer`, whose keys are `jwks`; the key set is announced at
    /// `jwks_uri` (upstream's `--service-account-jwks-uri`, by default this server's).
    pub fn new(issuer: &str, jwks_uri: &str, jwks: Vec<Value>) -> Documents {
        let mut algs: Vec<&str> = jwks.iter().filter_map(|k| k["alg"].as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        let configuration = json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        });
        let jwks = json!({ "keys": jwks });
        Documents {
            configuration: serde_json::to_vec(&configuration).unwrap_or_default(),
            jwks: serde_json::to_vec(&jwks).unwrap_or_default(),
        }
    }
}

/// Whether upstream would serve discovery for this issuer: only an https URL names a
/// place a verifier could fetch the documents from.
pub fn is_discoverable(issuer: &str) -> bool {
    issuer.strip_prefix("https://").is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_keys_become_p256_jwks_with_upstreams_key_id() {
        let key = rcgen::KeyPair::generate().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let jwk = jwk(&spki).unwrap();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
            (Some("EC"), Some("P-256"), Some("ES256"))
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap().len(), 32);
        assert_eq!(jwk["kid"].as_str().unwrap(), key_id(&spki));
        assert_eq!(key_id(&spki).len(), 43, "a base64url SHA-256 without padding");
    }

    #[test]
    fn only_https_issuers_are_discoverable() {
        assert!(is_discoverable("https://kubernetes.default.svc.cluster.local"));
        assert!(!is_discoverable("kubernetes/serviceaccount"));
        assert!(!is_discoverable("http://issuer"));
        assert!(!is_discoverable("https://"));
    }

    #[test]
    fn configuration_lists_each_algorithm_once() {
        let keys = vec![json!({"alg": "RS256"}), json!({"alg": "ES256"}), json!({"alg": "RS256"})];
        let docs = Documents::new("https://i", "https://h/openid/v1/jwks", keys);
        let config: Value = serde_json::from_slice(&docs.configuration).unwrap();
        assert_eq!(config["id_token_signing_alg_values_supported"], json!(["ES256", "RS256"]));
        assert_eq!(config["jwks_uri"], "https://h/openid/v1/jwks");
    }
}
