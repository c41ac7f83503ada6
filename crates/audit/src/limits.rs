//! Every limit and interval of the log, named in one place.

use std::time::Duration;

/// Records accepted but not yet committed, at most. Beyond it `append`
/// drops the record and counts it (see [`crate::AuditLog::append`]).
pub const DEFAULT_QUEUE_LIMIT: usize = 65_536;
/// Records per SQLite transaction, at most.
pub const DEFAULT_BATCH_LIMIT: usize = 1_024;
/// How long the first record of a batch waits for company before the batch
/// is committed (one fsync per batch): records are on disk at most this long
/// after they were appended, well inside the 100 ms bound, and a busy relay
/// does tens of fsyncs a second instead of one per request. `flush` and
/// `close` do not wait.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(20);
/// After a failed commit (disk full, database locked), the writer keeps the
/// batch and retries this often.
pub const DEFAULT_COMMIT_RETRY: Duration = Duration::from_millis(50);
/// How often the chain head is signed into the checkpoint file (only when
/// records were added since the last checkpoint). Records after the last
/// checkpoint are protected by the chain only, not against tail truncation.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Canonical JSON of one record, at most; larger arguments are replaced by a
/// note (their digest stays in `args_digest`).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 * 1024;
/// How often `follow` polls the database for new records.
pub const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Rows read per poll while following (more are read on the next poll at once).
pub(crate) const FOLLOW_BATCH: usize = 1_000;
/// How long the writer waits for a SQLite lock before the commit counts as failed.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// A queue-full or commit-failure warning is logged at most this often.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(1);

/// Tunables of [`crate::AuditLog::open`]; `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// See [`DEFAULT_QUEUE_LIMIT`].
    pub queue_limit: usize,
    /// See [`DEFAULT_BATCH_LIMIT`].
    pub batch_limit: usize,
    /// See [`DEFAULT_COMMIT_DELAY`].
    pub commit_delay: Duration,
    /// See [`DEFAULT_COMMIT_RETRY`].
    pub commit_retry: Duration,
    /// See [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: Duration,
    /// See [`DEFAULT_MAX_RECORD_BYTES`].
    pub max_record_bytes: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            queue_limit: DEFAULT_QUEUE_LIMIT,
            batch_limit: DEFAULT_BATCH_LIMIT,
            commit_delay: DEFAULT_COMMIT_DELAY,
            commit_retry: DEFAULT_COMMIT_RETRY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}
