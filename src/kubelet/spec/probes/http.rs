//! The HTTP GET that httpGet probes and hooks make, as upstream's prober does it: HTTP/1.1
//! with `User-Agent: kube-probe/<version>`, TLS without certificate checks for HTTPS,
//! redirects followed (up to 10) while they stay on the same host; a redirect elsewhere
//! ends the probe with the redirect's own status.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handlers::kubelet_proxy::AnyServerCert;

const USER_AGENT: &str = "kube-probe/1.33";
const MAX_REDIRECTS: usize = 10;
/// How much of the response head is read before giving up on it.
const MAX_HEAD: usize = 64 * 1024;

/// Where to send the GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Target {
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// The final status code, following same-host redirects; Err is the connection or
/// protocol failure, worded as upstream (`Get "<url>": <cause>`).
pub async fn get(target: &Target) -> Result<u16, String> {
    let mut current = target.clone();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = once(&current).await.map_err(|e| format!("Get {:?}: {e}", current.url()))?;
        let Some(next) = location.filter(|_| (300..400).contains(&status)).and_then(|l| redirect(&current, &l)) else {
            return Ok(status);
        };
        if next.host != current.host {
            tracing::debug!(from = %current.url(), to = %next.url(), "probe terminated redirects");
            return Ok(status);
        }
        current = next;
    }
    Err(format!("Get {:?}: stopped after {MAX_REDIRECTS} redirects", current.url()))
}

/// Where a Location header points, relative to the request it answered.
fn redirect(from: &Target, location: &str) -> Option<Target> {
    let (https, rest) = match location.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some(_) => return None,
        None => {
            let path = if location.starts_with('/') { location.to_string() } else { format!("/{location}") };
            return Some(Target { path, ..from.clone() });
        }
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.rsplit_once(':').filter(|(h, p)| !h.ends_with(']') || !p.is_empty()) {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()?),
        _ => (authority, if https { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Some(Target { https, host, port, path: path.to_string(), headers: from.headers.clone() })
}

async fn once(t: &Target) -> Result<(u16, Option<String>), String> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await.map_err(|e| dial_error(&t.host, t.port, &e))?;
    if !t.https {
        return exchange(tcp, t).await;
    }
    let server_name = rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    exchange(tls, t).await
}

/// Go's wording for a failed dial, which upstream's messages carry.
pub fn dial_error(host: &str, port: u16, e: &std::io::Error) -> String {
    let cause = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {host}:{port}: {cause}")
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, t: &Target) -> Result<(u16, Option<String>), String> {
    let has = |name: &str| t.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("GET {} HTTP/1.1\r\n", if t.path.is_empty() { "/" } else { &t.path });
    if !has("host") {
        head.push_str(&format!("Host: {}:{}\r\n", t.host, t.port));
    }
    if !has("user-agent") {
        head.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        head.push_str("Accept: */*\r\n");
    }
    for (k, v) in &t.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_head(&String::from_utf8_lossy(&buf))
}

/// The status code and Location of a response head.
fn parse_head(text: &str) -> Result<(u16, Option<String>), String> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed HTTP response {:?}", status_line.chars().take(40).collect::<String>()))?;
    let location = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_string());
    Ok((status, location))
}

/// Upstream probes skip certificate verification (InsecureSkipVerify).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a probe's attempt ran out of time (worded as upstream's i/o timeout).
pub async fn within<T>(timeout: Duration, what: &str, f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| Err(format!("{what}: i/o timeout")))
}
