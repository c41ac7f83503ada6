//! A minimal, fast upstream MCP endpoint for benchmarks.
//!
//! HTTP/1.1 with keep-alive. `POST /mcp` with a JSON-RPC request gets a fixed
//! ~100-byte JSON-RPC result that echoes the request's `id`; anything else
//! gets 404/405/400. It does as little work per request as a real server
//! possibly could, so the figures measure the path to it, not the server.
//!
//! A `tools/call` of the tool `bulk` with `{"bytes": N}` (N ≤ [`MAX_BULK`])
//! is answered with a JSON-RPC result whose text is N bytes long, streamed in
//! 64 KiB chunks of one shared buffer: the bulk-transfer scenario.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
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
/// Largest bulk response (1 GiB).
pub const MAX_BULK: u64 = 1 << 30;
/// Size of each streamed chunk of a bulk response.
pub const BULK_CHUNK: usize = 64 * 1024;

/// A bulk request body asking for `bytes` bytes of text.
pub fn bulk_request(bytes: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"bulk","arguments":{{"bytes":{bytes}}}}}}}"#
    )
}

type Body = Either<Full<Bytes>, StreamBody<BulkStream>>;
type BulkStream = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

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
async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
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
    Ok(match parse(&body) {
        Some(Parsed::Small(json)) => json_response(StatusCode::OK, json),
        Some(Parsed::Bulk { id, bytes }) => bulk_response(&id, bytes),
        None => json_response(
            StatusCode::BAD_REQUEST,
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
                .to_vec(),
        ),
    })
}

/// What a request asks for.
enum Parsed {
    /// The fixed small result.
    Small(Vec<u8>),
    /// A bulk result of `bytes` text bytes; `id` is the JSON of the request id.
    Bulk { id: String, bytes: u64 },
}

fn parse(body: &[u8]) -> Option<Parsed> {
    #[derive(Deserialize)]
    struct Req {
        #[serde(default)]
        id: serde_json::Value,
        #[serde(default)]
        params: Option<Params>,
    }
    #[derive(Deserialize)]
    struct Params {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        arguments: Option<BulkArgs>,
    }
    #[derive(Deserialize)]
    struct BulkArgs {
        #[serde(default)]
        bytes: Option<u64>,
    }
    let req: Req = serde_json::from_slice(body).ok()?;
    if let Some(Params {
        name: Some(name),
        arguments: Some(BulkArgs { bytes: Some(bytes) }),
    }) = &req.params
        && name == "bulk"
    {
        let id = serde_json::to_string(&req.id).ok()?;
        return Some(Parsed::Bulk {
            id,
            bytes: (*bytes).min(MAX_BULK),
        });
    }
    Some(Parsed::Small(small_result(&req.id)?))
}

/// A JSON-RPC result whose text is `bytes` × `x`, streamed in chunks that
/// share one buffer.
fn bulk_response(id: &str, bytes: u64) -> Response<Body> {
    static CHUNK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let chunk = CHUNK.get_or_init(|| Bytes::from(vec![b'x'; BULK_CHUNK]));
    let head =
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#);
    let tail: &'static [u8] = br#""}],"isError":false}}"#;
    let mut frames = Vec::with_capacity(bytes as usize / BULK_CHUNK + 3);
    frames.push(Ok(Frame::data(Bytes::from(head))));
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BULK_CHUNK as u64) as usize;
        frames.push(Ok(Frame::data(chunk.slice(..n))));
        left -= n as u64;
    }
    frames.push(Ok(Frame::data(Bytes::from_static(tail))));
    let mut resp = Response::new(Either::Right(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
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
    small_result(&req.id)
}

fn small_result(id: &serde_json::Value) -> Option<Vec<u8>> {
    let id = serde_json::to_string(id).ok()?;
    let mut out = Vec::with_capacity(112);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(
        br#","result":{"content":[{"type":"text","text":"hello from bench"}],"isError":false}}"#,
    );
    Some(out)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(text.as_bytes()))));
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

    #[tokio::test]
    async fn bulk_streams_the_asked_size_as_json() {
        let body = bulk_request(200_000);
        let Some(Parsed::Bulk { id, bytes }) = parse(body.as_bytes()) else {
            panic!("not a bulk request");
        };
        assert_eq!((id.as_str(), bytes), ("1", 200_000));
        let resp = bulk_response(&id, bytes);
        let all = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(
            v["result"]["content"][0]["text"].as_str().unwrap().len(),
            200_000
        );
        // Other tools get the small result.
        let small = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#;
        assert!(matches!(parse(small.as_bytes()), Some(Parsed::Small(_))));
    }

    #[test]
    fn rejects_non_json() {
        assert!(response_for(b"not json").is_none());
    }
}
