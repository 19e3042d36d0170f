//! Transport security (`tls`), authentication (`authn`: who is asking, including
//! impersonation), the authorizer seam (`authz`), and the identity and request attributes
//! they share (`request`). Until an authorization mode other than AlwaysAllow is
//! configured, every authenticated request is allowed, as upstream's default.

pub mod authn;
pub mod authz;
pub mod rbac;
pub mod request;
pub mod sa_discovery;
pub mod sa_token;
pub mod tls;

use serde_json::Value;

use crate::registry::find_resource;
use crate::watch::Caches;

/// A core/v1 object as the watch cache has it: authenticators and authorizers read the
/// caches, never etcd, so no request waits on a round trip to be let in.
pub fn cached(caches: &Caches, resource: &str, ns: &str, name: &str) -> Option<Value> {
    caches.object(find_resource("", "v1", resource)?, ns, name)
}
