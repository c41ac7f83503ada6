//! The relay's durable state: users, OAuth clients, authorization codes,
//! refresh tokens, revoked access tokens and signing keys.
//!
//! ```text
//!   admin CLI ──┐                        ┌── SqliteStore ── <state>/relay.db (WAL, 0600)
//!               ├── Arc<dyn Store> ──────┤
//!   relay  ─────┘   (spawn_blocking)     └── (later) a PostgreSQL store for several relay nodes
//!     └─ polls revision() every second; a change means "reload what you cache"
//! ```
//!
//! [`Store`] is the trait the rest of the relay programs against; [`SqliteStore`]
//! is the embedded default. Both a running relay and the admin CLI open the same
//! file: SQLite's WAL mode lets readers proceed while one writer commits, every
//! write is an `IMMEDIATE` transaction (so two processes queue on the
//! `busy_timeout` instead of failing on a lock upgrade), and [`Store::revision`]
//! is a counter every write bumps, so the relay notices an admin's change with
//! one cheap query per poll.
//!
//! ## Why the trait is synchronous
//! Every operation is one short indexed transaction on a local file (tens of
//! microseconds); an async trait would only move the same blocking call into
//! the implementation, and `async fn` in traits is not object-safe without
//! boxing every future. Async callers wrap calls in
//! `tokio::task::spawn_blocking`; the bearer-token hot path is meant not to touch
//! the store at all (it checks JWT signatures against an in-memory snapshot of
//! keys and revocations, refreshed when the revision changes). A PostgreSQL implementation can use the
//! synchronous `postgres` client, or a pool driven by a private runtime.
//!
//! ## Secrets
//! Codes, refresh tokens, setup tokens and client secrets are high-entropy
//! random strings ([`Secret::generate`]); only their SHA-256 ([`TokenHash`]) is
//! stored, so callers hand the store a hash, never the value. Password hashes
//! are argon2id PHC strings made by the caller. Signing keys are the one
//! exception: the private key (PKCS#8 DER) must be stored as is; the database
//! file is created 0600 inside the 0700 state dir, and `secure_delete` is on so
//! purged keys are overwritten rather than left in free pages.
//!
//! ## Time
//! All times are Unix seconds ([`UnixTime`]). The store reads "now" from a
//! [`Clock`] given at open ([`SystemClock`] in production, [`ManualClock`] in
//! tests); purges and JWKS queries take the time explicitly.

mod clock;
mod error;
mod model;
mod secret;
mod sqlite;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CodeError, RefreshError, StoreError};
pub use model::{
    Client, ClientKind, ClientOwner, CodeRecord, Email, FamilyId, KeyAlgorithm, NewClient, NewCode,
    NewRefresh, NewSigningKey, NewUser, PasswordHash, PrivateKeyDer, PublicSigningKey, PurgeReport,
    RefreshRecord, RevokedJti, SigningKey, UnixTime, User, UserId,
};
pub use model::{Device, EnrollError, EnrollToken, NewDevice, RefreshFamily};
pub use model::{Grant, NewGrant, TunnelPolicy};
pub use secret::{Secret, TokenHash};
pub use sqlite::SqliteStore;

/// The database file's name inside the relay's state dir.
pub const DB_FILE: &str = "relay.db";

/// How long a writer waits for another process's write to finish before
/// failing with "database is locked" (5 s): long enough for any admin command,
/// short enough that a stuck process is reported instead of hanging a request.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a password-setup link stays valid (24 h).
pub const SETUP_TOKEN_TTL_SECS: i64 = 24 * 60 * 60;

/// Longest accepted email address (254 bytes, the SMTP path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Longest display name (200 bytes).
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// Most groups one user can be in (64).
pub const MAX_GROUPS_PER_USER: usize = 64;

/// Longest group name (128 bytes).
pub const MAX_GROUP_LEN: usize = 128;

/// Longest password hash (512 bytes; argon2id PHC strings are ~100).
pub const MAX_PASSWORD_HASH_LEN: usize = 512;

/// Longest client id (2048 bytes: metadata-document clients use their URL).
pub const MAX_CLIENT_ID_LEN: usize = 2048;

/// Longest client name (256 bytes).
pub const MAX_CLIENT_NAME_LEN: usize = 256;

/// Most redirect URIs one client may register (10).
pub const MAX_REDIRECT_URIS: usize = 10;

/// Longest redirect URI, and longest `resource` URL (2048 bytes).
pub const MAX_URI_LEN: usize = 2048;

/// Largest client metadata blob, as serialized JSON (16 KiB).
pub const MAX_CLIENT_METADATA_BYTES: usize = 16 * 1024;

/// Longest `scope` string (1024 bytes).
pub const MAX_SCOPE_LEN: usize = 1024;

/// Longest PKCE code challenge (128 bytes; an S256 challenge is 43).
pub const MAX_CODE_CHALLENGE_LEN: usize = 128;

/// Longest access-token `jti` (128 bytes).
pub const MAX_JTI_LEN: usize = 128;

/// Longest signing-key id (128 bytes).
pub const MAX_KID_LEN: usize = 128;

/// Largest private key (16 KiB of PKCS#8 DER; Ed25519 and P-256 keys are < 200 bytes).
pub const MAX_PRIVATE_KEY_BYTES: usize = 16 * 1024;

/// Largest public JWK, as serialized JSON (8 KiB).
pub const MAX_PUBLIC_JWK_BYTES: usize = 8 * 1024;

/// How many hex digits of an enrollment token's SHA-256 name it in listings (12).
pub const ENROLL_TOKEN_ID_LEN: usize = 12;

/// Fewest hex digits accepted to pick an enrollment token to revoke (8).
pub const MIN_ENROLL_TOKEN_ID_LEN: usize = 8;

/// The relay's durable state. See the module docs for the picture.
///
/// Methods are synchronous and may block on disk or on another process's
/// write (up to [`BUSY_TIMEOUT`]); call them from `spawn_blocking` in async
/// code. Every write that changes a row bumps [`Store::revision`].
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A counter bumped by every write that changes a row (from any process
    /// sharing the store).
    /// Poll it to learn when cached state (disabled users, revocations, keys)
    /// must be reloaded.
    fn revision(&self) -> Result<i64, StoreError>;

    // ---- users -------------------------------------------------------------

    /// Adds a built-in account without a password, and a one-time
    /// password-setup token (valid [`SETUP_TOKEN_TTL_SECS`]) whose plain value
    /// is returned once, for the link `mcp-relay users add` prints.
    /// [`StoreError::Conflict`] if the email exists.
    fn add_user(&self, user: &NewUser) -> Result<(User, Secret), StoreError>;

    /// Creates or updates (display name, groups) a user who signed in through
    /// an external OIDC provider. Never touches the password or disabled flag.
    fn sync_external_user(&self, user: &NewUser) -> Result<User, StoreError>;

    /// The user with this id.
    fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// The user with this (normalized) email.
    fn get_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;

    /// Every user, by email.
    fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Sets (or replaces) a user's password hash.
    fn set_password_hash(&self, id: UserId, hash: &PasswordHash) -> Result<(), StoreError>;

    /// Disables a user and, atomically, revokes everything issued to them
    /// (as [`Store::revoke_user_tokens`]). Idempotent.
    fn disable_user(&self, id: UserId) -> Result<(), StoreError>;

    /// Re-enables a user (revoked tokens stay revoked). Idempotent.
    fn enable_user(&self, id: UserId) -> Result<(), StoreError>;

    /// Replaces the user's setup token with a fresh one (a lost or expired link).
    fn issue_setup_token(&self, id: UserId) -> Result<Secret, StoreError>;

    /// The user a setup token belongs to, without consuming it (to decide
    /// whether to show the set-password form). `None` if unknown, expired,
    /// already used or the user is disabled.
    fn setup_token_user(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError>;

    /// Consumes a setup token: `Some(user)` exactly once, then `None`.
    /// `None` as for [`Store::setup_token_user`].
    fn consume_setup_token(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError>;

    // ---- OAuth clients -----------------------------------------------------

    /// Registers a client. [`StoreError::Conflict`] if the id exists. Only
    /// sizes are checked here; redirect-URI rules (https or loopback) belong to
    /// the registration endpoint that parses them.
    fn insert_client(&self, client: &NewClient) -> Result<Client, StoreError>;

    /// Replaces the name, redirect URIs and metadata of an existing client
    /// (a re-fetched client metadata document).
    fn update_client_registration(
        &self,
        client_id: &str,
        name: &str,
        redirect_uris: &[String],
        metadata: &serde_json::Value,
    ) -> Result<Client, StoreError>;

    /// The client with this id (revoked ones included; check `revoked_at`).
    fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError>;

    /// Every client, oldest first.
    fn list_clients(&self) -> Result<Vec<Client>, StoreError>;

    /// Revokes a client and, atomically, its codes and refresh tokens.
    /// Idempotent; [`StoreError::NotFound`] for an unknown id.
    fn revoke_client(&self, client_id: &str) -> Result<(), StoreError>;

    /// Records that the client was just used (token issued, secret verified).
    fn touch_client_last_used(&self, client_id: &str) -> Result<(), StoreError>;

    /// How many clients were registered from `source` at or after `since`;
    /// the registration endpoint enforces its rate limit with this.
    fn count_registrations_since(&self, source: IpAddr, since: UnixTime)
    -> Result<u64, StoreError>;

    /// Whether `secret` is the current secret of an active (not revoked, not
    /// expired) client. The comparison is constant time.
    fn verify_client_secret(&self, client_id: &str, secret: &str) -> Result<bool, StoreError>;

    // ---- authorization codes ----------------------------------------------

    /// Stores a code (by hash) and returns the token family that tokens issued
    /// from it must join, so a reused code can revoke them.
    fn insert_code(&self, code: &NewCode) -> Result<FamilyId, StoreError>;

    /// Marks a code used and returns it. Fails for unknown or expired codes;
    /// a second use returns [`CodeError::Reused`] after revoking the refresh
    /// tokens issued from the first.
    fn take_code(&self, code: &TokenHash) -> Result<CodeRecord, CodeError>;

    // ---- refresh tokens ----------------------------------------------------

    /// Stores a refresh token (by hash) in a family.
    fn insert_refresh(&self, token: &NewRefresh) -> Result<(), StoreError>;

    /// Exchanges a refresh token for a new one in the same family, atomically.
    /// A second use of `old` revokes the whole family
    /// ([`RefreshError::Reused`]); a token of another client is refused and
    /// left untouched.
    fn rotate_refresh(
        &self,
        old: &TokenHash,
        client_id: &str,
        new: &TokenHash,
        new_expires_at: UnixTime,
    ) -> Result<RefreshRecord, RefreshError>;

    /// RFC 7009 revocation of a refresh token presented by `client_id`:
    /// revokes its family. `false` if the token is unknown or not that client's.
    fn revoke_refresh_token(&self, token: &TokenHash, client_id: &str) -> Result<bool, StoreError>;

    /// Revokes every refresh token of a family; returns how many were not yet revoked.
    fn revoke_family(&self, family: &FamilyId) -> Result<u64, StoreError>;

    /// Every refresh-token family still stored (purged tokens are gone), one
    /// row each, oldest first.
    fn list_refresh_families(&self) -> Result<Vec<RefreshFamily>, StoreError>;

    /// Revokes a user's refresh tokens and unused codes, and sets
    /// [`User::tokens_revoked_at`] so access tokens issued until now can be
    /// refused. Returns how many refresh tokens (not yet revoked) and unused
    /// codes it revoked.
    fn revoke_user_tokens(&self, id: UserId) -> Result<u64, StoreError>;

    /// Revokes a client's refresh tokens and unused codes; returns how many
    /// refresh tokens (not yet revoked) and unused codes it revoked.
    fn revoke_client_tokens(&self, client_id: &str) -> Result<u64, StoreError>;

    // ---- revoked access tokens ---------------------------------------------

    /// Records a revoked access token until it would have expired anyway.
    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError>;

    /// Whether an access token id was revoked.
    fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Every revoked access token not yet expired at `now` (to snapshot into memory).
    fn revoked_jtis(&self, now: UnixTime) -> Result<Vec<RevokedJti>, StoreError>;

    // ---- signing keys ------------------------------------------------------

    /// Stores a new signing key; it becomes the active one.
    fn insert_key(&self, key: &NewSigningKey) -> Result<(), StoreError>;

    /// The key to sign with: the newest one not yet retired.
    fn active_key(&self) -> Result<Option<SigningKey>, StoreError>;

    /// Sets when a key leaves the JWKS (and stops being able to sign).
    /// Pick `at` ≥ now + the longest token lifetime so issued tokens stay
    /// verifiable. [`StoreError::NotFound`] for an unknown kid.
    fn retire_key(&self, kid: &str, at: UnixTime) -> Result<(), StoreError>;

    /// `mcp-relay keys rotate`: inserts `new` and retires every other
    /// unretired key at `retire_old_at`, in one transaction.
    fn rotate_key(&self, new: &NewSigningKey, retire_old_at: UnixTime) -> Result<(), StoreError>;

    /// The public halves of every key not retired at `now`, newest first.
    fn keys_for_jwks(&self, now: UnixTime) -> Result<Vec<PublicSigningKey>, StoreError>;

    // ---- devices (agents' client certificates) ---------------------------

    /// Issues a one-time enrollment token for `user`, valid `ttl_secs`; the
    /// plain value is returned once (`mcp-relay enroll-tokens create`).
    fn issue_enroll_token(&self, user: UserId, ttl_secs: i64) -> Result<Secret, StoreError>;

    /// Uses an enrollment token: its user, or why it cannot be used. A
    /// token works once; the row stays so a reuse is reported as such.
    fn take_enroll_token(
        &self,
        token: &TokenHash,
    ) -> Result<Result<UserId, EnrollError>, StoreError>;

    /// Every enrollment token, newest first (ids, never values).
    fn list_enroll_tokens(&self) -> Result<Vec<EnrollToken>, StoreError>;

    /// Revokes the enrollment token whose [`EnrollToken::id`] starts with
    /// `id_prefix` (at least [`MIN_ENROLL_TOKEN_ID_LEN`] hex digits) by moving
    /// its expiry to now, so a later use is refused as expired. `true` if it
    /// could still be used; `false` if it was already used or expired.
    /// [`StoreError::NotFound`] if no token matches, [`StoreError::Invalid`]
    /// if the prefix is malformed or matches several.
    fn revoke_enroll_token(&self, id_prefix: &str) -> Result<bool, StoreError>;

    /// Records a newly enrolled device.
    fn insert_device(&self, device: &NewDevice) -> Result<Device, StoreError>;

    /// The device with this id.
    fn get_device(&self, id: &str) -> Result<Option<Device>, StoreError>;

    /// Every device, newest first.
    fn list_devices(&self) -> Result<Vec<Device>, StoreError>;

    /// Revokes a device (its connections are cut by the running relay).
    fn revoke_device(&self, id: &str) -> Result<(), StoreError>;

    /// Records a renewed certificate's expiry.
    fn renew_device(&self, id: &str, cert_expires_at: UnixTime) -> Result<(), StoreError>;

    /// Records that the device connected now.
    fn touch_device(&self, id: &str) -> Result<(), StoreError>;

    // ---- housekeeping -----------------------------------------------------

    /// Deletes every code, refresh token, setup token, revoked-jti record and
    /// signing key whose expiry (or retirement) is at or before `now`.
    fn purge_expired(&self, now: UnixTime) -> Result<PurgeReport, StoreError>;

    // --- Authorization: grants, owner policies, tool catalogs ---

    /// Saves a grant (`mcp-agent share`); the store picks its id.
    fn insert_grant(&self, grant: &NewGrant) -> Result<Grant, StoreError>;

    /// One grant by its full id.
    fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;

    /// Every grant (revoked and expired included), or those on `tunnel`.
    fn list_grants(&self, tunnel: Option<&str>) -> Result<Vec<Grant>, StoreError>;

    /// Revokes the one live grant whose id starts with `id_prefix` (at least
    /// 6 hex characters); `None` if none matches.
    fn revoke_grant(&self, id_prefix: &str) -> Result<Option<Grant>, StoreError>;

    /// Sets (or with `None` removes) a tunnel owner's policy file
    /// `(file name, text)`; unchanged text is not a change.
    fn set_tunnel_policy(
        &self,
        tunnel: &str,
        policy: Option<(&str, &str)>,
    ) -> Result<(), StoreError>;

    /// Every tunnel's owner policy, or only `tunnel`'s.
    fn tunnel_policies(&self, tunnel: Option<&str>) -> Result<Vec<TunnelPolicy>, StoreError>;

    /// Saves the tools (a JSON array of `{name, annotations}`) a tunnel's
    /// agent reported; unchanged lists are not a change.
    fn set_tool_catalog(&self, tunnel: &str, tools: &serde_json::Value) -> Result<(), StoreError>;

    /// Every tunnel-name claim (name, owner credential, when claimed).
    fn tunnel_claims(&self) -> Result<Vec<(String, String, UnixTime)>, StoreError>;

    /// One tunnel name's claim: (owner credential, when claimed).
    fn tunnel_claim(&self, tunnel: &str) -> Result<Option<(String, UnixTime)>, StoreError>;

    /// Claims `tunnel` for `owner` at `claimed_at`, replacing any claim (an
    /// admin change: bumps the revision).
    fn set_tunnel_claim(
        &self,
        tunnel: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<(), StoreError>;

    /// Claims `tunnel` for `owner` unless someone already has it; true if it
    /// was free. A connection's own claim: the revision stays put.
    fn add_tunnel_claim(
        &self,
        tunnel: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Moves `tunnel` from `old_owner` (a revoked credential) to `owner`;
    /// false if its claim is no longer `old_owner`'s. The revision stays put.
    fn replace_tunnel_claim(
        &self,
        tunnel: &str,
        old_owner: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Adds `(tunnel, owner, claimed_at)` claims for names not claimed yet,
    /// in one transaction, as an admin change (bumps the revision when one
    /// was added); returns how many were added.
    fn add_tunnel_claims(&self, claims: &[(String, String, UnixTime)])
    -> Result<usize, StoreError>;

    /// Releases a claim (an admin change); false if the name was not claimed.
    fn remove_tunnel_claim(&self, tunnel: &str) -> Result<bool, StoreError>;

    /// Every tunnel's last reported tools, or only `tunnel`'s.
    fn tool_catalogs(
        &self,
        tunnel: Option<&str>,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;
}
