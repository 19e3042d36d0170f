//! Where audit lines go: a bounded channel to one writer thread, so request handling
//! never waits on the disk. A full channel drops the line (counted and logged), as
//! upstream's blocking-with-buffer backend would rather block; here the request wins.
//! Files rotate by size (`--audit-log-maxsize` MB) into `<name>-<timestamp>.<ext>`, keeping
//! `--audit-log-maxbackup` files no older than `--audit-log-maxage` days (0: no limit).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer before new ones are dropped.
const BACKLOG: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// A file, or `-` for standard output.
    pub path: PathBuf,
    pub max_size_mb: u64,
    pub max_backup: usize,
    pub max_age_days: u64,
}

pub struct Sink {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

impl Sink {
    /// Open the log (an unwritable file is a start-up error) and start its writer.
    pub fn open(options: &LogOptions) -> anyhow::Result<Sink> {
        let out = if options.path.as_os_str() == "-" { Output::Stdout } else { Output::File(Rotating::open(options)?) };
        let (tx, rx) = sync_channel(BACKLOG);
        std::thread::Builder::new().name("audit-log".into()).spawn(move || write_all(&rx, out))?;
        Ok(Sink { tx, dropped: AtomicU64::new(0) })
    }

    /// Queue a line; never blocks.
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(dropped = n, "audit log backlog full: events dropped");
            }
        }
    }
}

enum Output {
    Stdout,
    File(Rotating),
}

impl Output {
    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Output::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Output::File(f) => f.write(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout => std::io::stdout().lock().flush(),
            Output::File(f) => f.file.flush(),
        }
    }
}

/// Write what arrives, flushing whenever the channel runs dry.
fn write_all(rx: &Receiver<String>, mut out: Output) {
    while let Ok(line) = rx.recv() {
        let mut result = out.write(&line);
        while let Ok(line) = rx.try_recv() {
            result = result.and(out.write(&line));
        }
        if let Err(e) = result.and(out.flush()) {
            tracing::warn!(error = %e, "writing the audit log");
        }
    }
}

struct Rotating {
    options: LogOptions,
    file: BufWriter<File>,
    size: u64,
}

impl Rotating {
    fn open(options: &LogOptions) -> anyhow::Result<Rotating> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&options.path)
            .map_err(|e| anyhow::anyhow!("opening --audit-log-path {}: {e}", options.path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Rotating { options: options.clone(), file: BufWriter::new(file), size })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let limit = self.options.max_size_mb * 1024 * 1024;
        if limit > 0 && self.size > 0 && self.size + line.len() as u64 > limit {
            self.rotate()?;
        }
        self.size += line.len() as u64;
        self.file.write_all(line)
    }

    /// Move the full file aside under a timestamped name and start a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let path = &self.options.path;
        std::fs::rename(path, backup_name(path, chrono::Utc::now()))?;
        self.file = BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?);
        self.size = 0;
        prune(&self.options);
        Ok(())
    }
}

/// `audit.log` → `audit-2026-11-24T03-04-05.678.log` (the layout of lumberjack, which
/// upstream uses).
fn backup_name(path: &Path, now: chrono::DateTime<chrono::Utc>) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}-{}{ext}", now.format("%Y-%m-%dT%H-%M-%S%.3f")))
}

/// Remove backups beyond `max_backup` (newest kept) and older than `max_age_days`.
fn prune(options: &LogOptions) {
    let path = &options.path;
    let stem = path.file_stem().map(|s| format!("{}-", s.to_string_lossy())).unwrap_or_default();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut backups: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&stem)) && p != path)
        .collect();
    backups.sort();
    backups.reverse();
    let max_age = Duration::from_secs(options.max_age_days * 86_400);
    for (i, backup) in backups.iter().enumerate() {
        let too_many = options.max_backup > 0 && i >= options.max_backup;
        let age = std::fs::metadata(backup)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        let too_old = options.max_age_days > 0 && age.is_some_and(|a| a > max_age);
        if too_many || too_old {
            let _ = std::fs::remove_file(backup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_rotate_by_size_and_keep_max_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let options = LogOptions { path: path.clone(), max_size_mb: 1, max_backup: 2, max_age_days: 0 };
        let mut log = Rotating::open(&options).unwrap();
        let line = vec![b'x'; 300 * 1024];
        for _ in 0..16 {
            log.write(&line).unwrap();
            // distinct backup names: they carry the time in milliseconds
            std::thread::sleep(Duration::from_millis(2));
        }
        log.file.flush().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024 * 1024);
        assert!(
            names.iter().all(|n| n == "audit.log" || (n.starts_with("audit-") && n.ends_with(".log"))),
            "{names:?}"
        );
    }
}
