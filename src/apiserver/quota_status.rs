//! Stand-in for upstream's ResourceQuota controller (moves to the controller-manager in
//! issue 7): keeps every quota's `status.hard` (its `spec.hard`) and `status.used`
//! (recomputed from the watch caches plus charges not yet seen there) current, so that
//! deletions lower the usage. Runs when quotas or counted objects change, and every 5 s.

use std::time::Duration;

use crate::admission::Context;
use crate::admission::resource_quota::{self, Usage, quantities};
use crate::registry::{find_resource, meta};

/// One pass over every quota.
async fn reconcile(ctx: &Context) {
    let res = resource_quota::quotas();
    if !ctx.caches.get(res).is_ready() {
        return;
    }
    for quota in ctx.caches.objects(res, "") {
        let hard = quantities(quota.pointer("/spec/hard"));
        let ns = meta::namespace(&quota);
        let key = ctx.registry.key(res, ns, meta::name(&quota));
        let used = resource_quota::computed_usage(ctx, ns, &key, &hard);
        let same = |path: &str, want: &Usage| {
            let have = quantities(quota.pointer(path));
            have.len() == want.len() && have.iter().all(|(k, v)| want.get(k) == Some(v))
        };
        if same("/status/hard", &hard) && same("/status/used", &used) {
            continue;
        }
        // written over the cached version: a charge since then wins, and the next pass
        // looks again
        if let Err(e) = resource_quota::write_status(ctx, &quota, &hard, &used).await {
            tracing::debug!(quota = %key, error = %e.message, "updating quota usage");
        }
    }
}

/// Run forever.
pub async fn run(ctx: Context) {
    let watched = ["resourcequotas", "pods", "services", "persistentvolumeclaims", "configmaps", "secrets"];
    let mut receivers: Vec<_> =
        watched.iter().filter_map(|p| find_resource("", "v1", p)).map(|r| ctx.caches.get(r).subscribe()).collect();
    loop {
        reconcile(&ctx).await;
        let changed = futures::future::select_all(receivers.iter_mut().map(|r| Box::pin(r.changed())));
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // coalesce bursts
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
