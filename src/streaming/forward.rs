//! Forward one request over a fresh backend connection as HTTP/1.1. A plain answer
//! streams back (a `follow` log is never buffered); a `101 Switching Protocols` is
//! answered with the backend's headers and then bytes are copied both ways, so neither
//! end's protocol (SPDY, WebSocket) needs parsing here. A non-101 answer to an upgrade
//! is passed through as is: kubectl falls back from WebSocket to SPDY on it.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Uri};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1), dropped unless
/// the request is an upgrade, which needs Connection and Upgrade to reach the backend.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Credentials of the caller that must not travel on: the backend is reached with the
/// forwarder's own identity (upstream's authentication filter drops these too).
const CALLER_CREDENTIALS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Whether the request asks for a protocol upgrade (`Connection: Upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// The request headers the backend gets: the caller's, less hop-by-hop ones (kept for an
/// upgrade), caller credentials and impersonation, with the backend's Host.
pub fn outgoing_headers(incoming: &HeaderMap, host: &str) -> HeaderMap {
    let upgrade = is_upgrade(incoming);
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let n = name.as_str();
        let hop = HOP_BY_HOP.contains(&n) && !(upgrade && (n == "connection" || n == "upgrade"));
        if hop || CALLER_CREDENTIALS.contains(&n) || n.starts_with("impersonate-") || n == "host" {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        out.insert(header::HOST, v);
    }
    out
}

/// Send `req` to `path_and_query` over `io` (a fresh connection to the backend, already
/// authenticated by its TLS client certificate if any) and answer with what comes back.
pub async fn forward<IO>(mut req: Request<Body>, io: IO, path_and_query: &str, host: &str) -> Response
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let client_upgrade = is_upgrade(req.headers()).then(|| req.extensions_mut().remove::<OnUpgrade>()).flatten();
    let uri: Uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(e) => return bad_gateway(format!("backend path {path_and_query:?}: {e}")),
    };
    let headers = outgoing_headers(req.headers(), host);
    let method = req.method().clone();
    let mut out = Request::builder().method(method).uri(uri).body(req.into_body()).unwrap_or_default();
    *out.headers_mut() = headers;
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => return bad_gateway(format!("backend handshake: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended with an error");
        }
    });
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("backend request: {e}")),
    };
    if client_upgrade.is_some() {
        let protocol =
            resp.headers().get("sec-websocket-protocol").or_else(|| resp.headers().get("x-stream-protocol-version"));
        tracing::debug!(
            status = resp.status().as_u16(),
            ?protocol,
            path = path_and_query,
            "backend answered the upgrade"
        );
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(Body::new);
    }
    let Some(client_upgrade) = client_upgrade else {
        // the backend upgraded a request the caller cannot follow (HTTP/2 or no
        // Connection: Upgrade): nothing to splice
        return bad_gateway("the backend switched protocols on a request that did not ask to".into());
    };
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = resp.headers().clone();
    tokio::spawn(splice(client_upgrade, backend_upgrade));
    answer
}

/// Copy bytes both ways between the two upgraded connections until both ends close.
async fn splice(client: OnUpgrade, backend: OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => tracing::debug!(bytes_up = up, bytes_down = down, "upgraded stream closed"),
        Err(e) => tracing::debug!(error = %e, "upgraded stream ended with an error"),
    }
}

/// A backend that cannot be reached or answered nonsense: upstream's 502 wording is
/// `error trying to reach service: ...` as a metav1.Status.
pub fn bad_gateway(why: String) -> Response {
    tracing::warn!(error = %why, "proxy to the backend failed");
    status_response(StatusCode::BAD_GATEWAY, "", &format!("error trying to reach service: {why}"))
}

/// A metav1.Status body with `code`, `reason` and `message`.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut resp = (code, serde_json::to_vec(&status).unwrap_or_default()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_headers_survive_and_credentials_do_not() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("SPDY/3.1"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        h.insert("x-stream-protocol-version", HeaderValue::from_static("v4.channel.k8s.io"));
        assert!(is_upgrade(&h));
        let out = outgoing_headers(&h, "127.0.0.1:10250");
        assert_eq!(out["upgrade"], "SPDY/3.1");
        assert_eq!(out["host"], "127.0.0.1:10250");
        assert!(!out.contains_key("authorization") && !out.contains_key("impersonate-user"));
        h.remove("upgrade");
        assert!(!is_upgrade(&h));
        assert!(!outgoing_headers(&h, "x").contains_key("connection"), "hop-by-hop without an upgrade");
    }
}
