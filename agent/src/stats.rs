//! Counters the agent keeps, and the local status socket `mcp-agent status`
//! reads them from.
//!
//! Each running `mcp-agent connect` listens on `<runtime dir>/<tunnel>.sock`
//! (a Unix socket, mode 0600); a client connecting to it receives one JSON
//! snapshot and EOF.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Live counters of one agent.
#[derive(Debug, Default)]
pub struct Stats {
    /// Request streams the relay opened.
    pub streams_received: AtomicU64,
    /// Streams refused before reaching the upstream (bad frames, limits).
    pub streams_rejected: AtomicU64,
    /// Streams refused because their identity assertion was missing or
    /// invalid (see [`crate::assertion`]); none of them reached the upstream.
    pub streams_refused: AtomicU64,
    /// Requests the owner's policy refused here (the upstream saw nothing).
    pub requests_denied: AtomicU64,
    /// Requests the upstream answered.
    pub requests_completed: AtomicU64,
    /// Requests that failed at the upstream (unreachable, error mid-body).
    pub upstream_errors: AtomicU64,
    /// Requests cancelled because the MCP client went away.
    pub requests_cancelled: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Successful connections to the relay (1 + reconnects).
    pub connects: AtomicU64,
    /// Whether connected now (0/1).
    pub connected: AtomicU64,
}

/// The JSON `mcp-agent status --json` prints per agent.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Tunnel name.
    pub tunnel: String,
    /// Public MCP URL (empty until the first Welcome).
    pub public_url: String,
    /// The agent's process id.
    pub pid: u32,
    /// Whether connected to the relay now.
    pub connected: bool,
    /// See [`Stats`].
    pub streams_received: u64,
    /// See [`Stats`].
    pub streams_rejected: u64,
    /// See [`Stats`]. Absent from agents older than assertion checks.
    #[serde(default)]
    pub streams_refused: u64,
    /// See [`Stats`].
    #[serde(default)]
    pub requests_denied: u64,
    /// See [`Stats`].
    pub requests_completed: u64,
    /// See [`Stats`].
    pub upstream_errors: u64,
    /// See [`Stats`].
    pub requests_cancelled: u64,
    /// See [`Stats`].
    pub in_flight: u64,
    /// See [`Stats`].
    pub connects: u64,
    /// Unix seconds when the snapshot was taken.
    pub at: u64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot for `status`.
    pub fn snapshot(&self, tunnel: &str, public_url: &str) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            tunnel: tunnel.to_owned(),
            public_url: public_url.to_owned(),
            pid: std::process::id(),
            connected: g(&self.connected) == 1,
            streams_received: g(&self.streams_received),
            streams_rejected: g(&self.streams_rejected),
            streams_refused: g(&self.streams_refused),
            requests_denied: g(&self.requests_denied),
            requests_completed: g(&self.requests_completed),
            upstream_errors: g(&self.upstream_errors),
            requests_cancelled: g(&self.requests_cancelled),
            in_flight: g(&self.in_flight),
            connects: g(&self.connects),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Where status sockets live: `$MCP_AGENT_RUNTIME_DIR`, else the per-user
/// runtime dir, else the data dir's `run/`.
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("MCP_AGENT_RUNTIME_DIR") {
        return Ok(PathBuf::from(d));
    }
    let dirs = directories::ProjectDirs::from("", "", "mcp-agent")
        .ok_or_else(|| anyhow::anyhow!("no home directory; set MCP_AGENT_RUNTIME_DIR"))?;
    Ok(dirs
        .runtime_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dirs.data_dir().join("run")))
}

/// Serves snapshots on `<dir>/<tunnel>.sock` until `shutdown`, then removes it.
#[cfg(unix)]
pub async fn serve_status(
    dir: PathBuf,
    tunnel: String,
    stats: Arc<Stats>,
    public_url: Arc<std::sync::Mutex<String>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{tunnel}.sock"));
    if path.exists() {
        // A live agent for this tunnel answers; a stale socket from a crash does not.
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!(
                "another mcp-agent on this machine already serves tunnel \"{tunnel}\" (status socket {})",
                path.display()
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding status socket {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((mut s, _)) = r {
                    let url = public_url.lock().map(|u| u.clone()).unwrap_or_default();
                    let snap = stats.snapshot(&tunnel, &url);
                    if let Ok(json) = serde_json::to_vec(&snap) {
                        let _ = s.write_all(&json).await;
                    }
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Reads the snapshot of every agent running on this machine.
#[cfg(unix)]
pub async fn read_all(dir: &Path) -> Vec<Snapshot> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    paths.sort();
    for p in paths {
        let Ok(mut s) = tokio::net::UnixStream::connect(&p).await else {
            continue;
        };
        let mut buf = Vec::new();
        if s.read_to_end(&mut buf).await.is_ok()
            && let Ok(snap) = serde_json::from_slice(&buf)
        {
            out.push(snap);
        }
    }
    out
}
