//! The relay's TLS identity: static certificate files, or (with `--dev`) a CA
//! and a localhost certificate made with rcgen on first start and reused after.
//!
//! The same certificate serves the HTTPS front and the QUIC endpoint, so an
//! agent trusts the relay exactly as an MCP client does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as TimeDuration, OffsetDateTime};

use crate::state_dir::{StateDir, write_private};

/// Where the relay's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (certificate chain, private key).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A development CA and localhost certificate in the state dir.
    Dev,
    /// Certificates from an ACME CA (see [`crate::acme`]).
    Acme(crate::acme::AcmeSettings),
}

/// A loaded certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Loads (or, in dev mode, creates) the relay's certificate.
pub fn load_identity(source: &TlsSource, state: &StateDir) -> anyhow::Result<Identity> {
    match source {
        TlsSource::Files { cert, key } => load_pem_files(cert, key),
        TlsSource::Dev => ensure_dev_identity(state),
        TlsSource::Acme(_) => bail!("[acme] is not supported yet"),
    }
}

/// Keeps the certificate fresh while the relay runs (ACME renewal, reloaded
/// files); returns when `shutdown` is cancelled.
pub async fn maintain(
    _source: TlsSource,
    _identity: Identity,
    _state: StateDir,
    shutdown: tokio_util::sync::CancellationToken,
) {
    shutdown.cancelled().await;
}

impl Identity {
    /// When the served leaf certificate expires.
    pub fn not_after(&self) -> Option<std::time::SystemTime> {
        let leaf = self.chain.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let secs = cert.validity().not_after.timestamp();
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).ok()?))
    }
}

/// Server config for the HTTPS front (HTTP/2 and HTTP/1.1).
pub fn https_server_config(id: &Identity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .context("the TLS certificate and key do not match or are unsupported")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Server config for the agents' QUIC endpoint, ALPN-pinned; agents present
/// device certificates checked by `client_verifier`.
pub fn quic_server_config(
    id: &Identity,
    client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .context("the TLS certificate and key do not match or are unsupported")?;
    cfg.alpn_protocols = vec![mcp_tunnel_proto::ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

fn load_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?;
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let key_pem =
        std::fs::read(key).with_context(|| format!("reading TLS key {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .with_context(|| format!("parsing TLS key {}", key.display()))?
        .with_context(|| format!("{} holds no PEM private key", key.display()))?;
    Ok(Identity { chain, key })
}

/// Leaf certificates are re-issued when they have less than this left.
const DEV_LEAF_RENEW_BEFORE: TimeDuration = TimeDuration::days(30);
const DEV_LEAF_LIFETIME: TimeDuration = TimeDuration::days(365);
const DEV_CA_LIFETIME: TimeDuration = TimeDuration::days(3650);

fn ensure_dev_identity(state: &StateDir) -> anyhow::Result<Identity> {
    let ca_cert_path = state.dev_ca_cert();
    let ca_key_path = state.path("dev-ca.key");
    let leaf_cert_path = state.path("dev-cert.pem");
    let leaf_key_path = state.path("dev-key.pem");

    let (ca_params, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
            .with_context(|| format!("parsing {}", ca_key_path.display()))?;
        let params = dev_ca_params(OffsetDateTime::now_utc());
        (params, key)
    } else {
        let key = KeyPair::generate().context("generating the dev CA key")?;
        let params = dev_ca_params(OffsetDateTime::now_utc());
        let cert = params
            .self_signed(&key)
            .context("self-signing the dev CA")?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_cert_path, cert.pem())
            .with_context(|| format!("writing {}", ca_cert_path.display()))?;
        // A new CA invalidates any old leaf.
        let _ = std::fs::remove_file(&leaf_cert_path);
        tracing::info!(path = %ca_cert_path.display(), "created development CA");
        (params, key)
    };

    let not_after_path = state.path("dev-cert.not-after");
    if leaf_cert_path.exists() && leaf_key_path.exists() && !leaf_expires_soon(&not_after_path) {
        return load_pem_files(&leaf_cert_path, &leaf_key_path);
    }

    let ca_pem = std::fs::read_to_string(&ca_cert_path)?;
    // Same subject and key as the stored CA certificate, so the chain verifies.
    let issuer = Issuer::new(ca_params, &ca_key);
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcp-relay dev (localhost)");
    params.not_before = now - TimeDuration::hours(1);
    params.not_after = now + DEV_LEAF_LIFETIME;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate()?;
    let leaf = params.signed_by(&leaf_key, &issuer)?;
    std::fs::write(&leaf_cert_path, format!("{}{}", leaf.pem(), ca_pem))
        .with_context(|| format!("writing {}", leaf_cert_path.display()))?;
    write_private(&leaf_key_path, leaf_key.serialize_pem().as_bytes())?;
    std::fs::write(
        &not_after_path,
        params.not_after.unix_timestamp().to_string(),
    )?;
    load_pem_files(&leaf_cert_path, &leaf_key_path)
}

fn dev_ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcp-relay development CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - TimeDuration::hours(1);
    params.not_after = now + DEV_CA_LIFETIME;
    params
}

/// True if the leaf's recorded expiry is unknown or within the renewal window.
fn leaf_expires_soon(not_after_file: &Path) -> bool {
    let Some(not_after) = std::fs::read_to_string(not_after_file)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    else {
        return true;
    };
    not_after - OffsetDateTime::now_utc() < DEV_LEAF_RENEW_BEFORE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let a = load_identity(&TlsSource::Dev, &state).unwrap();
        let b = load_identity(&TlsSource::Dev, &state).unwrap();
        assert_eq!(a.chain[0], b.chain[0], "leaf reused on second start");
        assert_eq!(a.chain.len(), 2, "chain carries the CA");
        https_server_config(&a).unwrap();
        let ca = crate::devices::DeviceCa::load_or_create(&state).unwrap();
        let v = crate::devices::verifier::DeviceClientVerifier::new(
            std::slice::from_ref(ca.cert_der()),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        quic_server_config(&a, Arc::new(v)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("dev-ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_files_say_which() {
        let err = load_pem_files(Path::new("/nonexistent/c.pem"), Path::new("/x")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/c.pem"));
    }
}
