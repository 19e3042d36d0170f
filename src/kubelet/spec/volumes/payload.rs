//! What configMap, secret and downwardAPI sources put in a volume (also as projected
//! sources): relative path → bytes and mode, with upstream's item and optional rules.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};

use super::writer::{File, Payload};
use crate::kubelet::spec::PodFacts;
use crate::kubelet::spec::env::{field_value, format_map, node_allocatable, resource_value};

/// Files mode 0644 unless defaultMode or the item says otherwise.
pub const DEFAULT_MODE: i32 = 0o644;

/// Keys and their bytes, or the keys listed as items (a missing key is an error unless
/// the source is optional).
fn from_keys(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(&str) -> String,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    let file =
        |bytes: &Vec<u8>, mode: Option<i32>| File { data: bytes.clone(), mode: mode.unwrap_or(default_mode) as u32 };
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        out.extend(data.iter().map(|(k, v)| (k.clone(), file(v, None))));
        return Ok(out);
    };
    for item in items {
        match data.get(&item.key) {
            Some(bytes) => {
                out.insert(item.path.clone(), file(bytes, item.mode));
            }
            None if optional => {}
            None => return Err(missing(&item.key)),
        }
    }
    Ok(out)
}

/// A ConfigMap's data and binaryData; `None` (missing and optional) is an empty volume.
pub fn config_map(
    cm: Option<&ConfigMap>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let Some(cm) = cm else { return Ok(Payload::new()) };
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    data.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    from_keys(data, items, default_mode, optional, |k| format!("configmap references non-existent config key: {k}"))
}

pub fn secret(
    secret: Option<&Secret>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, String> {
    let Some(secret) = secret else { return Ok(Payload::new()) };
    let data = secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    from_keys(data, items, default_mode, optional, |k| format!("references non-existent secret key: {k}"))
}

/// downwardAPI items: fieldRef (metadata incl. whole labels/annotations) and
/// resourceFieldRef (which must name its container).
pub fn downward_api(
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
) -> Result<Payload, String> {
    let mut out = Payload::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            match field.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                _ => field_value(pod, facts, field).map_err(|e| e.0)?,
            }
        } else if let Some(resource) = &item.resource_field_ref {
            resource_value(pod, None, resource, &node_allocatable()).map_err(|e| e.0)?
        } else {
            String::new()
        };
        let mode = item.mode.unwrap_or(default_mode) as u32;
        out.insert(item.path.clone(), File { data: value.into_bytes(), mode });
    }
    Ok(out)
}
