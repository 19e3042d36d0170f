//! Admission: the plug-ins every write passes after authorization, as upstream's
//! admission chain. The generic write path (`registry::rest`) runs the mutating hooks
//! after defaulting and before validation, and the validating hooks after validation,
//! for create, update (PUT, patch, apply, subresources) and delete; the create-only
//! actions (pods/binding, pods/eviction, serviceaccounts/token) are admitted as creates
//! of their subresource before they act.
//!
//! A plug-in is one file here and one entry in [`PLUGINS`]; `handles` is asked first
//! and must be cheap (a match on the resource), so plug-ins that do not apply cost
//! nothing. Writes the server makes itself (bootstrap, namespace cleanup, status
//! upkeep) carry no [`Admit`] and skip admission.

pub mod default_storage_class;
pub mod default_toleration_seconds;
pub mod limit_ranger;
pub mod namespace_lifecycle;
pub mod node_restriction;
pub mod priority;
pub mod resource_quota;
pub mod service_account;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::auth::request::UserInfo;
use crate::handlers::status::{ApiError, ApiResult};
use crate::registry::ResourceDef;
use crate::registry::rest::Registry;
use crate::watch::Caches;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// Who writes, and through which subresource: what a request hands the write path so
/// that admission runs. Absent for the server's own writes.
#[derive(Clone, Debug)]
pub struct Admit {
    pub user: Arc<UserInfo>,
    /// "" for the main resource; "status", "scale", "binding", "eviction", "token".
    pub subresource: &'static str,
}

impl Admit {
    pub fn new(user: Arc<UserInfo>, subresource: &'static str) -> Admit {
        Admit { user, subresource }
    }
}

/// What a plug-in decides on (upstream's admission.Attributes).
pub struct Attributes<'a> {
    pub operation: Operation,
    pub res: &'static ResourceDef,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The object's name (empty for a create with generateName until it is chosen).
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub dry_run: bool,
}

impl Attributes<'_> {
    /// Whether the request is about `group`/`plural` (any subresource).
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.res.plural == plural && self.res.group == group
    }

    /// Upstream's admission.NewForbidden: `<resource> "<name>" is forbidden: <why>`
    /// (`<resource> is forbidden: <why>` while the name is not known).
    pub fn forbidden(&self, why: &str) -> ApiError {
        match self.name {
            "" => ApiError::forbidden_request(self.res.group, self.res.plural, "", why),
            name => ApiError::forbidden(self.res.group, self.res.plural, name, why),
        }
    }
}

/// The object under admission: the new object (create, update) or the object being
/// deleted (delete), and the object before the update.
pub struct Objects<'a> {
    pub obj: &'a mut Value,
    pub old: Option<&'a Value>,
}

/// What plug-ins may read and write: the watch caches and the registry (whose own
/// writes skip admission).
#[derive(Clone)]
pub struct Context {
    pub registry: Registry,
    pub caches: Caches,
    /// ResourceQuota charges not yet visible in the caches, and the namespaces whose
    /// quotas or limit ranges are too fresh to trust the caches for.
    pub quota: Arc<resource_quota::Ledger>,
}

/// One admission plug-in. Both hooks default to allowing everything.
pub trait Plugin: Send + Sync {
    /// Cheap: whether the plug-in has anything to say about this request.
    fn handles(&self, a: &Attributes) -> bool;

    /// Change the object (defaults a plug-in owns); may also refuse.
    fn mutate<'a>(&'a self, _a: &'a Attributes<'a>, _o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Accept or refuse the final object.
    fn validate<'a>(&'a self, _a: &'a Attributes<'a>, _o: &'a Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A plug-in as `--enable-admission-plugins` names it.
pub struct PluginDef {
    pub name: &'static str,
    /// On unless disabled (upstream's default set, plus NodeRestriction as kubeadm).
    pub default_on: bool,
    pub build: fn(&Context) -> Box<dyn Plugin>,
}

/// Every plug-in, in upstream's order (the order of its recommended plug-in list).
pub static PLUGINS: &[PluginDef] = &[
    PluginDef { name: "NamespaceLifecycle", default_on: true, build: namespace_lifecycle::build },
    PluginDef { name: "LimitRanger", default_on: true, build: limit_ranger::build },
    PluginDef { name: "ServiceAccount", default_on: true, build: service_account::build },
    PluginDef { name: "NodeRestriction", default_on: true, build: node_restriction::build },
    PluginDef { name: "Priority", default_on: true, build: priority::build },
    PluginDef { name: "DefaultTolerationSeconds", default_on: true, build: default_toleration_seconds::build },
    PluginDef { name: "DefaultStorageClass", default_on: true, build: default_storage_class::build },
    PluginDef { name: "ResourceQuota", default_on: true, build: resource_quota::build },
];

/// The plug-ins in force, in [`PLUGINS`] order.
#[derive(Default)]
pub struct Chain {
    plugins: Vec<(&'static str, Box<dyn Plugin>)>,
}

impl Chain {
    /// The default set plus `enable`, minus `disable`; an unknown name is an error.
    pub fn new(ctx: &Context, enable: &[String], disable: &[String]) -> anyhow::Result<Chain> {
        let names = enabled_names(enable, disable)?;
        let plugins = PLUGINS.iter().filter(|p| names.contains(&p.name)).map(|p| (p.name, (p.build)(ctx))).collect();
        Ok(Chain { plugins })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|(n, _)| *n).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The mutating phase: every plug-in that handles the request, in order.
    pub async fn mutate(&self, a: &Attributes<'_>, o: &mut Objects<'_>) -> ApiResult<()> {
        for (_, p) in &self.plugins {
            if p.handles(a) {
                p.mutate(a, o).await?;
            }
        }
        Ok(())
    }

    /// The validating phase.
    pub async fn validate(&self, a: &Attributes<'_>, o: &Objects<'_>) -> ApiResult<()> {
        for (_, p) in &self.plugins {
            if p.handles(a) {
                p.validate(a, o).await?;
            }
        }
        Ok(())
    }

    /// Both phases on an object that is not stored (the create-only actions).
    pub async fn admit(&self, a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        let mut o = Objects { obj, old: None };
        self.mutate(a, &mut o).await?;
        self.validate(a, &o).await
    }
}

/// The names in force: the defaults, plus `enable`, minus `disable`.
pub fn enabled_names(enable: &[String], disable: &[String]) -> anyhow::Result<Vec<&'static str>> {
    for name in enable.iter().chain(disable).filter(|n| !n.is_empty()) {
        if !PLUGINS.iter().any(|p| p.name == name) {
            let known: Vec<&str> = PLUGINS.iter().map(|p| p.name).collect();
            anyhow::bail!("unknown admission plugin {name:?}; known plugins: {}", known.join(", "));
        }
    }
    Ok(PLUGINS
        .iter()
        .filter(|p| (p.default_on || enable.iter().any(|n| n == p.name)) && !disable.iter().any(|n| n == p.name))
        .map(|p| p.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_and_disabling_by_upstream_name() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let all = enabled_names(&[], &[]).unwrap();
        let want = [
            "NamespaceLifecycle",
            "LimitRanger",
            "ServiceAccount",
            "NodeRestriction",
            "Priority",
            "DefaultTolerationSeconds",
            "DefaultStorageClass",
            "ResourceQuota",
        ];
        assert_eq!(all, want);
        let off = ["ServiceAccount", "ResourceQuota", "DefaultTolerationSeconds", "DefaultStorageClass"];
        let some = enabled_names(&s(&["ServiceAccount"]), &s(&off)).unwrap();
        assert_eq!(some, ["NamespaceLifecycle", "LimitRanger", "NodeRestriction", "Priority"]);
        let err = enabled_names(&s(&["PodSecurity2"]), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown admission plugin \"PodSecurity2\""), "{err}");
    }
}
