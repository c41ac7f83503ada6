//! The `mcp-agent` command line. Everything testable lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use mcp_agent::{ConnectConfig, ConnectError};
use mcp_tunnel_proto::{Secret, TunnelName};
use tokio_util::sync::CancellationToken;
use url::Url;

/// The laptop side of mcp-tunnel: dials the relay and serves a local MCP
/// server through it. No inbound port needed.
#[derive(Debug, Parser)]
#[command(name = "mcp-agent", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  mcp-agent connect --relay https://relay.example.com --token $TOKEN \\
      --name shop --upstream http://127.0.0.1:8000/mcp
  mcp-agent connect --relay https://localhost:8443 --ca ~/.local/share/mcp-relay/dev-ca.pem ...
  mcp-agent status --json

Exit codes: 0 ok, 1 error, 2 usage, 3 unauthorized, 4 tunnel name taken,
5 protocol version mismatch, 6 replaced by another agent with the same credential.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to a relay and serve a local MCP server through it.
    Connect(Box<ConnectArgs>),
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
    relay: Url,
    /// Tunnel name (lowercase letters, digits, '-').
    #[arg(long, env = "MCP_AGENT_NAME")]
    name: TunnelName,
    /// The local Streamable HTTP MCP server to expose.
    #[arg(long, env = "MCP_AGENT_UPSTREAM")]
    upstream: Url,
    /// Extra CA certificate (PEM) to trust for the relay, e.g. a dev relay's dev-ca.pem.
    #[arg(long, env = "MCP_AGENT_CA")]
    ca: Option<PathBuf>,
    /// Agent token from `mcp-relay agent-tokens create`.
    #[arg(long, env = "MCP_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Don't print a line per request.
    #[arg(long, short)]
    quiet: bool,
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
    let rt = match tokio::runtime::Runtime::new().context("starting the async runtime") {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Connect(args) => rt.block_on(connect(*args)),
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
    let config = ConnectConfig {
        relay: args.relay,
        name: args.name,
        upstream: args.upstream,
        ca: args.ca,
        token: Secret::new(args.token),
        quiet: args.quiet,
        runtime_dir: None,
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    eprintln!(
        "connecting to {} as tunnel \"{}\" → {}",
        config.relay, config.name, config.upstream
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
