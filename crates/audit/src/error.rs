//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong while opening, writing, reading or verifying an audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file or directory could not be read, created or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing ("reading the HMAC key", …).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A key file that other users can read or write is refused: the key may
    /// have leaked, and without it secret the log proves nothing.
    #[error(
        "{what} {} is {how} by other users (mode {mode:03o}); run `chmod 600 {}` \
         (and consider the key compromised if others could read it)",
        path.display(), path.display()
    )]
    KeyExposed {
        /// Which key ("audit HMAC key", "audit signing key").
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// "readable", "writable" or "accessible".
        how: &'static str,
        /// The file's permission bits.
        mode: u32,
    },
    /// A key file whose content is not a key of the expected kind.
    #[error(
        "{what} {} is not valid ({why}); restore the original file \
         (records written under another key cannot be verified)",
        path.display()
    )]
    BadKey {
        /// Which key.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why it was rejected.
        why: &'static str,
    },
    /// The audit database does not exist (readers never create it).
    #[error("no audit log at {}: nothing has been recorded yet, or the path is wrong", path.display())]
    NoLog {
        /// The database path that was tried.
        path: PathBuf,
    },
    /// SQLite reported an error.
    #[error("audit database {}: {action}: {source}", path.display())]
    Db {
        /// What we were doing.
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this crate.
    #[error("audit database {} has schema version {version}, this build knows 1; use a newer mcp-relay / mcp-agent", path.display())]
    UnknownSchema {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        version: i64,
    },
    /// A stored row could not be decoded into a record.
    #[error("audit record seq {seq} is unreadable ({why}); run `verify` to see what was changed")]
    Corrupt {
        /// The row's sequence number.
        seq: i64,
        /// What was wrong with it.
        why: String,
    },
    /// Records reached the database that this writer did not write: two
    /// processes are writing the same log, or someone changed it meanwhile.
    #[error(
        "audit database {} changed under its writer (expected head seq {expected}, found {found}); \
         only one process may write an audit log: stop the other one, then run `verify`",
        path.display()
    )]
    ForeignWriter {
        /// The database file.
        path: PathBuf,
        /// The head this writer last committed.
        expected: u64,
        /// The head found in the database.
        found: u64,
    },
    /// A batch could not be committed (the message is the underlying error);
    /// the writer keeps the records and retries.
    #[error("audit records not committed yet: {0}")]
    NotCommitted(String),
    /// The writer thread has stopped (after `close`, or it panicked).
    #[error("the audit writer has stopped; records are no longer written")]
    WriterStopped,
    /// The crypto provider refused an operation (key generation, signing).
    #[error("audit crypto: {0}")]
    Crypto(&'static str),
    /// A caller restricted to some tunnels asked for another one.
    #[error("tunnel {tunnel:?} is not one of yours; audit records are shown only for your tunnels")]
    TunnelNotAllowed {
        /// The tunnel asked for.
        tunnel: String,
    },
    /// Writing command output (stdout or `--out FILE`) failed.
    #[error("writing audit output: {0}")]
    Output(#[source] std::io::Error),
}

impl AuditError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        AuditError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn db(
        action: &'static str,
        path: &std::path::Path,
        source: rusqlite::Error,
    ) -> Self {
        AuditError::Db {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
