//! A minimal, fast upstream MCP endpoint for benchmarks.
//!
//! HTTP/1.1 with keep-alive. `POST /mcp` with a JSON-RPC request gets a fixed
//! ~100-byte JSON-RPC result that echoes the request's `id`; anything else
//! gets 404/405/400. It does as little work per request as a real server
//! possibly could, so the figures measure the path to it, not the server.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The path the upstream serves.
pub const MCP_PATH: &str = "/mcp";
/// Largest request body accepted (64 KiB); larger bodies get 413.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Serves connections from `listener` until `shutdown` completes. Open
/// connections are dropped (aborted) when it returns.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    // Transient (e.g. EMFILE under load): keep serving the rest.
                    Err(_) => continue,
                };
                // Small request/response pairs: never wait for Nagle.
                let _ = stream.set_nodelay(true);
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service_fn(handle))
                        .await;
                });
            }
            // Reap finished connection tasks so the set doesn't grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Answers one request.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != MCP_PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::POST {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n"));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n")),
    };
    Ok(match response_for(&body) {
        Some(json) => json_response(StatusCode::OK, json),
        None => json_response(
            StatusCode::BAD_REQUEST,
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
                .to_vec(),
        ),
    })
}

/// The fixed result for a JSON-RPC request body, echoing its `id`; `None`
/// if the body is not a JSON object.
pub fn response_for(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        id: serde_json::Value,
    }
    let req: Req = serde_json::from_slice(body).ok()?;
    let id = serde_json::to_string(&req.id).ok()?;
    let mut out = Vec::with_capacity(112);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(
        br#","result":{"content":[{"type":"text","text":"hello from bench"}],"isError":false}}"#,
    );
    Some(out)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_id_in_a_small_result() {
        let out = response_for(br#"{"jsonrpc":"2.0","id":42,"method":"tools/call"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 42);
        assert_eq!(v["result"]["isError"], false);
        assert!((80..=120).contains(&out.len()), "{} bytes", out.len());
        let out = response_for(br#"{"id":"abc"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "abc");
    }

    #[test]
    fn rejects_non_json() {
        assert!(response_for(b"not json").is_none());
    }
}
