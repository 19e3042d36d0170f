//! Port-forward over WebSocket as kubectl ≥1.31 speaks it: the subprotocol
//! `SPDY/3.1+portforward.k8s.io` carries an ordinary SPDY port-forward connection inside
//! WebSocket binary messages. The kubelet opens the SPDY connection to the runtime itself
//! and relays bytes between the two; no SPDY is parsed.

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use http::HeaderMap;
use http::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The WebSocket subprotocol of tunnelled port-forwarding.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY stream protocol the runtime serves port-forwarding with.
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Whether the request is a WebSocket upgrade offering `protocol`.
pub fn offers(headers: &HeaderMap, protocol: &str) -> bool {
    let websocket = headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    websocket
        && headers
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == protocol)
}

/// Open an upgraded connection to the runtime's streaming server at `url` (plain HTTP on
/// loopback), asking for SPDY/3.1 with `stream_protocol`; the connection or why not.
pub async fn dial_spdy(url: &str, stream_protocol: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("runtime streaming URL {url:?}: {e}"))?;
    let authority = uri.authority().map(|a| a.to_string()).ok_or_else(|| format!("{url:?} has no host"))?;
    let tcp = TcpStream::connect(&authority).await.map_err(|e| format!("dialing {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    let req = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, &authority)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", stream_protocol)
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let mut resp = sender.send_request(req).await.map_err(|e| format!("upgrade request: {e}"))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the runtime answered the upgrade with {}", resp.status()));
    }
    let upgraded = hyper::upgrade::on(&mut resp).await.map_err(|e| format!("upgrade: {e}"))?;
    Ok(TokioIo::new(upgraded))
}

/// Answer a tunnelled port-forward: SPDY to the runtime first (so a failure is still an
/// HTTP answer kubectl can report), then the WebSocket handshake, then relay.
pub async fn port_forward(
    ws: axum::extract::ws::WebSocketUpgrade,
    url: &str,
) -> Result<axum::response::Response, String> {
    let backend = dial_spdy(url, PORT_FORWARD_PROTOCOL).await?;
    let ws = ws.protocols([PORT_FORWARD_TUNNEL]);
    Ok(ws.on_upgrade(move |socket| relay(socket, backend)))
}

/// Copy WebSocket binary messages to the backend and the backend's bytes back as binary
/// messages, until either side closes.
async fn relay(socket: WebSocket, backend: TokioIo<hyper::upgrade::Upgraded>) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(backend);
    let up = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    // either direction ending ends the tunnel: kubectl closes the WebSocket when done
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    tracing::debug!("port-forward tunnel closed");
}

/// `Sec-WebSocket-Protocol` values offered, for logs.
pub fn offered(headers: &HeaderMap) -> Vec<&str> {
    headers.get_all(http::header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v: &HeaderValue| v.to_str().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_offers() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-protocol", HeaderValue::from_static("SPDY/3.1+portforward.k8s.io, v4.channel.k8s.io"));
        assert!(offers(&h, PORT_FORWARD_TUNNEL));
        assert!(!offers(&h, "v5.channel.k8s.io"));
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        assert!(!offers(&h, PORT_FORWARD_TUNNEL));
    }
}
