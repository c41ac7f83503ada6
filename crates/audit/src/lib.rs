//! Durable, tamper-evident audit log shared by the relay (every authorization
//! decision and every forwarded MCP call) and the agent (what it executed).
//!
//! # The picture
//!
//! ```text
//!  request path                 writer thread (one per log)            disk
//!  ────────────                 ───────────────────────────            ────
//!  AuditLog::append(rec) ──►  bounded queue ──► batch ──► BEGIN IMMEDIATE
//!   (no I/O, no lock held)     (65,536 max;     seq+1, prev, mac     INSERT … (WAL,
//!                               full = counted                        synchronous=FULL)
//!                               as dropped)                          COMMIT
//!                                                  every 10 s / close:
//!                                                  sign {seq, mac, ts} ──► audit-checkpoints.jsonl
//! ```
//!
//! * **Chain.** Record `n` carries `mac_n = HMAC-SHA256(k, tag ‖ n ‖ mac_{n-1} ‖
//!   canonical JSON)`. The 32-byte key `k` lives in its own 0600 file, outside
//!   the database, so someone who can write the database but not read the key
//!   cannot edit, insert or delete a record without [`verify`] noticing.
//! * **Checkpoints.** The chain alone cannot see its own tail being cut off, nor
//!   a chain recomputed by someone who stole `k`. So the head is periodically
//!   signed with an Ed25519 key (another 0600 file) and appended to a separate
//!   JSON-lines file; copy that file off the host for the strongest guarantee.
//! * **Reading.** [`AuditReader`] opens the database read-only (another
//!   process, e.g. `mcp-relay audit tail --follow`) for queries, JSONL export
//!   and following new records; [`cli`] holds the argument structs and `run_*`
//!   functions the binaries call.
//!
//! Crypto is aws-lc-rs only (the tree's one provider); nothing is hand-rolled.

mod chain;
mod checkpoint;
pub mod cli;
mod error;
mod keys;
mod limits;
mod paths;
mod reader;
mod record;
mod redact;
mod store;
#[cfg(test)]
mod test_support;
mod verify;
mod writer;

pub use error::AuditError;
pub use limits::{
    AuditOptions, DEFAULT_BATCH_LIMIT, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_COMMIT_RETRY,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_QUEUE_LIMIT, FOLLOW_POLL_INTERVAL,
};
pub use paths::AuditPaths;
pub use reader::{AuditReader, Filter, StoredRecord};
pub use record::{AuditRecord, Decision, args_digest, canonical_json};
pub use redact::{ArgsPolicy, DEFAULT_REDACTED_KEYS, REDACTED, Redactor};
pub use verify::{Problem, VerifyReport, verify};
pub use writer::AuditLog;
