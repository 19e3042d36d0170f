//! DefaultStorageClass: a new PersistentVolumeClaim that names no storage class gets
//! the cluster's default one (the StorageClass annotated
//! `storageclass.kubernetes.io/is-default-class: "true"`; the newest when several are),
//! so claims bind through the default provisioner as upstream's do.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Attributes, Context, Objects, Operation, Plugin};
use crate::handlers::status::ApiResult;
use crate::registry::{builtin, meta};

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

pub struct DefaultStorageClass {
    ctx: Context,
}

pub fn build(ctx: &Context) -> Box<dyn Plugin> {
    Box::new(DefaultStorageClass { ctx: ctx.clone() })
}

impl DefaultStorageClass {
    fn default_class(&self) -> Option<String> {
        let classes = self.ctx.caches.objects(builtin("storage.k8s.io", "v1", "storageclasses"), "");
        classes
            .into_iter()
            .filter(|c| {
                c.pointer(&format!("/metadata/annotations/{}", DEFAULT_CLASS_ANNOTATION.replace('/', "~1")))
                    == Some(&json!("true"))
            })
            .max_by(|a, b| meta::meta_str(a, "creationTimestamp").cmp(meta::meta_str(b, "creationTimestamp")))
            .map(|c| meta::name(&c).to_string())
    }
}

impl Plugin for DefaultStorageClass {
    fn handles(&self, a: &Attributes) -> bool {
        a.operation == Operation::Create && a.is("", "persistentvolumeclaims") && a.subresource.is_empty()
    }

    fn mutate<'a>(&'a self, _a: &'a Attributes<'a>, o: &'a mut Objects<'_>) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            // an explicit class, even "", is the claim's choice
            if o.obj.pointer("/spec/storageClassName").is_some_and(|v| !v.is_null()) {
                return Ok(());
            }
            if let Some(class) = self.default_class()
                && let Some(spec) = o.obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("storageClassName".into(), json!(class));
            }
            Ok(())
        })
    }
}
