//! Fixtures shared by the unit tests.

use std::time::Duration;

use serde_json::json;

use crate::{AuditLog, AuditOptions, AuditPaths, AuditRecord, Decision};

/// A plausible record number `i` (alternating tunnels, principals and decisions).
pub(crate) fn record(i: u64) -> AuditRecord {
    let deny = i.is_multiple_of(5);
    AuditRecord {
        ts_ms: 1_780_000_000_000 + i as i64,
        request_id: format!("9f3a-{i}"),
        principal: Some(
            if i.is_multiple_of(2) {
                "bob@example.com"
            } else {
                "alice@example.com"
            }
            .into(),
        ),
        client_id: Some("claude".into()),
        source: Some("203.0.113.7".into()),
        tunnel: if i.is_multiple_of(3) { "crm" } else { "shop" }.into(),
        method: "tools/call".into(),
        tool: Some("read_query".into()),
        args_digest: Some(crate::args_digest(&json!({"sql": format!("select {i}")}))),
        args: None,
        decision: if deny {
            Decision::Deny
        } else {
            Decision::Allow
        },
        policies: vec!["p-read".into()],
        reason: deny.then(|| "policy p-read forbids writes".into()),
        status: Some(if deny { 403 } else { 200 }),
        rpc_error: None,
        latency_us: 1_200 + i,
        bytes_in: 100,
        bytes_out: 2_000,
    }
}

/// Options with a short checkpoint interval so tests see several checkpoints.
pub(crate) fn fast_options() -> AuditOptions {
    AuditOptions {
        checkpoint_interval: Duration::from_millis(20),
        ..AuditOptions::default()
    }
}

/// A closed log of `n` records written in three rounds of append + flush,
/// with a checkpoint after each round.
pub(crate) fn sealed_log(n: u64) -> (tempfile::TempDir, AuditPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = AuditPaths::in_dir(dir.path(), "audit");
    let log = AuditLog::open(paths.clone(), fast_options()).unwrap();
    let rounds = [n / 3, 2 * n / 3, n];
    let mut next = 1;
    for end in rounds {
        while next <= end {
            log.append(record(next));
            next += 1;
        }
        log.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    log.close().unwrap();
    (dir, paths)
}

/// A second, read-write connection: the "someone with sqlite3" of the tests.
pub(crate) fn tamper(paths: &AuditPaths) -> rusqlite::Connection {
    rusqlite::Connection::open(&paths.db).unwrap()
}

/// Seqs sealed by the checkpoint file, in order.
pub(crate) fn checkpoint_seqs(paths: &AuditPaths) -> Vec<u64> {
    crate::checkpoint::read_all(&paths.checkpoints)
        .unwrap()
        .into_iter()
        .filter_map(|(_, cp)| cp.map(|cp| cp.seq))
        .collect()
}
