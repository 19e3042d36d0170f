//! Transport security, and the identity and request attributes that authentication and
//! authorization (issue 5) work with. Until an authorization mode other than
//! AlwaysAllow is configured, every request is allowed, as upstream's default.

pub mod authz;
pub mod rbac;
pub mod request;
pub mod tls;
