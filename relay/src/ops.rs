//! Operating the relay: liveness and readiness probes, Prometheus metrics,
//! and the draining flag a shutdown sets.
//!
//! `/healthz` and `/readyz` answer on every front (load balancers probe the
//! public port); `/metrics` only on the separate, non-public listener
//! (`metrics = "127.0.0.1:9464"` in relay.toml), which also serves the probes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::app::App;

/// How a proxied MCP request ended, as counted in `mcp_relay_requests_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Authorized and answered by the agent (any status the upstream chose
    /// below 500).
    Allowed,
    /// Refused by policy, a rate limit or a session check.
    Denied,
    /// No or a bad access token (401) or too little scope.
    Unauthenticated,
    /// The agent or its upstream failed: offline, busy, timed out, 5xx.
    UpstreamError,
    /// The request itself was malformed or too large (4xx from the relay).
    BadRequest,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Unauthenticated => "unauthenticated",
            Self::UpstreamError => "upstream_error",
            Self::BadRequest => "bad_request",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OauthLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The relay's metrics. Counters move on the request path (atomic adds);
/// gauges of state (agents, tunnels, certificate) are read at scrape time.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    latency: Family<OutcomeLabels, Histogram>,
    bytes: Family<DirectionLabels, Counter>,
    oauth: Family<OauthLabels, Counter>,
    agents: Gauge,
    tunnels_claimed: Gauge,
    tunnels_online: Gauge,
    cert_expiry: Gauge,
    ready: Gauge,
    agent_connects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_relay");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "MCP requests through tunnels, by outcome",
            requests.clone(),
        );
        let latency = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~13 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response head, by outcome",
            Unit::Seconds,
            latency.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "tunnel",
            "Body bytes through tunnels (request: client to agent; response: agent to client)",
            Unit::Bytes,
            bytes.clone(),
        );
        let oauth = Family::<OauthLabels, Counter>::default();
        registry.register(
            "oauth_events",
            "OAuth and sign-in endpoint calls, by endpoint and result",
            oauth.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents_connected", "Agent connections", agents.clone());
        let tunnels_claimed = Gauge::default();
        registry.register(
            "tunnels_claimed",
            "Tunnel names claimed on this relay",
            tunnels_claimed.clone(),
        );
        let tunnels_online = Gauge::default();
        registry.register(
            "tunnels_online",
            "Tunnels with at least one connected agent",
            tunnels_online.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "When the served TLS certificate expires (Unix time)",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when /readyz answers 200", ready.clone());
        let agent_connects = Counter::default();
        registry.register(
            "agent_connects",
            "Agent connections accepted since start",
            agent_connects.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            bytes,
            oauth,
            agents,
            tunnels_claimed,
            tunnels_online,
            cert_expiry,
            ready,
            agent_connects,
        }
    }

    /// Counts one proxied request.
    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        let labels = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts tunnel body bytes (`request` or `response`).
    pub fn bytes(&self, direction: &'static str, n: u64) {
        if n > 0 {
            self.bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(n);
        }
    }

    /// Counts an accepted agent connection.
    pub fn agent_connected(&self) {
        self.agent_connects.inc();
    }

    fn oauth(&self, endpoint: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.oauth
            .get_or_create(&OauthLabels { endpoint, result })
            .inc();
    }
}

/// Readiness inputs and the draining flag.
#[derive(Debug, Default)]
pub struct Ops {
    /// The metrics.
    pub metrics: Metrics,
    draining: AtomicBool,
    endpoint: OnceLock<quinn::Endpoint>,
    identity: OnceLock<crate::tls::Identity>,
    started: OnceLock<Instant>,
}

/// What `/readyz` found.
#[derive(Debug, serde::Serialize)]
pub struct Readiness {
    /// Everything below holds.
    pub ready: bool,
    /// The QUIC endpoint is open for agents.
    pub quic: bool,
    /// The state database takes writes.
    pub store_writable: bool,
    /// The served certificate is within its validity period.
    pub certificate_valid: bool,
    /// Seconds until the certificate expires (negative: expired).
    pub certificate_expires_in: Option<i64>,
    /// The relay is shutting down (not ready, still alive).
    pub draining: bool,
    /// What is wrong, when not ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Ops {
    /// Remembers the pieces readiness checks (once, at start).
    pub fn attach(&self, endpoint: quinn::Endpoint, identity: crate::tls::Identity) {
        let _ = self.endpoint.set(endpoint);
        let _ = self.identity.set(identity);
        let _ = self.started.set(Instant::now());
    }

    /// Marks the relay as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Checks readiness (blocking: touches the state database).
    pub fn readiness(&self, app: &App) -> Readiness {
        let mut problems = Vec::new();
        let draining = self.is_draining();
        if draining {
            problems.push("shutting down".to_owned());
        }
        let quic = match self.endpoint.get() {
            Some(e) => e.local_addr().is_ok() && !draining,
            None => false,
        };
        if !quic {
            problems.push("the QUIC endpoint is not accepting agents".to_owned());
        }
        let store_writable = match store_write_probe(&app.config.state_dir) {
            Ok(()) => true,
            Err(e) => {
                problems.push(format!("the state database does not take writes: {e:#}"));
                false
            }
        };
        let expires_in = self.identity.get().and_then(|i| i.not_after()).map(|t| {
            match t.duration_since(SystemTime::now()) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            }
        });
        let provisional = self.identity.get().is_none_or(|i| !i.is_valid_now());
        let certificate_valid = expires_in.is_some_and(|s| s > 0) && !provisional;
        if !certificate_valid {
            problems.push(match expires_in {
                Some(s) if s <= 0 => "the TLS certificate has expired".to_owned(),
                _ => "no real TLS certificate is being served yet (ACME order pending?)".to_owned(),
            });
        }
        Readiness {
            ready: problems.is_empty(),
            quic,
            store_writable,
            certificate_valid,
            certificate_expires_in: expires_in,
            draining,
            problems,
        }
    }

    /// The metrics in the OpenMetrics text format, state gauges refreshed.
    pub fn render(&self, app: &App) -> String {
        let m = &self.metrics;
        m.agents.set(app.registry.online_count() as i64);
        let claims = app.registry.claims_snapshot();
        m.tunnels_claimed.set(claims.len() as i64);
        m.tunnels_online
            .set(app.registry.online_tunnel_count() as i64);
        if let Some(t) = self.identity.get().and_then(|i| i.not_after()) {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            m.cert_expiry.set(secs);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// A write transaction on the state database, rolled back: proves the file
/// and its directory take writes (disk full, read-only remount, permissions).
fn store_write_probe(state_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let conn = rusqlite::Connection::open_with_flags(
        state_dir.join(crate::store::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("opening")?;
    conn.busy_timeout(Duration::from_secs(2))?;
    conn.execute_batch(
        "BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS readyz_probe (x); \
         UPDATE revision SET value = value WHERE id = 1; ROLLBACK;",
    )
    .context("write transaction")?;
    Ok(())
}

/// `/healthz` and `/readyz`, for the public fronts.
pub fn probe_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The non-public listener's routes: probes and `/metrics`.
pub fn metrics_router(app: Arc<App>) -> Router {
    probe_routes()
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn healthz() -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        "ok\n",
    )
        .into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let probe = app.clone();
    let r = match tokio::task::spawn_blocking(move || probe.ops.readiness(&probe)).await {
        Ok(r) => r,
        Err(_) => {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    app.ops.metrics.ready.set(i64::from(r.ready));
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(r),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Readiness is checked at scrape time too (it touches the state
    // database), so `mcp_relay_ready` is current without anyone probing.
    let body = match tokio::task::spawn_blocking(move || {
        let r = app.ops.readiness(&app);
        app.ops.metrics.ready.set(i64::from(r.ready));
        app.ops.render(&app)
    })
    .await
    {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Counts calls to the OAuth and sign-in endpoints by path and result.
pub async fn count_oauth(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let endpoint = match req.uri().path() {
        "/authorize" => Some("authorize"),
        "/token" => Some("token"),
        "/register" => Some("register"),
        "/revoke" => Some("revoke"),
        "/device_authorization" => Some("device_authorization"),
        "/device" => Some("device"),
        "/oidc/callback" => Some("oidc_callback"),
        "/setup" => Some("setup"),
        _ => None,
    };
    let post_or_callback = req.method() == http::Method::POST || endpoint == Some("oidc_callback");
    let response = next.run(req).await;
    if let Some(endpoint) = endpoint.filter(|_| post_or_callback) {
        let s = response.status();
        app.ops
            .metrics
            .oauth(endpoint, s.is_success() || s.is_redirection());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_openmetrics_text() {
        let m = Metrics::new();
        m.request(Outcome::Allowed, Duration::from_millis(3));
        m.request(Outcome::Denied, Duration::from_micros(50));
        m.bytes("request", 10);
        m.oauth("token", true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("mcp_relay_requests_total{outcome=\"allowed\"} 1"),
            "{out}"
        );
        assert!(out.contains("mcp_relay_request_duration_seconds_bucket"));
        assert!(out.contains("mcp_relay_tunnel_bytes_total{direction=\"request\"} 10"));
        assert!(out.contains("mcp_relay_oauth_events_total{endpoint=\"token\",result=\"ok\"} 1"));
        assert!(out.trim_end().ends_with("# EOF"));
    }
}
