use super::config::{self, Rule};
use super::*;
use crate::registry::find_resource;

const KEY16: &str = "AAECAwQFBgcICQoLDA0ODw=="; // 00 01 .. 0f
const KEY32: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";
const ETCD_KEY: &[u8] = b"/registry/secrets/default/s";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
    )
}

fn transformer(providers: &str) -> Transformer {
    let rules = config::parse(&config(providers)).unwrap();
    Transformer { providers: rules[0].providers.clone() }
}

fn parse_error(providers: &str) -> String {
    config::parse(&config(providers)).err().expect("an error")
}

#[test]
fn each_provider_round_trips_with_its_prefix_and_layout() {
    let plain = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;
    let cases = [
        (format!("  - aescbc: {{keys: [{{name: k1, secret: {KEY16}}}]}}\n"), "k8s:enc:aescbc:v1:k1:", 16 + 64),
        (
            format!("  - aesgcm: {{keys: [{{name: k2, secret: {KEY32}}}]}}\n"),
            "k8s:enc:aesgcm:v1:k2:",
            12 + plain.len() + 16,
        ),
        (
            format!("  - secretbox: {{keys: [{{name: k3, secret: {KEY32}}}]}}\n"),
            "k8s:enc:secretbox:v1:k3:",
            24 + 16 + plain.len(),
        ),
    ];
    for (providers, prefix, body_len) in cases {
        let t = transformer(&providers);
        let sealed = t.seal(ETCD_KEY, plain).unwrap();
        assert!(sealed.starts_with(prefix.as_bytes()), "{prefix}");
        assert_eq!(sealed.len(), prefix.len() + body_len, "{prefix}");
        assert!(!sealed.windows(7).any(|w| w == b"aHVudGV"), "{prefix}");
        let opened = t.open(ETCD_KEY, &sealed).unwrap();
        assert_eq!(opened.value, plain);
        assert!(!opened.stale);
        // a second seal uses a fresh IV / nonce
        assert_ne!(t.seal(ETCD_KEY, plain).unwrap(), sealed);
    }
}

#[test]
fn aescbc_reads_what_openssl_writes() {
    // printf 'hello, kubernetes' | openssl enc -aes-128-cbc -K 0001..0f -iv 0f0e..00
    let t = transformer(&format!("  - aescbc: {{keys: [{{name: k, secret: {KEY16}}}]}}\n"));
    let stored = [
        b"k8s:enc:aescbc:v1:k:".as_slice(),
        &hex("0f0e0d0c0b0a09080706050403020100"),
        &hex("a3426dc4b853479196342a84983d2b1c33c6602801f075065798d6a103debf7a"),
    ]
    .concat();
    assert_eq!(t.open(ETCD_KEY, &stored).unwrap().value, b"hello, kubernetes");
}

#[test]
fn aesgcm_layout_is_nonce_ciphertext_tag_and_the_etcd_key_is_authenticated() {
    // NIST GCM test case 2: zero key, zero nonce, 16 zero bytes, no AAD
    let zero_key = "AAAAAAAAAAAAAAAAAAAAAA==";
    let t = transformer(&format!("  - aesgcm: {{keys: [{{name: k, secret: {zero_key}}}]}}\n"));
    let stored = [
        b"k8s:enc:aesgcm:v1:k:".as_slice(),
        &[0u8; 12],
        &hex("0388dace60b6a392f328c2b971b2fe78"),
        &hex("ab6e47d42cec13bdf53a67b21257bddf"),
    ]
    .concat();
    assert_eq!(t.open(b"", &stored).unwrap().value, [0u8; 16]);
    // the same bytes under another etcd key do not authenticate
    let err = t.open(ETCD_KEY, &stored).err().unwrap();
    assert_eq!(err, "cipher: message authentication failed");
    let sealed = t.seal(ETCD_KEY, b"x").unwrap();
    assert!(t.open(b"/registry/secrets/default/other", &sealed).is_err());
}

#[test]
fn reads_try_every_provider_and_report_staleness() {
    let old = transformer(&format!("  - aescbc: {{keys: [{{name: key1, secret: {KEY16}}}]}}\n  - identity: {{}}\n"));
    let new = transformer(&format!(
        "  - secretbox: {{keys: [{{name: key2, secret: {KEY32}}}]}}\n  - aescbc: {{keys: [{{name: key1, secret: {KEY16}}}]}}\n"
    ));
    let by_old = old.seal(ETCD_KEY, b"{}").unwrap();
    let opened = new.open(ETCD_KEY, &by_old).unwrap();
    assert_eq!((opened.value.as_slice(), opened.stale), (b"{}".as_slice(), true));
    // identity (second) reads plaintext, stale; the new config has no identity
    let opened = old.open(ETCD_KEY, b"{\"a\":1}").unwrap();
    assert!(opened.stale);
    assert_eq!(new.open(ETCD_KEY, b"{}").err().unwrap(), "no matching prefix found");
    // identity never hands out encrypted bytes
    let identity_first = transformer("  - identity: {}\n");
    assert_eq!(identity_first.open(ETCD_KEY, &by_old).err().unwrap(), "no matching prefix found");
    assert_eq!(identity_first.seal(ETCD_KEY, b"{}").unwrap(), b"{}");
}

#[test]
fn same_provider_with_two_keys_tries_both() {
    let wrong = "AQECAwQFBgcICQoLDA0ODw==";
    let t = transformer(&format!(
        "  - aesgcm: {{keys: [{{name: a, secret: {wrong}}}]}}\n  - aesgcm: {{keys: [{{name: b, secret: {KEY16}}}]}}\n"
    ));
    let only_b = transformer(&format!("  - aesgcm: {{keys: [{{name: b, secret: {KEY16}}}]}}\n"));
    let sealed = only_b.seal(ETCD_KEY, b"{}").unwrap();
    assert!(t.open(ETCD_KEY, &sealed).unwrap().stale);
    // the provider's prefix under a key name nobody has
    let only_c = transformer(&format!("  - aesgcm: {{keys: [{{name: c, secret: {KEY16}}}]}}\n"));
    let err = only_c.open(ETCD_KEY, &sealed).err().unwrap();
    assert_eq!(err, "no matching key was found for the provided AEAD transformer");
}

#[test]
fn bad_configurations_name_the_problem() {
    let short = "c2hvcnQ="; // "short"
    let err = parse_error(&format!("  - aescbc: {{keys: [{{name: k, secret: {short}}}]}}\n"));
    assert!(err.contains("resources[0].providers[0].aescbc.keys[0].secret"), "{err}");
    assert!(err.contains("got 5, expected one of [16 24 32]"), "{err}");
    let err = parse_error(&format!("  - secretbox: {{keys: [{{name: k, secret: {KEY16}}}]}}\n"));
    assert!(err.contains("got 16, expected one of [32]"), "{err}");
    let err = parse_error("  - aesgcm: {keys: [{name: k, secret: '!!not base64'}]}\n");
    assert!(err.contains("secrets must be base64 encoded"), "{err}");
    let err = parse_error("  - rot13: {}\n");
    assert!(err.contains("rot13"), "{err}");
    let err = parse_error("  - kms: {name: x}\n");
    assert!(err.contains("kms") && err.contains("not supported"), "{err}");
    let err = parse_error(&format!("  - identity: {{}}\n    aescbc: {{keys: [{{name: k, secret: {KEY16}}}]}}\n"));
    assert!(err.contains("more than one provider"), "{err}");
    let err = parse_error("  - aescbc: {keys: []}\n");
    assert!(err.contains("keys: Required value"), "{err}");
    let err = config::parse("apiVersion: v1\nkind: ConfigMap\nresources: []\n").err().unwrap();
    assert!(err.contains("EncryptionConfiguration"), "{err}");
    assert!(config::parse("{ not yaml").is_err());
}

#[test]
fn json_configuration_and_resource_wildcards() {
    let json = format!(
        r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[
        {{"resources":["deployments.apps","*.batch"],"providers":[{{"aesgcm":{{"keys":[{{"name":"k","secret":"{KEY16}"}}]}}}}]}},
        {{"resources":["*."],"providers":[{{"identity":{{}}}}]}},
        {{"resources":["*.*"],"providers":[{{"secretbox":{{"keys":[{{"name":"k","secret":"{KEY32}"}}]}}}}]}}]}}"#
    );
    let rules: Vec<Rule> = config::parse(&json).unwrap();
    let enc = Encryption::from_rules(&rules, &KeySpace::new("/registry"));
    let first = |key: &str| enc.transformer(key.as_bytes()).map(Transformer::describe);
    assert_eq!(first("/registry/deployments/default/d").as_deref(), Some("k8s:enc:aesgcm:v1:k:"));
    assert_eq!(first("/registry/jobs/default/j").as_deref(), Some("k8s:enc:aesgcm:v1:k:"));
    assert_eq!(first("/registry/secrets/default/s").as_deref(), Some("identity"));
    assert_eq!(first("/registry/replicasets/default/r").as_deref(), Some("k8s:enc:secretbox:v1:k:"));
    assert!(covers("ingresses.networking.k8s.io", find_resource("networking.k8s.io", "v1", "ingresses").unwrap()));
    assert!(!covers("secrets", find_resource("apps", "v1", "deployments").unwrap()));
}
