//! Where the agent sends requests: the local MCP server behind the tunnel.
//!
//! - [`http::HttpUpstream`]: any local Streamable HTTP MCP server (`--upstream URL`).
//! - [`sqlite::SqliteUpstream`]: the built-in SQLite tool, in-process (`--db FILE`).
//! - [`stdio::StdioBridge`]: any stdio MCP server run as a child process (`--stdio CMD`).
//!
//! Each takes a whole HTTP request (the body is already complete: the relay
//! sends bounded bodies) and returns a streaming response.

pub mod http;
pub mod sqlite;
pub mod stdio;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;

/// A boxed error from an upstream body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The streaming response body every upstream returns.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// A boxed future, as `dyn Upstream` needs.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The request every upstream takes. The URI's path and query are those the
/// MCP client used below `/t/NAME` (e.g. `/mcp`).
pub type UpstreamRequest = ::http::Request<Full<Bytes>>;

/// Why an upstream could not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached or failed before answering.
    #[error("{0}")]
    Unavailable(String),
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(String),
}

/// A local MCP server the agent forwards to.
pub trait Upstream: Send + Sync + std::fmt::Debug + 'static {
    /// Sends one request; resolves when the response head is available.
    /// Dropping the future (or the response body) cancels the request.
    fn call(
        &self,
        req: UpstreamRequest,
    ) -> BoxFuture<Result<::http::Response<UpstreamBody>, UpstreamError>>;

    /// A short description for logs (`http://127.0.0.1:8000/mcp`, `sqlite shop.db`).
    fn describe(&self) -> String;
}

/// Renders an error with its sources: `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
