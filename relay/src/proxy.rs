//! The MCP path: `/t/{tunnel}/…` → one QUIC stream to the tunnel's agent.
//!
//! The request body is read whole (bounded) before any stream is opened — the
//! policy work that follows needs the JSON-RPC message anyway, and a client
//! that sends too much is refused without the agent hearing of it. The
//! response streams back frame by frame, so an SSE event reaches the client
//! when the upstream writes it. A client that goes away drops the response
//! body, which stops the QUIC stream with `CANCELLED`; the agent then cancels
//! its upstream request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use mcp_tunnel_proto::{
    ErrorCode, Frame, RequestHead, StreamError, StreamKind, StreamState, TunnelName,
};
use mcp_tunnel_transport::{FrameReader, LinkError, write_frames};
use tokio::sync::OwnedSemaphorePermit;

use crate::app::App;
use crate::audit::Pending;
use crate::auth::Caller;
use crate::ops::Outcome;
use crate::policy::enforce::{Allowed, Denied, Who, authorize, list_keep};
use crate::policy::filter::{Keep, MAX_FILTERED_BODY, SseFilter, filter_json};
use crate::policy::message::ListKind;
use crate::registry::{AgentHandle, Route};
use mcp_tunnel_audit::Decision;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus
/// credentials meant for the relay, never for the laptop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];
const CREDENTIALS: &[&str] = &["authorization", "cookie"];

/// Handles every request under `/t/`.
/// How long a refused request's body may take to arrive before the refusal
/// is sent anyway.
const DRAIN_REFUSED_BODY: Duration = Duration::from_secs(2);

pub async fn proxy(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let response = proxy_inner(app.clone(), req, started).await;
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .copied()
        .unwrap_or_else(|| outcome_of(response.status()));
    app.ops.metrics.request(outcome, started.elapsed());
    response
}

/// The outcome of a response the relay made itself.
fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        401 => Outcome::Unauthenticated,
        403 | 429 => Outcome::Denied,
        500.. => Outcome::UpstreamError,
        400.. => Outcome::BadRequest,
        _ => Outcome::Allowed,
    }
}

fn mark(mut response: Response, outcome: Outcome) -> Response {
    response.extensions_mut().insert(outcome);
    response
}

async fn proxy_inner(app: Arc<App>, req: Request, started: Instant) -> Response {
    if let Err(e) = app.host_policy.check(req.uri(), req.headers()) {
        return json_error(StatusCode::FORBIDDEN, "host_not_allowed", &e.to_string());
    }
    let path = req.uri().path().to_owned();
    let Some((name, rest)) = split_tunnel_path(&path) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "unknown_tunnel",
            "no tunnel in the path; MCP URLs look like /t/NAME/mcp",
        );
    };
    let tunnel = match TunnelName::parse(name) {
        Ok(t) => t,
        Err(_) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "unknown_tunnel",
                "no such tunnel on this relay",
            );
        }
    };
    // Authenticate before saying anything about the tunnel: an anonymous
    // caller learns nothing, not even whether the tunnel exists.
    let via = req
        .extensions()
        .get::<crate::auth::Via>()
        .copied()
        .unwrap_or_default();
    let caller = match app
        .auth
        .check(req.uri().query(), req.headers(), &tunnel, via)
    {
        Ok(c) => c,
        Err(refusal) => {
            // Read (and drop) the body first, bounded: answering while the
            // client is still sending makes the server close a half-read
            // connection, and the client may see a reset instead of the 401
            // that tells it to sign in (an MCP client's first POST always
            // gets one).
            let limit = app.config.limits.max_request_body as usize;
            let _ = tokio::time::timeout(
                DRAIN_REFUSED_BODY,
                Limited::new(req.into_body(), limit).collect(),
            )
            .await;
            return mark(
                app.auth.refusal_response(&tunnel, refusal, via),
                Outcome::Unauthenticated,
            );
        }
    };
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let who = match &caller {
        Caller::Token(claims) => {
            let source = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            let version = req
                .headers()
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Some(Who::new(claims, source, version))
        }
        Caller::Anonymous => None,
    };
    let request_id = app.request_id();
    let rid = app.auth.request_id_string(request_id);
    let method = req.method().clone();
    let rest = if rest.is_empty() { "/" } else { rest };
    // The body is read (bounded) before anything is decided or sent.
    let prepared = match prepare(&app, req, rest.to_owned()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // A name nobody ever served: nothing to authorize, say so plainly.
    if matches!(
        app.registry.lookup(&tunnel),
        crate::registry::Lookup::Unknown
    ) {
        return json_error(
            StatusCode::NOT_FOUND,
            "unknown_tunnel",
            "no such tunnel on this relay",
        );
    }
    // Authorization: every message decided before any stream is opened.
    let mut audit = None;
    let mut list = None;
    if let Some(who) = &who {
        let body_len = prepared.body.len() as u64;
        let start_audit = |what: &Allowed, decision| {
            Pending::new(
                &app,
                who,
                rid.clone(),
                tunnel.as_str(),
                what,
                decision,
                body_len,
                started,
            )
        };
        let t_auth = Instant::now();
        let decided = match &session {
            // Another identity's session: as if it did not exist.
            Some(sid) if !app.registry.session_belongs_to(&tunnel, sid, &who.key) => {
                Err(Box::new(Denied {
                    response: session_unknown(),
                    what: Allowed {
                        method: method.as_str().to_owned(),
                        ..Default::default()
                    },
                    reason: "the MCP session belongs to another identity".into(),
                    rpc_error: None,
                }))
            }
            _ => authorize(&app, who, tunnel.as_str(), &prepared.method, &prepared.body),
        };
        tracing::trace!(
            request_id,
            authorize_us = t_auth.elapsed().as_micros() as u64,
            "decided"
        );
        match decided {
            Ok(allowed) => {
                list = allowed.list;
                audit = Some(start_audit(&allowed, Decision::Allow));
            }
            Err(denied) => {
                let Denied {
                    response,
                    what,
                    reason,
                    rpc_error,
                } = *denied;
                tracing::info!(request_id = %rid, tunnel = %tunnel, who = %who.name, method = %what.method, target = ?what.target, "denied: {reason}");
                let mut p = start_audit(&what, Decision::Deny);
                p.reason(reason, rpc_error);
                p.status(response.status().as_u16());
                return mark(response, Outcome::Denied);
            }
        }
    }
    app.ops.metrics.bytes("request", prepared.body.len() as u64);
    let route = app
        .registry
        .route_waiting(&tunnel, session.as_deref(), app.config.limits.offline_wait)
        .await;
    let agent = match route {
        Route::Agent(a) => a,
        Route::SessionGone => return finish_early(audit, session_gone()),
        Route::Offline => {
            return finish_early(
                audit,
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "agent_offline",
                    &format!(
                        "tunnel \"{tunnel}\" exists but its agent is not connected; start `mcp-agent connect` on the machine that serves it"
                    ),
                ),
            );
        }
        Route::Unknown => {
            return finish_early(
                audit,
                json_error(
                    StatusCode::NOT_FOUND,
                    "unknown_tunnel",
                    "no such tunnel on this relay",
                ),
            );
        }
    };
    let t_sign = Instant::now();
    let assertion = app.auth.assertion(&caller, &tunnel, request_id);
    let signed_us = t_sign.elapsed().as_micros() as u64;
    let mut agent = agent;
    let t_send = Instant::now();
    let mut response = send(&app, &agent, &prepared, request_id, assertion.clone()).await;
    tracing::trace!(
        request_id,
        signed_us,
        agent_us = t_send.elapsed().as_micros() as u64,
        "agent answered"
    );
    // The agent's connection died under the request (a laptop that vanished
    // before the relay noticed): a session it held is gone (404, so the
    // client re-initializes); a new session starts on another device.
    if response.status() == StatusCode::BAD_GATEWAY && agent.conn.close_reason().is_some() {
        if session.is_some() {
            response = session_gone();
        } else if prepared.is_initialize()
            && let Route::Agent(other) = app.registry.route(&tunnel, None)
            && other.generation != agent.generation
        {
            // A fresh request id (and assertion): agents refuse a replayed one.
            let retry_id = app.request_id();
            tracing::info!(tunnel = %tunnel, request_id, retry_id, "agent connection lost; starting the session on another device");
            let assertion = app.auth.assertion(&caller, &tunnel, retry_id);
            response = send(&app, &other, &prepared, retry_id, assertion).await;
            agent = other;
        }
    }
    if session.is_none()
        && let Some(new) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        // A new session: its later requests go to the device that made it,
        // and only its creator may use it.
        let principal = who.as_ref().map(|w| w.key.as_str()).unwrap_or("");
        app.registry
            .remember_session(&tunnel, new, &agent, principal);
    }
    tracing::debug!(
        request_id = %rid, tunnel = %tunnel, %method, status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64, "proxied"
    );
    if let (Some(who), Some(kind)) = (&who, list)
        && response.status() == StatusCode::OK
    {
        let keep = list_keep(&app, who, tunnel.as_str(), kind);
        response = filter_list(response, kind, keep).await;
    }
    let outcome = if response.status().is_server_error() {
        Outcome::UpstreamError
    } else {
        Outcome::Allowed
    };
    if let Some(p) = &mut audit {
        p.status(response.status().as_u16());
    }
    // The id the audit records and the relay's log lines carry.
    if let Ok(v) = HeaderValue::from_str(&rid) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    mark(count_body(response, audit, app.clone()), outcome)
}

/// Response header naming the request id of the audit log and the logs.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Finishes the audit record of a request answered by the relay itself.
fn finish_early(audit: Option<Pending>, response: Response) -> Response {
    if let Some(mut p) = audit {
        p.status(response.status().as_u16());
        p.finish(0);
    }
    response
}

/// Filters a list response (JSON whole, SSE event by event).
async fn filter_list(response: Response, kind: ListKind, keep: Keep) -> Response {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_sse {
        struct State<S> {
            body: S,
            filter: SseFilter,
            keep: Keep,
            done: bool,
        }
        let state = State {
            body: body.into_data_stream(),
            filter: SseFilter::new(kind),
            keep,
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            use futures_util::StreamExt;
            while !st.done {
                let out = match st.body.next().await {
                    Some(Ok(chunk)) => st
                        .filter
                        .push(&chunk, &st.keep)
                        .map_err(|e| std::io::Error::other(e.to_string())),
                    Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                    None => {
                        st.done = true;
                        Ok(st.filter.finish(&st.keep))
                    }
                };
                match out {
                    Ok(b) if b.is_empty() => continue,
                    Ok(b) => return Some((Ok::<Bytes, std::io::Error>(b), st)),
                    Err(e) => {
                        // Fail closed: end the response rather than pass an
                        // unfiltered list.
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            None
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    match Limited::new(body, MAX_FILTERED_BODY).collect().await {
        Ok(b) => Response::from_parts(parts, Body::from(filter_json(b.to_bytes(), kind, &keep))),
        Err(e) => json_error(
            StatusCode::BAD_GATEWAY,
            "list_not_filtered",
            &format!("the upstream's list response could not be filtered, so it is withheld: {e}"),
        ),
    }
}

/// Counts the response bytes and writes the audit record when the body ends
/// (or is dropped because the client left).
fn count_body(response: Response, pending: Option<Pending>, app: Arc<App>) -> Response {
    struct Counted {
        pending: Option<Pending>,
        bytes: u64,
        app: Arc<App>,
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.app.ops.metrics.bytes("response", self.bytes);
            if let Some(p) = self.pending.take() {
                p.finish(self.bytes);
            }
        }
    }
    let (parts, body) = response.into_parts();
    let counted = Counted {
        pending,
        bytes: 0,
        app,
    };
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), counted),
        |(mut s, mut c)| async move {
            use futures_util::StreamExt;
            match s.next().await {
                Some(Ok(chunk)) => {
                    c.bytes += chunk.len() as u64;
                    Some((Ok::<Bytes, axum::Error>(chunk), (s, c)))
                }
                Some(Err(e)) => Some((Err(e), (s, c))),
                None => None,
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

fn session_unknown() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such MCP session for this identity; start a new session (initialize)",
    )
}

/// A request read and checked, ready to send (again, if a device is lost).
struct Prepared {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Prepared {
    /// Whether this is a JSON-RPC `initialize` (safe to send to another device).
    fn is_initialize(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct Method<'a> {
            #[serde(borrow)]
            method: Option<&'a str>,
        }
        self.method == "POST"
            && serde_json::from_slice::<Method<'_>>(&self.body)
                .is_ok_and(|m| m.method == Some("initialize"))
    }
}

fn session_gone() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "the device that held this MCP session left the tunnel; start a new session (initialize again)",
    )
}

/// Checks the limits and reads the body.
async fn prepare(app: &App, req: Request, rest: String) -> Result<Prepared, Response> {
    let limits = &app.config.limits;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_request_headers {
        return Err(json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!(
                "request headers total {header_bytes} bytes; the limit is {}",
                limits.max_request_headers
            ),
        ));
    }
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > limits.max_request_body) {
        return Err(body_too_large(limits.max_request_body));
    }
    let (parts, body) = req.into_parts();
    let path = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    let body = match Limited::new(body, limits.max_request_body as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(body_too_large(limits.max_request_body));
        }
        Err(e) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad_request_body",
                &format!("reading the request body failed: {e}"),
            ));
        }
    };
    Ok(Prepared {
        method: parts.method.as_str().to_owned(),
        path,
        headers: forwardable_headers(&parts.headers),
        body,
    })
}

/// Sends a prepared request to `agent` and returns its response.
async fn send(
    app: &App,
    agent: &Arc<AgentHandle>,
    req: &Prepared,
    request_id: u64,
    assertion: Option<String>,
) -> Response {
    let limits = &app.config.limits;
    let Ok(permit) = agent.streams.clone().try_acquire_owned() else {
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_requests_in_flight",
            &format!(
                "this tunnel already has {} requests in flight; retry shortly",
                limits.max_streams_per_tunnel
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let head = RequestHead {
        request_id,
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        deadline_ms: Some(limits.response_head_timeout.as_millis() as u64),
        assertion,
    };
    match exchange(app, agent, head, req.body.clone(), permit).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

/// Opens the stream, sends the request, waits for the response head.
async fn exchange(
    app: &App,
    agent: &AgentHandle,
    head: RequestHead,
    body: Bytes,
    permit: OwnedSemaphorePermit,
) -> Result<Response, Response> {
    let wait = app.config.limits.stream_open_timeout;
    let opened = tokio::time::timeout(wait, agent.conn.open_bi())
        .await
        .map_err(|_| {
            tracing::warn!(
                remote = %agent.remote, "the agent accepted no new stream within {wait:?}: it is at its own --max-streams cap (raise it, or lower the relay's max_streams_per_tunnel)"
            );
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_busy",
                "the tunnel's agent has as many requests in flight as it accepts; retry shortly",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        })?;
    let (mut send, recv) = opened.map_err(|e| {
        json_error(
            StatusCode::BAD_GATEWAY,
            "agent_disconnected",
            &format!(
                "the tunnel's agent disconnected ({e}); it reconnects by itself, retry in a moment"
            ),
        )
    })?;
    let mut frames = Vec::with_capacity(3);
    frames.push(Frame::RequestHead(head));
    if !body.is_empty() {
        frames.push(Frame::Data(body));
    }
    frames.push(Frame::End);
    let mut stream = ResponseStream {
        reader: FrameReader::new(recv, app.config.limits.max_frame_payload),
        state: StreamState::new(StreamKind::Response),
        done: false,
        _permit: permit,
    };
    if let Err(e) = write_frames(&mut send, &frames).await {
        stream.done = true;
        return Err(json_error(
            StatusCode::BAD_GATEWAY,
            "agent_disconnected",
            &format!("sending the request to the agent failed: {e}"),
        ));
    }
    let _ = send.finish();

    let first =
        tokio::time::timeout(app.config.limits.response_head_timeout, stream.next_frame()).await;
    let head = match first {
        Err(_) => {
            return Err(json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &format!(
                    "the agent did not answer within {:?}",
                    app.config.limits.response_head_timeout
                ),
            ));
        }
        Ok(Ok(Some(Frame::ResponseHead(h)))) => h,
        Ok(Ok(Some(Frame::StreamError(StreamError { code, message })))) => {
            let status = match code {
                ErrorCode::DEADLINE_EXCEEDED => StatusCode::GATEWAY_TIMEOUT,
                // The agent's own checks (assertion, owner policy) refused it.
                ErrorCode::UNAUTHORIZED | ErrorCode::FORBIDDEN => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            return Err(json_error(
                status,
                code.name(),
                &format!("the agent could not complete the request: {message}"),
            ));
        }
        Ok(Ok(_)) => {
            return Err(json_error(
                StatusCode::BAD_GATEWAY,
                "agent_protocol_error",
                "the agent ended the stream without a response",
            ));
        }
        Ok(Err(e)) => {
            return Err(json_error(
                StatusCode::BAD_GATEWAY,
                "agent_protocol_error",
                &format!("the agent's response was invalid: {e}"),
            ));
        }
    };
    let status = StatusCode::from_u16(head.status).map_err(|_| {
        json_error(
            StatusCode::BAD_GATEWAY,
            "agent_protocol_error",
            &format!("the agent sent status {}", head.status),
        )
    })?;
    let mut response = Response::builder().status(status);
    if let Some(h) = response.headers_mut() {
        for (k, v) in head.headers {
            let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) else {
                continue;
            };
            if !HOP_BY_HOP.contains(&k.as_str()) || k == header::CONTENT_LENGTH {
                h.append(k, v);
            }
        }
    }
    let body = Body::from_stream(futures_util::stream::unfold(stream, |mut s| async move {
        match s.next_frame().await {
            Ok(Some(Frame::Data(d))) => Some((Ok::<Bytes, LinkError>(d), s)),
            Ok(Some(Frame::End)) | Ok(None) => None,
            Ok(Some(Frame::StreamError(e))) => Some((
                Err(LinkError::Io(format!(
                    "agent aborted the response: {}",
                    e.message
                ))),
                s,
            )),
            Ok(Some(_)) => None,
            Err(e) => Some((Err(e), s)),
        }
    }));
    response.body(body).map_err(|e| {
        json_error(
            StatusCode::BAD_GATEWAY,
            "agent_protocol_error",
            &e.to_string(),
        )
    })
}

/// The receiving half of a request stream. Dropped before it is done (the
/// client went away), it stops the stream with `CANCELLED`.
struct ResponseStream {
    reader: FrameReader,
    state: StreamState,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl ResponseStream {
    async fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        if self.done {
            return Ok(None);
        }
        let frame = match self.reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.done = true;
                return Err(LinkError::Io("the agent ended the stream early".into()));
            }
            Err(e) => {
                self.done = true;
                if let LinkError::Protocol(p) = &e {
                    tracing::warn!(code = %p.code(), "agent broke the stream protocol: {p}");
                    self.reader.stop(p.code());
                }
                return Err(e);
            }
        };
        if let Err(p) = self.state.on_frame(&frame) {
            tracing::warn!(code = %p.code(), "agent broke the stream protocol: {p}");
            self.reader.stop(p.code());
            self.done = true;
            return Err(p.into());
        }
        if self.state == StreamState::Done {
            self.done = true;
        }
        Ok(Some(frame))
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.done {
            self.reader.stop(ErrorCode::CANCELLED);
        }
    }
}

fn forwardable_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let connection_listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !HOP_BY_HOP.contains(&k)
                && !CREDENTIALS.contains(&k)
                && !connection_listed.iter().any(|c| c == k)
        })
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// `/t/shop/mcp` → `("shop", "/mcp")`; `/t/shop` → `("shop", "")`.
fn split_tunnel_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/t/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "")),
    }
}

fn body_too_large(limit: u64) -> Response {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("the request body is over the relay's {limit}-byte limit"),
    )
}

/// A JSON error body: `{"error": code, "message": text}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(split_tunnel_path("/t/shop/mcp"), Some(("shop", "/mcp")));
        assert_eq!(split_tunnel_path("/t/shop"), Some(("shop", "")));
        assert_eq!(split_tunnel_path("/t/shop/a/b"), Some(("shop", "/a/b")));
        assert_eq!(split_tunnel_path("/x/shop"), None);
    }

    #[test]
    fn strips_hop_by_hop_and_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("authorization", HeaderValue::from_static("Bearer t"));
        h.insert("cookie", HeaderValue::from_static("a=b"));
        h.insert("mcp-session-id", HeaderValue::from_static("s1"));
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-06-18"),
        );
        h.insert("last-event-id", HeaderValue::from_static("e1"));
        h.insert(
            "accept",
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        h.insert("host", HeaderValue::from_static("relay"));
        let out = forwardable_headers(&h);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        for n in [
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
            "accept",
        ] {
            assert!(names.contains(&n), "{n} forwarded");
        }
    }
}
