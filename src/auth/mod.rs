//! Transport security. Authentication and authorization come with the security work
//! (issue 5); until then every request is allowed, as upstream's AlwaysAllow.

pub mod tls;
