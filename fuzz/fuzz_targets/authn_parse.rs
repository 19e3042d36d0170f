//! `cargo +nightly fuzz run authn_parse`: the Authorization header, token file lines,
//! impersonation extra keys and service account names from arbitrary bytes.

#![no_main]

// the parsing module itself, compiled as it is in the server
#[path = "../../src/auth/authn/parse.rs"]
mod parse;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = parse::bearer(text) {
        assert!(!token.is_empty());
    }
    if let Ok(fields) = parse::csv_fields(text) {
        assert!(!fields.is_empty());
    }
    let _ = parse::extra_key(text);
    if let Some((namespace, name)) = parse::service_account(text) {
        assert!(!namespace.is_empty() && !name.contains(':'));
    }
});
