//! The tunnel under test: a dev `mcp-relay` (no auth, plain-HTTP front) and
//! one `mcp-agent connect` serving the SSE upstream, started the way
//! `bench/run.sh` starts them, in a temp dir. Dropping a [`Stack`] kills
//! both processes (also when starting fails half-way).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::measure::status_kib;

/// The tunnel's name.
pub const TUNNEL: &str = "bench";
/// How long the relay may take to write its endpoints file, and the agent
/// to connect.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of each log shown when a run fails.
const LOG_TAIL_LINES: usize = 15;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// `mcp-relay` binary.
    pub relay_bin: PathBuf,
    /// `mcp-agent` binary.
    pub agent_bin: PathBuf,
    /// The upstream's port on 127.0.0.1.
    pub upstream_port: u16,
    /// The relay's `max_streams_per_tunnel`.
    pub relay_max_streams: u32,
    /// The agent's `--max-streams`.
    pub agent_max_streams: u32,
}

/// A running relay and agent. Fields drop in order: processes first, then
/// their directory.
#[derive(Debug)]
pub struct Stack {
    relay: Child,
    agent: Option<Child>,
    /// The relay's plain-HTTP front.
    pub relay_http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the relay, makes an agent token, starts the agent and waits
    /// until it is connected.
    pub async fn start(cfg: &StackConfig) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sse-bench.")
            .tempdir()
            .context("making a temp dir")?;
        let state = dir.path().join("relay-state");
        let xdg = dir.path().join("xdg-config");
        std::fs::create_dir_all(&state)?;
        std::fs::create_dir_all(&xdg)?;
        let relay = clean(Command::new(&cfg.relay_bin))
            .args(["serve", "--dev", "--state"])
            .arg(&state)
            .args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0", "--no-auth"])
            .arg("--max-streams-per-tunnel")
            .arg(cfg.relay_max_streams.to_string())
            .env("XDG_CONFIG_HOME", &xdg)
            .stdout(log_file(dir.path(), "relay.log")?)
            .stderr(log_file(dir.path(), "relay.log")?)
            .spawn()
            .with_context(|| format!("starting {}", cfg.relay_bin.display()))?;
        let mut this = Self {
            relay,
            agent: None,
            relay_http: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        match this.start_agent(cfg, &state, &xdg).await {
            Ok(()) => Ok(this),
            Err(e) => Err(e.context(this.log_tail())),
        }
    }

    /// The relay's process id.
    pub fn relay_pid(&self) -> anyhow::Result<u32> {
        self.relay.id().context("the relay has exited")
    }

    /// The agent's process id.
    pub fn agent_pid(&self) -> anyhow::Result<u32> {
        self.agent
            .as_ref()
            .and_then(|a| a.id())
            .context("the agent has exited")
    }

    /// Resident memory (KiB) of the relay and the agent.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        Ok((rss_kib(self.relay_pid()?)?, rss_kib(self.agent_pid()?)?))
    }

    /// Whether both processes still run (a dead one is an error).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.relay.try_wait()? {
            bail!("the relay exited ({s})");
        }
        if let Some(a) = &mut self.agent
            && let Some(s) = a.try_wait()?
        {
            bail!("the agent exited ({s})");
        }
        Ok(())
    }

    /// The last lines of the relay's and the agent's logs.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["relay.log", "agent.log", "agent.out"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            if !tail.is_empty() {
                out.push_str(&format!("--- last lines of {name}:\n{}\n", tail.join("\n")));
            }
        }
        out
    }

    async fn start_agent(
        &mut self,
        cfg: &StackConfig,
        state: &Path,
        xdg: &Path,
    ) -> anyhow::Result<()> {
        let endpoints = state.join("endpoints.json");
        let (http, public_url) = self
            .poll("the relay to write endpoints.json", || {
                read_endpoints(&endpoints)
            })
            .await?;
        self.relay_http = http
            .parse()
            .with_context(|| format!("endpoints.json: http = {http:?}"))?;
        let token = tokio::time::timeout(
            START_TIMEOUT,
            clean(Command::new(&cfg.relay_bin))
                .args(["agent-tokens", "create", "--state"])
                .arg(state)
                .args(["--label", "sse-bench"])
                .env("XDG_CONFIG_HOME", xdg)
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("mcp-relay agent-tokens create hung")??;
        if !token.status.success() {
            bail!("mcp-relay agent-tokens create failed ({})", token.status);
        }
        let token = String::from_utf8(token.stdout)?.trim().to_owned();
        let run_dir = self.dir.path().join("agent-run");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&run_dir)?;
        }
        let agent = clean(Command::new(&cfg.agent_bin))
            .args(["connect", "--relay", &public_url, "--ca"])
            .arg(state.join("dev-ca.pem"))
            .args(["--name", TUNNEL, "--upstream"])
            .arg(format!("http://127.0.0.1:{}/mcp", cfg.upstream_port))
            .args(["--quiet", "--no-local-log", "--max-streams"])
            .arg(cfg.agent_max_streams.to_string())
            .env("XDG_CONFIG_HOME", xdg)
            .env("MCP_AGENT_RUNTIME_DIR", &run_dir)
            .env("MCP_AGENT_TOKEN", token)
            .stdout(log_file(self.dir.path(), "agent.out")?)
            .stderr(log_file(self.dir.path(), "agent.log")?)
            .spawn()
            .with_context(|| format!("starting {}", cfg.agent_bin.display()))?;
        self.agent = Some(agent);
        let out = self.dir.path().join("agent.out");
        self.poll("the agent to connect (\"Public MCP URL\")", || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.contains("Public MCP URL"))
                .map(|_| ())
        })
        .await
    }

    /// Polls `f` every 50 ms until it gives a value, both processes live
    /// and [`START_TIMEOUT`] has not passed.
    async fn poll<T>(&mut self, what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            self.check_alive()
                .with_context(|| format!("waiting for {what}"))?;
            if tokio::time::Instant::now() > deadline {
                bail!("timed out after {START_TIMEOUT:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&text, "VmRSS").with_context(|| format!("no VmRSS in {path}"))
}

/// CPU time (ns) the threads of a process have used so far, summed from
/// `/proc/PID/task/*/schedstat` (the process's own file counts its main
/// thread only).
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = task?.path().join("schedstat");
        // A thread that exited meanwhile has no file any more.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .with_context(|| format!("bad {}: {text:?}", path.display()))?;
    }
    Ok(total)
}

/// A command that inherits none of the caller's MCP_RELAY_*/MCP_AGENT_*
/// settings (they must not change what is measured), logs at info like
/// `bench/run.sh` (without colour: the logs go to files), and is killed
/// when its handle drops.
fn clean(mut c: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("MCP_RELAY_") || k.starts_with("MCP_AGENT_") {
            c.env_remove(&*k);
        }
    }
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .with_context(|| format!("opening {name}"))
}

/// `(http, public_url)` from the relay's endpoints.json, once it is complete.
fn read_endpoints(path: &Path) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some((
        v.get("http")?.as_str()?.to_owned(),
        v.get("public_url")?.as_str()?.to_owned(),
    ))
}
