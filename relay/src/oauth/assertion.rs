//! The identity assertion: what the agent learns about a caller instead of
//! the caller's token (no token passthrough).
//!
//! For each request it forwards, the relay signs a compact JWT with the same
//! [`KeySet`] as access tokens, but with its own `typ`
//! ([`ASSERTION_TYP`]) and audience ([`assertion_audience`]), so neither kind
//! of token can stand in for the other. It names the principal (sub, email,
//! groups, client id), the tunnel and the request, and lives at most
//! [`MAX_ASSERTION_TTL`]. The agent checks it with [`verify_assertion`],
//! which needs only the relay's public keys (its JWKS).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::keys::{KeySet, VerifyingKeys};
use crate::oauth::token::{AccessClaims, IssueError, TokenError, check_times};

/// The JWS `typ` of an identity assertion.
pub const ASSERTION_TYP: &str = "mcp-tunnel-assertion+jwt";

/// Longest lifetime (`exp - iat`) an assertion may have, signed or accepted.
pub const MAX_ASSERTION_TTL: Duration = Duration::from_secs(60);

/// Lifetime of the assertions [`AssertionClaims::for_request`] makes: enough
/// to cross the QUIC link and open the stream, short enough that a copy is
/// worthless soon after.
pub const DEFAULT_ASSERTION_TTL: Duration = Duration::from_secs(30);

/// Clock skew tolerated when verifying. The agent should pass a `now`
/// corrected by its measured offset to the relay's clock.
pub const ASSERTION_LEEWAY: Duration = Duration::from_secs(10);

/// The `aud` of assertions for `tunnel`: a URN, never a URL, so it cannot
/// match any access token's audience.
pub fn assertion_audience(tunnel: &str) -> String {
    format!("urn:mcp-tunnel:tunnel:{tunnel}")
}

/// What an assertion says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The relay's issuer URL.
    pub iss: String,
    /// [`assertion_audience`] of [`Self::tunnel`].
    pub aud: String,
    /// The principal.
    pub sub: String,
    /// The user's email; absent for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The OAuth client the caller used.
    pub client_id: String,
    /// The tunnel name.
    pub tunnel: String,
    /// The relay's id for this request (ties the agent's log to the relay's audit).
    pub rid: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, at most [`MAX_ASSERTION_TTL`] after `iat`.
    pub exp: u64,
}

impl AssertionClaims {
    /// The assertion for one request by the holder of `access` to `tunnel`,
    /// valid from `now` for [`DEFAULT_ASSERTION_TTL`].
    pub fn for_request(access: &AccessClaims, tunnel: &str, request_id: &str, now: u64) -> Self {
        Self {
            iss: access.iss.clone(),
            aud: assertion_audience(tunnel),
            sub: access.sub.clone(),
            email: access.email.clone(),
            groups: access.groups.clone(),
            client_id: access.client_id.clone(),
            tunnel: tunnel.to_owned(),
            rid: request_id.to_owned(),
            iat: now,
            exp: now.saturating_add(DEFAULT_ASSERTION_TTL.as_secs()),
        }
    }
}

/// Signs `claims` with the active key. Refuses a lifetime outside
/// 1 s ..= [`MAX_ASSERTION_TTL`] or an audience not matching the tunnel.
pub fn sign_assertion(keys: &KeySet, claims: &AssertionClaims) -> Result<String, IssueError> {
    let ttl = Duration::from_secs(claims.exp.saturating_sub(claims.iat));
    if claims.exp <= claims.iat || ttl > MAX_ASSERTION_TTL {
        return Err(IssueError::TtlOutOfRange(ttl));
    }
    if claims.aud != assertion_audience(&claims.tunnel) {
        return Err(IssueError::AudienceMismatch);
    }
    Ok(keys.sign(ASSERTION_TYP, claims)?)
}

/// Verifies an assertion for `tunnel` at `now` with the relay's public
/// `keys`: the shared JWS checks (size, pinned algorithm, known `kid`,
/// `typ`, signature), then required claims, lifetime, time and audience.
pub fn verify_assertion(
    token: &str,
    keys: &VerifyingKeys,
    tunnel: &str,
    now: u64,
) -> Result<AssertionClaims, TokenError> {
    let raw = keys.verify::<RawAssertionClaims>(token, ASSERTION_TYP, now)?;
    let claims = raw.claims.into_claims()?;
    check_times(
        claims.iat,
        claims.iat,
        claims.exp,
        MAX_ASSERTION_TTL,
        ASSERTION_LEEWAY.as_secs(),
        now,
    )?;
    if claims.tunnel != tunnel || claims.aud != assertion_audience(tunnel) {
        return Err(TokenError::WrongAudience);
    }
    Ok(claims)
}

/// Claims as sent, every one optional, so a missing one is named.
#[derive(Deserialize)]
struct RawAssertionClaims {
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

impl RawAssertionClaims {
    fn into_claims(self) -> Result<AssertionClaims, TokenError> {
        Ok(AssertionClaims {
            iss: self.iss.ok_or(TokenError::MissingClaim("iss"))?,
            aud: self.aud.ok_or(TokenError::MissingClaim("aud"))?,
            sub: self.sub.ok_or(TokenError::MissingClaim("sub"))?,
            email: self.email,
            groups: self.groups,
            client_id: self
                .client_id
                .ok_or(TokenError::MissingClaim("client_id"))?,
            tunnel: self.tunnel.ok_or(TokenError::MissingClaim("tunnel"))?,
            rid: self.rid.ok_or(TokenError::MissingClaim("rid"))?,
            iat: self.iat.ok_or(TokenError::MissingClaim("iat"))?,
            exp: self.exp.ok_or(TokenError::MissingClaim("exp"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::keys::DEFAULT_ROTATION_OVERLAP;
    use crate::oauth::token::tests::{AUD_A, ISS, NOW, grant};
    use crate::oauth::token::{ACCESS_TOKEN_TYP, Issuer, Validator};

    fn access(keys: &KeySet) -> AccessClaims {
        Issuer::new(ISS).issue(keys, &grant(), NOW).unwrap().claims
    }

    /// The agent's view: only the published JWKS.
    fn agent_keys(keys: &KeySet, now: u64) -> VerifyingKeys {
        VerifyingKeys::from_jwks(&keys.jwks(now)).unwrap()
    }

    #[test]
    fn sign_then_verify_with_public_keys_only() {
        let keys = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "req-1", NOW);
        let token = sign_assertion(&keys, &claims).unwrap();
        let got = verify_assertion(&token, &agent_keys(&keys, NOW), "shop", NOW + 1).unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.sub, "user-1");
        assert_eq!(got.email.as_deref(), Some("alice@example.com"));
        assert_eq!(got.groups, vec!["eng".to_owned()]);
        assert_eq!(got.client_id, "client-1");
        assert_eq!(got.rid, "req-1");
        assert!(got.exp - got.iat <= MAX_ASSERTION_TTL.as_secs());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(ASSERTION_TYP));
    }

    #[test]
    fn assertion_for_another_tunnel_is_refused() {
        let keys = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        let token = sign_assertion(&keys, &claims).unwrap();
        assert_eq!(
            verify_assertion(&token, &agent_keys(&keys, NOW), "other", NOW),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn expired_assertion_is_refused() {
        let keys = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        let token = sign_assertion(&keys, &claims).unwrap();
        let vk = agent_keys(&keys, NOW);
        let dead = claims.exp + ASSERTION_LEEWAY.as_secs();
        assert!(verify_assertion(&token, &vk, "shop", dead - 1).is_ok());
        assert_eq!(
            verify_assertion(&token, &vk, "shop", dead),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_assertion(&token, &vk, "shop", NOW - 60),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn lifetime_over_sixty_seconds_is_neither_signed_nor_accepted() {
        let keys = KeySet::generate().unwrap();
        let mut claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        claims.exp = claims.iat + 61;
        assert!(matches!(
            sign_assertion(&keys, &claims),
            Err(IssueError::TtlOutOfRange(_))
        ));
        // Forged with the raw key, past sign_assertion's guard: still refused.
        let token = keys.sign(ASSERTION_TYP, &claims).unwrap();
        assert_eq!(
            verify_assertion(&token, &agent_keys(&keys, NOW), "shop", NOW),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[test]
    fn access_token_is_not_an_assertion_and_vice_versa() {
        let keys = KeySet::generate().unwrap();
        let issued = Issuer::new(ISS).issue(&keys, &grant(), NOW).unwrap();
        assert_eq!(
            verify_assertion(issued.token(), &agent_keys(&keys, NOW), "shop", NOW),
            Err(TokenError::WrongType)
        );
        let claims = AssertionClaims::for_request(&issued.claims, "shop", "r", NOW);
        let assertion = sign_assertion(&keys, &claims).unwrap();
        let v = Validator::new(ISS, keys.verifying_keys());
        assert_eq!(
            v.validate(&assertion, AUD_A, NOW),
            Err(TokenError::WrongType)
        );
        // Even relabelled as an access token, its claims do not fit.
        let relabelled = keys.sign(ACCESS_TOKEN_TYP, &claims).unwrap();
        assert!(v.validate(&relabelled, AUD_A, NOW).is_err());
    }

    #[test]
    fn assertion_from_another_relay_or_tampered_is_refused() {
        let keys = KeySet::generate().unwrap();
        let stranger = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        let foreign = sign_assertion(&stranger, &claims).unwrap();
        let vk = agent_keys(&keys, NOW);
        assert_eq!(
            verify_assertion(&foreign, &vk, "shop", NOW),
            Err(TokenError::UnknownKey)
        );
        let token = sign_assertion(&keys, &claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged_claims = claims.clone();
        forged_claims.groups = vec!["admins".to_owned()];
        let body = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&forged_claims).unwrap(),
        );
        let forged = format!("{}.{body}.{}", parts[0], parts[2]);
        assert_eq!(
            verify_assertion(&forged, &vk, "shop", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn missing_claim_is_named() {
        let keys = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        let mut json = serde_json::to_value(&claims).unwrap();
        json.as_object_mut().unwrap().remove("rid");
        let token = keys.sign(ASSERTION_TYP, &json).unwrap();
        assert_eq!(
            verify_assertion(&token, &agent_keys(&keys, NOW), "shop", NOW),
            Err(TokenError::MissingClaim("rid"))
        );
    }

    #[test]
    fn assertion_signed_before_rotation_verifies_during_overlap() {
        let mut keys = KeySet::generate().unwrap();
        let claims = AssertionClaims::for_request(&access(&keys), "shop", "r", NOW);
        let token = sign_assertion(&keys, &claims).unwrap();
        keys.rotate(NOW, DEFAULT_ROTATION_OVERLAP).unwrap();
        assert!(verify_assertion(&token, &agent_keys(&keys, NOW), "shop", NOW + 1).is_ok());
    }
}
