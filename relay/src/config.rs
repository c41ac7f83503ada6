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
    /// Extra accepted `Host` names.
    pub allowed_hosts: Vec<String>,
    /// TEST ONLY: loopback-allowed hosts for client metadata documents.
    pub cimd_test_allow_hosts: Vec<String>,
    /// TEST ONLY: extra CA for client metadata documents.
    pub cimd_test_ca: Option<PathBuf>,
    /// Extra accepted `Origin`s.
    pub allowed_origins: Vec<String>,
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
            anyhow::anyhow!("line {line}, column {col}: {}", e.message())
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
        let dev = o.dev || file.dev.unwrap_or(false);
        let state_dir = match o.state.or(file.state) {
            Some(p) => p,
            None => StateDir::default_path()?,
        };
        let tls = match (o.tls_cert.or(file.tls_cert), o.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            (None, None) if dev => TlsSource::Dev,
            (None, None) => bail!(
                "no TLS certificate: pass --tls-cert FILE --tls-key FILE, or --dev for a self-made localhost certificate"
            ),
            _ => bail!("--tls-cert and --tls-key go together; pass both"),
        };
        let public_url = o.public_url.or(file.public_url);
        match &public_url {
            Some(u) if !matches!(u.scheme(), "https" | "http") || u.host().is_none() => {
                bail!("--public-url must be an http(s) URL with a host, got {u}");
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
            bail!("limits.max_streams_per_tunnel must be at least 1");
        }
        Ok(Self {
            https,
            quic,
            http,
            state_dir,
            public_url,
            tls,
            dev,
            limits,
            no_auth: o.no_auth || file.no_auth.unwrap_or(false),
            allowed_hosts: file.allowed_hosts.unwrap_or_default(),
            cimd_test_allow_hosts: file.cimd_test_allow_hosts.unwrap_or_default(),
            cimd_test_ca: file.cimd_test_ca,
            allowed_origins: file.allowed_origins.unwrap_or_default(),
        })
    }
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
