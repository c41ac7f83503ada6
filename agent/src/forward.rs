//! One request stream: read the relay's request head, check the caller's
//! identity assertion, read the body, call the local upstream MCP server,
//! stream its response back frame by frame.
//!
//! A stream whose assertion is missing or invalid (see [`crate::assertion`])
//! is answered with a `StreamError` (`unauthorized`) right after its head:
//! its body is not read and the upstream receives nothing.
//!
//! The relay stopping the stream (its client went away) cancels the upstream
//! call: the in-flight hyper request or response body is dropped, which
//! closes the upstream connection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use mcp_tunnel_proto::{
    ErrorCode, Frame, Limits, RequestHead, ResponseHead, StreamError, StreamKind, StreamState,
    encode_frame,
};
use mcp_tunnel_transport::{FrameReader, LinkError, write_data, write_frame};

use crate::assertion::{AssertionVerifier, VerifiedCaller};
use crate::stats::Stats;
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest, error_chain};

/// Longest time the relay may take to send a whole request (head and body).
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks at least this large are written without copying; smaller ones are
/// coalesced up to this size.
const COALESCE_LIMIT: usize = 16 * 1024;

/// How long a finished stream waits for the relay to acknowledge its data.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Response headers never passed back (hop-by-hop, RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the per-request log line needs.
#[derive(Debug)]
struct Outcome {
    method: String,
    path: String,
    /// Who sent it, as the relay's assertion says (email, else subject).
    caller: Option<String>,
    rpc: Option<String>,
    status: Option<u16>,
    note: &'static str,
    /// For the local log (requests with a verified caller).
    record: Option<mcp_tunnel_audit::AuditRecord>,
}

/// What every request stream of a connection shares.
#[derive(Debug, Clone)]
pub struct StreamEnv {
    /// Where requests go.
    pub upstream: Arc<dyn Upstream>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Checks the relay's identity assertions.
    pub verifier: Arc<AssertionVerifier>,
    /// The owner's policy, checked again here.
    pub policy: Arc<crate::policy::AgentPolicy>,
    /// The local log of what was executed (`mcp-agent log`).
    pub log: Option<Arc<mcp_tunnel_audit::AuditLog>>,
    /// Don't print a line per request.
    pub quiet: bool,
    /// Which caller created each MCP session (outlives reconnects).
    pub sessions: Arc<SessionOwners>,
}

/// Which verified caller created each MCP session the upstream handed out.
///
/// The relay binds a session to its creator too, but only in memory: after a
/// relay restart it passes unknown session ids on. The agent, which outlives
/// relay restarts, refuses another identity's session itself.
#[derive(Debug, Default)]
pub struct SessionOwners {
    inner: std::sync::Mutex<SessionMap>,
}

#[derive(Debug, Default)]
struct SessionMap {
    owner: std::collections::HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

/// Sessions remembered; the oldest are forgotten beyond this (an unknown
/// session is passed on, as the relay does, and the upstream decides).
const MAX_SESSIONS: usize = 10_000;

impl SessionOwners {
    /// Whether `sub` may use `session`: yes unless another caller created it.
    pub fn allows(&self, session: &str, sub: &str) -> bool {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.owner.get(session).is_none_or(|o| o == sub)
    }

    /// Remembers that `sub` created `session`.
    pub fn created(&self, session: &str, sub: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.owner.contains_key(session) {
            return;
        }
        if m.order.len() >= MAX_SESSIONS
            && let Some(old) = m.order.pop_front()
        {
            m.owner.remove(&old);
        }
        m.owner.insert(session.to_owned(), sub.to_owned());
        m.order.push_back(session.to_owned());
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Handles one request stream opened by the relay.
pub async fn handle_stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    env: StreamEnv,
    limits: Limits,
) {
    let StreamEnv {
        upstream,
        stats,
        verifier,
        policy,
        log,
        quiet,
        sessions,
    } = env;
    Stats::bump(&stats.streams_received);
    stats
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let ts_ms = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let outcome = serve(
        &mut send,
        recv,
        upstream.as_ref(),
        &stats,
        &verifier,
        &policy,
        &sessions,
        &limits,
    )
    .await;
    // Keep the task (and so the connection, during a drain) alive until the
    // relay has acknowledged the response: closing the connection drops
    // unacknowledged stream data.
    let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
    stats
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let (Some(log), Some(rec)) = (&log, &outcome.record) {
        log.append(mcp_tunnel_audit::AuditRecord {
            ts_ms,
            status: outcome.status,
            latency_us: started.elapsed().as_micros() as u64,
            ..rec.clone()
        });
    }
    if !quiet {
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let clock = t.get(11..19).unwrap_or("");
        let status = outcome
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "---".into());
        println!(
            "{clock}  {:<6} {:<12} {:<20} {:<16} {status}  {:>7.1} ms{}",
            outcome.method,
            outcome.path,
            outcome.caller.as_deref().unwrap_or("-"),
            outcome.rpc.as_deref().unwrap_or("-"),
            started.elapsed().as_secs_f64() * 1000.0,
            if outcome.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", outcome.note)
            },
        );
    }
}

// The stream's pieces, borrowed from the task that owns them.
#[allow(clippy::too_many_arguments)]
async fn serve(
    send: &mut quinn::SendStream,
    recv: quinn::RecvStream,
    upstream: &dyn Upstream,
    stats: &Stats,
    verifier: &AssertionVerifier,
    policy: &crate::policy::AgentPolicy,
    env_sessions: &SessionOwners,
    limits: &Limits,
) -> Outcome {
    let mut out = Outcome {
        method: "?".into(),
        path: "?".into(),
        caller: None,
        rpc: None,
        status: None,
        note: "",
        record: None,
    };
    let mut reader = FrameReader::new(recv, limits.max_frame_payload as usize);
    let mut state = StreamState::new(StreamKind::Request);
    let read_by = tokio::time::Instant::now() + REQUEST_READ_TIMEOUT;
    let head = match read_within(read_by, read_head(&mut reader, &mut state)).await {
        Ok(h) => h,
        Err(failure) => {
            out.note = reject_stream(&mut reader, send, stats, failure);
            return out;
        }
    };
    out.method = head.method.clone();
    out.path = head.path.clone();

    // Identity before anything else: a stream the relay did not vouch for is
    // not read further, and nothing of it reaches the upstream.
    let caller: Option<VerifiedCaller> = match verifier.admit(head.assertion.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            Stats::bump(&stats.streams_refused);
            tracing::warn!(
                request_id = head.request_id,
                tunnel = verifier.tunnel(),
                "refused a request stream: {e}"
            );
            fail_stream(
                send,
                ErrorCode::UNAUTHORIZED,
                format!("the agent refused the request: {e}"),
            )
            .await;
            reader.stop(ErrorCode::UNAUTHORIZED);
            out.note = e.live_note();
            return out;
        }
    };
    out.caller = caller.as_ref().map(VerifiedCaller::display_name);

    let body = match read_within(read_by, read_body(&mut reader, &mut state, limits)).await {
        Ok(b) => b,
        Err(failure) => {
            out.note = reject_stream(&mut reader, send, stats, failure);
            return out;
        }
    };
    out.rpc = rpc_method(&body);

    // Another identity's session: as if it did not exist (404 makes a
    // legitimate client start a new one), and the upstream never sees it.
    let session = header(&head.headers, "mcp-session-id").map(str::to_owned);
    if let (Some(c), Some(sid)) = (&caller, &session)
        && !env_sessions.allows(sid, &c.sub)
    {
        Stats::bump(&stats.requests_denied);
        tracing::warn!(
            request_id = head.request_id,
            caller = %c.display_name(),
            "refused: the MCP session belongs to another identity"
        );
        out.status = Some(session_not_found(send).await);
        out.note = "another identity's session";
        return out;
    }
    // The owner's policy, decided again here (defense in depth) on the
    // verified caller; `None` only when the relay does not authenticate
    // callers (dev mode), where there is nobody to decide on.
    if let Some(c) = &caller {
        let version = head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("mcp-protocol-version"))
            .map(|(_, v)| v.as_str());
        let now = crate::identity::unix_now();
        let checked = policy.check(c, &head.method, version, &body, now);
        out.record = Some(local_record(c, verifier.tunnel(), &head, &checked));
        if let Err(refusal) = checked {
            Stats::bump(&stats.requests_denied);
            tracing::warn!(
                request_id = head.request_id,
                caller = %c.display_name(),
                "refused by the owner's policy: {}",
                refusal.reason
            );
            out.status = Some(refuse(send, &refusal).await);
            out.note = "denied by the owner's policy";
            return out;
        }
    }
    let req = match build_request(&head, body) {
        Ok(r) => r,
        Err(msg) => {
            Stats::bump(&stats.streams_rejected);
            fail_stream(send, ErrorCode::PROTOCOL_ERROR, msg).await;
            out.note = "rejected: bad request head";
            return out;
        }
    };
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let deadline = Duration::from_millis(head.deadline_ms.unwrap_or(120_000));
    let response = tokio::select! {
        r = tokio::time::timeout(deadline, upstream.call(req)) => r,
        _ = &mut stopped => {
            Stats::bump(&stats.requests_cancelled);
            out.note = "cancelled by client";
            return out;
        }
    };
    let response = match response {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            Stats::bump(&stats.upstream_errors);
            let message = match e {
                UpstreamError::Unavailable(m) => m,
                UpstreamError::BadRequest(m) => format!("{}: {m}", upstream.describe()),
            };
            tracing::warn!("{message}");
            fail_stream(send, ErrorCode::UPSTREAM_ERROR, message).await;
            out.note = "upstream unreachable";
            return out;
        }
        Err(_) => {
            Stats::bump(&stats.upstream_errors);
            let message = format!("the local MCP server did not answer within {deadline:?}");
            fail_stream(send, ErrorCode::DEADLINE_EXCEEDED, message).await;
            out.note = "upstream timeout";
            return out;
        }
    };
    out.status = Some(response.status().as_u16());
    if let (Some(c), None) = (&caller, &session)
        && let Some(new) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        env_sessions.created(new, &c.sub);
    }
    let (parts, mut body) = response.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let head_frame = Frame::ResponseHead(ResponseHead {
        status: parts.status.as_u16(),
        headers,
    });
    // Frames the upstream has ready are coalesced into one write (a small
    // JSON response leaves as head + data + end in one packet); the buffer is
    // flushed before waiting on the upstream, so SSE events are never held.
    let mut pending = BytesMut::new();
    if let Err(e) = encode_frame(&head_frame, &mut pending) {
        Stats::bump(&stats.upstream_errors);
        fail_stream(
            send,
            ErrorCode::UPSTREAM_ERROR,
            format!("response head: {e}"),
        )
        .await;
        out.note = "upstream response head too large";
        return out;
    }
    let max_frame = limits.max_frame_payload as usize;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                if flush(send, &mut pending).await.is_err() {
                    Stats::bump(&stats.requests_cancelled);
                    out.note = "cancelled by client";
                    return out;
                }
                tokio::select! {
                    f = body.frame() => f,
                    _ = &mut stopped => {
                        Stats::bump(&stats.requests_cancelled);
                        out.note = "cancelled by client";
                        return out;
                    }
                }
            }
        };
        match frame {
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                let sent = if data.len() >= COALESCE_LIMIT {
                    // Large chunks go out without a copy.
                    match flush(send, &mut pending).await {
                        Ok(()) => write_body(send, data, max_frame).await,
                        Err(e) => Err(e),
                    }
                } else {
                    append_data(&mut pending, &data, max_frame);
                    if pending.len() >= COALESCE_LIMIT {
                        flush(send, &mut pending).await
                    } else {
                        Ok(())
                    }
                };
                if let Err(e) = sent {
                    Stats::bump(&stats.requests_cancelled);
                    tracing::debug!("relay stopped the stream: {e}");
                    out.note = "cancelled by client";
                    return out;
                }
            }
            None => break,
            Some(Err(e)) => {
                Stats::bump(&stats.upstream_errors);
                let _ = flush(send, &mut pending).await;
                let message = format!(
                    "the local MCP server failed mid-response: {}",
                    error_chain(e.as_ref())
                );
                fail_stream(send, ErrorCode::UPSTREAM_ERROR, message).await;
                out.note = "upstream failed mid-response";
                return out;
            }
        }
    }
    let _ = encode_frame(&Frame::End, &mut pending);
    let _ = flush(send, &mut pending).await;
    let _ = send.finish();
    Stats::bump(&stats.requests_completed);
    out
}

/// Why the relay's request could not be read.
enum ReadFailure {
    /// Bad frames, a limit exceeded, or the relay reset the stream.
    Bad(LinkError),
    /// Not all there within [`REQUEST_READ_TIMEOUT`].
    TooSlow,
}

/// Runs one read of the request, due by `by`.
async fn read_within<T>(
    by: tokio::time::Instant,
    read: impl Future<Output = Result<T, LinkError>>,
) -> Result<T, ReadFailure> {
    match tokio::time::timeout_at(by, read).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ReadFailure::Bad(e)),
        Err(_) => Err(ReadFailure::TooSlow),
    }
}

/// Stops and resets a stream the relay sent badly or too slowly; returns
/// the note for the live line.
fn reject_stream(
    reader: &mut FrameReader,
    send: &mut quinn::SendStream,
    stats: &Stats,
    failure: ReadFailure,
) -> &'static str {
    Stats::bump(&stats.streams_rejected);
    let (code, note) = match failure {
        ReadFailure::Bad(e) => {
            let code = e.code();
            tracing::warn!(code = %code, "rejected a request stream: {e}");
            (code, "rejected: bad request stream")
        }
        ReadFailure::TooSlow => (ErrorCode::DEADLINE_EXCEEDED, "rejected: request too slow"),
    };
    reader.stop(code);
    let _ = send.reset(code.0.into());
    note
}

/// Reads the first frame, which must be the request head.
async fn read_head(
    reader: &mut FrameReader,
    state: &mut StreamState,
) -> Result<RequestHead, LinkError> {
    let Some(frame) = reader.next().await? else {
        return Err(LinkError::Protocol(
            mcp_tunnel_proto::ProtocolError::Truncated("no head"),
        ));
    };
    state.on_frame(&frame)?;
    match frame {
        Frame::RequestHead(h) => Ok(h),
        Frame::StreamError(e) => Err(LinkError::Reset(e.code)),
        _ => Err(LinkError::Protocol(
            mcp_tunnel_proto::ProtocolError::Truncated("no head"),
        )),
    }
}

/// Reads the body after the head, up to `End`, within the body limit.
async fn read_body(
    reader: &mut FrameReader,
    state: &mut StreamState,
    limits: &Limits,
) -> Result<Bytes, LinkError> {
    let mut body = BytesMut::new();
    loop {
        let Some(frame) = reader.next().await? else {
            return Err(LinkError::Protocol(
                mcp_tunnel_proto::ProtocolError::Truncated("before End"),
            ));
        };
        state.on_frame(&frame)?;
        match frame {
            Frame::Data(d) => {
                if (body.len() + d.len()) as u64 > limits.max_request_body {
                    return Err(LinkError::Reset(ErrorCode::LIMIT_EXCEEDED));
                }
                body.extend_from_slice(&d);
            }
            Frame::End => return Ok(body.freeze()),
            Frame::StreamError(e) => return Err(LinkError::Reset(e.code)),
            _ => {}
        }
    }
}

fn build_request(head: &RequestHead, body: Bytes) -> Result<UpstreamRequest, String> {
    if !head.path.starts_with('/') {
        return Err(format!(
            "request path {:?} does not start with /",
            head.path
        ));
    }
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| format!("bad method {:?}", head.method))?;
    let uri: http::Uri = head
        .path
        .parse()
        .map_err(|e| format!("bad path {:?}: {e}", head.path))?;
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(h) = req.headers_mut() {
        for (k, v) in &head.headers {
            let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(format!("bad header {k:?}"));
            };
            if k != HOST && !HOP_BY_HOP.contains(&k.as_str()) {
                h.append(k, v);
            }
        }
    }
    req.body(Full::new(body)).map_err(|e| e.to_string())
}

/// The local-log record of a request (status and latency are filled in
/// when it ends).
fn local_record(
    c: &VerifiedCaller,
    tunnel: &str,
    head: &mcp_tunnel_proto::RequestHead,
    checked: &Result<crate::policy::Checked, Box<crate::policy::Refusal>>,
) -> mcp_tunnel_audit::AuditRecord {
    let (what, decision, reason) = match checked {
        Ok(what) => (what.clone(), mcp_tunnel_audit::Decision::Allow, None),
        Err(r) => (
            r.what.clone(),
            mcp_tunnel_audit::Decision::Deny,
            Some(r.reason.clone()),
        ),
    };
    mcp_tunnel_audit::AuditRecord {
        ts_ms: 0,
        request_id: c.rid.clone(),
        principal: Some(c.display_name()),
        client_id: Some(c.client_id.clone()),
        source: None,
        tunnel: tunnel.to_owned(),
        method: what.method,
        tool: what.target,
        args_digest: what.args.as_ref().map(mcp_tunnel_audit::args_digest),
        args: None,
        decision,
        policies: what.policies,
        reason,
        status: None,
        rpc_error: None,
        latency_us: 0,
        bytes_in: head.headers.len() as u64,
        bytes_out: 0,
    }
}

/// 404 for a session id that belongs to someone else.
async fn session_not_found(send: &mut quinn::SendStream) -> u16 {
    let body = serde_json::json!({"error": "session_not_found",
        "message": "no such MCP session for this identity; start a new session (initialize)"});
    respond_json(send, 404, &body).await
}

/// Answers the stream with a whole JSON response made here (head, body,
/// end in one write); returns `status`.
async fn respond_json(send: &mut quinn::SendStream, status: u16, body: &serde_json::Value) -> u16 {
    let frames = [
        Frame::ResponseHead(ResponseHead {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
        }),
        Frame::Data(Bytes::from(body.to_string())),
        Frame::End,
    ];
    let mut buf = BytesMut::new();
    for f in &frames {
        if encode_frame(f, &mut buf).is_err() {
            return status;
        }
    }
    let _ = send.write_chunk(buf.freeze()).await;
    let _ = send.finish();
    status
}

/// Answers a request the owner's policy refused, without the upstream: a
/// refused `tools/call` is a JSON-RPC error (the model reads it), anything
/// else is 403. Returns the status sent.
async fn refuse(send: &mut quinn::SendStream, r: &crate::policy::Refusal) -> u16 {
    let message = format!("forbidden by the tunnel owner's policy: {}", r.reason);
    let (status, body) = match &r.id {
        Some(id) => (
            if r.tool_call { 200 } else { 403 },
            serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": crate::policy::RPC_FORBIDDEN, "message": message,
                "data": {"reason": r.reason, "checked_by": "agent"}}}),
        ),
        None => (
            403,
            serde_json::json!({"error": "forbidden", "message": message}),
        ),
    };
    respond_json(send, status, &body).await
}

/// Writes the coalesced frames, if any.
async fn flush(send: &mut quinn::SendStream, pending: &mut BytesMut) -> Result<(), LinkError> {
    if pending.is_empty() {
        return Ok(());
    }
    let chunk = pending.split().freeze();
    send.write_chunk(chunk).await.map_err(LinkError::from)
}

/// Appends `data` as `Data` frames of at most `max` bytes.
fn append_data(pending: &mut BytesMut, data: &[u8], max: usize) {
    for part in data.chunks(max.max(1)) {
        // Cannot fail: part.len() <= max <= MAX_FRAME_PAYLOAD.
        if let Ok(h) = mcp_tunnel_proto::frame::data_header(part.len()) {
            pending.extend_from_slice(&h);
            pending.extend_from_slice(part);
        }
    }
}

/// Tells the relay this stream failed, then finishes it.
async fn fail_stream(send: &mut quinn::SendStream, code: ErrorCode, message: String) {
    let _ = write_frame(send, &Frame::StreamError(StreamError { code, message })).await;
    let _ = send.finish();
}

/// Splits large chunks so no frame is over the relay's limit.
async fn write_body(
    send: &mut quinn::SendStream,
    mut data: Bytes,
    max: usize,
) -> Result<(), LinkError> {
    while data.len() > max {
        let rest = data.split_off(max);
        write_data(send, data).await?;
        data = rest;
    }
    write_data(send, data).await
}

/// The JSON-RPC method of a request body, for the log line.
fn rpc_method(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        method: Option<String>,
    }
    if body.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<M>(body).ok()?.method
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_their_creator_and_the_oldest_are_forgotten() {
        let s = SessionOwners::default();
        assert!(s.allows("s1", "alice"), "unknown sessions are passed on");
        s.created("s1", "alice");
        s.created("s1", "mallory");
        assert!(s.allows("s1", "alice"));
        assert!(!s.allows("s1", "mallory"), "the first creator keeps it");
        for i in 0..MAX_SESSIONS {
            s.created(&format!("x{i}"), "bob");
        }
        assert!(
            s.allows("s1", "mallory"),
            "bounded: the oldest is forgotten"
        );
        assert!(!s.allows(&format!("x{}", MAX_SESSIONS - 1), "mallory"));
    }

    #[test]
    fn extracts_rpc_method() {
        assert_eq!(
            rpc_method(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#).as_deref(),
            Some("tools/call")
        );
        assert_eq!(rpc_method(b"[]"), None);
        assert_eq!(rpc_method(b""), None);
    }
}
