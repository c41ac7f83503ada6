//! `mcp-agent connect`: discover the relay's QUIC endpoint, connect, say
//! Hello, then serve request streams until the connection ends — and start
//! over with jittered backoff, forever, until shut down or refused for good.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mcp_tunnel_proto::{
    ALPN, ControlSide, ControlState, Credentials, ErrorCode, Frame, GoAway, Hello,
    SUPPORTED_VERSIONS, Secret, TunnelName, Welcome,
};
use mcp_tunnel_transport::{FrameReader, write_frame};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::assertion::{AssertionVerifier, SessionKind};
use crate::backoff::Backoff;
use crate::forward::{StreamEnv, handle_stream};
use crate::stats::Stats;
use crate::upstream::Upstream;

/// How long `connect` waits for in-flight requests on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection attempt (discovery, handshake, Welcome) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `mcp-agent connect` needs.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// The relay's base URL (`https://relay.example.com`).
    pub relay: Url,
    /// The tunnel to serve.
    pub name: TunnelName,
    /// The local MCP server requests go to.
    pub upstream: Arc<dyn Upstream>,
    /// Extra CA certificate(s) to trust for the relay.
    pub ca: Option<PathBuf>,
    /// How the agent proves who it is.
    pub credential: AgentCredential,
    /// Don't print a line per request.
    pub quiet: bool,
    /// Where the status socket goes (default: [`crate::stats::runtime_dir`]).
    pub runtime_dir: Option<PathBuf>,
    /// The owner's Cedar policy (`--policy FILE`), already validated.
    pub policy: Option<mcp_tunnel_policy::PolicySource>,
    /// Keep the local log of executed requests (`mcp-agent log`).
    pub local_log: bool,
    /// Request streams the relay may have open to this agent at once
    /// (`--max-streams`, default
    /// [`mcp_tunnel_transport::quic::AGENT_MAX_INCOMING_STREAMS`]).
    pub max_streams: u32,
}

/// The agent's credential.
#[derive(Debug, Clone)]
pub enum AgentCredential {
    /// An agent token (accepted by `--dev` relays only).
    Token(Secret),
    /// The device certificate from `mcp-agent login` (mutual TLS).
    Device(Arc<DeviceSession>),
}

/// A logged-in device: its identity (replaced on renewal) and where to keep it.
#[derive(Debug)]
pub struct DeviceSession {
    /// The current certificate and key.
    pub identity: Mutex<crate::identity::DeviceIdentity>,
    /// Where renewed certificates go.
    pub store: crate::credstore::CredentialStore,
    /// The config dir (profile, pinned assertion keys).
    pub dir: PathBuf,
}

impl DeviceSession {
    fn current(&self) -> crate::identity::DeviceIdentity {
        self.identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why `connect` stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The relay refused this agent; retrying would not help.
    #[error("the relay refused this agent ({code}): {message}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// The relay's explanation.
        message: String,
    },
    /// Local set-up failed (bad CA file, bad upstream URL, status socket in use).
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
}

impl ConnectError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { code, .. } => match *code {
                ErrorCode::UNAUTHORIZED => 3,
                ErrorCode::NAME_TAKEN => 4,
                ErrorCode::VERSION_MISMATCH => 5,
                ErrorCode::REPLACED => 6,
                _ => 1,
            },
            Self::Setup(_) => 1,
        }
    }
}

/// Runs the agent until `shutdown` or a permanent refusal.
pub async fn run(config: ConnectConfig, shutdown: CancellationToken) -> Result<(), ConnectError> {
    let extra_roots = match &config.ca {
        Some(p) => crate::tls::load_ca(p)?,
        None => Vec::new(),
    };
    let http_tls = crate::tls::client_config(extra_roots.clone(), &[b"h2", b"http/1.1"])?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(http_tls)
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let quic_config = {
        let config = config.clone();
        move || -> anyhow::Result<quinn::ClientConfig> {
            let auth = match &config.credential {
                AgentCredential::Device(d) => {
                    let id = d.current();
                    Some((id.chain, id.key))
                }
                AgentCredential::Token(_) => None,
            };
            let tls = crate::tls::client_config_with_auth(extra_roots.clone(), &[ALPN], auth)?;
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
                .context("building the QUIC TLS config")?;
            let mut c = quinn::ClientConfig::new(Arc::new(crypto));
            c.transport_config(mcp_tunnel_transport::quic::agent_transport(
                config.max_streams,
            ));
            Ok(c)
        }
    };
    let stats = Arc::new(Stats::default());
    // One verifier for the whole run: its replay cache must outlive reconnects.
    let verifier =
        AssertionVerifier::new(config.name.as_str()).with_jwks_refresh(http.clone(), &config.relay);
    if let AgentCredential::Device(d) = &config.credential {
        match crate::assertion::read_pinned_keys(&d.dir) {
            Ok(Some(keys)) => verifier.set_pinned_keys(keys),
            Ok(None) => {}
            Err(e) => eprintln!("{e}; using the keys the relay sends"),
        }
    }
    let verifier = Arc::new(verifier);
    let policy = Arc::new(
        crate::policy::AgentPolicy::new(config.name.as_str(), config.policy.clone())
            .map_err(|e| ConnectError::Setup(anyhow::anyhow!("{e}")))?,
    );
    let log = if config.local_log {
        match crate::local_log::open(config.name.as_str()) {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                eprintln!("the local request log is off: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let env = StreamEnv {
        upstream: config.upstream.clone(),
        stats: stats.clone(),
        verifier: verifier.clone(),
        policy,
        log,
        quiet: config.quiet,
        sessions: Default::default(),
    };
    let public_url = Arc::new(Mutex::new(String::new()));

    let status_dir = match &config.runtime_dir {
        Some(d) => d.clone(),
        None => crate::stats::runtime_dir()?,
    };
    let status_task = {
        let (dir, name, stats, url, sd) = (
            status_dir,
            config.name.to_string(),
            stats.clone(),
            public_url.clone(),
            shutdown.clone(),
        );
        // Fail fast if another agent already serves this tunnel from here.
        let probe = dir.join(format!("{name}.sock"));
        if tokio::net::UnixStream::connect(&probe).await.is_ok() {
            return Err(anyhow::anyhow!(
                "another mcp-agent on this machine already serves tunnel \"{name}\""
            )
            .into());
        }
        tokio::spawn(async move {
            if let Err(e) = crate::stats::serve_status(dir, name, stats, url, sd).await {
                tracing::warn!("status socket unavailable: {e:#}");
            }
        })
    };

    let mut backoff = Backoff::default();
    let mut endpoint: Option<(quinn::Endpoint, bool)> = None;
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        let client_config = match quic_config() {
            Ok(c) => c,
            Err(e) => break Err(e.into()),
        };
        let attempt = tokio::select! {
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, establish(&config, &http, &client_config, &mut endpoint)) => r,
            _ = shutdown.cancelled() => break Ok(()),
        };
        let failure = match attempt {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Attempt::Fatal(e))) => break Err(e),
            Ok(Err(Attempt::Retry(e))) => Err(format!("relay not reachable ({e:#})")),
            Err(_) => Err("connecting to the relay timed out".to_owned()),
        };
        let (conn, control) = match failure {
            Ok(v) => v,
            Err(why) => {
                let delay = backoff.next_delay();
                eprintln!("{why}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => break Ok(()),
                }
            }
        };
        let (welcome, send, reader) = control;
        backoff.reset();
        Stats::bump(&stats.connects);
        stats
            .connected
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let changed = {
            let mut u = public_url.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *u != welcome.public_url;
            *u = welcome.public_url.clone();
            changed
        };
        if changed {
            println!("Public MCP URL: {}", welcome.public_url);
        } else {
            eprintln!("reconnected to the relay");
        }
        if let Some(notice) = verifier.on_welcome(session_kind(&config), &welcome) {
            eprintln!("{notice}");
        }
        let ended = serve_connection(&conn, send, reader, &welcome, &env, &config, &shutdown).await;
        stats
            .connected
            .store(0, std::sync::atomic::Ordering::Relaxed);
        match ended {
            Ended::Shutdown => break Ok(()),
            Ended::Fatal(e) => break Err(e),
            Ended::Lost(why) => {
                let delay = Duration::from_millis(rand::random_range(0..=250));
                eprintln!("connection to the relay lost ({why}); reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break Ok(()),
                }
            }
        }
    };
    shutdown.cancel();
    let _ = status_task.await;
    if let Some((ep, _)) = endpoint {
        let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    }
    result
}

enum Attempt {
    Retry(anyhow::Error),
    Fatal(ConnectError),
}

type Control = (Welcome, quinn::SendStream, FrameReader);

/// Discovery, QUIC handshake and Hello/Welcome.
async fn establish(
    config: &ConnectConfig,
    http: &reqwest::Client,
    client_config: &quinn::ClientConfig,
    endpoint: &mut Option<(quinn::Endpoint, bool)>,
) -> Result<(quinn::Connection, Control), Attempt> {
    let addr = discover(config, http).await.map_err(Attempt::Retry)?;
    let ep = match endpoint {
        Some((ep, v6)) if *v6 == addr.is_ipv6() => ep.clone(),
        _ => {
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0".parse()
            } else {
                "0.0.0.0:0".parse()
            }
            .map_err(|e: std::net::AddrParseError| Attempt::Retry(e.into()))?;
            let ep = quinn::Endpoint::client(bind)
                .with_context(|| format!("binding a UDP socket on {bind}"))
                .map_err(|e| Attempt::Fatal(e.into()))?;
            *endpoint = Some((ep.clone(), addr.is_ipv6()));
            ep
        }
    };
    let host = config.relay.host_str().unwrap_or("localhost");
    let conn = ep
        .connect_with(client_config.clone(), addr, host)
        .map_err(|e| Attempt::Retry(anyhow::anyhow!("QUIC connect to {addr}: {e}")))?
        .await
        .map_err(|e| match e {
            quinn::ConnectionError::TransportError(t) if t.to_string().contains("certificate") => {
                Attempt::Fatal(ConnectError::Setup(anyhow::anyhow!(
                    "the relay's certificate is not trusted ({t}); for a dev relay pass --ca <state dir>/dev-ca.pem"
                )))
            }
            e => match certificate_refused(config, &e) {
                Some(refused) => Attempt::Fatal(refused),
                None => Attempt::Retry(anyhow::anyhow!("QUIC handshake with {addr}: {e}")),
            },
        })?;
    // With TLS 1.3 the relay checks our certificate after our side of the
    // handshake is done: a refusal shows up on the first stream.
    let (mut send, recv) =
        conn.open_bi()
            .await
            .map_err(|e| match certificate_refused(config, &e) {
                Some(refused) => Attempt::Fatal(refused),
                None => Attempt::Retry(anyhow::anyhow!("opening the control stream: {e}")),
            })?;
    let hello = Frame::Hello(Hello {
        protocol_versions: SUPPORTED_VERSIONS.to_vec(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        tunnel: config.name.clone(),
        credentials: match &config.credential {
            AgentCredential::Token(t) => Credentials::AgentToken { token: t.clone() },
            AgentCredential::Device(_) => Credentials::DeviceCertificate,
        },
    });
    write_frame(&mut send, &hello)
        .await
        .map_err(|e| Attempt::Retry(anyhow::anyhow!("sending Hello: {e}")))?;
    let mut reader = FrameReader::new(recv, 0);
    let mut state = ControlState::new(ControlSide::Agent);
    let frame = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(Attempt::Retry(anyhow::anyhow!(
                "the relay closed the control stream"
            )));
        }
        Err(e) => {
            if let Some(refusal) = refusal_from_close(&conn) {
                return Err(Attempt::Fatal(refusal));
            }
            if let Some(refused) = conn
                .close_reason()
                .and_then(|r| certificate_refused(config, &r))
            {
                return Err(Attempt::Fatal(refused));
            }
            return Err(Attempt::Retry(anyhow::anyhow!("waiting for Welcome: {e}")));
        }
    };
    state
        .on_frame(&frame)
        .map_err(|e| Attempt::Retry(anyhow::anyhow!("relay broke the protocol: {e}")))?;
    match frame {
        Frame::Welcome(w) => Ok((conn, (w, send, reader))),
        Frame::Reject(r) => {
            let fatal = matches!(
                r.code,
                ErrorCode::UNAUTHORIZED
                    | ErrorCode::NAME_TAKEN
                    | ErrorCode::VERSION_MISMATCH
                    | ErrorCode::BAD_TUNNEL_NAME
            );
            let e = ConnectError::Refused {
                code: r.code,
                message: r.message,
            };
            if fatal {
                Err(Attempt::Fatal(e))
            } else {
                Err(Attempt::Retry(e.into()))
            }
        }
        _ => Err(Attempt::Retry(anyhow::anyhow!(
            "unexpected first frame from the relay"
        ))),
    }
}

/// A TLS alert from the relay (QUIC crypto error 0x1XX) while we present a
/// device certificate: the relay refused the certificate.
fn certificate_refused(config: &ConnectConfig, e: &quinn::ConnectionError) -> Option<ConnectError> {
    let quinn::ConnectionError::ConnectionClosed(c) = e else {
        return None;
    };
    let device = matches!(config.credential, AgentCredential::Device(_));
    (device && (0x100..0x200).contains(&u64::from(c.error_code))).then(|| ConnectError::Refused {
        code: ErrorCode::UNAUTHORIZED,
        message: format!(
            "the relay refused this device's certificate ({}): expired past the renewal grace, tampered, or not issued by this relay; run `mcp-agent login`",
            String::from_utf8_lossy(&c.reason)
        ),
    })
}

fn refusal_from_close(conn: &quinn::Connection) -> Option<ConnectError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = ErrorCode(u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX));
            matches!(
                code,
                ErrorCode::UNAUTHORIZED | ErrorCode::NAME_TAKEN | ErrorCode::VERSION_MISMATCH
            )
            .then(|| ConnectError::Refused {
                code,
                message: String::from_utf8_lossy(&c.reason).into_owned(),
            })
        }
        _ => None,
    }
}

/// Asks the relay where its QUIC endpoint is.
async fn discover(config: &ConnectConfig, http: &reqwest::Client) -> anyhow::Result<SocketAddr> {
    crate::manage::discover_quic(&config.relay, http).await
}

/// A reqwest error with its sources (TLS and connect details).
pub(crate) fn reqwest_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

enum Ended {
    Shutdown,
    Lost(String),
    Fatal(ConnectError),
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    welcome: &Welcome,
    env: &StreamEnv,
    config: &ConnectConfig,
    shutdown: &CancellationToken,
) -> Ended {
    let verifier = &env.verifier;
    let tasks = TaskTracker::new();
    // What this agent serves, for the relay's policy: the owner's policy now,
    // the upstream's tools (with annotations) once listed.
    let catalog = |tools: Option<Vec<mcp_tunnel_proto::ToolDescriptor>>| {
        Frame::Catalog(mcp_tunnel_proto::Catalog {
            policy: env
                .policy
                .own_policy()
                .map(|p| mcp_tunnel_proto::PolicyFile {
                    name: p.name.clone(),
                    text: p.text.clone(),
                }),
            tools,
        })
    };
    if write_frame(&mut send, &catalog(None)).await.is_err() {
        return Ended::Lost("sending the catalog failed".into());
    }
    let (tools_tx, mut tools_rx) = tokio::sync::oneshot::channel();
    {
        let upstream = env.upstream.clone();
        tasks.spawn(async move {
            let _ = tools_tx.send(crate::catalog::fetch_tools(upstream.as_ref()).await);
        });
    }
    let mut tools_pending = true;
    let interval = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(200, 60_000));
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_pong = tokio::time::Instant::now();
    let mut state = ControlState::Open(mcp_tunnel_proto::ControlSide::Agent);
    let device = match &config.credential {
        AgentCredential::Device(d) => Some(d.clone()),
        AgentCredential::Token(_) => None,
    };
    let mut renewal_check = tokio::time::interval(RENEWAL_CHECK);
    let mut renewing = false;
    loop {
        tokio::select! {
            _ = renewal_check.tick(), if device.is_some() && !renewing => {
                let Some(d) = &device else { continue };
                let id = d.current();
                if id.profile.renewal_due(crate::identity::unix_now()) {
                    match crate::identity::csr_for(&id.key_pem) {
                        Ok(csr) => {
                            renewing = true;
                            let _ = write_frame(&mut send, &Frame::RenewCert(mcp_tunnel_proto::RenewCert { csr })).await;
                        }
                        Err(e) => eprintln!("cannot renew the device certificate: {e:#}"),
                    }
                }
            }
            t = &mut tools_rx, if tools_pending => {
                tools_pending = false;
                match t {
                    Ok(Ok(tools)) => {
                        env.policy.apply_tools(&tools);
                        let _ = write_frame(&mut send, &catalog(Some(tools))).await;
                    }
                    Ok(Err(e)) => eprintln!(
                        "could not list the upstream's tools ({e:#}); the relay treats every tool as destructive"
                    ),
                    Err(_) => {}
                }
            }
            s = conn.accept_bi() => match s {
                Ok((s, r)) => {
                    tasks.spawn(handle_stream(s, r, env.clone(), welcome.limits.clone()));
                }
                Err(e) => break lost_or_fatal(e),
            },
            f = reader.next() => match f {
                Ok(Some(frame)) => {
                    if let Err(e) = state.on_frame(&frame) {
                        conn.close(e.code().0.into(), e.to_string().as_bytes());
                        break Ended::Lost(format!("relay broke the protocol: {e}"));
                    }
                    match frame {
                        Frame::Pong(_) => last_pong = tokio::time::Instant::now(),
                        Frame::Ping(n) => { let _ = write_frame(&mut send, &Frame::Pong(n)).await; }
                        Frame::DeviceUpdate(u) => {
                            if u.certificate.is_some() || u.error.is_some() {
                                renewing = false;
                            }
                            if let Some(keys) = &u.assertion_keys
                                && let Err(e) = verifier.on_update_keys(session_kind(config), keys)
                            {
                                eprintln!("{e}; keeping the previous keys");
                            }
                            if let Some(d) = &device {
                                apply_update(d, u);
                            }
                        }
                        Frame::PolicyUpdate(u) => env.policy.apply_update(u),
                        Frame::GoAway(g) => {
                            // The relay is going away; finish what is in flight, then reconnect.
                            eprintln!("relay is going away: {}", g.message);
                            drain(&tasks).await;
                            break Ended::Lost("relay restarting".into());
                        }
                        _ => {}
                    }
                }
                Ok(None) => break Ended::Lost("control stream closed".into()),
                Err(e) => break match conn.close_reason() {
                    Some(reason) => lost_or_fatal(reason),
                    None => Ended::Lost(e.to_string()),
                },
            },
            _ = heartbeat.tick() => {
                if last_pong.elapsed() > interval * 3 + Duration::from_secs(1) {
                    conn.close(ErrorCode::HEARTBEAT_TIMEOUT.0.into(), b"no heartbeat answer");
                    break Ended::Lost("the relay stopped answering heartbeats".into());
                }
                seq += 1;
                if write_frame(&mut send, &Frame::Ping(seq)).await.is_err() {
                    break match conn.close_reason() {
                        Some(reason) => lost_or_fatal(reason),
                        None => Ended::Lost("control stream failed".into()),
                    };
                }
            }
            _ = shutdown.cancelled() => {
                eprintln!("shutting down: finishing in-flight requests");
                let _ = write_frame(&mut send, &Frame::GoAway(GoAway {
                    code: ErrorCode::SHUTTING_DOWN,
                    message: "agent shutting down".into(),
                })).await;
                drain(&tasks).await;
                conn.close(ErrorCode::NO_ERROR.0.into(), b"agent shut down");
                break Ended::Shutdown;
            }
        }
    }
}

/// Which assertion rule applies to this agent's sessions.
fn session_kind(config: &ConnectConfig) -> SessionKind {
    match config.credential {
        AgentCredential::Device(_) => SessionKind::Device,
        AgentCredential::Token(_) => SessionKind::AgentToken,
    }
}

/// How often a device agent checks whether its certificate needs renewing.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(5);

/// Stores a renewed certificate and pins new assertion keys.
fn apply_update(d: &DeviceSession, u: mcp_tunnel_proto::DeviceUpdate) {
    if let Some(e) = u.error {
        eprintln!("the relay refused to renew the device certificate: {e}");
    }
    if let (Some(cert), Some(exp)) = (u.certificate, u.expires_at) {
        let mut id = d.identity.lock().unwrap_or_else(|e| e.into_inner());
        let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>();
        match (
            chain,
            crate::identity::store_renewed(&d.store, &d.dir, &mut id.profile, &cert, exp),
        ) {
            (Ok(chain), Ok(())) if !chain.is_empty() => {
                id.chain = chain;
                eprintln!(
                    "device certificate renewed (valid until {})",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64)
                    )
                );
            }
            (_, Err(e)) => eprintln!("could not store the renewed certificate: {e:#}"),
            _ => eprintln!("the relay sent an unreadable certificate"),
        }
    }
    if let Some(keys) = u.assertion_keys
        && let Err(e) = crate::identity::pin_assertion_keys(&d.dir, &keys)
    {
        eprintln!("could not pin the relay's assertion keys: {e:#}");
    }
}

async fn drain(tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        eprintln!("some requests did not finish within {DRAIN_TIMEOUT:?}; dropping them");
    }
}

fn lost_or_fatal(e: quinn::ConnectionError) -> Ended {
    if let quinn::ConnectionError::ApplicationClosed(c) = &e {
        let code = ErrorCode(u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX));
        let message = String::from_utf8_lossy(&c.reason).into_owned();
        if matches!(
            code,
            ErrorCode::REPLACED | ErrorCode::UNAUTHORIZED | ErrorCode::NAME_TAKEN
        ) {
            return Ended::Fatal(ConnectError::Refused { code, message });
        }
        return Ended::Lost(format!("relay closed the connection: {code}: {message}"));
    }
    Ended::Lost(e.to_string())
}
