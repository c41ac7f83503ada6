//! Recomputing the chain and checking it against the signed checkpoints.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::chain::{self, GENESIS, MAC_LEN};
use crate::checkpoint;
use crate::error::AuditError;
use crate::keys::{ChainKey, CheckpointKey};
use crate::paths::AuditPaths;
use crate::store;

/// One thing wrong with a log, naming the records it concerns.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The record's contents (or its indexed columns) no longer match its
    /// MAC while its place in the chain is intact. A changed last record is
    /// reported here too when it still links to its predecessor (nothing after
    /// it can tell an edit from an appended forgery).
    Edited {
        /// The record.
        seq: u64,
    },
    /// Consecutive records that all fail their MACs yet still link to each
    /// other: recomputed with another key (or the wrong key file is in use),
    /// or several neighbours edited.
    Rewritten {
        /// First record of the run.
        first_seq: u64,
        /// Last record of the run.
        last_seq: u64,
    },
    /// Records missing from the chain (a gap in seq).
    Deleted {
        /// The last record before the gap (0: the gap starts at the first record).
        after_seq: u64,
        /// The missing seqs.
        missing: RangeInclusive<u64>,
    },
    /// A row that does not belong to the chain: a duplicated seq beside the
    /// genuine record, a seq below 1, or a record that links to neither
    /// neighbour.
    Inserted {
        /// Its seq (0 for a seq below 1).
        seq: u64,
    },
    /// A signed checkpoint names a record beyond the end of the log: the
    /// tail was cut off.
    Truncated {
        /// The last record present.
        last_seq: u64,
        /// The highest seq a valid checkpoint seals.
        checkpoint_seq: u64,
    },
    /// A checkpoint line that does not parse, or whose signature is not by
    /// this log's signing key.
    BadCheckpoint {
        /// Its 1-based line number in the checkpoint file.
        line: usize,
    },
    /// The record a checkpoint seals verifies under the HMAC key but is not
    /// the one sealed: someone holding the HMAC key rewrote the chain up to
    /// there (or cut the tail and appended anew).
    ChainRecomputed {
        /// The first checkpoint that disagrees.
        checkpoint_seq: u64,
    },
}

/// What [`verify`] found.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows in the database.
    pub records: u64,
    /// The highest seq present (0 when empty).
    pub last_seq: u64,
    /// Checkpoint lines with a valid signature.
    pub checkpoints: u64,
    /// The highest seq sealed by a valid checkpoint that matches the record
    /// (0 if none): records above it are not protected against truncation.
    pub sealed_seq: u64,
    /// Everything wrong, in seq order within each kind.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Recomputes the whole chain with the HMAC key and checks every checkpoint
/// line against the signing key. Needs both key files; never writes.
///
/// Memory: about 100 bytes per record (MACs and flags, not the records).
pub fn verify(paths: &AuditPaths) -> Result<VerifyReport, AuditError> {
    let chain_key = ChainKey::load(&paths.hmac_key)?;
    let signing_key = CheckpointKey::load(&paths.signing_key)?;
    let conn = store::open_reader(&paths.db)?;

    let mut problems = Vec::new();

    // Checkpoints first: a sealed MAC also confirms that a record's MAC is original.
    let mut sealed: BTreeMap<u64, [u8; MAC_LEN]> = BTreeMap::new();
    let mut checkpoints = 0;
    for (line, cp) in checkpoint::read_all(&paths.checkpoints)? {
        match cp.and_then(|cp| Some((cp.seq, cp.verified_mac(signing_key.public_key())?))) {
            Some((seq, mac)) => {
                checkpoints += 1;
                sealed.insert(seq, mac);
            }
            None => problems.push(Problem::BadCheckpoint { line }),
        }
    }

    let rows = read_rows(&conn, paths, &chain_key, &mut problems)?;
    let records = rows.len() as u64
        + problems
            .iter()
            .filter(|p| matches!(p, Problem::Inserted { seq: 0 }))
            .count() as u64;
    let chain = pick_one_per_seq(rows, &mut problems);
    let verdicts = classify(&chain, &sealed, &mut problems);
    problems.extend(collapse_runs(&chain, &verdicts));

    let last_seq = chain.last().map_or(0, |r| r.seq);
    if let Some((&checkpoint_seq, _)) = sealed.last_key_value()
        && checkpoint_seq > last_seq
    {
        problems.push(Problem::Truncated {
            last_seq,
            checkpoint_seq,
        });
    }
    let by_seq: BTreeMap<u64, usize> = chain.iter().enumerate().map(|(i, r)| (r.seq, i)).collect();
    let mut sealed_seq = 0;
    let mut recomputed = None;
    for (&seq, mac) in &sealed {
        let Some(&i) = by_seq.get(&seq) else { continue };
        if chain[i].mac == mac[..] {
            sealed_seq = seq;
        } else if verdicts[i].is_none() && recomputed.is_none() {
            recomputed = Some(seq);
        }
    }
    if let Some(checkpoint_seq) = recomputed {
        problems.push(Problem::ChainRecomputed { checkpoint_seq });
    }
    problems.sort_by_key(sort_key);

    Ok(VerifyReport {
        records,
        last_seq,
        checkpoints,
        sealed_seq,
        problems,
    })
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Edited { seq } => write!(
                f,
                "record {seq} was edited: its contents no longer match its MAC"
            ),
            Problem::Rewritten {
                first_seq,
                last_seq,
            } => write!(
                f,
                "records {first_seq}–{last_seq} fail their MACs but still link to each other: \
                 rewritten with another key (or this is not the log's HMAC key file)"
            ),
            Problem::Deleted { after_seq, missing } => {
                let (a, b) = (missing.start(), missing.end());
                if a == b {
                    write!(f, "record {a} was deleted (gap after seq {after_seq})")
                } else {
                    write!(
                        f,
                        "records {a}–{b} were deleted (gap after seq {after_seq})"
                    )
                }
            }
            Problem::Inserted { seq: 0 } => {
                write!(f, "a row with an invalid seq (below 1) was inserted")
            }
            Problem::Inserted { seq } => write!(
                f,
                "a row at seq {seq} was inserted: it does not belong to the chain"
            ),
            Problem::Truncated {
                last_seq,
                checkpoint_seq,
            } => write!(
                f,
                "the tail was cut off: a signed checkpoint seals seq {checkpoint_seq} but the log ends at seq {last_seq} \
                 (records {}–{checkpoint_seq} are gone)",
                last_seq + 1
            ),
            Problem::BadCheckpoint { line } => write!(
                f,
                "checkpoint file line {line} is not validly signed by this log's signing key (forged or damaged)"
            ),
            Problem::ChainRecomputed { checkpoint_seq } => write!(
                f,
                "record {checkpoint_seq} verifies under the HMAC key but is not the record a signed checkpoint sealed: \
                 someone holding the HMAC key rewrote records up to {checkpoint_seq} (or cut the tail and appended anew)"
            ),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} records", self.records)?;
        if self.last_seq > 0 {
            write!(f, " (last seq {})", self.last_seq)?;
        }
        writeln!(
            f,
            ", {} valid checkpoints, sealed up to seq {}",
            self.checkpoints, self.sealed_seq
        )?;
        if self.ok() {
            writeln!(
                f,
                "OK: every record verifies and matches the signed checkpoints."
            )?;
        } else {
            writeln!(f, "{} PROBLEM(S):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            if self.problems.iter().any(|p| {
                matches!(p, Problem::Rewritten { first_seq: 1, last_seq } if *last_seq == self.last_seq)
            }) {
                writeln!(f, "No record verifies: check that this is the log's HMAC key file.")?;
            }
        }
        // Only worth saying about an intact log; otherwise the problems say more.
        if self.ok() && self.sealed_seq < self.last_seq {
            let unsealed = if self.sealed_seq + 1 == self.last_seq {
                format!("record {} is", self.last_seq)
            } else {
                format!("records {}–{} are", self.sealed_seq + 1, self.last_seq)
            };
            writeln!(
                f,
                "Note: {unsealed} not sealed by a checkpoint yet; cutting them off would go unnoticed."
            )?;
        }
        Ok(())
    }
}

/// What verification needs of a row (the record itself is not kept).
#[derive(Clone, Debug)]
struct Row {
    seq: u64,
    prev: Vec<u8>,
    mac: Vec<u8>,
    mac_ok: bool,
    /// The indexed columns agree with the record's JSON.
    columns_ok: bool,
}

impl Row {
    fn ok(&self) -> bool {
        self.mac_ok && self.columns_ok
    }
}

/// The columns duplicated out of the JSON (other fields are ignored).
#[derive(Deserialize)]
struct Indexed {
    ts_ms: i64,
    tunnel: String,
    principal: Option<String>,
}

fn read_rows(
    conn: &rusqlite::Connection,
    paths: &AuditPaths,
    key: &ChainKey,
    problems: &mut Vec<Problem>,
) -> Result<Vec<Row>, AuditError> {
    let db = |e| AuditError::db("reading records", &paths.db, e);
    let mut stmt = conn
        .prepare(
            "SELECT seq, prev, mac, ts_ms, tunnel, principal, record FROM records ORDER BY seq, id",
        )
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let Ok(seq) = u64::try_from(seq) else {
            problems.push(Problem::Inserted { seq: 0 });
            continue;
        };
        if seq == 0 {
            problems.push(Problem::Inserted { seq: 0 });
            continue;
        }
        // Tampering may change column types; an unreadable value just fails the check.
        let blob = |i| row.get::<_, Vec<u8>>(i).unwrap_or_default();
        let (prev, mac) = (blob(1), blob(2));
        let ts_ms: Option<i64> = row.get(3).ok();
        let tunnel: Option<String> = row.get(4).ok();
        let principal: Option<Option<String>> = row.get(5).ok();
        let record: String = row.get(6).unwrap_or_default();
        let mac_ok = chain::mac_matches(key.key(), seq, &prev, record.as_bytes(), &mac);
        let columns_ok = serde_json::from_str::<Indexed>(&record).is_ok_and(|j| {
            ts_ms == Some(j.ts_ms)
                && tunnel.as_ref() == Some(&j.tunnel)
                && principal == Some(j.principal)
        });
        out.push(Row {
            seq,
            prev,
            mac,
            mac_ok,
            columns_ok,
        });
    }
    Ok(out)
}

/// Keeps one row per seq — the genuine one when there is one — and reports
/// the others as inserted. `rows` is sorted by seq.
fn pick_one_per_seq(rows: Vec<Row>, problems: &mut Vec<Problem>) -> Vec<Row> {
    let mut chain: Vec<Row> = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let seq = first.seq;
        let mut group = vec![first];
        while let Some(next) = rows.next_if(|r| r.seq == seq) {
            group.push(next);
        }
        let expected_prev: Option<&[u8]> = match chain.last() {
            Some(p) if p.seq + 1 == seq => Some(&p.mac),
            None if seq == 1 => Some(&GENESIS),
            _ => None,
        };
        let pick = group
            .iter()
            .position(|r| r.ok() && expected_prev.is_none_or(|p| r.prev == p))
            .or_else(|| group.iter().position(Row::ok))
            .unwrap_or(0);
        for _ in 1..group.len() {
            problems.push(Problem::Inserted { seq });
        }
        chain.push(group.swap_remove(pick));
    }
    chain
}

/// A verdict per chain row (`None` = fine); gaps are reported directly.
fn classify(
    chain: &[Row],
    sealed: &BTreeMap<u64, [u8; MAC_LEN]>,
    problems: &mut Vec<Problem>,
) -> Vec<Option<Problem>> {
    let mut verdicts = Vec::with_capacity(chain.len());
    for (i, r) in chain.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &chain[p]);
        let expected = prev.map_or(1, |p| p.seq + 1);
        if r.seq > expected {
            problems.push(Problem::Deleted {
                after_seq: expected - 1,
                missing: expected..=r.seq - 1,
            });
        }
        // Whether it links to its predecessor (unknown across a gap).
        let linked_back =
            (r.seq == expected).then(|| r.prev == prev.map_or(&GENESIS[..], |p| &p.mac[..]));
        let next = chain.get(i + 1).filter(|n| n.seq == r.seq + 1);
        // Its MAC is the original one if its successor or a checkpoint names it.
        let mac_confirmed = next.is_some_and(|n| n.prev == r.mac)
            || sealed.get(&r.seq).is_some_and(|m| r.mac == m[..]);
        let verdict = if r.mac_ok {
            if !r.columns_ok {
                Some(Problem::Edited { seq: r.seq })
            } else if linked_back == Some(false) && prev.is_some_and(Row::ok) {
                // Two genuine records that do not link: a fork of the chain.
                Some(Problem::Inserted { seq: r.seq })
            } else {
                None
            }
        } else if mac_confirmed || linked_back == Some(true) {
            Some(Problem::Edited { seq: r.seq })
        } else {
            Some(Problem::Inserted { seq: r.seq })
        };
        verdicts.push(verdict);
    }
    verdicts
}

/// Turns the verdicts into problems, reporting each run of two or more
/// consecutive, still-linked records that fail their MACs once.
fn collapse_runs(chain: &[Row], verdicts: &[Option<Problem>]) -> Vec<Problem> {
    let in_run = |i: usize| matches!(verdicts[i], Some(Problem::Edited { .. })) && !chain[i].mac_ok;
    let mut out = Vec::new();
    let mut i = 0;
    while i < chain.len() {
        if in_run(i) {
            let mut j = i;
            while j + 1 < chain.len()
                && in_run(j + 1)
                && chain[j + 1].seq == chain[j].seq + 1
                && chain[j + 1].prev == chain[j].mac
            {
                j += 1;
            }
            if j > i {
                out.push(Problem::Rewritten {
                    first_seq: chain[i].seq,
                    last_seq: chain[j].seq,
                });
                i = j + 1;
                continue;
            }
        }
        if let Some(p) = &verdicts[i] {
            out.push(p.clone());
        }
        i += 1;
    }
    out
}

/// Problems about records in seq order, then checkpoint-file problems.
fn sort_key(p: &Problem) -> (u64, u64) {
    match p {
        Problem::Edited { seq } | Problem::Inserted { seq } => (0, *seq),
        Problem::Rewritten { first_seq, .. } => (0, *first_seq),
        Problem::Deleted { missing, .. } => (0, *missing.start()),
        Problem::Truncated { last_seq, .. } => (0, last_seq + 1),
        Problem::ChainRecomputed { checkpoint_seq } => (1, *checkpoint_seq),
        Problem::BadCheckpoint { line } => (2, *line as u64),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::chain::record_mac;
    use crate::test_support::{checkpoint_seqs, sealed_log, tamper};

    const N: u64 = 300;

    fn problems(paths: &AuditPaths) -> Vec<Problem> {
        let report = verify(paths).unwrap();
        println!("{report}");
        report.problems
    }

    /// Re-MACs every record from `from` on with `key`, as someone holding it would.
    fn recompute(paths: &AuditPaths, key: &ChainKey, from: u64) {
        let conn = tamper(paths);
        let mut prev: Vec<u8> = if from == 1 {
            GENESIS.to_vec()
        } else {
            conn.query_row(
                "SELECT mac FROM records WHERE seq = ?1",
                [from as i64 - 1],
                |r| r.get(0),
            )
            .unwrap()
        };
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT seq, record FROM records WHERE seq >= ?1 ORDER BY seq")
            .unwrap()
            .query_map([from as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (seq, json) in rows {
            let mac = record_mac(
                key.key(),
                seq as u64,
                prev.as_slice().try_into().unwrap(),
                json.as_bytes(),
            );
            conn.execute(
                "UPDATE records SET prev = ?1, mac = ?2 WHERE seq = ?3",
                params![prev, &mac[..], seq],
            )
            .unwrap();
            prev = mac.to_vec();
        }
    }

    #[test]
    fn untouched_log_verifies() {
        let (_dir, paths) = sealed_log(N);
        let report = verify(&paths).unwrap();
        assert!(report.ok(), "{report}");
        assert_eq!(
            (report.records, report.last_seq, report.sealed_seq),
            (N, N, N)
        );
        assert!(report.checkpoints >= 3, "{report}");
        assert!(report.to_string().contains("OK"));
    }

    #[test]
    fn edited_record_is_pinpointed() {
        let (_dir, paths) = sealed_log(N);
        let changed = tamper(&paths)
            .execute(
                "UPDATE records SET record = replace(record, 'bob@example.com', 'eve@example.com') WHERE seq = 42",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        assert_eq!(problems(&paths), vec![Problem::Edited { seq: 42 }]);
    }

    #[test]
    fn edited_index_column_is_pinpointed() {
        let (_dir, paths) = sealed_log(N);
        tamper(&paths)
            .execute("UPDATE records SET tunnel = 'elsewhere' WHERE seq = 7", [])
            .unwrap();
        assert_eq!(problems(&paths), vec![Problem::Edited { seq: 7 }]);
    }

    #[test]
    fn deleted_records_are_pinpointed() {
        let (_dir, paths) = sealed_log(N);
        tamper(&paths)
            .execute("DELETE FROM records WHERE seq BETWEEN 40 AND 42", [])
            .unwrap();
        assert_eq!(
            problems(&paths),
            vec![Problem::Deleted {
                after_seq: 39,
                missing: 40..=42
            }]
        );
        let text = verify(&paths).unwrap().to_string();
        assert!(text.contains("records 40–42 were deleted"), "{text}");
    }

    #[test]
    fn inserted_records_are_pinpointed() {
        let (_dir, paths) = sealed_log(N);
        let conn = tamper(&paths);
        // A forged record beside the genuine seq 50, linked to 49 like a real one.
        let (prev, json): (Vec<u8>, String) = conn
            .query_row("SELECT prev, record FROM records WHERE seq = 50", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let forged = json.replace("alice@example.com", "mallory@example.com");
        conn.execute(
            "INSERT INTO records (seq, prev, mac, ts_ms, tunnel, principal, record)
             SELECT seq, ?1, ?2, ts_ms, tunnel, 'mallory@example.com', ?3 FROM records WHERE seq = 50",
            params![prev, vec![9u8; 32], forged],
        )
        .unwrap();
        assert_eq!(problems(&paths), vec![Problem::Inserted { seq: 50 }]);

        // And one appended after the end that links to nothing.
        conn.execute(
            "INSERT INTO records (seq, prev, mac, ts_ms, tunnel, principal, record)
             SELECT ?1, ?2, ?2, ts_ms, tunnel, principal, record FROM records WHERE seq = 1",
            params![N as i64 + 1, vec![1u8; 32]],
        )
        .unwrap();
        assert_eq!(
            problems(&paths),
            vec![
                Problem::Inserted { seq: 50 },
                Problem::Inserted { seq: N + 1 }
            ]
        );
    }

    #[test]
    fn truncated_tail_is_caught_by_the_checkpoint() {
        let (_dir, paths) = sealed_log(N);
        tamper(&paths)
            .execute("DELETE FROM records WHERE seq > 290", [])
            .unwrap();
        assert_eq!(
            problems(&paths),
            vec![Problem::Truncated {
                last_seq: 290,
                checkpoint_seq: N
            }]
        );
    }

    #[test]
    fn chain_recomputed_with_a_wrong_key_is_caught() {
        let (_dir, paths) = sealed_log(N);
        recompute(&paths, &ChainKey::from_raw(&[0x42; 32]), 1);
        assert_eq!(
            problems(&paths),
            vec![Problem::Rewritten {
                first_seq: 1,
                last_seq: N
            }]
        );
        let text = verify(&paths).unwrap().to_string();
        assert!(
            text.contains("check that this is the log's HMAC key file"),
            "{text}"
        );
    }

    #[test]
    fn chain_recomputed_with_the_stolen_key_is_caught_by_checkpoints() {
        let (_dir, paths) = sealed_log(N);
        let conn = tamper(&paths);
        conn.execute(
            "UPDATE records SET record = replace(record, '\"deny\"', '\"allow\"') WHERE seq = 20",
            [],
        )
        .unwrap();
        recompute(&paths, &ChainKey::load(&paths.hmac_key).unwrap(), 20);
        let first_sealed_after = checkpoint_seqs(&paths)
            .into_iter()
            .find(|&s| s >= 20)
            .unwrap();
        assert_eq!(
            problems(&paths),
            vec![Problem::ChainRecomputed {
                checkpoint_seq: first_sealed_after
            }]
        );
    }

    #[test]
    fn forged_checkpoint_lines_are_caught() {
        let (dir, paths) = sealed_log(N);
        let lines = std::fs::read_to_string(&paths.checkpoints).unwrap();
        let count = lines.lines().count();
        // A line signed with another key, claiming a longer log.
        let other = CheckpointKey::load_or_create(&dir.path().join("other-key")).unwrap();
        let forged = crate::checkpoint::Checkpoint::sign(&other, N + 100, &[1; 32], 1).unwrap();
        crate::checkpoint::append(&paths.checkpoints, &forged).unwrap();
        // A genuine line with its seq changed.
        let first = lines.lines().next().unwrap();
        let mut moved: serde_json::Value = serde_json::from_str(first).unwrap();
        moved["seq"] = serde_json::json!(1);
        let text = std::fs::read_to_string(&paths.checkpoints).unwrap() + &moved.to_string() + "\n";
        std::fs::write(&paths.checkpoints, text).unwrap();

        assert_eq!(
            problems(&paths),
            vec![
                Problem::BadCheckpoint { line: count + 1 },
                Problem::BadCheckpoint { line: count + 2 }
            ]
        );
    }

    #[test]
    fn json_report_names_the_kind() {
        let (_dir, paths) = sealed_log(30);
        tamper(&paths)
            .execute("DELETE FROM records WHERE seq = 3", [])
            .unwrap();
        let json = serde_json::to_value(verify(&paths).unwrap()).unwrap();
        assert_eq!(
            json["problems"],
            serde_json::json!([{"kind": "deleted", "after_seq": 2, "missing": {"start": 3, "end": 3}}])
        );
    }
}
