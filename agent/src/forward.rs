//! One request stream: read the relay's request, call the local upstream MCP
//! server, stream its response back frame by frame.
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
    ErrorCode, Frame, Limits, ResponseHead, StreamError, StreamKind, StreamState, encode_frame,
};
use mcp_tunnel_transport::{FrameReader, LinkError, write_data, write_frame};

use crate::stats::Stats;
use crate::upstream::{Upstream, UpstreamError, UpstreamRequest, error_chain};

/// Longest time the relay may take to send a whole request.
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
    rpc: Option<String>,
    status: Option<u16>,
    note: &'static str,
}

/// Handles one request stream opened by the relay.
pub async fn handle_stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    upstream: Arc<dyn Upstream>,
    stats: Arc<Stats>,
    limits: Limits,
    quiet: bool,
) {
    Stats::bump(&stats.streams_received);
    stats
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let outcome = serve(&mut send, recv, upstream.as_ref(), &stats, &limits).await;
    // Keep the task (and so the connection, during a drain) alive until the
    // relay has acknowledged the response: closing the connection drops
    // unacknowledged stream data.
    let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
    stats
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if !quiet {
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let clock = t.get(11..19).unwrap_or("");
        let status = outcome
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "---".into());
        println!(
            "{clock}  {:<6} {:<12} {:<16} {status}  {:>7.1} ms{}",
            outcome.method,
            outcome.path,
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

async fn serve(
    send: &mut quinn::SendStream,
    recv: quinn::RecvStream,
    upstream: &dyn Upstream,
    stats: &Stats,
    limits: &Limits,
) -> Outcome {
    let mut out = Outcome {
        method: "?".into(),
        path: "?".into(),
        rpc: None,
        status: None,
        note: "",
    };
    let mut reader = FrameReader::new(recv, limits.max_frame_payload as usize);
    let request =
        match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request(&mut reader, limits)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                Stats::bump(&stats.streams_rejected);
                let code = e.code();
                tracing::warn!(code = %code, "rejected a request stream: {e}");
                reader.stop(code);
                let _ = send.reset(code.0.into());
                out.note = "rejected: bad request stream";
                return out;
            }
            Err(_) => {
                Stats::bump(&stats.streams_rejected);
                reader.stop(ErrorCode::DEADLINE_EXCEEDED);
                let _ = send.reset(ErrorCode::DEADLINE_EXCEEDED.0.into());
                out.note = "rejected: request too slow";
                return out;
            }
        };
    let (head, body) = request;
    out.method = head.method.clone();
    out.path = head.path.clone();
    out.rpc = rpc_method(&body);

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

async fn read_request(
    reader: &mut FrameReader,
    limits: &Limits,
) -> Result<(mcp_tunnel_proto::RequestHead, Bytes), LinkError> {
    let mut state = StreamState::new(StreamKind::Request);
    let mut head = None;
    let mut body = BytesMut::new();
    loop {
        let Some(frame) = reader.next().await? else {
            return Err(LinkError::Protocol(
                mcp_tunnel_proto::ProtocolError::Truncated("before End"),
            ));
        };
        state.on_frame(&frame)?;
        match frame {
            Frame::RequestHead(h) => head = Some(h),
            Frame::Data(d) => {
                if (body.len() + d.len()) as u64 > limits.max_request_body {
                    return Err(LinkError::Reset(ErrorCode::LIMIT_EXCEEDED));
                }
                body.extend_from_slice(&d);
            }
            Frame::End => break,
            Frame::StreamError(e) => return Err(LinkError::Reset(e.code)),
            _ => {}
        }
    }
    match head {
        Some(h) => Ok((h, body.freeze())),
        None => Err(LinkError::Protocol(
            mcp_tunnel_proto::ProtocolError::Truncated("no head"),
        )),
    }
}

fn build_request(
    head: &mcp_tunnel_proto::RequestHead,
    body: Bytes,
) -> Result<UpstreamRequest, String> {
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
    fn extracts_rpc_method() {
        assert_eq!(
            rpc_method(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#).as_deref(),
            Some("tools/call")
        );
        assert_eq!(rpc_method(b"[]"), None);
        assert_eq!(rpc_method(b""), None);
    }
}
