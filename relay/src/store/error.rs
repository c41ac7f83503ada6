//! Errors of the state store, one enum per area.

use std::path::PathBuf;

use super::FamilyId;

/// Opening, migrating, reading or writing the store failed, or an input was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be created, opened or given mode 0600.
    #[error("cannot open the relay database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer mcp-relay with a schema this one does not know.
    #[error(
        "this state dir was written by a newer mcp-relay (schema v{found}; this build knows up to v{supported}); upgrade mcp-relay"
    )]
    NewerSchema {
        /// The schema version found in the file.
        found: i64,
        /// The newest schema this build knows.
        supported: i64,
    },
    /// A schema migration failed; the database was left at the previous version.
    #[error("upgrading the relay database to schema v{version} failed: {source}")]
    Migration {
        /// The migration that failed.
        version: i64,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite reported an error (I/O, a lock held longer than the busy timeout, a full disk…).
    #[error("relay database error while {doing}: {source}")]
    Sqlite {
        /// What the store was doing.
        doing: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored row could not be decoded; the file was edited or damaged.
    #[error(
        "the relay database has a corrupt row in table `{table}`: {detail}; restore a backup of the state dir or remove the row"
    )]
    Corrupt {
        /// The table holding the row.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An input was malformed or over its documented limit.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which input.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An entity with that key already exists.
    #[error("{what} {key} already exists")]
    Conflict {
        /// The kind of entity ("user", "client", "signing key").
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// No entity with that key exists.
    #[error("no {what} {key}")]
    NotFound {
        /// The kind of entity.
        what: &'static str,
        /// The key that was looked up.
        key: String,
    },
}

/// Why an authorization code could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// No such code (never issued, purged, or revoked with its user or client).
    #[error("unknown authorization code")]
    Unknown,
    /// The code expired before it was exchanged.
    #[error("the authorization code expired")]
    Expired,
    /// The code was already exchanged: likely stolen. The refresh tokens issued
    /// from the first exchange were revoked; the caller should also refuse
    /// access tokens of this family.
    #[error("the authorization code was already used; tokens issued from it were revoked")]
    Reused {
        /// The family of tokens issued from the first exchange.
        family: FamilyId,
        /// How many refresh tokens of the family were not yet revoked.
        revoked: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a refresh token could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// No such refresh token (never issued, or purged after expiry).
    #[error("unknown refresh token")]
    Unknown,
    /// The refresh token expired.
    #[error("the refresh token expired")]
    Expired,
    /// The token, its user or its client was revoked or disabled.
    #[error("the refresh token was revoked")]
    Revoked,
    /// The token belongs to another client; it was left untouched.
    #[error("the refresh token was issued to another client")]
    WrongClient,
    /// The token was already rotated: likely stolen. Its whole family is now revoked.
    #[error("the refresh token was already used; its token family was revoked")]
    Reused {
        /// The revoked family.
        family: FamilyId,
        /// How many tokens of the family were not yet revoked.
        revoked: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
