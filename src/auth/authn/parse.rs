//! The parsing authentication does on what clients send or operators write: the
//! Authorization header, token file lines, impersonation header names and user names.
//! Plain functions over strings with no crate dependencies besides percent-encoding, so
//! the fuzz target (`fuzz/`) compiles this file as it is.

/// The token of an `Authorization` header value `Bearer <token>` (scheme in any case);
/// any other scheme, or an empty token, is no token.
pub fn bearer(value: &str) -> Option<&str> {
    let mut parts = value.split(' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// One CSV record: fields separated by commas, optionally in double quotes (a doubled
/// quote inside is one quote); spaces before a field are dropped.
pub fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field"),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("text after a quoted field");
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                field.push(c);
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// The key of an `Impersonate-Extra-<key>` header: percent-encoded, since header names
/// cannot carry every character a key may have.
pub fn extra_key(encoded: &str) -> String {
    percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().into_owned()
}

/// `system:serviceaccount:<namespace>:<name>` → (namespace, name).
pub fn service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix("system:serviceaccount:")?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHABET: &[char] = &[' ', ',', '"', ':', '%', '\r', '\t', '\n', 'a', 'Z', '0', '€', '\0', '\u{fffd}'];

    /// `seed` with a few random insertions, deletions and truncations.
    fn mutate(rng: &mut fastrand::Rng, seed: &str) -> String {
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..rng.usize(1..6) {
            match rng.u8(..3) {
                0 => chars.insert(rng.usize(..=chars.len()), ALPHABET[rng.usize(..ALPHABET.len())]),
                1 if !chars.is_empty() => {
                    chars.remove(rng.usize(..chars.len()));
                }
                _ => chars.truncate(rng.usize(..=chars.len())),
            }
        }
        chars.into_iter().collect()
    }

    /// A deterministic stand-in for the fuzz target, run with the unit tests: mutated
    /// inputs never panic and the answers keep their shape.
    #[test]
    fn mutated_input_never_panics() {
        let mut rng = fastrand::Rng::with_seed(5);
        let seeds = ["Bearer abc", "t,u,1,\"a,b\"", "\"x\"\"y\",z", "system:serviceaccount:ns:sa", "%E2%82%AC%zz%"];
        for _ in 0..20_000 {
            let seed = seeds[rng.usize(..seeds.len())];
            let input = mutate(&mut rng, seed);
            if let Some(token) = bearer(&input) {
                assert!(!token.is_empty() && !token.contains(' '), "{input:?}");
            }
            if let Ok(fields) = csv_fields(&input) {
                assert!(!fields.is_empty());
            }
            let _ = extra_key(&input);
            if let Some((namespace, name)) = service_account(&input) {
                assert!(!namespace.is_empty() && !name.is_empty() && !name.contains(':'), "{input:?}");
            }
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(csv_fields("a, \"b,c\" ,d"), Err("text after a quoted field"));
        assert_eq!(csv_fields("a,,\"\"").unwrap(), ["a", "", ""]);
        assert_eq!(extra_key("scopes%2Fone"), "scopes/one");
        assert_eq!(service_account("system:serviceaccount:ns:sa:x"), None);
    }
}
