//! Byte-level surgery on stored JSON, so lists and watches can serve objects without
//! decoding them: find the top-level `metadata` object and splice in the
//! resourceVersion (which lives in etcd's mod_revision, not in the stored bytes).

/// The stored object with `"resourceVersion":"<rv>"` added to its metadata, or None
/// when the bytes are not an object with a metadata object (callers then decode fully).
pub fn with_resource_version(raw: &[u8], rv: i64) -> Option<Vec<u8>> {
    splice_resource_version(raw, rv).map(|(out, _)| out)
}

/// As `with_resource_version`, also returning where the version's digits start, so the
/// version can be replaced later without searching again.
pub fn splice_resource_version(raw: &[u8], rv: i64) -> Option<(Vec<u8>, usize)> {
    let (start, _) = top_level_value(raw, b"metadata")?;
    if raw.get(start) != Some(&b'{') {
        return None;
    }
    let rest = &raw[start + 1..];
    let empty = rest.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(&raw[..=start]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    let digits_at = out.len();
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some((out, digits_at))
}

/// The byte range of the value of a top-level key.
pub fn top_level_value(raw: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    let mut i = skip_ws(raw, 0);
    if raw.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(raw, i);
        if raw.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(raw, i)?;
        let this_key = &raw[i + 1..key_end - 1];
        i = skip_ws(raw, key_end);
        if raw.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(raw, i + 1);
        let value_end = skip_value(raw, value_start)?;
        if this_key == key {
            return Some((value_start, value_end));
        }
        i = skip_ws(raw, value_end);
        match raw.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(raw: &[u8], mut i: usize) -> usize {
    while raw.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at `i` (which is a quote).
fn skip_string(raw: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < raw.len() {
        match raw[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// End (exclusive) of the value starting at `i`.
fn skip_value(raw: &[u8], i: usize) -> Option<usize> {
    match raw.get(i)? {
        b'"' => skip_string(raw, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < raw.len() {
                match raw[j] {
                    b'"' => {
                        j = skip_string(raw, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < raw.len() && !matches!(raw[j], b',' | b'}' | b']') && !raw[j].is_ascii_whitespace() {
                j += 1;
            }
            Some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn splices_resource_version() {
        let raw = br#"{"apiVersion":"v1","data":{"metadata":"{\"x\"}"},"kind":"ConfigMap","metadata":{"name":"a"},"spec":[1,{"b":2}]}"#;
        let out = with_resource_version(raw, 42).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "a");
        let empty = with_resource_version(br#"{ "metadata" : { } }"#, 7).unwrap();
        let v: Value = serde_json::from_slice(&empty).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert!(with_resource_version(b"[1]", 1).is_none());
        assert!(with_resource_version(br#"{"metadata":"x"}"#, 1).is_none());
    }
}
