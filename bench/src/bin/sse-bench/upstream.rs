//! The SSE upstream: an MCP-ish HTTP/1.1 server that holds every
//! `GET /mcp` (`Accept: text/event-stream`) open as an SSE stream, keeps a
//! registry of them, and writes one event to all of them on command.
//!
//! It runs in a child process (`sse-bench --serve-upstream`) so that its N
//! sockets and the clients' N sockets are not counted against one process's
//! `RLIMIT_NOFILE`. The parent drives it over stdin/stdout, one line each
//! way ([`Command`], [`Reply`]); stdin closing stops it.
//!
//! `POST /mcp` answers every JSON-RPC request with a small result echoing its
//! `id` (`tools/list`: no tools), and notifications with 202 — enough for the
//! agent's own tool-catalog listing (`agent/src/catalog.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Events queued per stream before the stream counts as stuck (the event
/// is dropped for it and `Reply::Sent` reports fewer streams).
const EVENT_QUEUE: usize = 16;
/// Largest `POST /mcp` body read.
const MAX_POST_BODY: usize = 64 * 1024;
/// How long the parent waits for the child to answer one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the parent waits for the child to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A line from the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// How many SSE streams are open?
    Open,
    /// Write event `seq` to every open stream.
    Broadcast(u64),
}

/// A line back to the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The upstream listens on this port of 127.0.0.1 (first line).
    Listening(u16),
    /// SSE streams open now.
    Open(u64),
    /// Event `seq`, stamped `t_ns` (Unix ns), was queued on `sent` streams.
    Sent { seq: u64, sent: u64, t_ns: u64 },
}

impl Command {
    /// The line for this command (no newline).
    pub fn to_line(self) -> String {
        match self {
            Self::Open => "open".to_owned(),
            Self::Broadcast(seq) => format!("broadcast {seq}"),
        }
    }

    /// Parses a line from [`Command::to_line`].
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let c = match (words.next()?, words.next()) {
            ("open", None) => Self::Open,
            ("broadcast", Some(seq)) => Self::Broadcast(seq.parse().ok()?),
            _ => return None,
        };
        words.next().is_none().then_some(c)
    }
}

impl Reply {
    /// The line for this reply (no newline).
    pub fn to_line(self) -> String {
        match self {
            Self::Listening(port) => format!("listening {port}"),
            Self::Open(n) => format!("open {n}"),
            Self::Sent { seq, sent, t_ns } => format!("sent {seq} {sent} {t_ns}"),
        }
    }

    /// Parses a line from [`Reply::to_line`].
    pub fn parse(line: &str) -> Option<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["listening", port] => Self::Listening(port.parse().ok()?),
            ["open", n] => Self::Open(n.parse().ok()?),
            ["sent", seq, sent, t_ns] => Self::Sent {
                seq: seq.parse().ok()?,
                sent: sent.parse().ok()?,
                t_ns: t_ns.parse().ok()?,
            },
            _ => return None,
        })
    }
}

/// The SSE event with sequence number `seq` stamped `t_ns`.
pub fn event(seq: u64, t_ns: u64) -> Bytes {
    Bytes::from(format!(
        "id: {seq}\nevent: message\ndata: {{\"seq\":{seq},\"t_ns\":{t_ns}}}\n\n"
    ))
}

/// Nanoseconds since the Unix epoch (the clock both processes share).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `sse-bench --serve-upstream`: serves on 127.0.0.1:0 until stdin closes.
pub async fn serve_child() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the upstream on 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let registry = Arc::new(Registry::default());
    let server = tokio::spawn(accept_loop(listener, registry.clone()));
    let mut out = tokio::io::stdout();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    write_line(&mut out, Reply::Listening(port)).await?;
    while let Some(line) = lines.next_line().await? {
        let reply = match Command::parse(&line) {
            Some(Command::Open) => Reply::Open(registry.open()),
            Some(Command::Broadcast(seq)) => {
                let t_ns = unix_ns();
                let sent = registry.broadcast(event(seq, t_ns));
                Reply::Sent { seq, sent, t_ns }
            }
            None => bail!("unknown command from the parent: {line:?}"),
        };
        write_line(&mut out, reply).await?;
    }
    server.abort();
    Ok(())
}

/// The parent's handle on the upstream child; dropping it kills the child.
#[derive(Debug)]
pub struct UpstreamChild {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Where it listens.
    pub port: u16,
}

impl UpstreamChild {
    /// Starts `exe --serve-upstream` and waits until it listens.
    pub async fn start(exe: &std::path::Path) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(exe)
            .arg("--serve-upstream")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting the SSE upstream ({} --serve-upstream)",
                    exe.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the SSE upstream child has no stdin/stdout pipes");
        };
        let mut this = Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            port: 0,
        };
        match this.read_reply(START_TIMEOUT).await? {
            Reply::Listening(port) => this.port = port,
            r => bail!("the SSE upstream started with {r:?} instead of its port"),
        }
        Ok(this)
    }

    /// The child's process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the SSE upstream child has exited")
    }

    /// SSE streams open at the upstream now.
    pub async fn open(&mut self) -> anyhow::Result<u64> {
        match self.ask(Command::Open).await? {
            Reply::Open(n) => Ok(n),
            r => bail!("the SSE upstream answered {r:?} to open"),
        }
    }

    /// Writes event `seq` to every open stream; returns (streams, `t_ns`).
    pub async fn broadcast(&mut self, seq: u64) -> anyhow::Result<(u64, u64)> {
        match self.ask(Command::Broadcast(seq)).await? {
            Reply::Sent { seq: s, sent, t_ns } if s == seq => Ok((sent, t_ns)),
            r => bail!("the SSE upstream answered {r:?} to broadcast {seq}"),
        }
    }

    async fn ask(&mut self, c: Command) -> anyhow::Result<Reply> {
        let line = format!("{}\n", c.to_line());
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("writing to the SSE upstream child (did it exit?)")?;
        self.stdin.flush().await?;
        self.read_reply(REPLY_TIMEOUT).await
    }

    async fn read_reply(&mut self, within: Duration) -> anyhow::Result<Reply> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .with_context(|| format!("the SSE upstream child did not answer within {within:?}"))?
            .context("reading from the SSE upstream child")?;
        let Some(line) = line else {
            let status = self.child.try_wait().ok().flatten();
            bail!("the SSE upstream child exited ({status:?})");
        };
        Reply::parse(&line).with_context(|| format!("bad line from the SSE upstream: {line:?}"))
    }
}

/// The open SSE streams.
#[derive(Debug, Default)]
struct Registry {
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
}

impl Registry {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<Bytes>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> u64 {
        self.streams().len() as u64
    }

    /// Queues `event` on every stream; returns on how many.
    fn broadcast(&self, event: Bytes) -> u64 {
        let streams = self.streams();
        streams
            .values()
            .filter(|tx| tx.try_send(event.clone()).is_ok())
            .count() as u64
    }

    fn register(self: &Arc<Self>) -> SseBody {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.streams().insert(id, tx);
        SseBody {
            rx,
            id,
            registry: self.clone(),
        }
    }
}

/// A response body that yields the events queued for one stream; dropped
/// (the connection closed), it leaves the registry.
#[derive(Debug)]
struct SseBody {
    rx: mpsc::Receiver<Bytes>,
    id: u64,
    registry: Arc<Registry>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|e| e.map(|b| Ok(Frame::data(b))))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.registry.streams().remove(&self.id);
    }
}

type ResBody = BoxBody<Bytes, Infallible>;

async fn accept_loop(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // EMFILE and the like: the run reports the streams that never
            // arrived; back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, registry.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    registry: Arc<Registry>,
) -> Result<Response<ResBody>, Infallible> {
    if req.uri().path() != "/mcp" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    let wants_sse = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    Ok(match *req.method() {
        Method::GET if wants_sse => {
            let mut resp = Response::new(registry.register().boxed());
            let h = resp.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        Method::GET => plain(
            StatusCode::NOT_ACCEPTABLE,
            "GET needs Accept: text/event-stream\n",
        ),
        Method::POST => match Limited::new(req.into_body(), MAX_POST_BODY).collect().await {
            Ok(body) => match rpc_result(&body.to_bytes()) {
                Some(json) => {
                    let mut resp = Response::new(Full::new(Bytes::from(json)).boxed());
                    resp.headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    resp
                }
                None => {
                    let mut resp = plain(StatusCode::ACCEPTED, "");
                    *resp.body_mut() = Full::new(Bytes::new()).boxed();
                    resp
                }
            },
            Err(_) => plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        },
        Method::DELETE => plain(StatusCode::OK, ""),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "GET, POST or DELETE\n"),
    })
}

/// The JSON-RPC result for a request body, echoing its `id`; `None` for a
/// notification (no `id`) or a body that is not a JSON object (both 202).
fn rpc_result(body: &[u8]) -> Option<String> {
    let req: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = req.get("id")?.clone();
    let result = match req.get("method").and_then(|m| m.as_str()) {
        Some("initialize") => serde_json::json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "sse-bench upstream", "version": env!("CARGO_PKG_VERSION")}
        }),
        Some("tools/list") => serde_json::json!({"tools": []}),
        _ => serde_json::json!({}),
    };
    Some(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResBody> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

async fn write_line(out: &mut tokio::io::Stdout, reply: Reply) -> anyhow::Result<()> {
    out.write_all(format!("{}\n", reply.to_line()).as_bytes())
        .await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_round_trip() {
        for c in [Command::Open, Command::Broadcast(7)] {
            assert_eq!(Command::parse(&c.to_line()), Some(c));
        }
        for r in [
            Reply::Listening(8080),
            Reply::Open(10_000),
            Reply::Sent {
                seq: 3,
                sent: 9_999,
                t_ns: 1_700_000_000_000_000_000,
            },
        ] {
            assert_eq!(Reply::parse(&r.to_line()), Some(r));
        }
        assert_eq!(Command::parse("broadcast"), None);
        assert_eq!(Command::parse("broadcast x"), None);
        assert_eq!(Command::parse("open 1"), None);
        assert_eq!(Reply::parse("sent 1 2"), None);
    }

    #[test]
    fn answers_requests_and_accepts_notifications() {
        let init = rpc_result(br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&init).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
        let list = rpc_result(br#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["result"]["tools"], serde_json::json!([]));
        assert_eq!(
            rpc_result(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(rpc_result(b"nope"), None);
    }

    #[tokio::test]
    async fn broadcast_reaches_open_streams_and_dropped_ones_leave() {
        let registry = Arc::new(Registry::default());
        let mut a = registry.register();
        let b = registry.register();
        assert_eq!(registry.open(), 2);
        drop(b);
        assert_eq!(registry.open(), 1);
        assert_eq!(registry.broadcast(event(1, 5)), 1);
        let frame = a.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], &event(1, 5)[..]);
    }
}
