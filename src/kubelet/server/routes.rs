//! The kubelet API's handlers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use http::StatusCode;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::ListParams;
use tokio_stream::wrappers::ReceiverStream;

use super::Kubelet;
use super::logs::{self, Alive, LogOptions};
use super::runtime::{self, Stream, StreamOptions};
use super::stats;
use crate::streaming::forward::{self, status_response};
use crate::streaming::{channel, tunnel};
use axum::extract::FromRequest;

type St = State<Arc<Kubelet>>;

pub fn router(kubelet: Arc<Kubelet>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/exec/{ns}/{pod}/{uid}/{container}", any(exec_uid))
        .route("/attach/{ns}/{pod}/{container}", any(attach))
        .route("/attach/{ns}/{pod}/{uid}/{container}", any(attach_uid))
        .route("/portForward/{ns}/{pod}", any(port_forward))
        .route("/portForward/{ns}/{pod}/{uid}", any(port_forward_uid))
        .route("/run/{ns}/{pod}/{container}", post(run))
        .route("/run/{ns}/{pod}/{uid}/{container}", post(run_uid))
        .route("/stats/summary", get(stats::summary))
        .route("/metrics/resource", get(stats::resource_metrics))
        .with_state(kubelet)
}

fn text(code: StatusCode, message: String) -> Response {
    tracing::debug!(code = code.as_u16(), message, "kubelet API request failed");
    status_response(code, "", &message)
}

/// A pod of this node from the API, or the 404 upstream's kubelet answers.
async fn node_pod(k: &Kubelet, ns: &str, name: &str) -> Result<Pod, Response> {
    let api: Api<Pod> = Api::namespaced(k.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(pod)) if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(k.node_name.as_str()) => {
            Ok(pod)
        }
        Ok(_) => Err(text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} not found"))),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading pod {ns}/{name}: {e}"))),
    }
}

/// `/pods`: the PodList of this node's pods.
async fn pods(State(k): St) -> Response {
    let api: Api<Pod> = Api::all(k.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={}", k.node_name));
    match api.list(&params).await {
        Ok(list) => {
            let body = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list.items});
            axum::Json(body).into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("listing pods: {e}")),
    }
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let s = pod.status.as_ref();
    let all = [
        s.and_then(|s| s.container_statuses.as_ref()),
        s.and_then(|s| s.init_container_statuses.as_ref()),
        s.and_then(|s| s.ephemeral_container_statuses.as_ref()),
    ];
    all.into_iter().flatten().flatten()
}

/// Upstream's checks before logs are read: the container has a status, and a container
/// still waiting for its first start has no log.
/// `previous_file`: the log of an earlier restart is on disk, whatever the status says.
fn validate_log_status(pod: &Pod, container: &str, previous: bool, previous_file: bool) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let Some(status) = statuses(pod).find(|s| s.name == container) else {
        return Err(format!("container {container:?} in pod {name:?} is not available"));
    };
    let last_terminated = status.last_state.as_ref().and_then(|s| s.terminated.as_ref()).is_some() || previous_file;
    if previous {
        return match last_terminated {
            true => Ok(()),
            false => Err(format!("previous terminated container {container:?} in pod {name:?} not found")),
        };
    }
    match status.state.as_ref().and_then(|s| s.waiting.as_ref()) {
        Some(w) if !last_terminated => Err(format!(
            "container {container:?} in pod {name:?} is waiting to start: {}",
            w.reason.as_deref().unwrap_or("")
        )),
        _ => Ok(()),
    }
}

/// `/containerLogs/{ns}/{pod}/{container}`: the CRI log file, streamed.
async fn container_logs(
    State(k): St,
    Path((ns, name, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let opts = match LogOptions::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let pod = match node_pod(&k, &ns, &name).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = logs::pod_log_dir(&k.pod_logs_dir, &ns, &name, &uid).join(&container);
    let previous_file = logs::restart_files(&dir).len() > 1;
    if let Err(message) = validate_log_status(&pod, &container, opts.previous, previous_file) {
        return text(StatusCode::BAD_REQUEST, message);
    }
    tracing::debug!(pod = %format!("{ns}/{name}"), container, follow = opts.follow, dir = %dir.display(), "serving logs");
    let alive = alive_check(&k, uid, container);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(logs::stream(dir, opts, alive, tx));
    let body = Body::from_stream(futures::StreamExt::map(ReceiverStream::new(rx), Ok::<_, std::io::Error>));
    ([(http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// Whether the container still runs, for a followed log: asked of the runtime; without
/// one (the fake runtime) a followed log lasts until the client leaves.
fn alive_check(k: &Kubelet, uid: String, container: String) -> Alive {
    let cri = k.cri.clone();
    Box::new(move || {
        let (cri, uid, container) = (cri.clone(), uid.clone(), container.clone());
        Box::pin(async move {
            match cri {
                Some(cri) => runtime::running_container(&cri, &uid, &container).await.map_or(true, |c| c.is_some()),
                None => true,
            }
        })
    })
}

type PodPath = Path<(String, String, String)>;
type PodUidPath = Path<(String, String, String, String)>;

async fn exec(State(k): St, Path((ns, pod, c)): PodPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, None, c), Kind::Exec, req).await
}
async fn exec_uid(State(k): St, Path((ns, pod, uid, c)): PodUidPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, Some(uid), c), Kind::Exec, req).await
}
async fn attach(State(k): St, Path((ns, pod, c)): PodPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, None, c), Kind::Attach, req).await
}
async fn attach_uid(State(k): St, Path((ns, pod, uid, c)): PodUidPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, Some(uid), c), Kind::Attach, req).await
}
async fn run(State(k): St, Path((ns, pod, c)): PodPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, None, c), Kind::Run, req).await
}
async fn run_uid(State(k): St, Path((ns, pod, uid, c)): PodUidPath, req: Request) -> Response {
    stream_container(&k, (ns, pod, Some(uid), c), Kind::Run, req).await
}
async fn port_forward(State(k): St, Path((ns, pod)): Path<(String, String)>, req: Request) -> Response {
    forward_pod(&k, (ns, pod, None), req).await
}
async fn port_forward_uid(State(k): St, Path((ns, pod, uid)): PodPath, req: Request) -> Response {
    forward_pod(&k, (ns, pod, Some(uid)), req).await
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Exec,
    Attach,
    Run,
}

/// The runtime, the pod's uid (checked against the URL's when given), or the answer.
async fn resolve(
    k: &Kubelet,
    ns: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<(crate::kubelet::cri::client::Cri, String), Response> {
    let Some(cri) = k.cri.clone() else {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, "this kubelet runs no container runtime".into()));
    };
    let pod = node_pod(k, ns, name).await?;
    let actual = pod.metadata.uid.unwrap_or_default();
    if uid.is_some_and(|u| u != actual) {
        return Err(text(StatusCode::NOT_FOUND, format!("pod {ns}/{name} with uid {} not found", uid.unwrap_or(""))));
    }
    Ok((cri, actual))
}

async fn stream_container(
    k: &Kubelet,
    at: (String, String, Option<String>, String),
    kind: Kind,
    req: Request,
) -> Response {
    let (ns, name, uid, container) = at;
    let (cri, uid) = match resolve(k, &ns, &name, uid.as_deref()).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let container_id = match runtime::running_container(&cri, &uid, &container).await {
        Ok(Some(id)) => id,
        Ok(None) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("container not found ({container:?})")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let opts = StreamOptions::parse(req.uri().query());
    tracing::debug!(pod = %format!("{ns}/{name}"), container, ?kind, command = ?opts.command, "streaming request");
    let what = match kind {
        Kind::Exec => Stream::Exec { container_id: &container_id },
        Kind::Attach => Stream::Attach { container_id: &container_id },
        Kind::Run => return run_sync(&cri, &container_id, opts.command).await,
    };
    let url = match runtime::streaming_url(&cri, what, &opts).await {
        Ok(url) => url,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let websocket = [channel::V5, channel::V4].iter().any(|p| tunnel::offers(req.headers(), p));
    if !websocket {
        return to_runtime(req, &url).await;
    }
    let wanted = channel::Wanted { stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr, tty: opts.tty };
    websocket_exec(req, &url, wanted).await
}

/// Exec/attach over WebSocket: SPDY to the runtime first (a failure is still an HTTP
/// answer), then the handshake, then the channel bridge.
async fn websocket_exec(req: Request, url: &str, wanted: channel::Wanted) -> Response {
    tracing::debug!(offered = ?tunnel::offered(req.headers()), "exec over WebSocket");
    let ws = match axum::extract::ws::WebSocketUpgrade::from_request(req, &()).await {
        Ok(ws) => ws.protocols([channel::V5, channel::V4]),
        Err(rejection) => return rejection.into_response(),
    };
    match tunnel::dial_spdy(url, channel::SPDY_PROTOCOL).await {
        Ok(backend) => ws.on_upgrade(move |socket| channel::bridge(socket, backend, wanted)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn run_sync(cri: &crate::kubelet::cri::client::Cri, container_id: &str, command: Vec<String>) -> Response {
    if command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "no command given (cmd or command)".into());
    }
    match runtime::exec_sync(cri, container_id, command).await {
        Ok((_, out)) => ([(http::header::CONTENT_TYPE, "text/plain")], out).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn forward_pod(k: &Kubelet, at: (String, String, Option<String>), req: Request) -> Response {
    let (ns, name, uid) = at;
    let (cri, uid) = match resolve(k, &ns, &name, uid.as_deref()).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let sandbox_id = match runtime::ready_sandbox(&cri, &uid).await {
        Ok(Some(id)) => id,
        Ok(None) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("pod {ns}/{name} has no running sandbox")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let opts = StreamOptions::parse(req.uri().query());
    let url = match runtime::streaming_url(&cri, Stream::PortForward { sandbox_id: &sandbox_id }, &opts).await {
        Ok(url) => url,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    if !tunnel::offers(req.headers(), tunnel::PORT_FORWARD_TUNNEL) {
        return to_runtime(req, &url).await;
    }
    tracing::debug!(pod = %format!("{ns}/{name}"), offered = ?tunnel::offered(req.headers()), "port-forward over WebSocket");
    let ws = match axum::extract::ws::WebSocketUpgrade::from_request(req, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    match tunnel::port_forward(ws, &url).await {
        Ok(resp) => resp,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Hand the request on to the runtime's streaming server (plain HTTP on loopback).
async fn to_runtime(req: Request, url: &str) -> Response {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("runtime streaming URL {url:?}: {e}")),
    };
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("runtime streaming URL {url:?} has no host"));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    match tokio::net::TcpStream::connect(&authority).await {
        Ok(tcp) => forward::forward(req, tcp, &path, &authority).await,
        Err(e) => forward::bad_gateway(format!("dialing the runtime's streaming server at {authority}: {e}")),
    }
}
