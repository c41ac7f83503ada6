//! The QUIC side of the relay: accepts agent connections, runs the control
//! stream handshake (Hello → Welcome | Reject) and heartbeats, and keeps the
//! registry in step with which agents are connected.

use std::sync::Arc;
use std::time::Duration;

use mcp_tunnel_proto::{
    ControlSide, ControlState, Credentials, DeviceUpdate, ErrorCode, Frame, GoAway, Hello, Limits,
    PROTOCOL_VERSION, Reject, RenewCert, SUPPORTED_VERSIONS, Welcome, negotiate,
};
use mcp_tunnel_transport::{FrameReader, LinkError, write_frame};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent_tokens::TokenError;
use crate::app::App;
use crate::registry::AgentHandle;

/// How often agents send `Ping` on the control stream; the relay drops an
/// agent that misses [`MISSED_HEARTBEATS`] in a row. (QUIC keep-alives, every
/// second, are what keep NAT mappings open and detect restarts; this
/// application heartbeat proves the agent's event loop is alive.)
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Heartbeats an agent may miss before the relay drops it.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Accepts agent connections until `shutdown`.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    app: Arc<App>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        if app.registry.online_count() >= app.config.limits.max_agents {
            tracing::warn!(remote = %incoming.remote_address(), "refusing agent: max_agents reached");
            incoming.refuse();
            continue;
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = handle_connection(incoming, app, shutdown).await {
                tracing::info!(%remote, error = %e, "agent connection ended");
            }
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("rejected: {0}")]
    Rejected(String),
}

async fn handle_connection(
    incoming: quinn::Incoming,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> Result<(), ConnError> {
    let conn = incoming.await?;
    let remote = conn.remote_address();
    let limits = &app.config.limits;

    let (mut send, recv) = tokio::time::timeout(limits.hello_timeout, conn.accept_bi())
        .await
        .map_err(|_| {
            conn.close(ErrorCode::PROTOCOL_ERROR.0.into(), b"no control stream");
            ConnError::HelloTimeout(limits.hello_timeout)
        })??;
    let mut reader = FrameReader::new(recv, 0);
    let mut state = ControlState::new(ControlSide::Relay);
    let first = tokio::time::timeout(limits.hello_timeout, reader.next())
        .await
        .map_err(|_| ConnError::HelloTimeout(limits.hello_timeout));
    // A management request (`mcp-agent share`, …) instead of an agent.
    if let Ok(Ok(Some(Frame::ManageRequest(r)))) = &first {
        crate::manage::handle(&app, &conn, send, r.clone()).await;
        return Ok(());
    }
    let hello = match first {
        Ok(Ok(Some(frame))) => match state.on_frame(&frame) {
            Ok(()) => match frame {
                Frame::Hello(h) => h,
                _ => unreachable_frame(&conn)?,
            },
            Err(e) => return Err(close_protocol(&conn, e.into())),
        },
        Ok(Ok(None)) => {
            conn.close(ErrorCode::PROTOCOL_ERROR.0.into(), b"control stream ended");
            return Err(ConnError::Rejected(
                "control stream ended before Hello".into(),
            ));
        }
        Ok(Err(e)) => return Err(close_protocol(&conn, e)),
        Err(e) => {
            conn.close(ErrorCode::PROTOCOL_ERROR.0.into(), b"no Hello");
            return Err(e);
        }
    };

    let device = match &hello.credentials {
        Credentials::DeviceCertificate => Some(check_device(&app, &conn).await),
        Credentials::AgentToken { .. } => None,
    };
    // Admission reads (and for a new name writes) the tunnel claim in the
    // store: on the blocking pool, not on a worker every connection shares.
    let admit_blocking = |device: Option<AdmittedDevice>| {
        let (app, conn, hello) = (app.clone(), conn.clone(), hello.clone());
        async move {
            tokio::task::spawn_blocking(move || admit(&app, &conn, &hello, device))
                .await
                .unwrap_or_else(|e| {
                    Err((
                        ErrorCode::INTERNAL,
                        format!("admitting the agent failed: {e}"),
                    ))
                })
        }
    };
    let (admitted, device) = match device {
        Some(Err(refusal)) => (Err(refusal), None),
        Some(Ok(d)) => (admit_blocking(Some(d.clone())).await, Some(d)),
        None => (admit_blocking(None).await, None),
    };
    let (handle, tunnel) = match admitted {
        Ok(v) => v,
        Err((code, message)) => {
            tracing::warn!(%remote, tunnel = %hello.tunnel, code = %code, "agent rejected: {message}");
            let _ = write_frame(
                &mut send,
                &Frame::Reject(Reject {
                    code,
                    message: message.clone(),
                }),
            )
            .await;
            let _ = send.finish();
            // Give the Reject a moment to reach the agent before closing.
            let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
            conn.close(code.0.into(), message.as_bytes());
            return Err(ConnError::Rejected(message));
        }
    };
    // The tunnel's owner may be new (first claim): policy learns it before
    // the first request can arrive.
    if app.policy.engine().tunnel(tunnel.as_str()).is_none() {
        let app2 = app.clone();
        let name = tunnel.as_str().to_owned();
        let _ = tokio::task::spawn_blocking(move || app2.refresh_tunnel_policy(&name)).await;
    }
    let welcome = Welcome {
        protocol_version: negotiate(&hello.protocol_versions, SUPPORTED_VERSIONS)
            .unwrap_or(PROTOCOL_VERSION),
        public_url: app.public_mcp_url(&tunnel),
        relay_version: env!("CARGO_PKG_VERSION").to_owned(),
        heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
        limits: Limits {
            max_concurrent_streams: limits.max_streams_per_tunnel,
            max_request_body: limits.max_request_body,
            max_frame_payload: limits.max_frame_payload as u32,
        },
        assertion_keys: app.auth.required().then(|| app.auth.jwks()),
    };
    write_frame(&mut send, &Frame::Welcome(welcome)).await?;
    // The owner and grants, for the agent's own policy check.
    if let Some(update) = policy_update(&app, &tunnel).await {
        write_frame(&mut send, &Frame::PolicyUpdate(update)).await?;
    }
    if device.is_some() {
        // Pin-able assertion keys for the agent (refreshed on every connection).
        let update = DeviceUpdate {
            assertion_keys: Some(app.auth.jwks()),
            ..Default::default()
        };
        write_frame(&mut send, &Frame::DeviceUpdate(update)).await?;
    }
    tracing::info!(
        %remote, tunnel = %tunnel, owner = %handle.owner, generation = handle.generation,
        agent_version = %hello.agent_version, "agent connected"
    );

    let result = control_loop(
        &app,
        &tunnel,
        &handle,
        device.as_ref(),
        &mut send,
        &mut reader,
        &mut state,
        &shutdown,
    )
    .await;
    if app.registry.deregister(&tunnel, handle.generation) {
        tracing::info!(%remote, tunnel = %tunnel, "agent disconnected");
    }
    result
}

/// A device that passed [`check_device`]: who owns it.
#[derive(Debug, Clone)]
pub struct AdmittedDevice {
    /// Device id.
    pub id: String,
    /// Owning user.
    pub user: crate::store::UserId,
    /// Owning user's email.
    pub email: String,
    /// The presented certificate expired (within the renewal grace): the
    /// agent must renew within [`RENEW_DEADLINE`] or be disconnected.
    pub must_renew: bool,
}

/// How long an agent whose certificate expired has to renew it.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(30);

/// The tunnel-claim owner string for a user's devices.
pub fn user_owner(user: crate::store::UserId) -> String {
    format!("user:{}", user.0)
}

/// Checks the device certificate from the handshake against the store:
/// enrolled, same key, not revoked, not expired, its user enabled.
pub(crate) async fn check_device(
    app: &Arc<App>,
    conn: &quinn::Connection,
) -> Result<AdmittedDevice, (ErrorCode, String)> {
    let refuse = |m: String| (ErrorCode::UNAUTHORIZED, m);
    let certs = conn.peer_identity().and_then(|i| {
        i.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
        return Err(refuse(
            "no device certificate was presented; run `mcp-agent login`".into(),
        ));
    };
    let Some(peer) = crate::devices::read_peer(leaf) else {
        return Err(refuse(
            "the device certificate cannot be read; run `mcp-agent login`".into(),
        ));
    };
    let found = load_device(app, &peer.device_id).await;
    let (device, user) = match found {
        Ok(v) => v,
        _ => {
            return Err((
                ErrorCode::INTERNAL,
                "the relay could not read its devices".into(),
            ));
        }
    };
    let Some(device) = device else {
        return Err(refuse(format!(
            "device {} is not known to this relay; run `mcp-agent login`",
            peer.device_id
        )));
    };
    if let Some(at) = device.revoked_at {
        return Err(refuse(format!(
            "device {} was revoked at {}; run `mcp-agent login`",
            device.id,
            crate::devices::rfc3339(at)
        )));
    }
    if device.key_sha256 != peer.key_sha256 {
        return Err(refuse(format!(
            "the certificate's key is not the one device {} enrolled with; run `mcp-agent login`",
            device.id
        )));
    }
    let now = crate::oauth::token::unix_now() as i64;
    let grace = app.config.limits.device_renew_grace.as_secs() as i64;
    if peer.not_after.saturating_add(grace) < now {
        return Err(refuse(format!(
            "the device certificate expired at {}, longer ago than the renewal grace; run `mcp-agent login`",
            crate::devices::rfc3339(peer.not_after)
        )));
    }
    let must_renew = peer.not_after < now;
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Err(refuse(format!(
            "the account that owns device {} is disabled; ask the relay's admin",
            device.id
        )));
    };
    let store = app.store.clone();
    let id = device.id.clone();
    let _ = tokio::task::spawn_blocking(move || store.touch_device(&id)).await;
    Ok(AdmittedDevice {
        id: device.id,
        user: user.id,
        email: user.email.as_str().to_owned(),
        must_renew,
    })
}

/// Checks version, credentials and the tunnel name; registers the agent.
#[allow(clippy::result_large_err)]
fn admit(
    app: &App,
    conn: &quinn::Connection,
    hello: &Hello,
    device: Option<AdmittedDevice>,
) -> Result<(Arc<AgentHandle>, mcp_tunnel_proto::TunnelName), (ErrorCode, String)> {
    if negotiate(&hello.protocol_versions, SUPPORTED_VERSIONS).is_none() {
        return Err((
            ErrorCode::VERSION_MISMATCH,
            format!(
                "this relay speaks tunnel protocol versions {SUPPORTED_VERSIONS:?}, the agent offered {:?}; upgrade the older of the two",
                hello.protocol_versions
            ),
        ));
    }
    let owner = match (&hello.credentials, &device) {
        (Credentials::DeviceCertificate, Some(d)) => user_owner(d.user),
        (Credentials::AgentToken { .. }, _) if !app.config.dev => {
            return Err((
                ErrorCode::UNAUTHORIZED,
                "this relay accepts device certificates only (agent tokens work with a --dev relay); run `mcp-agent login`".into(),
            ));
        }
        (Credentials::AgentToken { token }, _) => app
            .tokens
            .verify(token.expose())
            .map_err(|e: TokenError| (ErrorCode::UNAUTHORIZED, e.to_string()))?,
        (Credentials::DeviceCertificate, None) => {
            return Err((ErrorCode::UNAUTHORIZED, "no device certificate".into()));
        }
    };
    let (handle, replaced) = app
        .registry
        .register(
            &hello.tunnel,
            &owner,
            device.as_ref().map(|d| d.id.clone()),
            conn.clone(),
            app.config.limits.max_streams_per_tunnel,
            |o| o.starts_with("user:") || app.tokens.verify_id_exists(o),
        )
        .map_err(|e| (e.code(), e.to_string()))?;
    app.ops.metrics.agent_connected();
    if let Some(old) = replaced {
        tracing::info!(tunnel = %hello.tunnel, old_remote = %old.remote, "replacing the previous connection of the same credential");
        old.conn.close(
            ErrorCode::REPLACED.0.into(),
            b"another agent with the same credential now serves this tunnel",
        );
    }
    Ok((handle, hello.tunnel.clone()))
}

#[allow(clippy::too_many_arguments)]
async fn control_loop(
    app: &Arc<App>,
    tunnel: &mcp_tunnel_proto::TunnelName,
    handle: &AgentHandle,
    device: Option<&AdmittedDevice>,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    state: &mut ControlState,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let conn = &handle.conn;
    let deadline = HEARTBEAT_INTERVAL * MISSED_HEARTBEATS;
    let mut renew_by = device
        .filter(|d| d.must_renew)
        .map(|_| tokio::time::Instant::now() + RENEW_DEADLINE);
    let mut keys_sent = app.auth.keys_generation();
    loop {
        let renewal_due = async {
            match renew_by {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            _ = renewal_due => {
                conn.close(
                    ErrorCode::UNAUTHORIZED.0.into(),
                    b"the device certificate expired and was not renewed; run `mcp-agent login`",
                );
                return Err(ConnError::Rejected("expired certificate not renewed".into()));
            }
            f = tokio::time::timeout(deadline, reader.next()) => f,
            _ = handle.policy_changed.notified() => {
                if let Some(update) = policy_update(app, tunnel).await {
                    write_frame(send, &Frame::PolicyUpdate(update)).await?;
                }
                continue;
            }
            _ = shutdown.cancelled() => {
                let _ = write_frame(send, &Frame::GoAway(GoAway {
                    code: ErrorCode::SHUTTING_DOWN,
                    message: "relay shutting down".into(),
                })).await;
                return Ok(());
            }
            e = conn.closed() => return Err(ConnError::Handshake(e)),
        };
        let frame = match frame {
            Err(_) => {
                conn.close(ErrorCode::HEARTBEAT_TIMEOUT.0.into(), b"no heartbeat");
                return Err(ConnError::Rejected("heartbeats stopped".into()));
            }
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => {
                conn.close(ErrorCode::PROTOCOL_ERROR.0.into(), b"control stream ended");
                return Ok(());
            }
            Ok(Err(e)) => return Err(close_protocol(conn, e)),
        };
        if let Err(e) = state.on_frame(&frame) {
            return Err(close_protocol(conn, e.into()));
        }
        match frame {
            Frame::Ping(n) => {
                write_frame(send, &Frame::Pong(n)).await?;
                // A key rotation reaches connected devices within a heartbeat.
                let now = app.auth.keys_generation();
                if now != keys_sent && app.auth.required() {
                    keys_sent = now;
                    let update = DeviceUpdate {
                        assertion_keys: Some(app.auth.jwks()),
                        ..Default::default()
                    };
                    write_frame(send, &Frame::DeviceUpdate(update)).await?;
                }
            }
            Frame::RenewCert(r) => {
                let update = renew(app, device, &r).await;
                if update.error.is_none() {
                    renew_by = None;
                }
                write_frame(send, &Frame::DeviceUpdate(update)).await?;
            }
            Frame::Catalog(c) => {
                if let Err(message) = apply_catalog(app, tunnel, c).await {
                    tracing::warn!(tunnel = %tunnel, "agent sent an unusable catalog: {message}");
                    let _ = write_frame(
                        send,
                        &Frame::GoAway(GoAway {
                            code: ErrorCode::BAD_REQUEST,
                            message: message.clone(),
                        }),
                    )
                    .await;
                    conn.close(ErrorCode::BAD_REQUEST.0.into(), message.as_bytes());
                    return Err(ConnError::Rejected(message));
                }
            }
            Frame::GoAway(g) => {
                // The agent is draining: stop routing new requests to it now;
                // in-flight streams finish on the still-open connection.
                tracing::info!(code = %g.code, "agent going away: {}", g.message);
                let _ = app;
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Issues a renewed certificate for the connected device from its CSR: same
/// key as enrolled, device not revoked, user enabled.
async fn renew(app: &App, device: Option<&AdmittedDevice>, r: &RenewCert) -> DeviceUpdate {
    use base64::Engine;
    let refuse = |e: String| DeviceUpdate {
        error: Some(e),
        ..Default::default()
    };
    let Some(device) = device else {
        return refuse("only device-certificate agents renew certificates".into());
    };
    let Ok(csr) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(r.csr.trim()) else {
        return refuse("the CSR is not base64url DER".into());
    };
    let (stored, user) = match load_device(app, &device.id).await {
        Ok((Some(d), Some(u))) if d.revoked_at.is_none() && !u.disabled => (d, u),
        Ok(_) => return refuse("the device was revoked or its account disabled".into()),
        Err(()) => return refuse("the relay could not read its devices".into()),
    };
    // The renewal must come from the enrolled key: checked before issuing.
    match crate::devices::ca::proof_of_possession(&csr) {
        Ok((_, key)) if key == stored.key_sha256 => {}
        Ok(_) => return refuse("a renewal must use the key the device enrolled with".into()),
        Err(e) => return refuse(e.to_string()),
    }
    let issued = match app.device_ca().issue(
        &csr,
        &device.id,
        user.email.as_str(),
        app.config.limits.device_cert_ttl,
    ) {
        Ok(i) => i,
        Err(e) => return refuse(e.to_string()),
    };
    let store = app.store.clone();
    let (id, exp) = (device.id.clone(), issued.not_after);
    if tokio::task::spawn_blocking(move || store.renew_device(&id, exp))
        .await
        .map_err(|_| ())
        .and_then(|r| r.map_err(|_| ()))
        .is_err()
    {
        return refuse("the relay could not record the renewal".into());
    }
    tracing::info!(device = %device.id, expires_at = issued.not_after, "device certificate renewed");
    DeviceUpdate {
        certificate: Some(issued.cert_pem),
        expires_at: Some(issued.not_after),
        assertion_keys: Some(app.auth.jwks()),
        error: None,
    }
}

/// A device and its owner, read from the store off the async threads.
async fn load_device(
    app: &App,
    id: &str,
) -> Result<(Option<crate::store::Device>, Option<crate::store::User>), ()> {
    let store = app.store.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let d = store.get_device(&id)?;
        let u = match &d {
            Some(d) => store.get_user(d.user_id)?,
            None => None,
        };
        Ok::<_, crate::store::StoreError>((d, u))
    })
    .await
    .map_err(drop)?
    .map_err(drop)
}

fn close_protocol(conn: &quinn::Connection, e: LinkError) -> ConnError {
    if let LinkError::Protocol(p) = &e {
        tracing::warn!(remote = %conn.remote_address(), code = %p.code(), "closing agent connection: {p}");
        conn.close(p.code().0.into(), p.to_string().as_bytes());
    }
    ConnError::Link(e)
}

fn unreachable_frame(conn: &quinn::Connection) -> Result<Hello, ConnError> {
    // ControlState only lets Hello through as the first frame at the relay.
    conn.close(ErrorCode::INTERNAL.0.into(), b"internal error");
    Err(ConnError::Rejected(
        "internal: first frame was not Hello".into(),
    ))
}

/// Tools a catalog may list, at most.
pub const MAX_CATALOG_TOOLS: usize = 10_000;
/// Longest tool name accepted in a catalog.
pub const MAX_TOOL_NAME: usize = 256;
/// Largest owner policy file accepted.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// What the tunnel's agents need for their own policy check.
async fn policy_update(
    app: &Arc<App>,
    tunnel: &mcp_tunnel_proto::TunnelName,
) -> Option<mcp_tunnel_proto::PolicyUpdate> {
    let app = app.clone();
    let tunnel = tunnel.as_str().to_owned();
    let r = tokio::task::spawn_blocking(move || {
        let owner = app.tunnel_owner(&tunnel);
        let now = crate::oauth::token::unix_now() as i64;
        app.policy
            .update_for(app.store.as_ref(), &tunnel, &owner, now)
    })
    .await;
    match r {
        Ok(Ok(u)) => Some(u),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "building a policy update failed");
            None
        }
        Err(_) => None,
    }
}

/// Checks, stores and applies an agent's catalog (owner policy + tools).
async fn apply_catalog(
    app: &Arc<App>,
    tunnel: &mcp_tunnel_proto::TunnelName,
    c: mcp_tunnel_proto::Catalog,
) -> Result<(), String> {
    if let Some(p) = &c.policy {
        if p.text.len() > MAX_POLICY_BYTES {
            return Err(format!(
                "the policy file {} is {} bytes; the relay accepts at most {MAX_POLICY_BYTES}",
                p.name,
                p.text.len()
            ));
        }
        mcp_tunnel_policy::validate(&mcp_tunnel_policy::PolicySource::new(
            p.name.clone(),
            p.text.clone(),
        ))
        .map_err(|e| format!("the policy file is invalid:\n{e}"))?;
    }
    let tools = match &c.tools {
        Some(t) if t.len() > MAX_CATALOG_TOOLS => {
            return Err(format!(
                "the upstream lists {} tools; the relay accepts at most {MAX_CATALOG_TOOLS}",
                t.len()
            ));
        }
        Some(t) => {
            if let Some(bad) = t
                .iter()
                .find(|t| t.name.is_empty() || t.name.len() > MAX_TOOL_NAME)
            {
                return Err(format!(
                    "tool name {:?} is empty or over {MAX_TOOL_NAME} bytes",
                    bad.name
                ));
            }
            Some(serde_json::to_value(t).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let app2 = app.clone();
    let name = tunnel.as_str().to_owned();
    tokio::task::spawn_blocking(move || {
        let policy = c
            .policy
            .as_ref()
            .map(|p| (p.name.as_str(), p.text.as_str()));
        app2.store
            .set_tunnel_policy(&name, policy)
            .map_err(|e| e.to_string())?;
        if let Some(t) = &tools {
            app2.store
                .set_tool_catalog(&name, t)
                .map_err(|e| e.to_string())?;
        }
        app2.refresh_tunnel_policy(&name);
        Ok::<_, String>(())
    })
    .await
    .map_err(|e| e.to_string())?
}
