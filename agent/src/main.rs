//! The `mcp-agent` command line. Everything testable lives in the library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_agent::config::AgentFile;
use mcp_agent::connect::AgentCredential;
use mcp_agent::credstore::{CredentialStore, MAX_VALUE_BYTES};
use mcp_agent::secrets::{Resolved, SecretName, Secrets, SecretsError};
use mcp_agent::upstream::Upstream;
use mcp_agent::upstream::http::{HeaderSpec, HttpUpstream};
use mcp_agent::upstream::sqlite::SqliteUpstream;
use mcp_agent::upstream::stdio::{EnvSpec, StdioBridge, StdioLimits};
use mcp_agent::{ConnectConfig, ConnectError};
use mcp_tunnel_proto::{Secret, TunnelName};
use tokio_util::sync::CancellationToken;
use url::Url;
use zeroize::Zeroizing;

/// mimalloc instead of glibc malloc: per-request buffers made glibc's
/// malloc/free ~14% of the relay's CPU at 20k req/s (perf, bench/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The laptop side of mcp-tunnel: dials the relay and serves a local MCP
/// server through it. No inbound port needed.
#[derive(Debug, Parser)]
#[command(name = "mcp-agent", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  mcp-agent connect --relay https://relay.example.com --token $TOKEN --db shop.db
  mcp-agent connect --relay https://relay.example.com --token $TOKEN \\
      --name shop --upstream http://127.0.0.1:8000/mcp
  mcp-agent connect --relay https://relay.example.com --token $TOKEN \\
      --name notes --stdio \"uvx mcp-server-sqlite --db-path notes.db\"
  mcp-agent serve --db shop.db                 # plain local MCP server over stdio
  mcp-agent serve --db shop.db --http 127.0.0.1:8000
  mcp-agent connect --relay https://localhost:8443 --ca ~/.local/share/mcp-relay/dev-ca.pem ...
  mcp-agent status --json

Secrets for the upstream (kept in the OS keyring or a 0600 file, never sent to the relay):
  mcp-agent secrets set DBPASS                 # prompts (input hidden), or pipe the value in
  mcp-agent connect ... --stdio \"my-mcp-server\" --env PGPASSWORD=secret:DBPASS
  mcp-agent connect ... --upstream http://127.0.0.1:8000/mcp \\
      --upstream-header 'Authorization: Bearer secret:API_TOKEN'

Exit codes: 0 ok, 1 error, 2 usage, 3 unauthorized, 4 tunnel name taken,
5 protocol version mismatch, 6 replaced by another agent with the same credential.";

/// What the tunnel serves: exactly one of --db, --stdio, --upstream (here or
/// in the config file).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "source", multiple = false)]
struct UpstreamArgs {
    /// Serve the built-in SQLite MCP tool on this database file (read-only unless --allow-writes).
    #[arg(long, env = "MCP_AGENT_DB")]
    db: Option<PathBuf>,
    /// Run this stdio MCP server (one child per MCP session), e.g. "uvx mcp-server-sqlite --db-path x.db".
    #[arg(long, env = "MCP_AGENT_STDIO")]
    stdio: Option<String>,
    /// A local Streamable HTTP MCP server, e.g. http://127.0.0.1:8000/mcp.
    #[arg(long, env = "MCP_AGENT_UPSTREAM")]
    upstream: Option<Url>,
}

/// Options of the built-in SQLite tool.
#[derive(Debug, Clone, clap::Args)]
struct SqliteArgs {
    /// Allow write_query and create_table (the database is opened read-write, WAL).
    #[arg(long, env = "MCP_AGENT_ALLOW_WRITES")]
    allow_writes: bool,
    /// Config file (TOML) [default: ~/.config/mcp-agent/agent.toml if it exists].
    #[arg(long, env = "MCP_AGENT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Most rows one query returns [default: 500].
    #[arg(long, env = "MCP_AGENT_MAX_ROWS")]
    max_rows: Option<usize>,
    /// Most bytes of rows one query returns [default: 1048576].
    #[arg(long, env = "MCP_AGENT_MAX_BYTES")]
    max_bytes: Option<usize>,
    /// Per-query time limit, e.g. 5s or 500ms [default: 5s].
    #[arg(long, env = "MCP_AGENT_QUERY_TIMEOUT", value_parser = humantime::parse_duration)]
    query_timeout: Option<std::time::Duration>,
}

impl SqliteArgs {
    /// Fills what the flags left unset from the config file.
    fn merge(mut self, file: &AgentFile) -> Self {
        self.allow_writes |= file.allow_writes.unwrap_or(false);
        self.max_rows = self.max_rows.or(file.max_rows);
        self.max_bytes = self.max_bytes.or(file.max_bytes);
        self.query_timeout = self.query_timeout.or(file.query_timeout);
        self
    }

    fn open(&self, db: &std::path::Path) -> anyhow::Result<mcp_sqlite::SqliteServer> {
        let mut config = mcp_sqlite::SqliteConfig::new(db).with_allow_writes(self.allow_writes);
        if let Some(n) = self.max_rows {
            config.max_rows = n;
        }
        if let Some(n) = self.max_bytes {
            config.max_bytes = n;
        }
        if let Some(t) = self.query_timeout {
            config.query_timeout = t;
        }
        Ok(mcp_sqlite::SqliteServer::open(config)?)
    }
}

impl UpstreamArgs {
    /// The flags' source if any was given, else the config file's.
    fn merge(self, file: &AgentFile) -> Self {
        if self.db.is_some() || self.stdio.is_some() || self.upstream.is_some() {
            return self;
        }
        Self {
            db: file.db.clone(),
            stdio: file.stdio.clone(),
            upstream: file.upstream.clone(),
        }
    }

    fn build(
        &self,
        sqlite: &SqliteArgs,
        extras: &UpstreamExtras,
        resolved: &Resolved,
    ) -> anyhow::Result<std::sync::Arc<dyn Upstream>> {
        Ok(match (&self.db, &self.stdio, &self.upstream) {
            (Some(db), _, _) => std::sync::Arc::new(SqliteUpstream::new(sqlite.open(db)?)),
            (_, Some(cmd), _) => {
                let argv = shell_words(cmd)?;
                let env = extras
                    .env
                    .iter()
                    .map(|e| {
                        e.render(resolved)
                            .with_context(|| format!("--env {}", e.name))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                std::sync::Arc::new(StdioBridge::with_env(argv, env, StdioLimits::default())?)
            }
            (_, _, Some(url)) => {
                let mut headers = http::HeaderMap::new();
                for h in &extras.headers {
                    let (name, value) = h.render(resolved)?;
                    headers.append(name, value);
                }
                std::sync::Arc::new(HttpUpstream::new(url)?.with_headers(headers))
            }
            _ => anyhow::bail!(
                "nothing to serve: pass one of --db FILE, --stdio CMD or --upstream URL (or set db/stdio/upstream in the config file)"
            ),
        })
    }

    fn default_name(&self) -> anyhow::Result<TunnelName> {
        let stem = self
            .db
            .as_ref()
            .and_then(|p| p.file_stem())
            .and_then(|s| s.to_str())
            .ok_or_else(|| anyhow::anyhow!("pass --name NAME (only --db has a default name)"))?;
        Ok(TunnelName::sanitize(stem)?)
    }
}

/// What `--env` and `--upstream-header` (or the config file's `env` and
/// `upstream_headers`) add to the upstream.
#[derive(Debug, Default)]
struct UpstreamExtras {
    env: Vec<EnvSpec>,
    headers: Vec<HeaderSpec>,
}

impl UpstreamExtras {
    /// The flags' lists, else the config file's.
    fn merge(
        env: Vec<EnvSpec>,
        headers: Vec<HeaderSpec>,
        file: &AgentFile,
    ) -> anyhow::Result<Self> {
        fn from_file<T>(list: &Option<Vec<String>>, key: &str) -> anyhow::Result<Vec<T>>
        where
            T: std::str::FromStr,
            T::Err: std::error::Error + Send + Sync + 'static,
        {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<T>()
                        .with_context(|| format!("in the config file: {key}[{i}]"))
                })
                .collect()
        }
        Ok(Self {
            env: if env.is_empty() {
                from_file(&file.env, "env")?
            } else {
                env
            },
            headers: if headers.is_empty() {
                from_file(&file.upstream_headers, "upstream_headers")?
            } else {
                headers
            },
        })
    }

    /// `--env` needs a stdio child and `--upstream-header` an HTTP upstream.
    fn check(&self, source: &UpstreamArgs) -> anyhow::Result<()> {
        if !self.env.is_empty() && source.stdio.is_none() {
            anyhow::bail!(
                "--env sets the environment of a --stdio child, and this tunnel serves no --stdio command; for --upstream URL use --upstream-header"
            );
        }
        if !self.headers.is_empty() && source.upstream.is_none() {
            anyhow::bail!(
                "--upstream-header applies to an --upstream URL, and this tunnel serves none; for --stdio CMD use --env"
            );
        }
        Ok(())
    }

    /// Reads the secrets they name from the credential store (at start, so
    /// a missing one fails now, not at the first request).
    fn resolve(&self) -> anyhow::Result<Resolved> {
        let names: Vec<&SecretName> = self
            .env
            .iter()
            .map(|e| &e.value)
            .chain(self.headers.iter().map(|h| &h.value))
            .flat_map(|t| t.secrets())
            .collect();
        if names.is_empty() {
            return Ok(Resolved::default());
        }
        let store = CredentialStore::open()
            .context("opening the credential store for the upstream's secrets")?;
        let resolved = Secrets::new(&store).resolve(names).map_err(|e| match e {
            SecretsError::Unknown(_) => {
                anyhow::anyhow!("{e}\n  (credential store: {})", store.describe())
            }
            e => anyhow::Error::from(e),
        })?;
        let listed: Vec<&str> = resolved.names().map(|n| n.as_str()).collect();
        eprintln!(
            "secrets {} from {} (used on this machine only)",
            listed.join(", "),
            store.describe()
        );
        Ok(resolved)
    }
}

/// Splits a command line on whitespace, honouring simple single/double quotes.
fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    anyhow::ensure!(quote.is_none(), "unbalanced quote in --stdio command");
    if any || !cur.is_empty() {
        out.push(cur);
    }
    anyhow::ensure!(!out.is_empty(), "--stdio needs a command");
    Ok(out)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign this machine in as one of your devices (device code, or --enroll-token).
    #[command(
        after_help = "Examples:\n  mcp-agent login --relay https://relay.example.com          # prints a URL and a code\n  mcp-agent login --relay https://relay.example.com --enroll-token $TOKEN   # headless"
    )]
    Login(LoginCliArgs),
    /// Revoke this device at the relay and forget its credentials here.
    Logout {
        /// Only forget the credentials here (the relay is unreachable, or keep the device).
        #[arg(long)]
        local_only: bool,
    },
    /// Connect to a relay and serve a local MCP server through it.
    Connect(Box<ConnectArgs>),
    /// Run the built-in SQLite MCP tool as an ordinary local MCP server (stdio, or HTTP with --http).
    Serve(ServeArgs),
    /// Write the sample shop database (customers, products, orders) to FILE.
    DemoDb {
        /// Where to write it (must not exist).
        file: PathBuf,
    },
    /// Store secrets the upstream needs, in the OS keyring or a 0600 file.
    ///
    /// Use them as secret:NAME in `connect --env VAR=secret:NAME` (stdio) or
    /// `connect --upstream-header 'Authorization: Bearer secret:NAME'` (HTTP).
    /// Values stay on this machine: never sent to the relay, never printed.
    /// MCP_AGENT_CREDENTIAL_STORE=keyring|file picks the store (default: the
    /// OS keyring if it works here, else ~/.config/mcp-agent/credentials.toml).
    ///
    /// Exit codes: 0 ok, 1 error (no such secret, store unusable), 2 usage.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Give someone access to your tunnel: a scoped, expiring, revocable grant.
    ///
    /// WHO is an email (an account is made if they have none, and a one-time
    /// set-password link printed), @domain (everyone with an email there) or
    /// group:NAME (everyone in that group at the relay).
    ///
    /// Exit codes: 0 ok, 1 not logged in / relay unreachable, 3 device refused,
    /// 4 refused (not your tunnel, bad input).
    #[command(
        after_help = "Examples:\n  mcp-agent share bob@example.com --tools read_query,list_tables --expires 7d\n  mcp-agent share @example.com --read-only\n  mcp-agent share group:analysts --tunnel shop --expires 12h"
    )]
    Share(ShareArgs),
    /// List or revoke the grants on your tunnels.
    Shares {
        #[command(subcommand)]
        command: SharesCommand,
    },
    /// Show this machine's own log of the requests it executed or refused.
    #[command(
        after_help = "Examples:\n  mcp-agent log\n  mcp-agent log --tunnel shop -n 100 --follow\n  mcp-agent log --verify"
    )]
    Log(LogArgs),
    /// Show the relay's audit records for your tunnels (who called what, allowed or denied).
    #[command(
        after_help = "Examples:\n  mcp-agent audit\n  mcp-agent audit --tunnel shop -n 100 --follow"
    )]
    Audit(AuditArgs),
    /// Show the agents running on this machine.
    Status {
        /// Print JSON (one array of agents).
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct ShareArgs {
    /// bob@example.com, @example.com or group:NAME.
    who: String,
    /// The tunnel [default: your only one].
    #[arg(long)]
    tunnel: Option<String>,
    /// Only these tools (comma-separated) [default: every tool, plus resources and prompts].
    #[arg(long, value_delimiter = ',')]
    tools: Option<Vec<String>>,
    /// Only tools annotated read-only (unannotated tools count as destructive).
    #[arg(long)]
    read_only: bool,
    /// Lifetime, e.g. 7d, 12h [default: until revoked].
    #[arg(long)]
    expires: Option<humantime::Duration>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SharesCommand {
    /// The grants on your tunnels (live, expired and revoked).
    List {
        /// Only this tunnel.
        #[arg(long)]
        tunnel: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant (takes effect within a second, already-issued tokens included).
    Revoke {
        /// The grant id (at least 6 characters of it).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Check the log's chain and checkpoints instead (exit 1 if tampered with).
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    tail: mcp_tunnel_audit::cli::TailArgs,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Only this tunnel [default: all of yours].
    #[arg(long)]
    tunnel: Option<String>,
    /// How many of the newest records to show.
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: u32,
    /// Keep printing new records as they come.
    #[arg(long)]
    follow: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Store (or replace) a secret. The value is read from the terminal
    /// without echo, or from stdin when it is piped.
    Set {
        /// Its name: 1 to 64 letters, digits, '_', '.' or '-'.
        name: SecretName,
        /// Read the value from stdin even on a terminal (one trailing newline is dropped).
        #[arg(long)]
        value_stdin: bool,
    },
    /// List stored secrets: name, created, last used (never values).
    List {
        /// Print JSON (an array of {name, created, last_used}).
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    #[command(visible_alias = "remove")]
    Rm {
        /// Its name.
        name: SecretName,
    },
}

#[derive(Debug, clap::Args)]
struct LoginCliArgs {
    /// The relay's URL [default: the one remembered from the last login].
    #[arg(long, env = "MCP_AGENT_RELAY")]
    relay: Option<Url>,
    /// A one-time token from `mcp-relay enroll-tokens create` (headless servers, CI).
    #[arg(long, env = "MCP_AGENT_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// Extra CA certificate (PEM) to trust for the relay, e.g. a dev relay's dev-ca.pem.
    #[arg(long, env = "MCP_AGENT_CA")]
    ca: Option<PathBuf>,
    /// This device's name at the relay [default: the host name].
    #[arg(long)]
    label: Option<String>,
    /// Don't try to open a browser for the approval page.
    #[arg(long)]
    no_browser: bool,
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// The relay's URL.
    #[arg(long, env = "MCP_AGENT_RELAY")]
    relay: Option<Url>,
    /// Tunnel name (lowercase letters, digits, '-') [default: the --db file's stem].
    #[arg(long, env = "MCP_AGENT_NAME")]
    name: Option<TunnelName>,
    #[command(flatten)]
    source: UpstreamArgs,
    #[command(flatten)]
    sqlite: SqliteArgs,
    /// Extra CA certificate (PEM) to trust for the relay, e.g. a dev relay's dev-ca.pem.
    #[arg(long, env = "MCP_AGENT_CA")]
    ca: Option<PathBuf>,
    /// Agent token from `mcp-relay agent-tokens create` (or token_file in the config file).
    #[arg(long, env = "MCP_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Don't print a line per request.
    #[arg(long, short)]
    quiet: bool,
    /// The owner's Cedar policy for this tunnel (synced to the relay, and
    /// checked here again on every request). Validated at start.
    #[arg(long, value_name = "FILE", env = "MCP_AGENT_POLICY")]
    policy: Option<PathBuf>,
    /// Don't keep the local log of executed requests (`mcp-agent log`).
    #[arg(long)]
    no_local_log: bool,
    /// Requests (QUIC streams) the relay may have open to this agent at
    /// once, 1-65535. Every open SSE stream holds one until it ends; the
    /// relay's own limit is `[limits] max_streams_per_tunnel`.
    #[arg(
        long,
        value_name = "N",
        env = "MCP_AGENT_MAX_STREAMS",
        default_value_t = mcp_tunnel_transport::quic::AGENT_MAX_INCOMING_STREAMS,
        value_parser = clap::value_parser!(u32).range(1..=65535),
    )]
    max_streams: u32,
    /// Environment variable for the --stdio child: NAME=VALUE, or
    /// NAME=secret:KEY for a secret stored with `mcp-agent secrets set KEY`
    /// (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<EnvSpec>,
    /// Header added to every request to the --upstream server, e.g.
    /// 'Authorization: Bearer secret:KEY' (secret:KEY is replaced by the
    /// stored secret; repeatable). Replaces the client's header of that name.
    #[arg(long = "upstream-header", value_name = "'NAME: VALUE'")]
    upstream_headers: Vec<HeaderSpec>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The SQLite database file.
    #[arg(long, env = "MCP_AGENT_DB")]
    db: PathBuf,
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    sqlite: SqliteArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mcp_agent::install_crypto_provider();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match runtime().context("starting the async runtime") {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Login(args) => rt.block_on(login(args)),
        Command::Logout { local_only } => rt.block_on(logout(local_only)),
        Command::Connect(args) => rt.block_on(connect(*args)),
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::DemoDb { file } => {
            if file.exists() {
                eprintln!("error: {} already exists; pick a new path", file.display());
                return ExitCode::from(1);
            }
            match mcp_sqlite::create_demo_database(&file) {
                Ok(()) => {
                    eprintln!("wrote the sample shop database to {}", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing {}: {e}", file.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Secrets { command } => secrets(command),
        Command::Status { json } => rt.block_on(status(json)),
        Command::Share(args) => rt.block_on(share(args)),
        Command::Shares { command } => rt.block_on(shares(command)),
        Command::Audit(args) => rt.block_on(audit(args)),
        Command::Log(args) => local_log(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mcp-agent",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

async fn connect(args: ConnectArgs) -> ExitCode {
    let config = match connect_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    eprintln!(
        "connecting to {} as tunnel \"{}\" → {}",
        config.relay,
        config.name,
        config.upstream.describe()
    );
    match mcp_agent::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let ConnectError::Refused { code, .. } = &e {
                match *code {
                    mcp_tunnel_proto::ErrorCode::UNAUTHORIZED => eprintln!(
                        "hint: sign this machine in with `mcp-agent login` (or, for a --dev relay, pass --token from `mcp-relay agent-tokens create`)"
                    ),
                    mcp_tunnel_proto::ErrorCode::NAME_TAKEN => {
                        eprintln!("hint: pick another --name")
                    }
                    _ => {}
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Resolves flags over the config file into what `connect` runs with.
fn connect_config(args: ConnectArgs) -> anyhow::Result<ConnectConfig> {
    let file = AgentFile::load(args.sqlite.config.as_deref())?;
    let sqlite = args.sqlite.clone().merge(&file);
    let source = args.source.merge(&file);
    let extras = UpstreamExtras::merge(args.env, args.upstream_headers, &file)?;
    extras.check(&source)?;
    let resolved = extras.resolve()?;
    let upstream = source.build(&sqlite, &extras, &resolved)?;
    let name = match args.name.or_else(|| file.name.clone()) {
        Some(n) => n,
        None => source.default_name()?,
    };
    let token = match args.token {
        Some(t) => Some(t),
        None => file.read_token()?,
    };
    let dir = mcp_agent::config::config_dir().context("no config directory on this system")?;
    let (credential, logged_in) = match token {
        Some(t) => (AgentCredential::Token(Secret::new(t)), None),
        None => {
            if mcp_agent::identity::Profile::load(&dir)?.is_none() {
                anyhow::bail!(
                    "not signed in: run `mcp-agent login --relay https://relay.example.com` (or pass --token for a --dev relay)"
                );
            }
            let store = CredentialStore::open()?;
            let identity = mcp_agent::identity::load(&store, &dir)?.context(
                "not signed in: run `mcp-agent login --relay https://relay.example.com` (or pass --token for a --dev relay)",
            )?;
            let profile = identity.profile.clone();
            eprintln!(
                "signed in as {} (device {}, credentials in {})",
                profile.user,
                profile.device_id,
                store.describe()
            );
            let session = mcp_agent::connect::DeviceSession {
                identity: std::sync::Mutex::new(identity),
                store,
                dir,
            };
            (
                AgentCredential::Device(std::sync::Arc::new(session)),
                Some(profile),
            )
        }
    };
    let relay = args
        .relay
        .or_else(|| file.relay.clone())
        .or_else(|| logged_in.as_ref().map(|p| p.relay.clone()))
        .context(
            "no relay: pass --relay https://relay.example.com (or run `mcp-agent login`, or set relay in the config file)",
        )?;
    let ca = args
        .ca
        .or_else(|| file.ca.clone())
        .or_else(|| logged_in.as_ref().and_then(|p| p.ca.clone()));
    let policy = match &args.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the policy file {}", p.display()))?;
            let source = mcp_tunnel_policy::PolicySource::new(p.display().to_string(), text);
            let n = mcp_tunnel_policy::validate(&source).map_err(|e| {
                anyhow::anyhow!("the policy file is invalid (fix it, then connect again):\n{e}")
            })?;
            eprintln!(
                "policy: {} ({n} policies, checked here and at the relay)",
                p.display()
            );
            Some(source)
        }
        None => None,
    };
    Ok(ConnectConfig {
        relay,
        name,
        upstream,
        ca,
        credential,
        quiet: args.quiet || file.quiet.unwrap_or(false),
        runtime_dir: None,
        policy,
        local_log: !args.no_local_log,
        max_streams: args.max_streams,
    })
}

/// Runs one management request; prints errors and maps exit codes.
async fn manage(req: mcp_tunnel_proto::ManageRequest) -> Result<serde_json::Value, ExitCode> {
    let setup = || -> anyhow::Result<(CredentialStore, PathBuf)> {
        let dir = mcp_agent::config::config_dir().context("no config directory on this system")?;
        Ok((CredentialStore::open()?, dir))
    };
    let (store, dir) = setup().map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(1)
    })?;
    mcp_agent::manage::request(&store, &dir, req)
        .await
        .map_err(|e| {
            match &e {
                mcp_agent::manage::ManageError::Setup(e) => eprintln!("error: {e:#}"),
                mcp_agent::manage::ManageError::Refused { message, .. } => {
                    eprintln!("error: the relay refused: {message}")
                }
            }
            ExitCode::from(e.exit_code())
        })
}

fn tunnel_arg(t: Option<String>) -> Result<Option<mcp_tunnel_proto::TunnelName>, ExitCode> {
    t.map(|t| {
        mcp_tunnel_proto::TunnelName::parse(&t).map_err(|e| {
            eprintln!("error: --tunnel {t}: {e}");
            ExitCode::from(2)
        })
    })
    .transpose()
}

/// `mcp-agent share`.
async fn share(args: ShareArgs) -> ExitCode {
    let tunnel = match tunnel_arg(args.tunnel) {
        Ok(t) => t,
        Err(c) => return c,
    };
    let req = mcp_tunnel_proto::ManageRequest::Share {
        tunnel,
        subject: args.who.clone(),
        tools: args.tools,
        read_only: args.read_only,
        expires_in_secs: args
            .expires
            .map(|d| std::time::Duration::from(d).as_secs().max(1)),
    };
    let v = match manage(req).await {
        Ok(v) => v,
        Err(c) => return c,
    };
    if args.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let g = &v["grant"];
    let url = v["mcp_url"].as_str().unwrap_or("");
    let tools = match g["tools"].as_array() {
        Some(t) => t
            .iter()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        None => "every tool".into(),
    };
    let expires = g["expires_at"]
        .as_i64()
        .map(rfc3339)
        .unwrap_or_else(|| "never (until revoked)".into());
    println!(
        "shared tunnel {} with {} (grant {})
  tools: {tools}{}
  expires: {expires}

MCP URL for them: {url}",
        g["tunnel"].as_str().unwrap_or(""),
        g["subject"].as_str().unwrap_or(""),
        g["id"].as_str().unwrap_or(""),
        if g["read_only"].as_bool() == Some(true) {
            " (read-only tools only)"
        } else {
            ""
        },
    );
    if let Some(link) = v["setup_link"].as_str() {
        println!(
            "
{} had no account; one was made. Send them this one-time link to set a password:
  {link}",
            args.who
        );
    }
    println!(
        "
{}",
        mcp_agent::manage::how_to_add(url)
    );
    println!(
        "
Revoke with: mcp-agent shares revoke {}",
        g["id"].as_str().unwrap_or("")
    );
    ExitCode::SUCCESS
}

/// `mcp-agent shares …`.
async fn shares(command: SharesCommand) -> ExitCode {
    match command {
        SharesCommand::List { tunnel, json } => {
            let tunnel = match tunnel_arg(tunnel) {
                Ok(t) => t,
                Err(c) => return c,
            };
            let v = match manage(mcp_tunnel_proto::ManageRequest::ListShares { tunnel }).await {
                Ok(v) => v,
                Err(c) => return c,
            };
            if json {
                println!("{}", v["grants"]);
                return ExitCode::SUCCESS;
            }
            let grants = v["grants"].as_array().cloned().unwrap_or_default();
            if grants.is_empty() {
                eprintln!("no grants; make one with `mcp-agent share EMAIL`");
            }
            for g in grants {
                let tools = g["tools"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "*".into());
                println!(
                    "{}\t{}\t{}\t{}\ttools={tools}{}\texpires={}",
                    g["id"].as_str().unwrap_or(""),
                    g["status"].as_str().unwrap_or(""),
                    g["tunnel"].as_str().unwrap_or(""),
                    g["subject"].as_str().unwrap_or(""),
                    if g["read_only"].as_bool() == Some(true) {
                        " read-only"
                    } else {
                        ""
                    },
                    g["expires_at"]
                        .as_i64()
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into()),
                );
            }
            ExitCode::SUCCESS
        }
        SharesCommand::Revoke { id } => {
            match manage(mcp_tunnel_proto::ManageRequest::RevokeShare { id }).await {
                Ok(v) => {
                    let g = &v["grant"];
                    eprintln!(
                        "revoked grant {} ({} on {}); their next request is refused",
                        g["id"].as_str().unwrap_or(""),
                        g["subject"].as_str().unwrap_or(""),
                        g["tunnel"].as_str().unwrap_or("")
                    );
                    ExitCode::SUCCESS
                }
                Err(c) => c,
            }
        }
    }
}

/// `mcp-agent log`.
fn local_log(args: LogArgs) -> ExitCode {
    let run = || -> anyhow::Result<ExitCode> {
        let tunnel = match args.tail.tunnel.clone() {
            Some(t) => t,
            None => {
                let all = mcp_agent::local_log::tunnels()?;
                match all.as_slice() {
                    [one] => one.clone(),
                    [] => anyhow::bail!(
                        "no local log yet in {} (it starts with `mcp-agent connect`)",
                        mcp_agent::local_log::log_dir()?.display()
                    ),
                    _ => anyhow::bail!(
                        "logs for several tunnels ({}); pass --tunnel NAME",
                        all.join(", ")
                    ),
                }
            }
        };
        let paths = mcp_agent::local_log::paths(&tunnel)?;
        if args.verify {
            let code = mcp_tunnel_audit::cli::run_verify(
                &paths,
                &mcp_tunnel_audit::cli::VerifyArgs {
                    json: args.tail.json,
                },
            )?;
            return Ok(ExitCode::from(code));
        }
        mcp_tunnel_audit::cli::run_tail(&paths, &args.tail, None)?;
        Ok(ExitCode::SUCCESS)
    };
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `mcp-agent audit`.
async fn audit(args: AuditArgs) -> ExitCode {
    let tunnel = match tunnel_arg(args.tunnel) {
        Ok(t) => t,
        Err(c) => return c,
    };
    let mut after: Option<u64> = None;
    let mut first = true;
    loop {
        let req = mcp_tunnel_proto::ManageRequest::Audit {
            tunnel: tunnel.clone(),
            limit: if first { args.lines } else { 1000 },
            after_seq: after,
        };
        let v = match manage(req).await {
            Ok(v) => v,
            Err(c) => return c,
        };
        for r in v["records"].as_array().cloned().unwrap_or_default() {
            after = r["seq"].as_u64().or(after);
            if args.json {
                println!("{r}");
            } else {
                println!("{}", audit_line(&r));
            }
        }
        first = false;
        if !args.follow {
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// One human line of an audit record.
fn audit_line(r: &serde_json::Value) -> String {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    let when = r["ts_ms"]
        .as_i64()
        .map(|ms| rfc3339(ms / 1000))
        .unwrap_or_default();
    let mut line = format!(
        "{when}  {:<5}  {}  {}  {} {}  {}  {:.1} ms",
        s("decision"),
        s("principal"),
        s("tunnel"),
        s("method"),
        r["tool"].as_str().unwrap_or(""),
        r["status"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        r["latency_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
    );
    if let Some(reason) = r["reason"].as_str() {
        line.push_str("  ");
        line.push_str(reason);
    }
    line
}

/// `mcp-agent login`.
async fn login(args: LoginCliArgs) -> ExitCode {
    let run = async {
        let dir = mcp_agent::config::config_dir().context("no config directory on this system")?;
        let previous = mcp_agent::identity::Profile::load(&dir).ok().flatten();
        let relay = args
            .relay
            .or_else(|| previous.as_ref().map(|p| p.relay.clone()))
            .context("pass --relay https://relay.example.com (it is remembered afterwards)")?;
        let ca = args.ca.or_else(|| {
            previous
                .as_ref()
                .filter(|p| p.relay == relay)
                .and_then(|p| p.ca.clone())
        });
        let label = args.label.unwrap_or_else(host_name);
        let store = CredentialStore::open()?;
        let profile = mcp_agent::identity::login(
            &mcp_agent::identity::LoginArgs {
                relay,
                ca,
                enroll_token: args.enroll_token,
                label,
                no_browser: args.no_browser,
            },
            &store,
            &dir,
        )
        .await?;
        eprintln!(
            "signed in as {} at {}: device {} (certificate valid until {}; renewed automatically while connected)\ncredentials in {}\nnext: mcp-agent connect --db shop.db",
            profile.user,
            profile.relay,
            profile.device_id,
            rfc3339(profile.cert_expires_at),
            store.describe()
        );
        anyhow::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// `mcp-agent logout`.
async fn logout(local_only: bool) -> ExitCode {
    let run = async {
        let dir = mcp_agent::config::config_dir().context("no config directory on this system")?;
        let store = CredentialStore::open()?;
        let mut code = ExitCode::SUCCESS;
        if !local_only && let Ok(Some(id)) = mcp_agent::identity::load(&store, &dir) {
            match mcp_agent::identity::revoke_at_relay(&id).await {
                Ok(()) => eprintln!(
                    "device {} revoked at {}",
                    id.profile.device_id, id.profile.relay
                ),
                Err(e) => {
                    eprintln!(
                        "warning: could not revoke device {} at the relay ({e:#}); an admin can: mcp-relay devices revoke {}",
                        id.profile.device_id, id.profile.device_id
                    );
                    code = ExitCode::from(1);
                }
            }
        }
        match mcp_agent::identity::logout(&store, &dir)? {
            Some(p) => eprintln!(
                "signed out: removed device {} ({}) from this machine",
                p.device_id, p.user
            ),
            None => eprintln!("not signed in; nothing to remove"),
        }
        anyhow::Ok(code)
    };
    match run.await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mcp-agent".to_owned())
}

fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
}

/// `mcp-agent secrets …`.
fn secrets(command: SecretsCommand) -> ExitCode {
    match secrets_command(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn secrets_command(command: SecretsCommand) -> anyhow::Result<()> {
    let store = CredentialStore::open()?;
    let secrets = Secrets::new(&store);
    match command {
        SecretsCommand::Set { name, value_stdin } => {
            // A store that cannot be read fails before the value is typed.
            secrets.list()?;
            let value = read_secret_value(&name, value_stdin)?;
            let replaced = secrets.set(&name, &value)?;
            eprintln!(
                "{} secret {name} in {}",
                if replaced { "replaced" } else { "stored" },
                store.describe()
            );
            eprintln!(
                "use it as secret:{name}, e.g. --env VAR=secret:{name} or --upstream-header 'Authorization: Bearer secret:{name}'"
            );
        }
        SecretsCommand::List { json } => {
            let list = secrets.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no secrets stored; add one with: mcp-agent secrets set NAME");
            } else {
                print!("{}", mcp_agent::secrets::format_table(&list));
            }
            eprintln!("credential store: {}", store.describe());
        }
        SecretsCommand::Rm { name } => {
            secrets.remove(&name).map_err(|e| match e {
                SecretsError::Unknown(_) => anyhow::anyhow!(
                    "no secret {name} in {}; see the stored ones with: mcp-agent secrets list",
                    store.describe()
                ),
                e => e.into(),
            })?;
            eprintln!("removed secret {name} from {}", store.describe());
        }
    }
    Ok(())
}

/// The value for `secrets set`: typed without echo on a terminal, else all
/// of stdin less one trailing newline.
fn read_secret_value(name: &SecretName, value_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let value = if !value_stdin && stdin.is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("value for {name} (input hidden): "))
                .context("reading the value from the terminal")?,
        )
    } else {
        let mut raw = Zeroizing::new(Vec::new());
        stdin
            .lock()
            .take(MAX_VALUE_BYTES as u64 + 2)
            .read_to_end(&mut raw)
            .context("reading the value from stdin")?;
        let mut text = std::str::from_utf8(&raw).map_err(|_| {
            anyhow::anyhow!("the value on stdin is not UTF-8 text; nothing was stored")
        })?;
        text = text.strip_suffix('\n').unwrap_or(text);
        text = text.strip_suffix('\r').unwrap_or(text);
        anyhow::ensure!(
            text.len() <= MAX_VALUE_BYTES,
            "the value on stdin is larger than {MAX_VALUE_BYTES} bytes; nothing was stored"
        );
        Zeroizing::new(text.to_owned())
    };
    anyhow::ensure!(
        !value.is_empty(),
        "the value for {name} is empty; nothing was stored (pipe it in, e.g. printf %s \"$VALUE\" | mcp-agent secrets set {name})"
    );
    Ok(value)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let sqlite = match AgentFile::load(args.sqlite.config.as_deref()) {
        Ok(f) => args.sqlite.clone().merge(&f),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let server = match sqlite.open(&args.db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let result = match args.http {
        None => mcp_sqlite::serve_stdio(server)
            .await
            .map_err(anyhow::Error::from),
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                let bound = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                eprintln!("serving {} at http://{bound}/mcp", args.db.display());
                mcp_sqlite::serve_http(server, l, async {
                    shutdown_signal().await;
                })
                .await
                .map_err(anyhow::Error::from)
            }
            Err(e) => Err(anyhow::anyhow!("binding {addr}: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn status(json: bool) -> ExitCode {
    let dir = match mcp_agent::stats::runtime_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let all = mcp_agent::stats::read_all(&dir).await;
    let identity = identity_summary();
    if json {
        let v = serde_json::json!({"identity": identity, "agents": all});
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "credential store: {}",
        identity["credential_store"].as_str().unwrap_or("-")
    );
    match identity["user"].as_str() {
        Some(u) => println!(
            "signed in as {u} at {}: device {}, certificate expires {}",
            identity["relay"].as_str().unwrap_or("-"),
            identity["device_id"].as_str().unwrap_or("-"),
            identity["cert_expires_at"].as_str().unwrap_or("-")
        ),
        None => println!("not signed in (mcp-agent login)"),
    }
    if json {
        match serde_json::to_string_pretty(&all) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    } else if all.is_empty() {
        println!("no mcp-agent is running on this machine");
    } else {
        for a in all {
            println!(
                "{}  {}  {}  received {}  rejected {}  refused (assertion) {}  denied (policy) {}  completed {}  upstream errors {}  cancelled {}  in flight {}",
                a.tunnel,
                if a.connected {
                    "connected"
                } else {
                    "reconnecting"
                },
                a.public_url,
                a.streams_received,
                a.streams_rejected,
                a.streams_refused,
                a.requests_denied,
                a.requests_completed,
                a.upstream_errors,
                a.requests_cancelled,
                a.in_flight
            );
        }
    }
    ExitCode::SUCCESS
}

/// Who this machine is signed in as, and where its credentials are.
fn identity_summary() -> serde_json::Value {
    let store = CredentialStore::open()
        .map(|s| s.describe())
        .unwrap_or_else(|e| format!("unusable: {e}"));
    let profile = mcp_agent::config::config_dir()
        .and_then(|d| mcp_agent::identity::Profile::load(&d).ok().flatten());
    match profile {
        Some(p) => serde_json::json!({
            "credential_store": store,
            "relay": p.relay.as_str(),
            "user": p.user,
            "device_id": p.device_id,
            "cert_expires_at": rfc3339(p.cert_expires_at),
        }),
        None => serde_json::json!({ "credential_store": store }),
    }
}

/// The agent's work is I/O-bound (SQLite queries run on blocking threads), so
/// by default it runs on one thread: that saves the cross-thread wake-ups that
/// otherwise add ~100 µs to every request (measured in bench/).
/// `MCP_AGENT_THREADS=N` (N > 1) switches to a multi-threaded runtime.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::env::var("MCP_AGENT_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_streams(extra: &[&str]) -> Result<u32, clap::Error> {
        let argv = ["mcp-agent", "connect"].iter().chain(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Connect(args) => Ok(args.max_streams),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn max_streams_defaults_to_the_transport_default_and_is_range_checked() {
        assert_eq!(
            max_streams(&[]).unwrap(),
            mcp_tunnel_transport::quic::AGENT_MAX_INCOMING_STREAMS
        );
        assert_eq!(max_streams(&["--max-streams", "20000"]).unwrap(), 20_000);
        assert_eq!(max_streams(&["--max-streams", "65535"]).unwrap(), 65_535);
        for bad in ["0", "65536", "-1", "many"] {
            let e = max_streams(&[&format!("--max-streams={bad}")]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("--max-streams"), "{e}");
        }
    }
}
