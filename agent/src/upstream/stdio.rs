//! Bridge to a stdio MCP server run as a child process (`--stdio "CMD ARGS…"`).
//!
//! The tunnel side speaks Streamable HTTP; the child speaks newline-delimited
//! JSON-RPC on stdin/stdout. The bridge routes at the JSON-RPC level and never
//! interprets MCP methods, so every protocol version and unknown method passes
//! through unchanged.
//!
//! # Sessions and children
//!
//! - A `POST` whose body is a single `initialize` request and that carries no
//!   `Mcp-Session-Id` spawns a new child and opens a session. Its fresh random
//!   id comes back in the `Mcp-Session-Id` response header.
//! - A request carrying `Mcp-Session-Id` goes to that session's child. An
//!   unknown or ended session answers HTTP 404 with a JSON-RPC error body, so
//!   the client starts over with `initialize` (as the MCP spec says).
//! - A request with no session that is not `initialize` (the 2026-07-28
//!   `server/discover` probe, stateless clients) goes to one shared
//!   "sessionless" child, spawned on first use. After it exits it is spawned
//!   again on the next request, waiting a jittered exponential backoff
//!   (0.5–1 s, 1–2 s, … capped at 30 s) if it died young, so a broken command
//!   does not spin.
//! - `GET` with `Accept: text/event-stream` and a session id opens that
//!   session's event stream (one per session: a new one replaces the old);
//!   without a session id it is 405.
//! - `DELETE` with a session id ends the session and stops its child (204).
//! - A session also ends when its child exits (its in-flight requests fail
//!   with HTTP 502 or, on an event stream, a JSON-RPC error response), when
//!   its initialize request is abandoned before the answer, and after
//!   [`IDLE_TIMEOUT`] without a request. Dropping the bridge stops every child.
//!
//! Stopping a child closes its stdin (a well-behaved server exits on EOF) and
//! kills it after [`EXIT_GRACE`]; the child is always waited for, so no zombie
//! is left behind.
//!
//! # Routing
//!
//! Every client message is written to the child's stdin as one line (a batch
//! is split into its messages). Request ids are rewritten to numbers unique
//! within the child, and so are `_meta.progressToken`s; both are restored on
//! the way back. So requests from different HTTP requests or clients never
//! collide. A client's `notifications/cancelled` is rewritten to match and
//! releases the POST waiting for that request (a JSON answer gets a -32800
//! error, an event stream just ends), since the child will not answer it.
//!
//! Each stdout line is one message. A response goes to the `POST` waiting for
//! its id. A progress notification goes to the `POST` of the request whose
//! token it carries. Any other child message (log messages, server→client
//! requests) goes to the oldest pending `POST` answered as an event stream,
//! else to the session's `GET` event stream, else is dropped (debug log).
//!
//! A `POST` with only notifications and responses is answered 202. A `POST`
//! with requests is answered as an event stream (`text/event-stream`) when
//! the client accepts one: it carries the child messages routed to it and
//! ends with the responses. Otherwise the answer is `application/json`, sent
//! once every response is in. Dropping the response (the client went away)
//! sends the child `notifications/cancelled` for what is still pending.
//!
//! # Limits
//!
//! | limit                                   | default                     |
//! |-----------------------------------------|-----------------------------|
//! | sessions (one child each)               | [`MAX_SESSIONS`]: 64        |
//! | idle time before a session (or the sessionless child) ends | [`IDLE_TIMEOUT`]: 30 min |
//! | stdout line (one message)               | [`MAX_LINE`]: 16 MiB        |
//! | requests in flight per child            | [`MAX_IN_FLIGHT`]: 256      |
//! | stdin close → kill                      | [`EXIT_GRACE`]: 2 s         |
//! | sessionless respawn backoff             | [`RESPAWN_BASE`] 1 s (jittered to 0.5–1 s) … [`RESPAWN_CAP`] 30 s |
//!
//! [`StdioLimits`] overrides them (tests use small ones).
//!
//! # Environment
//!
//! Children inherit the agent's environment plus the `--env NAME=VALUE`
//! variables ([`EnvSpec`]), whose values may hold stored secrets
//! (`NAME=secret:KEY`, see [`crate::secrets`]); those are resolved once at
//! start and never logged.
//! The time a request may take is the agent's (it wraps every call in the
//! relay's deadline).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BoxError, BoxFuture, Upstream, UpstreamBody, UpstreamError, UpstreamRequest};
use crate::backoff::Backoff;
use crate::secrets::{Resolved, SecretsError, Template};
use mcp_tunnel_proto::Secret;

/// Most sessions (one child each) open at once; more `initialize`s get 503.
pub const MAX_SESSIONS: usize = 64;
/// A session (or the sessionless child) without a request for this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest stdout line (one JSON-RPC message) a child may write; a longer one
/// marks the child broken.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Most requests in flight per child; more get 503.
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a child gets to exit after its stdin closes before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
/// First respawn delay of the sessionless child (jittered down to half).
pub const RESPAWN_BASE: Duration = Duration::from_secs(1);
/// Longest respawn delay of the sessionless child.
pub const RESPAWN_CAP: Duration = Duration::from_secs(30);
/// A sessionless child that lived this long respawns without delay.
const RESPAWN_RESET_AFTER: Duration = Duration::from_secs(10);
/// Messages queued for one child's stdin.
const STDIN_QUEUE: usize = 256;
/// Messages queued for one HTTP response; beyond it the child's stdout waits.
const RESPONSE_QUEUE: usize = 64;
/// Longest stderr line logged as one line (the rest follows as another).
const MAX_STDERR_LINE: usize = 64 * 1024;
/// Last stderr lines kept to explain a crash in the log.
const STDERR_TAIL: usize = 10;
/// The session header (lowercase, as `http` stores names).
const SESSION_HEADER: &str = "mcp-session-id";

/// The limits of a [`StdioBridge`]; `Default` uses the constants above.
#[derive(Debug, Clone)]
pub struct StdioLimits {
    /// Most sessions at once ([`MAX_SESSIONS`]).
    pub max_sessions: usize,
    /// Idle time after which a session ends ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Longest stdout line of a child ([`MAX_LINE`]).
    pub max_line: usize,
    /// Most requests in flight per child ([`MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// Grace period between closing stdin and killing ([`EXIT_GRACE`]).
    pub exit_grace: Duration,
    /// First respawn delay of the sessionless child ([`RESPAWN_BASE`]).
    pub respawn_base: Duration,
    /// Longest respawn delay of the sessionless child ([`RESPAWN_CAP`]).
    pub respawn_cap: Duration,
}

impl Default for StdioLimits {
    fn default() -> Self {
        Self {
            max_sessions: MAX_SESSIONS,
            idle_timeout: IDLE_TIMEOUT,
            max_line: MAX_LINE,
            max_in_flight: MAX_IN_FLIGHT,
            exit_grace: EXIT_GRACE,
            respawn_base: RESPAWN_BASE,
            respawn_cap: RESPAWN_CAP,
        }
    }
}

/// One `--env NAME=VALUE` for the stdio child; VALUE may hold `secret:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSpec {
    /// The variable's name (letters, digits, `_`; not starting with a digit).
    pub name: String,
    /// Its value, with secret placeholders.
    pub value: Template,
}

/// Why an `--env` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum EnvSpecError {
    /// Not `NAME=VALUE`.
    #[error("expected NAME=VALUE or NAME=secret:KEY, e.g. PGPASSWORD=secret:DBPASS")]
    Syntax,
    /// NAME is not a portable variable name.
    #[error(
        "{0:?} is not an environment variable name: use letters, digits and '_', not starting with a digit"
    )]
    BadName(String),
    /// VALUE misuses `secret:`, or names a secret that is not stored.
    #[error(transparent)]
    Value(#[from] SecretsError),
    /// The value holds a NUL byte, which no environment variable can carry.
    #[error("the value of {0} holds a NUL byte, which an environment variable cannot carry")]
    Nul(String),
}

impl std::str::FromStr for EnvSpec {
    type Err = EnvSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s.split_once('=').ok_or(EnvSpecError::Syntax)?;
        let portable = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !portable {
            return Err(EnvSpecError::BadName(name.to_owned()));
        }
        let value: Template = value.parse()?;
        if value.render_placeholders("").contains('\0') {
            return Err(EnvSpecError::Nul(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            value,
        })
    }
}

impl EnvSpec {
    /// The variable with its secrets filled in from `resolved`.
    pub fn render(&self, resolved: &Resolved) -> Result<(String, Secret), EnvSpecError> {
        let value = self.value.render(resolved)?;
        if value.expose().contains('\0') {
            return Err(EnvSpecError::Nul(self.name.clone()));
        }
        Ok((self.name.clone(), value))
    }
}

/// Runs a stdio MCP server per MCP session (see the module docs for the rule).
#[derive(Debug)]
pub struct StdioBridge {
    inner: Arc<Inner>,
}

impl StdioBridge {
    /// A bridge running `command` (program and arguments). Fails early if the
    /// program is neither on `PATH` nor an existing file.
    pub fn new(command: Vec<String>) -> anyhow::Result<Self> {
        Self::with_limits(command, StdioLimits::default())
    }

    /// Like [`StdioBridge::new`], with other limits.
    pub fn with_limits(command: Vec<String>, limits: StdioLimits) -> anyhow::Result<Self> {
        Self::with_env(command, Vec::new(), limits)
    }

    /// Like [`StdioBridge::with_limits`], adding `env` to each child's
    /// environment (values may be secrets: they are never logged).
    pub fn with_env(
        command: Vec<String>,
        env: Vec<(String, Secret)>,
        limits: StdioLimits,
    ) -> anyhow::Result<Self> {
        let Some(program) = command.first() else {
            anyhow::bail!("--stdio needs a command");
        };
        let program_path = find_program(program)?;
        let name = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(program)
            .to_owned();
        let shutdown = CancellationToken::new();
        Ok(Self {
            inner: Arc::new(Inner {
                display: command.join(" "),
                program_arg: program.clone(),
                name,
                program: program_path,
                args: command[1..].to_vec(),
                env,
                limits: limits.clone(),
                sessions: Mutex::new(HashMap::new()),
                sessionless: Mutex::new(Sessionless {
                    server: None,
                    backoff: Backoff::new(limits.respawn_base, limits.respawn_cap),
                    retry_at: None,
                }),
                shutdown,
                tasks: TaskTracker::new(),
                reaper_started: AtomicBool::new(false),
            }),
        })
    }

    /// Stops every child and waits until they are gone.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Drop for StdioBridge {
    /// Stops every child: the supervisors close stdin, kill after the grace
    /// period and wait (if the runtime is gone, `kill_on_drop` kills).
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
    }
}

impl Upstream for StdioBridge {
    fn call(
        &self,
        req: UpstreamRequest,
    ) -> BoxFuture<Result<Response<UpstreamBody>, UpstreamError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.handle(req).await })
    }

    fn describe(&self) -> String {
        format!("stdio MCP server `{}`", self.inner.display)
    }
}

/// State shared by the bridge, its tasks and its in-flight calls.
struct Inner {
    /// The command as the user wrote it, for the agent's own banner only:
    /// arguments may hold secrets, so logs and errors name the program alone.
    display: String,
    /// The program as the user wrote it, for logs and errors.
    program_arg: String,
    /// The program's file name, for log fields.
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// `--env` variables added to each child's environment (values masked).
    env: Vec<(String, Secret)>,
    limits: StdioLimits,
    sessions: Mutex<HashMap<String, Arc<Server>>>,
    sessionless: Mutex<Sessionless>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    reaper_started: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioBridge")
            .field("program", &self.program_arg)
            .field("sessions", &lock(&self.sessions).len())
            .finish_non_exhaustive()
    }
}

/// The shared child for requests without a session.
#[derive(Debug)]
struct Sessionless {
    server: Option<Arc<Server>>,
    backoff: Backoff,
    /// No respawn before this (the last one died young).
    retry_at: Option<Instant>,
}

type HttpResult = Result<Response<UpstreamBody>, UpstreamError>;

impl Inner {
    async fn handle(self: Arc<Self>, req: UpstreamRequest) -> HttpResult {
        self.start_reaper();
        let path = req.uri().path();
        if path != "/mcp" && path != "/mcp/" {
            return Ok(json_error(
                StatusCode::NOT_FOUND,
                Value::Null,
                -32600,
                &format!("no MCP endpoint at {path}; use /mcp"),
            ));
        }
        let session = match req.headers().get(SESSION_HEADER).map(|v| v.to_str()) {
            None => None,
            Some(Ok(s)) => Some(s.trim().to_owned()),
            Some(Err(_)) => {
                return Ok(json_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    -32600,
                    "the Mcp-Session-Id header is not visible ASCII",
                ));
            }
        };
        let sse = accepts_event_stream(req.headers());
        match *req.method() {
            Method::POST => {
                let body = match req.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(never) => match never {},
                };
                self.post(&body, session, sse).await
            }
            Method::GET => Ok(self.get(session, sse)),
            Method::DELETE => Ok(self.delete(session)),
            _ => {
                let mut r = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Value::Null,
                    -32600,
                    "use POST, GET or DELETE",
                );
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                Ok(r)
            }
        }
    }

    async fn post(self: &Arc<Self>, body: &[u8], session: Option<String>, sse: bool) -> HttpResult {
        let batch = match ClientBatch::parse(body) {
            Ok(b) => b,
            Err(e) => {
                return Ok(json_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    e.code(),
                    &e.to_string(),
                ));
            }
        };
        let (server, new_session) = match &session {
            Some(id) => match lock(&self.sessions).get(id) {
                Some(s) => (s.clone(), None),
                None => return Ok(session_not_found(batch.first_id())),
            },
            None if batch.is_initialize() => match self.open_session()? {
                Some((id, s)) => (s, Some(id)),
                None => {
                    let mut r = json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        batch.first_id(),
                        -32000,
                        &format!(
                            "the bridge already runs {} sessions of `{}`; end one (DELETE) or retry later",
                            self.limits.max_sessions, self.program_arg
                        ),
                    );
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
                    return Ok(r);
                }
            },
            None => (self.sessionless().await?, None),
        };
        let first_id = batch.first_id();
        let (lines, exchange) = match server.submit(batch, sse, new_session.is_some()) {
            Ok(v) => v,
            Err(SubmitError::Ended) if session.is_some() => return Ok(session_not_found(first_id)),
            Err(SubmitError::Ended) => {
                return Err(UpstreamError::Unavailable(format!(
                    "the stdio MCP server `{}` exited; retry",
                    self.program_arg
                )));
            }
            Err(SubmitError::Busy) => {
                let mut r = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    first_id,
                    -32000,
                    &format!(
                        "the stdio MCP server already has {} requests in flight; retry shortly",
                        self.limits.max_in_flight
                    ),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(r);
            }
        };
        for line in lines {
            // A closed stdin means the child is going away; its supervisor
            // fails what is pending, which ends the exchange below.
            if server.stdin.send(line).await.is_err() {
                break;
            }
        }
        let Some(exchange) = exchange else {
            return Ok(status_only(StatusCode::ACCEPTED));
        };
        let mut resp = if sse {
            exchange.into_event_stream()
        } else {
            exchange.into_json().await
        };
        if let Some(id) = new_session
            && let Ok(v) = HeaderValue::from_str(&id)
        {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        Ok(resp)
    }

    fn get(&self, session: Option<String>, sse: bool) -> Response<UpstreamBody> {
        if !sse {
            return json_error(
                StatusCode::NOT_ACCEPTABLE,
                Value::Null,
                -32600,
                "GET opens an event stream: send Accept: text/event-stream",
            );
        }
        let Some(id) = session else {
            let mut r = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32600,
                "a GET event stream needs an Mcp-Session-Id",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
            return r;
        };
        let Some(server) = lock(&self.sessions).get(&id).cloned() else {
            return session_not_found(Value::Null);
        };
        server.touch();
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        {
            let mut routing = lock(&server.routing);
            if routing.ended {
                return session_not_found(Value::Null);
            }
            // One GET stream per session: a new one replaces (and ends) the old.
            routing.get_stream = Some(tx);
        }
        event_stream_response(ChannelBody {
            rx,
            remaining: None,
            _guard: None,
        })
    }

    fn delete(&self, session: Option<String>) -> Response<UpstreamBody> {
        let Some(id) = session else {
            return json_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "DELETE needs the Mcp-Session-Id of the session to end",
            );
        };
        let Some(server) = lock(&self.sessions).remove(&id) else {
            return session_not_found(Value::Null);
        };
        tracing::info!(command = %self.name, session = %server.label, "session ended by the client");
        server.stop.cancel();
        status_only(StatusCode::NO_CONTENT)
    }

    /// Spawns a child for a new session; `None` when the sessions are full.
    fn open_session(self: &Arc<Self>) -> Result<Option<(String, Arc<Server>)>, UpstreamError> {
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.limits.max_sessions {
            return Ok(None);
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let server = self.spawn(Some(id.clone()))?;
        sessions.insert(id.clone(), server.clone());
        Ok(Some((id, server)))
    }

    /// The sessionless child, spawned (after the backoff delay) if needed.
    async fn sessionless(self: &Arc<Self>) -> Result<Arc<Server>, UpstreamError> {
        loop {
            let wait = {
                let mut slot = lock(&self.sessionless);
                if let Some(s) = &slot.server
                    && !s.is_ended()
                {
                    return Ok(s.clone());
                }
                let now = Instant::now();
                match slot.retry_at {
                    Some(t) if t > now => t - now,
                    _ => match self.spawn(None) {
                        Ok(s) => {
                            slot.server = Some(s.clone());
                            slot.retry_at = None;
                            return Ok(s);
                        }
                        Err(e) => {
                            slot.retry_at = Some(now + slot.backoff.next_delay());
                            return Err(e);
                        }
                    },
                }
            };
            tracing::debug!(command = %self.name, "waiting {wait:?} before starting the sessionless child again");
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts a child and its stdin, stdout and stderr tasks.
    fn spawn(self: &Arc<Self>, session: Option<String>) -> Result<Arc<Server>, UpstreamError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v.expose())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group: a Ctrl-C meant for the agent does not reach
        // the child directly; the agent stops it in order instead.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            UpstreamError::Unavailable(format!(
                "could not start `{}`: {e}; check the --stdio command",
                self.program_arg
            ))
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Unavailable(format!(
                "could not start `{}`: its stdio pipes are missing",
                self.program_arg
            )));
        };
        let label = match &session {
            Some(id) => format!("session {}", id.get(..8).unwrap_or(id)),
            None => "sessionless".to_owned(),
        };
        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        let server = Arc::new(Server {
            label,
            session,
            pid: child.id(),
            started: Instant::now(),
            stdin: tx,
            routing: Mutex::new(Routing::default()),
            last_used: Mutex::new(Instant::now()),
            stop: self.shutdown.child_token(),
            stderr_tail: Mutex::new(VecDeque::new()),
            max_in_flight: self.limits.max_in_flight,
            max_line: self.limits.max_line,
        });
        tracing::info!(command = %self.name, session = %server.label, pid = server.pid.unwrap_or(0), "started `{}`", self.program_arg);
        self.tasks
            .spawn(write_stdin(stdin, rx, server.stop.clone()));
        let stderr_task = self
            .tasks
            .spawn(log_stderr(stderr, server.clone(), self.name.clone()));
        self.tasks.spawn(supervise(
            Arc::downgrade(self),
            server.clone(),
            child,
            stdout,
            stderr_task,
        ));
        Ok(server)
    }

    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let every = (self.limits.idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.reap_idle();
            }
        });
    }

    /// Ends sessions (and the sessionless child) idle for the idle timeout.
    fn reap_idle(&self) {
        let idle = self.limits.idle_timeout;
        let mut expired = Vec::new();
        lock(&self.sessions).retain(|_, s| {
            let keep = !s.is_idle(idle);
            if !keep {
                expired.push(s.clone());
            }
            keep
        });
        {
            let mut slot = lock(&self.sessionless);
            if slot.server.as_ref().is_some_and(|s| s.is_idle(idle)) {
                expired.extend(slot.server.take());
            }
        }
        for s in expired {
            tracing::info!(command = %self.name, session = %s.label, "ending after {idle:?} without a request");
            s.stop.cancel();
        }
    }

    /// Forgets a child that is gone; a sessionless one that died young delays
    /// the next spawn.
    fn forget(&self, server: &Arc<Server>, crashed: bool) {
        match &server.session {
            Some(id) => {
                let mut sessions = lock(&self.sessions);
                if sessions.get(id).is_some_and(|s| Arc::ptr_eq(s, server)) {
                    sessions.remove(id);
                }
            }
            None => {
                let mut slot = lock(&self.sessionless);
                if slot.server.as_ref().is_some_and(|s| Arc::ptr_eq(s, server)) {
                    slot.server = None;
                    if crashed {
                        if server.started.elapsed() >= RESPAWN_RESET_AFTER {
                            slot.backoff.reset();
                            slot.retry_at = None;
                        } else {
                            slot.retry_at = Some(Instant::now() + slot.backoff.next_delay());
                        }
                    }
                }
            }
        }
    }
}

/// One running child.
#[derive(Debug)]
struct Server {
    /// `session 3f2a9c1d` or `sessionless`, for logs.
    label: String,
    session: Option<String>,
    pid: Option<u32>,
    started: Instant,
    /// Lines (each ending in `\n`) for the child's stdin.
    stdin: mpsc::Sender<Bytes>,
    routing: Mutex<Routing>,
    last_used: Mutex<Instant>,
    /// Cancelled to stop the child (DELETE, idle, bridge dropped).
    stop: CancellationToken,
    stderr_tail: Mutex<VecDeque<String>>,
    max_in_flight: usize,
    max_line: usize,
}

/// Who waits for what, per child.
#[derive(Debug, Default)]
struct Routing {
    /// The last internal id handed out.
    last_id: u64,
    /// In-flight requests by internal id (ordered: the first is the oldest).
    pending: BTreeMap<u64, Pending>,
    /// The client's id (as JSON text) → internal id, to rewrite cancellations.
    by_client_id: HashMap<String, u64>,
    /// The session's GET event stream, if open.
    get_stream: Option<mpsc::Sender<Value>>,
    /// The child is gone: nothing more is accepted.
    ended: bool,
}

/// A request waiting for the child's response.
#[derive(Debug)]
struct Pending {
    client_id: Value,
    progress_token: Option<Value>,
    /// Where the response (and, for event streams, related messages) go.
    tx: mpsc::Sender<Delivery>,
    /// The POST is answered as an event stream, so it takes other messages.
    events: bool,
    /// `initialize` is never cancelled (the spec forbids it).
    initialize: bool,
}

/// What reaches a waiting POST.
#[derive(Debug)]
enum Delivery {
    /// A child message sent while the request is pending.
    Event(Value),
    /// The child's response, id restored.
    Response(Value),
    /// A JSON-RPC error made up because the child went away.
    Failed(Value),
    /// The client cancelled the request: no response will come. Carries the
    /// error a JSON answer gives; an event stream just ends.
    Cancelled(Value),
}

/// Why a message could not be submitted to a child.
#[derive(Debug)]
enum SubmitError {
    /// The child is gone (its session ended).
    Ended,
    /// Too many requests in flight.
    Busy,
}

impl Server {
    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn is_ended(&self) -> bool {
        lock(&self.routing).ended
    }

    fn is_idle(&self, idle: Duration) -> bool {
        lock(&self.last_used).elapsed() >= idle && lock(&self.routing).pending.is_empty()
    }

    /// Registers the batch's requests and returns the lines to write.
    fn submit(
        self: &Arc<Self>,
        batch: ClientBatch,
        events: bool,
        new_session: bool,
    ) -> Result<(Vec<Bytes>, Option<Exchange>), SubmitError> {
        self.touch();
        let requests = batch
            .messages
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .count();
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        let mut ids = Vec::with_capacity(requests);
        let mut lines = Vec::with_capacity(batch.messages.len());
        let mut cancelled = Vec::new();
        {
            let mut routing = lock(&self.routing);
            if routing.ended {
                return Err(SubmitError::Ended);
            }
            if routing.pending.len() + requests > self.max_in_flight {
                return Err(SubmitError::Busy);
            }
            for mut msg in batch.messages {
                match msg.kind {
                    Kind::Request => {
                        routing.last_id += 1;
                        let internal = routing.last_id;
                        let client_id = msg
                            .obj
                            .insert("id".into(), json!(internal))
                            .unwrap_or(Value::Null);
                        let progress_token = msg
                            .obj
                            .get_mut("params")
                            .and_then(|p| p.get_mut("_meta"))
                            .and_then(|m| m.get_mut("progressToken"))
                            .map(|t| std::mem::replace(t, json!(internal)));
                        routing.by_client_id.insert(id_key(&client_id), internal);
                        routing.pending.insert(
                            internal,
                            Pending {
                                client_id,
                                progress_token,
                                tx: tx.clone(),
                                events,
                                initialize: msg.method() == Some("initialize"),
                            },
                        );
                        ids.push(internal);
                    }
                    Kind::Notification if msg.method() == Some("notifications/cancelled") => {
                        if let Some(rid) = msg
                            .obj
                            .get_mut("params")
                            .and_then(|p| p.get_mut("requestId"))
                            && let Some(internal) = routing.by_client_id.remove(&id_key(rid))
                        {
                            *rid = json!(internal);
                            // The child should not answer a cancelled request:
                            // release the POST waiting for it now.
                            cancelled.extend(routing.pending.remove(&internal));
                        }
                    }
                    Kind::Notification | Kind::Response => {}
                }
                lines.push(to_line(&Value::Object(msg.obj)));
            }
        }
        for p in cancelled {
            let err = rpc_error(p.client_id, -32800, "the request was cancelled");
            let _ = p.tx.try_send(Delivery::Cancelled(err));
        }
        if ids.is_empty() {
            return Ok((lines, None));
        }
        Ok((
            lines,
            Some(Exchange {
                rx,
                remaining: ids.len(),
                is_array: batch.is_array,
                guard: PostGuard {
                    server: self.clone(),
                    ids,
                    new_session,
                },
            }),
        ))
    }

    /// Routes one stdout line of the child.
    async fn on_child_line(&self, line: &[u8]) {
        let messages = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(obj)) => vec![obj],
            Ok(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::Object(o) => Some(o),
                    _ => None,
                })
                .collect(),
            _ => {
                let text = String::from_utf8_lossy(line);
                tracing::warn!(
                    session = %self.label,
                    "the stdio MCP server wrote a line that is not JSON-RPC (ignored): {}",
                    text.chars().take(200).collect::<String>()
                );
                return;
            }
        };
        for obj in messages {
            let Some((tx, delivery)) = self.route(obj) else {
                continue;
            };
            // Waits if that client reads slowly: backpressure to the child. An
            // error means the client went away; its guard cleans up.
            let _ = tx.send(delivery).await;
        }
    }

    /// Decides where a child message goes; GET-stream messages are sent here.
    fn route(&self, mut obj: Map<String, Value>) -> Option<(mpsc::Sender<Delivery>, Delivery)> {
        let mut routing = lock(&self.routing);
        let routing = &mut *routing;
        if !obj.contains_key("method") {
            let internal = obj.get("id").and_then(Value::as_u64);
            let Some(p) = internal.and_then(|i| routing.pending.remove(&i)) else {
                tracing::debug!(session = %self.label, "dropped a response to no pending request: {:?}", obj.get("id"));
                return None;
            };
            if let Some(i) = internal {
                routing.by_client_id.retain(|_, v| *v != i);
            }
            obj.insert("id".into(), p.client_id);
            return Some((p.tx, Delivery::Response(Value::Object(obj))));
        }
        // A progress notification carrying a token we rewrote goes to that request.
        let token = (obj.get("method").and_then(Value::as_str) == Some("notifications/progress"))
            .then(|| {
                obj.get("params")
                    .and_then(|p| p.get("progressToken"))
                    .and_then(Value::as_u64)
            })
            .flatten();
        let owner = token.and_then(|t| {
            routing
                .pending
                .get(&t)
                .filter(|p| p.progress_token.is_some())
        });
        let target = match owner {
            Some(p) => {
                if let (Some(orig), Some(t)) = (
                    p.progress_token.clone(),
                    obj.get_mut("params")
                        .and_then(|p| p.get_mut("progressToken")),
                ) {
                    *t = orig;
                }
                p.events.then(|| p.tx.clone())
            }
            None => routing
                .pending
                .values()
                .find(|p| p.events)
                .map(|p| p.tx.clone()),
        };
        if let Some(tx) = target {
            return Some((tx, Delivery::Event(Value::Object(obj))));
        }
        match &routing.get_stream {
            Some(get) => match get.try_send(Value::Object(obj)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = %self.label, "the GET event stream is not being read; dropped a server message");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    routing.get_stream = None;
                    tracing::debug!(session = %self.label, "dropped a server message: the GET stream closed");
                }
            },
            None => {
                let method = obj.get("method").and_then(|m| m.as_str()).unwrap_or("");
                tracing::debug!(
                    session = %self.label,
                    "dropped a server message ({method}): no request pending and no GET stream open"
                );
            }
        }
        None
    }

    /// Marks the child gone and fails everything waiting on it.
    fn end(&self, reason: &str) {
        let (pending, _get_stream) = {
            let mut routing = lock(&self.routing);
            if routing.ended {
                return;
            }
            routing.ended = true;
            routing.by_client_id.clear();
            (
                std::mem::take(&mut routing.pending),
                routing.get_stream.take(),
            )
        };
        for (_, p) in pending {
            let err = rpc_error(p.client_id, -32603, reason);
            if p.tx.try_send(Delivery::Failed(err)).is_err() {
                tracing::debug!(session = %self.label, "a client was not reading; its request ends without an error message");
            }
        }
    }
}

/// The requests of one POST, waiting for their responses.
#[derive(Debug)]
struct Exchange {
    rx: mpsc::Receiver<Delivery>,
    remaining: usize,
    is_array: bool,
    guard: PostGuard,
}

impl Exchange {
    /// Answers as an event stream: routed messages, then the responses.
    fn into_event_stream(self) -> Response<UpstreamBody> {
        event_stream_response(ChannelBody {
            rx: self.rx,
            remaining: Some(self.remaining),
            _guard: Some(self.guard),
        })
    }

    /// Answers `application/json` once every response is in (502 if the
    /// child went away first).
    async fn into_json(mut self) -> Response<UpstreamBody> {
        let mut responses = Vec::with_capacity(self.remaining);
        let mut failed = false;
        while responses.len() < self.remaining {
            match self.rx.recv().await {
                Some(Delivery::Response(v)) => responses.push(v),
                Some(Delivery::Failed(v)) => {
                    failed = true;
                    responses.push(v);
                }
                Some(Delivery::Cancelled(v)) => responses.push(v),
                Some(Delivery::Event(_)) => {}
                None => {
                    failed = true;
                    break;
                }
            }
        }
        let status = if failed {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::OK
        };
        let body = if self.is_array {
            Value::Array(responses)
        } else {
            match responses.pop() {
                Some(v) => v,
                None => rpc_error(
                    Value::Null,
                    -32603,
                    "the stdio MCP server went away before answering",
                ),
            }
        };
        json_response(status, &body)
    }
}

/// Cleans up after a POST whose answer is dropped before it is complete:
/// each pending request is forgotten and cancelled at the child.
#[derive(Debug)]
struct PostGuard {
    server: Arc<Server>,
    ids: Vec<u64>,
    /// The POST opened the session: abandoning its initialize ends it, since
    /// the client never learnt the session id.
    new_session: bool,
}

impl Drop for PostGuard {
    fn drop(&mut self) {
        let mut cancel = Vec::new();
        let mut abandoned_initialize = false;
        {
            let mut routing = lock(&self.server.routing);
            for id in &self.ids {
                if let Some(p) = routing.pending.remove(id) {
                    routing.by_client_id.retain(|_, v| v != id);
                    if p.initialize {
                        abandoned_initialize = true;
                    } else {
                        cancel.push(*id);
                    }
                }
            }
        }
        for id in cancel {
            let note = json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "the client went away"},
            });
            tracing::debug!(session = %self.server.label, "cancelling request {id}: the client went away");
            if self.server.stdin.try_send(to_line(&note)).is_err() {
                tracing::debug!(session = %self.server.label, "stdin queue full or closed; cancellation not sent");
            }
        }
        if abandoned_initialize && self.new_session {
            tracing::debug!(session = %self.server.label, "initialize abandoned; ending the session");
            self.server.stop.cancel();
        }
    }
}

/// A response body fed by a channel, as server-sent events.
#[derive(Debug)]
struct ChannelBody<T> {
    rx: mpsc::Receiver<T>,
    /// Responses still to come (`None`: a GET stream, open until the session ends).
    remaining: Option<usize>,
    _guard: Option<PostGuard>,
}

/// What a [`ChannelBody`] can carry.
trait SseItem {
    /// The message to send, if any, and whether it completes a request.
    fn message(&self) -> (Option<&Value>, bool);
}

impl SseItem for Delivery {
    fn message(&self) -> (Option<&Value>, bool) {
        match self {
            Delivery::Event(v) => (Some(v), false),
            Delivery::Response(v) | Delivery::Failed(v) => (Some(v), true),
            Delivery::Cancelled(_) => (None, true),
        }
    }
}

impl SseItem for Value {
    fn message(&self) -> (Option<&Value>, bool) {
        (Some(self), false)
    }
}

impl<T: SseItem + Send + 'static> Body for ChannelBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.remaining == Some(0) {
                return Poll::Ready(None);
            }
            let item = match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => {
                    return match this.remaining {
                        Some(_) => Poll::Ready(Some(Err(
                            "the stdio MCP server went away before answering".into(),
                        ))),
                        None => Poll::Ready(None),
                    };
                }
            };
            let (msg, completes) = item.message();
            if completes && let Some(n) = &mut this.remaining {
                *n = n.saturating_sub(1);
            }
            if let Some(msg) = msg {
                return Poll::Ready(Some(Ok(Frame::data(sse_event(msg)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// Writes queued lines to the child's stdin; closes it on stop.
async fn write_stdin(
    mut stdin: ChildStdin,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => break,
            l = rx.recv() => match l {
                Some(l) => l,
                None => break,
            },
        };
        let write = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            r = write => if r.is_err() { break },
        }
    }
    // Dropping stdin closes the pipe: a well-behaved server exits on EOF.
}

/// Logs the child's stderr, line by line, and keeps the last lines.
async fn log_stderr(stderr: ChildStderr, server: Arc<Server>, name: String) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match read_line(&mut reader, &mut buf, MAX_STDERR_LINE).await {
            Ok(LineRead::Line | LineRead::TooLong) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end();
                tracing::info!(command = %name, session = %server.label, "stderr: {line}");
                let mut tail = lock(&server.stderr_tail);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.chars().take(500).collect());
            }
            Ok(LineRead::Eof) | Err(_) => return,
        }
    }
}

/// Owns the child: routes its stdout, notices its death, stops it on request,
/// and always waits for it.
async fn supervise(
    inner: Weak<Inner>,
    server: Arc<Server>,
    mut child: tokio::process::Child,
    stdout: ChildStdout,
    stderr_task: tokio::task::JoinHandle<()>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::new();
    let max_line = server.max_line;
    let broken = loop {
        let step = async {
            line.clear();
            match read_line(&mut reader, &mut line, max_line).await {
                Ok(LineRead::Line) => {
                    if line.iter().any(|b| !b.is_ascii_whitespace()) {
                        server.on_child_line(&line).await;
                    }
                    None
                }
                Ok(LineRead::Eof) => Some("closed its stdout".to_owned()),
                Ok(LineRead::TooLong) => Some(format!("wrote a line longer than {max_line} bytes")),
                Err(e) => Some(format!("failed reading its stdout: {e}")),
            }
        };
        tokio::select! {
            _ = server.stop.cancelled() => break None,
            r = step => if let Some(why) = r { break Some(why) },
        }
    };
    // From here on new requests no longer reach this child: a session's next
    // request gets 404, the sessionless child is respawned (after the backoff).
    let crashed = broken.is_some();
    let (grace, name) = match inner.upgrade() {
        Some(inner) => {
            inner.forget(&server, crashed);
            (inner.limits.exit_grace, inner.name.clone())
        }
        None => (EXIT_GRACE, "stdio MCP server".to_owned()),
    };
    // Stop: stdin closes (the writer task sees the token), then a grace
    // period, then SIGKILL; the child is always reaped.
    server.stop.cancel();
    let status = match stop_child(&mut child, grace).await {
        Ok(s) => s.to_string(),
        Err(e) => format!("waiting for it failed: {e}"),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), stderr_task).await;
    match broken {
        Some(why) => {
            let reason = format!(
                "the stdio MCP server `{name}` {why} ({status}){}",
                if server.session.is_some() {
                    "; its session ended"
                } else {
                    ""
                }
            );
            let tail: Vec<String> = lock(&server.stderr_tail).iter().cloned().collect();
            let tail = if tail.is_empty() {
                String::new()
            } else {
                format!("; its last stderr lines:\n  {}", tail.join("\n  "))
            };
            tracing::warn!(command = %name, session = %server.label, "{reason}{tail}");
            server.end(&reason);
        }
        None => {
            tracing::info!(command = %name, session = %server.label, "stopped ({status})");
            server.end("the session ended");
        }
    }
}

/// Waits up to `grace` for the child to exit, then kills it; always reaps it.
async fn stop_child(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => r,
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await
        }
    }
}

/// How a client message is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Has `method` and `id`: waits for a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `result` or `error`: the answer to a server→client request.
    Response,
}

/// One client message, classified.
#[derive(Debug)]
struct ClientMessage {
    kind: Kind,
    obj: Map<String, Value>,
}

impl ClientMessage {
    fn method(&self) -> Option<&str> {
        self.obj.get("method").and_then(Value::as_str)
    }
}

/// The body of a POST: one message or a batch.
#[derive(Debug)]
struct ClientBatch {
    messages: Vec<ClientMessage>,
    is_array: bool,
}

/// Why a POST body is not JSON-RPC.
#[derive(Debug, thiserror::Error)]
enum BadBody {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    Parse(serde_json::Error),
    /// JSON, but not a JSON-RPC message or batch.
    #[error("the body is not a JSON-RPC message: {0}")]
    Invalid(&'static str),
}

impl BadBody {
    fn code(&self) -> i64 {
        match self {
            BadBody::Parse(_) => -32700,
            BadBody::Invalid(_) => -32600,
        }
    }
}

impl ClientBatch {
    fn parse(body: &[u8]) -> Result<Self, BadBody> {
        let (items, is_array) =
            match serde_json::from_slice::<Value>(body).map_err(BadBody::Parse)? {
                Value::Object(o) => (vec![o], false),
                Value::Array(items) if items.is_empty() => {
                    return Err(BadBody::Invalid("an empty batch"));
                }
                Value::Array(items) => (
                    items
                        .into_iter()
                        .map(|v| match v {
                            Value::Object(o) => Ok(o),
                            _ => Err(BadBody::Invalid("a batch item is not an object")),
                        })
                        .collect::<Result<_, _>>()?,
                    true,
                ),
                _ => return Err(BadBody::Invalid("not an object or array")),
            };
        let messages = items
            .into_iter()
            .map(|obj| {
                let kind = match (obj.get("method"), obj.get("id")) {
                    (Some(Value::String(_)), Some(id)) if !id.is_null() => Kind::Request,
                    (Some(Value::String(_)), _) => Kind::Notification,
                    (Some(_), _) => return Err(BadBody::Invalid("`method` is not a string")),
                    (None, _) if obj.contains_key("result") || obj.contains_key("error") => {
                        Kind::Response
                    }
                    (None, _) => return Err(BadBody::Invalid("no `method`, `result` or `error`")),
                };
                Ok(ClientMessage { kind, obj })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { messages, is_array })
    }

    /// A single `initialize` request (the only thing that opens a session).
    fn is_initialize(&self) -> bool {
        !self.is_array
            && self.messages.len() == 1
            && self.messages[0].kind == Kind::Request
            && self.messages[0].method() == Some("initialize")
    }

    /// The id of a single request, for error bodies.
    fn first_id(&self) -> Value {
        match self.messages.as_slice() {
            [m] if m.kind == Kind::Request && !self.is_array => {
                m.obj.get("id").cloned().unwrap_or(Value::Null)
            }
            _ => Value::Null,
        }
    }
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A whole line (without its `\n`) is in the buffer.
    Line,
    /// The stream ended (a partial last line, if any, is dropped).
    Eof,
    /// `max` bytes without a newline are in the buffer; the rest is unread.
    TooLong,
}

/// Reads one `\n`-terminated line into `buf`, never holding more than `max`
/// bytes. Cancel-safe: bytes read so far stay in `buf`.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let room = max.saturating_sub(buf.len());
        match available.iter().position(|&b| b == b'\n') {
            Some(i) if i <= room => {
                buf.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(LineRead::Line);
            }
            _ => {
                let take = available.len().min(room);
                buf.extend_from_slice(&available[..take]);
                reader.consume(take);
                if buf.len() >= max {
                    return Ok(LineRead::TooLong);
                }
            }
        }
    }
}

/// Finds `program` as the OS will: a path if it has a `/`, else on `PATH`.
fn find_program(program: &str) -> anyhow::Result<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        anyhow::ensure!(
            p.is_file(),
            "--stdio: `{program}` does not exist or is not a file; check the path"
        );
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--stdio: `{program}` was not found on PATH; install it or give its full path"
            )
        })
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// Poison-tolerant lock: the data stays consistent because no code path
/// panics while holding these locks.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The JSON text of an id, as a map key (`1` and `"1"` differ).
fn id_key(id: &Value) -> String {
    id.to_string()
}

fn to_line(msg: &Value) -> Bytes {
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn sse_event(msg: &Value) -> Bytes {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(msg).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn accepts_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_response(status: StatusCode, body: &Value) -> Response<UpstreamBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn json_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response<UpstreamBody> {
    json_response(status, &rpc_error(id, code, message))
}

fn session_not_found(id: Value) -> Response<UpstreamBody> {
    json_error(
        StatusCode::NOT_FOUND,
        id,
        -32001,
        "Session not found: it ended or never existed; send initialize again without Mcp-Session-Id",
    )
}

fn status_only(status: StatusCode) -> Response<UpstreamBody> {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

fn event_stream_response<T: SseItem + Send + 'static>(
    body: ChannelBody<T>,
) -> Response<UpstreamBody> {
    let mut r = Response::new(body.boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use http::Request;

    use super::*;

    /// A stdio MCP server stand-in: logs every line it reads to argv[1] and
    /// answers a few made-up methods.
    const FAKE_SERVER: &str = r#"
import json, os, sys, threading
log = open(sys.argv[1], "a")
lock = threading.Lock()
def send(msg):
    with lock:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()
def reply(mid, result):
    send({"jsonrpc": "2.0", "id": mid, "result": result})
while True:
    line = sys.stdin.readline()
    if not line:
        break
    log.write(line)
    log.flush()
    msg = json.loads(line)
    m, mid, p = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if m is None or mid is None:
        continue
    if m == "initialize":
        reply(mid, {"protocolVersion": "2025-06-18", "capabilities": {},
                    "serverInfo": {"name": "fake", "version": "1"}, "pid": os.getpid()})
    elif m == "pid":
        reply(mid, {"pid": os.getpid()})
    elif m == "echo":
        reply(mid, p)
    elif m == "env":
        reply(mid, {"value": os.environ.get(p["name"])})
    elif m == "slow_echo":
        threading.Timer(p["delay"], reply, (mid, p)).start()
    elif m == "hang":
        pass
    elif m == "progress":
        tok = p["_meta"]["progressToken"]
        send({"jsonrpc": "2.0", "method": "notifications/progress",
              "params": {"progressToken": tok, "progress": 1, "total": 2}})
        send({"jsonrpc": "2.0", "method": "notifications/message",
              "params": {"level": "info", "data": "working"}})
        reply(mid, {"done": True})
    elif m == "notify_later":
        reply(mid, {})
        threading.Timer(0.2, send, ({"jsonrpc": "2.0",
                                     "method": "notifications/tools/list_changed"},)).start()
    elif m == "crash":
        sys.stderr.write("fake: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif m == "big":
        sys.stdout.write("x" * p["n"] + "\n")
        sys.stdout.flush()
    else:
        send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
"#;

    /// Generous: the test machine is small and busy.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// The real Python interpreter (not a pyenv shim: faster, and its pid is
    /// the child's).
    fn python() -> String {
        static PY: OnceLock<String> = OnceLock::new();
        PY.get_or_init(|| {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 on PATH (the tests' fake stdio server is a Python script)");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .clone()
    }

    struct Fake {
        bridge: StdioBridge,
        log: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fake(limits: StdioLimits) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake_server.py");
        std::fs::write(&script, FAKE_SERVER).unwrap();
        let log = dir.path().join("received.log");
        let command = vec![
            python(),
            script.display().to_string(),
            log.display().to_string(),
        ];
        Fake {
            bridge: StdioBridge::with_limits(command, limits).unwrap(),
            log,
            _dir: dir,
        }
    }

    fn rpc(id: impl Into<Value>, method: &str, params: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
    }

    fn request(
        method: Method,
        session: Option<&str>,
        body: Option<&Value>,
        sse: bool,
    ) -> UpstreamRequest {
        let mut b = Request::builder().method(method).uri("/mcp").header(
            ACCEPT,
            if sse {
                "application/json, text/event-stream"
            } else {
                "application/json"
            },
        );
        if let Some(s) = session {
            b = b.header(SESSION_HEADER, s);
        }
        let body = body
            .map(|v| Bytes::from(serde_json::to_vec(v).unwrap()))
            .unwrap_or_default();
        b.body(Full::new(body)).unwrap()
    }

    #[derive(Debug)]
    struct Reply {
        status: StatusCode,
        session: Option<String>,
        content_type: Option<String>,
        body: Bytes,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
        }

        /// The messages of an event-stream body.
        fn events(&self) -> Vec<Value> {
            String::from_utf8_lossy(&self.body)
                .split("\n\n")
                .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        }
    }

    async fn send(
        bridge: &StdioBridge,
        method: Method,
        session: Option<&str>,
        body: Option<&Value>,
        sse: bool,
    ) -> Reply {
        let fut = async {
            let resp = bridge
                .call(request(method, session, body, sse))
                .await
                .unwrap();
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let session = header(SESSION_HEADER);
            let content_type = header("content-type");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                session,
                content_type,
                body,
            }
        };
        tokio::time::timeout(PATIENCE, fut)
            .await
            .expect("the bridge answered in time")
    }

    async fn post(bridge: &StdioBridge, session: Option<&str>, body: &Value) -> Reply {
        send(bridge, Method::POST, session, Some(body), false).await
    }

    /// Initializes a session; returns its id and the child's pid.
    async fn initialize(bridge: &StdioBridge) -> (String, u64) {
        let r = post(bridge, None, &rpc(0, "initialize", json!({}))).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        let pid = r.json()["result"]["pid"].as_u64().unwrap();
        (r.session.expect("Mcp-Session-Id header"), pid)
    }

    async fn pid_of(bridge: &StdioBridge, session: Option<&str>) -> u64 {
        let r = post(bridge, session, &rpc(1, "pid", json!({}))).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        r.json()["result"]["pid"].as_u64().unwrap()
    }

    /// True once the process is gone and reaped (a zombie still has /proc/PID).
    fn gone(pid: u64) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The messages the fake server received, in order.
    fn received(log: &Path) -> Vec<Value> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn env_variables_reach_every_child_and_stay_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake_server.py");
        std::fs::write(&script, FAKE_SERVER).unwrap();
        let log = dir.path().join("received.log");
        let command = vec![
            python(),
            script.display().to_string(),
            log.display().to_string(),
        ];
        let spec: EnvSpec = "MCP_TEST_TOKEN=secret:T".parse().unwrap();
        assert_eq!(spec.value.secrets().count(), 1);
        let env = vec![
            ("MCP_TEST_TOKEN".to_owned(), Secret::new("s3cret-value")),
            ("MCP_TEST_PLAIN".to_owned(), Secret::new("plain")),
        ];
        let bridge = StdioBridge::with_env(command, env, StdioLimits::default()).unwrap();
        for _ in 0..2 {
            let (s, _) = initialize(&bridge).await;
            for (name, want) in [
                ("MCP_TEST_TOKEN", "s3cret-value"),
                ("MCP_TEST_PLAIN", "plain"),
            ] {
                let r = post(&bridge, Some(&s), &rpc(1, "env", json!({"name": name}))).await;
                assert_eq!(r.json()["result"]["value"], want, "{r:?}");
            }
        }
        assert!(!format!("{bridge:?}").contains("s3cret"));
        assert!(!bridge.describe().contains("s3cret"));
    }

    #[test]
    fn env_specs_are_checked() {
        let spec: EnvSpec = "A_1=x=y".parse().unwrap();
        assert_eq!(spec.name, "A_1");
        assert_eq!(spec.render(&Resolved::default()).unwrap().1.expose(), "x=y");
        let e = "NOEQUALS".parse::<EnvSpec>().unwrap_err().to_string();
        assert!(e.contains("expected NAME=VALUE"), "{e}");
        for bad in ["=v", "1A=v", "A-B=v", "A B=v"] {
            let e = bad.parse::<EnvSpec>().unwrap_err().to_string();
            assert!(e.contains("not an environment variable name"), "{bad}: {e}");
        }
        let e = "A=secret:".parse::<EnvSpec>().unwrap_err().to_string();
        assert!(e.contains("must be followed by a secret name"), "{e}");
        let e = "A=x\0y".parse::<EnvSpec>().unwrap_err().to_string();
        assert!(e.contains("NUL"), "{e}");
        let e = "A=secret:NOPE"
            .parse::<EnvSpec>()
            .unwrap()
            .render(&Resolved::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no secret NOPE"), "{e}");
    }

    #[tokio::test]
    async fn initialize_opens_a_session_whose_requests_reach_the_same_child() {
        let f = fake(StdioLimits::default());
        let (s1, pid1) = initialize(&f.bridge).await;
        assert_eq!(s1.len(), 32, "128 random bits in hex: {s1}");
        assert_eq!(pid_of(&f.bridge, Some(&s1)).await, pid1);
        assert_eq!(pid_of(&f.bridge, Some(&s1)).await, pid1);
        let (s2, pid2) = initialize(&f.bridge).await;
        assert_ne!(s1, s2);
        assert_ne!(pid1, pid2, "a second session gets its own child");
        assert_eq!(pid_of(&f.bridge, Some(&s2)).await, pid2);
        // Unknown methods pass through untouched, with the client's id.
        let r = post(
            &f.bridge,
            Some(&s1),
            &rpc("x-9", "vendor/anything", json!({})),
        )
        .await;
        assert_eq!(r.json()["id"], "x-9");
        assert_eq!(r.json()["error"]["code"], -32601);
    }

    #[tokio::test]
    async fn unknown_session_is_404_with_a_jsonrpc_error() {
        let f = fake(StdioLimits::default());
        let r = post(&f.bridge, Some("nope"), &rpc(4, "pid", json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let v = r.json();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 4);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Session not found")
        );
        let r = send(&f.bridge, Method::GET, Some("nope"), None, true).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = send(&f.bridge, Method::DELETE, Some("nope"), None, false).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn notifications_and_responses_are_accepted_with_202() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = post(&f.bridge, Some(&s), &note).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert!(r.body.is_empty());
        let answer = json!({"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}});
        let r = post(&f.bridge, Some(&s), &answer).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        eventually("the child got both", || received(&f.log).len() >= 3).await;
        let got = received(&f.log);
        assert_eq!(got[1], note);
        assert_eq!(
            got[2], answer,
            "responses to server requests pass unchanged"
        );
    }

    #[tokio::test]
    async fn delete_ends_the_session_and_stops_its_child() {
        let f = fake(StdioLimits::default());
        let (s, pid) = initialize(&f.bridge).await;
        let r = send(&f.bridge, Method::DELETE, Some(&s), None, false).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        eventually("the child is gone and reaped", || gone(pid)).await;
        let r = post(&f.bridge, Some(&s), &rpc(2, "pid", json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_crash_fails_in_flight_requests_and_ends_the_session() {
        let f = fake(StdioLimits::default());
        let (s, pid) = initialize(&f.bridge).await;
        // An event-stream request left hanging when the child dies.
        let hanging = f
            .bridge
            .call(request(
                Method::POST,
                Some(&s),
                Some(&rpc("h", "hang", json!({}))),
                true,
            ))
            .await
            .unwrap();
        assert_eq!(hanging.headers()["content-type"], "text/event-stream");
        let r = post(&f.bridge, Some(&s), &rpc(5, "crash", json!({}))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        let v = r.json();
        assert_eq!(v["id"], 5);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("exit status: 3"), "{msg}");
        let body = tokio::time::timeout(PATIENCE, hanging.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        let events = Reply {
            status: StatusCode::OK,
            session: None,
            content_type: None,
            body,
        }
        .events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["id"], "h");
        assert_eq!(events[0]["error"]["code"], -32603);
        assert!(gone(pid));
        let r = post(&f.bridge, Some(&s), &rpc(6, "pid", json!({}))).await;
        assert_eq!(
            r.status,
            StatusCode::NOT_FOUND,
            "the client must re-initialize"
        );
    }

    #[tokio::test]
    async fn colliding_ids_from_concurrent_posts_are_kept_apart() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        let slow = rpc(1, "slow_echo", json!({"tag": "a", "delay": 0.6}));
        let fast = rpc(1, "slow_echo", json!({"tag": "b", "delay": 0.05}));
        let (a, b) = tokio::join!(
            post(&f.bridge, Some(&s), &slow),
            post(&f.bridge, Some(&s), &fast)
        );
        assert_eq!(a.json()["id"], 1);
        assert_eq!(a.json()["result"]["tag"], "a");
        assert_eq!(b.json()["id"], 1);
        assert_eq!(b.json()["result"]["tag"], "b");
        let ids: Vec<Value> = received(&f.log)
            .iter()
            .filter(|m| m["method"] == "slow_echo")
            .map(|m| m["id"].clone())
            .collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1], "the child saw distinct ids: {ids:?}");
        // A batch: answered as an array, notifications in it need no answer.
        let batch = json!([
            rpc(1, "echo", json!({"n": 1})),
            {"jsonrpc": "2.0", "method": "notifications/whatever"},
            rpc(2, "echo", json!({"n": 2})),
        ]);
        let r = post(&f.bridge, Some(&s), &batch).await;
        let mut got: Vec<(Value, Value)> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].clone(), m["result"]["n"].clone()))
            .collect();
        got.sort_by_key(|(id, _)| id.as_u64());
        assert_eq!(got, vec![(json!(1), json!(1)), (json!(2), json!(2))]);
    }

    #[tokio::test]
    async fn dropping_a_pending_call_cancels_it_at_the_child() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        // A JSON answer: the call future itself is dropped (the agent's timeout).
        let call = f.bridge.call(request(
            Method::POST,
            Some(&s),
            Some(&rpc(7, "hang", json!({}))),
            false,
        ));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), call)
                .await
                .is_err()
        );
        // An event stream: the response body is dropped (the client went away).
        let resp = f
            .bridge
            .call(request(
                Method::POST,
                Some(&s),
                Some(&rpc(7, "hang", json!({}))),
                true,
            ))
            .await
            .unwrap();
        eventually("the child got both requests", || {
            received(&f.log)
                .iter()
                .filter(|m| m["method"] == "hang")
                .count()
                == 2
        })
        .await;
        drop(resp);
        eventually("the child got two cancellations", || {
            received(&f.log)
                .iter()
                .filter(|m| m["method"] == "notifications/cancelled")
                .count()
                == 2
        })
        .await;
        let got = received(&f.log);
        let hung: Vec<&Value> = got
            .iter()
            .filter(|m| m["method"] == "hang")
            .map(|m| &m["id"])
            .collect();
        let cancelled: Vec<&Value> = got
            .iter()
            .filter(|m| m["method"] == "notifications/cancelled")
            .map(|m| &m["params"]["requestId"])
            .collect();
        assert_eq!(hung, cancelled, "each cancellation names the child's id");
        // The session still works.
        let (_, pid) = initialize(&f.bridge).await;
        assert!(pid > 0);
        assert!(pid_of(&f.bridge, Some(&s)).await > 0);
    }

    #[tokio::test]
    async fn a_client_cancellation_is_rewritten_and_releases_the_waiting_post() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        let json_call = tokio::spawn(f.bridge.call(request(
            Method::POST,
            Some(&s),
            Some(&rpc("j", "hang", json!({}))),
            false,
        )));
        let stream = f
            .bridge
            .call(request(
                Method::POST,
                Some(&s),
                Some(&rpc("e", "hang", json!({}))),
                true,
            ))
            .await
            .unwrap();
        eventually("the child got both requests", || {
            received(&f.log)
                .iter()
                .filter(|m| m["method"] == "hang")
                .count()
                == 2
        })
        .await;
        for id in ["j", "e"] {
            let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": id, "reason": "user"}});
            assert_eq!(
                post(&f.bridge, Some(&s), &cancel).await.status,
                StatusCode::ACCEPTED
            );
        }
        let resp = tokio::time::timeout(PATIENCE, json_call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "j");
        assert_eq!(v["error"]["code"], -32800);
        let body = tokio::time::timeout(PATIENCE, stream.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert!(body.is_empty(), "the event stream just ends: {body:?}");
        eventually("the child got both cancellations", || {
            received(&f.log)
                .iter()
                .filter(|m| m["method"] == "notifications/cancelled")
                .count()
                == 2
        })
        .await;
        let got = received(&f.log);
        let hung: Vec<&Value> = got
            .iter()
            .filter(|m| m["method"] == "hang")
            .map(|m| &m["id"])
            .collect();
        let cancelled: Vec<&Value> = got
            .iter()
            .filter(|m| m["method"] == "notifications/cancelled")
            .map(|m| &m["params"]["requestId"])
            .collect();
        let ids = |v: Vec<&Value>| {
            let mut v: Vec<u64> = v.iter().filter_map(|id| id.as_u64()).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            ids(hung),
            ids(cancelled),
            "cancellations name the child's ids"
        );
    }

    #[tokio::test]
    async fn an_event_stream_carries_progress_and_messages_then_the_response() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        let req = rpc(
            "abc",
            "progress",
            json!({"_meta": {"progressToken": "tok-1"}}),
        );
        let r = send(&f.bridge, Method::POST, Some(&s), Some(&req), true).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type.as_deref(), Some("text/event-stream"));
        let events = r.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0]["method"], "notifications/progress");
        assert_eq!(
            events[0]["params"]["progressToken"], "tok-1",
            "token restored"
        );
        assert_eq!(events[1]["method"], "notifications/message");
        assert_eq!(events[2]["id"], "abc");
        assert_eq!(events[2]["result"]["done"], true);
        let seen = received(&f.log);
        let at_child = seen.iter().find(|m| m["method"] == "progress").unwrap();
        assert!(at_child["id"].is_u64(), "{at_child}");
        assert_eq!(at_child["params"]["_meta"]["progressToken"], at_child["id"]);
    }

    #[tokio::test]
    async fn the_get_stream_gets_messages_sent_outside_any_request() {
        let f = fake(StdioLimits::default());
        let (s, _) = initialize(&f.bridge).await;
        let get = f
            .bridge
            .call(request(Method::GET, Some(&s), None, true))
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.headers()["content-type"], "text/event-stream");
        let mut body = get.into_body();
        let r = post(&f.bridge, Some(&s), &rpc(3, "notify_later", json!({}))).await;
        assert_eq!(r.status, StatusCode::OK);
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
        assert!(text.contains("notifications/tools/list_changed"), "{text}");
        // Ending the session ends the GET stream.
        send(&f.bridge, Method::DELETE, Some(&s), None, false).await;
        let end = tokio::time::timeout(PATIENCE, body.frame()).await.unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn requests_without_a_session_share_a_child_respawned_after_a_crash() {
        let f = fake(StdioLimits {
            respawn_base: Duration::from_secs(2),
            ..StdioLimits::default()
        });
        let pid = pid_of(&f.bridge, None).await;
        assert_eq!(pid_of(&f.bridge, None).await, pid);
        let probe = rpc(1, "server/discover", json!({}));
        let r = post(&f.bridge, None, &probe).await;
        assert_eq!(r.json()["error"]["code"], -32601, "passed through");
        let r = post(&f.bridge, None, &rpc(2, "crash", json!({}))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        let started = Instant::now();
        let again = pid_of(&f.bridge, None).await;
        assert_ne!(again, pid);
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "respawned only after the backoff ({:?})",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn sessions_are_bounded() {
        let f = fake(StdioLimits {
            max_sessions: 2,
            ..StdioLimits::default()
        });
        let (s1, _) = initialize(&f.bridge).await;
        initialize(&f.bridge).await;
        let r = post(&f.bridge, None, &rpc(0, "initialize", json!({}))).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2 sessions")
        );
        send(&f.bridge, Method::DELETE, Some(&s1), None, false).await;
        initialize(&f.bridge).await;
    }

    #[tokio::test]
    async fn idle_sessions_are_reaped() {
        let f = fake(StdioLimits {
            idle_timeout: Duration::from_millis(300),
            ..StdioLimits::default()
        });
        let (s, pid) = initialize(&f.bridge).await;
        eventually("the idle child is stopped", || gone(pid)).await;
        let r = post(&f.bridge, Some(&s), &rpc(1, "pid", json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_overlong_stdout_line_breaks_the_child() {
        let f = fake(StdioLimits {
            max_line: 1000,
            ..StdioLimits::default()
        });
        let (s, _) = initialize(&f.bridge).await;
        let r = post(&f.bridge, Some(&s), &rpc(1, "big", json!({"n": 5000}))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than 1000")
        );
        let r = post(&f.bridge, Some(&s), &rpc(2, "pid", json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn dropping_the_bridge_stops_every_child() {
        let f = fake(StdioLimits::default());
        let (_, a) = initialize(&f.bridge).await;
        let (_, b) = initialize(&f.bridge).await;
        let c = pid_of(&f.bridge, None).await;
        drop(f.bridge);
        for pid in [a, b, c] {
            eventually("every child is gone and reaped", || gone(pid)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_command_fails_early_or_at_spawn_with_a_clear_message() {
        let e = StdioBridge::new(vec!["no-such-mcp-server-xyz".into()]).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        let e = StdioBridge::new(vec!["/no/such/server".into()]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(StdioBridge::new(vec![]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("server.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        let bridge = StdioBridge::new(vec![script.display().to_string()]).unwrap();
        std::fs::remove_file(&script).unwrap();
        let err = bridge
            .call(request(
                Method::POST,
                None,
                Some(&rpc(0, "initialize", json!({}))),
                false,
            ))
            .await
            .unwrap_err();
        let UpstreamError::Unavailable(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.starts_with("could not start `"), "{msg}");
        assert!(msg.contains("No such file or directory"), "{msg}");
    }

    #[tokio::test]
    async fn bad_bodies_and_methods_get_http_errors() {
        let f = fake(StdioLimits::default());
        let r = send(&f.bridge, Method::POST, None, None, false).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"]["code"], -32700);
        let r = post(&f.bridge, None, &json!([])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json()["error"]["code"], -32600);
        let r = send(&f.bridge, Method::PUT, None, None, false).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let r = send(&f.bridge, Method::GET, None, None, true).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn classifies_client_messages() {
        let b = ClientBatch::parse(br#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).unwrap();
        assert!(b.is_initialize());
        assert_eq!(b.first_id(), json!(1));
        let b = ClientBatch::parse(
            br#"[{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":"s","result":{}},{"jsonrpc":"2.0","id":2,"method":"m"}]"#,
        )
        .unwrap();
        let kinds: Vec<Kind> = b.messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Notification, Kind::Response, Kind::Request]);
        assert!(!b.is_initialize());
        assert!(matches!(ClientBatch::parse(b"{"), Err(BadBody::Parse(_))));
        assert!(matches!(ClientBatch::parse(b"7"), Err(BadBody::Invalid(_))));
        assert!(matches!(
            ClientBatch::parse(br#"{"id":1}"#),
            Err(BadBody::Invalid(_))
        ));
        assert!(matches!(
            ClientBatch::parse(br#"[1]"#),
            Err(BadBody::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn reads_bounded_lines() {
        let data: &[u8] = b"one\r\ntwo\n0123456789abc\nlast";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"one");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"two");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::TooLong
        );
        assert_eq!(buf, b"0123456789");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"abc");
        buf.clear();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Eof
        );
    }
}
