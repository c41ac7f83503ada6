//! Hardened connections and the small pools that run queries on blocking threads.
//!
//! Every connection is opened with the same hardening (no extension loading, no ATTACH, defensive
//! mode, untrusted schema, bounded SQL and value sizes) and carries an [`Authorizer`] and a
//! [`Budget`]. Read connections are opened `SQLITE_OPEN_READ_ONLY` with `query_only` on and the
//! read-only policy; the single write connection (only with `allow_writes`) uses WAL so readers
//! never wait for it.
//!
//! A [`Pool`] hands one idle connection to one call at a time, on a `spawn_blocking` thread, so a
//! slow query occupies one connection and one thread while other calls proceed. The budget's
//! deadline is checked by SQLite's progress handler; dropping the call's future (the client
//! cancelled, the session closed) interrupts the statement.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::{Connection, ErrorCode, InterruptHandle, OpenFlags};
use tokio::sync::Semaphore;

use crate::authorizer::{Authorizer, Policy};
use crate::config::{BUSY_TIMEOUT, MAX_PARAMS, MAX_VALUE_BYTES, PROGRESS_CHECK_OPS, SqliteConfig};
use crate::error::QueryError;

/// Room for the `EXPLAIN QUERY PLAN ` prefix on top of `max_query_len`.
const SQL_PREFIX_ROOM: usize = 64;

/// One open, hardened connection with its authorizer and time budget.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) conn: Connection,
    pub(crate) auth: Authorizer,
    pub(crate) budget: Arc<Budget>,
}

impl Conn {
    /// Opens a read-only connection to an existing database.
    pub(crate) fn open_read(path: &Path, config: &SqliteConfig) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        harden(&conn, config)?;
        conn.pragma_update(None, "query_only", true)?;
        Self::finish(conn, Policy::ReadOnly)
    }

    /// Opens (creating if needed) the read-write connection, in WAL mode.
    pub(crate) fn open_write(path: &Path, config: &SqliteConfig) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        harden(&conn, config)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "database did not switch to WAL; readers may wait for writers");
        }
        Self::finish(conn, Policy::Write)
    }

    fn finish(mut conn: Connection, policy: Policy) -> rusqlite::Result<Self> {
        let auth = Authorizer::install(&mut conn, policy)?;
        let budget = Arc::new(Budget::default());
        let check = Arc::clone(&budget);
        conn.progress_handler(PROGRESS_CHECK_OPS, Some(move || check.exceeded()))?;
        Ok(Self { conn, auth, budget })
    }

    /// Turns a SQLite error from this connection into what the caller should read.
    pub(crate) fn explain(&self, error: rusqlite::Error, limit: Duration) -> QueryError {
        if let Some(denial) = self.auth.take_denial() {
            return QueryError::Denied {
                what: denial.what,
                why: denial.why.to_owned(),
            };
        }
        match &error {
            rusqlite::Error::MultipleStatement => QueryError::MultipleStatements,
            rusqlite::Error::Empty => QueryError::Empty,
            rusqlite::Error::InvalidParameterCount(given, expected) => {
                QueryError::InvalidArguments(format!(
                    "the statement has {expected} placeholder(s) but {given} param(s) were given"
                ))
            }
            e if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) => {
                if self.budget.expired() {
                    QueryError::Timeout { limit }
                } else {
                    QueryError::Cancelled
                }
            }
            e => QueryError::Sqlite(sqlite_message(e)),
        }
    }
}

/// SQLite's own words, without rusqlite's wrapping.
fn sqlite_message(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(code, Some(message)) => {
            format!("{message} ({:?})", code.code)
        }
        rusqlite::Error::SqlInputError { msg, offset, .. } => {
            format!("{msg} (near byte {offset})")
        }
        other => other.to_string(),
    }
}

/// Settings every connection gets before it runs any user SQL.
fn harden(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        clamp_i32(config.max_query_len + SQL_PREFIX_ROOM),
    )?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, clamp_i32(MAX_VALUE_BYTES))?;
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, clamp_i32(MAX_PARAMS))?;
    // Defensive mode: no writable_schema, no raw page writes, no shadow-table writes.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_WRITABLE_SCHEMA, false)?;
    // Functions named in the schema (views, triggers, defaults) may not have side effects.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false)?;
    Ok(())
}

fn clamp_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The deadline of the statement running on one connection.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    deadline: Mutex<Option<Instant>>,
    expired: AtomicBool,
}

impl Budget {
    fn arm(&self, limit: Duration) {
        self.expired.store(false, Ordering::Relaxed);
        *lock(&self.deadline) = Some(Instant::now() + limit);
    }

    fn disarm(&self) {
        *lock(&self.deadline) = None;
    }

    /// Called by SQLite's progress handler: true interrupts the statement.
    fn exceeded(&self) -> bool {
        let over = lock(&self.deadline).is_some_and(|deadline| Instant::now() >= deadline);
        if over {
            self.expired.store(true, Ordering::Relaxed);
        }
        over
    }

    /// Whether the deadline passed during the current call.
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed) || self.exceeded()
    }
}

/// A fixed set of connections, each used by one call at a time on a blocking thread.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Arc<Semaphore>,
    size: usize,
    limit: Duration,
}

impl Pool {
    /// A pool over already opened connections; `limit` is the per-call time limit.
    pub(crate) fn new(conns: Vec<Conn>, limit: Duration) -> Self {
        let size = conns.len();
        Self {
            idle: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(size)),
            size,
            limit,
        }
    }

    /// Runs `work` on an idle connection on a blocking thread, under the time limit.
    ///
    /// Waits at most the time limit for a connection. If the returned future is dropped before
    /// `work` finishes, the running statement is interrupted and the connection still returns
    /// to the pool when `work` unwinds.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, QueryError> + Send + 'static,
    {
        let started = Instant::now();
        let permit = tokio::time::timeout(self.limit, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| QueryError::Busy {
                connections: self.size,
                waited: started.elapsed(),
            })?
            .map_err(|_| QueryError::Internal("connection pool closed".to_owned()))?;
        // A permit guarantees an idle connection: permits and connections are equal in number
        // and a connection goes back before its permit is released.
        let mut conn = lock(&self.idle)
            .pop()
            .ok_or_else(|| QueryError::Internal("no idle connection for a permit".to_owned()))?;
        let interrupt = Arc::new(Mutex::new(Some(conn.conn.get_interrupt_handle())));
        let guard = InterruptOnDrop(Arc::clone(&interrupt));
        let idle = Arc::clone(&self.idle);
        let limit = self.limit;
        let task = tokio::task::spawn_blocking(move || {
            conn.budget.arm(limit);
            let result = work(&mut conn);
            conn.budget.disarm();
            // Taking the handle under its lock means a late cancel cannot interrupt the next
            // call that gets this connection.
            lock(&interrupt).take();
            if !conn.conn.is_autocommit() {
                // The authorizer refuses BEGIN, so this is only a guard against a surprise.
                let _ = conn.conn.execute_batch("ROLLBACK");
            }
            lock(&idle).push(conn);
            drop(permit);
            result
        });
        let result = task
            .await
            .map_err(|e| QueryError::Internal(format!("query thread failed: {e}")));
        guard.disarm();
        result?
    }
}

/// Interrupts the statement of a call whose future was dropped.
struct InterruptOnDrop(Arc<Mutex<Option<InterruptHandle>>>);

impl InterruptOnDrop {
    fn disarm(self) {
        lock(&self.0).take();
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.0).take() {
            handle.interrupt();
        }
    }
}

/// Only plain data sits behind these locks, so a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t(a); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        (dir, path)
    }

    #[test]
    fn read_connection_cannot_write_even_without_authorizer_help() {
        let (_dir, path) = temp_db();
        let config = SqliteConfig::new(&path);
        let conn = Conn::open_read(&path, &config).unwrap();
        conn.auth.begin(Policy::Write);
        let err = conn.conn.execute("DELETE FROM t", []).unwrap_err();
        assert!(err.to_string().contains("readonly") || err.to_string().contains("query_only"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runaway_query_times_out_and_connection_is_reused() {
        let (_dir, path) = temp_db();
        let config = SqliteConfig::new(&path);
        let conn = Conn::open_read(&path, &config).unwrap();
        let pool = Pool::new(vec![conn], Duration::from_millis(200));
        let started = Instant::now();
        let err = pool
            .run(|c| {
                c.auth.begin(Policy::ReadOnly);
                c.conn
                    .query_row(
                        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) \
                         SELECT count(*) FROM r",
                        [],
                        |row| row.get::<_, i64>(0),
                    )
                    .map_err(|e| c.explain(e, Duration::from_millis(200)))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let n = pool
            .run(|c| {
                c.conn
                    .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))
                    .map_err(|e| c.explain(e, Duration::from_millis(200)))
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_call_interrupts_its_statement() {
        let (_dir, path) = temp_db();
        let config = SqliteConfig::new(&path);
        let conn = Conn::open_read(&path, &config).unwrap();
        let limit = Duration::from_secs(20);
        let pool = Pool::new(vec![conn], limit);
        let runaway = pool.run(move |c| {
            c.conn
                .query_row(
                    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) \
                     SELECT count(*) FROM r",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .map_err(|e| c.explain(e, limit))
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(100), runaway)
                .await
                .is_err()
        );
        // The only connection comes back long before the 20 s limit.
        let started = Instant::now();
        let n = pool
            .run(move |c| {
                c.conn
                    .query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0))
                    .map_err(|e| c.explain(e, limit))
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
