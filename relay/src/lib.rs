//! `mcp-relay`: the public side of mcp-tunnel.
//!
//! ```text
//!   MCP client ──HTTPS──► front ──► proxy ──QUIC stream──► agent (laptop) ──► local MCP server
//!                          │          │
//!                          │          └─ registry: tunnel name → live agent connection
//!                          └─ /.well-known/mcp-relay (where agents dial)
//!   agent ──QUIC (ALPN mcp-tunnel/1)──► agents: Hello → Welcome, heartbeats
//! ```
//!
//! [`run`] binds everything, serves until `shutdown` resolves, then drains.

pub mod acme;
pub mod agent_tokens;
pub mod agents;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authorization;
pub mod backup;
pub mod check;
pub mod config;
pub mod devices;
pub mod front;
pub mod host_check;
pub mod inventory;
pub mod limits;
pub mod manage;
pub mod oauth;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod revocation;
pub mod sockets;
pub mod state_dir;
pub mod store;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mcp_tunnel_proto::ErrorCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, FileConfig, LogFormat, Overrides};

use crate::agent_tokens::AgentTokens;
use crate::app::App;
use crate::registry::Registry;
use crate::state_dir::StateDir;

/// The addresses a running relay bound (also written to `<state>/endpoints.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// HTTPS front.
    pub https: SocketAddr,
    /// QUIC endpoint for agents.
    pub quic: SocketAddr,
    /// Plain-HTTP front, if enabled.
    pub http: Option<SocketAddr>,
    /// Metrics listener, if enabled.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Public base URL.
    pub public_url: String,
    /// The relay's process id.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Runs the relay until `shutdown` resolves, then drains in-flight requests.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state = StateDir::open(&config.state_dir)?;
    let _lock = state.lock_shared()?;
    // The relay this one replaces (`--replace`): it gets SIGTERM once our
    // TCP listeners are up.
    let replacing = match config.replace {
        Some(_) => std::fs::read(state.path("endpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Endpoints>(&b).ok())
            .and_then(|e| e.pid),
        None => None,
    };
    let identity = tls::load_identity(&config.tls, &state)?;

    let reset_key = state.reset_key()?;
    let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &reset_key);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(hmac));
    // Connection ids must validate across restarts too, or the new process
    // drops old connections' packets as invalid instead of resetting them.
    let cid_key = u64::from_le_bytes([
        reset_key[0],
        reset_key[1],
        reset_key[2],
        reset_key[3],
        reset_key[4],
        reset_key[5],
        reset_key[6],
        reset_key[7],
    ]) ^ 0x6d63_702d_7475_6e6e;
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    // After a restart every connected agent's next keep-alive hits the new
    // process and must get a stateless reset at once. quinn's default sends
    // at most one reset per 20 ms (50/s): with 1,000 agents most of them
    // then only noticed through their 10 s idle timeout, all at once. A
    // reset is always smaller than the packet that caused it, so answering
    // every one cannot amplify traffic; 1 ms keeps a floor against
    // reflection floods (1,000 resets/s) while 1,000 agents still learn of a
    // restart within about a second.
    endpoint_config.min_reset_interval(std::time::Duration::from_millis(1));
    let device_ca = devices::DeviceCa::load_or_create(&state).context("loading the device CA")?;
    let server_config = quic_server_config(&identity, &device_ca, &state, &config)?;
    let wanted = sockets::Wanted {
        https: config.https,
        http: config.http,
        metrics: config.metrics,
        quic: config.quic,
        replace: config.replace,
        replacing,
    };
    // `--replace` may wait for the old relay to release the QUIC port.
    let sockets = tokio::task::spawn_blocking(move || sockets::open(&wanted))
        .await
        .context("binding the listeners")??;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server_config),
        sockets.quic,
        quinn::default_runtime().context("no async runtime for QUIC")?,
    )
    .context("starting the QUIC endpoint")?;
    let quic_addr = endpoint.local_addr()?;

    let https_listener = tokio::net::TcpListener::from_std(sockets.https)?;
    let https_addr = https_listener.local_addr()?;
    let http_listener = sockets
        .http
        .map(tokio::net::TcpListener::from_std)
        .transpose()?;
    let http_addr = match &http_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let metrics_listener = sockets
        .metrics
        .map(tokio::net::TcpListener::from_std)
        .transpose()?;
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };

    let public_url = match &config.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => format!("https://localhost:{}", https_addr.port()),
    };
    let keys = auth::load_or_create_keys(&state)?;
    let mut auth = auth::Auth::new(&state, &public_url, keys, !config.no_auth);
    if config.subdomains {
        auth = auth.with_subdomains()?;
    }
    if config.no_auth {
        tracing::warn!(
            "--no-auth: tunnels accept requests WITHOUT an access token; never do this on a public relay"
        );
    }
    let store: Arc<dyn store::Store> = Arc::new(
        store::SqliteStore::open(&state.path(store::DB_FILE))
            .context("opening the relay's state database")?,
    );
    let registry = Registry::load(&state, store.clone())?;
    let tokens = AgentTokens::new(&state);
    let app = Arc::new(App::new(
        config.clone(),
        auth,
        store,
        public_url.clone(),
        registry,
        app::AgentCredentials { tokens, device_ca },
        quic_addr.port(),
    )?);
    // Policies from the store (grants, owner policies, tool catalogs) before
    // the first request.
    {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.refresh_all_policy())
            .await
            .context("loading policies")?;
    }
    app.ops.attach(endpoint.clone(), identity.clone());
    let endpoints = Endpoints {
        https: https_addr,
        quic: quic_addr,
        http: http_addr,
        metrics: metrics_addr,
        public_url,
        pid: Some(std::process::id()),
    };
    state_dir::write_private(
        &state.path("endpoints.json"),
        &serde_json::to_vec_pretty(&endpoints)?,
    )?;
    if config.dev {
        eprintln!(
            "mcp-relay (dev) at {pu}\n  create an agent token:  mcp-relay agent-tokens create --state {st}\n  then on this machine:   mcp-agent connect --relay {pu} --ca {ca} --token <TOKEN> --db shop.db",
            pu = endpoints.public_url,
            st = state.root().display(),
            ca = state.dev_ca_cert().display(),
        );
    }
    tracing::info!(https = %https_addr, quic = %quic_addr, http = ?http_addr, metrics = ?metrics_addr, public_url = %endpoints.public_url, state = %state.root().display(), "relay listening");

    // Two stages of shutdown: the HTTP fronts stop first and drain; the
    // agents are told to go only when no request needs them any more.
    let http_stop = CancellationToken::new();
    let cancel = CancellationToken::new();
    let front_tasks = TaskTracker::new();
    let tasks = TaskTracker::new();
    let router = front::router(app.clone());
    let drain = config.limits.drain_timeout;
    let tls_acceptor = tokio_rustls::TlsAcceptor::from(tls::https_server_config(&identity)?);
    front_tasks.spawn(front::serve(
        https_listener,
        Some(tls::HttpsAcceptor::new(tls_acceptor, identity.clone())),
        router.clone(),
        http_stop.clone(),
        drain,
    ));
    if let Some(l) = http_listener {
        front_tasks.spawn(front::serve(
            l,
            None,
            router.clone(),
            http_stop.clone(),
            drain,
        ));
    }
    if let Some(l) = metrics_listener {
        // Scrapes and probes keep answering while the fronts drain (readyz
        // says 503 then); it stops with the agents.
        tasks.spawn(front::serve(
            l,
            None,
            ops::metrics_router(app.clone()),
            cancel.clone(),
            Duration::from_secs(1),
        ));
    }
    tasks.spawn(tls::maintain(
        config.tls.clone(),
        identity.clone(),
        state.clone(),
        // Per-name certificates only for claimed names. Weak: the identity
        // (held by the app) must not keep the app alive.
        app.auth.subdomain_parent().map(|parent| {
            let app = Arc::downgrade(&app);
            acme::names::Subdomains::new(
                parent,
                Arc::new(move |name: &str| {
                    app.upgrade()
                        .is_some_and(|app| app.registry.claim_owner(name).is_some())
                }),
            )
        }),
        cancel.clone(),
    ));
    tasks.spawn(revocation::watch(app.clone(), cancel.clone()));
    tasks.spawn(reload_on_hangup(app.clone(), cancel.clone()));
    tasks.spawn(watch_device_ca(
        app.clone(),
        endpoint.clone(),
        identity.clone(),
        state.clone(),
        cancel.clone(),
    ));
    let agent_tasks = TaskTracker::new();
    tasks.spawn(agents::accept_loop(
        endpoint.clone(),
        app.clone(),
        cancel.clone(),
        agent_tasks.clone(),
    ));

    shutdown.await;
    let began = std::time::Instant::now();
    app.ops.start_draining();
    tracing::info!(
        "shutting down: no new connections; draining in-flight requests (up to {drain:?})"
    );
    http_stop.cancel();
    front_tasks.close();
    let _ = tokio::time::timeout(drain + Duration::from_secs(1), front_tasks.wait()).await;
    // Nothing needs the agents now: tell them to reconnect (to the relay
    // that replaces this one), then let go of the QUIC port at once so that
    // relay can take it.
    let agents = app.registry.all_online();
    tracing::info!(
        agents = agents.len(),
        drained_ms = began.elapsed().as_millis() as u64,
        "requests drained; sending agents GoAway"
    );
    cancel.cancel();
    tasks.close();
    agent_tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), agent_tasks.wait()).await;
    for (_, agent) in agents {
        agent
            .conn
            .close(ErrorCode::SHUTTING_DOWN.0.into(), b"relay shutting down");
    }
    endpoint.close(ErrorCode::SHUTTING_DOWN.0.into(), b"relay shutting down");
    // Long enough for the close packets to leave; agents that miss them get
    // a stateless reset from the next relay (same reset key).
    let _ = tokio::time::timeout(Duration::from_millis(100), endpoint.wait_idle()).await;
    drop(endpoint);
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    // Everything queued in the audit log is committed and the chain head
    // checkpointed before the process ends.
    let closing = app.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(log) = &closing.audit
            && let Err(e) = log.close()
        {
            tracing::error!(error = %e, "closing the audit log failed");
        }
    })
    .await;
    tracing::info!("relay stopped");
    Ok(())
}

/// SIGHUP: re-read the config file and apply what can change live (admin
/// policy files, rate limits; grants and claims from the store); say which
/// changed settings need a restart. A broken file changes nothing.
async fn reload_on_hangup(app: Arc<App>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restarting");
                return;
            }
        };
        loop {
            tokio::select! {
                r = hup.recv() => if r.is_none() { return },
                _ = shutdown.cancelled() => return,
            }
            let app = app.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&app)).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = app;
        shutdown.cancelled().await;
    }
}

/// One reload (blocking).
pub fn reload(app: &App) {
    let started = std::time::Instant::now();
    let Some((source, overrides)) = &app.config.source else {
        app.refresh_all_policy();
        tracing::info!("SIGHUP: no config file; re-read grants and claims from the store");
        return;
    };
    let new =
        config::Source::read(&source.path).and_then(|s| Config::from_source(&s, overrides.clone()));
    let new = match new {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: the config file has errors; keeping the running configuration");
            return;
        }
    };
    if let Err(e) = app.registry.reload_claims() {
        tracing::error!(error = %format!("{e:#}"), "re-reading tunnel claims failed");
    }
    let now = oauth::token::unix_now() as i64;
    match app.policy.reload_admin(
        &new.policy_files,
        app.store.as_ref(),
        &app.claim_owners(),
        now,
    ) {
        Ok(changed) => app.notify_policy_changed(changed),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: the policy files have errors; keeping the running policies");
            return;
        }
    }
    let rate = app.set_rate_limits(&new.rate_limits);
    let old = &app.config;
    let mut restart = Vec::new();
    let mut differs = |key: &'static str, same: bool| {
        if !same {
            restart.push(key);
        }
    };
    differs("https", old.https == new.https);
    differs("quic", old.quic == new.quic);
    differs("http", old.http == new.http);
    differs("metrics", old.metrics == new.metrics);
    differs("state", old.state_dir == new.state_dir);
    differs("public_url", old.public_url == new.public_url);
    differs("limits", old.limits == new.limits);
    differs("allowed_hosts", old.allowed_hosts == new.allowed_hosts);
    differs(
        "allowed_origins",
        old.allowed_origins == new.allowed_origins,
    );
    differs("audit", old.audit == new.audit);
    differs("no_auth", old.no_auth == new.no_auth);
    differs("password_login", old.password_login == new.password_login);
    differs(
        "oidc",
        format!("{:?}", old.oidc) == format!("{:?}", new.oidc),
    );
    differs("tls", format!("{:?}", old.tls) == format!("{:?}", new.tls));
    tracing::info!(
        policy_files = new.policy_files.len(),
        rate_limits_changed = rate,
        took_ms = started.elapsed().as_millis() as u64,
        "SIGHUP: configuration reloaded"
    );
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "SIGHUP: these settings changed but take effect only after a restart");
    }
}

/// The QUIC endpoint's server config: the relay's certificate, and client
/// certificates checked against the device CA(s).
fn quic_server_config(
    identity: &tls::Identity,
    ca: &devices::DeviceCa,
    state: &StateDir,
    config: &Config,
) -> anyhow::Result<quinn::ServerConfig> {
    let verifier = Arc::new(devices::verifier::DeviceClientVerifier::new(
        &ca.trust_anchors(state)?,
        config.limits.device_renew_grace,
    )?);
    let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls::quic_server_config(
        identity, verifier,
    )?)
    .context("building the QUIC TLS config")?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
    server_config.transport_config(mcp_tunnel_transport::quic::relay_transport());
    Ok(server_config)
}

/// Picks up a rotated device CA (`mcp-relay credentials rotate device-ca`,
/// from another process) within a second: new certificates come from the
/// new CA, and handshakes trust the new and the still-trusted old ones.
async fn watch_device_ca(
    app: Arc<App>,
    endpoint: quinn::Endpoint,
    identity: tls::Identity,
    state: StateDir,
    shutdown: CancellationToken,
) {
    let stamp = |state: &StateDir| {
        ["device-ca.pem", "device-ca-retired.json"].map(|f| {
            std::fs::metadata(state.path(f))
                .and_then(|m| m.modified())
                .ok()
        })
    };
    let mut seen = stamp(&state);
    let mut last_rebuild = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = stamp(&state);
        // Also rebuild hourly, so a retired CA whose trust window ended drops out.
        if now == seen && last_rebuild.elapsed() < Duration::from_secs(3600) {
            continue;
        }
        seen = now;
        last_rebuild = std::time::Instant::now();
        let rebuilt = devices::DeviceCa::load_or_create(&state).and_then(|ca| {
            let cfg = quic_server_config(&identity, &ca, &state, &app.config)?;
            Ok((ca, cfg))
        });
        match rebuilt {
            Ok((ca, cfg)) => {
                endpoint.set_server_config(Some(cfg));
                *app.device_ca.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ca);
                tracing::info!("device CA (re)loaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reloading the device CA failed; keeping the old one")
            }
        }
    }
}

/// Installs the one rustls crypto provider of this program (aws-lc-rs).
/// Binaries call it first thing; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
