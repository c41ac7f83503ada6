//! Access tokens: short-lived JWTs bound to one tunnel's resource URL.
//!
//! [`Issuer`] signs them with the active key of a [`KeySet`]; [`Validator`]
//! checks them (JWS checks in [`VerifyingKeys`], then `iss`, `exp`/`nbf`/`iat`
//! with a small leeway, and `aud` exactly against the requested tunnel).
//! Every refusal is a [`TokenError`], which knows its RFC 6750
//! `WWW-Authenticate` parameters. Tokens carry `typ: at+jwt` (RFC 9068), so
//! an identity assertion can never pass for an access token or the reverse.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::oauth::keys::{KeyError, KeySet, VerifyingKeys};

/// Lifetime of an access token unless the issuer is told otherwise.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Longest lifetime the relay issues or accepts (`exp - iat`). It also bounds
/// how long a revocation by subject must be remembered.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Clock skew tolerated on `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Largest token accepted; anything longer is refused before it is parsed.
/// Our tokens are well under 2 KiB even with many groups.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JWS `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Seconds since the Unix epoch, from the system clock (0 if it is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The claims of a validated access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The relay's issuer URL.
    pub iss: String,
    /// The principal: a user id or a service account id.
    pub sub: String,
    /// The one tunnel resource URL the token is for (`https://<relay>/t/<tunnel>/mcp`).
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Unique token id (for revocation and audit).
    pub jti: String,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Space-separated granted scopes (may be empty).
    pub scope: String,
    /// The user's email; absent for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What an access token is issued for (the caller has authorized all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The principal.
    pub sub: String,
    /// The user's email, if a person.
    pub email: Option<String>,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The OAuth client.
    pub client_id: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// The canonical tunnel resource URL (RFC 8707 `resource`), becomes `aud`.
    pub resource: String,
}

/// Signs access tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    issuer: String,
    ttl: Duration,
}

impl Issuer {
    /// An issuer named `issuer` (the relay's public URL) issuing tokens that
    /// live [`DEFAULT_ACCESS_TOKEN_TTL`].
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            ttl: DEFAULT_ACCESS_TOKEN_TTL,
        }
    }

    /// The same issuer with another token lifetime (1 s ..= [`MAX_ACCESS_TOKEN_TTL`]).
    pub fn with_ttl(self, ttl: Duration) -> Result<Self, IssueError> {
        if ttl.as_secs() == 0 || ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(IssueError::TtlOutOfRange(ttl));
        }
        Ok(Self { ttl, ..self })
    }

    /// The `iss` this issuer writes.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The lifetime of the tokens it issues.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `grant`, valid from `now` for [`Self::ttl`].
    pub fn issue(
        &self,
        keys: &KeySet,
        grant: &AccessGrant,
        now: u64,
    ) -> Result<IssuedToken, IssueError> {
        let jti: [u8; 16] = rand::rng().random();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.sub.clone(),
            aud: grant.resource.clone(),
            exp: now.saturating_add(self.ttl.as_secs()),
            nbf: now,
            iat: now,
            jti: URL_SAFE_NO_PAD.encode(jti),
            client_id: grant.client_id.clone(),
            scope: grant.scope.clone(),
            email: grant.email.clone(),
            groups: grant.groups.clone(),
        };
        let token = keys.sign(ACCESS_TOKEN_TYP, &claims)?;
        Ok(IssuedToken { token, claims })
    }
}

/// A freshly issued token and its claims. `Debug` masks the token.
#[derive(Clone)]
pub struct IssuedToken {
    token: String,
    /// What the token says (for `expires_in`, audit, and the credential inventory).
    pub claims: AccessClaims,
}

impl IssuedToken {
    /// The bearer token. It is a credential: never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The bearer token, consuming `self`.
    pub fn into_token(self) -> String {
        self.token
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"MASKED")
            .field("claims", &self.claims)
            .finish()
    }
}

/// Checks access tokens against our keys, issuer and the requested tunnel.
#[derive(Debug)]
pub struct Validator {
    issuer: String,
    leeway: u64,
    keys: RwLock<Arc<VerifyingKeys>>,
}

impl Validator {
    /// A validator for tokens from `issuer`, signed by `keys`, with
    /// [`DEFAULT_LEEWAY`].
    pub fn new(issuer: impl Into<String>, keys: VerifyingKeys) -> Self {
        Self {
            issuer: issuer.into(),
            leeway: DEFAULT_LEEWAY.as_secs(),
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// The same validator with another clock-skew leeway.
    pub fn with_leeway(self, leeway: Duration) -> Self {
        Self {
            leeway: leeway.as_secs(),
            ..self
        }
    }

    /// The clock-skew leeway.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway)
    }

    /// Replaces the verifying keys (after a rotation).
    pub fn set_keys(&self, keys: VerifyingKeys) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    /// Validates `token` for the tunnel whose canonical resource URL is
    /// `expected_aud`, at `now` (seconds since the Unix epoch).
    pub fn validate(
        &self,
        token: &str,
        expected_aud: &str,
        now: u64,
    ) -> Result<AccessClaims, TokenError> {
        self.validate_detailed(token, expected_aud, now)
            .map(|(claims, _)| claims)
    }

    /// [`Self::validate`], plus when the signing key retires (`None`: not
    /// scheduled), which bounds how long the result may be cached.
    pub(crate) fn validate_detailed(
        &self,
        token: &str,
        expected_aud: &str,
        now: u64,
    ) -> Result<(AccessClaims, Option<u64>), TokenError> {
        let keys = Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner));
        let verified = keys.verify::<RawAccessClaims>(token, ACCESS_TOKEN_TYP, now)?;
        let claims = verified.claims.into_claims()?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        check_times(
            claims.iat,
            claims.nbf,
            claims.exp,
            MAX_ACCESS_TOKEN_TTL,
            self.leeway,
            now,
        )?;
        if claims.aud != expected_aud {
            return Err(TokenError::WrongAudience);
        }
        Ok((claims, verified.key_retires_at))
    }
}

/// Why a token was refused. Every variant answers `401` with
/// `error="invalid_token"` (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`]; refused before parsing.
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes, so it was not issued by this relay")]
    TooLarge,
    /// Not three base64url parts with a JSON header and claims of the right types.
    #[error("the token is not a well-formed JWT from this relay")]
    Malformed,
    /// The header names an algorithm other than the one our keys use.
    #[error("the token's signing algorithm is not accepted; this relay signs with EdDSA only")]
    AlgorithmNotAllowed,
    /// No `kid`, or one this relay does not publish (unknown or retired).
    #[error(
        "the token was signed by a key this relay does not know or has retired; get a new token"
    )]
    UnknownKey,
    /// The `typ` header is not the one this kind of token carries.
    #[error("the token is of another type; present an access token from this relay")]
    WrongType,
    /// The signature does not match the header and claims.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// A required claim is absent.
    #[error("the token lacks the required claim {0}")]
    MissingClaim(&'static str),
    /// `iss` is not this relay.
    #[error("the token was issued by another authorization server")]
    WrongIssuer,
    /// `exp` (plus leeway) has passed.
    #[error("the token has expired; refresh it or sign in again")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("the token is not valid yet; check the clocks of this machine and the relay")]
    NotYetValid,
    /// `aud` is not the requested tunnel's resource URL.
    #[error("the token is for another resource; get a token for this tunnel's URL")]
    WrongAudience,
    /// `exp - iat` exceeds the longest lifetime this relay issues.
    #[error("the token's lifetime is longer than this relay issues")]
    LifetimeTooLong,
    /// Revoked (by `jti`, or every token of its subject).
    #[error("the token has been revoked; sign in again")]
    Revoked,
}

impl TokenError {
    /// The RFC 6750 error code.
    pub fn error_code(&self) -> &'static str {
        "invalid_token"
    }

    /// The `error` and `error_description` parameters of
    /// `WWW-Authenticate: Bearer …`, ready to join after `resource_metadata=…`:
    /// `error="invalid_token", error_description="…"`.
    pub fn www_authenticate_params(&self) -> String {
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        let description: String = self
            .to_string()
            .chars()
            .map(|c| match c {
                ' ' | '!' | '#'..='[' | ']'..='~' => c,
                _ => ' ',
            })
            .collect();
        format!(
            "error=\"{}\", error_description=\"{description}\"",
            self.error_code()
        )
    }
}

/// Why a token could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The requested lifetime is zero or too long.
    #[error("a token lifetime must be at least 1 s and within the maximum for its kind, not {0:?}")]
    TtlOutOfRange(Duration),
    /// An assertion's `aud` does not name its `tunnel`.
    #[error("the assertion's audience does not name its tunnel")]
    AudienceMismatch,
    /// The key could not sign.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Checks `iat`, `nbf` and `exp` at `now` with `leeway` seconds of skew, and
/// that the lifetime is at most `max_ttl`. Shared with identity assertions.
pub(crate) fn check_times(
    iat: u64,
    nbf: u64,
    exp: u64,
    max_ttl: Duration,
    leeway: u64,
    now: u64,
) -> Result<(), TokenError> {
    let lifetime = exp.checked_sub(iat).ok_or(TokenError::Malformed)?;
    if lifetime > max_ttl.as_secs() {
        return Err(TokenError::LifetimeTooLong);
    }
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.max(iat) > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Claims as sent, every one optional, so a missing one is named.
#[derive(Deserialize)]
struct RawAccessClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

impl RawAccessClaims {
    fn into_claims(self) -> Result<AccessClaims, TokenError> {
        Ok(AccessClaims {
            iss: self.iss.ok_or(TokenError::MissingClaim("iss"))?,
            sub: self.sub.ok_or(TokenError::MissingClaim("sub"))?,
            aud: self.aud.ok_or(TokenError::MissingClaim("aud"))?,
            exp: self.exp.ok_or(TokenError::MissingClaim("exp"))?,
            nbf: self.nbf.ok_or(TokenError::MissingClaim("nbf"))?,
            iat: self.iat.ok_or(TokenError::MissingClaim("iat"))?,
            jti: self.jti.ok_or(TokenError::MissingClaim("jti"))?,
            client_id: self
                .client_id
                .ok_or(TokenError::MissingClaim("client_id"))?,
            scope: self.scope.ok_or(TokenError::MissingClaim("scope"))?,
            email: self.email,
            groups: self.groups,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::oauth::keys::DEFAULT_ROTATION_OVERLAP;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    pub(crate) const ISS: &str = "https://relay.example.com";
    pub(crate) const AUD_A: &str = "https://relay.example.com/t/shop/mcp";
    const AUD_B: &str = "https://relay.example.com/t/other/mcp";
    pub(crate) const NOW: u64 = 1_750_000_000;

    pub(crate) fn grant() -> AccessGrant {
        AccessGrant {
            sub: "user-1".to_owned(),
            email: Some("alice@example.com".to_owned()),
            groups: vec!["eng".to_owned()],
            client_id: "client-1".to_owned(),
            scope: "mcp".to_owned(),
            resource: AUD_A.to_owned(),
        }
    }

    fn setup() -> (KeySet, Validator) {
        let keys = KeySet::generate().unwrap();
        let validator = Validator::new(ISS, keys.verifying_keys());
        (keys, validator)
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token with hand-made header and claims, signed by our active key.
    fn signed_raw(keys: &KeySet, claims: &serde_json::Value) -> String {
        keys.sign(ACCESS_TOKEN_TYP, claims).unwrap()
    }

    fn claims_json(keys: &KeySet) -> serde_json::Value {
        let t = Issuer::new(ISS).issue(keys, &grant(), NOW).unwrap();
        serde_json::to_value(&t.claims).unwrap()
    }

    #[test]
    fn issue_then_validate_round_trips() {
        let (keys, v) = setup();
        let issued = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        let claims = v.validate(issued.token(), AUD_A, NOW + 1).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.exp - claims.iat, DEFAULT_ACCESS_TOKEN_TTL.as_secs());
        assert_eq!(claims.aud, AUD_A);
        assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
        let header = jsonwebtoken::decode_header(issued.token()).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some(ACCESS_TOKEN_TYP));
        assert_eq!(header.kid.as_deref(), Some(keys.active().kid()));
    }

    #[test]
    fn issued_token_debug_is_masked() {
        let (keys, _) = setup();
        let issued = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        let text = format!("{issued:?}");
        assert!(text.contains("MASKED"));
        assert!(!text.contains(issued.token()));
    }

    #[test]
    fn ttl_is_bounded() {
        assert!(Issuer::new(ISS).with_ttl(Duration::ZERO).is_err());
        assert!(
            Issuer::new(ISS)
                .with_ttl(MAX_ACCESS_TOKEN_TTL + Duration::from_secs(1))
                .is_err()
        );
        let i = Issuer::new(ISS).with_ttl(Duration::from_secs(60)).unwrap();
        assert_eq!(i.ttl(), Duration::from_secs(60));
    }

    #[test]
    fn expired_token_is_refused_after_leeway() {
        let (keys, v) = setup();
        let t = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        let exp = t.claims.exp;
        let leeway = DEFAULT_LEEWAY.as_secs();
        assert!(v.validate(t.token(), AUD_A, exp + leeway - 1).is_ok());
        assert_eq!(
            v.validate(t.token(), AUD_A, exp + leeway),
            Err(TokenError::Expired)
        );
        let strict = Validator::new(ISS, keys.verifying_keys()).with_leeway(Duration::ZERO);
        assert_eq!(
            strict.validate(t.token(), AUD_A, exp),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn not_yet_valid_token_is_refused() {
        let (keys, v) = setup();
        let t = Issuer::new(ISS).issue(&keys, &grant(), NOW + 3600).unwrap();
        assert_eq!(
            v.validate(t.token(), AUD_A, NOW),
            Err(TokenError::NotYetValid)
        );
        // Within the leeway, a slightly fast issuer clock is fine.
        assert!(v.validate(t.token(), AUD_A, NOW + 3600 - 29).is_ok());
    }

    #[test]
    fn wrong_audience_and_tunnel_a_at_tunnel_b_are_refused() {
        let (keys, v) = setup();
        let t = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        assert_eq!(
            v.validate(t.token(), AUD_B, NOW),
            Err(TokenError::WrongAudience)
        );
        // Exact match: no prefix, suffix or case games.
        for aud in [
            "https://relay.example.com/t/shop/mcp/",
            "https://relay.example.com/t/shop",
            "https://RELAY.example.com/t/shop/mcp",
        ] {
            assert_eq!(
                v.validate(t.token(), aud, NOW),
                Err(TokenError::WrongAudience)
            );
        }
        // An array audience is not what we issue.
        let mut c = claims_json(&keys);
        c["aud"] = serde_json::json!([AUD_A]);
        assert_eq!(
            v.validate(&signed_raw(&keys, &c), AUD_A, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let (keys, v) = setup();
        let t = Issuer::new("https://evil.example.com")
            .issue(&keys, &grant(), NOW)
            .unwrap();
        assert_eq!(
            v.validate(t.token(), AUD_A, NOW),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let (keys, v) = setup();
        let c = claims_json(&keys);
        for alg in ["none", "None", "NONE"] {
            let header =
                serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": keys.active().kid()});
            for sig in ["", "AAAA"] {
                let token = format!("{}.{}.{sig}", b64(&header), b64(&c));
                assert_eq!(
                    v.validate(&token, AUD_A, NOW),
                    Err(TokenError::AlgorithmNotAllowed),
                    "alg {alg} sig {sig:?}"
                );
            }
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let (keys, v) = setup();
        let c = claims_json(&keys);
        let public = URL_SAFE_NO_PAD
            .decode(keys.active().public_jwk().x())
            .unwrap();
        // Every plausible "public key bytes" an attacker might use as HMAC secret.
        let secrets: Vec<Vec<u8>> = vec![
            public.clone(),
            keys.active().public_jwk().x().as_bytes().to_vec(),
            serde_json::to_vec(&keys.active().jwk()).unwrap(),
        ];
        for secret in secrets {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let mut header = Header::new(alg);
                header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
                header.kid = Some(keys.active().kid().to_owned());
                let token =
                    jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&secret)).unwrap();
                assert_eq!(
                    v.validate(&token, AUD_A, NOW),
                    Err(TokenError::AlgorithmNotAllowed)
                );
            }
        }
    }

    #[test]
    fn tampered_payload_is_refused() {
        let (keys, v) = setup();
        let t = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        let parts: Vec<&str> = t.token().split('.').collect();
        let mut c = claims_json(&keys);
        for (claim, value) in [
            ("sub", serde_json::json!("admin")),
            ("aud", serde_json::json!(AUD_B)),
            ("exp", serde_json::json!(NOW + 999_999)),
            ("groups", serde_json::json!(["admins"])),
        ] {
            c[claim] = value;
            let forged = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
            assert_eq!(
                v.validate(&forged, AUD_A, NOW),
                Err(TokenError::BadSignature),
                "{claim}"
            );
        }
    }

    #[test]
    fn tampered_signature_is_refused() {
        let (keys, v) = setup();
        let t = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        let (message, sig) = t.token().rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[10] ^= 1;
        let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(
            v.validate(&forged, AUD_A, NOW),
            Err(TokenError::BadSignature)
        );
        let truncated = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&raw[..32]));
        assert_eq!(
            v.validate(&truncated, AUD_A, NOW),
            Err(TokenError::BadSignature)
        );
        let empty = format!("{message}.");
        assert_eq!(
            v.validate(&empty, AUD_A, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unknown_kid_and_missing_kid_are_refused() {
        let (_, v) = setup();
        let stranger = KeySet::generate().unwrap();
        let t = Issuer::new(ISS).issue(&stranger, &grant(), NOW).unwrap();
        assert_eq!(
            v.validate(t.token(), AUD_A, NOW),
            Err(TokenError::UnknownKey)
        );
        // A stranger's token relabelled with our kid fails the signature.
        let (keys, v) = setup();
        let c = claims_json(&keys);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(keys.active().kid().to_owned());
        let forged = jsonwebtoken::encode(
            &header,
            &c,
            &EncodingKey::from_ed_der(stranger.active().pkcs8().expose()),
        )
        .unwrap();
        assert_eq!(
            v.validate(&forged, AUD_A, NOW),
            Err(TokenError::BadSignature)
        );
        header.kid = None;
        let no_kid = jsonwebtoken::encode(
            &header,
            &c,
            &EncodingKey::from_ed_der(keys.active().pkcs8().expose()),
        )
        .unwrap();
        assert_eq!(v.validate(&no_kid, AUD_A, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn wrong_typ_is_refused() {
        let (keys, v) = setup();
        let c = claims_json(&keys);
        for typ in ["JWT", "mcp-tunnel-assertion+jwt"] {
            let token = keys.sign(typ, &c).unwrap();
            assert_eq!(
                v.validate(&token, AUD_A, NOW),
                Err(TokenError::WrongType),
                "{typ}"
            );
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let (keys, v) = setup();
        let c = claims_json(&keys);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(keys.active().kid().to_owned());
        header.crit = Some(vec!["exp".to_owned()]);
        let token = jsonwebtoken::encode(
            &header,
            &c,
            &EncodingKey::from_ed_der(keys.active().pkcs8().expose()),
        )
        .unwrap();
        assert_eq!(v.validate(&token, AUD_A, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn missing_required_claims_are_named() {
        let (keys, v) = setup();
        for claim in [
            "iss",
            "sub",
            "aud",
            "exp",
            "nbf",
            "iat",
            "jti",
            "client_id",
            "scope",
        ] {
            let mut c = claims_json(&keys);
            c.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                v.validate(&signed_raw(&keys, &c), AUD_A, NOW),
                Err(TokenError::MissingClaim(claim))
            );
        }
        // Optional claims may be absent.
        let mut c = claims_json(&keys);
        c.as_object_mut().unwrap().remove("email");
        c.as_object_mut().unwrap().remove("groups");
        let claims = v.validate(&signed_raw(&keys, &c), AUD_A, NOW).unwrap();
        assert_eq!(claims.email, None);
        assert!(claims.groups.is_empty());
    }

    #[test]
    fn wrongly_typed_claims_are_malformed() {
        let (keys, v) = setup();
        for (claim, value) in [
            ("exp", serde_json::json!("tomorrow")),
            ("exp", serde_json::json!(-1)),
            ("sub", serde_json::json!(7)),
            ("groups", serde_json::json!("eng")),
        ] {
            let mut c = claims_json(&keys);
            c[claim] = value;
            assert_eq!(
                v.validate(&signed_raw(&keys, &c), AUD_A, NOW),
                Err(TokenError::Malformed),
                "{claim}"
            );
        }
    }

    #[test]
    fn over_long_lifetime_is_refused() {
        let (keys, v) = setup();
        let mut c = claims_json(&keys);
        c["exp"] = serde_json::json!(NOW + MAX_ACCESS_TOKEN_TTL.as_secs() + 1);
        assert_eq!(
            v.validate(&signed_raw(&keys, &c), AUD_A, NOW),
            Err(TokenError::LifetimeTooLong)
        );
        c["exp"] = serde_json::json!(NOW - 1);
        assert_eq!(
            v.validate(&signed_raw(&keys, &c), AUD_A, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let (_, v) = setup();
        for token in [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "a.b.c.d",
            "eyJhbGciOiJFZERTQSJ9",
            "eyJhbGciOiJFZERTQSJ9.e30",
            "Bearer abc",
            "\u{0}\u{1}",
            "😀.😀.😀",
            "eyJhbGciOiJFZERTQSJ9.%%%.abc",
            "W10.e30.abc",
        ] {
            let r = v.validate(token, AUD_A, NOW);
            assert!(
                matches!(
                    r,
                    Err(TokenError::Malformed | TokenError::UnknownKey | TokenError::BadSignature)
                ),
                "{token:?} gave {r:?}"
            );
        }
        // Header fine, claims not JSON.
        let (keys, v) = setup();
        let header =
            serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": keys.active().kid()});
        let token = format!("{}.bm90IGpzb24.AAAA", b64(&header));
        assert!(v.validate(&token, AUD_A, NOW).is_err());
    }

    #[test]
    fn huge_token_is_refused_before_parsing() {
        let (_, v) = setup();
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.validate(&huge, AUD_A, NOW), Err(TokenError::TooLarge));
        // A real, validly signed token that is too big is refused all the same.
        let (keys, v) = setup();
        let mut g = grant();
        g.groups = (0..2000).map(|i| format!("group-{i}")).collect();
        let t = Issuer::new(ISS).issue(&keys, &g, NOW).unwrap();
        assert!(t.token().len() > MAX_TOKEN_BYTES);
        assert_eq!(v.validate(t.token(), AUD_A, NOW), Err(TokenError::TooLarge));
    }

    #[test]
    fn rotated_key_verifies_within_overlap_and_not_after() {
        let (mut keys, v) = setup();
        let before = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        keys.rotate(NOW + 60, DEFAULT_ROTATION_OVERLAP).unwrap();
        v.set_keys(keys.verifying_keys());
        let after = Issuer::new(ISS).issue(&keys, &grant(), NOW + 60).unwrap();
        assert!(v.validate(before.token(), AUD_A, NOW + 61).is_ok());
        assert!(v.validate(after.token(), AUD_A, NOW + 61).is_ok());
        // The old token's own expiry comes first with the default overlap…
        let exp = before.claims.exp + DEFAULT_LEEWAY.as_secs();
        assert!(v.validate(before.token(), AUD_A, exp - 1).is_ok());
        // …and once the key retires, its tokens are unknown even if unexpired.
        let long = Issuer::new(ISS)
            .with_ttl(Duration::from_secs(7200))
            .unwrap()
            .issue(&keys, &grant(), NOW + 60)
            .unwrap();
        let retire = NOW + 120 + DEFAULT_ROTATION_OVERLAP.as_secs();
        keys.rotate(NOW + 120, DEFAULT_ROTATION_OVERLAP).unwrap();
        v.set_keys(keys.verifying_keys());
        assert!(v.validate(long.token(), AUD_A, retire - 1).is_ok());
        assert_eq!(
            v.validate(long.token(), AUD_A, retire),
            Err(TokenError::UnknownKey)
        );
        // Agents see the same through the published JWKS.
        let from_jwks = Validator::new(ISS, VerifyingKeys::from_jwks(&keys.jwks(retire)).unwrap());
        assert_eq!(
            from_jwks.validate(long.token(), AUD_A, retire),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn www_authenticate_parameters_are_rfc_6750_safe() {
        let all = [
            TokenError::TooLarge,
            TokenError::Malformed,
            TokenError::AlgorithmNotAllowed,
            TokenError::UnknownKey,
            TokenError::WrongType,
            TokenError::BadSignature,
            TokenError::MissingClaim("client_id"),
            TokenError::WrongIssuer,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongAudience,
            TokenError::LifetimeTooLong,
            TokenError::Revoked,
        ];
        for e in all {
            let p = e.www_authenticate_params();
            let desc = p
                .strip_prefix("error=\"invalid_token\", error_description=\"")
                .and_then(|s| s.strip_suffix('"'))
                .unwrap();
            assert_eq!(desc, e.to_string(), "nothing needed replacing");
            assert!(
                desc.chars()
                    .all(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
            );
        }
        assert_eq!(
            TokenError::Expired.www_authenticate_params(),
            "error=\"invalid_token\", error_description=\"the token has expired; refresh it or sign in again\""
        );
    }
}
