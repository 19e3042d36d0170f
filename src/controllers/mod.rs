//! Controllers the API server runs itself until the controller-manager exists
//! (issue 7 moves them there): the `default` ServiceAccount and `kube-root-ca.crt`
//! ConfigMap of every namespace, and ResourceQuota usage.

pub mod quota_status;
pub mod service_accounts;
