//! RFC 7591 dynamic client registration: what a client may register, checked
//! once at the edge.
//!
//! ```text
//!   POST /register body ──► validate_registration ──► ValidatedRegistration ──► store (NewClient)
//!                                 │                          │
//!                                 └─► RegistrationError      └─► registration_response (201 JSON)
//!                                     (400 + RFC 7591 error body)
//!
//!   /authorize redirect_uri ──► redirect_uri_matches(registered, presented)
//! ```
//!
//! Sans-IO: bytes in, typed values or errors out. The same rules check the
//! metadata of a client ID metadata document (`oauth::cimd`), so both ways of
//! becoming a client accept exactly the same redirect URIs.
//!
//! # Policy
//! - **Public clients only.** `token_endpoint_auth_method` is `none` (absent
//!   means `none` too: RFC 7591 §3.2.1 lets the server substitute values);
//!   PKCE is what protects the code. Any other method is refused rather than
//!   silently downgraded, so a client that expects a secret learns it at once.
//! - **Grants**: `authorization_code` (required) and `refresh_token`;
//!   `response_types` is `code` only.
//! - **Redirect URIs** (1 ..= [`MAX_REDIRECT_URIS`], each ≤ [`MAX_REDIRECT_URI_BYTES`]):
//!   - `https://` with any host;
//!   - `http://` only on a loopback host spelled `localhost`, `127.0.0.1` or
//!     `[::1]`, any port (native apps, RFC 8252 §7.3);
//!   - a private-use scheme in reverse-DNS form such as
//!     `com.example.app:/callback` (RFC 8252 §7.1) — the scheme must contain a
//!     dot, which also rules out `javascript:`, `data:`, `file:`, `vbscript:`,
//!     `blob:` and bare custom schemes like `myapp:`. Such a scheme proves
//!     nothing about who owns it, but neither does an https host an attacker
//!     registered; the consent page is the real guard. Relays that want
//!     "https or loopback only" turn it off with
//!     [`RegistrationLimits::allow_private_use_schemes`].
//!   - never a fragment, never userinfo (`https://good@evil/`), and only
//!     printable ASCII without spaces or backslashes, so the string we compare
//!     is the string a browser follows (no WHATWG whitespace stripping or
//!     `\`-as-`/` surprises). Internationalized hosts must be punycode.
//! - **Unknown fields are ignored** (RFC 7591 §2), and so are known ones the
//!   relay has no use for (`tos_uri`, `jwks`, `software_id`, …); neither is
//!   stored nor echoed back.

use std::fmt;

use serde_json::{Map, Value, json};
use url::{Host, Url};

/// Largest registration request body accepted (16 KiB), checked before parsing.
pub const MAX_REGISTRATION_BODY_BYTES: usize = 16 * 1024;

/// Most redirect URIs one client may register (10).
pub const MAX_REDIRECT_URIS: usize = 10;

/// Longest redirect URI, and longest `client_uri` / `logo_uri` (2 KiB).
pub const MAX_REDIRECT_URI_BYTES: usize = 2048;

/// Longest `client_name` in characters, after control characters are stripped (200).
pub const MAX_CLIENT_NAME_CHARS: usize = 200;

/// Longest `client_name` in UTF-8 bytes (256): the store's limit on a client name.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;

/// Longest `scope` value in bytes (1 KiB): the store's limit on a scope.
pub const MAX_SCOPE_BYTES: usize = 1024;

/// Largest accepted metadata as stored, in bytes of JSON (16 KiB): the
/// store's limit on a client's metadata. Only reachable by a body near
/// [`MAX_REGISTRATION_BODY_BYTES`], since the defaults we add are small.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The limits a registration is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationLimits {
    /// Largest request body ([`MAX_REGISTRATION_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// Most redirect URIs ([`MAX_REDIRECT_URIS`]).
    pub max_redirect_uris: usize,
    /// Longest URI ([`MAX_REDIRECT_URI_BYTES`]).
    pub max_uri_bytes: usize,
    /// Whether reverse-DNS private-use schemes (`com.example.app:/cb`) are
    /// accepted as redirect URIs (default `true`; see the module docs).
    pub allow_private_use_schemes: bool,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: MAX_REGISTRATION_BODY_BYTES,
            max_redirect_uris: MAX_REDIRECT_URIS,
            max_uri_bytes: MAX_REDIRECT_URI_BYTES,
            allow_private_use_schemes: true,
        }
    }
}

/// A grant type a registered client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    /// `authorization_code` (with PKCE S256).
    AuthorizationCode,
    /// `refresh_token` (rotated on every use).
    RefreshToken,
}

impl GrantType {
    /// The RFC 7591 / RFC 6749 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            _ => None,
        }
    }
}

/// What kind of redirect URI a string is (it passed [`check_redirect_uri`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedirectUriKind {
    /// `https://…`, any host.
    Https,
    /// `http://` on `localhost`, `127.0.0.1` or `[::1]` (any port).
    Loopback,
    /// A reverse-DNS private-use scheme (`com.example.app:/cb`).
    PrivateUse,
}

/// Client metadata that passed every check. Only [`validate_registration`]
/// and [`validate_metadata`] make one, so holding one means it is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRegistration {
    redirect_uris: Vec<String>,
    grant_types: Vec<GrantType>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    scope: Option<String>,
}

impl ValidatedRegistration {
    /// The redirect URIs exactly as sent (deduplicated, order kept): the
    /// authorization endpoint compares against these strings.
    pub fn redirect_uris(&self) -> &[String] {
        &self.redirect_uris
    }

    /// The grant types (always contains [`GrantType::AuthorizationCode`]).
    pub fn grant_types(&self) -> &[GrantType] {
        &self.grant_types
    }

    /// The client's name with control and bidi-override characters removed;
    /// `None` if absent or empty.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// The client's home page (https).
    pub fn client_uri(&self) -> Option<&str> {
        self.client_uri.as_deref()
    }

    /// The client's logo (https).
    pub fn logo_uri(&self) -> Option<&str> {
        self.logo_uri.as_deref()
    }

    /// The space-separated scopes the client said it may request.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The accepted client metadata as an RFC 7591 JSON object (for
    /// `NewClient::metadata`). Only the fields the relay accepted appear, so
    /// its size is bounded by the limits above (well under the store's 16 KiB).
    pub fn metadata(&self) -> Value {
        let mut m = Map::new();
        m.insert("redirect_uris".into(), json!(self.redirect_uris));
        m.insert(
            "grant_types".into(),
            json!(
                self.grant_types
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
            ),
        );
        m.insert("response_types".into(), json!(["code"]));
        m.insert("token_endpoint_auth_method".into(), json!("none"));
        let optional = [
            ("client_name", &self.client_name),
            ("client_uri", &self.client_uri),
            ("logo_uri", &self.logo_uri),
            ("scope", &self.scope),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                m.insert(key.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

/// Why a registration (or a client metadata document) was refused. Each
/// variant maps to an RFC 7591 §3.2.2 error code ([`Self::error_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The body is larger than [`RegistrationLimits::max_body_bytes`]; it was not parsed.
    #[error("the registration request is {size} bytes; the limit is {limit} bytes")]
    BodyTooLarge {
        /// Size of the body.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not a JSON object.
    #[error("the registration request must be a JSON object: {0}")]
    NotJsonObject(String),
    /// `redirect_uris` is absent, empty, not a list of strings, or too long a list.
    #[error("{0}")]
    RedirectUris(String),
    /// One redirect URI is not acceptable.
    #[error("redirect URI {uri:?} is refused: {problem}")]
    InvalidRedirectUri {
        /// The URI (first 100 characters).
        uri: String,
        /// What is wrong with it.
        problem: RedirectUriError,
    },
    /// A metadata field other than `redirect_uris` has a value the relay does not accept.
    #[error("{field}: {reason}")]
    InvalidMetadata {
        /// The RFC 7591 field name.
        field: &'static str,
        /// What is wrong and what is accepted instead.
        reason: String,
    },
}

impl RegistrationError {
    /// The RFC 7591 §3.2.2 `error` code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::RedirectUris(_) | Self::InvalidRedirectUri { .. } => "invalid_redirect_uri",
            Self::BodyTooLarge { .. } | Self::NotJsonObject(_) | Self::InvalidMetadata { .. } => {
                "invalid_client_metadata"
            }
        }
    }

    /// The HTTP status to answer with: 413 for an oversized body, 400 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::BodyTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON error body: `{"error": …, "error_description": …}`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": self.error_code(),
            "error_description": self.to_string(),
        })
    }
}

/// What is wrong with one redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    /// Longer than the limit.
    #[error("it is {len} bytes long; the limit is {limit}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Contains a space, a control character, a backslash or non-ASCII text.
    #[error(
        "it contains spaces, control characters, backslashes or non-ASCII characters; \
         percent-encode them (and use punycode for hosts)"
    )]
    BadCharacters,
    /// Not an absolute URI.
    #[error("it is not an absolute URI ({0})")]
    NotAbsolute(String),
    /// Has a `#fragment` (RFC 6749 §3.1.2 forbids it).
    #[error("a redirect URI must not contain a fragment (#…)")]
    Fragment,
    /// Has `user:password@` in the authority.
    #[error("a redirect URI must not contain a user name or password")]
    Userinfo,
    /// Plain `http` on a host that is not loopback.
    #[error(
        "http is only allowed on a loopback host (localhost, 127.0.0.1 or [::1]); \
         use https for {host}"
    )]
    InsecureHttp {
        /// The host.
        host: String,
    },
    /// A scheme the relay never redirects to.
    #[error(
        "the scheme {scheme}: is not allowed; use https, http on a loopback host, \
         or a reverse-DNS private-use scheme such as com.example.app:/callback"
    )]
    ForbiddenScheme {
        /// The scheme.
        scheme: String,
    },
    /// A reverse-DNS private-use scheme while those are turned off.
    #[error(
        "private-use schemes ({scheme}:) are not accepted by this relay; use https or loopback http"
    )]
    PrivateUseDisabled {
        /// The scheme.
        scheme: String,
    },
}

/// Parses and checks an RFC 7591 registration request body.
pub fn validate_registration(
    body: &[u8],
    limits: &RegistrationLimits,
) -> Result<ValidatedRegistration, RegistrationError> {
    if body.len() > limits.max_body_bytes {
        return Err(RegistrationError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RegistrationError::NotJsonObject(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(RegistrationError::NotJsonObject(format!(
            "got {}",
            json_type(&value)
        )));
    };
    validate_metadata(&map, limits)
}

/// Checks client metadata already parsed into a JSON object — the body of a
/// registration request or a client ID metadata document. The size limit is
/// the caller's (it applies to the bytes).
pub fn validate_metadata(
    map: &Map<String, Value>,
    limits: &RegistrationLimits,
) -> Result<ValidatedRegistration, RegistrationError> {
    let redirect_uris = redirect_uris(map, limits)?;
    let grant_types = grant_types(map)?;
    response_types(map)?;
    auth_method(map)?;
    let client_name = client_name(map)?;
    let client_uri = https_uri(map, "client_uri", limits)?;
    let logo_uri = https_uri(map, "logo_uri", limits)?;
    let scope = scope(map)?;
    let reg = ValidatedRegistration {
        redirect_uris,
        grant_types,
        client_name,
        client_uri,
        logo_uri,
        scope,
    };
    let stored = reg.metadata().to_string().len();
    if stored > MAX_METADATA_BYTES {
        return Err(RegistrationError::InvalidMetadata {
            field: "redirect_uris",
            reason: format!(
                "the registration would take {stored} bytes to store; the limit is \
                 {MAX_METADATA_BYTES} (use fewer or shorter URIs)"
            ),
        });
    }
    Ok(reg)
}

/// The RFC 7591 §3.2.1 response for a registered client (a public client: no
/// secret, so no `client_secret_expires_at`).
pub fn registration_response(
    client_id: &str,
    issued_at: u64,
    reg: &ValidatedRegistration,
) -> Value {
    let mut body = reg.metadata();
    if let Value::Object(m) = &mut body {
        m.insert("client_id".into(), json!(client_id));
        m.insert("client_id_issued_at".into(), json!(issued_at));
    }
    body
}

/// Whether `presented` (the `redirect_uri` of an authorization or token
/// request) is one of the `registered` URIs.
///
/// Simple string comparison (RFC 6749 §3.1.2.3, OAuth 2.1 §2.3.1), with one
/// exception: for an `http` loopback URI the port may differ (RFC 8252 §7.3),
/// because a native app picks a free port at run time. Everything else —
/// the host spelling (`localhost` ≠ `127.0.0.1`), path, query — must match
/// byte for byte, and the presented URI must itself be an acceptable redirect
/// URI. A registered `http://127.0.0.1/cb` therefore matches
/// `http://127.0.0.1:53123/cb` but not `http://127.0.0.1:53123/cb/x`.
pub fn redirect_uri_matches(registered: &[String], presented: &str) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Some((host, rest)) = split_loopback(presented) else {
        return false;
    };
    if !matches!(
        check_redirect_uri(presented, &RegistrationLimits::default()),
        Ok(RedirectUriKind::Loopback)
    ) {
        return false;
    }
    registered
        .iter()
        .filter_map(|r| split_loopback(r))
        .any(|(h, r)| h == host && r == rest)
}

/// Checks one redirect URI against the policy in the module docs.
pub fn check_redirect_uri(
    uri: &str,
    limits: &RegistrationLimits,
) -> Result<RedirectUriKind, RedirectUriError> {
    if uri.len() > limits.max_uri_bytes {
        return Err(RedirectUriError::TooLong {
            len: uri.len(),
            limit: limits.max_uri_bytes,
        });
    }
    if !printable_ascii(uri) {
        return Err(RedirectUriError::BadCharacters);
    }
    let url = Url::parse(uri).map_err(|e| RedirectUriError::NotAbsolute(e.to_string()))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectUriError::Userinfo);
    }
    match url.scheme() {
        "https" => Ok(RedirectUriKind::Https),
        "http" => match url.host() {
            Some(Host::Domain("localhost")) => Ok(RedirectUriKind::Loopback),
            Some(Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST => {
                Ok(RedirectUriKind::Loopback)
            }
            Some(Host::Ipv6(ip)) if ip == std::net::Ipv6Addr::LOCALHOST => {
                Ok(RedirectUriKind::Loopback)
            }
            host => Err(RedirectUriError::InsecureHttp {
                host: host.map(|h| h.to_string()).unwrap_or_default(),
            }),
        },
        scheme if is_reverse_dns_scheme(scheme) => {
            if limits.allow_private_use_schemes {
                Ok(RedirectUriKind::PrivateUse)
            } else {
                Err(RedirectUriError::PrivateUseDisabled {
                    scheme: scheme.to_owned(),
                })
            }
        }
        scheme => Err(RedirectUriError::ForbiddenScheme {
            scheme: scheme.to_owned(),
        }),
    }
}

// --- helpers ---------------------------------------------------------------

fn redirect_uris(
    map: &Map<String, Value>,
    limits: &RegistrationLimits,
) -> Result<Vec<String>, RegistrationError> {
    let list = match map.get("redirect_uris") {
        None | Some(Value::Null) => {
            return Err(RegistrationError::RedirectUris(
                "redirect_uris is required: list the URIs the relay may send the user back to"
                    .to_owned(),
            ));
        }
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(RegistrationError::RedirectUris(format!(
                "redirect_uris must be a list of strings, got {}",
                json_type(other)
            )));
        }
    };
    if list.is_empty() {
        return Err(RegistrationError::RedirectUris(
            "redirect_uris must contain at least one URI".to_owned(),
        ));
    }
    if list.len() > limits.max_redirect_uris {
        return Err(RegistrationError::RedirectUris(format!(
            "redirect_uris has {} entries; at most {} are allowed",
            list.len(),
            limits.max_redirect_uris
        )));
    }
    let mut uris: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(uri) = item else {
            return Err(RegistrationError::RedirectUris(format!(
                "redirect_uris must be a list of strings, found {}",
                json_type(item)
            )));
        };
        check_redirect_uri(uri, limits).map_err(|problem| {
            RegistrationError::InvalidRedirectUri {
                uri: uri.chars().take(100).collect(),
                problem,
            }
        })?;
        if !uris.contains(uri) {
            uris.push(uri.clone());
        }
    }
    Ok(uris)
}

fn grant_types(map: &Map<String, Value>) -> Result<Vec<GrantType>, RegistrationError> {
    let Some(names) = string_list(map, "grant_types")? else {
        return Ok(vec![GrantType::AuthorizationCode, GrantType::RefreshToken]);
    };
    let mut grants = Vec::new();
    for name in names {
        let grant = GrantType::parse(name).ok_or_else(|| RegistrationError::InvalidMetadata {
            field: "grant_types",
            reason: format!(
                "{name:?} is not supported; use authorization_code and optionally refresh_token"
            ),
        })?;
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    if !grants.contains(&GrantType::AuthorizationCode) {
        return Err(RegistrationError::InvalidMetadata {
            field: "grant_types",
            reason: "must include authorization_code (the only way a client obtains tokens here)"
                .to_owned(),
        });
    }
    Ok(grants)
}

fn response_types(map: &Map<String, Value>) -> Result<(), RegistrationError> {
    let Some(names) = string_list(map, "response_types")? else {
        return Ok(());
    };
    if names.is_empty() || names.iter().any(|n| *n != "code") {
        return Err(RegistrationError::InvalidMetadata {
            field: "response_types",
            reason: "only [\"code\"] is supported".to_owned(),
        });
    }
    Ok(())
}

fn auth_method(map: &Map<String, Value>) -> Result<(), RegistrationError> {
    match optional_str(map, "token_endpoint_auth_method")? {
        None | Some("none") => Ok(()),
        Some(other) => Err(RegistrationError::InvalidMetadata {
            field: "token_endpoint_auth_method",
            reason: format!(
                "{other:?} is not supported; register a public client with \"none\" \
                 (PKCE protects the authorization code)"
            ),
        }),
    }
}

fn client_name(map: &Map<String, Value>) -> Result<Option<String>, RegistrationError> {
    let Some(raw) = optional_str(map, "client_name")? else {
        return Ok(None);
    };
    let name: String = raw.chars().filter(|c| !is_invisible_control(*c)).collect();
    let name = name.trim();
    let chars = name.chars().count();
    if chars > MAX_CLIENT_NAME_CHARS || name.len() > MAX_CLIENT_NAME_BYTES {
        return Err(RegistrationError::InvalidMetadata {
            field: "client_name",
            reason: format!(
                "longer than {MAX_CLIENT_NAME_CHARS} characters or {MAX_CLIENT_NAME_BYTES} bytes \
                 ({chars} characters, {} bytes)",
                name.len()
            ),
        });
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

fn https_uri(
    map: &Map<String, Value>,
    field: &'static str,
    limits: &RegistrationLimits,
) -> Result<Option<String>, RegistrationError> {
    let Some(uri) = optional_str(map, field)? else {
        return Ok(None);
    };
    let invalid = |reason: String| RegistrationError::InvalidMetadata { field, reason };
    if uri.len() > limits.max_uri_bytes {
        return Err(invalid(format!(
            "longer than {} bytes ({} bytes)",
            limits.max_uri_bytes,
            uri.len()
        )));
    }
    if !printable_ascii(uri) {
        return Err(invalid(
            "contains spaces, control characters, backslashes or non-ASCII characters".to_owned(),
        ));
    }
    let url = Url::parse(uri).map_err(|e| invalid(format!("not an absolute URI ({e})")))?;
    if url.scheme() != "https" {
        return Err(invalid("must be an https URL".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not contain a user name or password".to_owned(),
        ));
    }
    Ok(Some(uri.to_owned()))
}

fn scope(map: &Map<String, Value>) -> Result<Option<String>, RegistrationError> {
    let Some(scope) = optional_str(map, "scope")? else {
        return Ok(None);
    };
    let invalid = |reason: String| RegistrationError::InvalidMetadata {
        field: "scope",
        reason,
    };
    if scope.len() > MAX_SCOPE_BYTES {
        return Err(invalid(format!(
            "longer than {MAX_SCOPE_BYTES} bytes ({} bytes)",
            scope.len()
        )));
    }
    // RFC 6749 §3.3: scope-token = 1*NQCHAR, separated by single spaces.
    let nqchar = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if scope.is_empty() {
        return Ok(None);
    }
    if !scope
        .split(' ')
        .all(|t| !t.is_empty() && t.bytes().all(nqchar))
    {
        return Err(invalid(
            "must be scope tokens (printable ASCII without quotes or backslashes) \
             separated by single spaces"
                .to_owned(),
        ));
    }
    Ok(Some(scope.to_owned()))
}

/// A string field; `None` when absent or `null`.
fn optional_str<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, RegistrationError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RegistrationError::InvalidMetadata {
            field,
            reason: format!("must be a string, got {}", json_type(other)),
        }),
    }
}

/// A list-of-strings field; `None` when absent or `null`.
fn string_list<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<&'a str>>, RegistrationError> {
    let wrong = |got: &Value| RegistrationError::InvalidMetadata {
        field,
        reason: format!("must be a list of strings, found {}", json_type(got)),
    };
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| wrong(v)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(wrong(other)),
    }
}

/// `http://{localhost|127.0.0.1|[::1]}[:port]` split into the host and
/// everything after the authority; `None` for anything else.
fn split_loopback(uri: &str) -> Option<(&str, &str)> {
    let after = uri.strip_prefix("http://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    // `port` keeps its leading ':' so "host" and "host:" stay distinct.
    let (host, port) = match authority.strip_prefix("[::1]") {
        Some(port) => ("[::1]", port),
        None => match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        },
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return None;
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok()?;
    }
    Some((host, rest))
}

/// RFC 8252 §7.1: a scheme that is a reversed domain name (`com.example.app`).
fn is_reverse_dns_scheme(scheme: &str) -> bool {
    let labels: Vec<&str> = scheme.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Visible ASCII only: no spaces, controls, backslashes or non-ASCII.
fn printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
}

/// Control characters and the bidi overrides/isolates that could make a
/// consent page show a name other than the one registered.
fn is_invisible_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl fmt::Display for RedirectUriKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Https => "https",
            Self::Loopback => "loopback http",
            Self::PrivateUse => "private-use scheme",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RegistrationLimits {
        RegistrationLimits::default()
    }

    fn register(body: Value) -> Result<ValidatedRegistration, RegistrationError> {
        validate_registration(body.to_string().as_bytes(), &limits())
    }

    fn with_uris(uris: &[&str]) -> Result<ValidatedRegistration, RegistrationError> {
        register(json!({ "redirect_uris": uris }))
    }

    #[test]
    fn minimal_registration_gets_defaults() {
        let reg = with_uris(&["https://app.example.com/callback"]).unwrap();
        assert_eq!(reg.redirect_uris(), ["https://app.example.com/callback"]);
        assert_eq!(
            reg.grant_types(),
            [GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
        assert_eq!(reg.client_name(), None);
        let resp = registration_response("abc", 1_700_000_000, &reg);
        assert_eq!(resp["client_id"], "abc");
        assert_eq!(resp["client_id_issued_at"], 1_700_000_000);
        assert_eq!(resp["token_endpoint_auth_method"], "none");
        assert_eq!(resp["response_types"], json!(["code"]));
        assert_eq!(
            resp["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert!(resp.get("client_secret").is_none());
    }

    #[test]
    fn full_registration_round_trips_and_ignores_unknown_fields() {
        let reg = register(json!({
            "redirect_uris": ["http://127.0.0.1:33418/callback", "https://a.example/cb", "https://a.example/cb"],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "client_name": "  My\u{0007} Client\u{202e}  ",
            "client_uri": "https://a.example/",
            "logo_uri": "https://a.example/logo.png",
            "scope": "mcp:tools offline_access",
            "software_id": "x",
            "tos_uri": "javascript:ignored",
            "made_up": {"nested": [1, 2, 3]},
        }))
        .unwrap();
        assert_eq!(
            reg.redirect_uris(),
            ["http://127.0.0.1:33418/callback", "https://a.example/cb"]
        );
        assert_eq!(reg.grant_types(), [GrantType::AuthorizationCode]);
        assert_eq!(reg.client_name(), Some("My Client"));
        assert_eq!(reg.scope(), Some("mcp:tools offline_access"));
        let meta = reg.metadata();
        assert!(meta.get("made_up").is_none());
        assert!(meta.get("tos_uri").is_none());
        assert_eq!(meta["logo_uri"], "https://a.example/logo.png");
    }

    #[test]
    fn redirect_uri_policy_table() {
        let ok = [
            ("https://example.com/cb", RedirectUriKind::Https),
            ("https://example.com:8443/cb?x=1", RedirectUriKind::Https),
            ("https://localhost/cb", RedirectUriKind::Https),
            ("http://localhost/cb", RedirectUriKind::Loopback),
            ("http://localhost:8080/callback", RedirectUriKind::Loopback),
            ("http://127.0.0.1:53123/", RedirectUriKind::Loopback),
            ("http://[::1]:9000/cb", RedirectUriKind::Loopback),
            (
                "com.example.app:/oauth2redirect",
                RedirectUriKind::PrivateUse,
            ),
            ("com.example.app://callback", RedirectUriKind::PrivateUse),
        ];
        for (uri, kind) in ok {
            assert_eq!(check_redirect_uri(uri, &limits()), Ok(kind), "{uri}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_REDIRECT_URI_BYTES));
        type Expect = fn(&RedirectUriError) -> bool;
        let bad: &[(&str, Expect)] = &[
            ("javascript:alert(1)", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("data:text/html,<script>alert(1)</script>", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("file:///etc/passwd", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("vbscript:msgbox", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("myapp://callback", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("ftp://example.com/cb", |e| {
                matches!(e, RedirectUriError::ForbiddenScheme { .. })
            }),
            ("http://example.com/cb", |e| {
                matches!(e, RedirectUriError::InsecureHttp { .. })
            }),
            ("http://127.0.0.2/cb", |e| {
                matches!(e, RedirectUriError::InsecureHttp { .. })
            }),
            ("http://localhost.evil.com/cb", |e| {
                matches!(e, RedirectUriError::InsecureHttp { .. })
            }),
            ("http://10.0.0.1/cb", |e| {
                matches!(e, RedirectUriError::InsecureHttp { .. })
            }),
            ("https://example.com/cb#frag", |e| {
                *e == RedirectUriError::Fragment
            }),
            ("https://example.com/cb#", |e| {
                *e == RedirectUriError::Fragment
            }),
            ("https://good.com@evil.com/cb", |e| {
                *e == RedirectUriError::Userinfo
            }),
            ("https://user:pw@example.com/cb", |e| {
                *e == RedirectUriError::Userinfo
            }),
            ("https://good.com\\@evil.com/", |e| {
                *e == RedirectUriError::BadCharacters
            }),
            ("https://example.com/a b", |e| {
                *e == RedirectUriError::BadCharacters
            }),
            (" https://example.com/", |e| {
                *e == RedirectUriError::BadCharacters
            }),
            ("https://exa\tmple.com/", |e| {
                *e == RedirectUriError::BadCharacters
            }),
            ("https://bücher.example/", |e| {
                *e == RedirectUriError::BadCharacters
            }),
            ("/relative/cb", |e| {
                matches!(e, RedirectUriError::NotAbsolute(_))
            }),
            (&long, |e| matches!(e, RedirectUriError::TooLong { .. })),
        ];
        for (uri, expected) in bad {
            let err = check_redirect_uri(uri, &limits()).unwrap_err();
            assert!(expected(&err), "{uri}: {err:?}");
        }
    }

    #[test]
    fn private_use_schemes_can_be_turned_off() {
        let strict = RegistrationLimits {
            allow_private_use_schemes: false,
            ..limits()
        };
        assert!(matches!(
            check_redirect_uri("com.example.app:/cb", &strict),
            Err(RedirectUriError::PrivateUseDisabled { .. })
        ));
        assert_eq!(
            check_redirect_uri("https://example.com/cb", &strict),
            Ok(RedirectUriKind::Https)
        );
    }

    #[test]
    fn hostile_redirect_uris_are_invalid_redirect_uri() {
        for uri in [
            "javascript:alert(document.cookie)",
            "http://attacker.example/cb",
        ] {
            let err = with_uris(&[uri]).unwrap_err();
            assert_eq!(err.error_code(), "invalid_redirect_uri", "{uri}");
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
            let body = err.to_json();
            assert_eq!(body["error"], "invalid_redirect_uri");
            assert!(
                body["error_description"].as_str().unwrap().contains(uri),
                "{body}"
            );
        }
        // One bad URI among good ones refuses the whole registration.
        let err = with_uris(&["https://ok.example/cb", "javascript:alert(1)"]).unwrap_err();
        assert_eq!(err.error_code(), "invalid_redirect_uri");
    }

    #[test]
    fn redirect_uri_count() {
        for body in [
            json!({}),
            json!({ "redirect_uris": null }),
            json!({ "redirect_uris": [] }),
            json!({ "redirect_uris": "https://a.example/cb" }),
            json!({ "redirect_uris": [42] }),
        ] {
            let err = register(body.clone()).unwrap_err();
            assert_eq!(err.error_code(), "invalid_redirect_uri", "{body}");
        }
        let eleven: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        let err = register(json!({ "redirect_uris": eleven })).unwrap_err();
        assert!(matches!(err, RegistrationError::RedirectUris(_)), "{err}");
        let huge: Vec<String> = (0..10)
            .map(|i| format!("https://a.example/{i}/{}", "x".repeat(1900)))
            .collect();
        let body = json!({ "redirect_uris": huge });
        let big_limits = RegistrationLimits {
            max_body_bytes: 64 * 1024,
            ..limits()
        };
        let err = validate_registration(body.to_string().as_bytes(), &big_limits).unwrap_err();
        assert_eq!(err.error_code(), "invalid_client_metadata", "{err}");
        let ten = &eleven[..10];
        assert_eq!(
            register(json!({ "redirect_uris": ten }))
                .unwrap()
                .redirect_uris()
                .len(),
            10
        );
    }

    #[test]
    fn metadata_errors_are_invalid_client_metadata() {
        let cases = [
            json!({ "token_endpoint_auth_method": "client_secret_basic" }),
            json!({ "token_endpoint_auth_method": "private_key_jwt" }),
            json!({ "grant_types": ["client_credentials"] }),
            json!({ "grant_types": ["implicit"] }),
            json!({ "grant_types": ["refresh_token"] }),
            json!({ "grant_types": "authorization_code" }),
            json!({ "response_types": ["token"] }),
            json!({ "response_types": ["code", "id_token"] }),
            json!({ "response_types": [] }),
            json!({ "client_name": "x".repeat(MAX_CLIENT_NAME_CHARS + 1) }),
            json!({ "client_name": "é".repeat(150) }),
            json!({ "client_name": 7 }),
            json!({ "client_uri": "http://a.example/" }),
            json!({ "logo_uri": "javascript:alert(1)" }),
            json!({ "logo_uri": "https://u:p@a.example/logo.png" }),
            json!({ "scope": "a  b" }),
            json!({ "scope": "a\"b" }),
            json!({ "scope": "x".repeat(MAX_SCOPE_BYTES + 1) }),
        ];
        for mut body in cases {
            body["redirect_uris"] = json!(["https://a.example/cb"]);
            let err = register(body.clone()).unwrap_err();
            assert_eq!(err.error_code(), "invalid_client_metadata", "{body}: {err}");
            assert_eq!(err.to_json()["error"], "invalid_client_metadata");
        }
        // Exactly at the limits is fine.
        let ok = json!({
            "redirect_uris": ["https://a.example/cb"],
            "client_name": "n".repeat(MAX_CLIENT_NAME_CHARS),
        });
        assert!(register(ok).is_ok());
    }

    #[test]
    fn bad_bodies() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"\"str\"",
            b"",
            b"{\"redirect_uris\": [",
        ] {
            let err = validate_registration(body, &limits()).unwrap_err();
            assert!(matches!(err, RegistrationError::NotJsonObject(_)), "{err}");
            assert_eq!(err.error_code(), "invalid_client_metadata");
        }
        let big = vec![b' '; MAX_REGISTRATION_BODY_BYTES + 1];
        let err = validate_registration(&big, &limits()).unwrap_err();
        assert_eq!(
            err,
            RegistrationError::BodyTooLarge {
                size: MAX_REGISTRATION_BODY_BYTES + 1,
                limit: MAX_REGISTRATION_BODY_BYTES
            }
        );
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.error_code(), "invalid_client_metadata");
    }

    #[test]
    fn redirect_matching_is_exact_except_loopback_port() {
        let registered = vec![
            "https://app.example/cb".to_owned(),
            "http://127.0.0.1/callback".to_owned(),
            "http://localhost:8080/cb?x=1".to_owned(),
            "http://[::1]/cb".to_owned(),
        ];
        let yes = [
            "https://app.example/cb",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:53123/callback",
            "http://localhost/cb?x=1",
            "http://localhost:9999/cb?x=1",
            "http://[::1]:4000/cb",
        ];
        for p in yes {
            assert!(redirect_uri_matches(&registered, p), "{p}");
        }
        let no = [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example:443/cb",
            "https://APP.example/cb",
            "https://app.example/cb#x",
            "https://evil.example/cb",
            "http://app.example/cb",
            "http://127.0.0.1:53123/callback/../x",
            "http://127.0.0.1:53123/callbackx",
            "http://localhost:53123/callback",
            "http://127.0.0.1:53123/cb?x=1",
            "http://127.0.0.1:99999/callback",
            "http://127.0.0.1:/callback",
            "http://127.0.0.1:53123/callback#f",
            "http://u@127.0.0.1:53123/callback",
            "http://127.0.0.1.evil.example:80/callback",
            "",
        ];
        for p in no {
            assert!(!redirect_uri_matches(&registered, p), "{p}");
        }
        // Port leniency is for http loopback only, never for https.
        let https_loopback = vec!["https://localhost/cb".to_owned()];
        assert!(!redirect_uri_matches(
            &https_loopback,
            "https://localhost:8443/cb"
        ));
    }
}
