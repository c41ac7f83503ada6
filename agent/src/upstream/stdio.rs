//! Bridge to a stdio MCP server run as a child process (`--stdio "CMD ARGS…"`).
//! (Being written; see the bridge issue.)

use super::{BoxFuture, Upstream, UpstreamBody, UpstreamError, UpstreamRequest};

/// Runs a stdio MCP server per MCP session.
#[derive(Debug)]
pub struct StdioBridge {
    command: Vec<String>,
}

impl StdioBridge {
    /// A bridge running `command` (program and arguments).
    pub fn new(command: Vec<String>) -> anyhow::Result<Self> {
        anyhow::ensure!(!command.is_empty(), "--stdio needs a command");
        anyhow::bail!("--stdio is not available in this build yet")
    }
}

impl Upstream for StdioBridge {
    fn call(
        &self,
        _req: UpstreamRequest,
    ) -> BoxFuture<Result<http::Response<UpstreamBody>, UpstreamError>> {
        let cmd = self.command.join(" ");
        Box::pin(async move { Err(UpstreamError::Unavailable(format!("{cmd}: not available"))) })
    }

    fn describe(&self) -> String {
        self.command.join(" ")
    }
}
