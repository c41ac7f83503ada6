//! The three ways to reach a [`SqliteServer`]: stdio, an in-process Streamable HTTP tower
//! service, and that service on a TCP listener at `/mcp`.

use std::future::Future;
use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ServeError;
use crate::server::SqliteServer;

/// The path [`serve_http`] serves MCP at.
pub const MCP_PATH: &str = "/mcp";

/// The Streamable HTTP service type returned by [`streamable_http_service`].
pub type SqliteHttpService = StreamableHttpService<SqliteServer, LocalSessionManager>;

/// Serves MCP over stdin/stdout until the client closes stdin.
///
/// # Errors
/// [`ServeError::Initialize`] if the client never completes `initialize`;
/// [`ServeError::Task`] if the session task fails.
pub async fn serve_stdio(server: SqliteServer) -> Result<(), ServeError> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Initialize(e.to_string()))?;
    let reason = running.waiting().await?;
    tracing::debug!(?reason, "stdio MCP session ended");
    Ok(())
}

/// A Streamable HTTP tower service (`http::Request` in, `http::Response` out) for `server`,
/// with rmcp's defaults: stateful sessions (`Mcp-Session-Id`), SSE responses, and `Host`
/// checking that accepts only loopback names (protection against DNS rebinding).
///
/// Call it in-process (`tower::Service::call`) or mount it in any router. A caller forwarding
/// requests from elsewhere (the agent, whose requests carry the relay's `Host`) should use
/// [`streamable_http_service_with`] with its own `allowed_hosts`.
pub fn streamable_http_service(server: SqliteServer) -> SqliteHttpService {
    streamable_http_service_with(server, StreamableHttpServerConfig::default())
}

/// Like [`streamable_http_service`] with an explicit rmcp configuration (allowed hosts,
/// sessions, JSON responses, body limit, cancellation token).
pub fn streamable_http_service_with(
    server: SqliteServer,
    config: StreamableHttpServerConfig,
) -> SqliteHttpService {
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Serves Streamable HTTP at [`MCP_PATH`] on `listener` until `shutdown` completes.
///
/// On shutdown, open sessions and SSE streams are closed, then the server waits for in-flight
/// responses to finish.
///
/// # Errors
/// [`ServeError::Io`] if serving the listener fails.
pub async fn serve_http(
    server: SqliteServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sessions_closed = CancellationToken::new();
    let config =
        StreamableHttpServerConfig::default().with_cancellation_token(sessions_closed.clone());
    let service = streamable_http_service_with(server, config);
    let router = axum::Router::new().route_service(MCP_PATH, service);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, path = MCP_PATH, "serving MCP over Streamable HTTP");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Long-lived SSE streams would otherwise hold graceful shutdown open forever.
            sessions_closed.cancel();
        })
        .await?;
    Ok(())
}
