//! Versioned schema migrations for the SQLite store.
//!
//! Migration `N` (1-based index into [`MIGRATIONS`]) is applied once, in its
//! own `IMMEDIATE` transaction that re-reads the version first, so a relay and
//! an admin command opening an old file at the same moment cannot both apply
//! it. Never edit a released migration; append a new one.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::StoreError;

/// The schema, one step per element. Tables are STRICT so a value of the wrong
/// type is refused at write time instead of surfacing later as a corrupt row.
pub(super) const MIGRATIONS: &[&str] = &[
    // v1: everything issue 4 needs.
    r#"
    CREATE TABLE revision (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO revision (id, value) VALUES (1, 0);

    CREATE TABLE users (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        email             TEXT NOT NULL UNIQUE,
        display_name      TEXT NOT NULL,
        groups_json       TEXT NOT NULL,
        password_hash     TEXT,
        disabled          INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at        INTEGER NOT NULL,
        tokens_revoked_at INTEGER
    ) STRICT;

    CREATE TABLE setup_tokens (
        hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
        user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX setup_tokens_by_user ON setup_tokens (user_id);

    CREATE TABLE clients (
        client_id          TEXT PRIMARY KEY,
        kind               TEXT NOT NULL,
        name               TEXT NOT NULL,
        redirect_uris_json TEXT NOT NULL,
        secret_hash        BLOB CHECK (secret_hash IS NULL OR length(secret_hash) = 32),
        owner              TEXT NOT NULL,
        owner_user_id      INTEGER REFERENCES users (id),
        metadata_json      TEXT NOT NULL,
        registered_from    TEXT,
        created_at         INTEGER NOT NULL,
        last_used_at       INTEGER,
        expires_at         INTEGER,
        revoked_at         INTEGER
    ) STRICT;
    CREATE INDEX clients_by_source ON clients (registered_from, created_at);

    CREATE TABLE auth_codes (
        hash           BLOB PRIMARY KEY CHECK (length(hash) = 32),
        family_id      TEXT NOT NULL,
        client_id      TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
        user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        redirect_uri   TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        resource       TEXT NOT NULL,
        scope          TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        used_at        INTEGER
    ) STRICT;
    CREATE INDEX auth_codes_by_user ON auth_codes (user_id);
    CREATE INDEX auth_codes_by_client ON auth_codes (client_id);
    CREATE INDEX auth_codes_by_expiry ON auth_codes (expires_at);

    CREATE TABLE refresh_tokens (
        hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
        family_id  TEXT NOT NULL,
        client_id  TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
        user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        resource   TEXT NOT NULL,
        scope      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER,
        revoked_at INTEGER
    ) STRICT;
    CREATE INDEX refresh_by_family ON refresh_tokens (family_id);
    CREATE INDEX refresh_by_user ON refresh_tokens (user_id);
    CREATE INDEX refresh_by_client ON refresh_tokens (client_id);
    CREATE INDEX refresh_by_expiry ON refresh_tokens (expires_at);

    CREATE TABLE revoked_jtis (
        jti        TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX revoked_jtis_by_expiry ON revoked_jtis (expires_at);

    CREATE TABLE signing_keys (
        kid         TEXT PRIMARY KEY,
        algorithm   TEXT NOT NULL,
        private_key BLOB NOT NULL,
        public_jwk  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        retires_at  INTEGER
    ) STRICT;
    "#,
    // v2: agent devices and their one-time enrollment tokens (issue 5).
    r#"
    CREATE TABLE enroll_tokens (
        hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
        user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    ) STRICT;
    CREATE INDEX enroll_tokens_by_expiry ON enroll_tokens (expires_at);

    CREATE TABLE devices (
        id              TEXT PRIMARY KEY,
        user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        label           TEXT NOT NULL,
        key_sha256      TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        cert_expires_at INTEGER NOT NULL,
        last_seen_at    INTEGER,
        revoked_at      INTEGER
    ) STRICT;
    CREATE INDEX devices_by_user ON devices (user_id);
    "#,
    // v3: authorization (issue 6): grants made with `mcp-agent share`, the
    // owner's policy file and the tools (with annotations) each tunnel serves.
    r#"
    CREATE TABLE grants (
        id          TEXT PRIMARY KEY,
        tunnel      TEXT NOT NULL,
        subject     TEXT NOT NULL,
        tools_json  TEXT,
        read_only   INTEGER NOT NULL CHECK (read_only IN (0, 1)),
        created_by  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        revoked_at  INTEGER
    ) STRICT;
    CREATE INDEX grants_by_tunnel ON grants (tunnel);

    CREATE TABLE tunnel_policies (
        tunnel      TEXT PRIMARY KEY,
        file_name   TEXT NOT NULL,
        text        TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE tool_catalogs (
        tunnel      TEXT PRIMARY KEY,
        tools_json  TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;
    "#,
    // v4: tunnel-name claims move from tunnels.json (rewritten whole, with an
    // fsync, for every new name: quadratic in the number of tunnels) to a
    // table; the relay imports an existing tunnels.json once.
    r#"
    CREATE TABLE tunnel_claims (
        tunnel      TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        claimed_at  INTEGER NOT NULL
    ) STRICT;
    "#,
];

/// The newest schema this build knows.
pub(super) fn latest() -> i64 {
    // The list is a compile-time constant far below i64::MAX.
    MIGRATIONS.len() as i64
}

/// Brings the database to [`latest`], or refuses a newer one.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Refuse a newer file before writing anything to it.
    let found =
        current_version(conn).map_err(|source| StoreError::Migration { version: 0, source })?;
    check_not_newer(found)?;
    for version in (found + 1)..=latest() {
        apply(conn, version).map_err(|source| StoreError::Migration { version, source })??;
    }
    Ok(())
}

/// Applies one migration unless another process already did. The outer
/// result is SQLite's, the inner one a newer schema found mid-way.
fn apply(conn: &mut Connection, version: i64) -> rusqlite::Result<Result<(), StoreError>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )?;
    let now = current_version(&tx)?;
    if now >= version {
        if let Err(e) = check_not_newer(now) {
            return Ok(Err(e));
        }
        return Ok(Ok(()));
    }
    let index = usize::try_from(version - 1).unwrap_or(usize::MAX);
    let Some(sql) = MIGRATIONS.get(index) else {
        return Ok(Ok(()));
    };
    tx.execute_batch(sql)?;
    tx.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (?1, unixepoch())",
        [version],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The highest applied migration; 0 for a new file.
fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_table: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

fn check_not_newer(found: i64) -> Result<(), StoreError> {
    if found > latest() {
        return Err(StoreError::NewerSchema {
            found,
            supported: latest(),
        });
    }
    Ok(())
}
