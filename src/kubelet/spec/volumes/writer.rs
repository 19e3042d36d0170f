//! Upstream's atomic writer: a volume's files live in a timestamped directory
//! (`..2026_11_24_09_15_02.123456789`), `..data` is a symlink to it, and each top-level
//! name is a symlink into `..data`. An update writes a new directory and swaps `..data`
//! with one rename, so a reader sees either all old or all new files, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, File>;

/// A path a payload may use: relative, no `..` component, not starting with `..`
/// (those names are the writer's own).
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if path.len() > 4096 {
        return Err(format!("invalid path: must be less than or equal to 4096 characters: {path}"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("invalid path: must be relative path: {path}"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("invalid path: must not contain '..': {path}"));
    }
    if path.starts_with("..") {
        return Err(format!("invalid path: must not start with '..': {path}"));
    }
    Ok(())
}

/// Make `dir` hold exactly `payload`; files get `group` (fsGroup) when given. Returns
/// whether anything changed.
pub fn write(dir: &Path, payload: &Payload, group: Option<u32>) -> io::Result<bool> {
    for path in payload.keys() {
        validate_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    std::fs::create_dir_all(dir)?;
    let old = std::fs::read_link(dir.join(DATA_DIR)).ok();
    if let Some(old) = &old
        && same_content(&dir.join(old), payload)?
    {
        link_top_level(dir, payload)?;
        return Ok(false);
    }
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S").to_string();
    let new_name = format!("{stamp}.{}", fastrand::u64(100_000_000..1_000_000_000));
    let new_dir = dir.join(&new_name);
    std::fs::create_dir(&new_dir)?;
    std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))?;
    if let Err(e) = write_files(&new_dir, payload, group) {
        let _ = std::fs::remove_dir_all(&new_dir);
        return Err(e);
    }
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&new_name, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_DIR))?;
    link_top_level(dir, payload)?;
    remove_stale_links(dir, payload)?;
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

fn write_files(root: &Path, payload: &Payload, group: Option<u32>) -> io::Result<()> {
    for (path, file) in payload {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, &file.data)?;
        let mut mode = file.mode & 0o7777;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&target, None, Some(gid))?;
            // the group must be able to read what it owns (upstream's volume ownership)
            mode |= 0o440;
        }
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Whether `data_dir` already holds exactly `payload` (bytes and modes; only the
/// permission bits a payload can ask for are compared).
fn same_content(data_dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut present = BTreeSet::new();
    collect_files(data_dir, data_dir, &mut present)?;
    if present.len() != payload.len() || !payload.keys().all(|k| present.contains(k)) {
        return Ok(false);
    }
    for (path, file) in payload {
        let target = data_dir.join(path);
        let mode = std::fs::metadata(&target)?.permissions().mode() & 0o777;
        if std::fs::read(&target)? != file.data || mode & file.mode != file.mode & 0o777 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn top_level(payload: &Payload) -> BTreeSet<String> {
    payload.keys().filter_map(|p| p.split('/').next()).map(str::to_string).collect()
}

/// `name → ..data/name` for each top-level name of the payload.
fn link_top_level(dir: &Path, payload: &Payload) -> io::Result<()> {
    for name in top_level(payload) {
        let link = dir.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(&name), &link)?;
        }
    }
    Ok(())
}

/// Drop the user-visible links of names the payload no longer has.
fn remove_stale_links(dir: &Path, payload: &Payload) -> io::Result<()> {
    let wanted = top_level(payload);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && entry.file_type()?.is_symlink() && !wanted.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
