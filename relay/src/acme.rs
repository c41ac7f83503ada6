//! Automatic certificates from an ACME CA (RFC 8555): Let's Encrypt by
//! default, any directory URL by configuration.
//!
//! The relay answers the TLS-ALPN-01 challenge (RFC 8737) on its own HTTPS
//! port, so nothing else has to listen on port 80:
//!
//! ```text
//!  start ── stored certificate fresh? ──yes──> serve it
//!                 │ no
//!                 └─> serve a temporary self-signed one
//!  keep_fresh loop: when due (a third of the lifetime left, or renew_before)
//!    account (stored, else created) → order → per name: challenge certificate
//!    into the served Identity → "ready" → CA connects with ALPN acme-tls/1 →
//!    order ready → CSR with a new key → certificate → stored (0600) → swapped in
//!  failure: logged with what to check, retried with backoff (rate limits: after
//!  the CA's Retry-After); the relay keeps serving what it has.
//! ```
//!
//! State lives in `<state>/acme/<directory host>-<hash>/` so switching CA
//! (staging → production) never reuses the other CA's account or certificate:
//! `account.json` (the account key) and `certificate.pem` (chain, then key),
//! both mode 0600 and written atomically.
//!
//! With `subdomains = true` each claimed tunnel name also gets its own
//! certificate for `NAME.<public host>`, ordered on demand by the same
//! account and kept in `names/NAME.pem` beside the main one ([`names`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::state_dir::write_private;
use crate::tls::Identity;

pub mod names;

/// Let's Encrypt's production directory, the default `directory_url`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One attempt (account, order, validation, issuance) gives up after this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the CA may take to validate all names of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the CA may take to issue once the CSR is sent.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of each HTTP request to the CA.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body accepted from the CA (a chain is a few KiB).
const MAX_RESPONSE_BODY: usize = 1 << 20;
/// First retry after a failed attempt; doubled per failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between two failed attempts.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// A rate limit without a `Retry-After` is retried after this.
const RATE_LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(3600);
/// The renewal loop wakes at least this often, so a suspended machine or a
/// stepped clock cannot make it oversleep the renewal.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Life of the temporary self-signed certificate served before the first issuance.
pub(crate) const PROVISIONAL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default of `name_orders_per_hour`: per-name orders (first certificates and
/// renewals) in any hour. Let's Encrypt allows 300 new orders per 3 hours
/// per account, so the default leaves room for the relay's own certificate.
pub const DEFAULT_NAME_ORDERS_PER_HOUR: u32 = 50;

/// `[acme]` in relay.toml: get and renew the relay's certificate from an ACME CA.
///
/// ```toml
/// public_url = "https://relay.example.com"
/// [acme]
/// accept_terms = true
/// contact = ["ops@example.com"]
/// ```
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL (default: Let's Encrypt production,
    /// `https://acme-v02.api.letsencrypt.org/directory`; its staging CA is
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`).
    pub directory_url: Option<Url>,
    /// Contact email addresses for the ACME account (the CA's expiry and
    /// policy notices), e.g. `["ops@example.com"]`. Optional.
    pub contact: Option<Vec<String>>,
    /// The DNS names the certificate covers (default: the host of
    /// `public_url`). Each must resolve (A/AAAA) to this relay, whose HTTPS
    /// listener must be reachable on TCP port 443. No wildcards.
    pub domains: Option<Vec<String>>,
    /// An extra CA certificate (PEM) trusted for the directory's HTTPS
    /// (a private ACME CA, or a test CA such as pebble).
    pub ca_file: Option<PathBuf>,
    /// Renew when the certificate has less than this left, e.g. `"30d"`
    /// (default: when a third of its lifetime is left - 30 days for a 90-day
    /// certificate).
    pub renew_before: Option<String>,
    /// You agree to the CA's terms of service (Let's Encrypt:
    /// <https://letsencrypt.org/repository/>). Must be `true`.
    pub accept_terms: Option<bool>,
    /// With `subdomains = true`: at most this many certificate orders for
    /// tunnel names (`NAME.<public host>`, first certificates and renewals
    /// together) in any hour (default 50). Only claimed names are ever
    /// ordered; `0` turns per-name certificates off (then subdomains need
    /// a wildcard certificate).
    pub name_orders_per_hour: Option<u32>,
}

/// `[acme]`, checked, with defaults applied.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory_url: Url,
    /// `mailto:` contact URIs.
    pub contact: Vec<String>,
    /// DNS names the certificate covers (lowercase, at least one).
    pub domains: Vec<String>,
    /// The extra CA (PEM file) trusted for the directory.
    pub ca_file: Option<PathBuf>,
    /// Fixed renewal margin; `None`: a third of the lifetime.
    pub renew_before: Option<Duration>,
    /// Where this directory's account and certificate are kept.
    pub dir: PathBuf,
    /// Orders for tunnel names allowed per hour; 0: none.
    pub name_orders_per_hour: u32,
}

impl AcmeConfig {
    /// Checks the section against the rest of the configuration.
    pub fn settle(
        self,
        public_url: Option<&Url>,
        state_dir: &Path,
    ) -> anyhow::Result<AcmeSettings> {
        if self.accept_terms != Some(true) {
            bail!(
                "accept_terms = true is required: it tells the CA you agree to its terms of service (Let's Encrypt: https://letsencrypt.org/repository/)"
            );
        }
        let directory_url = match self.directory_url {
            Some(u) => u,
            None => Url::parse(LETS_ENCRYPT).context("the built-in Let's Encrypt URL")?,
        };
        if directory_url.scheme() != "https" || directory_url.host().is_none() {
            bail!("directory_url must be an https URL (RFC 8555), got {directory_url}");
        }
        let contact = self
            .contact
            .unwrap_or_default()
            .iter()
            .map(|c| contact_uri(c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let domains = match self.domains {
            Some(d) if d.is_empty() => {
                bail!(
                    "domains is empty; list the DNS names, or leave it out to use public_url's host"
                )
            }
            Some(d) => d,
            None => {
                let Some(url) = public_url else {
                    bail!("set public_url (its host is the certificate's name) or acme.domains");
                };
                match url.host() {
                    Some(url::Host::Domain(h)) => vec![h.to_owned()],
                    _ => bail!(
                        "public_url's host ({url}) is not a DNS name; ACME certificates need one: set acme.domains"
                    ),
                }
            }
        };
        let domains = domains
            .iter()
            .map(|d| check_domain(d))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(ca) = &self.ca_file {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
            let certs = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing ca_file {}", ca.display()))?;
            if certs.is_empty() {
                bail!("ca_file {} holds no PEM certificate", ca.display());
            }
        }
        let renew_before = match &self.renew_before {
            Some(s) => {
                let d = humantime::parse_duration(s).with_context(|| {
                    format!("renew_before = {s:?} is not a duration (e.g. \"30d\", \"12h\")")
                })?;
                if d.is_zero() {
                    bail!("renew_before must be longer than zero");
                }
                Some(d)
            }
            None => None,
        };
        let dir = state_dir.join("acme").join(directory_label(&directory_url));
        Ok(AcmeSettings {
            directory_url,
            contact,
            domains,
            ca_file: self.ca_file,
            renew_before,
            dir,
            name_orders_per_hour: self
                .name_orders_per_hour
                .unwrap_or(DEFAULT_NAME_ORDERS_PER_HOUR),
        })
    }
}

impl AcmeSettings {
    /// The stored account credentials (contain the account key).
    pub fn account_file(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// The stored certificate chain and its key, in one file so they change together.
    pub fn certificate_file(&self) -> PathBuf {
        self.dir.join("certificate.pem")
    }

    /// Where the certificates of tunnel names are kept.
    pub fn names_dir(&self) -> PathBuf {
        self.dir.join("names")
    }
}

/// Why getting a certificate failed; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The directory could not be fetched.
    #[error(
        "cannot reach the ACME directory {url}: {detail}. Check acme.directory_url, that this host can reach it over HTTPS (firewall, proxy), and acme.ca_file if the CA uses a private root"
    )]
    Directory {
        /// The directory URL.
        url: String,
        /// The underlying error.
        detail: String,
    },
    /// The CA could not validate a name.
    #[error(
        "the CA could not validate {domain}: {detail}. Check that the DNS A/AAAA records of {domain} point to this relay's public address, and that TCP port 443 there reaches this relay's HTTPS listener directly (the TLS-ALPN-01 challenge is answered on it; a TLS-terminating proxy in front breaks it)"
    )]
    Challenge {
        /// The name that failed.
        domain: String,
        /// The CA's explanation.
        detail: String,
    },
    /// The CA's rate limit was hit.
    #[error(
        "the CA rate-limited this relay: {detail}. The relay retries on its own once the limit allows; restarting it does not help"
    )]
    RateLimited {
        /// The CA's explanation.
        detail: String,
        /// When the CA said to retry (its `Retry-After`).
        retry_after: Option<SystemTime>,
    },
    /// Any other refusal from the CA.
    #[error("the ACME CA refused {what}: {detail}")]
    Refused {
        /// The step.
        what: &'static str,
        /// The CA's explanation.
        detail: String,
    },
    /// A network or protocol failure mid-order.
    #[error("talking to the ACME CA failed while {what}: {detail}")]
    Transport {
        /// The step.
        what: &'static str,
        /// The underlying error.
        detail: String,
    },
    /// The attempt took too long.
    #[error("the ACME CA did not finish within {0:?}; will retry")]
    TimedOut(Duration),
    /// A local failure (state dir, key generation).
    #[error("{0:#}")]
    Local(anyhow::Error),
}

impl AcmeError {
    /// How long to wait after the `failures`-th failure in a row.
    pub fn retry_delay(&self, failures: u32, now: SystemTime) -> Duration {
        let backoff = backoff(failures);
        match self {
            Self::RateLimited { retry_after, .. } => {
                let until = retry_after
                    .and_then(|t| t.duration_since(now).ok())
                    .unwrap_or(RATE_LIMIT_DEFAULT_WAIT);
                until.max(backoff)
            }
            _ => backoff,
        }
    }
}

/// The certificate stored for `settings`, if it parses, matches its key,
/// covers every configured name and has not expired.
pub(crate) fn load_stored(
    settings: &AcmeSettings,
) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    load_certificate(&settings.certificate_file(), &settings.domains)
}

/// The certificate stored at `path`, if it parses, matches its key, covers
/// every one of `domains` and has not expired.
fn load_certificate(
    path: &Path,
    domains: &[String],
) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (chain, key) =
        parse_chain_and_key(&pem).with_context(|| format!("parsing {}", path.display()))?;
    let Some(leaf) = chain.first() else {
        return Ok(None);
    };
    let names = crate::tls::leaf_dns_names(leaf);
    if let Some(missing) = domains.iter().find(|d| !names.contains(d)) {
        tracing::info!(path = %path.display(), name = %missing, "the stored ACME certificate does not cover this name; ordering a new one");
        return Ok(None);
    }
    match crate::tls::leaf_validity(leaf) {
        Some((_, not_after)) if not_after > SystemTime::now() => Ok(Some((chain, key))),
        _ => Ok(None),
    }
}

/// When a certificate valid `not_before..not_after` is due for renewal.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Option<Duration>,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    // A renew_before as long as the lifetime (e.g. "60d" once a CA issues
    // 45-day certificates) would make a fresh certificate due at once and
    // renew in a loop, burning the CA's rate limit: a certificate is always
    // served for at least a tenth of its lifetime.
    let margin = renew_before
        .unwrap_or(lifetime / 3)
        .min(lifetime.mul_f64(0.9));
    not_after.checked_sub(margin).unwrap_or(not_before)
}

/// Keeps the served certificate issued and fresh until `shutdown`: orders
/// one at once if the relay serves the temporary certificate, renews when
/// due, and retries failures with backoff. Never returns an error: the relay
/// keeps serving what it has.
pub async fn keep_fresh(settings: AcmeSettings, identity: Identity, shutdown: CancellationToken) {
    let mut client: Option<AcmeClient> = None;
    let mut failures = 0u32;
    let mut announced: Option<SystemTime> = None;
    loop {
        let now = SystemTime::now();
        let due = match (identity.is_provisional(), identity.validity()) {
            (false, Some((nb, na))) => renew_at(nb, na, settings.renew_before),
            _ => now,
        };
        if due > now {
            let wait = due.duration_since(now).unwrap_or_default().min(MAX_SLEEP);
            if announced != Some(due) {
                announced = Some(due);
                tracing::info!(
                    renew_at = %humantime::format_rfc3339_seconds(due),
                    "ACME: certificate is fresh; next renewal scheduled"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        tracing::info!(domains = ?settings.domains, directory = %settings.directory_url, "ACME: ordering a certificate");
        let attempt = async {
            if client.is_none() {
                client = Some(AcmeClient::new(&settings).await?);
            }
            match client.as_mut() {
                Some(c) => c.issue(&settings, &identity).await,
                None => Err(AcmeError::Local(anyhow::anyhow!("no ACME client"))),
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt) => {
                r.unwrap_or(Err(AcmeError::TimedOut(ATTEMPT_TIMEOUT)))
            }
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(()) => {
                failures = 0;
                tracing::info!(
                    domains = ?settings.domains,
                    serial = %identity.serial(),
                    not_after = %identity.not_after().map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default(),
                    "ACME: certificate installed"
                );
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // A fresh client next time: the directory or account may have changed.
                client = None;
                let now = SystemTime::now();
                let wait = e.retry_delay(failures, now);
                let serving = if identity.is_provisional() {
                    "the temporary self-signed certificate".to_owned()
                } else {
                    format!(
                        "the current certificate (valid until {})",
                        identity
                            .not_after()
                            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                            .unwrap_or_default()
                    )
                };
                tracing::error!(
                    error = %e,
                    retry_at = %humantime::format_rfc3339_seconds(now + wait),
                    "ACME: getting a certificate failed; serving {serving} meanwhile"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Delay after the `failures`-th consecutive failure: 1 min, 2, 4, … 1 h.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1u32 << exp).min(RETRY_MAX)
}

/// An ACME account at the configured directory. Clones share the account
/// (orders for several names run at once).
#[derive(Clone)]
struct AcmeClient {
    account: Account,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl AcmeClient {
    /// Restores the stored account, or creates (and stores) one.
    async fn new(settings: &AcmeSettings) -> Result<Self, AcmeError> {
        let retry_after = Arc::new(Mutex::new(None));
        let http = AcmeHttp::new(settings, retry_after.clone()).map_err(AcmeError::Local)?;
        let account_file = settings.account_file();
        let stored = match std::fs::read(&account_file) {
            Ok(bytes) => Some(
                serde_json::from_slice::<AccountCredentials>(&bytes)
                    .with_context(|| {
                        format!(
                            "parsing the ACME account {} (move it away to create a new account)",
                            account_file.display()
                        )
                    })
                    .map_err(AcmeError::Local)?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(AcmeError::Local(
                    anyhow::Error::new(e).context(format!("reading {}", account_file.display())),
                ));
            }
        };
        let account = match stored {
            Some(credentials) => {
                let account = Account::builder_with_http(Box::new(http))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| classify(e, "fetching the directory", settings, &retry_after))?;
                tracing::info!(account = %account.id(), "ACME: using the stored account");
                account
            }
            None => create_account(settings, Box::new(http), &retry_after).await?,
        };
        Ok(Self {
            account,
            retry_after,
        })
    }

    /// Runs one order for the relay's own names to completion and installs
    /// and stores the certificate.
    async fn issue(
        &mut self,
        settings: &AcmeSettings,
        identity: &Identity,
    ) -> Result<(), AcmeError> {
        let issued = self.order(settings, &settings.domains, identity).await?;
        // Install first (checks key and chain), then persist.
        identity
            .install(issued.chain, issued.key, false)
            .context("installing the issued certificate")
            .map_err(AcmeError::Local)?;
        ensure_private_dir(&settings.dir).map_err(AcmeError::Local)?;
        write_private(&settings.certificate_file(), issued.pem.as_bytes())
            .map_err(AcmeError::Local)?;
        Ok(())
    }

    /// Runs one order for `domains` to completion (challenges answered
    /// through `identity`): the new chain and its key.
    async fn order(
        &mut self,
        settings: &AcmeSettings,
        domains: &[String],
        identity: &Identity,
    ) -> Result<Issued, AcmeError> {
        let identifiers: Vec<Identifier> =
            domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let new_order = NewOrder::new(&identifiers);
        let mut order = match self.account.new_order(&new_order).await {
            Ok(o) => o,
            Err(instant_acme::Error::Api(p)) if problem_is(&p, "accountDoesNotExist") => {
                // The CA forgot the account (deactivated, or a test CA restarted).
                tracing::warn!(detail = %problem_text(&p), "ACME: the CA does not know the stored account; creating a new one");
                let _ = std::fs::remove_file(settings.account_file());
                let http =
                    AcmeHttp::new(settings, self.retry_after.clone()).map_err(AcmeError::Local)?;
                self.account = create_account(settings, Box::new(http), &self.retry_after).await?;
                self.account
                    .new_order(&new_order)
                    .await
                    .map_err(|e| self.classify(e, "creating an order", settings))?
            }
            Err(e) => return Err(self.classify(e, "creating an order", settings)),
        };

        // Challenge certificates are served only while this attempt runs.
        let challenges = ChallengeGuard {
            identity,
            names: Vec::new(),
        };
        let mut challenges = challenges;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz =
                authz.map_err(|e| self.classify(e, "fetching an authorization", settings))?;
            let domain = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    let detail = authz
                        .challenges
                        .iter()
                        .find_map(|c| c.error.as_ref())
                        .map(problem_text)
                        .unwrap_or_else(|| format!("the authorization is {other:?}"));
                    return Err(AcmeError::Challenge { domain, detail });
                }
            }
            let Some(mut challenge) = authz.challenge(ChallengeType::TlsAlpn01) else {
                return Err(AcmeError::Refused {
                    what: "the order",
                    detail: format!("the CA offers no TLS-ALPN-01 challenge for {domain}"),
                });
            };
            let digest = challenge.key_authorization().digest();
            let cert = challenge_certificate(&domain, digest.as_ref()).map_err(AcmeError::Local)?;
            identity.set_challenge(&domain, cert);
            challenges.names.push(domain.clone());
            tracing::info!(domain = %domain, "ACME: answering the TLS-ALPN-01 challenge");
            challenge
                .set_ready()
                .await
                .map_err(|e| self.classify(e, "starting validation", settings))?;
        }

        let polled = order
            .poll_ready(
                &RetryPolicy::new()
                    .initial_delay(Duration::from_millis(250))
                    .backoff(1.5)
                    .timeout(VALIDATION_TIMEOUT),
            )
            .await;
        match polled {
            Ok(OrderStatus::Ready) => {}
            Ok(OrderStatus::Invalid) | Err(instant_acme::Error::Api(_)) => {
                let order_problem = match &polled {
                    Err(instant_acme::Error::Api(p)) => Some(problem_text(p)),
                    _ => None,
                };
                // Find out which name failed and why.
                let mut authorizations = order.authorizations();
                while let Some(Ok(mut authz)) = authorizations.next().await {
                    let Ok(state) = authz.refresh().await else {
                        continue;
                    };
                    if state.status == AuthorizationStatus::Invalid {
                        let domain = state.identifier().to_string();
                        let detail = state
                            .challenges
                            .iter()
                            .find_map(|c| c.error.as_ref())
                            .map(problem_text)
                            .or_else(|| order_problem.clone())
                            .unwrap_or_else(|| "validation failed".to_owned());
                        return Err(AcmeError::Challenge { domain, detail });
                    }
                }
                return Err(match polled {
                    Err(e) => self.classify(e, "validating the names", settings),
                    Ok(_) => AcmeError::Refused {
                        what: "the order",
                        detail: "the order became invalid".to_owned(),
                    },
                });
            }
            Ok(status) => {
                return Err(AcmeError::Refused {
                    what: "the order",
                    detail: format!("unexpected order status {status:?}"),
                });
            }
            Err(instant_acme::Error::Timeout(_)) => {
                return Err(AcmeError::TimedOut(VALIDATION_TIMEOUT));
            }
            Err(e) => return Err(self.classify(e, "waiting for validation", settings)),
        }
        drop(challenges);

        let key = rcgen::KeyPair::generate()
            .context("generating the certificate key")
            .map_err(AcmeError::Local)?;
        let mut params = rcgen::CertificateParams::new(domains.to_vec())
            .context("building the CSR")
            .map_err(AcmeError::Local)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .context("signing the CSR")
            .map_err(AcmeError::Local)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| self.classify(e, "finalizing the order", settings))?;
        let chain_pem = order
            .poll_certificate(
                &RetryPolicy::new()
                    .initial_delay(Duration::from_millis(250))
                    .backoff(1.5)
                    .timeout(ISSUANCE_TIMEOUT),
            )
            .await
            .map_err(|e| match e {
                instant_acme::Error::Timeout(_) => AcmeError::TimedOut(ISSUANCE_TIMEOUT),
                e => self.classify(e, "downloading the certificate", settings),
            })?;

        let pem = format!("{}\n{}", chain_pem.trim_end(), key.serialize_pem());
        let (chain, key) = parse_chain_and_key(pem.as_bytes())
            .context("the CA's certificate chain")
            .map_err(AcmeError::Local)?;
        Ok(Issued { pem, chain, key })
    }

    fn classify(
        &self,
        e: instant_acme::Error,
        what: &'static str,
        settings: &AcmeSettings,
    ) -> AcmeError {
        classify(e, what, settings, &self.retry_after)
    }
}

/// A certificate just issued: what is stored (chain, then key) and its parts.
struct Issued {
    pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Creates an account at the directory and stores its credentials.
async fn create_account(
    settings: &AcmeSettings,
    http: Box<dyn instant_acme::HttpClient>,
    retry_after: &Arc<Mutex<Option<SystemTime>>>,
) -> Result<Account, AcmeError> {
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory_url.to_string(),
            None,
        )
        .await
        .map_err(|e| classify(e, "creating the account", settings, retry_after))?;
    let json = serde_json::to_vec_pretty(&credentials)
        .context("serializing the ACME account")
        .map_err(AcmeError::Local)?;
    ensure_private_dir(&settings.dir).map_err(AcmeError::Local)?;
    write_private(&settings.account_file(), &json).map_err(AcmeError::Local)?;
    tracing::info!(account = %account.id(), path = %settings.account_file().display(), "ACME: created an account");
    Ok(account)
}

/// Turns a library error into one that says what to do.
fn classify(
    e: instant_acme::Error,
    what: &'static str,
    settings: &AcmeSettings,
    retry_after: &Mutex<Option<SystemTime>>,
) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) if problem_is(&p, "rateLimited") => AcmeError::RateLimited {
            detail: problem_text(&p),
            retry_after: retry_after.lock().unwrap_or_else(|e| e.into_inner()).take(),
        },
        instant_acme::Error::Api(p) => AcmeError::Refused {
            what,
            detail: problem_text(&p),
        },
        e if what == "fetching the directory" || what == "creating the account" => {
            AcmeError::Directory {
                url: settings.directory_url.to_string(),
                detail: error_chain(&e),
            }
        }
        e => AcmeError::Transport {
            what,
            detail: error_chain(&e),
        },
    }
}

/// True if the problem's type is `urn:ietf:params:acme:error:<name>`.
fn problem_is(p: &Problem, name: &str) -> bool {
    p.r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .is_some_and(|t| t == name)
}

/// "detail (type)", with subproblems.
fn problem_text(p: &Problem) -> String {
    let mut s = p
        .detail
        .clone()
        .unwrap_or_else(|| "no detail given".to_owned());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(
            " ({})",
            t.trim_start_matches("urn:ietf:params:acme:error:")
        ));
    }
    for sub in &p.subproblems {
        s.push_str(&format!("; {sub}"));
    }
    s
}

/// An error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// Removes the challenge certificates when the attempt ends, however it ends.
struct ChallengeGuard<'a> {
    identity: &'a Identity,
    names: Vec<String>,
}

impl Drop for ChallengeGuard<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.identity.clear_challenge(name);
        }
    }
}

/// The self-signed certificate that proves control of `domain` to the CA:
/// the name as its only SAN, and the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization (RFC 8737 §3).
pub(crate) fn challenge_certificate(
    domain: &str,
    digest: &[u8],
) -> anyhow::Result<Arc<CertifiedKey>> {
    if digest.len() != 32 {
        bail!("key authorization digest is {} bytes, not 32", digest.len());
    }
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .with_context(|| format!("challenge certificate for {domain}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().context("generating a challenge key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the challenge certificate")?;
    // Not `tls::certified_key`: its key check parses the certificate with
    // webpki, which refuses the (unknown to it) critical acmeIdentifier.
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        key.serialize_der().into(),
    ))
    .context("loading the challenge key")?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// A certificate chain (leaf first) and its private key.
pub(crate) type ChainAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Chain (leaf first) and private key from one PEM blob.
fn parse_chain_and_key(
    pem: &[u8],
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("reading PEM certificates")?;
    if chain.is_empty() {
        bail!("no PEM certificate");
    }
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .context("reading the PEM private key")?
        .context("no PEM private key")?;
    Ok((chain, key))
}

fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting {}", d.display()))?;
        }
    }
    Ok(())
}

/// `<host>-<8 hex of sha256(url)>`: readable, and distinct per directory.
fn directory_label(url: &Url) -> String {
    let host: String = url
        .host_str()
        .unwrap_or("ca")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = sha2::Sha256::digest(url.as_str().as_bytes());
    format!("{host}-{}", hex::encode(&hash[..4]))
}

/// `ops@example.com` or `mailto:ops@example.com` → `mailto:ops@example.com`.
fn contact_uri(c: &str) -> anyhow::Result<String> {
    let addr = c.trim().strip_prefix("mailto:").unwrap_or(c.trim());
    let ok = addr.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty() && host.contains('.') && !host.starts_with('.')
    }) && !addr
        .contains(|ch: char| ch.is_whitespace() || ch == ',' || ch == '<' || ch == '>');
    if !ok {
        bail!("contact {c:?} is not an email address (write \"ops@example.com\")");
    }
    Ok(format!("mailto:{addr}"))
}

/// A DNS name fit for a certificate, lowercased.
fn check_domain(d: &str) -> anyhow::Result<String> {
    let name = d.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.starts_with("*.") {
        bail!(
            "domains: {d:?} is a wildcard; TLS-ALPN-01 cannot validate wildcards (list the names instead)"
        );
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        bail!("domains: {d:?} is an IP address; list DNS names");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        bail!("domains: {d:?} is not a valid DNS name");
    }
    Ok(name)
}

/// instant-acme's HTTP through reqwest (rustls on aws-lc-rs, the tree's one
/// TLS stack), trusting `ca_file` besides the system roots, and remembering
/// the CA's last `Retry-After` for rate-limit errors.
struct AcmeHttp {
    client: reqwest::Client,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl AcmeHttp {
    fn new(
        settings: &AcmeSettings,
        retry_after: Arc<Mutex<Option<SystemTime>>>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcp-relay/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading acme.ca_file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing acme.ca_file {}", ca.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .context("building the HTTP client for the ACME CA")?;
        Ok(Self {
            client,
            retry_after,
        })
    }
}

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let other = |e: Box<dyn std::error::Error + Send + Sync>| instant_acme::Error::Other(e);
            let mut rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| other(Box::new(e)))?;
            let mut out = http::Response::builder().status(rsp.status());
            for (name, value) in rsp.headers() {
                out = out.header(name, value);
            }
            if rsp.status() == http::StatusCode::TOO_MANY_REQUESTS {
                let at = rsp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                *retry_after.lock().unwrap_or_else(|e| e.into_inner()) = at;
            }
            let mut collected = Vec::new();
            while let Some(chunk) = rsp.chunk().await.map_err(|e| other(Box::new(e)))? {
                if collected.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(other(
                        format!("the CA's response is larger than {MAX_RESPONSE_BODY} bytes")
                            .into(),
                    ));
                }
                collected.extend_from_slice(&chunk);
            }
            let response = out
                .body(http_body_util::Full::new(Bytes::from(collected)))
                .map_err(instant_acme::Error::Http)?;
            Ok(BytesResponse::from(response))
        })
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<SystemTime> {
    let v = v.trim();
    let at = match v.parse::<u64>() {
        Ok(secs) => {
            SystemTime::now().checked_add(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())))
        }
        Err(_) => httpdate_parse(v),
    }?;
    // An absurd value (years ahead) would park renewal past the
    // certificate's expiry; a day is the longest a CA's hint is followed.
    Some(at.min(SystemTime::now() + MAX_RETRY_AFTER))
}

/// The longest `Retry-After` followed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the date form CAs send.
fn httpdate_parse(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_weekday, day, month, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_index = MONTHS.iter().position(|m| m == month)?;
    let month = time::Month::try_from(u8::try_from(month_index + 1).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let mut clock = hms.split(':').map(|n| n.parse::<u8>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (clock.next(), clock.next(), clock.next(), clock.next())
    else {
        return None;
    };
    let at = date.with_hms(h, m, s).ok()?.assume_utc();
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(toml_text: &str, public_url: Option<&str>) -> anyhow::Result<AcmeSettings> {
        let cfg: AcmeConfig = toml::from_str(toml_text)?;
        let url = public_url.map(|u| Url::parse(u).unwrap());
        cfg.settle(url.as_ref(), Path::new("/state"))
    }

    #[test]
    fn defaults_come_from_public_url() {
        let s = settle(
            "accept_terms = true",
            Some("https://Relay.Example.com:8443/"),
        )
        .unwrap();
        assert_eq!(s.domains, ["relay.example.com"]);
        assert_eq!(s.directory_url.as_str(), LETS_ENCRYPT);
        assert!(s.contact.is_empty());
        assert_eq!(s.renew_before, None);
        assert!(
            s.dir
                .to_string_lossy()
                .starts_with("/state/acme/acme-v02.api.letsencrypt.org-"),
            "{}",
            s.dir.display()
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("", "accept_terms"),
            ("accept_terms = false", "accept_terms"),
            (
                "accept_terms = true\ndirectory_url = \"http://ca.example/dir\"",
                "directory_url",
            ),
            (
                "accept_terms = true\ncontact = [\"not an email\"]",
                "contact",
            ),
            (
                "accept_terms = true\ndomains = [\"*.example.com\"]",
                "wildcard",
            ),
            ("accept_terms = true\ndomains = []", "domains"),
            (
                "accept_terms = true\ndomains = [\"bad_name.example\"]",
                "domains",
            ),
            (
                "accept_terms = true\nrenew_before = \"soon\"",
                "renew_before",
            ),
            (
                "accept_terms = true\nca_file = \"/nonexistent/ca.pem\"",
                "ca_file",
            ),
        ];
        for (text, needle) in cases {
            let err = settle(text, Some("https://relay.example.com")).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{text:?} -> {msg}");
        }
        let err = settle("accept_terms = true", Some("https://127.0.0.1")).unwrap_err();
        assert!(format!("{err:#}").contains("acme.domains"), "{err:#}");
        let err = toml::from_str::<AcmeConfig>("bogus = 1").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn explicit_values_are_normalized() {
        let s = settle(
            "accept_terms = true\ndirectory_url = \"https://ca.test:14000/dir\"\ncontact = [\"ops@example.com\", \"mailto:b@example.com\"]\ndomains = [\"A.example.com.\", \"b.example.com\"]\nrenew_before = \"12h\"",
            None,
        )
        .unwrap();
        assert_eq!(
            s.contact,
            ["mailto:ops@example.com", "mailto:b@example.com"]
        );
        assert_eq!(s.domains, ["a.example.com", "b.example.com"]);
        assert_eq!(s.renew_before, Some(Duration::from_secs(12 * 3600)));
        assert!(s.dir.to_string_lossy().starts_with("/state/acme/ca.test-"));
        let other = settle(
            "accept_terms = true\ndirectory_url = \"https://ca.test:14000/other\"",
            Some("https://x.example.com"),
        )
        .unwrap();
        assert_ne!(s.dir, other.dir, "each directory keeps its own account");
    }

    #[test]
    fn renewal_is_due_with_a_third_left_or_the_configured_margin() {
        let nb = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(90 * 86400);
        assert_eq!(renew_at(nb, na, None), nb + Duration::from_secs(60 * 86400));
        assert_eq!(
            renew_at(nb, na, Some(Duration::from_secs(7 * 86400))),
            na - Duration::from_secs(7 * 86400)
        );
        // A margin as long as the lifetime would renew in a loop: a tenth
        // of the lifetime is always served.
        assert_eq!(
            renew_at(nb, na, Some(Duration::from_secs(365 * 86400))),
            nb + Duration::from_secs(9 * 86400)
        );
    }

    #[test]
    fn retries_back_off_and_honour_rate_limits() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let err = AcmeError::Transport {
            what: "x",
            detail: "y".into(),
        };
        assert_eq!(err.retry_delay(1, now), Duration::from_secs(60));
        assert_eq!(err.retry_delay(2, now), Duration::from_secs(120));
        assert_eq!(err.retry_delay(40, now), RETRY_MAX);
        let limited = AcmeError::RateLimited {
            detail: "too many".into(),
            retry_after: Some(now + Duration::from_secs(7200)),
        };
        assert_eq!(limited.retry_delay(1, now), Duration::from_secs(7200));
        let unknown = AcmeError::RateLimited {
            detail: "too many".into(),
            retry_after: None,
        };
        assert_eq!(unknown.retry_delay(1, now), RATE_LIMIT_DEFAULT_WAIT);
    }

    #[test]
    fn retry_after_parses_both_forms() {
        let t = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        let t = parse_retry_after("120").unwrap();
        let left = t.duration_since(SystemTime::now()).unwrap().as_secs();
        assert!((118..=120).contains(&left), "{left}");
        assert!(parse_retry_after("whenever").is_none());
    }

    #[test]
    fn challenge_certificate_carries_the_acme_identifier() {
        let digest = [7u8; 32];
        let ck = challenge_certificate("relay.example.com", &digest).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // OCTET STRING (0x04), 32 bytes, the digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        assert_eq!(
            crate::tls::leaf_dns_names(&ck.cert[0]),
            ["relay.example.com"]
        );
        assert!(challenge_certificate("relay.example.com", &[0; 5]).is_err());
    }

    #[test]
    fn problems_read_well() {
        let p: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates","status":429}"#,
        )
        .unwrap();
        assert!(problem_is(&p, "rateLimited"));
        assert!(!problem_is(&p, "malformed"));
        assert_eq!(problem_text(&p), "too many certificates (rateLimited)");
    }
}
