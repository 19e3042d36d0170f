//! NamespaceLifecycle: nothing is created in a namespace that does not exist (404) or is
//! being terminated (403), and the immortal namespaces cannot be deleted. The namespace's
//! state comes from the registry's namespace cache (etcd on a miss); the create's etcd
//! transaction compares the namespace key with the version judged here, and admits the
//! create again when it changed, so a namespace turning Terminating meanwhile is caught.

use futures::future::BoxFuture;

use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::rest::Registry;

/// Upstream's immortal namespaces (kube-node-lease may be deleted).
pub const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

pub struct NamespaceLifecycle {
    registry: Registry,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(NamespaceLifecycle { registry: ctx.registry.clone() })
}

impl NamespaceLifecycle {
    async fn check(&self, a: &Attributes<'_>) -> ApiResult<()> {
        if a.operation == Operation::Delete {
            if IMMORTAL.contains(&a.name) {
                return Err(a.forbidden("this namespace may not be deleted"));
            }
            return Ok(());
        }
        match self.registry.namespace_state(a.namespace).await? {
            None => Err(ApiError::not_found("", "namespaces", a.namespace)),
            Some((_, true)) => Err(a.forbidden(&format!(
                "unable to create new content in namespace {} because it is being terminated",
                a.namespace
            ))),
            Some(_) => Ok(()),
        }
    }
}

impl Plugin for NamespaceLifecycle {
    fn handles(&self, a: &Attributes) -> bool {
        match a.operation {
            Operation::Create => a.res.namespaced && a.subresource.is_empty(),
            Operation::Delete => a.is("", "namespaces"),
            Operation::Update => false,
        }
    }

    fn mutate<'a>(&'a self, a: &'a Attributes<'a>, _o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(self.check(a))
    }

    /// Again after validation, and whenever the namespace changed before the write.
    fn validate<'a>(&'a self, a: &'a Attributes<'a>, _o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(self.check(a))
    }
}
