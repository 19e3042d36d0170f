//! Parsing resource URLs: `/api/v1/...` and `/apis/<group>/<version>/...`, with or
//! without `namespaces/<ns>/`, the legacy `watch/` prefix and subresources.

/// A request path resolved into its parts.
#[derive(Debug, PartialEq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path form.
    pub watch: bool,
}

/// What a request path names.
#[derive(Debug, PartialEq)]
pub enum Target {
    /// `/api/v1` or `/apis/<g>/<v>`: the resource list of a group version.
    GroupVersion(String, String),
    /// `/apis/<g>`: a group.
    Group(String),
    Resource(ResourcePath),
}

pub fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group] => return Some(Target::Group(group.to_string())),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Target::GroupVersion(group.into(), version.into()));
    }
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        other => (false, other),
    };
    let mut p = ResourcePath { group: group.into(), version: version.into(), watch, ..Default::default() };
    let tail = match rest {
        // namespaces/<name>/status|finalize is the namespace itself, not a namespaced list
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            p.resource = "namespaces".into();
            p.name = Some(ns.to_string());
            p.subresource = Some(sub.to_string());
            return valid(p);
        }
        ["namespaces", ns, resource, tail @ ..] => {
            p.namespace = Some(ns.to_string());
            p.resource = resource.to_string();
            tail
        }
        [resource, tail @ ..] => {
            p.resource = resource.to_string();
            tail
        }
        [] => return None,
    };
    match tail {
        [] => {}
        [name] => p.name = Some(name.to_string()),
        [name, sub] => {
            p.name = Some(name.to_string());
            p.subresource = Some(sub.to_string());
        }
        // a proxy subresource carries the path on the other side after it
        [name, "proxy", ..] => {
            p.name = Some(name.to_string());
            p.subresource = Some("proxy".into());
        }
        _ => return None,
    }
    valid(p)
}

fn valid(p: ResourcePath) -> Option<Target> {
    let empty = |s: &Option<String>| s.as_deref() == Some("");
    if p.resource.is_empty() || empty(&p.name) || empty(&p.namespace) || empty(&p.subresource) {
        return None;
    }
    Some(Target::Resource(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Some(Target::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (r.namespace.as_deref(), r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let r = res("/apis/apps/v1/deployments");
        assert_eq!((r.group.as_str(), r.resource.as_str(), r.namespace), ("apps", "deployments", None));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!((r.resource.as_str(), r.name.as_deref()), ("namespaces", Some("kube-system")));
        let r = res("/api/v1/namespaces/x/status");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let r = res("/api/v1/watch/namespaces/default/pods");
        assert!(r.watch);
        assert_eq!(parse("/apis/apps/v1"), Some(Target::GroupVersion("apps".into(), "v1".into())));
        assert_eq!(parse("/api/v2/pods"), None);
        assert_eq!(parse("/api/v1/namespaces/a/pods/b/c/d"), None);
        let r = res("/api/v1/nodes/n1/proxy/stats/summary");
        assert_eq!((r.name.as_deref(), r.subresource.as_deref()), (Some("n1"), Some("proxy")));
    }
}
