//! The errors of opening, querying and serving, each worded for the person who will read it.

use std::path::PathBuf;
use std::time::Duration;

/// Why [`SqliteServer::open`](crate::SqliteServer::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A configuration value is out of range.
    #[error("invalid SQLite tool configuration: {0}")]
    InvalidConfig(String),
    /// Read-only mode was asked for a file that does not exist (it would have to be created).
    #[error(
        "database file {} does not exist; read-only mode never creates a database \
         (check the path, or pass --allow-writes to create an empty one)",
        path.display()
    )]
    Missing {
        /// The configured path.
        path: PathBuf,
    },
    /// SQLite could not open or configure the file, or it is not a SQLite database.
    #[error("cannot open {} as a SQLite database: {source}", path.display())]
    Sqlite {
        /// The configured path.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
}

/// Why one tool call or resource read failed. The `Display` text is what the caller sees in a
/// tool result with `isError: true`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The SQL is longer than `max_query_len`.
    #[error("query is {len} bytes, over the limit of {max} bytes; send a shorter statement")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The SQL has no statement in it (empty, or only comments).
    #[error("query is empty: send one SQL statement")]
    Empty,
    /// More than one statement was sent.
    #[error(
        "only one SQL statement per call is allowed, and the query has more after the first \
         `;`; send the statements one call at a time"
    )]
    MultipleStatements,
    /// The SQLite authorizer refused an action of the statement.
    #[error("{what} is not allowed: {why}")]
    Denied {
        /// The refused action, e.g. `DELETE on table orders`.
        what: String,
        /// Why, and what the caller can do instead.
        why: String,
    },
    /// `read_query`/`explain_query` got a statement that would change the database.
    #[error(
        "read_query only runs statements that do not change the database; \
         use write_query for INSERT, UPDATE, DELETE and DDL"
    )]
    NotReadOnly,
    /// `create_table` got something other than one CREATE TABLE statement.
    #[error("create_table only accepts a single CREATE TABLE statement; {0}")]
    NotCreateTable(String),
    /// The query ran past the configured time limit and was interrupted.
    #[error(
        "query interrupted after the {}ms time limit; add a LIMIT, narrow the WHERE clause, \
         or check for runaway recursion",
        limit.as_millis()
    )]
    Timeout {
        /// The configured limit.
        limit: Duration,
    },
    /// Every connection stayed busy for the whole time limit.
    #[error(
        "all {connections} database connections stayed busy for {}ms; retry shortly",
        waited.as_millis()
    )]
    Busy {
        /// Size of the pool.
        connections: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// The client cancelled the request.
    #[error("query cancelled by the client")]
    Cancelled,
    /// The tool arguments or bind parameters do not fit.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The named table or view does not exist.
    #[error("no such table or view: {0}; call list_tables to see what exists")]
    NoSuchTable(String),
    /// The tool is not served in this mode.
    #[error(
        "{0} is disabled because this database is served read-only; \
         the owner can restart the server with --allow-writes"
    )]
    WritesDisabled(String),
    /// SQLite reported an error (syntax, constraint, missing column, ...).
    #[error("SQLite error: {0}")]
    Sqlite(String),
    /// A bug or an unexpected runtime failure (a worker thread died).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why [`serve_stdio`](crate::serve_stdio) or [`serve_http`](crate::serve_http) stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The MCP client never completed the `initialize` handshake.
    #[error("MCP session did not start: {0}")]
    Initialize(String),
    /// The task running the session failed.
    #[error("MCP session task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Accepting or serving HTTP connections failed.
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}
