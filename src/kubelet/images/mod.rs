//! Images without a registry: one OCI image-layout tarball, built from this machine's
//! static `/bin/busybox`, holding `busybox:latest` (every applet as a symlink, /etc/passwd
//! with root and nobody, /tmp) and the sandbox image `registry.k8s.io/pause:3.9` (the same
//! layer; PID 1 a shell that sleeps until SIGTERM/SIGINT). Built once per data directory
//! and reused while /bin/busybox is unchanged; `ctr images import` loads it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};

const BUSYBOX: &str = "/bin/busybox";
/// Bump when the image contents change, so cached tarballs are rebuilt.
const FORMAT: u32 = 1;
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The pause program: waits (without busy-looping) until told to stop, then exits 0.
const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// The images and the command each runs.
fn images() -> [(&'static str, Value); 2] {
    [
        ("docker.io/library/busybox:latest", json!({"Env": [PATH_ENV], "Cmd": ["sh"]})),
        (super::containerd::SANDBOX_IMAGE, json!({"Env": [PATH_ENV], "Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT]})),
    ]
}

/// The tarball under `dir`, built when missing or stale.
pub fn build_local(dir: &Path) -> anyhow::Result<PathBuf> {
    let tarball = dir.join("local-images.tar");
    let stamp_path = dir.join("local-images.stamp");
    let stamp = stamp()?;
    if tarball.exists() && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(tarball);
    }
    let started = std::time::Instant::now();
    let work = dir.join("build");
    let _ = std::fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs)?;
    let layout = work.join("layout");
    oci_layout(&rootfs, &layout)?;
    let partial = dir.join("local-images.tar.partial");
    tar(&layout, &partial, &["oci-layout", "index.json", "blobs"])?;
    std::fs::rename(&partial, &tarball)?;
    std::fs::write(&stamp_path, stamp)?;
    let _ = std::fs::remove_dir_all(&work);
    tracing::info!(tarball = %tarball.display(), elapsed_ms = started.elapsed().as_millis() as u64, "built the local images");
    Ok(tarball)
}

/// What the cached tarball was built from.
fn stamp() -> anyhow::Result<String> {
    let meta = std::fs::metadata(BUSYBOX).with_context(|| format!("{BUSYBOX} (apt-get install busybox-static)"))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    Ok(format!("{FORMAT} {} {}", meta.len(), mtime.as_secs()))
}

fn busybox_rootfs(root: &Path) -> anyhow::Result<()> {
    for d in ["bin", "etc", "root", "tmp", "var", "proc", "sys", "dev", "usr/bin"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
    let list = Command::new(BUSYBOX).arg("--list").output().context("busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// `tar` of `entries` in `dir`, reproducible (sorted, owned by root, epoch times).
fn tar(dir: &Path, out: &Path, entries: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@0", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .args(entries)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar of {} failed: {status}", dir.display());
    }
    Ok(())
}

/// A blob in the layout: its descriptor's digest and size.
fn put_blob(layout: &Path, bytes: &[u8]) -> anyhow::Result<(String, usize)> {
    let hex: String =
        ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

fn oci_layout(rootfs: &Path, layout: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let layer_tar = layout.join("layer.tar");
    tar(rootfs, &layer_tar, &["."])?;
    let (layer_digest, layer_size) = put_blob(layout, &std::fs::read(&layer_tar)?)?;
    std::fs::remove_file(&layer_tar)?;
    let arch = std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64");
    let mut manifests = Vec::new();
    for (name, image_config) in images() {
        let config = json!({
            "architecture": arch, "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ferrokube: /bin/busybox and its applets"}],
        });
        let (config_digest, config_size) = put_blob(layout, &serde_json::to_vec(&config)?)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        });
        let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest)?)?;
        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
        }));
    }
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))?,
    )?;
    Ok(())
}
