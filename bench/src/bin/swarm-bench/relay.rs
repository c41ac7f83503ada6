//! The relay under test: a real `mcp-relay serve --dev` process this
//! benchmark starts, restarts and always kills (a [`Relay`] kills its
//! process when dropped — on success, error or panic).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a relay may take to write `endpoints.json` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the start is polled (also the resolution of `listening`).
const START_POLL: Duration = Duration::from_millis(2);

/// One relay's files: state dir, config file, log, `XDG_CONFIG_HOME`.
#[derive(Debug, Clone)]
pub struct RelayDir {
    /// `--state`: keys, dev CA, claims, database; kept across a restart.
    pub state: PathBuf,
    config: PathBuf,
    xdg: PathBuf,
    log: PathBuf,
}

impl RelayDir {
    /// Lays out a relay under `root`, with a config allowing `max_agents`.
    pub fn create(root: &Path, max_agents: usize) -> anyhow::Result<Self> {
        let dir = Self {
            state: root.join("state"),
            config: root.join("relay.toml"),
            xdg: root.join("xdg-config"),
            log: root.join("relay.log"),
        };
        for d in [&dir.state, &dir.xdg] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The default (10,000) would refuse the largest swarm.
        std::fs::write(
            &dir.config,
            format!("[limits]\nmax_agents = {max_agents}\n"),
        )
        .with_context(|| format!("writing {}", dir.config.display()))?;
        Ok(dir)
    }

    /// The dev CA the relay's certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.state.join("dev-ca.pem")
    }

    /// The last `n` lines of the relay's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        // Settings from the caller's environment must not change what is measured.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("MCP_RELAY_") || k.starts_with("MCP_AGENT_") {
                cmd.env_remove(&*k);
            }
        }
        cmd.env("XDG_CONFIG_HOME", &self.xdg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// `mcp-relay agent-tokens create`: a fresh agent token.
    pub fn create_token(&self, bin: &Path) -> anyhow::Result<String> {
        let out = self
            .command(bin)
            .args([
                "agent-tokens",
                "create",
                "--label",
                "swarm-bench",
                "--state",
            ])
            .arg(&self.state)
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {} agent-tokens create", bin.display()))?;
        if !out.status.success() {
            bail!(
                "mcp-relay agent-tokens create failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let token = String::from_utf8(out.stdout)
            .context("the agent token is not UTF-8")?
            .trim()
            .to_owned();
        if !token.starts_with("mcpat_") {
            bail!("mcp-relay agent-tokens create printed no token");
        }
        Ok(token)
    }
}

/// What a running relay bound (its `endpoints.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Endpoints {
    /// HTTPS front.
    pub https: SocketAddr,
    /// QUIC endpoint for agents.
    pub quic: SocketAddr,
    /// Public base URL (`https://localhost:PORT`).
    pub public_url: String,
}

/// A running relay process, killed when dropped.
#[derive(Debug)]
pub struct Relay {
    child: Option<Child>,
    /// Its process id.
    pub pid: u32,
    /// What it bound.
    pub endpoints: Endpoints,
    /// When the process was spawned.
    pub spawned: Instant,
    /// When its `endpoints.json` appeared (it listens on both fronts then).
    pub listening: Instant,
}

impl Relay {
    /// Starts `mcp-relay serve --dev --no-auth` on `https` and `quic` (port 0:
    /// any free one) and waits until it listens.
    pub async fn start(
        bin: &Path,
        dir: &RelayDir,
        https: SocketAddr,
        quic: SocketAddr,
    ) -> anyhow::Result<Self> {
        let endpoints_file = dir.state.join("endpoints.json");
        // A previous (killed) process's file must not count as this one listening.
        match std::fs::remove_file(&endpoints_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", endpoints_file.display()));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dir.log)
            .with_context(|| format!("opening {}", dir.log.display()))?;
        let log2 = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = dir.command(bin);
        cmd.arg("serve")
            .arg("--dev")
            .arg("--no-auth")
            .arg("--config")
            .arg(&dir.config)
            .arg("--state")
            .arg(&dir.state)
            .arg("--https")
            .arg(https.to_string())
            .arg("--quic")
            .arg(quic.to_string())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p mcp-relay)",
                bin.display()
            )
        })?;
        let spawned = Instant::now();
        let mut relay = Self {
            pid: child.id(),
            child: Some(child),
            endpoints: Endpoints {
                https,
                quic,
                public_url: String::new(),
            },
            spawned,
            listening: spawned,
        };
        loop {
            if let Ok(bytes) = std::fs::read(&endpoints_file)
                && let Ok(e) = serde_json::from_slice::<Endpoints>(&bytes)
            {
                relay.listening = Instant::now();
                relay.endpoints = e;
                return Ok(relay);
            }
            if let Some(child) = relay.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "mcp-relay exited during start ({status}); its log ends:\n{}",
                    dir.log_tail(20)
                );
            }
            if spawned.elapsed() > START_TIMEOUT {
                bail!(
                    "mcp-relay did not write {} within {START_TIMEOUT:?}; its log ends:\n{}",
                    endpoints_file.display(),
                    dir.log_tail(20)
                );
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// SIGKILL, then reap: no drain, no GoAway — a crash, as agents see it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}
