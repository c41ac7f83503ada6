//! `mcp-relay check-config`: everything `serve` would trip over at start,
//! found without starting — beyond what parsing and [`Config::resolve`]
//! already refuse.

use std::path::Path;

use crate::config::{Config, keyed};
use crate::tls::TlsSource;

/// What a passing check found.
#[derive(Debug)]
pub struct Report {
    /// One line about the configuration.
    pub summary: String,
    /// Things that work but are probably not meant.
    pub warnings: Vec<String>,
}

/// Checks certificate files, the state directory, policy files and the
/// addresses. Errors are [`crate::config::KeyError`]s naming the key.
pub fn check(config: &Config) -> anyhow::Result<Report> {
    let mut warnings = Vec::new();
    let tls = match &config.tls {
        TlsSource::Files { cert, key } => {
            readable(cert, "tls_cert")?;
            readable(key, "tls_key")?;
            let scratch =
                std::env::temp_dir().join(format!("mcp-relay-check-{}", std::process::id()));
            let loaded = crate::state_dir::StateDir::open(&scratch)
                .and_then(|s| crate::tls::load_identity(&config.tls, &s));
            let _ = std::fs::remove_dir_all(&scratch);
            let identity = loaded.map_err(|e| {
                let msg = format!("{e:#}");
                if msg.contains("do not match") || msg.contains("KeyMismatch") {
                    keyed(
                        "tls_key",
                        format!("{msg} (is tls_key the key of tls_cert?)"),
                    )
                } else {
                    keyed("tls_cert", msg)
                }
            })?;
            crate::tls::https_server_config(&identity).map_err(|e| {
                keyed(
                    "tls_key",
                    format!("{e:#} (is tls_key the key of tls_cert?)"),
                )
            })?;
            match identity.not_after() {
                Some(t) if t < std::time::SystemTime::now() => {
                    return Err(keyed(
                        "tls_cert",
                        format!("the certificate in {} has expired", cert.display()),
                    ));
                }
                Some(t) => {
                    let days = t
                        .duration_since(std::time::SystemTime::now())
                        .map(|d| d.as_secs() / 86_400)
                        .unwrap_or(0);
                    if days < 14 {
                        warnings.push(format!("the certificate expires in {days} days"));
                    }
                }
                None => {}
            }
            format!("certificate files {}", cert.display())
        }
        TlsSource::Dev => "development CA (--dev)".to_owned(),
        TlsSource::Acme(a) => {
            if config.https.port() != 443 {
                warnings.push(format!(
                    "[acme] validates over TCP port 443 (TLS-ALPN-01), but https listens on port {}: forward 443 to it, or listen on 443",
                    config.https.port()
                ));
            }
            format!("ACME ({})", a.directory_url)
        }
    };
    state_dir_usable(&config.state_dir)?;
    for f in &config.policy_files {
        readable(f, "policy.files")?;
    }
    crate::policy::PolicyState::load(&config.policy_files)
        .map_err(|e| keyed("policy.files", format!("{e:#}")))?;
    if let Some(o) = &config.oidc
        && let Some(ca) = &o.ca_file
    {
        readable(ca, "oidc.ca_file")?;
    }
    if let Some(m) = config.metrics
        && !m.ip().is_loopback()
    {
        warnings.push(format!(
            "metrics listens on {m}, not a loopback address: keep it off the internet (firewall) or use 127.0.0.1"
        ));
    }
    if config.no_auth {
        warnings.push("no_auth: tunnels accept requests WITHOUT an access token".to_owned());
    }
    if let Some(u) = &config.public_url
        && u.scheme() != "https"
        && !config.dev
    {
        warnings.push(format!(
            "public_url {u} is not https: MCP clients refuse OAuth over plain http"
        ));
    }
    Ok(Report {
        summary: format!(
            "config OK: https {}, quic {}{}{}, state {}, TLS from {tls}, {} admin policy file(s)",
            config.https,
            config.quic,
            config
                .http
                .map(|h| format!(", http {h}"))
                .unwrap_or_default(),
            config
                .metrics
                .map(|m| format!(", metrics {m}"))
                .unwrap_or_default(),
            config.state_dir.display(),
            config.policy_files.len(),
        ),
        warnings,
    })
}

fn readable(path: &Path, key: &str) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| keyed(key, format!("cannot read {}: {e}", path.display())))
}

/// The state dir exists (or can be made) and takes writes.
fn state_dir_usable(dir: &Path) -> anyhow::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => break,
        };
    }
    if existing.exists() && !existing.is_dir() {
        return Err(keyed(
            "state",
            format!("{} is not a directory", existing.display()),
        ));
    }
    let probe = existing.join(format!(".mcp-relay-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(keyed(
            "state",
            format!(
                "cannot write in {} ({e}); the relay's user must own its state directory",
                existing.display()
            ),
        )),
    }
}
