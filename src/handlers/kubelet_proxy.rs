//! The subresources that reach a node or a pod: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` (to the pod's kubelet, over HTTPS with the API server's kubelet
//! client certificate), `pods/proxy` (to the pod's IP), `nodes/proxy` (to the kubelet)
//! and `services/proxy` (to an endpoint, `service_proxy.rs`).
//! The request is checked as upstream checks it (the pod, its node, the container) and
//! then forwarded by `streaming::forward`, upgrades (SPDY, WebSocket) included.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::AppState;
use super::path::ResourcePath;
use super::status::{ApiError, ApiResult};
use crate::registry::builtin;
use crate::streaming::forward;

/// Upstream's `--kubelet-preferred-address-types` default.
pub const DEFAULT_ADDRESS_TYPES: &str = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP";
/// A node that publishes no kubelet port is reached on the default one.
const DEFAULT_KUBELET_PORT: i64 = 10250;
/// The most of a kubelet's error body that goes into the Status message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How the API server reaches kubelets.
pub struct KubeletClient {
    tls: TlsConnector,
    address_types: Vec<String>,
}

impl KubeletClient {
    /// From `--kubelet-client-certificate`/`-key` (the identity kubelets authorize),
    /// `--kubelet-certificate-authority` (without it, as upstream, the kubelet's serving
    /// certificate is not verified) and `--kubelet-preferred-address-types`.
    pub fn new(
        cert_key: Option<(PathBuf, PathBuf)>,
        ca: Option<PathBuf>,
        address_types: &[String],
    ) -> anyhow::Result<KubeletClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                    roots.add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let mut config = match cert_key {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(&cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .with_context(|| format!("reading {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        // upgrades (SPDY, WebSocket) are HTTP/1.1 only
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let address_types = address_types.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
        Ok(KubeletClient { tls: TlsConnector::from(Arc::new(config)), address_types })
    }

    async fn connect(&self, host: &str, port: u16) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.tls.connect(name, tcp).await
    }

    /// The node's address of the first preferred type that it has.
    fn address(&self, node: &Value) -> Option<String> {
        let addresses = node["status"]["addresses"].as_array()?;
        self.address_types.iter().find_map(|t| {
            addresses.iter().find(|a| a["type"] == t.as_str()).and_then(|a| a["address"].as_str()).map(str::to_string)
        })
    }
}

/// Accepts any kubelet serving certificate (still checking the handshake's signatures),
/// what upstream does without `--kubelet-certificate-authority` (and what its prober does
/// for HTTPS probes: the kubelet's httpGet probes use it too).
#[derive(Debug)]
pub(crate) struct AnyServerCert(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which of these subresources the path names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sub {
    Log,
    Exec,
    Attach,
    PortForward,
    PodProxy,
    NodeProxy,
    ServiceProxy,
}

impl Sub {
    pub fn of(p: &ResourcePath) -> Option<Sub> {
        if !p.group.is_empty() || p.version != "v1" || p.name.is_none() {
            return None;
        }
        match (p.resource.as_str(), p.namespace.is_some(), p.subresource.as_deref()?) {
            ("pods", true, "log") => Some(Sub::Log),
            ("pods", true, "exec") => Some(Sub::Exec),
            ("pods", true, "attach") => Some(Sub::Attach),
            ("pods", true, "portforward") => Some(Sub::PortForward),
            ("pods", true, "proxy") => Some(Sub::PodProxy),
            ("nodes", false, "proxy") => Some(Sub::NodeProxy),
            ("services", true, "proxy") => Some(Sub::ServiceProxy),
            _ => None,
        }
    }
}

pub async fn handle(state: &AppState, p: ResourcePath, sub: Sub, req: Request) -> Response {
    let started = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let response = match route(state, &p, sub, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(
        path,
        ?sub,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "proxied request"
    );
    response
}

async fn route(state: &AppState, p: &ResourcePath, sub: Sub, req: Request) -> ApiResult<Response> {
    let allowed = match sub {
        Sub::Log => req.method() == http::Method::GET,
        Sub::Exec | Sub::Attach | Sub::PortForward => matches!(*req.method(), http::Method::GET | http::Method::POST),
        Sub::PodProxy | Sub::NodeProxy | Sub::ServiceProxy => true,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    let name = p.name.as_deref().unwrap_or_default();
    if sub == Sub::NodeProxy {
        let rest = proxy_rest(req.uri().path(), name);
        let (node, port) = split_port(name);
        let query = req.uri().query().map(str::to_string);
        return to_kubelet(state, node, port, &rest, query.as_deref(), req).await;
    }
    let ns = p.namespace.as_deref().unwrap_or_default();
    if sub == Sub::PodProxy {
        let rest = proxy_rest(req.uri().path(), name);
        let https = name.starts_with("https:");
        let (name, port) = split_port(name);
        let pod = state.registry.get(builtin("", "v1", "pods"), ns, name).await?;
        return to_pod(&pod, (name, port.unwrap_or(80)), https, &rest, req).await;
    }
    if sub == Sub::ServiceProxy {
        let rest = proxy_rest(req.uri().path(), name);
        return super::service_proxy::to_service(state, ns, name, &rest, req).await;
    }
    let pod = state.registry.get(builtin("", "v1", "pods"), ns, name).await?;
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("the query does not parse: {e}")))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
    let (kubelet_path, kept): (String, &[&str]) = match sub {
        Sub::Log => {
            let container = container_of(&pod, name, &query)?;
            if node.is_empty() {
                // upstream: a pod not yet on a node has an empty log
                return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response());
            }
            (format!("/containerLogs/{ns}/{name}/{container}"), LOG_PARAMS)
        }
        Sub::Exec | Sub::Attach => {
            let container = container_of(&pod, name, &query)?;
            completed_check(&pod, sub)?;
            let verb = if sub == Sub::Exec { "exec" } else { "attach" };
            (format!("/{verb}/{ns}/{name}/{container}"), STREAM_PARAMS)
        }
        _ => (format!("/portForward/{ns}/{name}"), &["ports", "port"][..]),
    };
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    if sub != Sub::Log {
        check_stream_request(sub, &query, req.headers())?;
    }
    let query =
        serde_urlencoded::to_string(query.iter().filter(|(k, _)| kept.contains(&k.as_str())).collect::<Vec<_>>())
            .unwrap_or_default();
    let logs = sub == Sub::Log;
    let resp = to_kubelet(state, &node, None, &kubelet_path, Some(&query), req).await?;
    if logs && !resp.status().is_success() {
        return Ok(kubelet_error(resp).await);
    }
    Ok(resp)
}

/// The PodLogOptions the kubelet understands.
const LOG_PARAMS: &[&str] =
    &["follow", "previous", "timestamps", "tailLines", "sinceSeconds", "sinceTime", "limitBytes"];
/// PodExecOptions / PodAttachOptions as the kubelet reads them.
const STREAM_PARAMS: &[&str] = &["command", "stdin", "stdout", "stderr", "tty", "input", "output", "error"];

/// The path after `<name>/proxy` (at least `/`).
fn proxy_rest(path: &str, name: &str) -> String {
    match path.split_once(&format!("/{name}/proxy")) {
        Some((_, rest)) if rest.starts_with('/') => rest.to_string(),
        _ => "/".to_string(),
    }
}

/// `name:port` → (name, port); `scheme:name:port` keeps the name and port.
fn split_port(name: &str) -> (&str, Option<u16>) {
    let parts: Vec<&str> = name.split(':').collect();
    match parts.as_slice() {
        [n] => (n, None),
        [n, port] | [_, n, port] => (n, port.parse().ok()),
        _ => (name, None),
    }
}

/// The container a log/exec/attach request is for, validated as upstream does it.
fn container_of(pod: &Value, name: &str, query: &[(String, String)]) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(str::to_string)
            .collect()
    };
    let (containers, init, ephemeral) = (names("containers"), names("initContainers"), names("ephemeralContainers"));
    let wanted = query.iter().find(|(k, _)| k == "container").map(|(_, v)| v.clone()).unwrap_or_default();
    if wanted.is_empty() {
        if containers.len() == 1 {
            return Ok(containers[0].clone());
        }
        let mut message =
            format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" "));
        if !init.is_empty() {
            message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
        }
        if !ephemeral.is_empty() {
            message.push_str(&format!(" or one of the ephemeral containers: [{}]", ephemeral.join(" ")));
        }
        return Err(ApiError::bad_request(message));
    }
    if [&containers, &init, &ephemeral].iter().any(|set| set.contains(&wanted)) {
        return Ok(wanted);
    }
    Err(ApiError::bad_request(format!("container {wanted} is not valid for pod {name}")))
}

/// What upstream validates of exec/attach options, and an upgrade to anything but
/// SPDY/3.1 or WebSocket, refused here rather than by the runtime (which answers in text).
fn check_stream_request(sub: Sub, query: &[(String, String)], headers: &http::HeaderMap) -> ApiResult<()> {
    if let Some(proto) = headers.get(header::UPGRADE).filter(|_| forward::is_upgrade(headers)) {
        let proto = proto.to_str().unwrap_or_default();
        let known = proto.eq_ignore_ascii_case("websocket") || proto.to_ascii_uppercase().starts_with("SPDY/3.1");
        if !known {
            return Err(ApiError::bad_request(format!(
                "unsupported upgrade protocol {proto:?}: SPDY/3.1 or websocket"
            )));
        }
    }
    if sub == Sub::PortForward {
        return Ok(());
    }
    let on = |k: &str| query.iter().any(|(key, v)| key == k && (v == "true" || v == "1"));
    if !(on("stdin") || on("stdout") || on("stderr")) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if sub == Sub::Exec && !query.iter().any(|(k, _)| k == "command") {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    Ok(())
}

/// Upstream refuses exec and attach into a pod whose containers are all done.
fn completed_check(pod: &Value, sub: Sub) -> ApiResult<()> {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase != "Succeeded" && phase != "Failed" {
        return Ok(());
    }
    let what = if sub == Sub::Exec { "exec into" } else { "attach to" };
    Err(ApiError::bad_request(format!("cannot {what} a container in a completed pod; current phase is {phase}")))
}

/// Forward to the node's kubelet (on its published port, or `port` from the URL).
async fn to_kubelet(
    state: &AppState,
    node: &str,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
    req: Request,
) -> ApiResult<Response> {
    let node_obj = state.registry.get(builtin("", "v1", "nodes"), "", node).await?;
    let host = state.kubelet.address(&node_obj).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no preferred addresses found; known addresses: {}",
            node_obj["status"]["addresses"]
        ))
    })?;
    let published = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64().filter(|p| *p > 0);
    let port = port.or_else(|| u16::try_from(published.unwrap_or(DEFAULT_KUBELET_PORT)).ok()).unwrap_or(10250);
    let target = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    tracing::debug!(node, kubelet = authority, path = target, "to the kubelet");
    match state.kubelet.connect(&host, port).await {
        Ok(tls) => Ok(forward::forward(req, tls, &target, &authority).await),
        Err(e) => Ok(forward::bad_gateway(format!("dial tcp {authority}: {e}"))),
    }
}

/// `pods/proxy`: HTTP (or HTTPS with an `https:` prefix) to the pod's IP on the port the
/// name carries (default 80).
async fn to_pod(pod: &Value, (name, port): (&str, u16), https: bool, rest: &str, req: Request) -> ApiResult<Response> {
    let ip = pod["status"]["podIP"].as_str().filter(|ip| !ip.is_empty());
    let Some(ip) = ip else {
        return Err(ApiError::unavailable(format!("address not allowed: pod {name} has no IP")));
    };
    Ok(super::service_proxy::to_endpoint(https, ip, port, rest, req).await)
}

/// A kubelet's refusal of a log request as the Status upstream's API server makes of
/// it: the kubelet's message, the code's reason.
async fn kubelet_error(resp: Response) -> Response {
    let code = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), MAX_ERROR_BODY).await.unwrap_or_default();
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(status) if status["kind"] == "Status" => status["message"].as_str().unwrap_or_default().to_string(),
        _ => String::from_utf8_lossy(&body).trim().to_string(),
    };
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    let mut out = forward::status_response(code, reason, &message);
    out.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_names_as_upstream_words_them() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let q = |c: &str| vec![("container".to_string(), c.to_string())];
        let err = container_of(&pod, "p", &[]).unwrap_err().to_status();
        assert_eq!(
            err["message"],
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(err["code"], 400);
        assert_eq!(container_of(&pod, "p", &q("i")).unwrap(), "i");
        let err = container_of(&pod, "p", &q("zz")).unwrap_err().to_status();
        assert_eq!(err["message"], "container zz is not valid for pod p");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&single, "p", &[]).unwrap(), "only");
    }

    #[test]
    fn proxy_paths_and_ports() {
        assert_eq!(proxy_rest("/api/v1/nodes/proxy-n/proxy/stats/summary", "proxy-n"), "/stats/summary");
        assert_eq!(proxy_rest("/api/v1/nodes/n/proxy", "n"), "/");
        assert_eq!(split_port("n:10255"), ("n", Some(10255)));
        assert_eq!(split_port("https:web:8443"), ("web", Some(8443)));
        assert_eq!(split_port("web"), ("web", None));
    }

    #[test]
    fn addresses_by_preference() {
        let types = ["InternalIP".to_string(), "Hostname".to_string()];
        let client = KubeletClient::new(None, None, &types).unwrap();
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(client.address(&node).as_deref(), Some("10.0.0.1"));
        assert_eq!(client.address(&json!({})), None);
    }
}
