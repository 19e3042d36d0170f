//! Host directories a pod mounts: hostPath volumes (with their type checks) and
//! persistent volume claims resolved to the hostPath or local path of their volume.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};

/// Check (and for the *OrCreate types, create) a hostPath of the given type.
pub fn check_host_path(path: &str, type_: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let fail = |what: &str| Err(format!("hostPath type check failed: {path} is not {what}"));
    match type_ {
        "DirectoryOrCreate" if !p.exists() => {
            std::fs::create_dir_all(p).map_err(|e| format!("failed to create directory {path}: {e}"))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        "FileOrCreate" if !p.exists() => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("failed to create directory {}: {e}", parent.display()))?;
            }
            std::fs::File::create(p).map_err(|e| format!("failed to create file {path}: {e}"))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
        }
        _ => {}
    }
    let meta = std::fs::metadata(p);
    let kind = meta.as_ref().map(|m| m.file_type());
    let ok = |f: fn(&std::fs::FileType) -> bool| kind.as_ref().is_ok_and(f);
    match type_ {
        "" => {}
        "Directory" | "DirectoryOrCreate" if !ok(|t| t.is_dir()) => return fail("a directory"),
        "File" | "FileOrCreate" if !ok(|t| t.is_file()) => return fail("a file"),
        "Socket" if !ok(|t| t.is_socket()) => return fail("a socket file"),
        "CharDevice" if !ok(|t| t.is_char_device()) => return fail("a character device"),
        "BlockDevice" if !ok(|t| t.is_block_device()) => return fail("a block device"),
        "Directory" | "DirectoryOrCreate" | "File" | "FileOrCreate" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(format!("hostPath type check failed: invalid type {other:?}")),
    }
    Ok(p.to_path_buf())
}

/// The host path behind a claim: claim → bound volume → its hostPath (the local-path
/// provisioner's kind) or local path.
pub async fn claim_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf, String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims
        .get_opt(claim)
        .await
        .map_err(|e| format!("error reading PVC {namespace}/{claim}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(format!(
            "PVC {namespace}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        ));
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get_opt(&volume_name)
        .await
        .map_err(|e| format!("error reading PV {volume_name}: {e}"))?
        .ok_or_else(|| format!("persistentvolume {volume_name:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = spec.host_path {
        return check_host_path(&hp.path, hp.type_.as_deref().unwrap_or(""));
    }
    if let Some(local) = spec.local {
        return check_host_path(&local.path, "Directory");
    }
    Err(format!("persistentvolume {volume_name}: only hostPath and local volumes are supported on this node"))
}
