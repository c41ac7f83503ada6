//! A swarm of lightweight in-process agents speaking the real wire protocol.
//!
//! Each swarm agent is one task that does what `mcp-agent connect` does on
//! the wire (see `agent/src/connect.rs`), minus the upstream:
//!
//! - every attempt: `GET /.well-known/mcp-relay` on a fresh HTTPS connection
//!   (unless discovery is off), QUIC handshake with the agent's transport
//!   settings and TLS config, control stream, `Hello` with the agent token,
//!   wait for `Welcome`; a failed attempt waits [`Backoff::next_delay`],
//!   a `Welcome` resets the backoff;
//! - once welcomed: `Catalog` (no policy, no tools), then `Catalog` with one
//!   read-only tool (the real agent sends the second once its upstream has
//!   listed its tools), `Ping` every heartbeat interval, `Pong` to `Ping`,
//!   and a minimal answer on every request stream (head, body, end → `200`
//!   with a small JSON-RPC result naming the tunnel);
//! - a lost connection waits 0–250 ms, then starts over.
//!
//! The agents share a few QUIC endpoints (UDP sockets), like a load
//! generator. Every attempt, failure, `Welcome` and loss is recorded with
//! its time, for the reconnect analysis.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mcp_agent::backoff::Backoff;
use mcp_agent::connect::ATTEMPT_TIMEOUT;
use mcp_tunnel_proto::{
    ALPN, Catalog, ControlSide, ControlState, Credentials, ErrorCode, Frame, Hello, RequestHead,
    ResponseHead, SUPPORTED_VERSIONS, Secret, StreamKind, StreamState, ToolDescriptor, TunnelName,
    Welcome,
};
use mcp_tunnel_transport::quic::{AGENT_MAX_INCOMING_STREAMS, agent_transport};
use mcp_tunnel_transport::{FrameReader, write_frame, write_frames};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::https::Front;

/// Longest time the relay may take to send a whole request on a stream.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a finished response stream waits for the relay's acknowledgement.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for agents to close and endpoints to go idle.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The tunnel name of swarm agent `i` (`s00001`, …).
pub fn tunnel_name(i: usize) -> String {
    format!("s{:05}", i + 1)
}

/// What a swarm needs to know.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Agents to run.
    pub agents: usize,
    /// QUIC client endpoints (UDP sockets) they share.
    pub endpoints: usize,
    /// Handshakes in flight at once while agents connect for the first time
    /// (reconnects are never held back: they follow the agent's backoff).
    pub first_connects: usize,
    /// The relay's QUIC address (used as is when discovery is off).
    pub quic: SocketAddr,
    /// The relay's HTTPS front: discovery goes there.
    pub front: Front,
    /// Ask `/.well-known/mcp-relay` before every attempt, as the agent does.
    pub discovery: bool,
    /// Send the agent's catalogs after `Welcome`, as the agent does.
    pub catalog: bool,
    /// The dev CA (PEM) to trust for QUIC.
    pub ca: std::path::PathBuf,
    /// The agent token every agent presents.
    pub token: String,
}

/// What happened to an agent, when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A connection attempt started (discovery + handshake + Hello).
    Attempt,
    /// The attempt failed (or timed out); backoff follows.
    Failed,
    /// The relay welcomed the agent: it serves from now on.
    Welcome,
    /// The connection was lost after a `Welcome`.
    Lost,
}

/// One recorded event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// When.
    pub at: Instant,
    /// Which agent (index).
    pub agent: u32,
    /// What.
    pub kind: EventKind,
}

/// A running swarm; [`Swarm::shutdown`] closes every connection.
#[derive(Debug)]
pub struct Swarm {
    shared: Arc<Shared>,
    endpoints: Vec<quinn::Endpoint>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Stops agents that were never welcomed (a ramp-up that ran out of time).
    ramp_stop: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    config: SwarmConfig,
    client: quinn::ClientConfig,
    first_connects: Semaphore,
    events: Mutex<Vec<Event>>,
    online: AtomicUsize,
    /// Per agent: connected right now.
    online_flags: Vec<AtomicBool>,
    /// Why an agent stopped for good (the relay refused it), if one did.
    fatal: Mutex<Option<String>>,
    /// The latest attempt failure, for error messages.
    last_failure: Mutex<Option<String>>,
}

impl Swarm {
    /// Starts `config.agents` agents; they connect in the background.
    pub fn start(config: SwarmConfig) -> anyhow::Result<Self> {
        let client = quic_client_config(&config.ca)?;
        let bind: SocketAddr = if config.quic.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
        };
        let endpoints = (0..config.endpoints.max(1))
            .map(|_| {
                quinn::Endpoint::client(bind)
                    .with_context(|| format!("binding a QUIC client endpoint on {bind}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            first_connects: Semaphore::new(config.first_connects.max(1)),
            client,
            events: Mutex::new(Vec::new()),
            online: AtomicUsize::new(0),
            online_flags: (0..config.agents).map(|_| AtomicBool::new(false)).collect(),
            fatal: Mutex::new(None),
            last_failure: Mutex::new(None),
            config,
        });
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let ramp_stop = CancellationToken::new();
        for i in 0..shared.config.agents {
            let name = TunnelName::parse(&tunnel_name(i)).context("building a tunnel name")?;
            tasks.spawn(run_agent(
                shared.clone(),
                i as u32,
                name,
                endpoints[i % endpoints.len()].clone(),
                shutdown.clone(),
                ramp_stop.clone(),
            ));
        }
        tasks.close();
        Ok(Self {
            shared,
            endpoints,
            tasks,
            shutdown,
            ramp_stop,
        })
    }

    /// Stops every agent that has not been welcomed yet; connected agents
    /// carry on.
    pub fn stop_connecting(&self) {
        self.ramp_stop.cancel();
    }

    /// Agents connected (welcomed and not lost) right now.
    pub fn online(&self) -> usize {
        self.shared.online.load(Ordering::Relaxed)
    }

    /// Indexes of the agents connected right now.
    pub fn online_agents(&self) -> Vec<usize> {
        let flags = &self.shared.online_flags;
        (0..flags.len())
            .filter(|&i| flags[i].load(Ordering::Relaxed))
            .collect()
    }

    /// Why an agent stopped for good, if one did.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.shared.fatal).clone()
    }

    /// The most recent attempt failure.
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.shared.last_failure).clone()
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.shared.events).clone()
    }

    /// Closes every connection (as a shut-down agent does) and waits for the
    /// agents to stop and the endpoints to go idle.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.tasks.wait()).await;
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, ep.wait_idle()).await;
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's QUIC client config: its TLS helper trusting the dev CA, the
/// tunnel ALPN, its transport settings. Built once and shared; session
/// resumption is off because `mcp-agent connect` builds a fresh TLS config
/// (so a fresh, empty session cache) for every attempt.
fn quic_client_config(ca: &std::path::Path) -> anyhow::Result<quinn::ClientConfig> {
    let roots = mcp_agent::tls::load_ca(ca)?;
    let mut tls = mcp_agent::tls::client_config(roots, &[ALPN])?;
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .context("building the QUIC TLS config")?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    c.transport_config(agent_transport(AGENT_MAX_INCOMING_STREAMS));
    Ok(c)
}

impl Shared {
    fn record(&self, agent: u32, kind: EventKind) {
        lock(&self.events).push(Event {
            at: Instant::now(),
            agent,
            kind,
        });
    }
}

/// Why an attempt failed.
enum AttemptError {
    /// Try again after the backoff.
    Retry(String),
    /// The relay refused this agent for good (the real agent exits).
    Fatal(String),
}

/// How a served connection ended.
enum Ended {
    Shutdown,
    Lost,
    Fatal(String),
}

type Established = (quinn::Connection, quinn::SendStream, FrameReader, Welcome);

/// One agent: connect, serve, reconnect — the loop of `mcp-agent connect`.
async fn run_agent(
    shared: Arc<Shared>,
    id: u32,
    name: TunnelName,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    ramp_stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut welcomed_before = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        // Only the first connection of each agent is paced (a ramp-up).
        let permit = if welcomed_before {
            None
        } else {
            tokio::select! {
                p = shared.first_connects.acquire() => p.ok(),
                _ = shutdown.cancelled() => return,
                _ = ramp_stop.cancelled() => return,
            }
        };
        shared.record(id, EventKind::Attempt);
        let attempt = tokio::select! {
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, establish(&shared, &name, &endpoint)) => r,
            _ = shutdown.cancelled() => return,
            _ = ramp_stop.cancelled(), if !welcomed_before => return,
        };
        drop(permit);
        let failure = match attempt {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(AttemptError::Fatal(why))) => {
                shared.record(id, EventKind::Failed);
                lock(&shared.fatal).get_or_insert(format!("{name}: {why}"));
                return;
            }
            Ok(Err(AttemptError::Retry(why))) => Err(why),
            Err(_) => Err("connecting to the relay timed out".to_owned()),
        };
        let (conn, send, reader, welcome) = match failure {
            Ok(v) => v,
            Err(why) => {
                shared.record(id, EventKind::Failed);
                *lock(&shared.last_failure) = Some(format!("{name}: {why}"));
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => return,
                    _ = ramp_stop.cancelled(), if !welcomed_before => return,
                }
            }
        };
        backoff.reset();
        welcomed_before = true;
        shared.record(id, EventKind::Welcome);
        shared.online.fetch_add(1, Ordering::Relaxed);
        shared.online_flags[id as usize].store(true, Ordering::Relaxed);
        let ended = serve(&shared, &name, &conn, send, reader, &welcome, &shutdown).await;
        shared.online_flags[id as usize].store(false, Ordering::Relaxed);
        shared.online.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Ended::Shutdown => return,
            Ended::Fatal(why) => {
                shared.record(id, EventKind::Lost);
                lock(&shared.fatal).get_or_insert(format!("{name}: {why}"));
                return;
            }
            Ended::Lost => {
                shared.record(id, EventKind::Lost);
                let delay = Duration::from_millis(rand::random_range(0..=250));
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Discovery, QUIC handshake, Hello → Welcome.
async fn establish(
    shared: &Shared,
    name: &TunnelName,
    endpoint: &quinn::Endpoint,
) -> Result<Established, AttemptError> {
    let config = &shared.config;
    let retry = |what: &str, e: &dyn std::fmt::Display| AttemptError::Retry(format!("{what}: {e}"));
    let mut addr = config.quic;
    if config.discovery {
        let port = config
            .front
            .discover_quic_port()
            .await
            .map_err(|e| retry("discovery", &format!("{e:#}")))?;
        addr.set_port(port);
    }
    let conn = endpoint
        .connect_with(shared.client.clone(), addr, "localhost")
        .map_err(|e| retry("QUIC connect", &e))?
        .await
        .map_err(|e| retry("QUIC handshake", &e))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| retry("opening the control stream", &e))?;
    let hello = Frame::Hello(Hello {
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        agent_version: concat!(env!("CARGO_PKG_VERSION"), " swarm-bench").to_owned(),
        tunnel: name.clone(),
        credentials: Credentials::AgentToken {
            token: Secret::new(config.token.clone()),
        },
    });
    write_frame(&mut send, &hello)
        .await
        .map_err(|e| retry("sending Hello", &e))?;
    let mut reader = FrameReader::new(recv, 0);
    let mut state = ControlState::new(ControlSide::Agent);
    let frame = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(retry("waiting for Welcome", &"control stream closed")),
        Err(e) => {
            let why = match conn.close_reason() {
                Some(r) => r.to_string(),
                None => e.to_string(),
            };
            return Err(retry("waiting for Welcome", &why));
        }
    };
    state
        .on_frame(&frame)
        .map_err(|e| retry("relay broke the protocol", &e))?;
    match frame {
        Frame::Welcome(w) => Ok((conn, send, reader, w)),
        Frame::Reject(r) => {
            let why = format!("rejected ({}): {}", r.code, r.message);
            if matches!(
                r.code,
                ErrorCode::UNAUTHORIZED
                    | ErrorCode::NAME_TAKEN
                    | ErrorCode::VERSION_MISMATCH
                    | ErrorCode::BAD_TUNNEL_NAME
            ) {
                Err(AttemptError::Fatal(why))
            } else {
                Err(AttemptError::Retry(why))
            }
        }
        _ => Err(retry("waiting for Welcome", &"unexpected first frame")),
    }
}

/// The welcomed connection: catalogs, heartbeats, request streams.
async fn serve(
    shared: &Arc<Shared>,
    name: &TunnelName,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    welcome: &Welcome,
    shutdown: &CancellationToken,
) -> Ended {
    if shared.config.catalog {
        let first = Frame::Catalog(Catalog {
            policy: None,
            tools: None,
        });
        let listed = Frame::Catalog(Catalog {
            policy: None,
            tools: Some(vec![ToolDescriptor {
                name: "echo".into(),
                annotations: Some(serde_json::json!({ "readOnlyHint": true })),
            }]),
        });
        if write_frames(&mut send, &[first, listed]).await.is_err() {
            return Ended::Lost;
        }
    }
    let max_frame = welcome.limits.max_frame_payload as usize;
    let interval = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(200, 60_000));
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_pong = tokio::time::Instant::now();
    let mut state = ControlState::Open(ControlSide::Agent);
    loop {
        tokio::select! {
            s = conn.accept_bi() => match s {
                Ok((s, r)) => {
                    tokio::spawn(answer(s, r, max_frame, name.clone()));
                }
                Err(e) => break lost_or_fatal(e),
            },
            f = reader.next() => match f {
                Ok(Some(frame)) => {
                    if let Err(e) = state.on_frame(&frame) {
                        conn.close(e.code().0.into(), e.to_string().as_bytes());
                        break Ended::Lost;
                    }
                    match frame {
                        Frame::Pong(_) => last_pong = tokio::time::Instant::now(),
                        Frame::Ping(n) => { let _ = write_frame(&mut send, &Frame::Pong(n)).await; }
                        Frame::GoAway(_) => break Ended::Lost,
                        _ => {}
                    }
                }
                Ok(None) => break Ended::Lost,
                Err(_) => break match conn.close_reason() {
                    Some(reason) => lost_or_fatal(reason),
                    None => Ended::Lost,
                },
            },
            _ = heartbeat.tick() => {
                if last_pong.elapsed() > interval * 3 + Duration::from_secs(1) {
                    conn.close(ErrorCode::HEARTBEAT_TIMEOUT.0.into(), b"no heartbeat answer");
                    break Ended::Lost;
                }
                seq += 1;
                if write_frame(&mut send, &Frame::Ping(seq)).await.is_err() {
                    break match conn.close_reason() {
                        Some(reason) => lost_or_fatal(reason),
                        None => Ended::Lost,
                    };
                }
            }
            _ = shutdown.cancelled() => {
                conn.close(ErrorCode::NO_ERROR.0.into(), b"agent shut down");
                break Ended::Shutdown;
            }
        }
    }
}

fn lost_or_fatal(e: quinn::ConnectionError) -> Ended {
    if let quinn::ConnectionError::ApplicationClosed(c) = &e {
        let code = ErrorCode(u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX));
        if matches!(
            code,
            ErrorCode::REPLACED | ErrorCode::UNAUTHORIZED | ErrorCode::NAME_TAKEN
        ) {
            return Ended::Fatal(format!(
                "relay closed the connection ({code}): {}",
                String::from_utf8_lossy(&c.reason)
            ));
        }
    }
    Ended::Lost
}

/// Answers one request stream: reads head, body and end, then sends `200`
/// with a JSON-RPC result naming the tunnel (so a check sees which agent
/// answered).
async fn answer(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame: usize,
    name: TunnelName,
) {
    let mut reader = FrameReader::new(recv, max_frame);
    let mut state = StreamState::new(StreamKind::Request);
    let mut head: Option<RequestHead> = None;
    let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, async {
        loop {
            match reader.next().await {
                Ok(Some(frame)) => {
                    state.on_frame(&frame).map_err(|e| e.code())?;
                    match frame {
                        Frame::RequestHead(h) => head = Some(h),
                        Frame::End => return Ok(()),
                        _ => {}
                    }
                }
                Ok(None) => return Err(ErrorCode::PROTOCOL_ERROR),
                Err(e) => return Err(e.code()),
            }
        }
    })
    .await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(code)) => {
            let _ = send.reset(code.0.into());
            return;
        }
        Err(_) => {
            let _ = send.reset(ErrorCode::DEADLINE_EXCEEDED.0.into());
            return;
        }
    }
    let request_id = head.map(|h| h.request_id).unwrap_or(0);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"tunnel":"{name}","request_id":{request_id}}}}}"#
    );
    let frames = [
        Frame::ResponseHead(ResponseHead {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
        }),
        Frame::Data(Bytes::from(body)),
        Frame::End,
    ];
    if write_frames(&mut send, &frames).await.is_ok() && send.finish().is_ok() {
        let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_names_are_valid_and_distinct() {
        let names: std::collections::HashSet<String> = (0..20_000).map(tunnel_name).collect();
        assert_eq!(names.len(), 20_000);
        assert_eq!(tunnel_name(0), "s00001");
        assert!(TunnelName::parse(&tunnel_name(19_999)).is_ok());
    }
}
