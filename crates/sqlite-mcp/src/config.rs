//! What the server is configured with, and every limit it enforces.
//!
//! The per-deployment knobs live in [`SqliteConfig`]; the fixed limits that are not worth a knob
//! are the `pub const`s below. Together they are the complete list of bounds: nothing else in
//! the crate invents a number.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::OpenError;

/// Default for [`SqliteConfig::max_rows`]: rows returned by one query.
pub const DEFAULT_MAX_ROWS: usize = 500;
/// Default for [`SqliteConfig::max_bytes`]: serialized size of the rows returned by one query.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Default for [`SqliteConfig::query_timeout`]: wall time one tool call may spend in SQLite.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`SqliteConfig::max_query_len`]: bytes of SQL accepted in one call.
pub const DEFAULT_MAX_QUERY_LEN: usize = 100 * 1024;
/// Default for [`SqliteConfig::connections`]: read connections, i.e. concurrent read queries.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Upper bound for [`SqliteConfig::connections`].
pub const MAX_CONNECTIONS: usize = 64;
/// Upper bound for [`SqliteConfig::max_rows`].
pub const MAX_MAX_ROWS: usize = 100_000;
/// Upper bound for [`SqliteConfig::max_bytes`] (64 MiB).
pub const MAX_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound for [`SqliteConfig::max_query_len`] (1 MiB).
pub const MAX_MAX_QUERY_LEN: usize = 1024 * 1024;
/// Upper bound for [`SqliteConfig::query_timeout`].
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(600);

/// After a result is truncated, how many further rows are stepped over (not kept) to report
/// `total_rows`. Past this many the total is omitted.
pub const COUNT_AHEAD_ROWS: u64 = 100_000;
/// `list_tables` counts a table's rows only up to this bound when `sqlite_stat1` has no figure.
pub const ROW_COUNT_SCAN_LIMIT: u64 = 100_000;
/// Most bind parameters accepted in one call (`SQLITE_LIMIT_VARIABLE_NUMBER`).
pub const MAX_PARAMS: usize = 999;
/// Largest string or blob SQLite may build while running a query (`SQLITE_LIMIT_LENGTH`, 64 MiB).
/// Bounds the memory a hostile `randomblob(1e9)` or runaway `group_concat` can take.
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// Most tables and views listed by `list_tables` and `resources/list`.
pub const MAX_LISTED_TABLES: usize = 1_000;
/// SQLite virtual-machine instructions between two checks of the query deadline.
pub const PROGRESS_CHECK_OPS: i32 = 1_000;
/// Longest a `create_table`/`write_query` waits for SQLite's write lock held by another process.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How one SQLite database is served.
///
/// Built with [`SqliteConfig::new`] (every limit at its default) or deserialized from a config
/// file (unknown keys are rejected; `query_timeout` is a humantime string such as `"5s"` or
/// `"250ms"`). [`SqliteServer::open`](crate::SqliteServer::open) validates it once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file. In read-only mode it must already exist.
    pub path: PathBuf,
    /// Serve `write_query` and `create_table` and open the database read-write (WAL). Without it
    /// the file is opened read-only and the SQLite authorizer refuses every write. Default false.
    #[serde(default)]
    pub allow_writes: bool,
    /// Rows returned by one query before the result is marked truncated.
    /// Default [`DEFAULT_MAX_ROWS`], at most [`MAX_MAX_ROWS`].
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// JSON bytes of row data returned by one query before the result is marked truncated.
    /// Default [`DEFAULT_MAX_BYTES`], at most [`MAX_MAX_BYTES`].
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Wall time one tool call may run inside SQLite before it is interrupted.
    /// Default [`DEFAULT_QUERY_TIMEOUT`], at most [`MAX_QUERY_TIMEOUT`].
    #[serde(default = "default_query_timeout", with = "humantime_duration")]
    pub query_timeout: Duration,
    /// Bytes of SQL accepted in one call. Default [`DEFAULT_MAX_QUERY_LEN`], at most
    /// [`MAX_MAX_QUERY_LEN`].
    #[serde(default = "default_max_query_len")]
    pub max_query_len: usize,
    /// Read connections, i.e. read queries that run at the same time; further calls wait.
    /// Default [`DEFAULT_CONNECTIONS`], 1 to [`MAX_CONNECTIONS`].
    #[serde(default = "default_connections")]
    pub connections: usize,
}

impl SqliteConfig {
    /// A read-only configuration for `path` with every limit at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            allow_writes: false,
            max_rows: DEFAULT_MAX_ROWS,
            max_bytes: DEFAULT_MAX_BYTES,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_query_len: DEFAULT_MAX_QUERY_LEN,
            connections: DEFAULT_CONNECTIONS,
        }
    }

    /// The same configuration with writes allowed or not.
    pub fn with_allow_writes(mut self, allow_writes: bool) -> Self {
        self.allow_writes = allow_writes;
        self
    }

    /// Checks every limit against its bounds.
    ///
    /// # Errors
    /// [`OpenError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), OpenError> {
        check_range("max_rows", self.max_rows, 1, MAX_MAX_ROWS)?;
        check_range("max_bytes", self.max_bytes, 1024, MAX_MAX_BYTES)?;
        check_range("max_query_len", self.max_query_len, 16, MAX_MAX_QUERY_LEN)?;
        check_range("connections", self.connections, 1, MAX_CONNECTIONS)?;
        if self.query_timeout.is_zero() || self.query_timeout > MAX_QUERY_TIMEOUT {
            return Err(OpenError::InvalidConfig(format!(
                "query_timeout is {:?}; it must be above zero and at most {:?}",
                self.query_timeout, MAX_QUERY_TIMEOUT
            )));
        }
        Ok(())
    }
}

fn check_range(field: &str, value: usize, min: usize, max: usize) -> Result<(), OpenError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OpenError::InvalidConfig(format!(
            "{field} is {value}; it must be between {min} and {max}"
        )))
    }
}

fn default_max_rows() -> usize {
    DEFAULT_MAX_ROWS
}

fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}

fn default_query_timeout() -> Duration {
    DEFAULT_QUERY_TIMEOUT
}

fn default_max_query_len() -> usize {
    DEFAULT_MAX_QUERY_LEN
}

fn default_connections() -> usize {
    DEFAULT_CONNECTIONS
}

/// `query_timeout = "5s"` in config files.
mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write it like \"5s\" or \"250ms\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let config = SqliteConfig::new("/tmp/x.db");
        assert_eq!(config.max_rows, 500);
        assert_eq!(config.max_bytes, 1 << 20);
        assert_eq!(config.query_timeout, Duration::from_secs(5));
        assert_eq!(config.max_query_len, 100 * 1024);
        assert!(!config.allow_writes);
        config.validate().unwrap();
    }

    #[test]
    fn deserializes_with_defaults_and_humantime() {
        let config: SqliteConfig =
            serde_json::from_str(r#"{"path": "shop.db", "query_timeout": "250ms"}"#).unwrap();
        assert_eq!(config.query_timeout, Duration::from_millis(250));
        assert_eq!(config.max_rows, DEFAULT_MAX_ROWS);
        assert_eq!(config.path, PathBuf::from("shop.db"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_durations() {
        let err = serde_json::from_str::<SqliteConfig>(r#"{"path": "a", "max_row": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max_row`"), "{err}");
        let err = serde_json::from_str::<SqliteConfig>(r#"{"path": "a", "query_timeout": "5"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let mut config = SqliteConfig::new("a.db");
        config.connections = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("connections is 0"), "{err}");
        let mut config = SqliteConfig::new("a.db");
        config.query_timeout = Duration::ZERO;
        assert!(config.validate().is_err());
    }
}
