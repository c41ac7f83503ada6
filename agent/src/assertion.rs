//! The relay's identity assertion, checked on every request stream.
//!
//! The relay never forwards an MCP client's token. Instead, each request
//! stream's head carries a short-lived compact JWS the relay signed (its
//! `typ` is [`ASSERTION_TYP`]): who the caller is (sub, email, groups, OAuth
//! client), which tunnel, and the relay's request id (`rid`). The agent
//! checks it before the request may reach the upstream:
//!
//! ```text
//!  RequestHead.assertion ──► AssertionVerifier::check ──► Some(VerifiedCaller) ──► upstream
//!                              │  header: EdDSA only, typ, known kid
//!                              │  signature (relay's public keys, a JWKS)
//!                              │  claims: lifetime ≤ 60 s, exp/iat ± 10 s,
//!                              │          aud/tunnel = this tunnel, iss = this relay
//!                              └  rid never seen before (replay cache)
//! ```
//!
//! Where the keys come from ([`AssertionVerifier::on_welcome`] applies the
//! rule):
//! - **Device-certificate sessions** always require an assertion. The keys
//!   are the ones pinned at `mcp-agent login` (`assertion-keys.json` in the
//!   config dir) together with the ones the relay sends on the connection
//!   (`Welcome.assertion_keys`, `DeviceUpdate.assertion_keys`). No keys at
//!   all means every stream is refused.
//! - **Agent-token sessions** (dev relays) require an assertion exactly when
//!   the relay's `Welcome` carries keys; without keys the relay does not
//!   authenticate callers (`--no-auth`) and streams pass unchecked.
//!
//! When an assertion names a key the agent does not know (the relay rotated
//! its signing key), [`AssertionVerifier::admit`] fetches the relay's JWKS
//! (`/.well-known/jwks.json`, over the same TLS trust as the QUIC link) at
//! most once per [`JWKS_REFRESH_COOLDOWN`] and tries again.
//!
//! Verification ([`AssertionVerifier::verify`]) is pure: the caller passes
//! `now`, so tests need no clock. The relay's side of this is
//! `relay/src/oauth/assertion.rs`; the constants here match it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use mcp_tunnel_proto::Welcome;
use serde::Deserialize;
use url::Url;

/// The JWS `typ` of an identity assertion (the relay's `ASSERTION_TYP`).
pub const ASSERTION_TYP: &str = "mcp-tunnel-assertion+jwt";

/// The only JWS `alg` accepted. The relay pins Ed25519; `none`, `HS*` and
/// every other name are refused before any key is looked at.
pub const ASSERTION_ALG: &str = "EdDSA";

/// Longest lifetime (`exp - iat`) an accepted assertion may have.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// Clock difference tolerated between the relay and this machine, both ways.
pub const ASSERTION_LEEWAY: Duration = Duration::from_secs(10);

/// Longest assertion parsed at all (the relay's limit for any token).
pub const MAX_ASSERTION_BYTES: usize = 16 * 1024;

/// Longest request id (`rid`) accepted; the relay's are about 30 bytes.
pub const MAX_RID_BYTES: usize = 256;

/// Most keys a JWKS may carry (the relay's limit).
pub const MAX_JWKS_KEYS: usize = 16;

/// Request ids remembered at once by default. Each stays until its
/// assertion can no longer verify (`exp` + leeway), so this bounds the
/// request rate the agent serves to about 14,000 per second sustained
/// (1,000,000 over a 70 s window); at roughly 100 bytes per entry the cache
/// stays near 100 MB at worst. When it is full, new streams are refused
/// ([`AssertionError::ReplayCacheFull`]) rather than an entry forgotten early:
/// forgetting would let that assertion be replayed.
pub const DEFAULT_MAX_REPLAY_ENTRIES: usize = 1_000_000;

/// Shortest time between two fetches of the relay's JWKS on an unknown key.
pub const JWKS_REFRESH_COOLDOWN: Duration = Duration::from_secs(10);

/// Longest time one JWKS fetch may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest JWKS document read from the relay.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// The file in the config dir where `mcp-agent login` pins the relay's keys
/// (written by `identity::pin_assertion_keys`).
pub const PINNED_KEYS_FILE: &str = "assertion-keys.json";

/// What the agent prints once when the relay does not authenticate callers.
pub const DEV_MODE_NOTICE: &str =
    "this relay does not authenticate callers (dev mode); requests are not identity-checked";

/// The `aud` of assertions for `tunnel` (a URN, so no access token's
/// audience can match it).
pub fn assertion_audience(tunnel: &str) -> String {
    format!("urn:mcp-tunnel:tunnel:{tunnel}")
}

/// The relay's issuer, read off the public MCP URL its `Welcome` names: the
/// relay builds both from its public base URL (`<base>/t/<tunnel>/mcp`).
/// `None` when the URL has another shape; the issuer is then not checked.
pub fn issuer_from_public_url(public_url: &str, tunnel: &str) -> Option<String> {
    let base = public_url.strip_suffix(&format!("/t/{tunnel}/mcp"))?;
    (!base.is_empty()).then(|| base.to_owned())
}

/// How this agent authenticated to the relay, which decides whether
/// assertions are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A device certificate from `mcp-agent login` (production relays).
    Device,
    /// An agent token (accepted by `--dev` relays only).
    AgentToken,
}

/// Whether request streams must carry a valid assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requirement {
    /// Every stream needs a valid assertion (the default: fail closed).
    #[default]
    Required,
    /// The relay does not authenticate callers; streams pass unchecked.
    NotRequired,
}

impl Requirement {
    /// The mode rule: device sessions always require assertions; agent-token
    /// sessions require them iff the relay's `Welcome` carries keys.
    pub fn for_session(kind: SessionKind, welcome_keys: Option<&serde_json::Value>) -> Self {
        match (kind, welcome_keys) {
            (SessionKind::Device, _) | (SessionKind::AgentToken, Some(_)) => Self::Required,
            (SessionKind::AgentToken, None) => Self::NotRequired,
        }
    }
}

/// Who sent a request, as the relay vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCaller {
    /// The principal (user id or service account).
    pub sub: String,
    /// The user's email; absent for service accounts.
    pub email: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The OAuth client the caller used.
    pub client_id: String,
    /// The relay's request id (`<boot id>-<counter>`; matches its audit log).
    pub rid: String,
    /// The relay that signed the assertion.
    pub iss: String,
    /// When the assertion expires (Unix seconds).
    pub exp: u64,
}

impl VerifiedCaller {
    /// The name for the live per-request line: the email, else the subject,
    /// without control characters.
    pub fn display_name(&self) -> String {
        self.email
            .as_deref()
            .unwrap_or(&self.sub)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    }
}

/// Why a request stream's assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// The stream carries no assertion, and this session requires one.
    #[error("the request carries no identity assertion, and this agent requires one")]
    Missing,
    /// The agent has no key of the relay to verify with.
    #[error(
        "the agent has no assertion keys from the relay, so it cannot check callers; reconnect, or run `mcp-agent login` again"
    )]
    NoKeys,
    /// Not a compact JWS with a JSON header and claims, too large, or with
    /// a critical header extension.
    #[error("the identity assertion is not a well-formed JWS")]
    Malformed,
    /// The header names an algorithm other than EdDSA (`none`, `HS256`, …).
    #[error("the identity assertion's algorithm is not accepted (EdDSA only)")]
    WrongAlgorithm,
    /// The header's `typ` is not [`ASSERTION_TYP`].
    #[error("the token is not an identity assertion (wrong typ)")]
    WrongType,
    /// No `kid`, or one the relay has not published.
    #[error("the identity assertion was signed by a key the relay has not published")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("the identity assertion's signature is invalid")]
    BadSignature,
    /// A required claim is absent or of the wrong type.
    #[error("the identity assertion lacks the claim {0}")]
    MissingClaim(&'static str),
    /// `exp - iat` is over [`MAX_ASSERTION_LIFETIME`] (or negative).
    #[error("the identity assertion's lifetime is longer than 60 s")]
    LifetimeTooLong,
    /// `exp` plus the leeway has passed.
    #[error("the identity assertion has expired; check this machine's clock")]
    Expired,
    /// `iat` is in the future beyond the leeway.
    #[error("the identity assertion is not valid yet; check this machine's clock")]
    NotYetValid,
    /// `aud` is not this tunnel's assertion audience.
    #[error("the identity assertion is for another audience")]
    WrongAudience,
    /// The `tunnel` claim names another tunnel.
    #[error("the identity assertion is for another tunnel")]
    WrongTunnel,
    /// `iss` is not the relay this agent is connected to.
    #[error("the identity assertion was issued by another relay")]
    WrongIssuer,
    /// This request id was accepted before.
    #[error("the identity assertion was already used (replayed request id)")]
    Replayed,
    /// The replay cache holds [`DEFAULT_MAX_REPLAY_ENTRIES`] live ids.
    #[error("too many requests in the last minute to remember their ids; retry shortly")]
    ReplayCacheFull,
}

impl AssertionError {
    /// The note on the live per-request line, e.g. `refused: assertion expired`.
    pub fn live_note(&self) -> &'static str {
        match self {
            Self::Missing => "refused: no assertion",
            Self::NoKeys => "refused: no assertion keys",
            Self::Malformed => "refused: assertion malformed",
            Self::WrongAlgorithm => "refused: assertion algorithm",
            Self::WrongType => "refused: assertion typ",
            Self::UnknownKey => "refused: assertion key unknown",
            Self::BadSignature => "refused: assertion signature",
            Self::MissingClaim(_) => "refused: assertion claim missing",
            Self::LifetimeTooLong => "refused: assertion lifetime",
            Self::Expired => "refused: assertion expired",
            Self::NotYetValid => "refused: assertion not yet valid",
            Self::WrongAudience => "refused: assertion audience",
            Self::WrongTunnel => "refused: assertion for another tunnel",
            Self::WrongIssuer => "refused: assertion issuer",
            Self::Replayed => "refused: assertion replayed",
            Self::ReplayCacheFull => "refused: replay cache full",
        }
    }
}

/// Why a JWKS could not be used or read.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The document is not a JWKS we accept.
    #[error("the relay's assertion keys are invalid: {0}")]
    InvalidJwks(&'static str),
    /// The JWKS has no Ed25519 signing key.
    #[error("the relay's assertion keys hold no Ed25519 signing key")]
    NoUsableKeys,
    /// The pinned-keys file could not be read or parsed.
    #[error("reading the pinned assertion keys {path}: {reason}")]
    Pinned {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Fetching the relay's JWKS failed.
    #[error("fetching the relay's assertion keys from {url}: {reason}")]
    Fetch {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// A set of the relay's public Ed25519 keys, by `kid`.
#[derive(Clone, Default)]
pub struct RelayKeys {
    keys: HashMap<String, PublicKey>,
}

impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("RelayKeys").field("kids", &kids).finish()
    }
}

impl RelayKeys {
    /// Parses a published JWKS (`{"keys": […]}`) by the relay's rules: keys
    /// of another type or use are skipped; a key with private members, an
    /// Ed25519 key naming another `alg`, or one without `kid` or a 32-byte
    /// `x` refuses the whole set.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, KeysError> {
        let entries = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(KeysError::InvalidJwks("no \"keys\" array"))?;
        if entries.len() > MAX_JWKS_KEYS {
            return Err(KeysError::InvalidJwks("too many keys"));
        }
        let mut keys = HashMap::new();
        for entry in entries {
            let jwk: JwkEntry = serde_json::from_value(entry.clone())
                .map_err(|_| KeysError::InvalidJwks("a key is not a JSON object of strings"))?;
            if jwk.d.is_some() {
                return Err(KeysError::InvalidJwks(
                    "a key carries private material (\"d\")",
                ));
            }
            if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
                continue;
            }
            if jwk.alg.as_deref().is_some_and(|a| a != ASSERTION_ALG) {
                return Err(KeysError::InvalidJwks("an Ed25519 key names another alg"));
            }
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = jwk
                .kid
                .ok_or(KeysError::InvalidJwks("an Ed25519 key has no kid"))?;
            let x = jwk
                .x
                .ok_or(KeysError::InvalidJwks("an Ed25519 key has no \"x\""))?;
            let raw = URL_SAFE_NO_PAD
                .decode(x.as_bytes())
                .map_err(|_| KeysError::InvalidJwks("an Ed25519 \"x\" is not base64url"))?;
            if raw.len() != 32 {
                return Err(KeysError::InvalidJwks(
                    "an Ed25519 \"x\" is not a 32-byte public key",
                ));
            }
            keys.insert(kid, PublicKey::new(raw));
        }
        if keys.is_empty() {
            return Err(KeysError::NoUsableKeys);
        }
        Ok(Self { keys })
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `kid` names a key of this set.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

/// Reads the keys `mcp-agent login` pinned in `dir`; `Ok(None)` if none were.
pub fn read_pinned_keys(dir: &Path) -> Result<Option<RelayKeys>, KeysError> {
    let path = dir.join(PINNED_KEYS_FILE);
    let pinned = |reason: String| KeysError::Pinned {
        path: path.display().to_string(),
        reason,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(pinned(e.to_string())),
    };
    let jwks: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| pinned(e.to_string()))?;
    RelayKeys::from_jwks(&jwks)
        .map(Some)
        .map_err(|e| pinned(e.to_string()))
}

/// Checks request streams' assertions for one tunnel; shared by every
/// stream of every connection of one `mcp-agent connect` (the replay cache
/// must outlive reconnects: the relay's request ids do).
#[derive(Debug)]
pub struct AssertionVerifier {
    tunnel: String,
    audience: String,
    trust: RwLock<Arc<Trust>>,
    replay: Mutex<ReplayCache>,
    refresh: Option<JwksRefresh>,
    dev_notice_shown: AtomicBool,
}

/// What the verifier trusts now; replaced as a whole when keys change.
#[derive(Debug, Default)]
struct Trust {
    /// Keys pinned at login (device sessions); replaced by `DeviceUpdate`s,
    /// which re-pin.
    pinned: RelayKeys,
    /// The keys the relay sent last on this connection (`Welcome`,
    /// `DeviceUpdate`) or a JWKS fetch returned.
    live: RelayKeys,
    /// The relay's issuer, when known.
    issuer: Option<String>,
    requirement: Requirement,
}

impl Trust {
    /// Candidate keys for `kid`: pinned ∪ live.
    fn keys_for(&self, kid: &str) -> impl Iterator<Item = &PublicKey> {
        let live = self.live.keys.get(kid);
        let pinned = self
            .pinned
            .keys
            .get(kid)
            .filter(|p| live.is_none_or(|l| l.raw != p.raw));
        live.into_iter().chain(pinned)
    }

    fn has_keys(&self) -> bool {
        !self.pinned.is_empty() || !self.live.is_empty()
    }
}

impl AssertionVerifier {
    /// A verifier for `tunnel` with no keys yet, requiring assertions (so
    /// every stream is refused until keys arrive), remembering at most
    /// [`DEFAULT_MAX_REPLAY_ENTRIES`] request ids.
    pub fn new(tunnel: &str) -> Self {
        Self::with_replay_limit(tunnel, DEFAULT_MAX_REPLAY_ENTRIES)
    }

    /// [`Self::new`] remembering at most `max_replay_entries` request ids.
    pub fn with_replay_limit(tunnel: &str, max_replay_entries: usize) -> Self {
        Self {
            tunnel: tunnel.to_owned(),
            audience: assertion_audience(tunnel),
            trust: RwLock::new(Arc::new(Trust::default())),
            replay: Mutex::new(ReplayCache::new(max_replay_entries)),
            refresh: None,
            dev_notice_shown: AtomicBool::new(false),
        }
    }

    /// Fetches the relay's JWKS with `http` from `relay`'s
    /// `/.well-known/jwks.json` when an assertion names an unknown key.
    pub fn with_jwks_refresh(mut self, http: reqwest::Client, relay: &Url) -> Self {
        self.refresh = relay
            .join("/.well-known/jwks.json")
            .ok()
            .map(|url| JwksRefresh {
                http,
                url,
                last: tokio::sync::Mutex::new(None),
            });
        self
    }

    /// The tunnel whose assertions this verifier accepts.
    pub fn tunnel(&self) -> &str {
        &self.tunnel
    }

    /// Whether streams currently need an assertion.
    pub fn requirement(&self) -> Requirement {
        self.trust().requirement
    }

    /// How many distinct keys are trusted now (pinned ∪ live).
    pub fn key_count(&self) -> usize {
        let t = self.trust();
        t.live.len()
            + t.pinned
                .keys
                .iter()
                .filter(|(kid, k)| t.live.keys.get(*kid).is_none_or(|l| l.raw != k.raw))
                .count()
    }

    /// Replaces the keys pinned at login.
    pub fn set_pinned_keys(&self, keys: RelayKeys) {
        self.update(|t| t.pinned = keys);
    }

    /// Replaces the keys the relay sent (or published) last.
    pub fn set_live_keys(&self, keys: RelayKeys) {
        self.update(|t| t.live = keys);
    }

    /// Sets the issuer assertions must name; `None` skips the check.
    pub fn set_issuer(&self, issuer: Option<String>) {
        self.update(|t| t.issuer = issuer);
    }

    /// Sets whether streams need an assertion.
    pub fn set_requirement(&self, requirement: Requirement) {
        self.update(|t| t.requirement = requirement);
    }

    /// Applies a connection's `Welcome`: the mode rule, the relay's keys and
    /// its issuer. Returns what to tell the person running the agent, if
    /// anything (the dev-mode notice only the first time in a row).
    pub fn on_welcome(&self, kind: SessionKind, welcome: &Welcome) -> Option<String> {
        let requirement = Requirement::for_session(kind, welcome.assertion_keys.as_ref());
        let mut bad_keys = None;
        let live = match &welcome.assertion_keys {
            Some(jwks) => RelayKeys::from_jwks(jwks).unwrap_or_else(|e| {
                bad_keys = Some(e);
                RelayKeys::default()
            }),
            None => RelayKeys::default(),
        };
        let issuer = issuer_from_public_url(&welcome.public_url, &self.tunnel);
        self.update(|t| {
            t.requirement = requirement;
            t.live = live;
            t.issuer = issuer;
        });
        match requirement {
            Requirement::NotRequired => (!self.dev_notice_shown.swap(true, Ordering::Relaxed))
                .then(|| DEV_MODE_NOTICE.to_owned()),
            Requirement::Required => {
                self.dev_notice_shown.store(false, Ordering::Relaxed);
                if let Some(e) = bad_keys {
                    Some(format!(
                        "{e}; requests that cannot be checked will be refused"
                    ))
                } else if !self.trust().has_keys() {
                    Some(
                        "the relay sent no assertion keys and none are pinned: every request will be refused until it does (run `mcp-agent login` again if this persists)".to_owned(),
                    )
                } else {
                    None
                }
            }
        }
    }

    /// Applies the keys of a `DeviceUpdate`. In a device session they are
    /// also what is pinned from now on (the connection re-pins the file).
    pub fn on_update_keys(
        &self,
        kind: SessionKind,
        jwks: &serde_json::Value,
    ) -> Result<(), KeysError> {
        let keys = RelayKeys::from_jwks(jwks)?;
        self.update(|t| {
            if kind == SessionKind::Device {
                t.pinned = keys.clone();
            }
            t.live = keys;
        });
        Ok(())
    }

    /// Checks a stream's assertion (if any) under the current requirement.
    /// `Ok(None)`: no assertion is required and the stream goes through
    /// anonymously (a present assertion is then not looked at either: the
    /// relay does not authenticate callers, so there is nothing to check it
    /// against).
    pub fn check(
        &self,
        assertion: Option<&str>,
        now: u64,
    ) -> Result<Option<VerifiedCaller>, AssertionError> {
        match (self.requirement(), assertion) {
            (Requirement::NotRequired, _) => Ok(None),
            (Requirement::Required, None) => Err(AssertionError::Missing),
            (Requirement::Required, Some(token)) => self.verify(token, now).map(Some),
        }
    }

    /// [`Self::check`] at the current time, fetching the relay's JWKS once
    /// (rate-limited) if the assertion names a key not known yet.
    pub async fn admit(
        &self,
        assertion: Option<&str>,
    ) -> Result<Option<VerifiedCaller>, AssertionError> {
        match self.check(assertion, unix_now()) {
            Err(e @ (AssertionError::UnknownKey | AssertionError::NoKeys)) => {
                let Some(refresh) = &self.refresh else {
                    return Err(e);
                };
                match refresh.fetch_if_due().await {
                    Ok(Some(keys)) => {
                        tracing::info!(keys = keys.len(), "fetched the relay's assertion keys");
                        self.set_live_keys(keys);
                    }
                    Ok(None) => return Err(e),
                    Err(fetch) => {
                        tracing::warn!("{fetch}");
                        return Err(e);
                    }
                }
                self.check(assertion, unix_now())
            }
            other => other,
        }
    }

    /// Verifies one assertion at `now` (Unix seconds) and records its
    /// request id: the JWS checks (size, shape, EdDSA, `typ`, known `kid`,
    /// signature), then claims (present, lifetime, times with
    /// [`ASSERTION_LEEWAY`], audience, tunnel, issuer), then replay. Only a
    /// fully valid assertion takes a place in the replay cache.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedCaller, AssertionError> {
        if token.len() > MAX_ASSERTION_BYTES {
            return Err(AssertionError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AssertionError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64.as_bytes())
            .map_err(|_| AssertionError::Malformed)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| AssertionError::Malformed)?;
        if header.alg != ASSERTION_ALG {
            return Err(AssertionError::WrongAlgorithm);
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: we understand no extension, so refuse them all.
            return Err(AssertionError::Malformed);
        }
        if !header.typ.as_deref().is_some_and(typ_matches) {
            return Err(AssertionError::WrongType);
        }
        let trust = self.trust();
        if !trust.has_keys() {
            return Err(AssertionError::NoKeys);
        }
        let kid = header.kid.as_deref().ok_or(AssertionError::UnknownKey)?;
        let mut raw = None;
        let mut error = AssertionError::UnknownKey;
        for key in trust.keys_for(kid) {
            match jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &validation()) {
                Ok(data) => {
                    raw = Some(data.claims);
                    break;
                }
                Err(e) => {
                    error = match e.kind() {
                        ErrorKind::InvalidSignature
                        | ErrorKind::InvalidEddsaKey
                        | ErrorKind::InvalidKeyFormat => AssertionError::BadSignature,
                        ErrorKind::InvalidAlgorithm
                        | ErrorKind::MissingAlgorithm
                        | ErrorKind::UnsupportedAlgorithm => AssertionError::WrongAlgorithm,
                        _ => AssertionError::Malformed,
                    }
                }
            }
        }
        let claims = raw.ok_or(error)?.into_claims()?;
        check_times(claims.iat, claims.exp, now)?;
        if claims.aud != self.audience {
            return Err(AssertionError::WrongAudience);
        }
        if claims.tunnel != self.tunnel {
            return Err(AssertionError::WrongTunnel);
        }
        if let Some(issuer) = &trust.issuer
            && claims.iss != *issuer
        {
            return Err(AssertionError::WrongIssuer);
        }
        if claims.rid.is_empty() || claims.rid.len() > MAX_RID_BYTES {
            return Err(AssertionError::Malformed);
        }
        let forget_at = claims.exp.saturating_add(ASSERTION_LEEWAY.as_secs());
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&claims.rid, forget_at, now)?;
        Ok(VerifiedCaller {
            sub: claims.sub,
            email: claims.email,
            groups: claims.groups,
            client_id: claims.client_id,
            rid: claims.rid,
            iss: claims.iss,
            exp: claims.exp,
        })
    }

    fn trust(&self) -> Arc<Trust> {
        self.trust.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Trust)) {
        let mut guard = self.trust.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Trust {
            pinned: guard.pinned.clone(),
            live: guard.live.clone(),
            issuer: guard.issuer.clone(),
            requirement: guard.requirement,
        };
        change(&mut next);
        *guard = Arc::new(next);
    }
}

/// Unix seconds now, from this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fetches the relay's JWKS, at most once per [`JWKS_REFRESH_COOLDOWN`].
#[derive(Debug)]
struct JwksRefresh {
    http: reqwest::Client,
    url: Url,
    /// When the last fetch started; held across a fetch so concurrent
    /// streams wait for one fetch instead of each making their own.
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl JwksRefresh {
    /// The relay's current keys, or `Ok(None)` if a fetch was made too
    /// recently (the caller then keeps its error).
    async fn fetch_if_due(&self) -> Result<Option<RelayKeys>, KeysError> {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_COOLDOWN) {
            return Ok(None);
        }
        *last = Some(tokio::time::Instant::now());
        let failed = |reason: String| KeysError::Fetch {
            url: self.url.to_string(),
            reason,
        };
        let fetch = async {
            let resp = self
                .http
                .get(self.url.clone())
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(failed(format!("answered {}", resp.status())));
            }
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
            {
                return Err(failed("the document is too large".into()));
            }
            let body = resp.bytes().await.map_err(|e| failed(e.to_string()))?;
            if body.len() > MAX_JWKS_BYTES {
                return Err(failed("the document is too large".into()));
            }
            let jwks: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
            RelayKeys::from_jwks(&jwks).map_err(|e| failed(e.to_string()))
        };
        match tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(failed(format!("no answer within {JWKS_FETCH_TIMEOUT:?}"))),
        }
    }
}

/// Request ids seen, each kept until its assertion can no longer verify.
#[derive(Debug)]
struct ReplayCache {
    /// rid → the Unix second from which it may be forgotten.
    seen: HashMap<Arc<str>, u64>,
    /// The same entries, soonest-forgotten first.
    by_expiry: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    max: usize,
}

impl ReplayCache {
    fn new(max: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BinaryHeap::new(),
            max,
        }
    }

    /// Records `rid` until `forget_at`; refuses one already recorded, or any
    /// new one when `max` live ids are held (forgetting early would open a
    /// replay window, so the cache refuses instead).
    fn admit(&mut self, rid: &str, forget_at: u64, now: u64) -> Result<(), AssertionError> {
        self.prune(now);
        if self.seen.contains_key(rid) {
            return Err(AssertionError::Replayed);
        }
        if self.seen.len() >= self.max {
            return Err(AssertionError::ReplayCacheFull);
        }
        let rid: Arc<str> = Arc::from(rid);
        self.seen.insert(rid.clone(), forget_at);
        self.by_expiry.push(Reverse((forget_at, rid)));
        Ok(())
    }

    fn prune(&mut self, now: u64) {
        while let Some(Reverse((at, _))) = self.by_expiry.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, rid))) = self.by_expiry.pop() {
                self.seen.remove(&rid);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// One public key and its jsonwebtoken form.
#[derive(Clone)]
struct PublicKey {
    raw: Vec<u8>,
    decoding: DecodingKey,
}

impl PublicKey {
    fn new(raw: Vec<u8>) -> Self {
        Self {
            // For Ed25519, jsonwebtoken's "DER" key is the raw public key.
            decoding: DecodingKey::from_ed_der(&raw),
            raw,
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519({})", URL_SAFE_NO_PAD.encode(&self.raw))
    }
}

/// Signature and algorithm only: every claim check is ours, against `now`.
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

/// Lifetime at most [`MAX_ASSERTION_LIFETIME`], not expired, not issued in
/// the future, each with [`ASSERTION_LEEWAY`] (the relay's `check_times`).
fn check_times(iat: u64, exp: u64, now: u64) -> Result<(), AssertionError> {
    let leeway = ASSERTION_LEEWAY.as_secs();
    let lifetime = exp.checked_sub(iat).ok_or(AssertionError::Malformed)?;
    if lifetime > MAX_ASSERTION_LIFETIME.as_secs() {
        return Err(AssertionError::LifetimeTooLong);
    }
    if now >= exp.saturating_add(leeway) {
        return Err(AssertionError::Expired);
    }
    if iat > now.saturating_add(leeway) {
        return Err(AssertionError::NotYetValid);
    }
    Ok(())
}

/// RFC 7515 §4.1.9: `typ` is a media type, compared case-insensitively, and
/// the `application/` prefix may be left out.
fn typ_matches(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(ASSERTION_TYP)
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct JwkEntry {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    d: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
}

/// Claims as sent, every one optional, so a missing one is named.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    client_id: Option<String>,
    tunnel: Option<String>,
    rid: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
}

/// [`RawClaims`] with every required claim present.
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    email: Option<String>,
    groups: Vec<String>,
    client_id: String,
    tunnel: String,
    rid: String,
    iat: u64,
    exp: u64,
}

impl RawClaims {
    fn into_claims(self) -> Result<Claims, AssertionError> {
        use AssertionError::MissingClaim;
        Ok(Claims {
            iss: self.iss.ok_or(MissingClaim("iss"))?,
            aud: self.aud.ok_or(MissingClaim("aud"))?,
            sub: self.sub.ok_or(MissingClaim("sub"))?,
            email: self.email,
            groups: self.groups,
            client_id: self.client_id.ok_or(MissingClaim("client_id"))?,
            tunnel: self.tunnel.ok_or(MissingClaim("tunnel"))?,
            rid: self.rid.ok_or(MissingClaim("rid"))?,
            iat: self.iat.ok_or(MissingClaim("iat"))?,
            exp: self.exp.ok_or(MissingClaim("exp"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://relay.example.com";

    /// A relay signing key as the relay makes it: Ed25519, PKCS#8.
    struct TestKey {
        kid: String,
        raw: Vec<u8>,
        encoding: EncodingKey,
    }

    impl TestKey {
        fn new(kid: &str) -> Self {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            Self {
                kid: kid.to_owned(),
                raw: pair.public_key_raw().to_vec(),
                encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            }
        }

        fn jwk(&self) -> Value {
            json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.raw),
            })
        }

        fn sign(&self, claims: &Value) -> String {
            self.sign_as(&self.kid, ASSERTION_TYP, claims)
        }

        fn sign_as(&self, kid: &str, typ: &str, claims: &Value) -> String {
            let mut h = Header::new(Algorithm::EdDSA);
            h.kid = Some(kid.to_owned());
            h.typ = Some(typ.to_owned());
            jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
        }
    }

    fn jwks(keys: &[&TestKey]) -> Value {
        json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
    }

    fn claims(rid: &str) -> Value {
        json!({
            "iss": ISS,
            "aud": assertion_audience("shop"),
            "sub": "user-1",
            "email": "bob@example.com",
            "groups": ["eng"],
            "client_id": "client-1",
            "tunnel": "shop",
            "rid": rid,
            "iat": NOW,
            "exp": NOW + 30,
        })
    }

    fn verifier(keys: &[&TestKey]) -> AssertionVerifier {
        let v = AssertionVerifier::new("shop");
        v.set_live_keys(RelayKeys::from_jwks(&jwks(keys)).unwrap());
        v.set_issuer(Some(ISS.to_owned()));
        v
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn valid_assertion_is_accepted_with_its_caller() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let caller = v.verify(&key.sign(&claims("boot-1")), NOW + 1).unwrap();
        assert_eq!(
            caller,
            VerifiedCaller {
                sub: "user-1".into(),
                email: Some("bob@example.com".into()),
                groups: vec!["eng".into()],
                client_id: "client-1".into(),
                rid: "boot-1".into(),
                iss: ISS.into(),
                exp: NOW + 30,
            }
        );
        assert_eq!(caller.display_name(), "bob@example.com");
    }

    #[test]
    fn signed_by_another_key_is_refused() {
        let key = TestKey::new("k1");
        let stranger = TestKey::new("k2");
        let v = verifier(&[&key]);
        // Under its own kid: unknown. Claiming the relay's kid: bad signature.
        assert_eq!(
            v.verify(&stranger.sign(&claims("r")), NOW),
            Err(AssertionError::UnknownKey)
        );
        let forged = stranger.sign_as("k1", ASSERTION_TYP, &claims("r"));
        assert_eq!(v.verify(&forged, NOW), Err(AssertionError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let token = key.sign(&claims("r"));
        let parts: Vec<&str> = token.split('.').collect();
        let mut more = claims("r");
        more["groups"] = json!(["admins"]);
        let forged = format!("{}.{}.{}", parts[0], b64(&more), parts[2]);
        assert_eq!(v.verify(&forged, NOW), Err(AssertionError::BadSignature));
        // Nothing was recorded: the genuine one still goes through.
        assert!(v.verify(&token, NOW).is_ok());
    }

    #[test]
    fn alg_none_and_hs256_with_the_public_key_are_refused() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let header = json!({"alg": "none", "typ": ASSERTION_TYP, "kid": "k1"});
        let none = format!("{}.{}.", b64(&header), b64(&claims("r")));
        assert_eq!(v.verify(&none, NOW), Err(AssertionError::WrongAlgorithm));

        // The classic confusion: HMAC keyed with the (public) verification key.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        h.typ = Some(ASSERTION_TYP.into());
        let hs =
            jsonwebtoken::encode(&h, &claims("r"), &EncodingKey::from_secret(&key.raw)).unwrap();
        assert_eq!(v.verify(&hs, NOW), Err(AssertionError::WrongAlgorithm));
    }

    #[test]
    fn wrong_typ_is_refused_and_media_type_form_accepted() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        for typ in ["at+jwt", "JWT"] {
            let t = key.sign_as("k1", typ, &claims("r"));
            assert_eq!(v.verify(&t, NOW), Err(AssertionError::WrongType), "{typ}");
        }
        let t = key.sign_as("k1", "application/MCP-TUNNEL-ASSERTION+JWT", &claims("r"));
        assert!(v.verify(&t, NOW).is_ok());
    }

    #[test]
    fn expired_and_future_assertions_are_refused_with_ten_seconds_leeway() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let dead = NOW + 30 + ASSERTION_LEEWAY.as_secs();
        assert_eq!(
            v.verify(&key.sign(&claims("a")), dead),
            Err(AssertionError::Expired)
        );
        assert!(v.verify(&key.sign(&claims("b")), dead - 1).is_ok());
        assert_eq!(
            v.verify(&key.sign(&claims("c")), NOW - 11),
            Err(AssertionError::NotYetValid)
        );
        assert!(v.verify(&key.sign(&claims("d")), NOW - 10).is_ok());
    }

    #[test]
    fn lifetime_over_sixty_seconds_is_refused() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let mut c = claims("r");
        c["exp"] = json!(NOW + 61);
        assert_eq!(
            v.verify(&key.sign(&c), NOW),
            Err(AssertionError::LifetimeTooLong)
        );
        c["exp"] = json!(NOW + 60);
        assert!(v.verify(&key.sign(&c), NOW).is_ok());
        c["exp"] = json!(NOW - 1);
        assert_eq!(v.verify(&key.sign(&c), NOW), Err(AssertionError::Malformed));
    }

    #[test]
    fn wrong_tunnel_audience_or_issuer_is_refused() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let mut other = claims("r1");
        other["tunnel"] = json!("other");
        other["aud"] = json!(assertion_audience("other"));
        assert_eq!(
            v.verify(&key.sign(&other), NOW),
            Err(AssertionError::WrongAudience)
        );
        let mut tunnel_only = claims("r2");
        tunnel_only["tunnel"] = json!("other");
        assert_eq!(
            v.verify(&key.sign(&tunnel_only), NOW),
            Err(AssertionError::WrongTunnel)
        );
        let mut url_aud = claims("r3");
        url_aud["aud"] = json!("https://relay.example.com/t/shop/mcp");
        assert_eq!(
            v.verify(&key.sign(&url_aud), NOW),
            Err(AssertionError::WrongAudience)
        );
        let mut iss = claims("r4");
        iss["iss"] = json!("https://evil.example.com");
        assert_eq!(
            v.verify(&key.sign(&iss), NOW),
            Err(AssertionError::WrongIssuer)
        );
        // Without a known issuer, iss is not compared.
        v.set_issuer(None);
        assert!(v.verify(&key.sign(&iss), NOW).is_ok());
    }

    #[test]
    fn missing_claim_is_named() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        for name in [
            "iss",
            "aud",
            "sub",
            "client_id",
            "tunnel",
            "rid",
            "iat",
            "exp",
        ] {
            let mut c = claims("r");
            c.as_object_mut().unwrap().remove(name);
            assert_eq!(
                v.verify(&key.sign(&c), NOW),
                Err(AssertionError::MissingClaim(name))
            );
        }
    }

    #[test]
    fn replayed_rid_is_refused_until_it_could_no_longer_verify() {
        let key = TestKey::new("k1");
        let v = verifier(&[&key]);
        let token = key.sign(&claims("boot-7"));
        assert!(v.verify(&token, NOW).is_ok());
        assert_eq!(v.verify(&token, NOW + 1), Err(AssertionError::Replayed));
        // Another assertion with the same rid is a replay too.
        let mut again = claims("boot-7");
        again["iat"] = json!(NOW + 5);
        again["exp"] = json!(NOW + 35);
        assert_eq!(
            v.verify(&key.sign(&again), NOW + 5),
            Err(AssertionError::Replayed)
        );
        // Once the first has expired its id is forgotten, and the replay is
        // refused as expired instead.
        let dead = NOW + 30 + ASSERTION_LEEWAY.as_secs();
        assert_eq!(v.verify(&token, dead), Err(AssertionError::Expired));
        assert!(v.verify(&key.sign(&again), dead).is_ok());
    }

    #[test]
    fn full_replay_cache_refuses_instead_of_forgetting() {
        let key = TestKey::new("k1");
        let v = AssertionVerifier::with_replay_limit("shop", 2);
        v.set_live_keys(RelayKeys::from_jwks(&jwks(&[&key])).unwrap());
        assert!(v.verify(&key.sign(&claims("a")), NOW).is_ok());
        assert!(v.verify(&key.sign(&claims("b")), NOW).is_ok());
        assert_eq!(
            v.verify(&key.sign(&claims("c")), NOW),
            Err(AssertionError::ReplayCacheFull)
        );
        assert_eq!(
            v.verify(&key.sign(&claims("a")), NOW),
            Err(AssertionError::Replayed)
        );
        // After the first two expire there is room again.
        let mut later = claims("c");
        let t = NOW + 40;
        later["iat"] = json!(t);
        later["exp"] = json!(t + 30);
        assert!(v.verify(&key.sign(&later), t).is_ok());
        assert_eq!(v.replay.lock().unwrap().len(), 1);
    }

    #[test]
    fn key_rotation_installs_the_new_key() {
        let old = TestKey::new("k1");
        let new = TestKey::new("k2");
        let v = verifier(&[&old]);
        assert_eq!(
            v.verify(&new.sign(&claims("r1")), NOW),
            Err(AssertionError::UnknownKey)
        );
        v.on_update_keys(SessionKind::AgentToken, &jwks(&[&new, &old]))
            .unwrap();
        assert!(v.verify(&new.sign(&claims("r1")), NOW).is_ok());
        assert!(v.verify(&old.sign(&claims("r2")), NOW).is_ok());
        // The relay drops the old key: so does the agent.
        v.on_update_keys(SessionKind::AgentToken, &jwks(&[&new]))
            .unwrap();
        assert_eq!(
            v.verify(&old.sign(&claims("r3")), NOW),
            Err(AssertionError::UnknownKey)
        );
    }

    #[test]
    fn pinned_and_live_keys_are_both_trusted() {
        let pinned = TestKey::new("k1");
        let live = TestKey::new("k2");
        let v = AssertionVerifier::new("shop");
        v.set_pinned_keys(RelayKeys::from_jwks(&jwks(&[&pinned])).unwrap());
        v.set_live_keys(RelayKeys::from_jwks(&jwks(&[&live])).unwrap());
        assert_eq!(v.key_count(), 2);
        assert!(v.verify(&pinned.sign(&claims("a")), NOW).is_ok());
        assert!(v.verify(&live.sign(&claims("b")), NOW).is_ok());
        // A DeviceUpdate re-pins: afterwards only its keys are trusted.
        v.on_update_keys(SessionKind::Device, &jwks(&[&live]))
            .unwrap();
        assert_eq!(v.key_count(), 1);
        assert_eq!(
            v.verify(&pinned.sign(&claims("c")), NOW),
            Err(AssertionError::UnknownKey)
        );
    }

    #[test]
    fn pinned_keys_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_pinned_keys(dir.path()).unwrap().is_none());
        let key = TestKey::new("k1");
        std::fs::write(
            dir.path().join(PINNED_KEYS_FILE),
            serde_json::to_vec(&jwks(&[&key])).unwrap(),
        )
        .unwrap();
        let keys = read_pinned_keys(dir.path()).unwrap().unwrap();
        assert!(keys.contains("k1"));
        std::fs::write(dir.path().join(PINNED_KEYS_FILE), b"{").unwrap();
        assert!(read_pinned_keys(dir.path()).is_err());
    }

    #[test]
    fn jwks_parsing_follows_the_relay_rules() {
        let key = TestKey::new("k1");
        let mut private = jwks(&[&key]);
        private["keys"][0]["d"] = json!("secret");
        assert!(matches!(
            RelayKeys::from_jwks(&private),
            Err(KeysError::InvalidJwks(_))
        ));
        let mut short = jwks(&[&key]);
        short["keys"][0]["x"] = json!("AAAA");
        assert!(RelayKeys::from_jwks(&short).is_err());
        let mut hs = jwks(&[&key]);
        hs["keys"][0]["alg"] = json!("HS256");
        assert!(RelayKeys::from_jwks(&hs).is_err());
        let rsa = json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]});
        assert!(matches!(
            RelayKeys::from_jwks(&rsa),
            Err(KeysError::NoUsableKeys)
        ));
        assert!(RelayKeys::from_jwks(&json!([])).is_err());
    }

    fn welcome(keys: Option<Value>) -> Welcome {
        Welcome {
            protocol_version: 1,
            public_url: format!("{ISS}/t/shop/mcp"),
            relay_version: "test".into(),
            heartbeat_interval_ms: 5000,
            limits: Default::default(),
            assertion_keys: keys,
        }
    }

    #[test]
    fn mode_rule_device_always_token_iff_welcome_has_keys() {
        let some = json!({"keys": []});
        assert_eq!(
            Requirement::for_session(SessionKind::Device, None),
            Requirement::Required
        );
        assert_eq!(
            Requirement::for_session(SessionKind::Device, Some(&some)),
            Requirement::Required
        );
        assert_eq!(
            Requirement::for_session(SessionKind::AgentToken, Some(&some)),
            Requirement::Required
        );
        assert_eq!(
            Requirement::for_session(SessionKind::AgentToken, None),
            Requirement::NotRequired
        );
    }

    #[test]
    fn token_session_without_keys_is_dev_mode_and_says_so_once() {
        let v = AssertionVerifier::new("shop");
        assert_eq!(
            v.check(None, NOW),
            Err(AssertionError::Missing),
            "fail closed before Welcome"
        );
        assert_eq!(
            v.on_welcome(SessionKind::AgentToken, &welcome(None))
                .as_deref(),
            Some(DEV_MODE_NOTICE)
        );
        assert_eq!(v.check(None, NOW), Ok(None));
        assert_eq!(v.on_welcome(SessionKind::AgentToken, &welcome(None)), None);
        // The relay turned authentication on: assertions are required again.
        let key = TestKey::new("k1");
        assert_eq!(
            v.on_welcome(SessionKind::AgentToken, &welcome(Some(jwks(&[&key])))),
            None
        );
        assert_eq!(v.check(None, NOW), Err(AssertionError::Missing));
        let caller = v.check(Some(&key.sign(&claims("r"))), NOW).unwrap();
        assert_eq!(caller.unwrap().iss, ISS, "issuer taken from the public URL");
    }

    #[test]
    fn device_session_without_any_keys_refuses_everything() {
        let v = AssertionVerifier::new("shop");
        let note = v.on_welcome(SessionKind::Device, &welcome(None)).unwrap();
        assert!(note.contains("every request will be refused"), "{note}");
        assert_eq!(v.check(None, NOW), Err(AssertionError::Missing));
        let key = TestKey::new("k1");
        assert_eq!(
            v.check(Some(&key.sign(&claims("r"))), NOW),
            Err(AssertionError::NoKeys)
        );
        // Keys pinned at login are enough.
        v.set_pinned_keys(RelayKeys::from_jwks(&jwks(&[&key])).unwrap());
        assert_eq!(v.on_welcome(SessionKind::Device, &welcome(None)), None);
        assert!(
            v.check(Some(&key.sign(&claims("r"))), NOW)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn issuer_comes_from_the_public_url() {
        assert_eq!(
            issuer_from_public_url("https://relay.example.com/t/shop/mcp", "shop").as_deref(),
            Some("https://relay.example.com")
        );
        assert_eq!(
            issuer_from_public_url("https://r.example/base/t/shop/mcp", "shop").as_deref(),
            Some("https://r.example/base")
        );
        assert_eq!(
            issuer_from_public_url("https://r.example/mcp", "shop"),
            None
        );
    }

    #[test]
    fn display_name_falls_back_to_sub_and_strips_control_characters() {
        let mut c = VerifiedCaller {
            sub: "svc-1".into(),
            email: None,
            groups: vec![],
            client_id: "c".into(),
            rid: "r".into(),
            iss: ISS.into(),
            exp: NOW,
        };
        assert_eq!(c.display_name(), "svc-1");
        c.email = Some("a\u{1b}[2Jb@example.com".into());
        assert_eq!(c.display_name(), "a?[2Jb@example.com");
    }
}
