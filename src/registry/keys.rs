//! etcd key layout, as upstream's: `<prefix>/<resource>/<namespace>/<name>` for namespaced
//! kinds, `<prefix>/<resource>/<name>` for cluster-scoped ones.

use super::ResourceDef;

#[derive(Clone, Debug)]
pub struct KeySpace {
    /// `--etcd-prefix`, `/registry` by default, without a trailing slash.
    pub prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') { trimmed.to_string() } else { format!("/{trimmed}") };
        KeySpace { prefix }
    }

    /// Key of one object.
    pub fn object(&self, res: &ResourceDef, namespace: &str, name: &str) -> String {
        if res.namespaced {
            format!("{}/{}/{}/{}", self.prefix, res.etcd_resource, namespace, name)
        } else {
            format!("{}/{}/{}", self.prefix, res.etcd_resource, name)
        }
    }

    /// Prefix for a list: one namespace, or all of them (namespace empty). Ends in `/`.
    pub fn collection(&self, res: &ResourceDef, namespace: &str) -> String {
        if res.namespaced && !namespace.is_empty() {
            format!("{}/{}/{}/", self.prefix, res.etcd_resource, namespace)
        } else {
            format!("{}/{}/", self.prefix, res.etcd_resource)
        }
    }

    /// Any other key under the prefix (allocations and the like).
    pub fn raw(&self, rest: &str) -> String {
        format!("{}/{}", self.prefix, rest)
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
