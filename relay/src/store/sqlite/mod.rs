//! [`SqliteStore`]: the embedded store, one SQLite file in the state dir.

mod clients;
mod devices;
mod grants;
mod keys;
mod migrations;
mod tokens;
mod users;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::types::FromSql;
use rusqlite::{Connection, OpenFlags, Params, Row, TransactionBehavior};

use super::{
    BUSY_TIMEOUT, Client, Clock, CodeError, CodeRecord, Email, FamilyId, NewClient, NewCode,
    NewRefresh, NewSigningKey, NewUser, PasswordHash, PublicSigningKey, PurgeReport, RefreshError,
    RefreshRecord, RevokedJti, Secret, SigningKey, Store, StoreError, SystemClock, TokenHash,
    UnixTime, User, UserId,
};

/// The embedded store: one SQLite database file in WAL mode.
///
/// One connection per process, behind a mutex: the relay's write rate (a few
/// rows per sign-in or token refresh) is far below what one connection
/// serves, and a single connection keeps "now" and the revision bump inside
/// the same transaction as the change.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating, mode 0600) the database at `path` and brings its
    /// schema up to date. The parent directory must exist (the state dir
    /// creates it, mode 0700).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`SqliteStore::open`], reading the time from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        create_private_file(path)?;
        // NO_MUTEX: the connection lives behind our own mutex. No CREATE: the
        // file exists by now, and must not be recreated with the umask's mode.
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("opening the database"))?;
        configure(&conn)?;
        migrations::migrate(&mut conn, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            clock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest schema version this build knows.
    pub fn schema_version() -> i64 {
        migrations::latest()
    }

    /// The schema version of the database file at `path` (0 for an empty
    /// one), read without changing the file: for checking a copy (a backup
    /// being made or restored) before anything opens it as the store.
    pub fn file_schema_version(path: &Path) -> Result<i64, StoreError> {
        let doing = "reading the schema version";
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(doing))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(doing))?;
        migrations::current_version(&conn).map_err(sql(doing))
    }

    /// The newest schema version this build knows.
    pub fn latest_schema_version() -> i64 {
        migrations::latest()
    }

    /// A database at schema `version` (older than the latest) with users
    /// alice and bob, as an older relay left it, for upgrade and restore
    /// tests (the end-to-end tests too, hence public).
    #[doc(hidden)]
    pub fn create_at_version(path: &Path, version: i64) {
        let mut conn = Connection::open(path).expect("a new database");
        configure(&conn).expect("configured");
        migrations::migrate_to(&mut conn, version);
        for email in ["alice@example.com", "bob@example.com"] {
            conn.execute(
                "INSERT INTO users (email, display_name, groups_json, created_at)
                 VALUES (?1, '', '[]', 1700000000)",
                [email],
            )
            .expect("a user row");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its open transaction, which
        // rolled back, so the connection is consistent: keep using it.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection with the current time.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection, UnixTime) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        f(&conn, self.clock.now())
    }

    /// Runs `f` in an `IMMEDIATE` transaction and commits if it returns `Ok`,
    /// bumping the revision if it changed anything. `IMMEDIATE` takes the write
    /// lock up front, so a concurrent writer in another process waits on the
    /// busy timeout instead of failing on a read-to-write upgrade.
    fn write<T>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&Connection, UnixTime) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(doing))?;
        let before = tx.total_changes();
        let out = f(&tx, self.clock.now())?;
        if tx.total_changes() != before {
            tx.execute("UPDATE revision SET value = value + 1 WHERE id = 1", [])
                .map_err(sql(doing))?;
        }
        tx.commit().map_err(sql(doing))?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn revision(&self) -> Result<i64, StoreError> {
        self.read(|conn, _| {
            query_opt(
                conn,
                "reading the revision",
                "SELECT value FROM revision WHERE id = 1",
                [],
                |r| col(r, "value", "revision"),
            )?
            .ok_or_else(|| StoreError::Corrupt {
                table: "revision",
                detail: "the counter row is missing".to_owned(),
            })
        })
    }

    fn add_user(&self, user: &NewUser) -> Result<(User, Secret), StoreError> {
        self.write("adding a user", |tx, now| users::add(tx, now, user))
    }

    fn sync_external_user(&self, user: &NewUser) -> Result<User, StoreError> {
        self.write("recording a signed-in user", |tx, now| {
            users::sync_external(tx, now, user)
        })
    }

    fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read(|conn, _| users::get(conn, id))
    }

    fn get_user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.read(|conn, _| users::get_by_email(conn, email))
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.read(|conn, _| users::list(conn))
    }

    fn set_password_hash(&self, id: UserId, hash: &PasswordHash) -> Result<(), StoreError> {
        self.write("setting a password", |tx, _| {
            users::set_password(tx, id, hash)
        })
    }

    fn disable_user(&self, id: UserId) -> Result<(), StoreError> {
        self.write("disabling a user", |tx, now| {
            users::set_disabled(tx, id, true)?;
            tokens::revoke_user(tx, now, id).map(drop)
        })
    }

    fn enable_user(&self, id: UserId) -> Result<(), StoreError> {
        self.write("enabling a user", |tx, _| {
            users::set_disabled(tx, id, false)
        })
    }

    fn issue_setup_token(&self, id: UserId) -> Result<Secret, StoreError> {
        self.write("issuing a password-setup token", |tx, now| {
            users::issue_setup(tx, now, id)
        })
    }

    fn setup_token_user(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError> {
        self.read(|conn, now| users::setup_token_user(conn, now, token))
    }

    fn consume_setup_token(&self, token: &TokenHash) -> Result<Option<UserId>, StoreError> {
        self.write("using a password-setup token", |tx, now| {
            users::consume_setup(tx, now, token)
        })
    }

    fn insert_client(&self, client: &NewClient) -> Result<Client, StoreError> {
        self.write("registering a client", |tx, now| {
            clients::insert(tx, now, client)
        })
    }

    fn update_client_registration(
        &self,
        client_id: &str,
        name: &str,
        redirect_uris: &[String],
        metadata: &serde_json::Value,
    ) -> Result<Client, StoreError> {
        self.write("updating a client", |tx, _| {
            clients::update_registration(tx, client_id, name, redirect_uris, metadata)
        })
    }

    fn get_client(&self, client_id: &str) -> Result<Option<Client>, StoreError> {
        self.read(|conn, _| clients::get(conn, client_id))
    }

    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.read(|conn, _| clients::list(conn))
    }

    fn revoke_client(&self, client_id: &str) -> Result<(), StoreError> {
        self.write("revoking a client", |tx, now| {
            clients::revoke(tx, now, client_id)?;
            tokens::revoke_client(tx, now, client_id).map(drop)
        })
    }

    fn touch_client_last_used(&self, client_id: &str) -> Result<(), StoreError> {
        self.write("recording client use", |tx, now| {
            clients::touch(tx, now, client_id)
        })
    }

    fn count_registrations_since(
        &self,
        source: IpAddr,
        since: UnixTime,
    ) -> Result<u64, StoreError> {
        self.read(|conn, _| clients::count_registrations_since(conn, source, since))
    }

    fn verify_client_secret(&self, client_id: &str, secret: &str) -> Result<bool, StoreError> {
        self.read(|conn, now| clients::verify_secret(conn, now, client_id, secret))
    }

    fn insert_code(&self, code: &NewCode) -> Result<FamilyId, StoreError> {
        self.write("storing an authorization code", |tx, now| {
            tokens::insert_code(tx, now, code)
        })
    }

    fn take_code(&self, code: &TokenHash) -> Result<CodeRecord, CodeError> {
        self.write("exchanging an authorization code", |tx, now| {
            tokens::take_code(tx, now, code)
        })?
    }

    fn insert_refresh(&self, token: &NewRefresh) -> Result<(), StoreError> {
        self.write("storing a refresh token", |tx, now| {
            tokens::insert_refresh(tx, now, token)
        })
    }

    fn rotate_refresh(
        &self,
        old: &TokenHash,
        client_id: &str,
        new: &TokenHash,
        new_expires_at: UnixTime,
    ) -> Result<RefreshRecord, RefreshError> {
        self.write("rotating a refresh token", |tx, now| {
            tokens::rotate_refresh(tx, now, old, client_id, new, new_expires_at)
        })?
    }

    fn revoke_refresh_token(&self, token: &TokenHash, client_id: &str) -> Result<bool, StoreError> {
        self.write("revoking a refresh token", |tx, now| {
            tokens::revoke_refresh_token(tx, now, token, client_id)
        })
    }

    fn revoke_family(&self, family: &FamilyId) -> Result<u64, StoreError> {
        self.write("revoking a token family", |tx, now| {
            tokens::revoke_family(tx, now, family)
        })
    }

    fn list_refresh_families(&self) -> Result<Vec<super::RefreshFamily>, StoreError> {
        self.read(|conn, _| tokens::list_families(conn))
    }

    fn revoke_user_tokens(&self, id: UserId) -> Result<u64, StoreError> {
        self.write("revoking a user's tokens", |tx, now| {
            tokens::revoke_user(tx, now, id)
        })
    }

    fn revoke_client_tokens(&self, client_id: &str) -> Result<u64, StoreError> {
        self.write("revoking a client's tokens", |tx, now| {
            clients::get(tx, client_id)?.ok_or_else(|| StoreError::NotFound {
                what: "client",
                key: client_id.to_owned(),
            })?;
            tokens::revoke_client(tx, now, client_id)
        })
    }

    fn revoke_jti(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        self.write("revoking an access token", |tx, _| {
            tokens::revoke_jti(tx, jti, expires_at)
        })
    }

    fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        self.read(|conn, _| tokens::is_jti_revoked(conn, jti))
    }

    fn revoked_jtis(&self, now: UnixTime) -> Result<Vec<RevokedJti>, StoreError> {
        self.read(|conn, _| tokens::revoked_jtis(conn, now))
    }

    fn insert_key(&self, key: &NewSigningKey) -> Result<(), StoreError> {
        self.write("storing a signing key", |tx, now| {
            keys::insert(tx, now, key)
        })
    }

    fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        self.read(keys::active)
    }

    fn retire_key(&self, kid: &str, at: UnixTime) -> Result<(), StoreError> {
        self.write("retiring a signing key", |tx, _| keys::retire(tx, kid, at))
    }

    fn rotate_key(&self, new: &NewSigningKey, retire_old_at: UnixTime) -> Result<(), StoreError> {
        self.write("rotating signing keys", |tx, now| {
            keys::retire_all(tx, retire_old_at)?;
            keys::insert(tx, now, new)
        })
    }

    fn keys_for_jwks(&self, now: UnixTime) -> Result<Vec<PublicSigningKey>, StoreError> {
        self.read(|conn, _| keys::for_jwks(conn, now))
    }

    fn issue_enroll_token(&self, user: UserId, ttl_secs: i64) -> Result<Secret, StoreError> {
        self.write("issuing an enrollment token", |tx, now| {
            devices::issue_enroll(tx, now, user, ttl_secs)
        })
    }

    fn take_enroll_token(
        &self,
        token: &TokenHash,
    ) -> Result<Result<UserId, super::EnrollError>, StoreError> {
        self.write("using an enrollment token", |tx, now| {
            devices::take_enroll(tx, now, token)
        })
    }

    fn list_enroll_tokens(&self) -> Result<Vec<super::EnrollToken>, StoreError> {
        self.read(|conn, _| devices::list_enroll(conn))
    }

    fn revoke_enroll_token(&self, id_prefix: &str) -> Result<bool, StoreError> {
        self.write("revoking an enrollment token", |tx, now| {
            devices::revoke_enroll(tx, now, id_prefix)
        })
    }

    fn insert_device(&self, device: &super::NewDevice) -> Result<super::Device, StoreError> {
        self.write("recording a device", |tx, now| {
            devices::insert(tx, now, device)
        })
    }

    fn get_device(&self, id: &str) -> Result<Option<super::Device>, StoreError> {
        self.read(|conn, _| devices::get(conn, id))
    }

    fn list_devices(&self) -> Result<Vec<super::Device>, StoreError> {
        self.read(|conn, _| devices::list(conn))
    }

    fn revoke_device(&self, id: &str) -> Result<(), StoreError> {
        self.write("revoking a device", |tx, now| devices::revoke(tx, now, id))
    }

    fn renew_device(&self, id: &str, cert_expires_at: UnixTime) -> Result<(), StoreError> {
        self.write("renewing a device certificate", |tx, _| {
            devices::renew(tx, id, cert_expires_at)
        })
    }

    fn touch_device(&self, id: &str) -> Result<(), StoreError> {
        // Not through `write`: a connection is not an admin change, so the
        // revision (which wakes every relay's revocation watcher) stays put.
        let conn = self.lock();
        devices::touch(&conn, self.clock.now(), id)
    }

    fn insert_grant(&self, grant: &super::NewGrant) -> Result<super::Grant, StoreError> {
        self.write("saving a grant", |tx, now| grants::insert(tx, now, grant))
    }

    fn get_grant(&self, id: &str) -> Result<Option<super::Grant>, StoreError> {
        self.read(|conn, _| grants::get(conn, id))
    }

    fn list_grants(&self, tunnel: Option<&str>) -> Result<Vec<super::Grant>, StoreError> {
        self.read(|conn, _| grants::list(conn, tunnel))
    }

    fn revoke_grant(&self, id_prefix: &str) -> Result<Option<super::Grant>, StoreError> {
        self.write("revoking a grant", |tx, now| {
            grants::revoke(tx, now, id_prefix)
        })
    }

    fn set_tunnel_policy(
        &self,
        tunnel: &str,
        policy: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        self.write("saving a tunnel policy", |tx, now| {
            grants::set_policy(tx, now, tunnel, policy)
        })
    }

    fn tunnel_policies(
        &self,
        tunnel: Option<&str>,
    ) -> Result<Vec<super::TunnelPolicy>, StoreError> {
        self.read(|conn, _| grants::policies(conn, tunnel))
    }

    fn set_tool_catalog(&self, tunnel: &str, tools: &serde_json::Value) -> Result<(), StoreError> {
        self.write("saving a tool catalog", |tx, now| {
            grants::set_tools(tx, now, tunnel, tools)
        })
    }

    fn tool_catalogs(
        &self,
        tunnel: Option<&str>,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.read(|conn, _| grants::tools(conn, tunnel))
    }

    fn tunnel_claims(&self) -> Result<Vec<(String, String, UnixTime)>, StoreError> {
        self.read(|conn, _| {
            query_all(
                conn,
                "reading tunnel claims",
                "SELECT tunnel, owner, claimed_at FROM tunnel_claims ORDER BY tunnel",
                [],
                |r| {
                    Ok((
                        col(r, "tunnel", "tunnel_claims")?,
                        col(r, "owner", "tunnel_claims")?,
                        col(r, "claimed_at", "tunnel_claims")?,
                    ))
                },
            )
        })
    }

    fn tunnel_claim(&self, tunnel: &str) -> Result<Option<(String, UnixTime)>, StoreError> {
        self.read(|conn, _| {
            Ok(query_all(
                conn,
                "reading a tunnel claim",
                "SELECT owner, claimed_at FROM tunnel_claims WHERE tunnel = ?1",
                [tunnel],
                |r| {
                    Ok((
                        col(r, "owner", "tunnel_claims")?,
                        col(r, "claimed_at", "tunnel_claims")?,
                    ))
                },
            )?
            .into_iter()
            .next())
        })
    }

    fn set_tunnel_claim(
        &self,
        tunnel: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.write("saving a tunnel claim", |tx, _| {
            exec(
                tx,
                "saving a tunnel claim",
                "INSERT INTO tunnel_claims (tunnel, owner, claimed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tunnel) DO UPDATE SET owner = ?2, claimed_at = ?3",
                rusqlite::params![tunnel, owner, claimed_at],
            )?;
            Ok(())
        })
    }

    fn add_tunnel_claim(
        &self,
        tunnel: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<bool, StoreError> {
        // Not through `write`: a connection claiming a free name is not an
        // admin change, so the revision (which wakes every relay's watchers)
        // stays put; the relay keeps its own copy up to date.
        let conn = self.lock();
        let n = exec(
            &conn,
            "saving a tunnel claim",
            ADD_CLAIM,
            rusqlite::params![tunnel, owner, claimed_at],
        )?;
        Ok(n == 1)
    }

    fn replace_tunnel_claim(
        &self,
        tunnel: &str,
        old_owner: &str,
        owner: &str,
        claimed_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = exec(
            &conn,
            "saving a tunnel claim",
            "UPDATE tunnel_claims SET owner = ?3, claimed_at = ?4 WHERE tunnel = ?1 AND owner = ?2",
            rusqlite::params![tunnel, old_owner, owner, claimed_at],
        )?;
        Ok(n == 1)
    }

    fn add_tunnel_claims(
        &self,
        claims: &[(String, String, UnixTime)],
    ) -> Result<usize, StoreError> {
        self.write("adding tunnel claims", |tx, _| {
            let mut added = 0;
            for (tunnel, owner, at) in claims {
                added += exec(
                    tx,
                    "adding tunnel claims",
                    ADD_CLAIM,
                    rusqlite::params![tunnel, owner, at],
                )? as usize;
            }
            Ok(added)
        })
    }

    fn remove_tunnel_claim(&self, tunnel: &str) -> Result<bool, StoreError> {
        self.write("releasing a tunnel claim", |tx, _| {
            let n = exec(
                tx,
                "releasing a tunnel claim",
                "DELETE FROM tunnel_claims WHERE tunnel = ?1",
                [tunnel],
            )?;
            Ok(n == 1)
        })
    }

    fn purge_expired(&self, now: UnixTime) -> Result<PurgeReport, StoreError> {
        self.write("purging expired records", |tx, _| {
            let (codes, refresh_tokens, revoked_jtis) = tokens::purge(tx, now)?;
            Ok(PurgeReport {
                codes,
                refresh_tokens,
                setup_tokens: users::purge_setup_tokens(tx, now)?,
                revoked_jtis,
                signing_keys: keys::purge(tx, now)?,
            })
        })
    }
}

/// Claims a tunnel name unless someone already has it.
const ADD_CLAIM: &str = "INSERT INTO tunnel_claims (tunnel, owner, claimed_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (tunnel) DO NOTHING";

/// Creates the file with mode 0600 if missing; tightens an existing file that
/// others can read. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path).map_err(open_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(open_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(open_err)?;
        }
    }
    drop(file);
    Ok(())
}

/// Per-connection settings. `busy_timeout` comes first so the switch to WAL
/// waits for another process instead of failing.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    let doing = "configuring the database";
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(doing))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(sql(doing))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite {
            doing,
            source: rusqlite::Error::InvalidQuery,
        });
    }
    // FULL: a revocation the admin saw succeed must survive a power cut.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql(doing))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql(doing))?;
    // Purged private keys and hashes are overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", true)
        .map_err(sql(doing))?;
    Ok(())
}

/// Maps an SQLite error to [`StoreError::Sqlite`].
fn sql(doing: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { doing, source }
}

/// Whether `e` is a violation of a UNIQUE or PRIMARY KEY constraint.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error().map(|s| s.extended_code),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
    )
}

/// Whether `e` is a violation of a FOREIGN KEY constraint.
fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error().map(|s| s.extended_code),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
    )
}

/// Reads column `name`; a value of the wrong type is a corrupt row of `table`.
fn col<T: FromSql>(row: &Row<'_>, name: &str, table: &'static str) -> Result<T, StoreError> {
    row.get(name).map_err(|e| StoreError::Corrupt {
        table,
        detail: format!("column {name}: {e}"),
    })
}

/// Reads a 32-byte hash column.
fn get_hash(row: &Row<'_>, name: &str, table: &'static str) -> Result<TokenHash, StoreError> {
    let bytes: Vec<u8> = col(row, name, table)?;
    TokenHash::from_slice(&bytes).ok_or_else(|| StoreError::Corrupt {
        table,
        detail: format!("column {name}: expected 32 bytes, found {}", bytes.len()),
    })
}

/// Reads a family id column.
fn get_family(row: &Row<'_>, table: &'static str) -> Result<FamilyId, StoreError> {
    let s: String = col(row, "family_id", table)?;
    FamilyId::parse(&s).ok_or_else(|| StoreError::Corrupt {
        table,
        detail: format!("column family_id: {s:?} is not a family id"),
    })
}

/// Parses a JSON column.
fn get_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    name: &str,
    table: &'static str,
) -> Result<T, StoreError> {
    let text: String = col(row, name, table)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        table,
        detail: format!("column {name}: {e}"),
    })
}

/// Runs a query and decodes every row.
fn query_all<T>(
    conn: &Connection,
    doing: &'static str,
    sql_text: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(doing))?;
    let mut rows = stmt.query(params).map_err(sql(doing))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(doing))? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a query expected to return at most one row and decodes it.
fn query_opt<T>(
    conn: &Connection,
    doing: &'static str,
    sql_text: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(doing))?;
    let mut rows = stmt.query(params).map_err(sql(doing))?;
    match rows.next().map_err(sql(doing))? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Runs a statement; returns how many rows it changed.
fn exec(
    conn: &Connection,
    doing: &'static str,
    sql_text: &str,
    params: impl Params,
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(doing))?;
    let n = stmt.execute(params).map_err(sql(doing))?;
    Ok(n as u64)
}
