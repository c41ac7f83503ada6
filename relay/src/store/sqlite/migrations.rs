//! Versioned schema migrations for the SQLite store.
//!
//! Migration `N` (1-based index into [`MIGRATIONS`]) is applied once, in its
//! own `IMMEDIATE` transaction that re-reads the version first, so a relay and
//! an admin command opening an old file at the same moment cannot both apply
//! it. Never edit a released migration; append a new one.
//!
//! Before a file that already holds a schema is upgraded, a consistent copy of
//! it is taken with SQLite's online backup API into `backups/` beside it
//! (`relay.db.v3-1700000000.bak`, 0600, the newest [`KEEP_BACKUPS`] kept): a
//! migration is the one write an operator cannot undo with a newer binary, and
//! a downgrade after a bad upgrade needs the old file. No backup, no upgrade.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::StoreError;

/// How many pre-migration copies of each database `backups/` keeps (5).
pub(super) const KEEP_BACKUPS: usize = 5;

/// The directory, beside the database, that holds pre-migration copies.
pub(super) const BACKUP_DIR: &str = "backups";

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

/// Brings the database at `path` (open as `conn`) to [`latest`], or refuses a
/// newer one. A file with an older, non-empty schema is first copied to
/// `backups/` beside it; if that copy fails nothing is changed.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // Refuse a newer file before writing anything to it.
    let found =
        current_version(conn).map_err(|source| StoreError::Migration { version: 0, source })?;
    check_not_newer(found)?;
    if found > 0 && found < latest() {
        let copy = backup_before_upgrade(conn, path, found).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "it has schema v{found} and needs an upgrade to v{latest}, but the copy taken \
                 first failed ({e}); nothing was changed. Free disk space or fix the permissions \
                 of {dir}, then start again",
                latest = latest(),
                dir = backup_dir(path).display(),
            )),
        })?;
        tracing::info!(
            backup = %copy.display(),
            from = found,
            to = latest(),
            "backed up the relay database before upgrading its schema"
        );
    }
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
pub(super) fn current_version(conn: &Connection) -> rusqlite::Result<i64> {
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

/// Where pre-migration copies of the database at `path` go.
fn backup_dir(path: &Path) -> PathBuf {
    path.parent().unwrap_or(Path::new(".")).join(BACKUP_DIR)
}

/// Copies the database (schema `version`) into [`BACKUP_DIR`] with the online
/// backup API, then drops all but the newest [`KEEP_BACKUPS`] copies of it.
fn backup_before_upgrade(
    conn: &Connection,
    path: &Path,
    version: i64,
) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let dir = backup_dir(path);
    crate::state_dir::create_private_dir(&dir)?;
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(crate::store::DB_FILE);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Two upgrades within a second (a test, a crash loop) get distinct names.
    // Names are claimed exclusively: a relay and an admin command (or a
    // `--replace` relay) upgrading at the same moment never share a file.
    let mut n = 0;
    loop {
        let copy = if n == 0 {
            dir.join(format!("{stem}.v{version}-{now}.bak"))
        } else {
            dir.join(format!("{stem}.v{version}-{now}-{n}.bak"))
        };
        match crate::backup::copy_database(conn, &copy) {
            Ok(()) => {
                prune_backups(&dir, stem);
                return Ok(copy);
            }
            Err(e)
                if n < 1000
                    && e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists) =>
            {
                n += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes all but the newest [`KEEP_BACKUPS`] pre-migration copies of `stem`.
/// Best effort: a copy that cannot be removed costs disk space, not safety.
fn prune_backups(dir: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{stem}.v");
    let mut copies: Vec<((u64, u64), String)> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            // <stem>.v<version>-<unix time>[-<n>].bak
            let rest = name.strip_prefix(&prefix)?.strip_suffix(".bak")?;
            let mut parts = rest.split('-').skip(1);
            let at: u64 = parts.next()?.parse().ok()?;
            let n: u64 = parts.next().map_or(Some(0), |n| n.parse().ok())?;
            Some(((at, n), name))
        })
        .collect();
    if copies.len() <= KEEP_BACKUPS {
        return;
    }
    copies.sort();
    let excess = copies.len() - KEEP_BACKUPS;
    for (_, name) in copies.into_iter().take(excess) {
        let old = dir.join(&name);
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(
                path = %old.display(),
                error = %e,
                "could not remove an old pre-migration backup"
            );
        }
    }
}

/// Applies migrations 1..=`version` only: an older relay's database.
pub(super) fn migrate_to(conn: &mut Connection, version: i64) {
    for v in 1..=version {
        apply(conn, v)
            .expect("migration applies")
            .expect("not newer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Store};

    fn old_db(dir: &Path) -> PathBuf {
        let path = dir.join(crate::store::DB_FILE);
        SqliteStore::create_at_version(&path, latest() - 1);
        path
    }

    fn copies(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(BACKUP_DIR))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn emails(store: &SqliteStore) -> Vec<String> {
        store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.email.to_string())
            .collect()
    }

    #[test]
    fn backup_first_then_an_older_database_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_db(dir.path());

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(SqliteStore::file_schema_version(&path).unwrap(), latest());
        assert_eq!(emails(&store), ["alice@example.com", "bob@example.com"]);

        let copies = copies(dir.path());
        assert_eq!(copies.len(), 1, "{copies:?}");
        let name = copies[0].file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("relay.db.v{}-", latest() - 1)) && name.ends_with(".bak"),
            "{name}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&copies[0]), 0o600);
            assert_eq!(mode(&dir.path().join(BACKUP_DIR)), 0o700);
        }
        // The copy is the old file: old version, same rows, no newer table.
        let conn = Connection::open(&copies[0]).unwrap();
        assert_eq!(current_version(&conn).unwrap(), latest() - 1);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);

        // Opening the upgraded file again copies nothing more.
        drop(store);
        SqliteStore::open(&path).unwrap();
        assert_eq!(self::copies(dir.path()).len(), 1);
    }

    #[test]
    fn no_backup_no_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = old_db(dir.path());
        // `backups` cannot be made: it is a file.
        std::fs::write(dir.path().join(BACKUP_DIR), "in the way").unwrap();

        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("nothing was changed") && err.contains(BACKUP_DIR),
            "{err}"
        );
        assert_eq!(
            SqliteStore::file_schema_version(&path).unwrap(),
            latest() - 1
        );
    }

    #[test]
    fn a_new_database_needs_no_backup_and_old_backups_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::open(&dir.path().join("relay.db")).unwrap();
        assert!(!dir.path().join(BACKUP_DIR).exists());

        let backups = dir.path().join(BACKUP_DIR);
        std::fs::create_dir(&backups).unwrap();
        for at in 1..=7 {
            std::fs::write(backups.join(format!("relay.db.v1-{at}.bak")), "old").unwrap();
        }
        std::fs::write(backups.join("keep-me.txt"), "not ours").unwrap();
        prune_backups(&backups, "relay.db");
        let mut left: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "keep-me.txt",
                "relay.db.v1-3.bak",
                "relay.db.v1-4.bak",
                "relay.db.v1-5.bak",
                "relay.db.v1-6.bak",
                "relay.db.v1-7.bak"
            ]
        );
    }
}
