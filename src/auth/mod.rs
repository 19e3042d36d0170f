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
