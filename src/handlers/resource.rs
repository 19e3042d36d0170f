//! The one generic resource handler: resolves the URL against the resource table and
//! runs get / list / watch / create / update / patch / delete / deletecollection.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::codec::{self, FieldValidation, MAX_BODY, Output};
use super::path::{self, ResourcePath, Target};
use super::query::Query;
use super::status::{ApiError, ApiResult};
use super::table::{self, IncludeObject};
use super::{AppState, actions, discovery, list, reviews};
use crate::admission::Admit;
use crate::auth::authz;
use crate::auth::rbac::escalation;
use crate::auth::request::UserInfo;
use crate::fieldmanager::{self, Manager};
use crate::registry::filter::Filter;
use crate::registry::rest::{DeleteOpts, Part, Propagation, WriteOpts};
use crate::registry::{ResourceDef, find_resource, meta};
use crate::watch;

pub async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    user: Option<Extension<Arc<UserInfo>>>,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    // the authorization layer always leaves the identity; a router without it serves
    // as upstream does without authentication
    let user = user.map(|Extension(u)| u).unwrap_or_else(authz::dev_superuser);
    let req = Req { method: &method, uri: &uri, headers: &headers, user };
    let result = handle(&state, req, body).await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(%method, path = uri.path(), status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

/// The parts of a request the handler reads, and who sent it.
struct Req<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    user: Arc<UserInfo>,
}

/// A request resolved against the table.
struct Ctx<'a> {
    state: &'a AppState,
    res: &'static ResourceDef,
    path: ResourcePath,
    query: Query,
    headers: &'a HeaderMap,
    user: Arc<UserInfo>,
}

impl Ctx<'_> {
    fn namespace(&self) -> &str {
        self.path.namespace.as_deref().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or("")
    }
    /// The requester and subresource, for admission.
    fn admit(&self, part: Part) -> Admit {
        Admit::new(self.user.clone(), part.subresource().unwrap_or(""))
    }
}

async fn handle(state: &AppState, req: Req<'_>, body: Body) -> ApiResult<Response> {
    let (method, uri, headers) = (req.method, req.uri, req.headers);
    let target = path::parse(uri.path()).ok_or_else(ApiError::not_found_path)?;
    let p = match target {
        Target::Group(g) if method == Method::GET => return discovery::api_group(&g),
        Target::GroupVersion(g, v) if method == Method::GET => return discovery::resource_list(&g, &v),
        Target::Group(_) | Target::GroupVersion(..) => return Err(ApiError::method_not_allowed()),
        Target::Resource(p) => p,
    };
    if let Some(action) = actions::Action::of(&p) {
        // POST is the only verb an action has
        if method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let query = Query::parse(uri.query())?;
        return action.run(state, &p, &query, headers, &read_body(body).await?, req.user).await;
    }
    let res = find_resource(&p.group, &p.version, &p.resource).ok_or_else(ApiError::not_found_path)?;
    if !res.namespaced && p.namespace.is_some() {
        return Err(ApiError::not_found_path());
    }
    if res.review {
        return review(state, res, &p, req, body).await;
    }
    if p.subresource.as_deref() == Some("scale") && res.has_scale && p.name.is_some() {
        let query = Query::parse(uri.query())?;
        let (ns, name) = (p.namespace.as_deref().unwrap_or(""), p.name.as_deref().unwrap_or(""));
        let body = read_body(body).await?;
        let target = super::scale::Target { res, namespace: ns, name };
        let options = if method == Method::PATCH { "PatchOptions" } else { "UpdateOptions" };
        let admit = Admit::new(req.user.clone(), "scale");
        let opts = write_opts(&query, headers, Some("scale"), options, admit)?;
        return super::scale::handle(&state.registry, target, method, headers, body, &opts).await;
    }
    if p.subresource.as_deref() == Some("finalize") && res.group.is_empty() && res.plural == "namespaces" {
        if method != Method::PUT {
            return Err(ApiError::method_not_allowed());
        }
        let output = codec::negotiate(headers)?;
        let body = codec::parse_body(headers, &read_body(body).await?)?;
        let name = p.name.clone().unwrap_or_default();
        let obj = crate::registry::namespaces::finalize(&state.registry, &name, &body).await?;
        return Ok(codec::respond(
            StatusCode::OK,
            if output == Output::Yaml { Output::Yaml } else { Output::Json },
            &obj,
        ));
    }
    let part = match p.subresource.as_deref() {
        None => Part::Main,
        Some("status") if res.has_status => Part::Status,
        Some(_) => return Err(ApiError::not_found_path()),
    };
    let query = Query::parse(uri.query())?;
    let ctx = Ctx { state, res, path: p, query, headers, user: req.user };
    let output = codec::negotiate(headers)?;
    let has_name = ctx.path.name.is_some();
    match (method.clone(), has_name) {
        (Method::GET, true) if ctx.path.watch || ctx.query.flag("watch") => watch(&ctx, output).await,
        (Method::GET, true) => get(&ctx, output).await,
        (Method::GET, false) if ctx.path.watch || ctx.query.flag("watch") => watch(&ctx, output).await,
        (Method::GET, false) => list_objects(&ctx, output).await,
        (Method::POST, false) => create(&ctx, output, read_body(body).await?).await,
        (Method::PUT, true) => update(&ctx, output, part, read_body(body).await?).await,
        (Method::PATCH, true) => patch(&ctx, output, part, read_body(body).await?).await,
        (Method::DELETE, true) if part == Part::Main => delete(&ctx, output, read_body(body).await?).await,
        (Method::DELETE, false) => delete_collection(&ctx, output, read_body(body).await?).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Dry run, and the manager the write is recorded for in managedFields; `options` is
/// the kind of the request's options (CreateOptions, UpdateOptions, PatchOptions).
/// `admit`: the requester, for admission.
fn write_opts(
    query: &Query,
    headers: &HeaderMap,
    sub: Option<&'static str>,
    options: &str,
    admit: Admit,
) -> ApiResult<WriteOpts> {
    let manager = Manager::from_request(query.get("fieldManager"), headers, sub);
    Manager::validate(&manager.name, options)?;
    Ok(WriteOpts { dry_run: query.dry_run()?, manager: Some(manager), admit: Some(admit) })
}

/// POST of an authorization review (the only verb reviews have).
async fn review(
    state: &AppState,
    res: &'static ResourceDef,
    p: &ResourcePath,
    req: Req<'_>,
    body: Body,
) -> ApiResult<Response> {
    if *req.method != Method::POST || p.name.is_some() || (res.namespaced && p.namespace.is_none()) {
        return Err(ApiError::method_not_allowed());
    }
    let query = Query::parse(req.uri.query())?;
    let namespace = p.namespace.as_deref().unwrap_or("");
    let review_req = reviews::Request { res, namespace, user: req.user, headers: req.headers, query: &query };
    reviews::create(state, review_req, read_body(body).await?).await
}

/// No one grants RBAC permissions they do not hold (a no-op for other kinds).
fn check_escalation(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let judges = escalation::Judges { authorizer: &*ctx.state.authz, rules: &*ctx.state.rbac };
    escalation::check(&judges, &ctx.user, ctx.res, ctx.namespace(), obj)
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| ApiError::too_large())
}

/// Render one object in the negotiated form.
fn render(ctx: &Ctx, code: StatusCode, output: Output, obj: &Value) -> ApiResult<Response> {
    Ok(match output {
        Output::Table(v) => {
            let lm = json!({"resourceVersion": meta::meta_str(obj, "resourceVersion")});
            let t = table::table(ctx.res, [obj.clone()], lm, v, IncludeObject::from_query(&ctx.query)?, true);
            codec::respond(code, Output::Json, &t)
        }
        Output::PartialMetadata(v) => codec::respond(code, Output::Json, &table::partial_metadata(obj, v)),
        other => codec::respond(code, other, obj),
    })
}

async fn get(ctx: &Ctx<'_>, output: Output) -> ApiResult<Response> {
    let rv = watch::Rv::parse(ctx.query.get("resourceVersion"))?;
    if rv == watch::Rv::Zero {
        // any version will do: serve from the watch cache when it is up
        let cache = ctx.state.caches.get(ctx.res);
        if cache.is_ready() {
            let key = ctx.state.registry.key(ctx.res, ctx.namespace(), ctx.name());
            let obj = match cache.get(key.as_bytes()).0 {
                Some(o) => crate::registry::rest::Registry::decode_bytes(ctx.res, &o.json, o.mod_revision)?,
                None => return Err(ApiError::not_found(ctx.res.group, ctx.res.plural, ctx.name())),
            };
            return render(ctx, StatusCode::OK, output, &obj);
        }
    }
    let obj = ctx.state.registry.get(ctx.res, ctx.namespace(), ctx.name()).await?;
    render(ctx, StatusCode::OK, output, &obj)
}

fn filter(ctx: &Ctx) -> ApiResult<Filter> {
    let mut fields = ctx.query.field_selector()?;
    if let Some(name) = ctx.path.name.as_deref() {
        fields = crate::registry::selectors::FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(ApiError::bad_request)?;
    }
    Filter::new(ctx.res, ctx.query.label_selector()?, fields)
}

async fn list_objects(ctx: &Ctx<'_>, output: Output) -> ApiResult<Response> {
    list::serve(ctx.state, ctx.res, ctx.namespace(), &ctx.query, output, &filter(ctx)?).await
}

async fn watch(ctx: &Ctx<'_>, output: Output) -> ApiResult<Response> {
    ctx.query.validate_list_options(true)?;
    let rv = watch::Rv::parse(ctx.query.get("resourceVersion"))?;
    // upstream defaults a legacy watch (resourceVersion unset or 0) to sending the
    // current objects first, as sendInitialEvents=true does
    let initial_events =
        ctx.query.bool_param("sendInitialEvents")?.unwrap_or(matches!(rv, watch::Rv::Unset | watch::Rv::Zero));
    // upstream spreads watch lifetimes between the minimum request timeout and twice it
    let timeout = match ctx.query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => Duration::from_secs(1800 + fastrand::u64(0..1800)),
    };
    let req = watch::WatchRequest {
        res: ctx.res,
        namespace: ctx.namespace().to_string(),
        filter: filter(ctx)?,
        rv,
        initial_events,
        bookmarks: ctx.query.bool_param("allowWatchBookmarks")?.unwrap_or(false),
        timeout,
        output,
        include: IncludeObject::from_query(&ctx.query)?,
    };
    Ok(watch::serve(ctx.state.caches.clone(), req).await)
}

fn decode(ctx: &Ctx, body: &Bytes) -> ApiResult<(Value, Vec<String>)> {
    let validation = FieldValidation::parse(ctx.query.get("fieldValidation"))?;
    codec::decode_body(ctx.res, ctx.headers, body, validation)
}

/// The namespace in the body must agree with the URL's.
fn check_body_namespace(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let body_ns = meta::namespace(obj);
    if ctx.res.namespaced && !body_ns.is_empty() && body_ns != ctx.namespace() {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

async fn create(ctx: &Ctx<'_>, output: Output, body: Bytes) -> ApiResult<Response> {
    if ctx.res.namespaced && ctx.path.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let (obj, warnings) = decode(ctx, &body)?;
    check_body_namespace(ctx, &obj)?;
    check_escalation(ctx, &obj)?;
    let opts = write_opts(&ctx.query, ctx.headers, None, "CreateOptions", ctx.admit(Part::Main))?;
    let created = ctx.state.registry.create(ctx.res, ctx.namespace(), obj, &opts).await?;
    Ok(codec::with_warnings(render(ctx, StatusCode::CREATED, output, &created)?, &warnings))
}

async fn update(ctx: &Ctx<'_>, output: Output, part: Part, body: Bytes) -> ApiResult<Response> {
    let (obj, warnings) = decode(ctx, &body)?;
    check_body_namespace(ctx, &obj)?;
    check_escalation(ctx, &obj)?;
    let opts = write_opts(&ctx.query, ctx.headers, part.subresource(), "UpdateOptions", ctx.admit(part))?;
    let updated = ctx.state.registry.update(ctx.res, ctx.namespace(), ctx.name(), obj, part, &opts).await?;
    Ok(codec::with_warnings(render(ctx, StatusCode::OK, output, &updated)?, &warnings))
}

/// PATCH: JSON patch, merge patch and strategic merge patch here; server-side apply is
/// `fieldmanager::apply`.
async fn patch(ctx: &Ctx<'_>, output: Output, part: Part, body: Bytes) -> ApiResult<Response> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    let content_type = ctx.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_string();
    let reg = &ctx.state.registry;
    if media == fieldmanager::APPLY_PATCH {
        let admit = |obj: &Value| check_escalation(ctx, obj);
        let (namespace, name) = (ctx.namespace(), ctx.name());
        let target =
            fieldmanager::Target { res: ctx.res, namespace, name, part, admit: &admit, admission: ctx.admit(part) };
        let (code, obj, warnings) = fieldmanager::apply(reg, target, &body, &ctx.query).await?;
        return Ok(codec::with_warnings(render(ctx, code, output, &obj)?, &warnings));
    }
    fieldmanager::reject_force(&ctx.query)?;
    let opts = write_opts(&ctx.query, ctx.headers, part.subresource(), "PatchOptions", ctx.admit(part))?;
    // recomputed on every lost race, without a bound, as upstream's patcher
    loop {
        let current = reg.get(ctx.res, ctx.namespace(), ctx.name()).await?;
        let rv = meta::meta_str(&current, "resourceVersion").to_string();
        let mut patched = current.clone();
        match media.as_str() {
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut patched, &p).map_err(|e| ApiError::new_invalid_patch(&e.to_string()))?;
            }
            "application/strategic-merge-patch+json" => {
                let r = ctx.res;
                patched = crate::patch::strategic_merge(&current, &body, r.group, r.version, r.kind)?;
            }
            "application/merge-patch+json" => {
                let p: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                if !p.is_object() {
                    return Err(ApiError::bad_request("patch body must be a JSON object"));
                }
                json_patch::merge(&mut patched, &p);
            }
            _ => return Err(ApiError::unsupported_media_type(content_type)),
        }
        // a patch without a resourceVersion applies to the version it was computed on
        if meta::meta_str(&patched, "resourceVersion").is_empty() {
            meta::metadata_mut(&mut patched).insert("resourceVersion".into(), json!(rv));
        }
        let patched_rv = meta::meta_str(&patched, "resourceVersion").to_string();
        let validation = FieldValidation::parse(ctx.query.get("fieldValidation"))?;
        let (obj, warnings) = codec::decode_object(ctx.res, patched, validation)?;
        check_body_namespace(ctx, &obj)?;
        check_escalation(ctx, &obj)?;
        match reg.update(ctx.res, ctx.namespace(), ctx.name(), obj, part, &opts).await {
            Ok(updated) => return Ok(codec::with_warnings(render(ctx, StatusCode::OK, output, &updated)?, &warnings)),
            // raced with another writer: recompute on the new version, unless the
            // client pinned a resourceVersion in the patch itself
            Err(e) if e.reason == "Conflict" && patched_rv == rv => {
                // only a lost race is retried: the object must have moved on since it
                // was read (a failed uid precondition has not)
                let now = reg.get(ctx.res, ctx.namespace(), ctx.name()).await?;
                if meta::meta_str(&now, "resourceVersion") == rv {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn delete_opts(ctx: &Ctx, body: &Bytes) -> ApiResult<DeleteOpts> {
    let mut opts = DeleteOpts {
        dry_run: ctx.query.dry_run()?,
        grace_period: ctx.query.int("gracePeriodSeconds")?,
        propagation: ctx.query.get("propagationPolicy").map(Propagation::parse).transpose()?,
        admit: Some(ctx.admit(Part::Main)),
        ..Default::default()
    };
    if !body.is_empty() {
        let v: Value = codec::parse_body(ctx.headers, body)
            .map_err(|_| ApiError::bad_request("the body of the request is not a valid DeleteOptions"))?;
        opts.merge_body(&v)?;
    }
    Ok(opts)
}

async fn delete(ctx: &Ctx<'_>, output: Output, body: Bytes) -> ApiResult<Response> {
    let opts = delete_opts(ctx, &body)?;
    let reg = &ctx.state.registry;
    if ctx.res.plural == "namespaces" && ctx.res.group.is_empty() {
        let obj = crate::registry::namespaces::delete_namespace(reg, ctx.name(), &opts).await?;
        return render(ctx, StatusCode::OK, output, &obj);
    }
    let obj = reg.delete(ctx.res, ctx.namespace(), ctx.name(), &opts).await?;
    render(ctx, StatusCode::OK, output, &obj)
}

async fn delete_collection(ctx: &Ctx<'_>, output: Output, body: Bytes) -> ApiResult<Response> {
    // as upstream, a namespaced kind is deleted in bulk one namespace at a time: the
    // all-namespaces path serves only list and watch
    if !ctx.res.allows("deletecollection") || (ctx.res.namespaced && ctx.path.namespace.is_none()) {
        return Err(ApiError::method_not_allowed());
    }
    let opts = delete_opts(ctx, &body)?;
    let reg = &ctx.state.registry;
    let listed = list::read(reg, ctx.res, ctx.namespace(), &Query::default(), &filter(ctx)?).await?;
    let mut deleted = Vec::new();
    for stored in &listed.items {
        let obj = crate::registry::rest::Registry::decode_stored(ctx.res, stored)?;
        let (ns, name) = (meta::namespace(&obj).to_string(), meta::name(&obj).to_string());
        match reg.delete(ctx.res, &ns, &name, &opts).await {
            Ok(o) => deleted.push(o),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": ctx.res.list_kind(),
        "apiVersion": ctx.res.api_version(),
        "metadata": {"resourceVersion": listed.revision.to_string()},
        "items": deleted,
    });
    Ok(codec::respond(StatusCode::OK, if output == Output::Yaml { Output::Yaml } else { Output::Json }, &list))
}
