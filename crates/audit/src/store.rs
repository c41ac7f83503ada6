//! The SQLite side: schema, connections, the chain head, inserting a batch.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::chain::{GENESIS, MAC_LEN};
use crate::error::AuditError;
use crate::limits::BUSY_TIMEOUT;

const SCHEMA_VERSION: i64 = 1;

/// `seq` is indexed but deliberately not UNIQUE: a row smuggled in with an
/// existing seq must stay visible so `verify` can report it. The writer keeps
/// seqs unique itself and detects a second writer by re-reading the head in
/// every write transaction. `ts_ms`, `tunnel` and `principal` duplicate the
/// JSON for queries; `verify` checks they still agree with it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id        INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    prev      BLOB    NOT NULL,
    mac       BLOB    NOT NULL,
    ts_ms     INTEGER NOT NULL,
    tunnel    TEXT    NOT NULL,
    principal TEXT,
    record    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_seq ON records (seq);
CREATE INDEX IF NOT EXISTS records_by_tunnel ON records (tunnel, seq);
";

/// The last record of the chain (seq 0 and the genesis MAC when empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) mac: [u8; MAC_LEN],
}

impl Head {
    pub(crate) const EMPTY: Head = Head {
        seq: 0,
        mac: GENESIS,
    };
}

/// The last row, for the writer's sanity check on open.
#[derive(Debug)]
pub(crate) struct LastRow {
    pub(crate) head: Head,
    pub(crate) prev: Vec<u8>,
    pub(crate) record: String,
}

/// Opens (creating if needed) the database for the one writer.
///
/// `synchronous=FULL`: every commit fsyncs the WAL. A checkpoint line must
/// never name a record a power cut could still take away (that would read as
/// truncation), and an answered request's record should survive the host
/// crashing, not only the process. Batching (group commit) keeps this to one
/// fsync per batch rather than per record.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io("creating directory", dir, e))?;
    }
    let existed = path.exists();
    let conn = Connection::open(path).map_err(|e| AuditError::db("opening", path, e))?;
    if !existed {
        restrict_mode(path)?;
    }
    let db = |action, e| AuditError::db(action, path, e);
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db("setting busy_timeout", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| db("enabling WAL", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(db = %path.display(), mode, "audit database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| db("setting synchronous=FULL", e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| db("reading the schema version", e))?;
    match version {
        0 => {
            conn.execute_batch(SCHEMA)
                .map_err(|e| db("creating the schema", e))?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| db("setting the schema version", e))?;
        }
        SCHEMA_VERSION => {}
        version => {
            return Err(AuditError::UnknownSchema {
                path: path.to_path_buf(),
                version,
            });
        }
    }
    Ok(conn)
}

/// Opens an existing database for reading only (another process may be
/// writing it meanwhile; WAL lets both proceed).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, AuditError> {
    if !path.exists() {
        return Err(AuditError::NoLog {
            path: path.to_path_buf(),
        });
    }
    // Read-write without CREATE (WAL readers may need to create the -shm
    // file), then `query_only` so this connection can never change a row.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| AuditError::db("opening", path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(|e| AuditError::db("configuring a reader", path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| AuditError::db("reading the schema version", path, e))?;
    if version != SCHEMA_VERSION {
        return Err(AuditError::UnknownSchema {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(conn)
}

/// The row with the highest seq, if any.
pub(crate) fn last_row(conn: &Connection, path: &Path) -> Result<Option<LastRow>, AuditError> {
    conn.query_row(
        "SELECT seq, mac, prev, record FROM records ORDER BY seq DESC, id DESC LIMIT 1",
        [],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, String>(3)?,
            ))
        },
    )
    .optional()
    .map_err(|e| AuditError::db("reading the chain head", path, e))?
    .map(|(seq, mac, prev, record)| {
        Ok(LastRow {
            head: head_from(seq, &mac)?,
            prev,
            record,
        })
    })
    .transpose()
}

/// The head as stored (inside the writer's transaction).
pub(crate) fn head(tx: &Transaction<'_>, path: &Path) -> Result<Head, AuditError> {
    let row = tx
        .query_row(
            "SELECT seq, mac FROM records ORDER BY seq DESC, id DESC LIMIT 1",
            [],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
        )
        .optional()
        .map_err(|e| AuditError::db("reading the chain head", path, e))?;
    match row {
        Some((seq, mac)) => head_from(seq, &mac),
        None => Ok(Head::EMPTY),
    }
}

/// One row to insert.
pub(crate) struct NewRow<'a> {
    pub(crate) seq: u64,
    pub(crate) prev: &'a [u8; MAC_LEN],
    pub(crate) mac: &'a [u8; MAC_LEN],
    pub(crate) ts_ms: i64,
    pub(crate) tunnel: &'a str,
    pub(crate) principal: Option<&'a str>,
    pub(crate) record: &'a str,
}

pub(crate) fn insert(
    tx: &Transaction<'_>,
    path: &Path,
    row: &NewRow<'_>,
) -> Result<(), AuditError> {
    let seq = i64::try_from(row.seq).map_err(|_| AuditError::Corrupt {
        seq: i64::MAX,
        why: "sequence number overflow".into(),
    })?;
    tx.prepare_cached(
        "INSERT INTO records (seq, prev, mac, ts_ms, tunnel, principal, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            seq,
            &row.prev[..],
            &row.mac[..],
            row.ts_ms,
            row.tunnel,
            row.principal,
            row.record
        ])
    })
    .map(|_| ())
    .map_err(|e| AuditError::db("inserting a record", path, e))
}

fn head_from(seq: i64, mac: &[u8]) -> Result<Head, AuditError> {
    let corrupt = |why: &str| AuditError::Corrupt {
        seq,
        why: why.into(),
    };
    Ok(Head {
        seq: u64::try_from(seq).map_err(|_| corrupt("negative sequence number"))?,
        mac: mac.try_into().map_err(|_| corrupt("MAC is not 32 bytes"))?,
    })
}

#[cfg(unix)]
fn restrict_mode(path: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::PermissionsExt;
    // Records name people and what they did; SQLite gives -wal/-shm the same mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| AuditError::io("restricting permissions of", path, e))
}

#[cfg(not(unix))]
fn restrict_mode(_: &Path) -> Result<(), AuditError> {
    Ok(())
}
