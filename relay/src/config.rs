//! Relay configuration: command-line flags, `MCP_RELAY_*` environment
//! variables and an optional TOML file, resolved once into [`Config`].
//!
//! Precedence: flag > environment > file > default. Unknown file keys are
//! errors, reported with their line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use url::Url;

use crate::limits::RelayLimits;
use crate::state_dir::StateDir;
use crate::tls::TlsSource;

/// The default port for both HTTPS (TCP) and QUIC (UDP).
pub const DEFAULT_PORT: u16 = 8443;

/// How long `--replace` waits for the running relay to release the QUIC port.
pub const REPLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The configuration file (`relay.toml`). Every key is optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// HTTPS listen address for MCP clients (default `0.0.0.0:8443`).
    pub https: Option<SocketAddr>,
    /// QUIC (UDP) listen address for agents (default `0.0.0.0:8443`).
    pub quic: Option<SocketAddr>,
    /// Optional plain-HTTP listen address, for running behind a TLS-terminating proxy.
    pub http: Option<SocketAddr>,
    /// Prometheus `/metrics` (and `/healthz`, `/readyz`) listen address, e.g.
    /// `127.0.0.1:9464`. Off by default; never expose it publicly.
    pub metrics: Option<SocketAddr>,
    /// State directory (default: the per-user data dir).
    pub state: Option<PathBuf>,
    /// The URL clients use to reach this relay, e.g. `https://relay.example.com`.
    pub public_url: Option<Url>,
    /// Development mode: self-made CA and localhost certificate.
    pub dev: Option<bool>,
    /// TLS certificate chain (PEM), leaf first.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `text` (default) or `json` log lines.
    pub log_format: Option<LogFormat>,
    /// Accept tunnel requests without an access token (benchmarks, local experiments only).
    pub no_auth: Option<bool>,
    /// Subdomain routing: tunnels are also reached as `https://NAME.<public
    /// host>/mcp` (and that is the URL agents show); path URLs keep working.
    /// Needs a DNS wildcard record and a certificate for the names (a
    /// wildcard certificate, or `[acme]`, which gets one per tunnel name).
    pub subdomains: Option<bool>,
    /// Extra host names the relay answers to besides the public URL's (e.g. an alias).
    pub allowed_hosts: Option<Vec<String>>,
    /// TEST ONLY: host names whose client metadata documents may be fetched
    /// from loopback addresses (the SSRF guard refuses loopback otherwise).
    pub cimd_test_allow_hosts: Option<Vec<String>>,
    /// TEST ONLY: an extra CA (PEM) trusted when fetching client metadata documents.
    pub cimd_test_ca: Option<PathBuf>,
    /// Web origins (e.g. `https://app.example.com`) whose browsers may call tunnels.
    pub allowed_origins: Option<Vec<String>>,
    /// Limits (see `RelayLimits`).
    pub limits: Option<RelayLimits>,
    /// Sign-in through an upstream OpenID Connect provider (see [`OidcConfig`]).
    pub oidc: Option<OidcConfig>,
    /// Show the built-in account (email + password) form on the sign-in page
    /// (default `true`; set `false` when everyone signs in through `[oidc]`).
    pub password_login: Option<bool>,
    /// Authorization: the relay admin's Cedar policy files.
    pub policy: Option<PolicyConfig>,
    /// Per-identity and per-tool request rate limits.
    pub rate_limits: Option<RateLimitConfig>,
    /// The audit log.
    pub audit: Option<AuditConfig>,
    /// Automatic certificates from an ACME CA (instead of `tls_cert`/`tls_key`).
    pub acme: Option<crate::acme::AcmeConfig>,
}

/// `[oidc]`: people sign in at an OpenID Connect provider (Google, Entra ID,
/// Okta, Keycloak, Dex, …) instead of, or beside, built-in accounts.
///
/// Register the relay at the provider as a confidential web client with the
/// redirect URI `<public_url>/oidc/callback`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`). https, or http on loopback only.
    pub issuer: Url,
    /// The client id the provider gave the relay.
    pub client_id: String,
    /// The client secret; prefer `client_secret_file` or the
    /// `MCP_RELAY_OIDC_CLIENT_SECRET` environment variable.
    pub client_secret: Option<String>,
    /// A file holding the client secret (trailing whitespace ignored).
    pub client_secret_file: Option<PathBuf>,
    /// Button label: "Sign in with <name>" (default: the issuer's host).
    pub display_name: Option<String>,
    /// Scopes to ask for (default `["openid", "email", "profile"]`; `openid` is always added).
    pub scopes: Option<Vec<String>>,
    /// The claim (in the ID token or at the userinfo endpoint) that lists the
    /// person's groups (default `groups`).
    pub groups_claim: Option<String>,
    /// Email domains whose people may sign in and get an account on first
    /// sign-in (e.g. `["example.com"]`). People added with `mcp-relay users add`
    /// may always sign in. Empty (the default): only those.
    pub allowed_domains: Option<Vec<String>>,
    /// Anyone the provider authenticates may sign in (default `false`; only
    /// for a provider that already restricts who has an account).
    pub allow_any_email: Option<bool>,
    /// Refuse sign-ins whose `email_verified` claim is not `true` (default `true`).
    pub require_verified_email: Option<bool>,
    /// An extra CA certificate (PEM) to trust for the provider (private CAs).
    pub ca_file: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The resolved configuration `run` takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTPS listener (always on).
    pub https: SocketAddr,
    /// QUIC listener.
    pub quic: SocketAddr,
    /// Plain-HTTP listener, if any.
    pub http: Option<SocketAddr>,
    /// Metrics listener, if any.
    pub metrics: Option<SocketAddr>,
    /// `--replace`: wait this long for a running relay to release the QUIC port.
    pub replace: Option<std::time::Duration>,
    /// Log format from the file (the flag wins).
    pub log_format: Option<LogFormat>,
    /// The config file and flags this came from (re-read on SIGHUP).
    pub source: Option<(Source, Overrides)>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Public base URL; `None` in dev mode without one: `https://localhost:<bound HTTPS port>`.
    pub public_url: Option<Url>,
    /// Where the certificate comes from.
    pub tls: TlsSource,
    /// Development mode.
    pub dev: bool,
    /// Limits.
    pub limits: RelayLimits,
    /// Tunnel requests need no access token.
    pub no_auth: bool,
    /// Subdomain routing is on.
    pub subdomains: bool,
    /// Extra accepted `Host` names.
    pub allowed_hosts: Vec<String>,
    /// TEST ONLY: loopback-allowed hosts for client metadata documents.
    pub cimd_test_allow_hosts: Vec<String>,
    /// TEST ONLY: extra CA for client metadata documents.
    pub cimd_test_ca: Option<PathBuf>,
    /// Extra accepted `Origin`s.
    pub allowed_origins: Vec<String>,
    /// Upstream OIDC sign-in, if configured (validated).
    pub oidc: Option<OidcSettings>,
    /// Whether the built-in email + password form is offered.
    pub password_login: bool,
    /// The admin's Cedar policy files.
    pub policy_files: Vec<PathBuf>,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
    /// Audit settings.
    pub audit: AuditConfig,
}

/// `[oidc]`, checked and with defaults applied.
#[derive(Clone)]
pub struct OidcSettings {
    /// Issuer URL.
    pub issuer: Url,
    /// Client id at the provider.
    pub client_id: String,
    /// Client secret at the provider (`None`: a public client, PKCE only).
    pub client_secret: Option<String>,
    /// Button label.
    pub display_name: String,
    /// Scopes (always with `openid`).
    pub scopes: Vec<String>,
    /// Name of the groups claim.
    pub groups_claim: String,
    /// Lower-case email domains allowed to sign in.
    pub allowed_domains: Vec<String>,
    /// Anyone the provider authenticates may sign in.
    pub allow_any_email: bool,
    /// `email_verified` must be true.
    pub require_verified_email: bool,
    /// Extra CA (PEM) for the provider.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "MASKED"),
            )
            .field("display_name", &self.display_name)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("allowed_domains", &self.allowed_domains)
            .field("allow_any_email", &self.allow_any_email)
            .field("require_verified_email", &self.require_verified_email)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    /// Checks the section and applies defaults; `env_secret` is
    /// `MCP_RELAY_OIDC_CLIENT_SECRET`.
    pub fn settle(self, env_secret: Option<String>) -> anyhow::Result<OidcSettings> {
        let host = self.issuer.host_str().unwrap_or_default().to_owned();
        let loopback = match self.issuer.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match self.issuer.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => bail!(
                "oidc.issuer must be an https URL (http only on loopback), got {}",
                self.issuer
            ),
        }
        if self.issuer.query().is_some() || self.issuer.fragment().is_some() {
            bail!("oidc.issuer must not have a query or fragment");
        }
        if self.client_id.trim().is_empty() {
            bail!("oidc.client_id is empty");
        }
        let secret = match (self.client_secret, self.client_secret_file, env_secret) {
            (_, _, Some(env)) if !env.is_empty() => Some(env),
            (Some(_), Some(_), _) => {
                bail!("oidc.client_secret and oidc.client_secret_file: give one, not both")
            }
            (Some(s), None, _) => Some(s),
            (None, Some(file), _) => {
                let text = std::fs::read_to_string(&file).with_context(|| {
                    format!("reading oidc.client_secret_file {}", file.display())
                })?;
                let s = text.trim_end().to_owned();
                if s.is_empty() {
                    bail!("oidc.client_secret_file {} is empty", file.display());
                }
                Some(s)
            }
            (None, None, _) => None,
        };
        let mut scopes = self
            .scopes
            .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c == ' ' || c.is_control()))
        {
            bail!("oidc.scopes: {bad:?} is not a scope name");
        }
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let mut allowed_domains = Vec::new();
        for d in self.allowed_domains.unwrap_or_default() {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            if d.is_empty() || d.contains(['@', '/', ' ']) || !d.contains('.') {
                bail!("oidc.allowed_domains: {d:?} is not a domain like \"example.com\"");
            }
            allowed_domains.push(d);
        }
        Ok(OidcSettings {
            display_name: self.display_name.unwrap_or(host),
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: secret,
            scopes,
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            allowed_domains,
            allow_any_email: self.allow_any_email.unwrap_or(false),
            require_verified_email: self.require_verified_email.unwrap_or(true),
            ca_file: self.ca_file,
        })
    }
}

/// `[policy]`: the relay admin's policies, which bind every tunnel (forbid
/// wins over any owner policy or grant).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar policy files (relative paths are taken from the config file's
    /// directory), validated against the published schema at start.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// `[rate_limits]`: requests allowed per window; over it the relay answers
/// 429 (or, for `tools/call`, a JSON-RPC error) with when to retry.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// MCP requests per identity (user or service account) per window, over
    /// all tunnels (default 600; 0 = no limit).
    pub per_identity: u32,
    /// `tools/call` requests per identity and tool per window (default 120;
    /// 0 = no limit).
    pub per_tool: u32,
    /// The window, e.g. `"1m"` (default one minute). Requests refill evenly
    /// over it (GCRA), so a burst of the whole allowance is possible.
    #[serde(with = "humantime_serde_compat")]
    pub window: std::time::Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_identity: 600,
            per_tool: 120,
            window: std::time::Duration::from_secs(60),
        }
    }
}

/// `[audit]`: what the relay's audit log records.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `"digest"` (default: a SHA-256 of the arguments) or `"full"` (the
    /// arguments themselves, after redaction).
    pub arguments: AuditArguments,
    /// Argument keys whose values are replaced by `[REDACTED]` in full mode
    /// (case-insensitive; added to the built-in list of passwords, tokens,
    /// secrets and keys).
    pub redact: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            arguments: AuditArguments::Digest,
            redact: Vec::new(),
        }
    }
}

/// How tool arguments are audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditArguments {
    /// A SHA-256 of the canonical JSON only.
    Digest,
    /// The arguments, redacted.
    Full,
}

mod humantime_serde_compat {
    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// Flags that override the file (all optional; `None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--https`
    pub https: Option<SocketAddr>,
    /// `--quic`
    pub quic: Option<SocketAddr>,
    /// `--http`
    pub http: Option<SocketAddr>,
    /// `--metrics`
    pub metrics: Option<SocketAddr>,
    /// `--replace`
    pub replace: bool,
    /// `--state`
    pub state: Option<PathBuf>,
    /// `--public-url`
    pub public_url: Option<Url>,
    /// `--dev`
    pub dev: bool,
    /// `--tls-cert`
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`
    pub tls_key: Option<PathBuf>,
    /// `--max-streams-per-tunnel`
    pub max_streams_per_tunnel: Option<u32>,
    /// `--max-request-body`
    pub max_request_body: Option<u64>,
    /// `--no-auth`
    pub no_auth: bool,
    /// `--policy FILE` (repeatable): admin policy files, added to the file's.
    pub policy_files: Vec<PathBuf>,
}

impl Overrides {
    /// The flag that set `key`, if one did.
    pub fn flag_for(&self, key: &str) -> Option<&'static str> {
        let set = match key {
            "https" => self.https.is_some(),
            "quic" => self.quic.is_some(),
            "http" => self.http.is_some(),
            "metrics" => self.metrics.is_some(),
            "state" => self.state.is_some(),
            "public_url" => self.public_url.is_some(),
            "tls_cert" => self.tls_cert.is_some(),
            "tls_key" => self.tls_key.is_some(),
            "limits.max_streams_per_tunnel" => self.max_streams_per_tunnel.is_some(),
            "limits.max_request_body" => self.max_request_body.is_some(),
            _ => false,
        };
        let flag = match key {
            "https" => "--https",
            "quic" => "--quic",
            "http" => "--http",
            "metrics" => "--metrics",
            "state" => "--state",
            "public_url" => "--public-url",
            "tls_cert" => "--tls-cert",
            "tls_key" => "--tls-key",
            "limits.max_streams_per_tunnel" => "--max-streams-per-tunnel",
            _ => "--max-request-body",
        };
        set.then_some(flag)
    }
}

impl Config {
    /// Reads `source`, resolves it with `o`, and names the line of a bad key.
    pub fn from_source(source: &Source, o: Overrides) -> anyhow::Result<Self> {
        let file = source.parse()?;
        let mut c = Self::resolve(file, o.clone()).map_err(|e| source.locate_error(e, &o))?;
        c.source = Some((source.clone(), o));
        Ok(c)
    }
}

impl FileConfig {
    /// Reads and parses a config file; errors name the line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            // The line itself names the key (a bad value's message does not).
            let shown = text
                .lines()
                .nth(line.saturating_sub(1))
                .map(|l| format!(" `{}`", l.trim()))
                .unwrap_or_default();
            anyhow::anyhow!(
                "line {line}, column {col}{shown}: {}",
                e.message().trim_end()
            )
        })
    }

    /// The default config file location (`~/.config/mcp-relay/relay.toml` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "mcp-relay")
            .map(|d| d.config_dir().join("relay.toml"))
    }
}

impl Config {
    /// Resolves flags over file over defaults, and checks the result.
    pub fn resolve(file: FileConfig, o: Overrides) -> anyhow::Result<Self> {
        let default_addr = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
        let https = o.https.or(file.https).unwrap_or(default_addr);
        let quic = o.quic.or(file.quic).unwrap_or(default_addr);
        let http = o.http.or(file.http);
        let metrics = o.metrics.or(file.metrics);
        let dev = o.dev || file.dev.unwrap_or(false);
        let state_dir = match o.state.or(file.state) {
            Some(p) => p,
            None => StateDir::default_path()?,
        };
        let public_url = o.public_url.or(file.public_url);
        let tls = match (
            o.tls_cert.or(file.tls_cert),
            o.tls_key.or(file.tls_key),
            file.acme,
        ) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(keyed(
                    "acme",
                    "contradicts tls_cert/tls_key: use certificate files or ACME, not both",
                ));
            }
            (Some(cert), Some(key), None) => TlsSource::Files { cert, key },
            (None, None, Some(acme)) => TlsSource::Acme(
                acme.settle(public_url.as_ref(), &state_dir)
                    .map_err(|e| keyed("acme", format!("{e:#}")))?,
            ),
            (None, None, None) if dev => TlsSource::Dev,
            (None, None, None) => bail!(
                "no TLS certificate: pass --tls-cert FILE --tls-key FILE, add an [acme] section, or --dev for a self-made localhost certificate"
            ),
            (Some(_), None, None) => {
                return Err(keyed(
                    "tls_cert",
                    "needs tls_key too (--tls-cert and --tls-key go together)",
                ));
            }
            (None, Some(_), None) => {
                return Err(keyed(
                    "tls_key",
                    "needs tls_cert too (--tls-cert and --tls-key go together)",
                ));
            }
        };
        match &public_url {
            Some(u) if !matches!(u.scheme(), "https" | "http") || u.host().is_none() => {
                return Err(keyed(
                    "public_url",
                    format!("must be an http(s) URL with a host, got {u}"),
                ));
            }
            None if !dev => {
                bail!("pass --public-url https://relay.example.com (the URL MCP clients will use)")
            }
            _ => {}
        }
        let mut limits = file.limits.unwrap_or_default();
        if let Some(n) = o.max_streams_per_tunnel {
            limits.max_streams_per_tunnel = n;
        }
        if let Some(n) = o.max_request_body {
            limits.max_request_body = n;
        }
        if limits.max_streams_per_tunnel == 0 {
            return Err(keyed("limits.max_streams_per_tunnel", "must be at least 1"));
        }
        let oidc = match file.oidc {
            Some(o) => Some(
                o.settle(std::env::var("MCP_RELAY_OIDC_CLIENT_SECRET").ok())
                    .map_err(|e| keyed("oidc", format!("{e:#}")))?,
            ),
            None => None,
        };
        let mut policy_files = file.policy.map(|p| p.files).unwrap_or_default();
        policy_files.extend(o.policy_files);
        let rate_limits = file.rate_limits.unwrap_or_default();
        if rate_limits.window.is_zero() {
            return Err(keyed("rate_limits.window", "must be longer than zero"));
        }
        let password_login = file.password_login.unwrap_or(true);
        let subdomains = file.subdomains.unwrap_or(false);
        if subdomains
            && !matches!(
                public_url.as_ref().and_then(Url::host),
                Some(url::Host::Domain(_))
            )
        {
            return Err(keyed(
                "subdomains",
                "needs public_url with a DNS name (tunnels become https://NAME.<that name>/mcp)",
            ));
        }
        if !password_login && oidc.is_none() {
            return Err(keyed(
                "password_login",
                "false needs an [oidc] section, or nobody could sign in",
            ));
        }
        for (name, addr) in [("http", http), ("metrics", metrics)] {
            if addr.is_some_and(|a| a == https && a.port() != 0) {
                return Err(keyed(
                    name,
                    format!("is the same address as https ({https}); give them different ports"),
                ));
            }
        }
        if metrics.is_some_and(|m| http.is_some_and(|h| h == m && h.port() != 0)) {
            return Err(keyed(
                "metrics",
                "is the same address as http; give them different ports",
            ));
        }
        Ok(Self {
            https,
            quic,
            http,
            metrics,
            replace: o.replace.then_some(REPLACE_WAIT),
            source: None,
            log_format: file.log_format,
            state_dir,
            public_url,
            tls,
            dev,
            limits,
            no_auth: o.no_auth || file.no_auth.unwrap_or(false),
            subdomains,
            allowed_hosts: file.allowed_hosts.unwrap_or_default(),
            cimd_test_allow_hosts: file.cimd_test_allow_hosts.unwrap_or_default(),
            cimd_test_ca: file.cimd_test_ca,
            allowed_origins: file.allowed_origins.unwrap_or_default(),
            oidc,
            password_login,
            policy_files,
            rate_limits,
            audit: file.audit.unwrap_or_default(),
        })
    }
}

/// A configuration problem tied to one key (`tls_cert`, `limits.drain_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct KeyError {
    /// The dotted key.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// A [`KeyError`].
pub fn keyed(key: &str, message: impl std::fmt::Display) -> anyhow::Error {
    KeyError {
        key: key.to_owned(),
        message: message.to_string(),
    }
    .into()
}

/// The config file a configuration came from: for line numbers in errors,
/// and for re-reading it on SIGHUP.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it is.
    pub path: PathBuf,
    /// Its text as read.
    pub text: String,
}

impl Source {
    /// Reads a config file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// Parses it; errors name the file, line and column.
    pub fn parse(&self) -> anyhow::Result<FileConfig> {
        let mut f = FileConfig::parse(&self.text)
            .with_context(|| format!("in config file {}", self.path.display()))?;
        // Policy files are named relative to the config file.
        if let (Some(policy), Some(dir)) = (f.policy.as_mut(), self.path.parent()) {
            for file in &mut policy.files {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        Ok(f)
    }

    /// Adds `config file F, line N` to an error about one key set in this
    /// file (not one a flag in `o` overrode).
    pub fn locate_error(&self, e: anyhow::Error, o: &Overrides) -> anyhow::Error {
        let Some(k) = e.downcast_ref::<KeyError>() else {
            return e;
        };
        if let Some(flag) = o.flag_for(&k.key) {
            let msg = format!("{}: {} (from {flag})", k.key, k.message);
            return anyhow::anyhow!(msg);
        }
        match locate(&self.text, &k.key) {
            Some(line) => {
                let msg = format!(
                    "config file {}, line {line}: {}: {}",
                    self.path.display(),
                    k.key,
                    k.message
                );
                anyhow::anyhow!(msg)
            }
            None => e,
        }
    }
}

/// The 1-based line where the dotted `key` is set in TOML `text` (a
/// `[table]` header for a table key), if it is set there.
pub fn locate(text: &str, key: &str) -> Option<usize> {
    // toml's own parser keeps every key's span: quoted, dotted and inline
    // keys are found the way the deserializer saw them.
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(line_col(text, k.span().start).0);
        }
        table = match v.get_ref() {
            toml::de::DeValue::Table(t) => t,
            _ => return None,
        };
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_position() {
        let err =
            FileConfig::parse("dev = true\nhttps = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn keys_are_located_however_they_are_written() {
        let text = "a = 1\n[limits]\n\"drain_timeout\" = \"1s\"\n[oidc]\nclient_id = \"x\"\n[rate_limits]\nwindow.x = 1\n";
        assert_eq!(locate(text, "a"), Some(1));
        assert_eq!(locate(text, "limits"), Some(2));
        assert_eq!(locate(text, "limits.drain_timeout"), Some(3));
        assert_eq!(locate(text, "oidc.client_id"), Some(5));
        assert_eq!(locate(text, "rate_limits.window"), Some(7));
        assert_eq!(locate(text, "oidc.issuer"), None);
        assert_eq!(locate(text, "nope"), None);
    }

    #[test]
    fn flags_override_file() {
        let file = FileConfig::parse(
            "dev = true\nstate = \"/tmp/x\"\nhttps = \"127.0.0.1:1000\"\n[limits]\nmax_streams_per_tunnel = 7\nresponse_head_timeout = \"3s\"\n",
        )
        .unwrap();
        let cfg = Config::resolve(
            file,
            Overrides {
                https: Some("127.0.0.1:2000".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.https.port(), 2000);
        assert_eq!(cfg.limits.max_streams_per_tunnel, 7);
        assert_eq!(cfg.limits.response_head_timeout.as_secs(), 3);
        assert_eq!(
            cfg.public_url, None,
            "dev mode derives it from the bound port"
        );
    }

    #[test]
    fn oidc_section_is_checked() {
        let ok = FileConfig::parse(
            "[oidc]\nissuer = \"https://idp.example.com/realms/x\"\nclient_id = \"relay\"\nallowed_domains = [\"@Example.com\"]\nscopes = [\"email\"]\n",
        )
        .unwrap()
        .oidc
        .unwrap()
        .settle(Some("s3cret".into()))
        .unwrap();
        assert_eq!(ok.allowed_domains, ["example.com"]);
        assert_eq!(ok.scopes, ["openid", "email"]);
        assert_eq!(ok.client_secret.as_deref(), Some("s3cret"));
        assert_eq!(ok.display_name, "idp.example.com");
        assert!(
            !format!("{ok:?}").contains("s3cret"),
            "secret leaks in Debug"
        );
        for (bad, why) in [
            (
                "issuer = \"http://idp.example.com\"\nclient_id = \"r\"",
                "https",
            ),
            (
                "issuer = \"https://idp.example.com\"\nclient_id = \" \"",
                "client_id",
            ),
            (
                "issuer = \"https://idp.example.com\"\nclient_id = \"r\"\nallowed_domains = [\"a@b.c\"]",
                "allowed_domains",
            ),
            (
                "issuer = \"https://idp.example.com\"\nclient_id = \"r\"\nclient_secret = \"a\"\nclient_secret_file = \"/x\"",
                "not both",
            ),
        ] {
            let err = FileConfig::parse(&format!("[oidc]\n{bad}\n"))
                .unwrap()
                .oidc
                .unwrap()
                .settle(None)
                .unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        let loopback = FileConfig::parse(
            "[oidc]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"r\"\nbogus = 1\n",
        );
        assert!(format!("{:#}", loopback.unwrap_err()).contains("bogus"));
    }

    #[test]
    fn production_needs_cert_and_url() {
        let err = Config::resolve(
            FileConfig::default(),
            Overrides {
                state: Some("/tmp/x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }
}
