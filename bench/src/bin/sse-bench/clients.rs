//! The SSE clients: N long-lived `GET` streams through the relay, one
//! HTTP/1.1 connection each (as N separate MCP clients would hold them),
//! opened a bounded number at a time, each reporting what it sees on one
//! channel: opened, failed, an event delivered (with its latency), ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::upstream::unix_ns;

/// How long one stream may take to connect and get its response head.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest SSE line kept; a longer one is a broken stream.
const MAX_SSE_LINE: usize = 64 * 1024;
/// Failure messages kept for the report.
const KEPT_ERRORS: usize = 5;

/// What one stream reports.
#[derive(Debug)]
pub enum ClientEvent {
    /// `200 text/event-stream` arrived.
    Opened,
    /// It never opened.
    Failed(String),
    /// Event `seq` arrived `latency_ns` after the upstream stamped it.
    Delivered { seq: u64, latency_ns: u64 },
    /// An opened stream ended or broke.
    Ended(String),
}

/// The open streams and the events they report.
#[derive(Debug)]
pub struct Streams {
    tasks: JoinSet<()>,
    events: mpsc::Receiver<ClientEvent>,
    /// Streams open now (opened minus ended).
    pub alive: usize,
    /// Streams that never opened or ended early.
    pub errors: usize,
    /// The first few failure messages.
    pub error_samples: Vec<String>,
}

/// What waiting for one event found.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Per-stream latency (ns) of the streams that got it.
    pub latencies_ns: Vec<u64>,
    /// Streams alive at the broadcast that did not get it in time.
    pub missing: usize,
}

impl Streams {
    /// Starts `n` streams to `GET http://addr{path}`, at most `concurrency`
    /// connecting at once; [`Streams::wait_opened`] waits for them.
    pub fn start(addr: SocketAddr, path: &str, n: usize, concurrency: usize) -> Self {
        // Every stream reports at most: opened/failed, a few events, ended.
        let (tx, events) = mpsc::channel(2 * n + 64);
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let host = addr.to_string();
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            tasks.spawn(stream(
                addr,
                host.clone(),
                path.to_owned(),
                gate.clone(),
                tx.clone(),
            ));
        }
        Self {
            tasks,
            events,
            alive: 0,
            errors: 0,
            error_samples: Vec::new(),
        }
    }

    /// Waits until each of the `n` started streams opened or failed.
    pub async fn wait_opened(&mut self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut settled = 0;
        while settled < n {
            let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                bail!(
                    "only {settled} of {n} streams opened or failed within {within:?} ({} open, {} failed; first errors: {:?})",
                    self.alive,
                    self.errors,
                    self.error_samples
                );
            };
            match e {
                ClientEvent::Opened | ClientEvent::Failed(_) => settled += 1,
                _ => {}
            }
            self.note(e);
        }
        Ok(())
    }

    /// Waits until every stream alive now got event `seq` (or ended), at most `within`.
    pub async fn wait_delivered(&mut self, seq: u64, within: Duration) -> Delivery {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Delivery::default();
        let mut expected = self.alive;
        while out.latencies_ns.len() < expected {
            let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                break;
            };
            match &e {
                ClientEvent::Delivered { seq: s, latency_ns } if *s == seq => {
                    out.latencies_ns.push(*latency_ns)
                }
                ClientEvent::Ended(_) => expected -= 1,
                _ => {}
            }
            self.note(e);
        }
        out.missing = expected - out.latencies_ns.len();
        out
    }

    /// Closes every stream (drops its connection).
    pub async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    fn note(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Opened => self.alive += 1,
            ClientEvent::Failed(why) => self.error(why),
            ClientEvent::Ended(why) => {
                self.alive -= 1;
                self.error(why);
            }
            ClientEvent::Delivered { .. } => {}
        }
    }

    fn error(&mut self, why: String) {
        self.errors += 1;
        if self.error_samples.len() < KEPT_ERRORS {
            self.error_samples.push(why);
        }
    }
}

/// One stream: connect, `GET`, then report every event until it ends.
async fn stream(
    addr: SocketAddr,
    host: String,
    path: String,
    gate: Arc<Semaphore>,
    tx: mpsc::Sender<ClientEvent>,
) {
    let Ok(permit) = gate.acquire_owned().await else {
        return;
    };
    let opened = tokio::time::timeout(STREAM_OPEN_TIMEOUT, open(addr, &host, &path)).await;
    drop(permit);
    // The sender is kept: the connection then lives exactly as long as the stream.
    let (_sender, conn, mut body) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let _ = tx.send(ClientEvent::Failed(format!("{e:#}"))).await;
            return;
        }
        Err(_) => {
            let _ = tx
                .send(ClientEvent::Failed(format!(
                    "no response head within {STREAM_OPEN_TIMEOUT:?}"
                )))
                .await;
            return;
        }
    };
    if tx.send(ClientEvent::Opened).await.is_err() {
        return;
    }
    let mut conn = std::pin::pin!(conn);
    let mut parser = SseParser::default();
    let why = loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            r = &mut conn => break format!("connection ended: {r:?}"),
        };
        let now = unix_ns();
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => break format!("stream broke: {e}"),
            None => break "stream ended".to_owned(),
        };
        let Some(events) = parser.push(&data) else {
            break "an SSE line over 64 KiB".to_owned();
        };
        for data in events {
            if let Some((seq, t_ns)) = parse_event(&data) {
                let latency_ns = now.saturating_sub(t_ns);
                let _ = tx.send(ClientEvent::Delivered { seq, latency_ns }).await;
            }
        }
    };
    let _ = tx.send(ClientEvent::Ended(why)).await;
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;
type Conn = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>;

/// Connects and sends the `GET`; returns the connection (to be driven) and
/// the body of a `200 text/event-stream` response.
async fn open(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(Sender, Conn, hyper::body::Incoming)> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let mut conn = conn;
    let req = Request::get(path)
        .header(HOST, host)
        .header(ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::select! {
        r = sender.send_request(req) => r.context("sending the GET")?,
        r = &mut conn => bail!("the connection closed before a response: {r:?}"),
    };
    let status = resp.status();
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if status != hyper::StatusCode::OK || !ct.starts_with("text/event-stream") {
        let body = resp.into_body();
        let text = tokio::select! {
            b = tokio::time::timeout(Duration::from_secs(2), body.collect()) => match b {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                _ => String::new(),
            },
            _ = &mut conn => String::new(),
        };
        bail!("{status} {ct}: {}", text.trim());
    }
    Ok((sender, conn, resp.into_body()))
}

/// Splits an SSE byte stream into the `data` of each complete event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
}

impl SseParser {
    /// Feeds bytes; returns the data of the events they completed, or
    /// `None` if a line grew over [`MAX_SSE_LINE`].
    pub fn push(&mut self, bytes: &[u8]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_SSE_LINE {
                    return None;
                }
                self.line.push(b);
                continue;
            }
            let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(std::mem::take(&mut self.data));
                }
            } else if let Some(d) = line.strip_prefix(b"data:") {
                let d = d.strip_prefix(b" ").unwrap_or(d);
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(d));
            }
            self.line.clear();
        }
        Some(out)
    }
}

/// `(seq, t_ns)` of a benchmark event's data.
pub fn parse_event(data: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    Some((v.get("seq")?.as_u64()?, v.get("t_ns")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let wire = crate::upstream::event(3, 42);
        let mut stream = b": comment\n\n".to_vec();
        stream.extend_from_slice(&wire);
        stream.extend_from_slice(b"data: a\r\ndata: b\r\n\r\n");
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&stream[..split]).unwrap();
            got.extend(p.push(&stream[split..]).unwrap());
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(parse_event(&got[0]), Some((3, 42)));
            assert_eq!(got[1], "a\nb");
        }
    }

    #[test]
    fn a_runaway_line_is_an_error() {
        let mut p = SseParser::default();
        assert!(p.push(&vec![b'x'; MAX_SSE_LINE + 1]).is_none());
    }

    #[test]
    fn only_benchmark_events_have_a_seq() {
        assert_eq!(parse_event(r#"{"seq":1,"t_ns":2}"#), Some((1, 2)));
        assert_eq!(parse_event(r#"{"jsonrpc":"2.0"}"#), None);
        assert_eq!(parse_event("not json"), None);
    }
}
