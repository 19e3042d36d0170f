//! Reading a watch response one JSON event line at a time; shared by the watch tests
//! (tests/watch.rs through `common`, tests/watch_cache.rs by path).

use std::time::Duration;

use serde_json::Value;

pub struct WatchLines {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl WatchLines {
    pub fn new(resp: reqwest::Response) -> WatchLines {
        WatchLines { resp, buf: Vec::new() }
    }

    /// The next event, or None when the stream ended or nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(&line)
                        .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {}", String::from_utf8_lossy(&line))),
                );
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}
