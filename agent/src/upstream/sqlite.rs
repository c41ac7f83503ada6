//! The built-in SQLite MCP tool, served in-process: requests go straight into
//! rmcp's Streamable HTTP service, with no port and no extra process.

use std::convert::Infallible;

use http::header::{HOST, HeaderValue};
use http_body_util::BodyExt;
use mcp_sqlite::{SqliteHttpService, SqliteServer};
use rmcp::transport::StreamableHttpServerConfig;
use tower::ServiceExt;

use super::{BoxFuture, Upstream, UpstreamBody, UpstreamError, UpstreamRequest};

/// The SQLite tool as an upstream.
#[derive(Clone)]
pub struct SqliteUpstream {
    service: SqliteHttpService,
    describe: String,
}

impl std::fmt::Debug for SqliteUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUpstream")
            .field("db", &self.describe)
            .finish()
    }
}

impl SqliteUpstream {
    /// Wraps an opened SQLite server.
    pub fn new(server: SqliteServer) -> Self {
        let describe = format!(
            "built-in SQLite tool on {}{}",
            server.config().path.display(),
            if server.config().allow_writes {
                " (writes allowed)"
            } else {
                " (read-only)"
            }
        );
        // In-process there is no network hop to protect from DNS rebinding: the
        // relay is the boundary, so rmcp's Host check is off here.
        let config = StreamableHttpServerConfig::default().disable_allowed_hosts();
        Self {
            service: mcp_sqlite::streamable_http_service_with(server, config),
            describe,
        }
    }
}

impl Upstream for SqliteUpstream {
    fn call(
        &self,
        mut req: UpstreamRequest,
    ) -> BoxFuture<Result<http::Response<UpstreamBody>, UpstreamError>> {
        let service = self.service.clone();
        Box::pin(async move {
            req.headers_mut()
                .insert(HOST, HeaderValue::from_static("localhost"));
            let resp = service
                .oneshot(req)
                .await
                .map_err(|e: Infallible| match e {})?;
            Ok(resp.map(|b| b.map_err(|e: Infallible| match e {}).boxed()))
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
