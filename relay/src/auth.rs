//! The resource-server side of OAuth at the relay: every request under
//! `/t/{tunnel}/` carries a bearer access token for exactly that tunnel, or it
//! is answered here (401/400) and nothing reaches the agent.
//!
//! Signing keys live in `<state>/signing-keys.json` (0600), made on first use
//! by the relay or by `mcp-relay tokens issue`, rotated by `mcp-relay keys
//! rotate`; a running relay reloads the file when it changes (checked at most
//! once a second), so rotations and new keys apply without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_tunnel_proto::TunnelName;

use crate::oauth::assertion::{AssertionClaims, sign_assertion};
use crate::oauth::cache::ValidatorWithCache;
use crate::oauth::keys::{KeySet, StoredKeySet};
use crate::oauth::token::{AccessClaims, Validator, unix_now};
use crate::state_dir::{StateDir, write_private};

/// The `sub` of a user's tokens.
pub fn user_subject(id: crate::store::UserId) -> String {
    format!("user-{}", id.0)
}

/// The scope every tunnel token carries.
pub const MCP_SCOPE: &str = "mcp";

/// How often the key file is checked for changes.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// File holding the relay's signing keys.
pub const KEYS_FILE: &str = "signing-keys.json";

/// Loads the key set from `state`, creating it on first use.
pub fn load_or_create_keys(state: &StateDir) -> anyhow::Result<KeySet> {
    let path = state.path(KEYS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => read_keys(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = KeySet::generate().context("generating the relay's signing key")?;
            save_keys(state, &keys)?;
            tracing::info!(kid = keys.active().kid(), "created the relay's signing key");
            Ok(keys)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the key set (0600, atomically).
pub fn save_keys(state: &StateDir, keys: &KeySet) -> anyhow::Result<()> {
    write_private(
        &state.path(KEYS_FILE),
        &serde_json::to_vec_pretty(&keys.to_stored())?,
    )
}

fn peek_audience(token: &str) -> Option<String> {
    use base64::Engine;
    if token.len() > crate::oauth::token::MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("aud")?.as_str().map(str::to_owned)
}

fn read_keys(path: &Path, bytes: &[u8]) -> anyhow::Result<KeySet> {
    let stored: StoredKeySet =
        serde_json::from_slice(bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    KeySet::from_stored(&stored).with_context(|| format!("{} holds an invalid key", path.display()))
}

/// The relay's bearer check and assertion signer.
#[derive(Debug)]
pub struct Auth {
    required: bool,
    issuer: String,
    public_url: String,
    keys: RwLock<Arc<KeySet>>,
    validator: ValidatorWithCache,
    keys_path: PathBuf,
    reload: Mutex<(Instant, Option<SystemTime>)>,
    /// Bumped whenever the signing keys are reloaded (for pushing them to agents).
    keys_generation: std::sync::atomic::AtomicU64,
    /// Random per process: prefixes request ids in assertions, so ids stay
    /// unique across restarts (agents refuse a request id seen before).
    boot_id: String,
    /// With subdomain routing: `(scheme, host[:port])` of the public URL;
    /// tunnel URLs are then `scheme://NAME.host/mcp`.
    subdomains: Option<(String, String)>,
}

/// Which URL form a request used to name its tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// `https://relay/t/NAME/mcp`
    #[default]
    Path,
    /// `https://NAME.relay/mcp`
    Subdomain,
}

/// Why a request was refused; [`Auth::refusal_response`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, or 400 for a malformed request.
    pub status: StatusCode,
    /// The `error=…, error_description=…` challenge parameters, if any.
    pub error: Option<String>,
}

/// What the bearer check found.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A valid token's claims.
    Token(Arc<AccessClaims>),
    /// Authentication is off (`--no-auth`).
    Anonymous,
}

impl Auth {
    /// A checker for tokens issued by `public_url` (the issuer) with `keys`.
    pub fn new(state: &StateDir, public_url: &str, keys: KeySet, required: bool) -> Self {
        let validator = ValidatorWithCache::new(Validator::new(public_url, keys.verifying_keys()));
        let mtime = std::fs::metadata(state.path(KEYS_FILE))
            .and_then(|m| m.modified())
            .ok();
        Self {
            required,
            issuer: public_url.to_owned(),
            public_url: public_url.to_owned(),
            keys: RwLock::new(Arc::new(keys)),
            validator,
            keys_path: state.path(KEYS_FILE),
            reload: Mutex::new((Instant::now(), mtime)),
            keys_generation: std::sync::atomic::AtomicU64::new(0),
            boot_id: hex::encode(rand::random::<[u8; 8]>()),
            subdomains: None,
        }
    }

    /// Turns on subdomain routing: tunnel URLs become
    /// `https://NAME.<public host>/mcp` (path URLs keep working).
    pub fn with_subdomains(mut self) -> anyhow::Result<Self> {
        let url = url::Url::parse(&self.public_url)?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            _ => anyhow::bail!(
                "subdomains needs a public_url with a DNS name, not {}",
                self.public_url
            ),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        self.subdomains = Some((url.scheme().to_owned(), authority));
        Ok(self)
    }

    /// The public host tunnels are subdomains of, when subdomain routing is on.
    pub fn subdomain_parent(&self) -> Option<&str> {
        self.subdomains
            .as_ref()
            .map(|(_, a)| a.rsplit_once(':').map(|(h, _)| h).unwrap_or(a))
    }

    /// A tunnel's resource URL in the form `via`.
    pub fn resource_url_via(&self, tunnel: &TunnelName, via: Via) -> String {
        match (&self.subdomains, via) {
            (Some((scheme, authority)), Via::Subdomain) => {
                format!("{scheme}://{tunnel}.{authority}/mcp")
            }
            _ => format!("{}/t/{tunnel}/mcp", self.public_url),
        }
    }

    /// The protected-resource metadata URL (RFC 9728) of a tunnel's resource
    /// URL in the form `via`.
    pub fn resource_metadata_url_via(&self, tunnel: &TunnelName, via: Via) -> String {
        match (&self.subdomains, via) {
            (Some((scheme, authority)), Via::Subdomain) => {
                format!("{scheme}://{tunnel}.{authority}/.well-known/oauth-protected-resource/mcp")
            }
            _ => format!(
                "{}/.well-known/oauth-protected-resource/t/{tunnel}/mcp",
                self.public_url
            ),
        }
    }

    /// The tunnel a resource URL (RFC 8707 `resource`) names, in either form.
    pub fn tunnel_of_resource(&self, resource: &str) -> Option<TunnelName> {
        if let Some(t) = crate::authorization::authorize::tunnel_of(&self.public_url, resource) {
            return Some(t);
        }
        let (scheme, authority) = self.subdomains.as_ref()?;
        let rest = resource
            .strip_prefix(scheme.as_str())?
            .strip_prefix("://")?;
        let (label, rest) = rest.split_once('.')?;
        if rest != format!("{authority}/mcp") {
            return None;
        }
        TunnelName::parse(label).ok()
    }

    /// Whether requests must carry a token.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The canonical resource URL of a tunnel (the subdomain form when
    /// subdomain routing is on): what tokens issued without a `resource` get.
    pub fn resource_url(&self, tunnel: &TunnelName) -> String {
        self.resource_url_via(tunnel, self.canonical_via())
    }

    /// The URL form tunnels are shown in.
    pub fn canonical_via(&self) -> Via {
        if self.subdomains.is_some() {
            Via::Subdomain
        } else {
            Via::Path
        }
    }

    /// Checks the request's bearer token for `tunnel`; `Err` is the response to send.
    pub fn check(
        &self,
        uri_query: Option<&str>,
        headers: &HeaderMap,
        tunnel: &TunnelName,
        via: Via,
    ) -> Result<Caller, Refusal> {
        if !self.required {
            return Ok(Caller::Anonymous);
        }
        if uri_query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token="))) {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                error: Some("error=\"invalid_request\", error_description=\"send the access token in the Authorization header, never in the URL\"".to_owned()),
            });
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                error: None,
            });
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                error: Some("error=\"invalid_request\", error_description=\"use Authorization: Bearer <token>\"".to_owned()),
            });
        };
        self.maybe_reload();
        let now = unix_now();
        let mut checked = self
            .validator
            .validate(token, &self.resource_url_via(tunnel, via), now);
        // Both URL forms name the same tunnel on this relay: a token for the
        // other form is as good (a client may have signed in through either).
        if checked.is_err() && self.subdomains.is_some() {
            let other = match via {
                Via::Path => Via::Subdomain,
                Via::Subdomain => Via::Path,
            };
            if let Ok(c) =
                self.validator
                    .validate(token, &self.resource_url_via(tunnel, other), now)
            {
                checked = Ok(c);
            }
        }
        match checked {
            Ok(claims) => Ok(Caller::Token(claims)),
            Err(e) => {
                tracing::debug!(tunnel = %tunnel, error = %e, "bearer token refused");
                Err(Refusal {
                    status: StatusCode::UNAUTHORIZED,
                    error: Some(e.www_authenticate_params()),
                })
            }
        }
    }

    /// The request id as assertions and audit records carry it:
    /// `<boot id>-<counter>`, unique across relay restarts.
    pub fn request_id_string(&self, request_id: u64) -> String {
        format!("{}-{request_id}", self.boot_id)
    }

    /// Signs the identity assertion the agent receives instead of the token.
    pub fn assertion(
        &self,
        caller: &Caller,
        tunnel: &TunnelName,
        request_id: u64,
    ) -> Option<String> {
        let Caller::Token(claims) = caller else {
            return None;
        };
        let now = unix_now();
        let rid = self.request_id_string(request_id);
        let a = AssertionClaims::for_request(claims, tunnel.as_str(), &rid, now);
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        match sign_assertion(&keys, &a) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "signing an identity assertion failed");
                None
            }
        }
    }

    /// Issues an access token for `grant`; returns it and its lifetime in seconds.
    pub fn issue(
        &self,
        grant: &crate::oauth::token::AccessGrant,
    ) -> Result<(String, u64), crate::oauth::token::IssueError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let issuer = crate::oauth::token::Issuer::new(self.issuer.clone());
        let t = issuer.issue(&keys, grant, unix_now())?;
        Ok((t.into_token(), issuer.ttl().as_secs()))
    }

    /// Refuses every token of `sub` issued at or before `at` (Unix seconds).
    pub fn revoke_subject(&self, sub: &str, at: u64) {
        self.validator.revoke_sub(sub, at);
    }

    /// Refuses every token issued to this OAuth client at or before `at`.
    pub fn revoke_client(&self, client_id: &str, at: u64) {
        self.validator.revoke_client(client_id, at, unix_now());
    }

    /// Refuses the token with this `jti` until its expiry.
    pub fn revoke_jti(&self, jti: &str, exp: u64) {
        self.validator.revoke_jti(jti, exp, unix_now());
    }

    /// Validates a token's signature and issuer for revocation (any audience
    /// of this relay); `None` if it is not one of ours.
    pub fn inspect(&self, token: &str) -> Option<Arc<AccessClaims>> {
        // Read the audience unverified, then verify everything against it.
        let aud = peek_audience(token)?;
        self.validator.validate(token, &aud, unix_now()).ok()
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.maybe_reload();
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .jwks(unix_now())
    }

    /// The issuer (the relay's public URL).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The 401/400 response for a refusal, with its `WWW-Authenticate` challenge.
    pub fn refusal_response(&self, tunnel: &TunnelName, refusal: Refusal, via: Via) -> Response {
        let Refusal { status, error } = refusal;
        let mut v = format!(
            "Bearer resource_metadata=\"{}\", scope=\"{MCP_SCOPE}\"",
            self.resource_metadata_url_via(tunnel, via)
        );
        if let Some(e) = &error {
            v.push_str(", ");
            v.push_str(e);
        }
        let message = match &error {
            None => {
                "this tunnel needs an access token (OAuth 2.1); see the WWW-Authenticate header"
                    .to_owned()
            }
            Some(e) => e.clone(),
        };
        let code = if status == StatusCode::BAD_REQUEST {
            "invalid_request"
        } else {
            "unauthorized"
        };
        let mut r = (
            status,
            axum::Json(serde_json::json!({"error": code, "message": message})),
        )
            .into_response();
        if let Ok(h) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, h);
        }
        r
    }

    /// The keys' generation after picking up a rotated key file (if any):
    /// changes whenever the published keys change.
    pub fn keys_generation(&self) -> u64 {
        self.maybe_reload();
        self.keys_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Picks up a rotated or replaced key file (at most once per interval).
    fn maybe_reload(&self) {
        let mut guard = self.reload.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0.elapsed() < KEY_RELOAD_INTERVAL {
            return;
        }
        guard.0 = Instant::now();
        let mtime = std::fs::metadata(&self.keys_path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == guard.1 {
            return;
        }
        guard.1 = mtime;
        match std::fs::read(&self.keys_path)
            .map_err(anyhow::Error::from)
            .and_then(|b| read_keys(&self.keys_path, &b))
        {
            Ok(keys) => {
                tracing::info!(kid = keys.active().kid(), "reloaded signing keys");
                self.validator.set_keys(keys.verifying_keys());
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                self.keys_generation
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "signing keys changed but could not be loaded; keeping the old ones")
            }
        }
    }
}
