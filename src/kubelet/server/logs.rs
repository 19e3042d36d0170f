//! `/containerLogs/{ns}/{pod}/{container}`: container logs read from the CRI log files
//! (`<pod-logs-dir>/<ns>_<pod>_<uid>/<container>/<restartCount>.log`, one file per
//! restart, lines `<RFC3339Nano> stdout|stderr F|P <text>`), with upstream's options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// How often a followed log is polled for new lines, a new restart file, or the end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The query of a log request (upstream's PodLogOptions as the kubelet receives them).
#[derive(Debug, Default, Clone)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// From the query string; a value that does not parse is the request's 400.
    pub fn parse(query: Option<&str>) -> Result<LogOptions, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| e.to_string())?;
        let mut o = LogOptions::default();
        for (k, v) in &pairs {
            let flag = || v == "true" || v == "1";
            let number = |what: &str| v.parse::<i64>().map_err(|_| format!("{what}: {v:?} is not a number"));
            match k.as_str() {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => o.tail_lines = Some(number("tailLines")?.max(0) as usize),
                "limitBytes" => o.limit_bytes = Some(number("limitBytes")?.max(1) as usize),
                "sinceSeconds" => {
                    // a huge value means "from the beginning", never an overflow
                    let back = chrono::Duration::try_seconds(number("sinceSeconds")?.max(0));
                    o.since =
                        Some(back.and_then(|d| Utc::now().checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC));
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(v).map_err(|e| format!("sinceTime: {v:?}: {e}"))?;
                    o.since = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// One log message: a full line (partial pieces joined), with its first piece's time.
#[derive(Debug, PartialEq)]
pub struct Message {
    pub time: String,
    pub text: Vec<u8>,
}

/// Turns raw lines into messages, joining `P` (partial) pieces up to their `F`.
#[derive(Default)]
pub struct Parser {
    partial: Option<Message>,
}

impl Parser {
    /// One raw line without its newline; None while a message is incomplete or the line
    /// is not in the CRI format (skipped, as upstream skips what it cannot parse).
    pub fn push(&mut self, raw: &[u8]) -> Option<Message> {
        let mut parts = raw.splitn(4, |b| *b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?;
        let stream = parts.next()?;
        if stream != b"stdout" && stream != b"stderr" {
            return None;
        }
        let tag = parts.next()?;
        let text = parts.next().unwrap_or_default();
        let msg = self.partial.get_or_insert_with(|| Message { time: time.to_string(), text: Vec::new() });
        msg.text.extend_from_slice(text);
        if tag.first() == Some(&b'P') {
            return None;
        }
        let mut done = self.partial.take()?;
        done.text.push(b'\n');
        Some(done)
    }
}

/// Applies since, timestamps and limitBytes to messages; counts what it has written.
pub struct Renderer {
    opts: LogOptions,
    written: usize,
}

impl Renderer {
    pub fn new(opts: LogOptions) -> Renderer {
        Renderer { opts, written: 0 }
    }

    /// Whether limitBytes has been reached (the stream ends there).
    pub fn full(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    pub fn render(&mut self, msg: &Message, out: &mut Vec<u8>) {
        if self.full() || self.before_since(&msg.time) {
            return;
        }
        let mut bytes = Vec::with_capacity(msg.text.len() + 36);
        if self.opts.timestamps {
            bytes.extend_from_slice(msg.time.as_bytes());
            bytes.push(b' ');
        }
        bytes.extend_from_slice(&msg.text);
        let room = self.opts.limit_bytes.map_or(usize::MAX, |l| l - self.written);
        let take = bytes.len().min(room);
        out.extend_from_slice(&bytes[..take]);
        self.written += take;
    }

    fn before_since(&self, time: &str) -> bool {
        let Some(since) = self.opts.since else { return false };
        DateTime::parse_from_rfc3339(time).is_ok_and(|t| t.with_timezone(&Utc) < since)
    }
}

/// The log files of one container directory, by restart count, oldest first.
pub fn restart_files(container_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(container_dir) else { return Vec::new() };
    let mut files: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_suffix(".log")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// The pod's log directory, `<ns>_<pod>_<uid>` (a pod recreated under its old name has
/// a new uid, so its logs are apart).
pub fn pod_log_dir(logs_root: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    logs_root.join(format!("{namespace}_{pod}_{uid}"))
}

/// Whether the container still runs (a followed log ends when it stops).
pub type Alive = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;

/// Stream the log of the file chosen by `opts.previous` into `tx` (chunks of bytes).
/// Returns when done, when the receiver is gone, or at limitBytes.
pub async fn stream(container_dir: PathBuf, opts: LogOptions, mut alive: Alive, tx: mpsc::Sender<Bytes>) {
    let files = restart_files(&container_dir);
    let pick = if opts.previous { files.len().checked_sub(2) } else { files.len().checked_sub(1) };
    let Some((restart, path)) = pick.and_then(|i| files.get(i).cloned()) else { return };
    let follow = opts.follow && !opts.previous;
    let mut renderer = Renderer::new(opts.clone());
    let mut parser = Parser::default();
    let Ok(mut file) = tokio::fs::File::open(&path).await else { return };
    let mut raw = Vec::new();
    if file.read_to_end(&mut raw).await.is_err() {
        return;
    }
    let consumed = raw.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut messages: Vec<Message> = raw[..consumed].split(|b| *b == b'\n').filter_map(|l| parser.push(l)).collect();
    if let Some(n) = opts.tail_lines {
        messages.drain(..messages.len().saturating_sub(n));
    }
    let mut out = Vec::new();
    for m in &messages {
        renderer.render(m, &mut out);
    }
    if !send(&tx, out).await || renderer.full() || !follow {
        return;
    }
    let mut carry = raw[consumed..].to_vec();
    let mut pos = raw.len() as u64;
    let mut current = (restart, path);
    loop {
        let mut chunk = Vec::new();
        if file.seek(std::io::SeekFrom::Start(pos)).await.is_err() || file.read_to_end(&mut chunk).await.is_err() {
            return;
        }
        pos += chunk.len() as u64;
        if !chunk.is_empty() {
            carry.extend_from_slice(&chunk);
            let out = render_complete(&mut carry, &mut parser, &mut renderer);
            if !send(&tx, out).await || renderer.full() {
                return;
            }
            continue;
        }
        // caught up: a newer restart file means the container was restarted; carry on there
        if let Some(next) = restart_files(&container_dir).into_iter().find(|(n, _)| *n > current.0) {
            tracing::debug!(file = %next.1.display(), "following the log of the next restart");
            let Ok(f) = tokio::fs::File::open(&next.1).await else { return };
            (file, pos, current, parser) = (f, 0, next, Parser::default());
            carry.clear();
            continue;
        }
        if tx.is_closed() || !alive().await {
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Render the complete lines of `carry`, leaving an unfinished line in it.
fn render_complete(carry: &mut Vec<u8>, parser: &mut Parser, renderer: &mut Renderer) -> Vec<u8> {
    let consumed = carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for line in carry[..consumed].split(|b| *b == b'\n') {
        if let Some(m) = parser.push(line) {
            renderer.render(&m, &mut out);
        }
    }
    carry.drain(..consumed);
    out
}

async fn send(tx: &mpsc::Sender<Bytes>, out: Vec<u8>) -> bool {
    out.is_empty() || tx.send(Bytes::from(out)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.5Z stdout F one\n\
2026-01-01T00:00:02Z stderr P tw\n\
2026-01-01T00:00:02.1Z stderr F o\n\
garbage\n\
2026-01-01T00:00:03Z stdout F three\n";

    async fn read(dir: &Path, opts: LogOptions) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let alive: Alive = Box::new(|| Box::pin(async { false }));
        stream(dir.to_path_buf(), opts, alive, tx).await;
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    fn container_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0.log"), "2026-01-01T00:00:00Z stdout F before restart\n").unwrap();
        std::fs::write(dir.path().join("1.log"), LOG).unwrap();
        dir
    }

    #[tokio::test]
    async fn options_shape_the_output() {
        let dir = container_dir();
        let all = |o: LogOptions| read(dir.path(), o);
        assert_eq!(all(LogOptions::default()).await, "one\ntwo\nthree\n");
        assert_eq!(all(LogOptions { previous: true, ..Default::default() }).await, "before restart\n");
        assert_eq!(all(LogOptions { tail_lines: Some(2), ..Default::default() }).await, "two\nthree\n");
        assert_eq!(all(LogOptions { tail_lines: Some(0), ..Default::default() }).await, "");
        let ts = all(LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() }).await;
        assert_eq!(ts, "2026-01-01T00:00:03Z three\n");
        assert_eq!(all(LogOptions { limit_bytes: Some(6), ..Default::default() }).await, "one\ntw");
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:02Z").unwrap().with_timezone(&Utc);
        assert_eq!(all(LogOptions { since: Some(since), ..Default::default() }).await, "two\nthree\n");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(read(empty.path(), LogOptions::default()).await, "");
    }

    #[test]
    fn query_parsing() {
        let o =
            LogOptions::parse(Some("follow=true&tailLines=3&timestamps=true&sinceTime=2026-01-01T00:00:00Z")).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert!(o.since.is_some());
        assert!(LogOptions::parse(Some("tailLines=x")).is_err());
        let huge = LogOptions::parse(Some("sinceSeconds=9223372036854775807")).unwrap();
        assert_eq!(huge.since, Some(DateTime::<Utc>::MIN_UTC), "no overflow panic");
        assert!(LogOptions::parse(Some("sinceTime=yesterday")).is_err());
    }

    #[tokio::test]
    async fn follow_picks_up_new_lines_and_the_next_restart() {
        let dir = container_dir();
        let (tx, mut rx) = mpsc::channel(16);
        let alive_until = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive_until.clone();
        let alive: Alive = Box::new(move || {
            let v = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { v })
        });
        let opts = LogOptions { follow: true, tail_lines: Some(1), ..Default::default() };
        let task = tokio::spawn(stream(dir.path().to_path_buf(), opts, alive, tx));
        assert_eq!(rx.recv().await.unwrap(), "three\n");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("1.log")).unwrap();
        f.write_all(b"2026-01-01T00:00:04Z stdout F fo").unwrap();
        f.write_all(b"ur\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), "four\n");
        std::fs::write(dir.path().join("2.log"), "2026-01-01T00:00:05Z stdout F restarted\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), "restarted\n");
        alive_until.store(false, std::sync::atomic::Ordering::SeqCst);
        task.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends when the container stops");
    }
}
