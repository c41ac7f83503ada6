//! The agent's own log of what it executed (and refused): the same
//! tamper-evident format as the relay's audit log (`mcp-tunnel-audit`), one
//! file per tunnel in the agent's data dir. `mcp-agent log` reads it.

use std::path::PathBuf;

use anyhow::Context;
use mcp_tunnel_audit::{AuditLog, AuditOptions, AuditPaths};

/// Where the logs live: `$MCP_AGENT_LOG_DIR`, else the per-user data dir
/// (`~/.local/share/mcp-agent/logs` on Linux).
pub fn log_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("MCP_AGENT_LOG_DIR") {
        return Ok(PathBuf::from(d));
    }
    directories::ProjectDirs::from("", "", "mcp-agent")
        .map(|d| d.data_dir().join("logs"))
        .context("no data directory on this system; set MCP_AGENT_LOG_DIR")
}

/// The log files of `tunnel`.
pub fn paths(tunnel: &str) -> anyhow::Result<AuditPaths> {
    Ok(AuditPaths::in_dir(log_dir()?, tunnel))
}

/// Opens (or creates) `tunnel`'s log.
pub fn open(tunnel: &str) -> anyhow::Result<AuditLog> {
    let p = paths(tunnel)?;
    std::fs::create_dir_all(log_dir()?).context("creating the log directory")?;
    AuditLog::open(p, AuditOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The tunnels that have a log here.
pub fn tunnels() -> anyhow::Result<Vec<String>> {
    let dir = log_dir()?;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(t) = name.strip_suffix(".db") {
            out.push(t.to_owned());
        }
    }
    out.sort();
    Ok(out)
}
