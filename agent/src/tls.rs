//! How the agent trusts the relay: the platform's roots (via
//! rustls-platform-verifier), plus any CA given with `--ca` (a dev relay's
//! `dev-ca.pem`, or a private CA).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls_pki_types::CertificateDer;

/// Reads every certificate in a PEM file.
pub fn load_ca(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing CA file {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// A rustls client config trusting the platform roots and `extra` roots.
pub fn client_config(
    extra: Vec<CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    client_config_with_auth(extra, alpn, None)
}

/// [`client_config`], presenting a client certificate (mutual TLS) when given.
pub fn client_config_with_auth(
    extra: Vec<CertificateDer<'static>>,
    alpn: &[&[u8]],
    client_auth: Option<(
        Vec<CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
    }
    .context("setting up certificate verification")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut cfg = match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the device certificate and key do not match; run `mcp-agent login`")?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(cfg)
}
