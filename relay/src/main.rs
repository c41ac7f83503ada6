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
    /// Issue access tokens for scripts, tests and clients without OAuth.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage built-in user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage service accounts (non-human clients using client_credentials).
    #[command(subcommand)]
    ServiceAccounts(ServiceAccountsCommand),
    /// Manage OAuth clients (registered MCP applications).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Manage the relay's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// One-time tokens that enroll a headless agent (`mcp-agent login --enroll-token`).
    #[command(subcommand)]
    EnrollTokens(EnrollTokensCommand),
    /// Agents' devices (their client certificates).
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Tunnel names and who owns them.
    #[command(subcommand)]
    Tunnels(TunnelsCommand),
    /// Every non-human credential in one place: list, revoke, rotate.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Cedar policies: validate files, explain a decision.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The tamper-evident audit log: tail, export, verify.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Validate the configuration (file, flags, environment) without starting:
    /// certificate files, state directory, policy files, addresses.
    CheckConfig(Box<ServeArgs>),
    /// Write a consistent backup of the state directory while the relay runs.
    Backup {
        /// State directory [default: the per-user data dir].
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
        /// Where to write the backup file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup made by `mcp-relay backup` into a state directory
    /// (stop the relay first).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// State directory to restore into [default: the per-user data dir].
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
        /// Replace a state directory that already holds state.
        #[arg(long)]
        force: bool,
    },
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
    /// Prometheus metrics (and /healthz, /readyz) listen address, e.g. 127.0.0.1:9464. Off by default.
    #[arg(long, env = "MCP_RELAY_METRICS")]
    metrics: Option<SocketAddr>,
    /// Replace a running relay on the same ports and state without dropping
    /// clients: share its TCP ports, send it SIGTERM (its pid is in the state
    /// dir's endpoints.json), and take the QUIC port when it has drained and
    /// exited. Run it as the same user. Not needed under systemd socket activation.
    #[arg(long, env = "MCP_RELAY_REPLACE")]
    replace: bool,
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
    /// Accept tunnel requests WITHOUT an access token (benchmarks and local experiments only).
    #[arg(long, env = "MCP_RELAY_NO_AUTH")]
    no_auth: bool,
    /// Log format.
    #[arg(long, env = "MCP_RELAY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// An admin Cedar policy file (repeatable; added to `[policy] files`).
    #[arg(long = "policy", value_name = "FILE")]
    policy: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files against the published schema (exit 1 on any problem).
    #[command(after_help = "Example:\n  mcp-relay policy check /etc/mcp-relay/admin.cedar")]
    Check {
        /// The .cedar files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the decision for a request and the policies that made it; nothing is sent.
    ///
    /// Exit codes: 0 allowed, 1 denied, 2 usage or state error.
    #[command(
        after_help = "Examples:\n  mcp-relay policy explain --user bob@example.com --tunnel shop --method tools/call --tool write_query\n  mcp-relay policy explain --user bob@example.com --tunnel shop --method tools/call --tool read_query --args '{\"limit\": 500}'"
    )]
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    at: StateArgs,
    /// The relay's config file (for its [policy] files and dev mode).
    #[arg(long, env = "MCP_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Extra admin policy files.
    #[arg(long = "policy", value_name = "FILE")]
    policy: Vec<PathBuf>,
    /// Treat agent-token tunnels as a --dev relay does (open to signed-in callers).
    #[arg(long)]
    dev: bool,
    /// The caller's email.
    #[arg(
        long,
        conflicts_with = "service_account",
        required_unless_present = "service_account"
    )]
    user: Option<String>,
    /// A service account (OAuth client id) as the caller.
    #[arg(long)]
    service_account: Option<String>,
    /// The caller's groups [default: the account's groups at the relay].
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The tunnel.
    #[arg(long)]
    tunnel: String,
    /// The JSON-RPC method (tools/call, tools/list, initialize, …).
    #[arg(long)]
    method: String,
    /// The tool (or prompt / resource URI).
    #[arg(long)]
    tool: Option<String>,
    /// The call's arguments as a JSON object.
    #[arg(long)]
    args: Option<String>,
    /// The OAuth client id.
    #[arg(long, default_value = "explain")]
    client_id: String,
    /// Token scopes (repeatable).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// The caller's address.
    #[arg(long)]
    source_ip: Option<std::net::IpAddr>,
    /// Decide at this time (RFC 3339) instead of now.
    #[arg(long)]
    at_time: Option<humantime::Timestamp>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Show the newest records (and, with --follow, new ones as they come).
    Tail {
        #[arg(long, env = "MCP_RELAY_STATE")]
        /// State directory.
        state: Option<PathBuf>,
        #[command(flatten)]
        args: mcp_tunnel_audit::cli::TailArgs,
    },
    /// Write records as JSON lines (with seq and MACs) to stdout or --out.
    Export {
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
        #[command(flatten)]
        args: mcp_tunnel_audit::cli::ExportArgs,
    },
    /// Check the chain and the signed checkpoints; name every edited,
    /// inserted, deleted or truncated record (exit 1 if any).
    Verify {
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
        #[command(flatten)]
        args: mcp_tunnel_audit::cli::VerifyArgs,
    },
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

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Revoke every token of a user (access and refresh); a running relay refuses them within a second.
    Revoke {
        /// The user's email.
        #[arg(long)]
        user: String,
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
    },
    /// Print an access token for one tunnel (default lifetime 15 minutes).
    Issue {
        /// The person (or service) the token speaks for.
        #[arg(long)]
        user: String,
        /// The tunnel it is valid for.
        #[arg(long)]
        tunnel: mcp_tunnel_proto::TunnelName,
        /// Groups to put in the token.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime, e.g. 15m or 8h (at most 24h).
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The relay's public URL (the token's issuer) [default: from the state dir's endpoints.json].
        #[arg(long, env = "MCP_RELAY_PUBLIC_URL")]
        public_url: Option<Url>,
        /// State directory.
        #[arg(long, env = "MCP_RELAY_STATE")]
        state: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add an account and print a one-time link where the person sets a password.
    Add {
        /// Email address (the sign-in name).
        email: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Groups (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[command(flatten)]
        at: StateArgs,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        at: StateArgs,
    },
    /// Disable an account (its tokens stop working).
    Disable {
        /// Email address.
        email: String,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Enable a disabled account.
    Enable {
        /// Email address.
        email: String,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Print a new one-time password set-up link.
    ResetLink {
        /// Email address.
        email: String,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Set a password from standard input (for headless hosts and tests).
    SetPassword {
        /// Email address.
        email: String,
        /// Read the password from stdin (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        at: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceAccountsCommand {
    /// Create a service account; prints its client id and secret (shown once).
    Create {
        /// A name to remember it by.
        name: String,
        /// Groups its tokens carry (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime of the secret, e.g. 90d.
        #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        at: StateArgs,
    },
    /// List service accounts.
    List {
        #[command(flatten)]
        at: StateArgs,
    },
    /// Revoke a service account and its tokens.
    Revoke {
        /// The client id (mcpsa_…).
        client_id: String,
        #[command(flatten)]
        at: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// List registered clients.
    List {
        #[command(flatten)]
        at: StateArgs,
    },
    /// Revoke a client and every token issued to it.
    Revoke {
        /// The client id.
        client_id: String,
        #[command(flatten)]
        at: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum EnrollTokensCommand {
    /// Create a one-time enrollment token for EMAIL's device and print it.
    #[command(
        after_help = "Example:\n  mcp-relay enroll-tokens create --user ci@example.com --ttl 1h\n  # then on the server: mcp-agent login --relay https://relay.example.com --enroll-token <TOKEN>"
    )]
    Create {
        /// The account the device will belong to.
        #[arg(long)]
        user: String,
        /// How long the token may be used.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        at: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum TunnelsCommand {
    /// List claimed tunnel names and their owners.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Reserve NAME for EMAIL: only that user's devices may serve it.
    #[command(after_help = "Example:\n  mcp-relay tunnels reserve shop --owner alice@example.com")]
    Reserve {
        /// The tunnel name.
        name: String,
        /// The owning account.
        #[arg(long)]
        owner: String,
        /// Take the name from its current owner.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Release NAME: the next agent to serve it claims it.
    Release {
        /// The tunnel name.
        name: String,
        #[command(flatten)]
        at: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List enrolled devices.
    List {
        /// One JSON object per device, in an array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Revoke a device: a running relay cuts its connections within a second.
    Revoke {
        /// The device id (dev_…).
        id: String,
        #[command(flatten)]
        at: StateArgs,
    },
}

const CREDENTIALS_LIST_HELP: &str =
    "Kinds: device, oauth-client, metadata-client, service-account, refresh-family,
signing-key, device-ca, dev-ca, enroll-token, agent-token.
Owner: a user's email, or admin (made with the CLI), self-registered (OAuth
clients that registered themselves), relay (the relay's own keys).
Status: active, expired, revoked, used (one-time tokens), retired (a replaced
signing key still published so tokens it signed verify).

Examples:
  mcp-relay credentials list
  mcp-relay credentials list --expiring 7d            # active, expiring within a week
  mcp-relay credentials list --owner alice@example.com --json
  mcp-relay credentials list --kind device --kind refresh-family";

const CREDENTIALS_REVOKE_HELP: &str =
    "Revocable: device, oauth-client, metadata-client, service-account,
refresh-family, enroll-token (its listed id, or at least 8 of its hex digits),
agent-token. Signing keys are rotated instead; the CAs cannot be revoked.

Exit status: 0 revoked (or already revoked, used or expired), 1 the state could
not be read or written, 2 no such credential or a malformed id, 3 this kind is
not revoked this way.

Examples:
  mcp-relay credentials revoke device dev_7kq2m4xw9p3h8n6r5t2c
  mcp-relay credentials revoke refresh-family 5f0c3a9e8d7b6a5f4e3d2c1b0a998877
  mcp-relay credentials revoke service-account mcpsa_3f9a1c2b7d8e6f5a4b3c2d1e";

const CREDENTIALS_ROTATE_HELP: &str =
    "Only signing-key rotates (as `mcp-relay keys rotate`): a new key signs from now
on; the old one stays published for 15m30s so tokens it signed keep verifying.
Rotating the device CA is not supported yet.

Exit status: 0 rotated, 1 the key file could not be read or written, 3 this kind
does not rotate.

Example:
  mcp-relay credentials rotate signing-key";

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// List every non-human credential: kind, id, owner, created, expires, last used, status.
    #[command(after_help = CREDENTIALS_LIST_HELP)]
    List {
        /// A JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
        /// Only active credentials that expire within this long, e.g. 7d or 12h.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expiring: Option<std::time::Duration>,
        /// Only credentials of this owner: an email, or admin, self-registered, relay.
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
        /// Only this kind (repeat for several).
        #[arg(long = "kind", value_name = "KIND", value_parser = credential_kind())]
        kinds: Vec<mcp_relay::inventory::Kind>,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Revoke one credential, through the operation that owns its kind.
    #[command(after_help = CREDENTIALS_REVOKE_HELP)]
    Revoke {
        /// What it is (as `credentials list` shows).
        #[arg(value_parser = credential_kind())]
        kind: mcp_relay::inventory::Kind,
        /// Its id (as `credentials list` shows).
        id: String,
        #[command(flatten)]
        at: StateArgs,
    },
    /// Replace a key with a new one (signing-key only, for now).
    #[command(after_help = CREDENTIALS_ROTATE_HELP)]
    Rotate {
        /// What to rotate: signing-key or device-ca.
        #[arg(value_parser = credential_kind())]
        kind: mcp_relay::inventory::Kind,
        #[command(flatten)]
        at: StateArgs,
    },
}

/// Parses a credential kind, offering the names in help and completions.
fn credential_kind() -> impl clap::builder::TypedValueParser<Value = mcp_relay::inventory::Kind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(
        mcp_relay::inventory::Kind::ALL.map(mcp_relay::inventory::Kind::as_str),
    )
    .try_map(|s| s.parse::<mcp_relay::inventory::Kind>())
}

/// Where the relay's state lives (and its public URL, for printed links).
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// State directory.
    #[arg(long, env = "MCP_RELAY_STATE")]
    state: Option<PathBuf>,
    /// The relay's public URL [default: from the state dir's endpoints.json].
    #[arg(long, env = "MCP_RELAY_PUBLIC_URL")]
    public_url: Option<Url>,
}

impl StateArgs {
    fn open(&self) -> anyhow::Result<(StateDir, mcp_relay::store::SqliteStore)> {
        let state = StateDir::open(&state_or_default(self.state.clone())?)?;
        let store = mcp_relay::store::SqliteStore::open(&state.path(mcp_relay::store::DB_FILE))
            .context("opening the relay's state database")?;
        Ok((state, store))
    }

    fn public_url(&self, state: &StateDir) -> anyhow::Result<String> {
        public_url_of(self.public_url.as_ref(), state)
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new signing key; the old one stays published until tokens it signed have expired.
    Rotate {
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
        Command::Tokens(cmd) => access_tokens(cmd),
        Command::Users(cmd) => users(cmd),
        Command::Clients(cmd) => clients(cmd),
        Command::ServiceAccounts(cmd) => service_accounts(cmd),
        Command::EnrollTokens(cmd) => enroll_tokens(cmd),
        Command::Devices(cmd) => devices(cmd),
        Command::Tunnels(cmd) => tunnels(cmd),
        Command::Credentials(cmd) => credentials(cmd),
        Command::Policy(cmd) => Ok(policy(cmd)),
        Command::Audit(cmd) => Ok(audit(cmd)),
        Command::Keys(KeysCommand::Rotate { state }) => {
            let state = StateDir::open(&state_or_default(state)?)?;
            let mut keys = mcp_relay::auth::load_or_create_keys(&state)?;
            let old = keys.active().kid().to_owned();
            keys.rotate(
                mcp_relay::oauth::token::unix_now(),
                mcp_relay::oauth::keys::DEFAULT_ROTATION_OVERLAP,
            )?;
            mcp_relay::auth::save_keys(&state, &keys)?;
            eprintln!(
                "new signing key {}; {old} stays published for {} so tokens it signed keep working",
                keys.active().kid(),
                humantime::format_duration(mcp_relay::oauth::keys::DEFAULT_ROTATION_OVERLAP)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(args) => {
            let config = match resolve_config(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(1));
                }
            };
            match mcp_relay::check::check(&config) {
                Ok(report) => {
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}", report.summary);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let e = match &config.source {
                        Some((source, o)) => source.locate_error(e, o),
                        None => e,
                    };
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Backup { state, out } => {
            mcp_relay::backup::backup(&state_or_default(state)?, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { file, state, force } => {
            mcp_relay::backup::restore(&file, &state_or_default(state)?, force)?;
            Ok(ExitCode::SUCCESS)
        }
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

fn policy(cmd: PolicyCommand) -> ExitCode {
    let run = || -> anyhow::Result<ExitCode> {
        match cmd {
            PolicyCommand::Check { files } => Ok(if mcp_relay::policy::cli::check(&files)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }),
            PolicyCommand::Explain(a) => {
                let (state, store) = a.at.open()?;
                let mut files = a.policy.clone();
                let mut dev = a.dev;
                if let Some(p) = &a.config {
                    let f = FileConfig::load(p)?;
                    dev |= f.dev.unwrap_or(false);
                    if let Some(policy) = f.policy {
                        let dir = p
                            .parent()
                            .map(std::path::Path::to_path_buf)
                            .unwrap_or_default();
                        files.extend(
                            policy
                                .files
                                .into_iter()
                                .map(|f| if f.is_relative() { dir.join(f) } else { f }),
                        );
                    }
                }
                let args = match &a.args {
                    Some(t) => Some(
                        serde_json::from_str::<serde_json::Value>(t)
                            .context("--args must be a JSON object")?,
                    ),
                    None => None,
                };
                let q = mcp_relay::policy::cli::ExplainQuery {
                    principal: match (&a.user, &a.service_account) {
                        (_, Some(sa)) => format!("sa:{sa}"),
                        (Some(u), None) => u.clone(),
                        (None, None) => {
                            anyhow::bail!("pass --user EMAIL or --service-account NAME")
                        }
                    },
                    groups: (!a.groups.is_empty()).then(|| a.groups.clone()),
                    tunnel: a.tunnel.clone(),
                    method: a.method.clone(),
                    target: a.tool.clone(),
                    args,
                    client_id: a.client_id.clone(),
                    scopes: a.scopes.clone(),
                    source_ip: a.source_ip,
                    time: a.at_time.map(|t| {
                        std::time::SystemTime::from(t)
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0)
                    }),
                };
                let (allowed, report) =
                    mcp_relay::policy::cli::explain(&state, &store, &files, dev, &q)?;
                print!("{report}");
                Ok(if allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    };
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn audit(cmd: AuditCommand) -> ExitCode {
    let paths = |state: Option<PathBuf>| -> anyhow::Result<mcp_tunnel_audit::AuditPaths> {
        let dir = state_or_default(state)?;
        Ok(mcp_relay::audit::paths(&dir))
    };
    let run = || -> anyhow::Result<ExitCode> {
        Ok(match cmd {
            AuditCommand::Tail { state, args } => {
                mcp_tunnel_audit::cli::run_tail(&paths(state)?, &args, None)?;
                ExitCode::SUCCESS
            }
            AuditCommand::Export { state, args } => {
                let n = mcp_tunnel_audit::cli::run_export(&paths(state)?, &args, None)?;
                eprintln!("exported {n} records");
                ExitCode::SUCCESS
            }
            AuditCommand::Verify { state, args } => {
                ExitCode::from(mcp_tunnel_audit::cli::run_verify(&paths(state)?, &args)?)
            }
        })
    };
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let log_format = args.log_format;
    let config = resolve_config(args)?;
    init_tracing(log_format.or(config.log_format).unwrap_or_default());
    // The blocking pool runs the store's SQLite work and policy rebuilds.
    // tokio's default lets it grow to 512 threads when a thousand agents
    // connect at once, and every such thread keeps its own allocator heap
    // (hundreds of MiB of RSS that stays); 32 are plenty for short jobs.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(RELAY_BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move { mcp_relay::run(config, shutdown_signal()).await })?;
    Ok(ExitCode::SUCCESS)
}

/// The config file (`--config`, or the default one if it exists) resolved
/// with the flags; errors name the key and its line.
fn resolve_config(args: ServeArgs) -> anyhow::Result<Config> {
    let overrides = Overrides {
        https: args.https,
        quic: args.quic,
        http: args.http,
        metrics: args.metrics,
        replace: args.replace,
        state: args.state,
        public_url: args.public_url,
        dev: args.dev,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        max_streams_per_tunnel: args.max_streams_per_tunnel,
        max_request_body: args.max_request_body,
        no_auth: args.no_auth,
        policy_files: args.policy,
    };
    match args
        .config
        .or_else(|| FileConfig::default_path().filter(|p| p.exists()))
    {
        Some(p) => Config::from_source(&mcp_relay::config::Source::read(&p)?, overrides),
        None => Config::resolve(FileConfig::default(), overrides),
    }
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

fn state_or_default(state: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match state {
        Some(p) => Ok(p),
        None => StateDir::default_path(),
    }
}

fn access_tokens(cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::{Email, Store};
    let (user, tunnel, mut groups, ttl, public_url, state) = match cmd {
        TokensCommand::Revoke { user, state } => {
            let state = StateDir::open(&state_or_default(state)?)?;
            let store =
                mcp_relay::store::SqliteStore::open(&state.path(mcp_relay::store::DB_FILE))?;
            let u = store
                .get_user_by_email(&Email::parse(&user)?)?
                .with_context(|| format!("no account {user}; see `mcp-relay users list`"))?;
            let n = store.revoke_user_tokens(u.id)?;
            eprintln!(
                "revoked every token of {user} ({n} refresh tokens); a running relay refuses its access tokens within a second"
            );
            return Ok(ExitCode::SUCCESS);
        }
        TokensCommand::Issue {
            user,
            tunnel,
            groups,
            ttl,
            public_url,
            state,
        } => (user, tunnel, groups, ttl, public_url, state),
    };
    let state = StateDir::open(&state_or_default(state)?)?;
    // Every token has an owner: the user must exist (and be enabled).
    let store = mcp_relay::store::SqliteStore::open(&state.path(mcp_relay::store::DB_FILE))?;
    let account = store
        .get_user_by_email(&Email::parse(&user)?)?
        .with_context(|| {
            format!("no account {user}; add it first with `mcp-relay users add {user}`")
        })?;
    anyhow::ensure!(!account.disabled, "the account {user} is disabled");
    for g in &account.groups {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    let public_url = public_url_of(public_url.as_ref(), &state)?;
    let keys = mcp_relay::auth::load_or_create_keys(&state)?;
    let issuer = mcp_relay::oauth::token::Issuer::new(public_url.clone()).with_ttl(ttl)?;
    let grant = mcp_relay::oauth::token::AccessGrant {
        sub: mcp_relay::auth::user_subject(account.id),
        email: Some(account.email.as_str().to_owned()),
        groups,
        client_id: "mcp-relay-cli".to_owned(),
        scope: mcp_relay::auth::MCP_SCOPE.to_owned(),
        resource: format!("{public_url}/t/{tunnel}/mcp"),
    };
    let token = issuer.issue(&keys, &grant, mcp_relay::oauth::token::unix_now())?;
    eprintln!(
        "access token for {user} on {} (valid {})",
        grant.resource,
        humantime::format_duration(ttl)
    );
    println!("{}", token.token());
    Ok(ExitCode::SUCCESS)
}

fn public_url_of(given: Option<&Url>, state: &StateDir) -> anyhow::Result<String> {
    if let Some(u) = given {
        return Ok(u.as_str().trim_end_matches('/').to_owned());
    }
    let path = state.path("endpoints.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no --public-url given and {} is missing; start the relay once or pass --public-url",
            path.display()
        )
    })?;
    Ok(serde_json::from_slice::<mcp_relay::Endpoints>(&bytes)
        .with_context(|| format!("{} is corrupt", path.display()))?
        .public_url)
}

fn users(cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::{Email, NewUser, PasswordHash, Store};
    let find = |store: &mcp_relay::store::SqliteStore,
                email: &str|
     -> anyhow::Result<mcp_relay::store::User> {
        store
            .get_user_by_email(&Email::parse(email)?)?
            .with_context(|| format!("no account {email}; see `mcp-relay users list`"))
    };
    match cmd {
        UsersCommand::Add {
            email,
            name,
            groups,
            at,
        } => {
            let (state, store) = at.open()?;
            let (user, setup) = store.add_user(&NewUser {
                email: Email::parse(&email)?,
                display_name: name,
                groups,
            })?;
            let url = at.public_url(&state)?;
            eprintln!(
                "added {} (id {}); send them this one-time link to set a password:",
                user.email.as_str(),
                user.id.0
            );
            println!("{url}/setup?token={}", setup.expose());
        }
        UsersCommand::List { at } => {
            let (_, store) = at.open()?;
            for u in store.list_users()? {
                println!(
                    "{}\t{}\t{}\tgroups={}\t{}",
                    u.id.0,
                    u.email.as_str(),
                    if u.disabled { "disabled" } else { "active" },
                    u.groups.join(","),
                    if u.password_hash.is_some() {
                        "password set"
                    } else {
                        "no password yet"
                    }
                );
            }
        }
        UsersCommand::Disable { email, at } => {
            let (_, store) = at.open()?;
            let u = find(&store, &email)?;
            store.disable_user(u.id)?;
            eprintln!("disabled {email}; its refresh tokens are revoked");
        }
        UsersCommand::Enable { email, at } => {
            let (_, store) = at.open()?;
            let u = find(&store, &email)?;
            store.enable_user(u.id)?;
            eprintln!("enabled {email}");
        }
        UsersCommand::ResetLink { email, at } => {
            let (state, store) = at.open()?;
            let u = find(&store, &email)?;
            let setup = store.issue_setup_token(u.id)?;
            println!("{}/setup?token={}", at.public_url(&state)?, setup.expose());
        }
        UsersCommand::SetPassword { email, at, .. } => {
            let (_, store) = at.open()?;
            let u = find(&store, &email)?;
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("reading the password from stdin")?;
            let pw = pw.trim_end_matches(['\n', '\r']);
            let phc = mcp_relay::authorization::password::hash(pw)
                .map_err(|e| anyhow::anyhow!("password not accepted: {e}"))?;
            store.set_password_hash(u.id, &PasswordHash::parse(&phc)?)?;
            eprintln!("password set for {email}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn service_accounts(cmd: ServiceAccountsCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::{ClientKind, ClientOwner, NewClient, Secret, Store};
    match cmd {
        ServiceAccountsCommand::Create {
            name,
            groups,
            ttl,
            at,
        } => {
            let (_, store) = at.open()?;
            let secret = Secret::generate();
            let client_id = format!("mcpsa_{}", &Secret::generate().expose()[..24]);
            let expires = mcp_relay::oauth::token::unix_now() as i64 + ttl.as_secs() as i64;
            store.insert_client(&NewClient {
                client_id: client_id.clone(),
                kind: ClientKind::ServiceAccount,
                name: name.clone(),
                redirect_uris: Vec::new(),
                secret_hash: Some(secret.hash()),
                owner: ClientOwner::Admin,
                metadata: serde_json::json!({ "groups": groups }),
                registered_from: None,
                expires_at: Some(expires),
            })?;
            eprintln!(
                "service account {name}: client id and secret below (the secret is shown once; it expires in {})",
                humantime::format_duration(ttl)
            );
            println!("{client_id}");
            println!("{}", secret.expose());
        }
        ServiceAccountsCommand::List { at } => {
            let (_, store) = at.open()?;
            for c in store
                .list_clients()?
                .into_iter()
                .filter(|c| c.kind == ClientKind::ServiceAccount)
            {
                println!(
                    "{}\t{}\t{}",
                    c.client_id,
                    c.name,
                    if c.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        ServiceAccountsCommand::Revoke { client_id, at } => {
            let (_, store) = at.open()?;
            store.revoke_client(&client_id)?;
            eprintln!("revoked service account {client_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn enroll_tokens(cmd: EnrollTokensCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::{Email, Store};
    match cmd {
        EnrollTokensCommand::Create { user, ttl, at } => {
            let (state, store) = at.open()?;
            let email = Email::parse(&user)?;
            let u = store.get_user_by_email(&email)?.with_context(|| {
                format!("no account {user}; add it with `mcp-relay users add {user}`")
            })?;
            if u.disabled {
                anyhow::bail!(
                    "the account {user} is disabled; enable it with `mcp-relay users enable {user}`"
                );
            }
            let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
            let token = store.issue_enroll_token(u.id, secs)?;
            let url = at
                .public_url(&state)
                .unwrap_or_else(|_| "https://<relay>".into());
            eprintln!(
                "one-time enrollment token for {user} (valid {}); on the agent's machine run:\n  mcp-agent login --relay {url} --enroll-token <TOKEN>",
                humantime::format_duration(ttl)
            );
            println!("{}", token.expose());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Threads of the async runtime's blocking pool.
const RELAY_BLOCKING_THREADS: usize = 32;

fn tunnels(cmd: TunnelsCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::registry::load_claims;
    use mcp_relay::store::{Email, Store};
    match cmd {
        TunnelsCommand::List { json, at } => {
            let (state, store) = at.open()?;
            let users = store.list_users()?;
            let claims = load_claims(&state, &store)?;
            let mut rows: Vec<serde_json::Value> = claims
                .iter()
                .map(|(name, c)| {
                    let owner = c
                        .owner
                        .strip_prefix("user:")
                        .and_then(|id| id.parse::<i64>().ok())
                        .and_then(|id| users.iter().find(|u| u.id.0 == id))
                        .map(|u| u.email.as_str().to_owned())
                        .unwrap_or_else(|| format!("agent-token {}", c.owner));
                    serde_json::json!({
                        "name": name.as_str(),
                        "owner": owner,
                        "claimed_at": mcp_relay::devices::rfc3339(c.claimed_at as i64),
                    })
                })
                .collect();
            rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("NAME\tOWNER\tCLAIMED");
                for r in rows {
                    println!(
                        "{}\t{}\t{}",
                        r["name"].as_str().unwrap_or(""),
                        r["owner"].as_str().unwrap_or(""),
                        r["claimed_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        TunnelsCommand::Reserve {
            name,
            owner,
            force,
            at,
        } => {
            let (state, store) = at.open()?;
            let tunnel = mcp_tunnel_proto::TunnelName::parse(&name)?;
            let u = store
                .get_user_by_email(&Email::parse(&owner)?)?
                .with_context(|| {
                    format!("no account {owner}; add it with `mcp-relay users add {owner}`")
                })?;
            let claims = load_claims(&state, &store)?;
            let new_owner = mcp_relay::agents::user_owner(u.id);
            if let Some(c) = claims.get(&tunnel)
                && c.owner != new_owner
                && !force
            {
                anyhow::bail!(
                    "tunnel {name} already belongs to someone else; pass --force to take it"
                );
            }
            let now = mcp_relay::oauth::token::unix_now() as i64;
            // Admin changes (they bump the revision): running relays pick the
            // new owner up within their revision poll.
            if force || claims.contains_key(&tunnel) {
                store.set_tunnel_claim(tunnel.as_str(), &new_owner, now)?;
            } else if store.add_tunnel_claims(&[(tunnel.as_str().to_owned(), new_owner, now)])? == 0
            {
                // An agent claimed it between the check and now.
                anyhow::bail!(
                    "tunnel {name} was just claimed by someone else; pass --force to take it"
                );
            }
            eprintln!("tunnel {name} reserved for {owner}");
        }
        TunnelsCommand::Release { name, at } => {
            let (state, store) = at.open()?;
            let tunnel = mcp_tunnel_proto::TunnelName::parse(&name)?;
            if !load_claims(&state, &store)?.contains_key(&tunnel) {
                anyhow::bail!("tunnel {name} is not claimed");
            }
            if !store.remove_tunnel_claim(tunnel.as_str())? {
                anyhow::bail!("tunnel {name} is not claimed");
            }
            eprintln!("tunnel {name} released");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn devices(cmd: DevicesCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::Store;
    match cmd {
        DevicesCommand::List { json, at } => {
            let (_, store) = at.open()?;
            let users = store.list_users()?;
            let email = |id| {
                users
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| u.email.as_str().to_owned())
                    .unwrap_or_default()
            };
            let rows: Vec<serde_json::Value> = store
                .list_devices()?
                .into_iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.id,
                        "user": email(d.user_id),
                        "label": d.label,
                        "created_at": mcp_relay::devices::rfc3339(d.created_at),
                        "cert_expires_at": mcp_relay::devices::rfc3339(d.cert_expires_at),
                        "last_seen_at": d.last_seen_at.map(mcp_relay::devices::rfc3339),
                        "status": if d.revoked_at.is_some() { "revoked" } else { "active" },
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("ID\tUSER\tLABEL\tCERT EXPIRES\tLAST SEEN\tSTATUS");
                for r in rows {
                    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s("id"),
                        s("user"),
                        s("label"),
                        s("cert_expires_at"),
                        s("last_seen_at"),
                        s("status")
                    );
                }
            }
        }
        DevicesCommand::Revoke { id, at } => {
            let (_, store) = at.open()?;
            store.revoke_device(&id)?;
            eprintln!("revoked device {id}; a running relay cuts its connections within a second");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn credentials(cmd: CredentialsCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::inventory::{self, Filter, RevokeError, Revoked, RotateError};
    let now = i64::try_from(mcp_relay::oauth::token::unix_now()).unwrap_or(i64::MAX);
    match cmd {
        CredentialsCommand::List {
            json,
            expiring,
            owner,
            kinds,
            at,
        } => {
            let (state, store) = at.open()?;
            let filter = Filter {
                kinds,
                owner,
                expiring_within: expiring,
            };
            let rows: Vec<_> = inventory::collect(&state, &store, now)
                .context("reading the credential inventory")?
                .into_iter()
                .filter(|c| filter.matches(c, now))
                .collect();
            if json {
                let array: Vec<_> = rows.iter().map(inventory::Credential::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&array)?);
            } else {
                print!("{}", inventory::render_table(&rows));
                if rows.is_empty() && filter != Filter::default() {
                    eprintln!("no credential matches; drop a filter to see more");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CredentialsCommand::Revoke { kind, id, at } => {
            let (state, store) = at.open()?;
            match inventory::revoke(&state, &store, kind, &id) {
                Ok(Revoked::Now) => {
                    eprintln!("revoked {kind} {id}; {}", inventory::revoke_effect(kind));
                    Ok(ExitCode::SUCCESS)
                }
                Ok(Revoked::Already) => {
                    eprintln!("{kind} {id} was already revoked, used or expired; nothing changed");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(match e {
                        RevokeError::NotFound { .. }
                        | RevokeError::WrongKind { .. }
                        | RevokeError::BadId { .. } => 2,
                        RevokeError::NotRevocable(_) => 3,
                        RevokeError::Store(_) | RevokeError::File(_) => 1,
                    }))
                }
            }
        }
        CredentialsCommand::Rotate { kind, at } => {
            let state = StateDir::open(&state_or_default(at.state)?)?;
            match inventory::rotate(&state, kind, now) {
                Ok(r) if kind == mcp_relay::inventory::Kind::DeviceCa => {
                    eprintln!(
                        "new {}; the old {} stays trusted for {} while devices renew onto the new one (a running relay picks this up within a second)",
                        r.new,
                        r.old,
                        humantime::format_duration(r.overlap)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(r) => {
                    eprintln!(
                        "new signing key {}; {} stays published for {} so tokens it signed keep working",
                        r.new,
                        r.old,
                        humantime::format_duration(r.overlap)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ RotateError::NotSupported(_)) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(3))
                }
                Err(e @ RotateError::Keys(_)) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn clients(cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    use mcp_relay::store::Store;
    match cmd {
        ClientsCommand::List { at } => {
            let (_, store) = at.open()?;
            for c in store.list_clients()? {
                println!(
                    "{}\t{}\t{}\t{}",
                    c.client_id,
                    c.kind.as_str(),
                    c.name,
                    if c.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        ClientsCommand::Revoke { client_id, at } => {
            let (_, store) = at.open()?;
            store.revoke_client(&client_id)?;
            eprintln!("revoked client {client_id} and its tokens");
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
