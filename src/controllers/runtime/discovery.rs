//! The resources a controller that works on "everything" (the garbage collector, the
//! namespace controller) acts on: every resource the API serves at its group's
//! preferred version that can be listed, watched and deleted.

use kube::Client;
use kube::api::ApiResource;
use kube::discovery::{Discovery, Scope, verbs};

/// (resource, namespaced) for each such resource.
pub async fn deletable_resources(client: &Client) -> kube::Result<Vec<(ApiResource, bool)>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v));
            if usable {
                out.push((ar, matches!(caps.scope, Scope::Namespaced)));
            }
        }
    }
    Ok(out)
}
