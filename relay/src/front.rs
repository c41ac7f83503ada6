//! The HTTP side: HTTPS (HTTP/2 and HTTP/1.1 over rustls) and optional plain
//! HTTP listeners, both serving the same router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mcp_tunnel_proto::{ALPN, SUPPORTED_VERSIONS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::proxy::{json_error, proxy};

/// Largest HTTP/1.1 header block hyper buffers (64 KiB); over it hyper answers 431.
const MAX_H1_HEADER_BUF: usize = 64 * 1024;
/// Largest HTTP/2 header list accepted (64 KiB).
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// Concurrent HTTP/2 streams per client connection.
const MAX_H2_STREAMS: u32 = 1024;
/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's routes (behind the subdomain rewrite when it is on).
pub fn router(app: Arc<App>) -> Router {
    let routes = routes(app.clone());
    let Some(parent) = app.auth.subdomain_parent().map(|p| format!(".{p}")) else {
        return routes;
    };
    // Rewritten before routing: `NAME.relay/mcp` is `relay/t/NAME/mcp`.
    let rewrite = tower::ServiceExt::map_request(routes, move |req: axum::extract::Request| {
        subdomain_rewrite(req, &parent)
    });
    Router::new().fallback_service(rewrite)
}

/// Maps a request to a tunnel's subdomain onto the path routes, marking it
/// [`Via::Subdomain`](crate::auth::Via); on such a host only the MCP
/// endpoint, its resource metadata and the probes exist.
fn subdomain_rewrite(mut req: axum::extract::Request, parent: &str) -> axum::extract::Request {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let Some(label) = host
        .to_ascii_lowercase()
        .strip_suffix(parent)
        .map(str::to_owned)
    else {
        return req;
    };
    let Ok(tunnel) = mcp_tunnel_proto::TunnelName::parse(&label) else {
        return req;
    };
    let path = req.uri().path();
    let new_path = if path == "/mcp" || path.starts_with("/mcp/") {
        format!("/t/{tunnel}{path}")
    } else if path == "/.well-known/oauth-protected-resource/mcp"
        || path == "/.well-known/oauth-protected-resource"
    {
        format!("/.well-known/oauth-protected-resource/t/{tunnel}/mcp")
    } else if path == "/healthz" || path == "/readyz" {
        return req;
    } else {
        "/.tunnel-host-only-mcp".to_owned()
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(crate::auth::Via::Subdomain);
    }
    req
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/.well-known/mcp-relay", get(well_known))
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/agent/enroll",
            axum::routing::post(crate::devices::enroll::enroll),
        )
        .route(
            "/agent/logout",
            axum::routing::post(crate::devices::enroll::logout),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata_root),
        )
        .route(
            "/.well-known/oauth-protected-resource/t/{tunnel}/mcp",
            get(resource_metadata),
        )
        .route("/t/{*rest}", any(proxy))
        .route("/", get(index))
        .merge(
            crate::authorization::routes().route_layer(axum::middleware::from_fn_with_state(
                app.clone(),
                crate::ops::count_oauth,
            )),
        )
        .merge(crate::ops::probe_routes())
        .fallback(not_found)
        .with_state(app)
}

/// `GET /.well-known/mcp-relay`: what an agent needs to find the QUIC endpoint.
async fn well_known(State(app): State<Arc<App>>) -> Response {
    axum::Json(serde_json::json!({
        "relay_version": env!("CARGO_PKG_VERSION"),
        "protocol_versions": SUPPORTED_VERSIONS,
        "alpn": String::from_utf8_lossy(ALPN),
        "quic": { "port": app.quic_port },
        "public_url": app.public_url,
    }))
    .into_response()
}

/// The relay's public signing keys (RFC 7517).
async fn jwks(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.auth.jwks()).into_response()
}

/// RFC 9728 protected-resource metadata for one tunnel (path-inserted form).
async fn resource_metadata(
    State(app): State<Arc<App>>,
    axum::extract::Path(tunnel): axum::extract::Path<String>,
    via: Option<axum::Extension<crate::auth::Via>>,
) -> Response {
    let Ok(tunnel) = mcp_tunnel_proto::TunnelName::parse(&tunnel) else {
        return not_found().await;
    };
    let via = via.map(|v| v.0).unwrap_or_default();
    axum::Json(protected_resource(
        &app,
        &app.auth.resource_url_via(&tunnel, via),
        Some(&tunnel),
    ))
    .into_response()
}

/// RFC 9728 metadata at the root: the relay as a whole.
async fn resource_metadata_root(State(app): State<Arc<App>>) -> Response {
    axum::Json(protected_resource(&app, &app.public_url, None)).into_response()
}

fn protected_resource(
    app: &App,
    resource: &str,
    tunnel: Option<&mcp_tunnel_proto::TunnelName>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "resource": resource,
        "authorization_servers": [app.auth.issuer()],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [crate::auth::MCP_SCOPE],
        "jwks_uri": format!("{}/.well-known/jwks.json", app.public_url),
    });
    if let Some(t) = tunnel {
        v["resource_name"] = serde_json::Value::String(format!("MCP tunnel {t}"));
    }
    v
}

async fn index() -> &'static str {
    "mcp-relay: MCP clients connect to /t/<tunnel>/mcp\n"
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; MCP URLs look like /t/NAME/mcp",
    )
}

/// Serves `router` on `listener` (over TLS when `tls` is set) until
/// `shutdown`, then lets in-flight requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<crate::tls::HttpsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_H1_HEADER_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .max_concurrent_streams(MAX_H2_STREAMS);
    let builder = Arc::new(builder);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        // The peer address, for rate limits (axum's ConnectInfo extractor).
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    // Bounded: the ClientHello and the rest of the handshake
                    // each within TLS_HANDSHAKE_TIMEOUT, and between them at
                    // most NAME_WAIT for a tunnel name's first certificate.
                    let stream = match acceptor.accept(tcp, TLS_HANDSHAKE_TIMEOUT).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    // A TLS-ALPN-01 validation (RFC 8737) only needs the
                    // handshake; it never speaks HTTP.
                    if stream.get_ref().1.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) {
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {drain:?}; closing them");
    }
}

/// Binds a TCP listener with a clear error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding the {what} listener on {addr} (is another process using it? pick another with --{what} ADDR)")
    })
}
