//! The store's entities, and the checks every implementation applies to inputs.

use std::fmt;
use std::net::IpAddr;

use super::secret::TokenHash;
use super::{
    MAX_CLIENT_ID_LEN, MAX_CLIENT_METADATA_BYTES, MAX_CLIENT_NAME_LEN, MAX_CODE_CHALLENGE_LEN,
    MAX_DISPLAY_NAME_LEN, MAX_EMAIL_LEN, MAX_GROUP_LEN, MAX_GROUPS_PER_USER, MAX_JTI_LEN,
    MAX_KID_LEN, MAX_PASSWORD_HASH_LEN, MAX_PRIVATE_KEY_BYTES, MAX_PUBLIC_JWK_BYTES,
    MAX_REDIRECT_URIS, MAX_SCOPE_LEN, MAX_URI_LEN, StoreError,
};

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// A user's stable id (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email address, trimmed and lowercased, so lookups are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    /// Normalizes and checks an address: one `@` with text on both sides, no
    /// spaces or control characters, at most [`MAX_EMAIL_LEN`] bytes.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let email = raw.trim().to_lowercase();
        let invalid = |reason: &str| StoreError::Invalid {
            field: "email",
            reason: format!("{reason} (got {:?})", truncate(raw, 80)),
        };
        if email.len() > MAX_EMAIL_LEN {
            return Err(invalid(&format!("longer than {MAX_EMAIL_LEN} bytes")));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains spaces or control characters"));
        }
        match email.split_once('@') {
            Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
            {
                Ok(Self(email))
            }
            _ => Err(invalid(
                "expected exactly one @ between a name and a domain",
            )),
        }
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An argon2id password hash in PHC string form (`$argon2id$v=19$…`), made by
/// the caller. `Debug` prints `MASKED`: a hash still helps an offline guesser.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Accepts a PHC string of the argon2id variant, at most [`MAX_PASSWORD_HASH_LEN`] bytes.
    pub fn parse(phc: &str) -> Result<Self, StoreError> {
        if !phc.starts_with("$argon2id$") {
            return Err(StoreError::Invalid {
                field: "password hash",
                reason: "expected an argon2id PHC string ($argon2id$…)".to_owned(),
            });
        }
        check_len("password hash", phc, MAX_PASSWORD_HASH_LEN)?;
        Ok(Self(phc.to_owned()))
    }

    /// The PHC string, for the verifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(MASKED)")
    }
}

/// A user to create (or, for OIDC sign-ins, to create or update).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The sign-in name.
    pub email: Email,
    /// Shown on consent pages; may be empty.
    pub display_name: String,
    /// Group names, for policies.
    pub groups: Vec<String>,
}

impl NewUser {
    /// Checks the limits ([`MAX_DISPLAY_NAME_LEN`], [`MAX_GROUPS_PER_USER`], [`MAX_GROUP_LEN`]).
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("display name", &self.display_name, MAX_DISPLAY_NAME_LEN)?;
        if self.groups.len() > MAX_GROUPS_PER_USER {
            return Err(StoreError::Invalid {
                field: "groups",
                reason: format!("at most {MAX_GROUPS_PER_USER} groups per user"),
            });
        }
        for g in &self.groups {
            check_text("group", g, MAX_GROUP_LEN)?;
            if g.is_empty() {
                return Err(StoreError::Invalid {
                    field: "group",
                    reason: "a group name cannot be empty".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Normalized email (unique).
    pub email: Email,
    /// Display name; may be empty.
    pub display_name: String,
    /// Group names.
    pub groups: Vec<String>,
    /// The password hash; `None` until the user follows the setup link
    /// (and always for OIDC-only users).
    pub password_hash: Option<PasswordHash>,
    /// A disabled user cannot sign in or use any token.
    pub disabled: bool,
    /// When the user was added.
    pub created_at: UnixTime,
    /// Access tokens issued at or before this time must be refused
    /// (`mcp-relay tokens revoke --user`, `users disable`).
    pub tokens_revoked_at: Option<UnixTime>,
}

/// How a client came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// RFC 7591 dynamic client registration.
    Dynamic,
    /// A client ID metadata document (the client id is its https URL).
    MetadataDocument,
    /// A non-human client using `client_credentials` with a secret.
    ServiceAccount,
}

impl ClientKind {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::MetadataDocument => "metadata-document",
            Self::ServiceAccount => "service-account",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "dynamic" => Some(Self::Dynamic),
            "metadata-document" => Some(Self::MetadataDocument),
            "service-account" => Some(Self::ServiceAccount),
            _ => None,
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who answers for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientOwner {
    /// The relay admin (service accounts created by the CLI).
    Admin,
    /// A user (a service account a user created).
    User(UserId),
    /// Nobody: the client registered itself (dynamic registration, metadata document).
    SelfRegistered,
}

/// A client to register.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// The OAuth `client_id` (at most [`MAX_CLIENT_ID_LEN`] bytes).
    pub client_id: String,
    /// How it registered.
    pub kind: ClientKind,
    /// Human-readable name for consent pages and listings.
    pub name: String,
    /// Allowed redirect URIs (at most [`MAX_REDIRECT_URIS`]).
    pub redirect_uris: Vec<String>,
    /// Hash of the client secret (service accounts).
    pub secret_hash: Option<TokenHash>,
    /// Who answers for it.
    pub owner: ClientOwner,
    /// The registration metadata as received (at most [`MAX_CLIENT_METADATA_BYTES`]).
    pub metadata: serde_json::Value,
    /// The address that registered it (dynamic registration), for rate limits.
    pub registered_from: Option<IpAddr>,
    /// When the client (its secret) stops working, if ever.
    pub expires_at: Option<UnixTime>,
}

impl NewClient {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("client_id", &self.client_id, MAX_CLIENT_ID_LEN)?;
        if self.client_id.is_empty() {
            return Err(StoreError::Invalid {
                field: "client_id",
                reason: "cannot be empty".to_owned(),
            });
        }
        check_registration(&self.name, &self.redirect_uris, &self.metadata)?;
        if self.kind == ClientKind::ServiceAccount && self.secret_hash.is_none() {
            return Err(StoreError::Invalid {
                field: "client secret",
                reason: "a service account needs a secret".to_owned(),
            });
        }
        Ok(())
    }
}

/// A stored client.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The OAuth `client_id`.
    pub client_id: String,
    /// How it registered.
    pub kind: ClientKind,
    /// Human-readable name.
    pub name: String,
    /// Allowed redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Whether it has a secret (the hash is never handed out).
    pub has_secret: bool,
    /// Who answers for it.
    pub owner: ClientOwner,
    /// Registration metadata as received.
    pub metadata: serde_json::Value,
    /// Where it registered from.
    pub registered_from: Option<IpAddr>,
    /// When it was registered.
    pub created_at: UnixTime,
    /// When it last obtained a token or presented its secret.
    pub last_used_at: Option<UnixTime>,
    /// When it stops working, if ever.
    pub expires_at: Option<UnixTime>,
    /// When it was revoked.
    pub revoked_at: Option<UnixTime>,
}

impl Client {
    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The token family of one authorization grant: every refresh token rotated
/// from one code shares it, so reuse anywhere revokes all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FamilyId(String);

impl FamilyId {
    /// A fresh random id (128 bits, hex).
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }

    /// Accepts an id in the form [`FamilyId::generate`] makes (32 lowercase hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Self(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FamilyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authorization code to store.
#[derive(Debug, Clone)]
pub struct NewCode {
    /// SHA-256 of the code.
    pub hash: TokenHash,
    /// The client it was issued to.
    pub client_id: String,
    /// The user who approved it.
    pub user_id: UserId,
    /// The redirect URI it was sent to (the token request must repeat it).
    pub redirect_uri: String,
    /// The PKCE S256 code challenge.
    pub code_challenge: String,
    /// The tunnel resource URL the tokens will be bound to.
    pub resource: String,
    /// Granted scope.
    pub scope: String,
    /// When it expires.
    pub expires_at: UnixTime,
}

impl NewCode {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("client_id", &self.client_id, MAX_CLIENT_ID_LEN)?;
        check_text("redirect_uri", &self.redirect_uri, MAX_URI_LEN)?;
        check_text(
            "code_challenge",
            &self.code_challenge,
            MAX_CODE_CHALLENGE_LEN,
        )?;
        check_text("resource", &self.resource, MAX_URI_LEN)?;
        check_text("scope", &self.scope, MAX_SCOPE_LEN)
    }
}

/// An exchanged authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// The family the tokens issued from this code join.
    pub family: FamilyId,
    /// The client it was issued to.
    pub client_id: String,
    /// The user who approved it.
    pub user_id: UserId,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// The PKCE S256 code challenge.
    pub code_challenge: String,
    /// The tunnel resource URL.
    pub resource: String,
    /// Granted scope.
    pub scope: String,
    /// When it was issued.
    pub created_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct NewRefresh {
    /// SHA-256 of the token.
    pub hash: TokenHash,
    /// Its family ([`CodeRecord::family`]).
    pub family: FamilyId,
    /// The client it was issued to.
    pub client_id: String,
    /// The user it acts for.
    pub user_id: UserId,
    /// The tunnel resource URL.
    pub resource: String,
    /// Granted scope.
    pub scope: String,
    /// When it expires.
    pub expires_at: UnixTime,
}

impl NewRefresh {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("client_id", &self.client_id, MAX_CLIENT_ID_LEN)?;
        check_text("resource", &self.resource, MAX_URI_LEN)?;
        check_text("scope", &self.scope, MAX_SCOPE_LEN)
    }
}

/// A live refresh token (the new one, after a rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// Its family.
    pub family: FamilyId,
    /// The client it was issued to.
    pub client_id: String,
    /// The user it acts for.
    pub user_id: UserId,
    /// The tunnel resource URL.
    pub resource: String,
    /// Granted scope.
    pub scope: String,
    /// When it was issued.
    pub created_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// A refresh-token family seen as one credential: every token rotated from
/// one grant, summarized for listings (`mcp-relay credentials list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFamily {
    /// The family id.
    pub family: FamilyId,
    /// The client its tokens were issued to.
    pub client_id: String,
    /// The user they act for.
    pub user_id: UserId,
    /// When its first token was issued.
    pub created_at: UnixTime,
    /// The latest expiry of a token that can still be exchanged (neither used
    /// nor revoked); of any token when none can.
    pub expires_at: UnixTime,
    /// When a token of the family was last issued or exchanged.
    pub last_used_at: UnixTime,
    /// When the last of its tokens was revoked; `None` while any is not.
    pub revoked_at: Option<UnixTime>,
}

/// A revoked access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedJti {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`; the record can go after it.
    pub expires_at: UnixTime,
}

/// A JWT signing algorithm the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// Ed25519 (`EdDSA`).
    EdDsa,
    /// ECDSA P-256 with SHA-256 (`ES256`).
    Es256,
}

impl KeyAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }
}

/// A private key in PKCS#8 DER. `Debug` prints `MASKED`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyDer(pub Vec<u8>);

impl fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyDer(MASKED)")
    }
}

/// A signing key to store.
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    /// Key id (`kid`), unique.
    pub kid: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// The private key.
    pub private_key: PrivateKeyDer,
    /// The public key as a JWK object, served in the JWKS.
    pub public_jwk: serde_json::Value,
}

impl NewSigningKey {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("kid", &self.kid, MAX_KID_LEN)?;
        if self.kid.is_empty() {
            return Err(StoreError::Invalid {
                field: "kid",
                reason: "cannot be empty".to_owned(),
            });
        }
        if self.private_key.0.is_empty() || self.private_key.0.len() > MAX_PRIVATE_KEY_BYTES {
            return Err(StoreError::Invalid {
                field: "private key",
                reason: format!("expected 1 to {MAX_PRIVATE_KEY_BYTES} bytes of PKCS#8 DER"),
            });
        }
        if !self.public_jwk.is_object() {
            return Err(StoreError::Invalid {
                field: "public JWK",
                reason: "expected a JSON object".to_owned(),
            });
        }
        check_json("public JWK", &self.public_jwk, MAX_PUBLIC_JWK_BYTES).map(drop)
    }
}

/// A stored signing key, private half included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// The private key.
    pub private_key: PrivateKeyDer,
    /// The public key as a JWK object.
    pub public_jwk: serde_json::Value,
    /// When it was made.
    pub created_at: UnixTime,
    /// When it leaves the JWKS, if scheduled.
    pub retires_at: Option<UnixTime>,
}

/// The public half of a signing key, for the JWKS and for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSigningKey {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: KeyAlgorithm,
    /// The public key as a JWK object.
    pub public_jwk: serde_json::Value,
    /// When it was made.
    pub created_at: UnixTime,
    /// When it leaves the JWKS, if scheduled.
    pub retires_at: Option<UnixTime>,
}

/// How many expired rows [`super::Store::purge_expired`] deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Authorization codes.
    pub codes: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Password-setup tokens.
    pub setup_tokens: u64,
    /// Revoked access-token records.
    pub revoked_jtis: u64,
    /// Retired signing keys.
    pub signing_keys: u64,
}

/// Checks the name, redirect URIs and metadata of a client; returns the
/// serialized metadata.
pub(crate) fn check_registration(
    name: &str,
    redirect_uris: &[String],
    metadata: &serde_json::Value,
) -> Result<String, StoreError> {
    check_text("client name", name, MAX_CLIENT_NAME_LEN)?;
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(StoreError::Invalid {
            field: "redirect_uris",
            reason: format!("at most {MAX_REDIRECT_URIS} redirect URIs per client"),
        });
    }
    for uri in redirect_uris {
        check_text("redirect_uri", uri, MAX_URI_LEN)?;
    }
    check_json("client metadata", metadata, MAX_CLIENT_METADATA_BYTES)
}

/// Checks a jti's size.
pub(crate) fn check_jti(jti: &str) -> Result<(), StoreError> {
    check_text("jti", jti, MAX_JTI_LEN)
}

/// At most `max` bytes and no control characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    check_len(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field,
            reason: "contains control characters".to_owned(),
        });
    }
    Ok(())
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.len() > max {
        return Err(StoreError::Invalid {
            field,
            reason: format!("longer than {max} bytes ({} bytes)", value.len()),
        });
    }
    Ok(())
}

fn check_json(
    field: &'static str,
    value: &serde_json::Value,
    max: usize,
) -> Result<String, StoreError> {
    let text = value.to_string();
    if text.len() > max {
        return Err(StoreError::Invalid {
            field,
            reason: format!("larger than {max} bytes as JSON ({} bytes)", text.len()),
        });
    }
    Ok(text)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// A device to record at enrollment.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Device id (the certificate's subject CN), e.g. `dev_…`.
    pub id: String,
    /// The user it belongs to.
    pub user_id: UserId,
    /// A label (host name) the agent gave; may be empty.
    pub label: String,
    /// SHA-256 (hex) of the device key's SubjectPublicKeyInfo.
    pub key_sha256: String,
    /// The first certificate's `notAfter`.
    pub cert_expires_at: UnixTime,
}

/// A stored device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// Label.
    pub label: String,
    /// SHA-256 (hex) of the enrolled key.
    pub key_sha256: String,
    /// When enrolled.
    pub created_at: UnixTime,
    /// The current certificate's `notAfter`.
    pub cert_expires_at: UnixTime,
    /// Last connection.
    pub last_seen_at: Option<UnixTime>,
    /// When revoked.
    pub revoked_at: Option<UnixTime>,
}

/// Why an enrollment token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// No such token.
    #[error(
        "the enrollment token is unknown; create one with `mcp-relay enroll-tokens create --user EMAIL`"
    )]
    Unknown,
    /// Already used.
    #[error("the enrollment token was already used (at {0}); create a new one")]
    Used(UnixTime),
    /// Expired.
    #[error("the enrollment token expired (at {0}); create a new one")]
    Expired(UnixTime),
    /// Its user is disabled.
    #[error("the enrollment token's account is disabled")]
    Disabled,
}

/// A one-time enrollment token as listed: never its value or full hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollToken {
    /// The first [`super::ENROLL_TOKEN_ID_LEN`] hex digits of the token's
    /// SHA-256: enough to name it, useless to an attacker.
    pub id: String,
    /// The account the device will belong to.
    pub user_id: UserId,
    /// When it was issued.
    pub created_at: UnixTime,
    /// When it stops working (or was revoked: revoking moves it to then).
    pub expires_at: UnixTime,
    /// When it was used.
    pub used_at: Option<UnixTime>,
}

/// A grant to save (`mcp-agent share`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    /// The tunnel.
    pub tunnel: String,
    /// `bob@example.com`, `@example.com` or `group:NAME` (already checked).
    pub subject: String,
    /// Only these tools; `None` = every tool.
    pub tools: Option<Vec<String>>,
    /// Only read-only tools.
    pub read_only: bool,
    /// Who made it (the owner's email).
    pub created_by: String,
    /// When it stops counting.
    pub expires_at: Option<UnixTime>,
}

/// A stored grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    /// 16 hex characters.
    pub id: String,
    /// The tunnel.
    pub tunnel: String,
    /// `bob@example.com`, `@example.com` or `group:NAME`.
    pub subject: String,
    /// Only these tools; `None` = every tool.
    pub tools: Option<Vec<String>>,
    /// Only read-only tools.
    pub read_only: bool,
    /// Who made it.
    pub created_by: String,
    /// When made.
    pub created_at: UnixTime,
    /// When it stops counting.
    pub expires_at: Option<UnixTime>,
    /// When revoked.
    pub revoked_at: Option<UnixTime>,
}

impl Grant {
    /// Whether it counts at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A tunnel owner's policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPolicy {
    /// The tunnel.
    pub tunnel: String,
    /// The file's name, for messages.
    pub file_name: String,
    /// The Cedar text.
    pub text: String,
    /// When last changed.
    pub updated_at: UnixTime,
}
