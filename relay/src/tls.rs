//! The relay's TLS identity: static certificate files (reloaded when they
//! change on disk), certificates from an ACME CA ([`crate::acme`]), or (with
//! `--dev`) a CA and a localhost certificate made with rcgen on first start
//! and reused after.
//!
//! The same certificate serves the HTTPS front and the QUIC endpoint, so an
//! agent trusts the relay exactly as an MCP client does. Both server configs
//! take their certificate from one swappable slot in [`Identity`]: a renewed
//! or reloaded certificate is used by the next handshake on either, and
//! established connections are untouched.
//!
//! With ACME and subdomain routing the HTTPS front also serves one
//! certificate per claimed tunnel name (`NAME.<public host>`, see
//! [`crate::acme::names`]): [`HttpsAcceptor`] reads the ClientHello first
//! and, for a claimed name without a certificate yet, waits (bounded) for
//! its first one before finishing the handshake. QUIC only ever serves the
//! main certificate: agents dial the relay's own host name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::acme::ACME_TLS_ALPN;
use crate::acme::names::{NameOrders, Subdomains};
use crate::state_dir::{StateDir, write_private};

/// How often certificate files are checked for changes (certbot renewals).
const FILES_POLL: Duration = Duration::from_secs(5);

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

/// The relay's certificate: what handshakes are served right now. Clones
/// share one slot, so [`maintain`] swapping it reaches every server config
/// made from any clone.
#[derive(Debug, Clone)]
pub struct Identity {
    slot: Arc<Slot>,
}

#[derive(Debug)]
struct Slot {
    current: RwLock<Arc<Served>>,
    /// TLS-ALPN-01 challenge certificates by (lowercase) name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Certificates of tunnel names by (lowercase) host name, served on
    /// HTTPS to clients asking for that name.
    names: RwLock<HashMap<String, Arc<Served>>>,
    /// Orders certificates for tunnel names (ACME with subdomains only).
    on_demand: OnceLock<Arc<NameOrders>>,
    /// ACME identities negotiate `acme-tls/1` on the HTTPS port.
    answers_acme: bool,
}

/// One served certificate and what the rest of the relay asks about it.
#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    validity: Option<(SystemTime, SystemTime)>,
    serial: String,
    /// The leaf's DNS names (lowercase).
    dns_names: Vec<String>,
    /// The temporary self-signed certificate served until ACME delivers.
    provisional: bool,
}

/// Loads (or, in dev mode, creates) the relay's certificate. With ACME it
/// serves the stored certificate if one is still valid, else a temporary
/// self-signed one; [`maintain`] then orders the real one.
pub fn load_identity(source: &TlsSource, state: &StateDir) -> anyhow::Result<Identity> {
    match source {
        TlsSource::Files { cert, key } => {
            let (chain, key) = load_pem_files(cert, key)?;
            Identity::new(chain, key, false, false)
        }
        TlsSource::Dev => {
            let (chain, key) = ensure_dev_identity(state)?;
            Identity::new(chain, key, false, false)
        }
        TlsSource::Acme(settings) => {
            // A stored certificate whose key does not match (an edited or
            // damaged file) is as good as none: order a new one.
            let stored = crate::acme::load_stored(settings).and_then(|s| match s {
                Some((chain, key)) => Identity::new(chain, key, false, true).map(Some),
                None => Ok(None),
            });
            let id = match stored {
                Ok(Some(id)) => {
                    tracing::info!(
                        domains = ?settings.domains,
                        serial = %id.serial(),
                        not_after = %id.not_after().map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default(),
                        "ACME: serving the stored certificate"
                    );
                    id
                }
                stored => {
                    if let Err(e) = stored {
                        tracing::warn!(error = %format!("{e:#}"), "ACME: the stored certificate is unusable; a new one will be ordered");
                    }
                    let (chain, key) = provisional_certificate(&settings.domains)?;
                    tracing::info!(
                        domains = ?settings.domains,
                        "ACME: no certificate yet; serving a temporary self-signed one until the CA issues one"
                    );
                    Identity::new(chain, key, true, true)?
                }
            };
            // Tunnel names' certificates, served from the first handshake
            // on; `maintain` drops those of names no longer claimed.
            for (host, (chain, key)) in crate::acme::names::load_stored(settings) {
                if let Err(e) = id.install_name(&host, chain, key) {
                    tracing::warn!(host = %host, error = %format!("{e:#}"), "ACME: a stored tunnel-name certificate does not load; a new one is ordered when asked for");
                }
            }
            Ok(id)
        }
    }
}

/// Keeps the certificate fresh while the relay runs (ACME issuance and
/// renewal, certificate files reloaded when they change); returns when
/// `shutdown` is cancelled. With ACME and `subdomains` (the relay's tunnel
/// subdomains and which names are claimed) it also gets and renews a
/// certificate per claimed tunnel name, on demand.
pub async fn maintain(
    source: TlsSource,
    identity: Identity,
    _state: StateDir,
    subdomains: Option<Subdomains>,
    shutdown: CancellationToken,
) {
    match source {
        TlsSource::Acme(settings) => match subdomains {
            Some(subdomains) if settings.name_orders_per_hour > 0 => {
                tokio::join!(
                    crate::acme::keep_fresh(settings.clone(), identity.clone(), shutdown.clone()),
                    crate::acme::names::keep_fresh(settings, identity, subdomains, shutdown),
                );
            }
            _ => {
                // No per-name certificates without subdomain routing.
                for (host, _) in identity.names() {
                    identity.remove_name(&host);
                }
                crate::acme::keep_fresh(settings, identity, shutdown).await
            }
        },
        TlsSource::Files { cert, key } => watch_files(&cert, &key, &identity, shutdown).await,
        TlsSource::Dev => shutdown.cancelled().await,
    }
}

impl Identity {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provisional: bool,
        answers_acme: bool,
    ) -> anyhow::Result<Self> {
        let served = Served::new(chain, key, provisional)?;
        Ok(Self {
            slot: Arc::new(Slot {
                current: RwLock::new(Arc::new(served)),
                challenges: RwLock::new(HashMap::new()),
                names: RwLock::new(HashMap::new()),
                on_demand: OnceLock::new(),
                answers_acme,
            }),
        })
    }

    /// When the served leaf certificate expires.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current().validity.map(|(_, na)| na)
    }

    /// The served leaf's validity period (`not_before`, `not_after`).
    pub fn validity(&self) -> Option<(SystemTime, SystemTime)> {
        self.current().validity
    }

    /// True if the served certificate is a real one (not the temporary
    /// certificate of an ACME relay still waiting for its first) and is
    /// within its validity period now.
    pub fn is_valid_now(&self) -> bool {
        let served = self.current();
        let now = SystemTime::now();
        !served.provisional
            && served
                .validity
                .is_some_and(|(nb, na)| nb <= now && now < na)
    }

    /// True while an ACME relay serves its temporary self-signed
    /// certificate (no certificate from the CA yet).
    pub fn is_provisional(&self) -> bool {
        self.current().provisional
    }

    /// The served leaf's serial number (hex), for logs.
    pub fn serial(&self) -> String {
        self.current().serial.clone()
    }

    /// The served chain, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().key.cert.clone()
    }

    /// Serves `chain`/`key` from the next handshake on. Fails (and keeps
    /// the old one) if they do not parse or match.
    pub(crate) fn install(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provisional: bool,
    ) -> anyhow::Result<()> {
        let served = Arc::new(Served::new(chain, key, provisional)?);
        *self.slot.current.write().unwrap_or_else(|e| e.into_inner()) = served;
        Ok(())
    }

    /// Answers TLS-ALPN-01 validation connections for `name` with `cert`.
    pub(crate) fn set_challenge(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.slot
            .challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), cert);
    }

    /// Stops answering validation connections for `name`.
    pub(crate) fn clear_challenge(&self, name: &str) {
        self.slot
            .challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    /// True if the main certificate names `host` (lowercase).
    pub(crate) fn main_covers(&self, host: &str) -> bool {
        self.current().dns_names.iter().any(|n| n == host)
    }

    /// Serves `chain`/`key` to HTTPS clients asking for `host` (a tunnel
    /// name's certificate). Fails if they do not parse or match.
    pub(crate) fn install_name(
        &self,
        host: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<()> {
        let served = Arc::new(Served::new(chain, key, false)?);
        self.slot
            .names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), served);
        Ok(())
    }

    /// Stops serving `host`'s own certificate (its clients get the main one).
    pub(crate) fn remove_name(&self, host: &str) -> bool {
        self.slot
            .names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host)
            .is_some()
    }

    /// The validity of the certificate served for `host`: `None` if it has
    /// none of its own, `Some(None)` if its validity is unreadable.
    pub(crate) fn name_validity(&self, host: &str) -> Option<Option<(SystemTime, SystemTime)>> {
        self.slot
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .map(|s| s.validity)
    }

    /// Every host with its own certificate, with that certificate's validity.
    pub(crate) fn names(&self) -> Vec<(String, Option<(SystemTime, SystemTime)>)> {
        self.slot
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(h, s)| (h.clone(), s.validity))
            .collect()
    }

    /// Lets HTTPS handshakes for tunnel names wait for `orders` (once).
    pub(crate) fn set_name_orders(&self, orders: Arc<NameOrders>) {
        if self.slot.on_demand.set(orders).is_err() {
            tracing::warn!("per-name certificates were already set up; ignoring a second setup");
        }
    }

    /// For a client asking for `host`: if it is a claimed tunnel name
    /// without a certificate yet, orders one and waits for it (bounded).
    async fn await_name(&self, host: &str) {
        if let Some(orders) = self.slot.on_demand.get() {
            orders.await_certificate(self, host).await;
        }
    }

    fn current(&self) -> Arc<Served> {
        self.slot.current()
    }
}

impl Slot {
    fn current(&self) -> Arc<Served> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Served {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        provisional: bool,
    ) -> anyhow::Result<Self> {
        let key = certified_key(chain, key)?;
        let leaf = key.cert.first().context("empty certificate chain")?;
        let validity = leaf_validity(leaf);
        let serial = x509_parser::parse_x509_certificate(leaf)
            .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
            .unwrap_or_default();
        let dns_names = leaf_dns_names(leaf);
        Ok(Self {
            key: Arc::new(key),
            validity,
            serial,
            dns_names,
            provisional,
        })
    }
}

/// Picks the certificate for an HTTPS handshake: the challenge certificate
/// for an ACME validation connection (ALPN exactly `acme-tls/1`, RFC 8737),
/// the tunnel name's own certificate for a client asking for a name that
/// has one, the served one otherwise.
#[derive(Debug)]
struct HttpsResolver(Arc<Slot>);

impl ResolvesServerCert for HttpsResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.0.answers_acme && is_acme_validation(&hello) {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .0
                .challenges
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        if let Some(sni) = hello.server_name() {
            let names = self.0.names.read().unwrap_or_else(|e| e.into_inner());
            if !names.is_empty()
                && let Some(served) = names.get(&sni.to_ascii_lowercase())
            {
                return Some(served.key.clone());
            }
        }
        Some(self.0.current().key.clone())
    }
}

/// Accepts the HTTPS front's TLS connections. Reads the ClientHello first
/// so that a client asking for a claimed tunnel name whose certificate is
/// being ordered waits for it (up to [`crate::acme::names::NAME_WAIT`])
/// instead of getting the main certificate, which does not cover its name.
/// TLS-ALPN-01 validations never wait.
#[derive(Debug, Clone)]
pub struct HttpsAcceptor {
    config: Arc<rustls::ServerConfig>,
    identity: Identity,
}

impl HttpsAcceptor {
    /// An acceptor for `identity`'s certificates with `acceptor`'s config
    /// (from [`https_server_config`] for the same identity).
    pub fn new(acceptor: tokio_rustls::TlsAcceptor, identity: Identity) -> Self {
        Self {
            config: acceptor.config().clone(),
            identity,
        }
    }

    /// Runs the server handshake on `io`. `handshake_timeout` bounds reading
    /// the ClientHello and, separately, finishing the handshake; waiting for
    /// a tunnel name's first certificate comes between them.
    pub async fn accept<IO>(
        &self,
        io: IO,
        handshake_timeout: Duration,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let timed_out =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
        let lazy = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let start = tokio::time::timeout(handshake_timeout, lazy)
            .await
            .map_err(|_| timed_out())??;
        let host = {
            let hello = start.client_hello();
            if is_acme_validation(&hello) {
                None
            } else {
                hello.server_name().map(str::to_ascii_lowercase)
            }
        };
        if let Some(host) = host {
            self.identity.await_name(&host).await;
        }
        tokio::time::timeout(handshake_timeout, start.into_stream(self.config.clone()))
            .await
            .map_err(|_| timed_out())?
    }
}

/// The QUIC endpoint's certificate: always the served one (validation
/// happens over TCP).
#[derive(Debug)]
struct QuicResolver(Arc<Slot>);

impl ResolvesServerCert for QuicResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

fn is_acme_validation(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut offered| {
        offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
    })
}

/// Server config for the HTTPS front (HTTP/2 and HTTP/1.1; with ACME also
/// `acme-tls/1`, last so it is only chosen when it is all a client offers —
/// the front closes such connections after the handshake).
pub fn https_server_config(id: &Identity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(HttpsResolver(id.slot.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if id.slot.answers_acme {
        cfg.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
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
        .with_cert_resolver(Arc::new(QuicResolver(id.slot.clone())));
    cfg.alpn_protocols = vec![mcp_tunnel_proto::ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// A chain and key checked to belong together, on the process's provider.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<CertifiedKey> {
    if chain.is_empty() {
        bail!("the certificate chain is empty");
    }
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(chain, key, &provider)
        .context("the TLS certificate and key do not match or are unsupported")
}

/// The leaf's validity period.
pub(crate) fn leaf_validity(leaf: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let at = |t: i64| Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?));
    Some((
        at(cert.validity().not_before.timestamp())?,
        at(cert.validity().not_after.timestamp())?,
    ))
}

/// The leaf's DNS names (subjectAltName), lowercase.
pub(crate) fn leaf_dns_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// A self-signed certificate for `domains`, served by an ACME relay until
/// its first certificate arrives, so it starts and can answer the challenge.
fn provisional_certificate(domains: &[String]) -> anyhow::Result<ChainAndKey> {
    let mut params =
        CertificateParams::new(domains.to_vec()).context("building the temporary certificate")?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        "mcp-relay temporary certificate (waiting for the ACME CA)",
    );
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::hours(1);
    params.not_after = now
        + TimeDuration::try_from(crate::acme::PROVISIONAL_LIFETIME)
            .unwrap_or(TimeDuration::days(7));
    let key = KeyPair::generate().context("generating the temporary certificate's key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the temporary certificate")?;
    Ok((
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    ))
}

/// Reloads the certificate files whenever they change (a certbot renewal
/// replaces them), keeping the served certificate if the new files do not
/// load (yet: the key may be written after the certificate).
async fn watch_files(cert: &Path, key: &Path, identity: &Identity, shutdown: CancellationToken) {
    let mut seen = files_stamp(cert, key);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FILES_POLL) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = files_stamp(cert, key);
        if now == seen {
            continue;
        }
        match reload_files(cert, key, identity) {
            Ok(changed) => {
                seen = now;
                if changed {
                    tracing::info!(
                        cert = %cert.display(),
                        serial = %identity.serial(),
                        not_after = %identity.not_after().map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default(),
                        "TLS certificate files changed; serving the new certificate"
                    );
                }
            }
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "TLS certificate files changed but do not load; still serving the previous certificate (retrying)"
            ),
        }
    }
}

/// Loads the files into `identity`; `Ok(false)` if the leaf is unchanged.
fn reload_files(cert: &Path, key: &Path, identity: &Identity) -> anyhow::Result<bool> {
    let (chain, key) = load_pem_files(cert, key)?;
    if identity.chain() == chain {
        return Ok(false);
    }
    identity.install(chain, key, false)?;
    Ok(true)
}

type FileStamp = Option<(SystemTime, u64)>;

fn files_stamp(cert: &Path, key: &Path) -> [FileStamp; 2] {
    [cert, key].map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
}

type ChainAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_pem_files(cert: &Path, key: &Path) -> anyhow::Result<ChainAndKey> {
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
    Ok((chain, key))
}

/// Leaf certificates are re-issued when they have less than this left.
const DEV_LEAF_RENEW_BEFORE: TimeDuration = TimeDuration::days(30);
const DEV_LEAF_LIFETIME: TimeDuration = TimeDuration::days(365);
const DEV_CA_LIFETIME: TimeDuration = TimeDuration::days(3650);

fn ensure_dev_identity(state: &StateDir) -> anyhow::Result<ChainAndKey> {
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

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[test]
    fn dev_identity_is_created_once_and_reused() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let a = load_identity(&TlsSource::Dev, &state).unwrap();
        let b = load_identity(&TlsSource::Dev, &state).unwrap();
        assert_eq!(a.chain()[0], b.chain()[0], "leaf reused on second start");
        assert_eq!(a.chain().len(), 2, "chain carries the CA");
        assert!(a.is_valid_now());
        assert!(!a.is_provisional());
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

    /// A self-signed certificate for `name` as (cert PEM, key PEM).
    fn self_signed(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn acme_settings(state: &Path) -> crate::acme::AcmeSettings {
        let cfg: crate::acme::AcmeConfig = toml::from_str(
            "accept_terms = true\ndirectory_url = \"https://ca.test/dir\"\ndomains = [\"relay.test\"]",
        )
        .unwrap();
        cfg.settle(None, state).unwrap()
    }

    #[test]
    fn acme_relay_starts_provisional_and_reuses_a_stored_certificate() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let settings = acme_settings(dir.path());
        let source = TlsSource::Acme(settings.clone());
        let first = load_identity(&source, &state).unwrap();
        assert!(first.is_provisional());
        assert!(
            !first.is_valid_now(),
            "a temporary certificate is not a real one"
        );
        assert_eq!(leaf_dns_names(&first.chain()[0]), ["relay.test"]);

        let (cert, key) = self_signed("relay.test");
        std::fs::create_dir_all(&settings.dir).unwrap();
        std::fs::write(settings.certificate_file(), format!("{cert}{key}")).unwrap();
        let second = load_identity(&source, &state).unwrap();
        assert!(!second.is_provisional());
        assert!(second.is_valid_now());

        // A stored certificate for other names is not used.
        let (cert, key) = self_signed("other.test");
        std::fs::write(settings.certificate_file(), format!("{cert}{key}")).unwrap();
        assert!(load_identity(&source, &state).unwrap().is_provisional());
    }

    /// Accepts any server certificate: these tests look at which one is served.
    #[derive(Debug)]
    struct AnyCert;

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// An in-memory handshake: the leaf the server presented and the ALPN chosen.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), rustls::Error> {
        let mut ccfg = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        ccfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut client = rustls::ClientConnection::new(
            Arc::new(ccfg),
            ServerName::try_from(sni.to_owned()).unwrap(),
        )?;
        let mut server = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets()?;
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        let leaf = client.peer_certificates().unwrap()[0].clone().into_owned();
        Ok((leaf, client.alpn_protocol().map(<[u8]>::to_vec)))
    }

    #[test]
    fn challenge_connections_get_the_challenge_certificate_and_swaps_apply_at_once() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let id = load_identity(&TlsSource::Acme(acme_settings(dir.path())), &state).unwrap();
        let cfg = https_server_config(&id).unwrap();
        let served = id.chain()[0].clone();

        let (leaf, alpn) = handshake(cfg.clone(), "relay.test", &[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(leaf, served);
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        // No challenge pending: a validation connection fails.
        assert!(handshake(cfg.clone(), "relay.test", &[ACME_TLS_ALPN]).is_err());
        let challenge = crate::acme::challenge_certificate("relay.test", &[1; 32]).unwrap();
        id.set_challenge("Relay.Test", challenge.clone());
        let (leaf, alpn) = handshake(cfg.clone(), "relay.test", &[ACME_TLS_ALPN]).unwrap();
        assert_eq!(leaf, challenge.cert[0]);
        assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
        // A client offering acme-tls/1 among others is a normal client.
        let (leaf, alpn) = handshake(cfg.clone(), "relay.test", &[b"h2", ACME_TLS_ALPN]).unwrap();
        assert_eq!(leaf, served);
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        id.clear_challenge("relay.test");
        assert!(handshake(cfg.clone(), "relay.test", &[ACME_TLS_ALPN]).is_err());

        // The swap reaches the config built before it (and its clones).
        let (cert, key) = self_signed("relay.test");
        let (chain, key) = parse_pair(&cert, &key);
        id.clone().install(chain.clone(), key, false).unwrap();
        let (leaf, _) = handshake(cfg, "relay.test", &[b"http/1.1"]).unwrap();
        assert_eq!(leaf, chain[0]);
        assert!(!id.is_provisional());
    }

    #[test]
    fn tunnel_names_are_served_their_own_certificate() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let settings = acme_settings(dir.path());
        // Stored: one for its own name, one whose file name does not match.
        std::fs::create_dir_all(settings.names_dir()).unwrap();
        let (cert, key) = self_signed("shop.relay.test");
        std::fs::write(
            settings.names_dir().join("shop.pem"),
            format!("{cert}{key}"),
        )
        .unwrap();
        let (other, other_key) = self_signed("cafe.relay.test");
        std::fs::write(
            settings.names_dir().join("bar.pem"),
            format!("{other}{other_key}"),
        )
        .unwrap();
        let id = load_identity(&TlsSource::Acme(settings), &state).unwrap();
        assert_eq!(
            id.names().into_iter().map(|(h, _)| h).collect::<Vec<_>>(),
            ["shop.relay.test"]
        );
        let cfg = https_server_config(&id).unwrap();
        let main = id.chain()[0].clone();
        let shop = parse_pair(&cert, &key).0[0].clone();

        let (leaf, _) = handshake(cfg.clone(), "shop.relay.test", &[b"h2"]).unwrap();
        assert_eq!(leaf, shop);
        let (leaf, _) = handshake(cfg.clone(), "nosuch.relay.test", &[b"h2"]).unwrap();
        assert_eq!(leaf, main);
        let (leaf, _) = handshake(cfg.clone(), "relay.test", &[b"h2"]).unwrap();
        assert_eq!(leaf, main);
        assert!(id.name_validity("shop.relay.test").flatten().is_some());
        assert!(id.name_validity("nosuch.relay.test").is_none());

        // Installed at run time, and dropped again.
        let (cafe, cafe_key) = self_signed("cafe.relay.test");
        let (chain, key) = parse_pair(&cafe, &cafe_key);
        id.install_name("Cafe.Relay.Test", chain.clone(), key)
            .unwrap();
        let (leaf, _) = handshake(cfg.clone(), "cafe.relay.test", &[b"h2"]).unwrap();
        assert_eq!(leaf, chain[0]);
        assert!(id.remove_name("shop.relay.test"));
        let (leaf, _) = handshake(cfg, "shop.relay.test", &[b"h2"]).unwrap();
        assert_eq!(leaf, main);
        assert!(!id.main_covers("shop.relay.test"));
        assert!(id.main_covers("relay.test"));
    }

    #[test]
    fn static_files_are_reloaded_when_they_change() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (cert, key) = self_signed("relay.test");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let source = TlsSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
        };
        let id = load_identity(&source, &state).unwrap();
        assert!(
            !reload_files(&cert_path, &key_path, &id).unwrap(),
            "unchanged"
        );

        // Half-way through a renewal (new certificate, old key): keep serving the old one.
        let (cert2, key2) = self_signed("relay.test");
        std::fs::write(&cert_path, &cert2).unwrap();
        assert!(reload_files(&cert_path, &key_path, &id).is_err());
        assert_eq!(id.chain(), parse_pair(&cert, &key).0);
        std::fs::write(&key_path, &key2).unwrap();
        assert!(reload_files(&cert_path, &key_path, &id).unwrap());
        assert_eq!(id.chain(), parse_pair(&cert2, &key2).0);
    }

    fn parse_pair(cert: &str, key: &str) -> ChainAndKey {
        let chain = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        (chain, key)
    }
}
