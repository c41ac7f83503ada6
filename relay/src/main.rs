//! The `mcp-relay` command line. Everything testable lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_relay::agent_tokens::AgentTokens;
use mcp_relay::state_dir::StateDir;
use mcp_relay::{Config, FileConfig, LogFormat, Overrides};
use url::Url;

/// mimalloc instead of glibc malloc: per-request buffers made glibc's
/// malloc/free ~14% of the relay's CPU at 20k req/s (perf, bench/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The public side of mcp-tunnel: holds the public hostname, accepts agents
/// over QUIC and forwards MCP clients' requests to them.
#[derive(Debug, Parser)]
#[command(name = "mcp-relay", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  mcp-relay serve --dev                                   # local relay with a self-made CA
  mcp-relay serve --public-url https://relay.example.com \\
      --https 0.0.0.0:443 --quic 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem
  mcp-relay agent-tokens create --label laptop            # print a token for mcp-agent connect
  mcp-relay completions bash > /etc/bash_completion.d/mcp-relay";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay.
    Serve(Box<ServeArgs>),
    /// Manage agent tokens (the credential `mcp-agent connect --token` uses).
    #[command(subcommand)]
    AgentTokens(TokenCommand),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (TOML). Default: ~/.config/mcp-relay/relay.toml if it exists.
    #[arg(long, env = "MCP_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// HTTPS listen address for MCP clients [default: 0.0.0.0:8443].
    #[arg(long, env = "MCP_RELAY_HTTPS")]
    https: Option<SocketAddr>,
    /// QUIC (UDP) listen address for agents [default: 0.0.0.0:8443].
    #[arg(long, env = "MCP_RELAY_QUIC")]
    quic: Option<SocketAddr>,
    /// Plain-HTTP listen address (behind a TLS-terminating proxy). Off by default.
    #[arg(long, env = "MCP_RELAY_HTTP")]
    http: Option<SocketAddr>,
    /// State directory [default: the per-user data dir].
    #[arg(long, env = "MCP_RELAY_STATE")]
    state: Option<PathBuf>,
    /// The URL MCP clients use to reach this relay.
    #[arg(long, env = "MCP_RELAY_PUBLIC_URL")]
    public_url: Option<Url>,
    /// Development mode: make a CA and a localhost certificate in the state dir.
    #[arg(long, env = "MCP_RELAY_DEV")]
    dev: bool,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "MCP_RELAY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MCP_RELAY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Requests in flight per tunnel before 503 [default: 512].
    #[arg(long, env = "MCP_RELAY_MAX_STREAMS_PER_TUNNEL")]
    max_streams_per_tunnel: Option<u32>,
    /// Largest request body in bytes before 413 [default: 4194304].
    #[arg(long, env = "MCP_RELAY_MAX_REQUEST_BODY")]
    max_request_body: Option<u64>,
    /// Log format.
    #[arg(long, env = "MCP_RELAY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (shown once).
    Create {
        /// State directory [default: the per-user data dir].
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
        /// A note to remember it by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (ids and labels, never values).
    List {
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
    },
    /// Revoke a token by id; its tunnel names become free.
    Revoke {
        /// The token id (the part after `mcpat_`).
        id: String,
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mcp_relay::install_crypto_provider();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::AgentTokens(cmd) => tokens(cmd),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mcp-relay",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = match args
        .config
        .clone()
        .or_else(|| FileConfig::default_path().filter(|p| p.exists()))
    {
        Some(p) => FileConfig::load(&p)?,
        None => FileConfig::default(),
    };
    init_tracing(args.log_format.or(file.log_format).unwrap_or_default());
    let config = Config::resolve(
        file,
        Overrides {
            https: args.https,
            quic: args.quic,
            http: args.http,
            state: args.state,
            public_url: args.public_url,
            dev: args.dev,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            max_streams_per_tunnel: args.max_streams_per_tunnel,
            max_request_body: args.max_request_body,
        },
    )?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move { mcp_relay::run(config, shutdown_signal()).await })?;
    Ok(ExitCode::SUCCESS)
}

fn tokens(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let open = |state: Option<PathBuf>| -> anyhow::Result<AgentTokens> {
        let dir = match state {
            Some(p) => p,
            None => StateDir::default_path()?,
        };
        Ok(AgentTokens::new(&StateDir::open(&dir)?))
    };
    match cmd {
        TokenCommand::Create { state, label } => {
            let (rec, token) = open(state)?.create(&label)?;
            eprintln!(
                "created agent token {} (shown once; store it safely)",
                rec.id
            );
            println!("{token}");
        }
        TokenCommand::List { state } => {
            for r in open(state)?.list()? {
                println!("{}\tcreated {}\t{}", r.id, r.created_at, r.label);
            }
        }
        TokenCommand::Revoke { id, state } => {
            if !open(state)?.revoke(&id)? {
                eprintln!("no agent token with id {id}; see `mcp-relay agent-tokens list`");
                return Ok(ExitCode::from(2));
            }
            eprintln!("revoked agent token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
