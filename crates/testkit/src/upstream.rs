//! A controllable upstream HTTP server on loopback, standing in for a local
//! MCP server where a test needs to observe the upstream side: which headers
//! arrived, when SSE events were produced, whether a request was cancelled.
//!
//! Routes:
//! - `POST /mcp` — answers a JSON-RPC request with `{"result": {"echo": params}}`.
//! - `GET /sse?n=N&interval_ms=MS` — N SSE events, MS apart.
//! - `GET /slow?ms=MS` — answers after MS.
//! - `GET /big?bytes=N` — N bytes of body in 64 KiB chunks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

/// What the upstream observed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Requests received on any route (the agent's own tool listing, which
    /// identifies itself by its user agent, is counted apart).
    pub requests: AtomicU64,
    /// Requests of the agent's own tool listing (`mcp-agent … (tool catalog)`).
    pub catalog_requests: AtomicU64,
    /// SSE streams whose client went away before the last event.
    pub sse_cancelled: AtomicU64,
    /// SSE streams that ran to the end.
    pub sse_completed: AtomicU64,
    /// Headers of the last `POST /mcp`.
    pub last_headers: Mutex<Vec<(String, String)>>,
    /// When each SSE event was produced, relative to server start.
    pub produced: Mutex<Vec<Duration>>,
}

/// A running upstream server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub observed: Arc<Observed>,
    /// When it started (the zero of `produced`).
    pub started: Instant,
}

#[derive(Clone)]
struct Ctx {
    observed: Arc<Observed>,
    started: Instant,
}

impl Upstream {
    /// Starts on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let observed = Arc::new(Observed::default());
        let started = Instant::now();
        let ctx = Ctx {
            observed: observed.clone(),
            started,
        };
        let app = Router::new()
            .route("/mcp", post(mcp))
            .route("/sse", get(sse))
            .route("/slow", get(slow))
            .route("/big", get(big))
            .with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            observed,
            started,
        })
    }

    /// `http://127.0.0.1:PORT/mcp`
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

async fn mcp(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let catalog = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("(tool catalog)"));
    if catalog {
        ctx.observed
            .catalog_requests
            .fetch_add(1, Ordering::Relaxed);
    } else {
        ctx.observed.requests.fetch_add(1, Ordering::Relaxed);
    }
    if !catalog {
        *ctx.observed
            .last_headers
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    axum::Json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": req.get("id").cloned().unwrap_or(serde_json::Value::Null),
        "result": { "echo": req.get("params").cloned().unwrap_or_default() },
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct SseParams {
    n: Option<u32>,
    interval_ms: Option<u64>,
}

/// Counts the stream as cancelled if dropped before its last event.
struct SseGuard {
    observed: Arc<Observed>,
    done: bool,
}

impl Drop for SseGuard {
    fn drop(&mut self) {
        let c = if self.done {
            &self.observed.sse_completed
        } else {
            &self.observed.sse_cancelled
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

async fn sse(State(ctx): State<Ctx>, Query(p): Query<SseParams>) -> Response {
    ctx.observed.requests.fetch_add(1, Ordering::Relaxed);
    let n = p.n.unwrap_or(5);
    let interval = Duration::from_millis(p.interval_ms.unwrap_or(200));
    let guard = SseGuard {
        observed: ctx.observed.clone(),
        done: false,
    };
    let stream = futures_util::stream::unfold((0u32, guard), move |(i, mut guard)| {
        let ctx = ctx.clone();
        async move {
            if i == n {
                guard.done = true;
                drop(guard);
                return None;
            }
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let at = ctx.started.elapsed();
            ctx.observed
                .produced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(at);
            let ev = format!(
                "id: {i}\ndata: {{\"i\":{i},\"produced_ms\":{}}}\n\n",
                at.as_millis()
            );
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(ev)),
                (i + 1, guard),
            ))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(State(ctx): State<Ctx>, Query(p): Query<SlowParams>) -> Response {
    ctx.observed.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(p.ms.unwrap_or(1000))).await;
    "done".into_response()
}

#[derive(serde::Deserialize)]
struct BigParams {
    bytes: Option<usize>,
}

async fn big(State(ctx): State<Ctx>, Query(p): Query<BigParams>) -> Response {
    ctx.observed.requests.fetch_add(1, Ordering::Relaxed);
    let total = p.bytes.unwrap_or(1 << 20);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::iter((0..total.div_ceil(chunk.len())).map(move |i| {
        let len = (total - i * chunk.len()).min(chunk.len());
        Ok::<_, std::convert::Infallible>(chunk.slice(..len))
    }));
    (
        [(header::CONTENT_LENGTH, total.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}
