//! kubectl ≥1.30's `kubectl exec`/`attach` over WebSocket (`v5.channel.k8s.io`, also v4):
//! each binary message starts with its channel (0 stdin, 1 stdout, 2 stderr, 3 error,
//! 4 resize; v5 adds 255 + channel: that channel is closed). The kubelet ends the
//! WebSocket and speaks SPDY (`v4.channel.k8s.io`) to the runtime as a client, one SPDY
//! stream per channel, so v5's close of stdin reaches the command as end of input.

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{FLAG_FIN, Frame, HeaderCompressor};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// What the runtime is asked for on the SPDY side.
pub const SPDY_PROTOCOL: &str = V4;

const STDIN: u8 = 0;
const RESIZE: u8 = 4;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// Which streams the exec or attach has (its query).
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The SPDY streams opened for the channels: (channel, SPDY stream id, streamType).
fn streams(w: Wanted) -> Vec<(u8, u32, &'static str)> {
    let mut out = vec![(ERROR, 1, "error")];
    let mut next = 3;
    let mut add = |on: bool, channel: u8, kind: &'static str| {
        if on {
            out.push((channel, next, kind));
            next += 2;
        }
    };
    add(w.stdin, STDIN, "stdin");
    add(w.stdout, 1, "stdout");
    add(w.stderr && !w.tty, 2, "stderr");
    add(w.tty, RESIZE, "resize");
    out
}

/// Bridge one WebSocket to the runtime's upgraded SPDY connection until the command ends.
pub async fn bridge(socket: WebSocket, backend: TokioIo<hyper::upgrade::Upgraded>, wanted: Wanted) {
    let streams = streams(wanted);
    let (mut rd, mut wr) = tokio::io::split(backend);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(64);
    let mut headers = HeaderCompressor::default();
    let mut opening = Vec::new();
    for (_, id, kind) in &streams {
        let block = headers.block(&[("streamtype", kind)]);
        Frame::SynStream { stream: *id, flags: 0, headers: block }.encode(&mut opening);
    }
    if wr.write_all(&opening).await.is_err() {
        return;
    }
    // one writer: frames from both directions (stdin data, window updates, pings)
    let writer = tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            let mut bytes = Vec::new();
            frame.encode(&mut bytes);
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let (mut ws_tx, ws_rx) = socket.split();
    let upstream = tokio::spawn(from_websocket(ws_rx, frames_tx.clone(), streams.clone()));
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let (frame, used) = match Frame::decode(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = e, "bad SPDY frame from the runtime");
                    break 'read;
                }
            };
            buf.drain(..used);
            if !handle(frame, &streams, &frames_tx, &mut ws_tx).await {
                break 'read;
            }
        }
    }
    // a normal closure (1000): kubectl reads a close without a code as a failure
    let normal = axum::extract::ws::CloseFrame { code: 1000, reason: "".into() };
    let _ = ws_tx.send(Message::Close(Some(normal))).await;
    upstream.abort();
    drop(frames_tx);
    let _ = writer.await;
    tracing::debug!("exec over WebSocket ended");
}

/// One frame from the runtime; false when the exchange is over (the error stream done).
async fn handle(
    frame: Frame,
    streams: &[(u8, u32, &'static str)],
    frames: &mpsc::Sender<Frame>,
    ws: &mut futures::stream::SplitSink<WebSocket, Message>,
) -> bool {
    match frame {
        Frame::Data { stream, flags, data } => {
            let channel = streams.iter().find(|(_, id, _)| *id == stream).map(|(c, _, _)| *c);
            if !data.is_empty() {
                // grant the runtime what we consumed, so its send window never runs dry
                let delta = data.len() as u32;
                let _ = frames.send(Frame::WindowUpdate { stream, delta }).await;
                let _ = frames.send(Frame::WindowUpdate { stream: 0, delta }).await;
                if let Some(channel) = channel {
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(channel);
                    msg.extend_from_slice(&data);
                    if ws.send(Message::Binary(msg.into())).await.is_err() {
                        return false;
                    }
                }
            }
            // the runtime closes the error stream once it has said how the command ended
            !(channel == Some(ERROR) && flags & FLAG_FIN != 0)
        }
        Frame::RstStream { stream, .. } => stream != 1,
        Frame::GoAway { .. } => false,
        Frame::Ping { id } => frames.send(Frame::Ping { id }).await.is_ok(),
        Frame::SynReply { .. } | Frame::Settings | Frame::Headers { .. } | Frame::WindowUpdate { .. } => true,
        Frame::SynStream { stream, .. } => {
            // the runtime opens no streams of its own in this protocol
            frames.send(Frame::RstStream { stream, status: 3 }).await.is_ok()
        }
        Frame::Unknown { kind } => {
            tracing::debug!(kind, "unknown SPDY control frame ignored");
            true
        }
    }
}

/// kubectl's messages → SPDY DATA frames on the channel's stream; v5's close → FIN.
async fn from_websocket(
    mut ws: futures::stream::SplitStream<WebSocket>,
    frames: mpsc::Sender<Frame>,
    streams: Vec<(u8, u32, &'static str)>,
) {
    let stream_of = |channel: u8| streams.iter().find(|(c, _, _)| *c == channel).map(|(_, id, _)| *id);
    while let Some(Ok(msg)) = ws.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, rest)) = data.split_first() else { continue };
        let frame = match (channel, rest.first()) {
            (CLOSE, Some(&closed)) => match stream_of(closed) {
                Some(stream) => Frame::Data { stream, flags: FLAG_FIN, data: Vec::new() },
                None => continue,
            },
            (STDIN | RESIZE, _) if !rest.is_empty() => match stream_of(channel) {
                Some(stream) => Frame::Data { stream, flags: 0, data: rest.to_vec() },
                None => continue,
            },
            _ => continue,
        };
        if frames.send(frame).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_the_options() {
        let w = Wanted { stdin: true, stdout: true, stderr: true, tty: false };
        let kinds: Vec<_> = streams(w).iter().map(|(c, id, k)| (*c, *id, *k)).collect();
        assert_eq!(kinds, [(3, 1, "error"), (0, 3, "stdin"), (1, 5, "stdout"), (2, 7, "stderr")]);
        let tty = Wanted { stdin: true, stdout: true, stderr: true, tty: true };
        let kinds: Vec<_> = streams(tty).iter().map(|(_, _, k)| *k).collect();
        assert_eq!(kinds, ["error", "stdin", "stdout", "resize"], "no stderr with a tty");
    }
}
