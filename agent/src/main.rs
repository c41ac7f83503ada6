//! The `mcp-agent` command line. Everything testable lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_agent::config::AgentFile;
use mcp_agent::upstream::Upstream;
use mcp_agent::upstream::http::HttpUpstream;
use mcp_agent::upstream::sqlite::SqliteUpstream;
use mcp_agent::upstream::stdio::StdioBridge;
use mcp_agent::{ConnectConfig, ConnectError};
use mcp_tunnel_proto::{Secret, TunnelName};
use tokio_util::sync::CancellationToken;
use url::Url;

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

    fn build(&self, sqlite: &SqliteArgs) -> anyhow::Result<std::sync::Arc<dyn Upstream>> {
        Ok(match (&self.db, &self.stdio, &self.upstream) {
            (Some(db), _, _) => std::sync::Arc::new(SqliteUpstream::new(sqlite.open(db)?)),
            (_, Some(cmd), _) => {
                let argv = shell_words(cmd)?;
                std::sync::Arc::new(StdioBridge::new(argv)?)
            }
            (_, _, Some(url)) => std::sync::Arc::new(HttpUpstream::new(url)?),
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
    /// Connect to a relay and serve a local MCP server through it.
    Connect(Box<ConnectArgs>),
    /// Run the built-in SQLite MCP tool as an ordinary local MCP server (stdio, or HTTP with --http).
    Serve(ServeArgs),
    /// Write the sample shop database (customers, products, orders) to FILE.
    DemoDb {
        /// Where to write it (must not exist).
        file: PathBuf,
    },
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
        Command::Status { json } => rt.block_on(status(json)),
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
                        "hint: create a token with `mcp-relay agent-tokens create` and pass it with --token"
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
    let upstream = source.build(&sqlite)?;
    let name = match args.name.or_else(|| file.name.clone()) {
        Some(n) => n,
        None => source.default_name()?,
    };
    let relay = args.relay.or_else(|| file.relay.clone()).context(
        "no relay: pass --relay https://relay.example.com (or set relay in the config file)",
    )?;
    let token = match args.token {
        Some(t) => t,
        None => file.read_token()?.context(
            "no agent token: pass --token or set MCP_AGENT_TOKEN (create one with `mcp-relay agent-tokens create`)",
        )?,
    };
    Ok(ConnectConfig {
        relay,
        name,
        upstream,
        ca: args.ca.or_else(|| file.ca.clone()),
        token: Secret::new(token),
        quiet: args.quiet || file.quiet.unwrap_or(false),
        runtime_dir: None,
    })
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
                "{}  {}  {}  received {}  rejected {}  completed {}  upstream errors {}  cancelled {}  in flight {}",
                a.tunnel,
                if a.connected {
                    "connected"
                } else {
                    "reconnecting"
                },
                a.public_url,
                a.streams_received,
                a.streams_rejected,
                a.requests_completed,
                a.upstream_errors,
                a.requests_cancelled,
                a.in_flight
            );
        }
    }
    ExitCode::SUCCESS
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
