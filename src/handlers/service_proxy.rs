//! `services/proxy`: `/api/v1/namespaces/{ns}/services/{[scheme:]name[:port]}/proxy/{path}`
//! forwarded to one ready endpoint of the Service, as upstream's API server resolves it:
//! a port number names the Service port with that number (its name is what endpoints
//! carry), a port name is matched against the endpoints' port names as is, no port means
//! the unnamed port; the scheme (`http` or `https`, default http) is how the endpoint is
//! spoken to. Endpoints come from the Service's Endpoints object (ready addresses), or,
//! when it has none (a Service without selector whose endpoints someone else publishes,
//! such as ferrokube's kube-dns), from its EndpointSlices (endpoints not marked unready).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Request;
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpStream;

use super::AppState;
use super::kubelet_proxy::AnyServerCert;
use super::status::{ApiError, ApiResult};
use crate::registry::builtin;
use crate::streaming::forward;

/// The Service a proxy request names.
#[derive(Debug, PartialEq)]
pub struct Target<'a> {
    pub https: bool,
    pub name: &'a str,
    /// A port number, a port name, or "" (the Service's unnamed port).
    pub port: &'a str,
}

/// `name`, `name:port` or `scheme:name:port` (scheme http or https), as upstream splits it.
pub fn parse(id: &str) -> ApiResult<Target<'_>> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => ("", "", ""),
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return Err(ApiError::bad_request(format!("invalid service request {id:?}")));
    }
    Ok(Target { https: scheme == "https", name, port })
}

/// The endpoints' name for the requested port: a number becomes the name of the Service
/// port with that number (503 when there is none), a name stays as it is.
fn port_name(service: &Value, target: &Target) -> ApiResult<String> {
    let Ok(number) = target.port.parse::<i64>() else {
        return Ok(target.port.to_string());
    };
    let ports = service["spec"]["ports"].as_array().into_iter().flatten();
    let found = ports.into_iter().find(|p| p["port"].as_i64() == Some(number));
    match found {
        Some(p) => Ok(p["name"].as_str().unwrap_or_default().to_string()),
        None => Err(ApiError::unavailable(format!("no service port {number} found for service {:?}", target.name))),
    }
}

/// The number of the port named `name` in a list of endpoint ports (unnamed: "").
fn named_port(ports: &Value, name: &str) -> Option<u16> {
    let mut ports = ports.as_array().into_iter().flatten();
    let port = ports.find(|p| p["name"].as_str().unwrap_or_default() == name)?;
    u16::try_from(port["port"].as_i64()?).ok()
}

/// Ready (ip, port) pairs of the Endpoints object whose port is named `port`.
fn from_endpoints(endpoints: &Value, port: &str) -> Vec<(String, u16)> {
    let subsets = endpoints["subsets"].as_array().into_iter().flatten();
    subsets
        .flat_map(|subset| {
            let number = named_port(&subset["ports"], port);
            let ips = subset["addresses"].as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str());
            ips.filter_map(move |ip| Some((ip.to_string(), number?))).collect::<Vec<_>>()
        })
        .collect()
}

/// (address, port) pairs of the Service's EndpointSlices with a port named `port`, from
/// endpoints whose `ready` condition is not false.
fn from_slices(slices: &[Value], service: &str, port: &str) -> Vec<(String, u16)> {
    let mine = slices.iter().filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service);
    mine.flat_map(|slice| {
        let number = named_port(&slice["ports"], port);
        let ready = slice["endpoints"].as_array().into_iter().flatten().filter(|e| e["conditions"]["ready"] != false);
        let addresses = ready.filter_map(|e| e["addresses"][0].as_str());
        addresses.filter_map(move |ip| Some((ip.to_string(), number?))).collect::<Vec<_>>()
    })
    .collect()
}

/// Spreads requests over a Service's endpoints (upstream picks at random).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The endpoint a request for `target` in `ns` goes to.
async fn choose(state: &AppState, ns: &str, id: &str, target: &Target<'_>) -> ApiResult<(String, u16)> {
    let service = state.registry.get(builtin("", "v1", "services"), ns, target.name).await?;
    let port = port_name(&service, target)?;
    let endpoints = state.registry.get(builtin("", "v1", "endpoints"), ns, target.name).await.ok();
    let mut candidates = endpoints.map(|e| from_endpoints(&e, &port)).unwrap_or_default();
    if candidates.is_empty() {
        let slices = state.caches.objects(builtin("discovery.k8s.io", "v1", "endpointslices"), ns);
        candidates = from_slices(&slices, target.name, &port);
    }
    if candidates.is_empty() {
        return Err(ApiError::unavailable(format!("no endpoints available for service {id:?}")));
    }
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % candidates.len();
    Ok(candidates.swap_remove(i))
}

/// Forward the request to the Service `id` names in `ns`; `rest` is the path after `proxy`.
pub async fn to_service(state: &AppState, ns: &str, id: &str, rest: &str, req: Request) -> ApiResult<Response> {
    let target = parse(id)?;
    let (ip, port) = choose(state, ns, id, &target).await?;
    tracing::debug!(namespace = ns, service = target.name, endpoint = %ip, port, https = target.https, "service proxy");
    Ok(to_endpoint(target.https, &ip, port, rest, req).await)
}

/// Plain HTTP or HTTPS (the endpoint's certificate unchecked, as upstream's proxy
/// transport does) to `ip:port`, the request's query kept.
pub async fn to_endpoint(https: bool, ip: &str, port: u16, rest: &str, req: Request) -> Response {
    let path = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let authority = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let tcp = match TcpStream::connect(&authority).await {
        Ok(tcp) => tcp,
        Err(e) => return forward::bad_gateway(format!("dial tcp {authority}: {e}")),
    };
    if !https {
        return forward::forward(req, tcp, &path, &authority).await;
    }
    let tls = match tls_connector() {
        Ok(tls) => tls,
        Err(e) => return forward::bad_gateway(format!("tls to {authority}: {e}")),
    };
    let server_name = match rustls::pki_types::ServerName::try_from(ip.to_string()) {
        Ok(name) => name,
        Err(e) => return forward::bad_gateway(format!("tls to {authority}: {e}")),
    };
    match tls.connect(server_name, tcp).await {
        Ok(stream) => forward::forward(req, stream, &path, &authority).await,
        Err(e) => forward::bad_gateway(format!("tls to {authority}: {e}")),
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_split_as_upstream() {
        assert_eq!(parse("web").unwrap(), Target { https: false, name: "web", port: "" });
        assert_eq!(parse("web:80").unwrap(), Target { https: false, name: "web", port: "80" });
        assert_eq!(parse("https:web:metrics").unwrap(), Target { https: true, name: "web", port: "metrics" });
        assert_eq!(parse("http:web:").unwrap(), Target { https: false, name: "web", port: "" });
        assert_eq!(parse("ftp:web:21").unwrap_err().to_status()["code"], 400);
        assert_eq!(parse(":80").unwrap_err().to_status()["code"], 400);
        assert_eq!(parse("a:b:c:d").unwrap_err().to_status()["code"], 400);
    }

    #[test]
    fn port_numbers_become_service_port_names() {
        let svc = json!({"spec": {"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53}]}});
        let t = |port| Target { https: false, name: "web", port };
        assert_eq!(port_name(&svc, &t("53")).unwrap(), "dns");
        assert_eq!(port_name(&svc, &t("http")).unwrap(), "http");
        let err = port_name(&svc, &t("81")).unwrap_err().to_status();
        assert_eq!(
            (err["code"].as_i64(), err["message"].as_str()),
            (Some(503), Some("no service port 81 found for service \"web\""))
        );
        let unnamed = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(port_name(&unnamed, &t("80")).unwrap(), "");
    }

    #[test]
    fn ready_endpoints_with_the_named_port() {
        let eps = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.9"}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [{"ip": "10.0.0.2"}], "ports": [{"name": "other", "port": 9000}]},
        ]});
        assert_eq!(from_endpoints(&eps, "http"), [("10.0.0.1".to_string(), 8080)]);
        assert!(from_endpoints(&eps, "").is_empty());
        let slices = [
            json!({"metadata": {"labels": {"kubernetes.io/service-name": "dns"}}, "ports": [{"name": "dns", "port": 5353}],
                "endpoints": [{"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"], "conditions": {"ready": false}}]}),
            json!({"metadata": {"labels": {"kubernetes.io/service-name": "other"}}, "ports": [{"name": "dns", "port": 53}],
                "endpoints": [{"addresses": ["10.0.0.5"]}]}),
        ];
        assert_eq!(from_slices(&slices, "dns", "dns"), [("10.0.0.3".to_string(), 5353)]);
    }
}
