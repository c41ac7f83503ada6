//! The agent's optional config file (`~/.config/mcp-agent/agent.toml` on
//! Linux, or `--config FILE`; the directory moves with `MCP_AGENT_CONFIG_DIR`). Every key is optional and matches a
//! `connect`/`serve` flag; flags and `MCP_AGENT_*` variables win over it.
//! Unknown keys are errors with their line and column.
//!
//! ```toml
//! relay = "https://relay.example.com"
//! name = "shop"                   # default: the db file's stem
//! ca = "/path/to/dev-ca.pem"      # extra CA to trust for the relay
//! token_file = "~/.config/mcp-agent/token"   # file holding the agent token (0600)
//! db = "/home/me/shop.db"         # or: stdio = "mcp-server-sqlite --db-path x.db"
//!                                 # or: upstream = "http://127.0.0.1:8000/mcp"
//! allow_writes = false
//! max_rows = 500
//! max_bytes = 1048576
//! query_timeout = "5s"
//! quiet = false
//! env = ["PGPASSWORD=secret:DBPASS"]                       # --env, for a stdio child
//! upstream_headers = ["Authorization: Bearer secret:TOKEN"] # --upstream-header
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mcp_tunnel_proto::TunnelName;
use url::Url;

/// The parsed config file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The relay's URL.
    pub relay: Option<Url>,
    /// Tunnel name.
    pub name: Option<TunnelName>,
    /// Extra CA certificate (PEM) to trust for the relay.
    pub ca: Option<PathBuf>,
    /// A file holding the agent token (keep it 0600). Preferred over `token`.
    pub token_file: Option<PathBuf>,
    /// The agent token itself (prefer `token_file` or `MCP_AGENT_TOKEN`).
    pub token: Option<String>,
    /// Serve the built-in SQLite tool on this file.
    pub db: Option<PathBuf>,
    /// Run this stdio MCP server.
    pub stdio: Option<String>,
    /// Forward to this local Streamable HTTP MCP server.
    pub upstream: Option<Url>,
    /// Allow writes in the SQLite tool.
    pub allow_writes: Option<bool>,
    /// SQLite tool: most rows per query.
    pub max_rows: Option<usize>,
    /// SQLite tool: most bytes per query result.
    pub max_bytes: Option<usize>,
    /// SQLite tool: per-query time limit (`"5s"`, `"500ms"`).
    #[serde(default, deserialize_with = "duration_opt")]
    pub query_timeout: Option<Duration>,
    /// No line per request.
    pub quiet: Option<bool>,
    /// Environment of the stdio child, `NAME=VALUE` or `NAME=secret:KEY` (like `--env`).
    pub env: Option<Vec<String>>,
    /// Headers sent to the HTTP upstream, `Name: value` (like `--upstream-header`).
    pub upstream_headers: Option<Vec<String>>,
}

/// The variable that moves the agent's config directory (`agent.toml`,
/// `credentials.toml`), e.g. for tests or several agents on one account.
pub const CONFIG_DIR_ENV: &str = "MCP_AGENT_CONFIG_DIR";

/// The agent's config directory: `$MCP_AGENT_CONFIG_DIR`, else the platform's
/// (`~/.config/mcp-agent` on Linux). `None` if neither exists.
pub fn config_dir() -> Option<PathBuf> {
    config_dir_with(&|k| std::env::var(k).ok())
}

/// [`config_dir`] with an injected environment lookup (tests pass a map).
pub fn config_dir_with(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env(CONFIG_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "mcp-agent").map(|d| d.config_dir().to_path_buf())
}

impl AgentFile {
    /// The default location, if the platform has a config dir.
    pub fn default_path() -> Option<PathBuf> {
        config_dir().map(|d| d.join("agent.toml"))
    }

    /// Loads `path`, or the default file if `path` is `None` and it exists.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => match Self::default_path().filter(|p| p.exists()) {
                Some(p) => p,
                None => return Ok(Self::default()),
            },
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses TOML text; errors name the line and column.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            anyhow::anyhow!("line {line}, column {col}: {}", e.message())
        })
    }

    /// The token from `token_file` or `token`.
    pub fn read_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("reading token_file {}", f.display()))?;
            return Ok(Some(t.trim().to_owned()));
        }
        Ok(self.token.clone())
    }
}

fn duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    use serde::Deserialize;
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
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
    fn parses_every_key() {
        let f = AgentFile::parse(
            "relay = \"https://r.example\"\nname = \"shop\"\ndb = \"/x.db\"\nallow_writes = true\nmax_rows = 10\nquery_timeout = \"250ms\"\nquiet = true\n",
        )
        .unwrap();
        assert_eq!(f.name.unwrap().as_str(), "shop");
        assert_eq!(f.query_timeout, Some(Duration::from_millis(250)));
        assert_eq!(f.max_rows, Some(10));
        let f = AgentFile::parse(
            "env = [\"PGPASSWORD=secret:DBPASS\"]\nupstream_headers = [\"Authorization: Bearer secret:T\"]\n",
        )
        .unwrap();
        assert_eq!(f.env.unwrap(), ["PGPASSWORD=secret:DBPASS"]);
        assert_eq!(
            f.upstream_headers.unwrap(),
            ["Authorization: Bearer secret:T"]
        );
    }

    #[test]
    fn config_dir_follows_the_override() {
        let dir = config_dir_with(&|k| (k == CONFIG_DIR_ENV).then(|| "/tmp/x".to_owned()));
        assert_eq!(dir, Some(PathBuf::from("/tmp/x")));
        let dir = config_dir_with(&|k| (k == CONFIG_DIR_ENV).then(String::new));
        assert_ne!(dir, Some(PathBuf::new()), "an empty override is ignored");
    }

    #[test]
    fn rejects_unknown_and_invalid_with_position() {
        let e = format!(
            "{:#}",
            AgentFile::parse("relay = \"https://r\"\nbogus = 1\n").unwrap_err()
        );
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = format!(
            "{:#}",
            AgentFile::parse("name = \"Not Valid\"\n").unwrap_err()
        );
        assert!(e.contains("invalid tunnel name"), "{e}");
        let e = format!(
            "{:#}",
            AgentFile::parse("query_timeout = \"soon\"\n").unwrap_err()
        );
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn token_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "mcpat_x\n").unwrap();
        let f = AgentFile {
            token_file: Some(p),
            token: Some("other".into()),
            ..Default::default()
        };
        assert_eq!(f.read_token().unwrap().as_deref(), Some("mcpat_x"));
    }
}
