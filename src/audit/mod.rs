//! Auditing (`--audit-policy-file`, `--audit-log-path`): an axum layer between
//! authentication and authorization that asks the policy about each request and writes
//! upstream's `audit.k8s.io/v1` Events (RequestReceived, ResponseStarted for watches,
//! ResponseComplete) as JSON lines through a non-blocking sink. Without the flags the
//! layer is not installed at all.

pub mod event;
pub mod policy;
pub mod sink;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::StreamExt;
use http::{Extensions, HeaderMap, HeaderValue, Method};
use serde_json::Value;

use crate::auth::authz;
use crate::auth::request::{Attributes, UserInfo};
use crate::handlers::codec;
use crate::handlers::status::ApiError;
use event::{Event, ObjectRef, User};
use policy::{Decision, Level, Policy, Stage};
use sink::{LogOptions, Sink};

const AUDIT_ID: &str = "audit-id";

pub struct Auditor {
    policy: Policy,
    sink: Sink,
}

/// The peer address of the connection a request came on (set by the accept loop while
/// auditing).
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

/// The identity that authenticated, when the request impersonates another one.
#[derive(Clone, Debug)]
pub struct ImpersonatedBy(pub Arc<UserInfo>);

/// Annotations inner layers add to a request's event (authorization's decision).
#[derive(Clone, Default)]
struct Annotations(Arc<Mutex<BTreeMap<String, String>>>);

/// Record an authorization decision on the request's audit event, if it is audited.
pub fn note_authorization(extensions: &Extensions, allowed: bool, reason: &str) {
    if let Some(Annotations(map)) = extensions.get::<Annotations>() {
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert("authorization.k8s.io/decision".into(), if allowed { "allow" } else { "forbid" }.into());
        map.insert("authorization.k8s.io/reason".into(), reason.into());
    }
}

impl Auditor {
    /// The policy file and the log; any problem is a start-up error naming the file.
    pub fn load(policy_file: &Path, log: &LogOptions) -> anyhow::Result<Auditor> {
        let text = std::fs::read_to_string(policy_file)
            .map_err(|e| anyhow::anyhow!("reading --audit-policy-file {}: {e}", policy_file.display()))?;
        let policy =
            Policy::parse(&text).map_err(|e| anyhow::anyhow!("--audit-policy-file {}: {e}", policy_file.display()))?;
        Ok(Auditor { policy, sink: Sink::open(log)? })
    }

    fn emit(&self, event: &Event, stage: Stage, decision: &Decision) {
        if !decision.omit_stages.contains(&stage) {
            self.sink.send(event.at(stage).to_line());
        }
    }
}

/// The event as far as the request alone tells it, from `received` to `layer`.
#[derive(Clone)]
struct Pending {
    event: Event,
    attrs: Attributes,
}

/// Marks a response whose request `layer` audited.
#[derive(Clone, Copy)]
struct Audited;

/// Around authentication: starts every request's event and sets `Audit-Id` on every
/// response; requests authentication refuses (401, a refused impersonation) never reach
/// `layer`, so they are audited here, as an unknown user.
pub async fn received(State(auditor): State<Arc<Auditor>>, mut req: Request, next: Next) -> Response {
    let attrs = Attributes::of(req.method(), req.uri().path(), req.uri().query());
    let pending = Pending { event: base_event(&req, &attrs), attrs };
    req.extensions_mut().insert(pending.clone());
    let resp = next.run(req).await;
    let id = pending.event.audit_id.clone();
    if resp.extensions().get::<Audited>().is_some() {
        return with_audit_id(resp, &id);
    }
    let decision = auditor.policy.evaluate(&UserInfo::default(), &pending.attrs);
    if decision.level == Level::None {
        return with_audit_id(resp, &id);
    }
    let event = Event { level: decision.level, ..pending.event };
    auditor.emit(&event, Stage::RequestReceived, &decision);
    with_audit_id(finish(auditor, event, decision, resp, false).await, &id)
}

/// After authentication: the policy's level for this user, RequestReceived, the request,
/// then the later stages.
pub async fn layer(State(auditor): State<Arc<Auditor>>, mut req: Request, next: Next) -> Response {
    let Some(Pending { mut event, attrs }) = req.extensions_mut().remove::<Pending>() else {
        return next.run(req).await;
    };
    let user = authz::user_of(req.extensions());
    let original = req.extensions().get::<ImpersonatedBy>().map(|i| i.0.clone());
    let decision = auditor.policy.evaluate(original.as_deref().unwrap_or(&user), &attrs);
    if decision.level == Level::None {
        return audited(next.run(req).await);
    }
    event.level = decision.level;
    event.user = User::from(original.as_deref().unwrap_or(&user));
    event.impersonated_user = original.map(|_| User::from(user.as_ref()));
    let annotations = Annotations::default();
    req.extensions_mut().insert(annotations.clone());
    auditor.emit(&event, Stage::RequestReceived, &decision);
    if decision.level >= Level::Request && has_body(req.method()) {
        let Some((read, object)) = request_object(req, &decision).await else {
            return audited(ApiError::too_large().into_response());
        };
        (req, event.request_object) = (read, object);
    }
    let resp = next.run(req).await;
    event.annotations = annotations.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    audited(finish(auditor, event, decision, resp, attrs.verb == "watch").await)
}

fn audited(mut resp: Response) -> Response {
    resp.extensions_mut().insert(Audited);
    resp
}

/// Read the request's body (None: over the size limit), decode it for the event and put
/// it back for the handler.
async fn request_object(req: Request, decision: &Decision) -> Option<(Request, Option<Value>)> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, codec::MAX_BODY + 1).await.ok()?;
    let object = parse_object(&parts.headers, &bytes, decision);
    Some((Request::from_parts(parts, Body::from(bytes)), object))
}

/// Upstream takes a caller's `Audit-ID`; otherwise a new UUID.
fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get(AUDIT_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn with_audit_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("Audit-Id", v);
    }
    resp
}

fn has_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// The event's fields known when the request arrives (the user and level come later).
fn base_event(req: &Request, attrs: &Attributes) -> Event {
    let now = event::timestamp(Utc::now());
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    Event {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: Level::None,
        audit_id: audit_id(req.headers()),
        stage: Stage::RequestReceived,
        request_uri: req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
        verb: attrs.verb.clone(),
        user: User::from(&UserInfo::default()),
        impersonated_user: None,
        source_ips: source_ips(req),
        user_agent: header(http::header::USER_AGENT),
        object_ref: ObjectRef::of(attrs),
        response_status: None,
        request_object: None,
        response_object: None,
        request_received_timestamp: now.clone(),
        stage_timestamp: now,
        annotations: BTreeMap::new(),
    }
}

/// `X-Forwarded-For`, `X-Real-Ip`, then the connection's peer, as upstream.
fn source_ips(req: &Request) -> Vec<String> {
    let mut ips: Vec<String> = Vec::new();
    let headers = req.headers();
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("");
    let real = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).unwrap_or("");
    let peer = req.extensions().get::<RemoteAddr>().map(|r| r.0.ip().to_string()).unwrap_or_default();
    for ip in forwarded.split(',').chain([real, peer.as_str()]).map(str::trim).filter(|s| !s.is_empty()) {
        if !ips.iter().any(|i| i == ip) {
            ips.push(ip.to_string());
        }
    }
    ips
}

/// A request or response body as JSON (YAML and protobuf bodies decoded), if it is one.
fn parse_object(headers: &HeaderMap, bytes: &Bytes, d: &Decision) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    let json_like = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.split(';').next().unwrap_or("").trim().ends_with("json"));
    let parsed = if json_like { serde_json::from_slice(bytes).ok() } else { codec::parse_body(headers, bytes).ok() };
    parsed.map(|mut v| {
        if d.omit_managed_fields {
            event::omit_managed_fields(&mut v);
        }
        v
    })
}

/// ResponseStarted (watches) and ResponseComplete, with the status and, at
/// RequestResponse, the response object.
async fn finish(auditor: Arc<Auditor>, mut event: Event, d: Decision, resp: Response, watch: bool) -> Response {
    let code = resp.status().as_u16();
    if watch && code < 300 {
        return watch_started(auditor, event, d, resp);
    }
    let (parts, body) = resp.into_parts();
    let body = if d.level == Level::RequestResponse || code >= 400 {
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let object = parse_object(&parts.headers, &bytes, &d);
        event.response_status = Some(event::response_status(code, object.as_ref()));
        event.response_object = object.filter(|_| d.level == Level::RequestResponse);
        Body::from(bytes)
    } else {
        event.response_status = Some(event::response_status(code, None));
        body
    };
    auditor.emit(&event, Stage::ResponseComplete, &d);
    Response::from_parts(parts, body)
}

/// A watch's ResponseStarted now; its ResponseComplete when the stream is dropped.
fn watch_started(auditor: Arc<Auditor>, mut event: Event, decision: Decision, resp: Response) -> Response {
    event.response_status = Some(event::response_status(resp.status().as_u16(), None));
    auditor.emit(&event, Stage::ResponseStarted, &decision);
    let (parts, body) = resp.into_parts();
    let done = Completion { auditor, event, decision };
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &done;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Writes a watch's ResponseComplete when its stream ends or its client goes away.
struct Completion {
    auditor: Arc<Auditor>,
    event: Event,
    decision: Decision,
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.auditor.emit(&self.event, Stage::ResponseComplete, &self.decision);
    }
}
