//! Client ID Metadata Documents (MCP 2025-11-25,
//! draft-ietf-oauth-client-id-metadata-document): a client with no prior
//! relationship uses an https URL as its `client_id`, and the JSON document at
//! that URL describes it.
//!
//! ```text
//!   /authorize?client_id=https://app.example/client.json
//!        │
//!        ▼
//!   parse_client_id_url ──► cache? ──hit──► ClientMetadata
//!        │                    │miss (one fetch per URL at a time)
//!        │                    ▼
//!        │   lookup_host ──► check_address(every address) ──refused──► CimdError, no connection
//!        │                    │ all public
//!        │                    ▼
//!        │   connect to a checked address only (pinned resolver), https, no redirects,
//!        │   no proxy, total time limit, body capped while streaming
//!        │                    ▼
//!        └────────────► parse_document: client_id == URL, same rules as DCR (registration.rs)
//! ```
//!
//! Fetching a URL an unauthenticated stranger chose is a server-side request
//! forgery risk, so the guard sits between name resolution and connection:
//! the host is resolved first, every address is classified ([`classify`]),
//! and the HTTP client is handed a resolver that knows only those checked
//! addresses for that one host, so it cannot resolve again (no DNS
//! rebinding between check and connect) and cannot reach anything else.
//! Proxies are off for the same reason (a proxy would do its own resolving).
//!
//! [`AllowList`] is the single, test-only way around the guard: exact host
//! names that may resolve to loopback (and nothing else: private and
//! link-local addresses stay refused even for them).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use url::{Host, Url};

use super::registration::{RegistrationError, RegistrationLimits, ValidatedRegistration};

/// Longest client ID URL accepted (2 KiB).
pub const MAX_CLIENT_ID_URL_BYTES: usize = 2048;

/// Total time for one fetch — resolving, connecting, TLS, and reading the
/// body (5 s).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest metadata document accepted (5 KiB, the draft's recommended bound);
/// enforced while reading, so a larger body is abandoned, not downloaded.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 5 * 1024;

/// Most documents (and remembered failures) cached (1,000).
pub const DEFAULT_CACHE_CAPACITY: usize = 1000;

/// How long a document is cached when its response has no usable
/// `Cache-Control: max-age` (1 h).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60 * 60);

/// Shortest time a fetched document is cached, whatever `Cache-Control` says
/// (60 s): `no-store` must not turn every authorization into a fetch.
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(60);

/// Longest time a fetched document is cached (24 h), so a client's changes
/// are seen within a day.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a failed fetch is remembered (60 s), so hammering one bad URL
/// costs one fetch a minute.
pub const DEFAULT_FAILURE_TTL: Duration = Duration::from_secs(60);

/// Most fetches in flight at once, across all URLs (16).
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 16;

/// Host-name lookups for metadata documents in progress at once (each holds
/// one of the relay's blocking threads until the system resolver returns).
pub const MAX_DNS_LOOKUPS: usize = 8;

/// The `User-Agent` sent with every fetch.
pub const USER_AGENT: &str = concat!(
    "mcp-relay/",
    env!("CARGO_PKG_VERSION"),
    " (client metadata)"
);

/// Host names allowed to resolve to loopback addresses. **Test only**: it
/// exists so end-to-end tests can serve a metadata document from
/// `localhost`. Empty by default; a relay in production never sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
}

impl AllowList {
    /// An allow-list of exact host names (compared case-insensitively, no wildcards).
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            hosts: hosts
                .into_iter()
                .map(|h| h.as_ref().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether no host is allowed (the production setting).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether `host` may resolve to loopback.
    pub fn allows(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// Why an address is not fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, and the deprecated site-local `fec0::/10`.
    Private,
    /// `169.254/16` (including the cloud metadata service at 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8`: "this network".
    ThisNetwork,
    /// `255.255.255.255`.
    Broadcast,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `100.64/10`, carrier-grade NAT space shared with the provider's network.
    SharedCgnat,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
    /// Anything else not globally routable: `192.0.0/24`, `192.88.99/24`,
    /// `240/4`, Teredo, `64:ff9b:1::/48`, and IPv6 outside `2000::/3`.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::SharedCgnat => "carrier-grade NAT (100.64.0.0/10)",
            Self::Documentation => "documentation-range",
            Self::Benchmarking => "benchmarking-range",
            Self::Reserved => "reserved (not globally routable)",
        })
    }
}

/// Why a client ID metadata document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    /// The `client_id` is not an acceptable metadata document URL.
    #[error("client_id {url:?} is not a valid client metadata URL: {reason}")]
    InvalidUrl {
        /// The client id (first 100 characters).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("could not resolve {host} to fetch its client metadata: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The host name resolved to no address.
    #[error("{host} has no addresses; cannot fetch its client metadata")]
    NoAddresses {
        /// The host.
        host: String,
    },
    /// The host resolves to an address the relay must not reach (SSRF guard).
    /// Nothing was connected to.
    #[error("refusing to fetch client metadata from {}: {class} address{}",
        describe_target(.host, .ip), metadata_note(.ip))]
    ForbiddenAddress {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Why it is refused.
        class: AddressClass,
    },
    /// Connecting or the TLS handshake failed (including an untrusted certificate).
    #[error("could not connect to fetch client metadata: {0}")]
    Connect(String),
    /// The HTTP exchange failed after connecting.
    #[error("fetching client metadata failed: {0}")]
    Http(String),
    /// The whole fetch took longer than the time limit.
    #[error("fetching client metadata took longer than {} ms; the document must be served faster",
        .limit.as_millis())]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// The server answered with a redirect; redirects are not followed.
    #[error(
        "the client metadata URL answered with a redirect (HTTP {status}); \
             serve the document at the client_id URL itself"
    )]
    Redirected {
        /// The HTTP status.
        status: u16,
    },
    /// The server answered with a status other than 200.
    #[error("the client metadata URL answered HTTP {status}; expected 200")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The response is not labelled as JSON.
    #[error("the client metadata document has content type {got:?}; expected application/json")]
    ContentType {
        /// The `Content-Type` received (first 100 characters), empty if none.
        got: String,
    },
    /// The document is larger than the cap; the rest was not read.
    #[error("the client metadata document is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The document is not a JSON object.
    #[error("the client metadata document is not a JSON object: {0}")]
    NotJson(String),
    /// The document's `client_id` is not exactly the URL it was fetched from.
    #[error(
        "the client metadata document's client_id is {found:?}, not the URL it was fetched from ({url})"
    )]
    ClientIdMismatch {
        /// The URL fetched.
        url: String,
        /// The `client_id` in the document (first 100 characters), if any.
        found: Option<String>,
    },
    /// The document's metadata breaks the same rules a dynamic registration follows.
    #[error("the client metadata document is not acceptable: {0}")]
    InvalidMetadata(RegistrationError),
    /// The fetcher could not be set up (bad extra root certificate, TLS setup).
    #[error("could not set up the client metadata fetcher: {0}")]
    Setup(String),
}

impl CimdError {
    /// The OAuth error code for the authorization endpoint: the client is
    /// unknown or unusable, so `invalid_client` (shown to the user, never
    /// redirected, since its redirect URIs are not trustworthy).
    pub fn error_code(&self) -> &'static str {
        "invalid_client"
    }
}

/// A client described by a validated metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    client_id: String,
    host: String,
    registration: ValidatedRegistration,
}

impl ClientMetadata {
    /// The client id: the document's URL.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The host of the client id URL (what a consent page should show
    /// beside the self-declared name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The validated metadata (redirect URIs, name, …).
    pub fn registration(&self) -> &ValidatedRegistration {
        &self.registration
    }

    /// `client_name`, or the URL's host when the document has none.
    pub fn display_name(&self) -> &str {
        self.registration.client_name().unwrap_or(&self.host)
    }

    /// The accepted metadata as a JSON object including `client_id` (for `NewClient::metadata`).
    pub fn metadata(&self) -> Value {
        let mut meta = self.registration.metadata();
        if let Value::Object(m) = &mut meta {
            m.insert("client_id".into(), Value::String(self.client_id.clone()));
        }
        meta
    }
}

/// Settings of a [`CimdFetcher`].
#[derive(Debug, Clone)]
pub struct CimdConfig {
    /// Total time for one fetch ([`DEFAULT_FETCH_TIMEOUT`]).
    pub timeout: Duration,
    /// Largest document ([`DEFAULT_MAX_DOCUMENT_BYTES`]).
    pub max_document_bytes: usize,
    /// Cache entries ([`DEFAULT_CACHE_CAPACITY`]).
    pub cache_capacity: usize,
    /// How long failures are remembered ([`DEFAULT_FAILURE_TTL`]).
    pub failure_ttl: Duration,
    /// Fetches in flight at once ([`DEFAULT_MAX_CONCURRENT_FETCHES`]).
    pub max_concurrent_fetches: usize,
    /// Test only: hosts that may resolve to loopback. Empty by default.
    pub allow: AllowList,
    /// Extra trusted roots (DER), added to the platform's. Test only in
    /// practice (a local server's self-signed CA).
    pub extra_roots_der: Vec<Vec<u8>>,
    /// The redirect-URI and metadata rules (shared with dynamic registration).
    pub registration: RegistrationLimits,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_FETCH_TIMEOUT,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            failure_ttl: DEFAULT_FAILURE_TTL,
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES,
            allow: AllowList::default(),
            extra_roots_der: Vec::new(),
            registration: RegistrationLimits::default(),
        }
    }
}

/// Fetches, checks and caches client ID metadata documents.
pub struct CimdFetcher {
    config: CimdConfig,
    roots: Vec<reqwest::Certificate>,
    cache: quick_cache::sync::Cache<String, CacheEntry>,
    permits: tokio::sync::Semaphore,
    /// Name lookups in progress. The system resolver runs on a blocking
    /// thread that a timeout cannot stop, so each lookup keeps its permit
    /// until it really ends: a host whose DNS never answers can tie up at
    /// most [`MAX_DNS_LOOKUPS`] of the relay's blocking threads.
    dns_permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for CimdFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CimdFetcher")
            .field("config", &self.config)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl CimdFetcher {
    /// A fetcher with `config`.
    pub fn new(config: CimdConfig) -> Result<Self, CimdError> {
        let roots = config
            .extra_roots_der
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                CimdError::Setup(format!("extra root certificate: {}", error_chain(&e)))
            })?;
        if !config.allow.is_empty() {
            tracing::warn!(
                hosts = ?config.allow.hosts,
                "client metadata fetches may reach loopback for these hosts (test-only setting)"
            );
        }
        Ok(Self {
            cache: quick_cache::sync::Cache::new(config.cache_capacity.max(1)),
            permits: tokio::sync::Semaphore::new(config.max_concurrent_fetches.max(1)),
            dns_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_DNS_LOOKUPS)),
            roots,
            config,
        })
    }

    /// The client described by the metadata document at `client_id`, from
    /// the cache or fetched now. Failures are cached too (for
    /// [`CimdConfig::failure_ttl`]); a malformed URL is refused without
    /// touching the cache.
    pub async fn fetch(&self, client_id: &str) -> Result<ClientMetadata, CimdError> {
        self.fetch_at(client_id, Instant::now()).await
    }

    /// [`Self::fetch`] with the current time given (tests move it forward to
    /// expire cache entries).
    async fn fetch_at(&self, client_id: &str, now: Instant) -> Result<ClientMetadata, CimdError> {
        let url = parse_client_id_url(client_id)?;
        let guard = match self.cache.get_value_or_guard_async(client_id).await {
            Ok(entry) if now < entry.expires_at => return entry.result,
            Ok(_) => None,
            Err(guard) => Some(guard),
        };
        let result = self.fetch_uncached(&url, client_id).await;
        let ttl = match &result {
            Ok((_, ttl)) => *ttl,
            Err(e) => {
                tracing::info!(client_id, error = %e, "client metadata refused");
                self.config.failure_ttl
            }
        };
        let result = result.map(|(meta, _)| meta);
        let entry = CacheEntry {
            result: result.clone(),
            expires_at: now + ttl,
        };
        match guard {
            // The guard is only refused if the entry was removed meanwhile; the
            // result is still good for this caller.
            Some(guard) => drop(guard.insert(entry)),
            None => self.cache.insert(client_id.to_owned(), entry),
        }
        result
    }

    /// Fetches and checks one document, within the total time limit.
    async fn fetch_uncached(
        &self,
        url: &Url,
        client_id: &str,
    ) -> Result<(ClientMetadata, Duration), CimdError> {
        let limit = self.config.timeout;
        let work = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| CimdError::Setup("the fetch limiter was closed".to_owned()))?;
            let addrs = self.resolve_checked(url).await?;
            self.download(url, client_id, addrs).await
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(CimdError::Timeout { limit }))
    }

    /// Resolves the URL's host and checks every address; refuses the whole
    /// host if any address is refused (a name with one public and one
    /// internal address is an attack, not a misconfiguration).
    async fn resolve_checked(&self, url: &Url) -> Result<Vec<SocketAddr>, CimdError> {
        let port = url.port_or_known_default().unwrap_or(443);
        let host_str = url.host_str().unwrap_or_default().to_owned();
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(name)) => {
                let permit = self
                    .dns_permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CimdError::Setup("the DNS limiter was closed".to_owned()))?;
                let name = name.to_owned();
                // Its own task: dropping this future (timeout) leaves the
                // lookup, and its permit, until the resolver returns.
                let lookup = tokio::spawn(async move {
                    let r = tokio::net::lookup_host((name, port))
                        .await
                        .map(|a| a.collect::<Vec<_>>());
                    drop(permit);
                    r
                });
                lookup
                    .await
                    .map_err(|e| CimdError::Resolve {
                        host: host_str.clone(),
                        reason: e.to_string(),
                    })?
                    .map_err(|e| CimdError::Resolve {
                        host: host_str.clone(),
                        reason: e.to_string(),
                    })?
            }
            None => {
                return Err(CimdError::InvalidUrl {
                    url: url.as_str().chars().take(100).collect(),
                    reason: "it has no host".to_owned(),
                });
            }
        };
        if addrs.is_empty() {
            return Err(CimdError::NoAddresses { host: host_str });
        }
        for addr in &addrs {
            if let Err(e) = check_address(&host_str, addr.ip(), &self.config.allow) {
                tracing::warn!(host = %host_str, ip = %addr.ip(), "{e}");
                return Err(e);
            }
        }
        Ok(addrs)
    }

    /// GETs the document from the checked addresses only.
    async fn download(
        &self,
        url: &Url,
        client_id: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<(ClientMetadata, Duration), CimdError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = reqwest::Client::builder()
            .dns_resolver(PinnedResolver {
                host: host.clone(),
                addrs,
            })
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .referer(false)
            .user_agent(USER_AGENT)
            .timeout(self.config.timeout)
            .tls_certs_merge(self.roots.iter().cloned())
            .build()
            .map_err(|e| CimdError::Setup(error_chain(&e)))?;
        let mut response = client
            .get(url.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| request_error(&e, self.config.timeout))?;

        let status = response.status();
        if status.is_redirection() {
            return Err(CimdError::Redirected {
                status: status.as_u16(),
            });
        }
        if status != reqwest::StatusCode::OK {
            return Err(CimdError::Status {
                status: status.as_u16(),
            });
        }
        let headers = response.headers();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_json_content_type(content_type) {
            return Err(CimdError::ContentType {
                got: content_type.chars().take(100).collect(),
            });
        }
        let cache_control: Vec<String> = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let ttl = cache_ttl(&cache_control.join(","));

        let max = self.config.max_document_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(CimdError::TooLarge { limit: max });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_error(&e, self.config.timeout))?
        {
            if body.len() + chunk.len() > max {
                return Err(CimdError::TooLarge { limit: max });
            }
            body.extend_from_slice(&chunk);
        }
        let meta = parse_document(client_id, &host, &body, &self.config.registration)?;
        tracing::debug!(
            client_id,
            ttl_secs = ttl.as_secs(),
            "client metadata fetched"
        );
        Ok((meta, ttl))
    }
}

/// Checks that `client_id` is a usable metadata document URL: https, a path
/// other than `/`, no fragment, no user name or password, no `.`/`..`
/// segments, at most [`MAX_CLIENT_ID_URL_BYTES`], printable ASCII, and
/// already in the canonical form a URL parser would give it (so the cache
/// key, the fetched URL and the document's `client_id` are the same string).
pub fn parse_client_id_url(client_id: &str) -> Result<Url, CimdError> {
    let invalid = |reason: &str| CimdError::InvalidUrl {
        url: client_id.chars().take(100).collect(),
        reason: reason.to_owned(),
    };
    if client_id.len() > MAX_CLIENT_ID_URL_BYTES {
        return Err(invalid(&format!(
            "it is longer than {MAX_CLIENT_ID_URL_BYTES} bytes"
        )));
    }
    if !client_id
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
    {
        return Err(invalid(
            "it contains spaces, control characters, backslashes or non-ASCII characters",
        ));
    }
    let url = Url::parse(client_id).map_err(|e| invalid(&format!("not an absolute URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(invalid("it must be an https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it must not contain a user name or password"));
    }
    if client_id.contains('#') {
        return Err(invalid("it must not contain a fragment"));
    }
    // Look at the path as written: the parser would already have removed dot segments.
    let after_scheme = client_id.get("https://".len()..).unwrap_or_default();
    let raw_path = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or_default();
    let raw_path = raw_path.split('?').next().unwrap_or_default();
    if raw_path.split('/').any(is_dot_segment) {
        return Err(invalid("it must not contain . or .. path segments"));
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(invalid(
            "it must have a path naming the document (e.g. https://app.example/client.json)",
        ));
    }
    if url.as_str() != client_id {
        return Err(invalid(&format!(
            "it is not in canonical form (expected {})",
            url.as_str().chars().take(100).collect::<String>()
        )));
    }
    Ok(url)
}

/// The SSRF guard: `Ok` if the relay may connect to `ip` for `host`. Only
/// globally routable unicast addresses pass, plus loopback for a host on the
/// (test-only) allow-list.
pub fn check_address(host: &str, ip: IpAddr, allow: &AllowList) -> Result<(), CimdError> {
    match classify(ip) {
        None => Ok(()),
        Some(AddressClass::Loopback) if allow.allows(host) => Ok(()),
        Some(class) => Err(CimdError::ForbiddenAddress {
            host: host.to_owned(),
            ip,
            class,
        }),
    }
}

/// Why `ip` must not be fetched from, or `None` for a public unicast
/// address. IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are
/// judged by the IPv4 address inside.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Checks a fetched document: a JSON object whose `client_id` is exactly
/// `client_id`, no client secret, and metadata that passes the dynamic
/// registration rules.
pub fn parse_document(
    client_id: &str,
    host: &str,
    body: &[u8],
    limits: &RegistrationLimits,
) -> Result<ClientMetadata, CimdError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| CimdError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(CimdError::NotJson("it is not an object".to_owned()));
    };
    match map.get("client_id") {
        Some(Value::String(found)) if found == client_id => {}
        other => {
            return Err(CimdError::ClientIdMismatch {
                url: client_id.to_owned(),
                found: other.map(|v| match v {
                    Value::String(s) => s.chars().take(100).collect(),
                    v => v.to_string().chars().take(100).collect(),
                }),
            });
        }
    }
    refuse_secrets(&map)?;
    let registration =
        super::registration::validate_metadata(&map, limits).map_err(CimdError::InvalidMetadata)?;
    Ok(ClientMetadata {
        client_id: client_id.to_owned(),
        host: host.to_owned(),
        registration,
    })
}

/// How long to cache a document given its `Cache-Control` header (the
/// values of all such headers joined by commas): `max-age` clamped to
/// [`MIN_CACHE_TTL`] ..= [`MAX_CACHE_TTL`]; `no-store`/`no-cache` mean the
/// minimum; anything else [`DEFAULT_CACHE_TTL`].
pub fn cache_ttl(cache_control: &str) -> Duration {
    let mut ttl = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return MIN_CACHE_TTL;
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            if let Ok(secs) = secs.trim_matches('"').parse::<u64>() {
                ttl = Some(Duration::from_secs(secs));
            } else if secs.bytes().all(|b| b.is_ascii_digit()) && !secs.is_empty() {
                // More digits than a u64 holds: as long as we ever cache.
                ttl = Some(MAX_CACHE_TTL);
            }
        }
    }
    ttl.unwrap_or(DEFAULT_CACHE_TTL)
        .clamp(MIN_CACHE_TTL, MAX_CACHE_TTL)
}

// --- helpers ---------------------------------------------------------------

#[derive(Clone)]
struct CacheEntry {
    result: Result<ClientMetadata, CimdError>,
    expires_at: Instant,
}

/// A resolver that knows one host and the addresses already checked for it,
/// and refuses every other name: the HTTP client cannot reach anything the
/// SSRF guard has not seen.
struct PinnedResolver {
    host: String,
    addrs: Vec<SocketAddr>,
}

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let result: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if name.as_str().eq_ignore_ascii_case(&self.host) {
                Ok(Box::new(self.addrs.clone().into_iter()))
            } else {
                Err(format!("{} was not checked by the SSRF guard", name.as_str()).into())
            };
        Box::pin(std::future::ready(result))
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, ..) => AddressClass::ThisNetwork,
        (10, ..) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::SharedCgnat,
        (127, ..) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (172, 16..=31, _) => AddressClass::Private,
        (192, 0, 0) => AddressClass::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        (192, 88, 99) => AddressClass::Reserved,
        (192, 168, _) => AddressClass::Private,
        (198, 18..=19, _) => AddressClass::Benchmarking,
        (224..=239, ..) => AddressClass::Multicast,
        (240..=255, ..) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    let seg = ip.segments();
    let embedded_low32 = || {
        Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        )
    };
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible).
    if seg[..5] == [0; 5] && (seg[5] == 0xffff || seg[5] == 0) {
        return classify_v4(embedded_low32());
    }
    // NAT64 well-known prefix 64:ff9b::/96: a gateway would connect to the IPv4 inside.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_low32());
    }
    // 6to4 2002:a.b.c.d::/48: judged by the IPv4 relay address inside.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return classify_v4(v4);
    }
    let class = match seg[0] {
        0xff00..=0xffff => AddressClass::Multicast,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        0xfec0..=0xfeff | 0xfc00..=0xfdff => AddressClass::Private,
        0x2001 if seg[1] == 0x0db8 => AddressClass::Documentation,
        0x3fff if seg[1] <= 0x0fff => AddressClass::Documentation,
        0x2001 if seg[1] == 0x0002 && seg[2] == 0 => AddressClass::Benchmarking,
        // Teredo 2001::/32 and the IETF protocol assignments 2001::/23 (ORCHID,
        // AS112, …) are not places a client's web server lives.
        0x2001 if seg[1] < 0x0200 => AddressClass::Reserved,
        // Everything outside global unicast 2000::/3 (including 64:ff9b:1::/48
        // local-use NAT64 and 100::/64 discard-only).
        s if !(0x2000..=0x3fff).contains(&s) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn refuse_secrets(map: &Map<String, Value>) -> Result<(), CimdError> {
    for field in ["client_secret", "client_secret_expires_at"] {
        if map.contains_key(field) {
            return Err(CimdError::InvalidMetadata(
                RegistrationError::InvalidMetadata {
                    field,
                    reason: "a client metadata document is public and must not carry a secret"
                        .to_owned(),
                },
            ));
        }
    }
    Ok(())
}

fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase();
    matches!(s.as_str(), "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e.")
}

fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn request_error(e: &reqwest::Error, limit: Duration) -> CimdError {
    if e.is_timeout() {
        CimdError::Timeout { limit }
    } else if e.is_connect() {
        CimdError::Connect(error_chain(e))
    } else {
        CimdError::Http(error_chain(e))
    }
}

/// An error and its sources, joined with ": " (reqwest's own message alone
/// rarely says what went wrong, e.g. which certificate check failed).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

fn describe_target(host: &str, ip: &IpAddr) -> String {
    if host.trim_start_matches('[').trim_end_matches(']') == ip.to_string() {
        ip.to_string()
    } else {
        format!("{host} ({ip})")
    }
}

fn metadata_note(ip: &IpAddr) -> &'static str {
    if *ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)) {
        " (the cloud instance metadata service)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    // --- pure rules -------------------------------------------------------

    #[test]
    fn client_id_url_rules() {
        for ok in [
            "https://app.example/client.json",
            "https://app.example/oauth/client-metadata.json",
            "https://app.example:8443/c",
            "https://app.example/c?v=2",
            "https://203.0.113.9/c",
        ] {
            assert_eq!(parse_client_id_url(ok).unwrap().as_str(), ok);
        }
        let long = format!(
            "https://app.example/{}",
            "a".repeat(MAX_CLIENT_ID_URL_BYTES)
        );
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/client.json#x",
            "https://app.example/client.json#",
            "https://user@app.example/client.json",
            "https://user:pw@app.example/client.json",
            "https://app.example/a/../client.json",
            "https://app.example/./client.json",
            "https://app.example/a/%2e%2e/client.json",
            "https://app.example/a/.%2E/client.json",
            "https://APP.example/client.json",
            "https://app.example:443/client.json",
            "https://app.example/a b",
            "https://app.example\\@evil.example/c",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "not a url",
            "",
            long.as_str(),
        ] {
            let err = parse_client_id_url(bad).unwrap_err();
            assert!(matches!(err, CimdError::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn address_classification_table() {
        use AddressClass::*;
        let table: &[(&str, Option<AddressClass>)] = &[
            ("93.184.215.14", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(ThisNetwork)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.1", Some(Documentation)),
            ("203.0.113.1", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("192.0.0.8", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fc00::1", Some(Private)),
            ("fd00:ec2::254", Some(Private)),
            ("fec0::1", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            // IPv4-mapped and -compatible forms are judged by the IPv4 inside.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("::ffff:100.64.0.1", Some(SharedCgnat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::169.254.169.254", Some(LinkLocal)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::1", Some(Loopback)),
            ("2002:0a00:0001::1", Some(Private)),
        ];
        for (ip, class) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(classify(ip), *class, "{ip}");
        }
    }

    #[test]
    fn allow_list_only_admits_loopback_for_listed_hosts() {
        let allow = AllowList::new(["LocalHost"]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        assert!(check_address("localhost", lo, &allow).is_ok());
        assert!(check_address("localhost", lo6, &allow).is_ok());
        assert!(check_address("localhost", private, &allow).is_err());
        assert!(check_address("localhost", meta, &allow).is_err());
        assert!(check_address("other.example", lo, &allow).is_err());
        assert!(check_address("localhost", lo, &AllowList::default()).is_err());
        let err = check_address("169.254.169.254", meta, &AllowList::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to fetch client metadata from 169.254.169.254: link-local address \
             (the cloud instance metadata service)"
        );
        let err = check_address("evil.example", private, &AllowList::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to fetch client metadata from evil.example (10.0.0.1): private address"
        );
    }

    #[test]
    fn cache_ttl_from_cache_control() {
        assert_eq!(cache_ttl(""), DEFAULT_CACHE_TTL);
        assert_eq!(cache_ttl("public"), DEFAULT_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=600"), Duration::from_secs(600));
        assert_eq!(cache_ttl("public, Max-Age=7200"), Duration::from_secs(7200));
        assert_eq!(cache_ttl("max-age=\"900\""), Duration::from_secs(900));
        assert_eq!(cache_ttl("max-age=5"), MIN_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=0"), MIN_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=99999999"), MAX_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=999999999999999999999999"), MAX_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=abc"), DEFAULT_CACHE_TTL);
        assert_eq!(cache_ttl("no-store"), MIN_CACHE_TTL);
        assert_eq!(cache_ttl("max-age=3600, no-cache"), MIN_CACHE_TTL);
    }

    #[test]
    fn document_rules() {
        let id = "https://app.example/client.json";
        let limits = RegistrationLimits::default();
        let doc = |v: Value| v.to_string().into_bytes();
        let good = json!({
            "client_id": id,
            "client_name": "App",
            "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"],
        });
        let meta = parse_document(id, "app.example", &doc(good), &limits).unwrap();
        assert_eq!(meta.client_id(), id);
        assert_eq!(meta.display_name(), "App");
        assert_eq!(meta.metadata()["client_id"], id);

        let unnamed = json!({ "client_id": id, "redirect_uris": ["https://app.example/cb"] });
        let meta = parse_document(id, "app.example", &doc(unnamed), &limits).unwrap();
        assert_eq!(meta.display_name(), "app.example");

        let mismatch = [
            json!({ "redirect_uris": ["https://app.example/cb"] }),
            json!({ "client_id": "https://app.example/client.json/", "redirect_uris": ["https://app.example/cb"] }),
            json!({ "client_id": "https://APP.example/client.json", "redirect_uris": ["https://app.example/cb"] }),
            json!({ "client_id": 5, "redirect_uris": ["https://app.example/cb"] }),
        ];
        for d in mismatch {
            let err = parse_document(id, "app.example", &doc(d.clone()), &limits).unwrap_err();
            assert!(
                matches!(err, CimdError::ClientIdMismatch { .. }),
                "{d}: {err}"
            );
        }
        let invalid = [
            json!({ "client_id": id, "redirect_uris": ["javascript:alert(1)"] }),
            json!({ "client_id": id, "redirect_uris": ["http://evil.example/cb"] }),
            json!({ "client_id": id }),
            json!({ "client_id": id, "redirect_uris": ["https://a.example/cb"], "client_secret": "s" }),
            json!({ "client_id": id, "redirect_uris": ["https://a.example/cb"],
                    "token_endpoint_auth_method": "client_secret_post" }),
        ];
        for d in invalid {
            let err = parse_document(id, "app.example", &doc(d.clone()), &limits).unwrap_err();
            assert!(matches!(err, CimdError::InvalidMetadata(_)), "{d}: {err}");
        }
        for body in [&b"[]"[..], b"nope", b""] {
            let err = parse_document(id, "app.example", body, &limits).unwrap_err();
            assert!(matches!(err, CimdError::NotJson(_)), "{err}");
        }
    }

    // --- fetching ---------------------------------------------------------

    /// How the test server answers every request.
    #[derive(Clone)]
    enum Reply {
        /// 200 with this content type, optional Cache-Control, and body (with Content-Length).
        Json {
            content_type: &'static str,
            cache_control: Option<&'static str>,
            body: Vec<u8>,
        },
        /// A full raw HTTP response.
        Raw(String),
        /// 200 application/json, chunked, `total` bytes of JSON-ish filler, no Content-Length.
        Endless { total: usize },
        /// Read the request, then never answer.
        Hang,
    }

    /// A local HTTPS server for `localhost` with a CA made at run time.
    struct TestServer {
        port: u16,
        ca_der: Vec<u8>,
        requests: Arc<AtomicUsize>,
    }

    impl TestServer {
        async fn start(reply: Reply) -> Self {
            Self::start_replying(|_| reply).await
        }

        /// Serves `body(client_id)` as application/json.
        async fn start_with(body: impl FnOnce(&str) -> Vec<u8>) -> Self {
            Self::start_replying(|id| Reply::Json {
                content_type: "application/json",
                cache_control: None,
                body: body(id),
            })
            .await
        }

        async fn start_with_document() -> Self {
            Self::start_with(document).await
        }

        async fn start_with_cache_control(cache_control: &'static str) -> Self {
            Self::start_replying(|id| Reply::Json {
                content_type: "application/json",
                cache_control: Some(cache_control),
                body: document(id),
            })
            .await
        }

        /// Binds, then asks `make` for the reply given the server's client id URL.
        async fn start_replying(make: impl FnOnce(&str) -> Reply) -> Self {
            let (ca_der, server_config) = tls_server_config();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let reply = make(&format!("https://localhost:{port}/client.json"));
            let requests = Arc::new(AtomicUsize::new(0));
            let counter = requests.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    let counter = counter.clone();
                    let reply = reply.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = serve_reply(&mut tls, &reply).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
            Self {
                port,
                ca_der,
                requests,
            }
        }

        fn client_id(&self) -> String {
            format!("https://localhost:{}/client.json", self.port)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        fn fetcher(&self, timeout: Duration) -> CimdFetcher {
            CimdFetcher::new(CimdConfig {
                timeout,
                allow: AllowList::new(["localhost"]),
                extra_roots_der: vec![self.ca_der.clone()],
                ..CimdConfig::default()
            })
            .unwrap()
        }
    }

    async fn serve_reply(
        tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        reply: &Reply,
    ) -> std::io::Result<()> {
        match reply {
            Reply::Json {
                content_type,
                cache_control,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n",
                    body.len()
                );
                if let Some(cc) = cache_control {
                    head.push_str(&format!("Cache-Control: {cc}\r\n"));
                }
                head.push_str("\r\n");
                tls.write_all(head.as_bytes()).await?;
                tls.write_all(body).await
            }
            Reply::Raw(raw) => tls.write_all(raw.as_bytes()).await,
            Reply::Endless { total } => {
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                )
                .await?;
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < *total {
                    tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    tls.write_all(&chunk).await?;
                    tls.write_all(b"\r\n").await?;
                    sent += chunk.len();
                }
                tls.write_all(b"0\r\n\r\n").await
            }
            Reply::Hang => std::future::pending().await,
        }
    }

    fn tls_server_config() -> (Vec<u8>, rustls::ServerConfig) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cimd test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        (ca_cert.der().to_vec(), config)
    }

    fn document(client_id: &str) -> Vec<u8> {
        json!({
            "client_id": client_id,
            "client_name": "Test Client",
            "redirect_uris": ["http://127.0.0.1/callback"],
        })
        .to_string()
        .into_bytes()
    }

    /// Asserts nothing connected to `listener` before now: a probe connection
    /// made now must be the first one in its accept queue.
    async fn assert_no_connection_before_now(listener: &TcpListener) {
        let addr = listener.local_addr().unwrap();
        let probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, first_peer) = listener.accept().await.unwrap();
        assert_eq!(
            first_peer,
            probe.local_addr().unwrap(),
            "something connected to the listener before the probe"
        );
    }

    #[tokio::test]
    async fn loopback_is_refused_before_any_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fetcher = CimdFetcher::new(CimdConfig::default()).unwrap();
        for client_id in [
            format!("https://localhost:{port}/client.json"),
            format!("https://127.0.0.1:{port}/client.json"),
            format!("https://[::ffff:7f00:1]:{port}/client.json"),
        ] {
            let err = fetcher.fetch(&client_id).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    CimdError::ForbiddenAddress {
                        class: AddressClass::Loopback,
                        ..
                    }
                ),
                "{client_id}: {err}"
            );
            assert!(err.to_string().contains("loopback address"), "{err}");
        }
        assert_no_connection_before_now(&listener).await;
    }

    #[tokio::test]
    async fn metadata_and_private_addresses_are_refused() {
        let fetcher = CimdFetcher::new(CimdConfig {
            // Even a host on the allow-list may only reach loopback.
            allow: AllowList::new(["169.254.169.254", "10.0.0.1"]),
            ..CimdConfig::default()
        })
        .unwrap();
        let started = Instant::now();
        let err = fetcher
            .fetch("https://169.254.169.254/latest/meta-data")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to fetch client metadata from 169.254.169.254: link-local address \
             (the cloud instance metadata service)"
        );
        let err = fetcher
            .fetch("https://10.0.0.1/client.json")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CimdError::ForbiddenAddress {
                    class: AddressClass::Private,
                    ..
                }
            ),
            "{err}"
        );
        let err = fetcher
            .fetch("https://[fe80::1]/client.json")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CimdError::ForbiddenAddress {
                    class: AddressClass::LinkLocal,
                    ..
                }
            ),
            "{err}"
        );
        // Refused without trying to connect (a connect would hang or fail slowly).
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn allow_listed_loopback_host_is_fetched_over_https() {
        let server = TestServer::start_with_document().await;
        let fetcher = server.fetcher(DEFAULT_FETCH_TIMEOUT);
        let meta = fetcher.fetch(&server.client_id()).await.unwrap();
        assert_eq!(meta.client_id(), server.client_id());
        assert_eq!(meta.display_name(), "Test Client");
        assert_eq!(
            meta.registration().redirect_uris(),
            ["http://127.0.0.1/callback"]
        );
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn untrusted_certificate_is_refused() {
        let server = TestServer::start_with_document().await;
        let fetcher = CimdFetcher::new(CimdConfig {
            allow: AllowList::new(["localhost"]),
            ..CimdConfig::default()
        })
        .unwrap();
        let err = fetcher.fetch(&server.client_id()).await.unwrap_err();
        assert!(matches!(err, CimdError::Connect(_)), "{err}");
    }

    #[tokio::test]
    async fn cache_hit_means_one_request() {
        let server = TestServer::start_with_document().await;
        let fetcher = server.fetcher(DEFAULT_FETCH_TIMEOUT);
        let id = server.client_id();
        let t0 = Instant::now();
        let first = fetcher.fetch_at(&id, t0).await.unwrap();
        let second = fetcher
            .fetch_at(&id, t0 + DEFAULT_CACHE_TTL - Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(server.requests(), 1);
        // Once the entry expires the document is fetched again.
        fetcher.fetch_at(&id, t0 + DEFAULT_CACHE_TTL).await.unwrap();
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn failures_are_cached_briefly() {
        let server = TestServer::start(Reply::Raw(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ))
        .await;
        let fetcher = server.fetcher(DEFAULT_FETCH_TIMEOUT);
        let id = server.client_id();
        let t0 = Instant::now();
        for _ in 0..5 {
            let err = fetcher.fetch_at(&id, t0).await.unwrap_err();
            assert_eq!(err, CimdError::Status { status: 404 });
        }
        assert_eq!(server.requests(), 1);
        let err = fetcher
            .fetch_at(&id, t0 + DEFAULT_FAILURE_TTL)
            .await
            .unwrap_err();
        assert_eq!(err, CimdError::Status { status: 404 });
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn ten_megabyte_document_is_refused_quickly() {
        for reply in [
            Reply::Endless {
                total: 10 * 1024 * 1024,
            },
            Reply::Json {
                content_type: "application/json",
                cache_control: None,
                body: vec![b' '; 10 * 1024 * 1024],
            },
        ] {
            let server = TestServer::start(reply).await;
            let fetcher = server.fetcher(DEFAULT_FETCH_TIMEOUT);
            let started = Instant::now();
            let err = fetcher.fetch(&server.client_id()).await.unwrap_err();
            assert_eq!(
                err,
                CimdError::TooLarge {
                    limit: DEFAULT_MAX_DOCUMENT_BYTES
                }
            );
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }

    #[tokio::test]
    async fn wrong_client_id_in_document_is_refused() {
        let server =
            TestServer::start_with(|id| document(&id.replace("client.json", "other.json"))).await;
        let err = server
            .fetcher(DEFAULT_FETCH_TIMEOUT)
            .fetch(&server.client_id())
            .await
            .unwrap_err();
        assert!(matches!(err, CimdError::ClientIdMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let server = TestServer::start(Reply::Hang).await;
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let err = server
            .fetcher(limit)
            .fetch(&server.client_id())
            .await
            .unwrap_err();
        assert_eq!(err, CimdError::Timeout { limit });
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn redirects_wrong_types_and_statuses_are_refused() {
        let cases = [
            (
                Reply::Raw(
                    "HTTP/1.1 302 Found\r\nLocation: https://169.254.169.254/\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                        .into(),
                ),
                CimdError::Redirected { status: 302 },
            ),
            (
                Reply::Json {
                    content_type: "text/html",
                    cache_control: None,
                    body: b"{}".to_vec(),
                },
                CimdError::ContentType {
                    got: "text/html".into(),
                },
            ),
            (
                Reply::Raw(
                    "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                ),
                CimdError::Status { status: 500 },
            ),
        ];
        for (reply, expected) in cases {
            let server = TestServer::start(reply).await;
            let err = server
                .fetcher(DEFAULT_FETCH_TIMEOUT)
                .fetch(&server.client_id())
                .await
                .unwrap_err();
            assert_eq!(err, expected);
        }
    }

    #[tokio::test]
    async fn cache_control_sets_the_ttl() {
        let server = TestServer::start_with_cache_control("max-age=120").await;
        let fetcher = server.fetcher(DEFAULT_FETCH_TIMEOUT);
        let id = server.client_id();
        let t0 = Instant::now();
        fetcher.fetch_at(&id, t0).await.unwrap();
        fetcher
            .fetch_at(&id, t0 + Duration::from_secs(119))
            .await
            .unwrap();
        assert_eq!(server.requests(), 1);
        fetcher
            .fetch_at(&id, t0 + Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(server.requests(), 2);
    }
}
