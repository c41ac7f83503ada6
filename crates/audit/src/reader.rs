//! Reading a log: filtered queries, JSON-lines export, following new records.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde::Serialize;

use crate::error::AuditError;
use crate::limits::FOLLOW_BATCH;
use crate::record::AuditRecord;
use crate::store;

/// Which records a query returns. All set conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this tunnel.
    pub tunnel: Option<String>,
    /// Only these tunnels (e.g. the caller's own); an empty list matches nothing.
    pub tunnels: Option<Vec<String>>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only records with a seq greater than this.
    pub since_seq: Option<u64>,
    /// At most this many records.
    pub limit: Option<usize>,
    /// Highest seq first (with `limit`: the latest records).
    pub newest_first: bool,
}

/// A record as stored: its place in the chain and the record.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The previous record's MAC, hex.
    pub prev: String,
    /// This record's MAC, hex.
    pub mac: String,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// A read-only connection to an audit log; safe to use while another
/// process writes it.
#[derive(Debug)]
pub struct AuditReader {
    conn: Connection,
    db: PathBuf,
}

impl AuditReader {
    /// Opens an existing log (never creates one).
    pub fn open(db: &Path) -> Result<AuditReader, AuditError> {
        Ok(AuditReader {
            conn: store::open_reader(db)?,
            db: db.to_path_buf(),
        })
    }

    /// The highest seq stored (0 when empty).
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM records", [], |row| row.get(0))
            .map_err(|e| AuditError::db("reading the last seq", &self.db, e))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// Records matching `filter`, as `(seq, record)`.
    pub fn query(&self, filter: &Filter) -> Result<Vec<(u64, AuditRecord)>, AuditError> {
        let mut out = Vec::new();
        self.for_each(filter, |stored| {
            out.push((stored.seq, stored.record));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each record matching `filter`, in order, without
    /// holding them all in memory.
    pub fn for_each(
        &self,
        filter: &Filter,
        mut f: impl FnMut(StoredRecord) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        if filter.tunnels.as_ref().is_some_and(Vec::is_empty) || filter.limit == Some(0) {
            return Ok(());
        }
        let (sql, params) = build_query(filter);
        let db = |action, e| AuditError::db(action, &self.db, e);
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(|e| db("preparing a query", e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| db("querying records", e))?;
        while let Some(row) = rows.next().map_err(|e| db("reading records", e))? {
            let seq: i64 = row.get(0).map_err(|e| db("reading records", e))?;
            let prev: Vec<u8> = row.get(1).map_err(|e| db("reading records", e))?;
            let mac: Vec<u8> = row.get(2).map_err(|e| db("reading records", e))?;
            let json: String = row.get(3).map_err(|e| db("reading records", e))?;
            let record: AuditRecord =
                serde_json::from_str(&json).map_err(|e| AuditError::Corrupt {
                    seq,
                    why: e.to_string(),
                })?;
            let seq = u64::try_from(seq).map_err(|_| AuditError::Corrupt {
                seq,
                why: "negative sequence number".into(),
            })?;
            f(StoredRecord {
                seq,
                prev: hex::encode(prev),
                mac: hex::encode(mac),
                record,
            })?;
        }
        Ok(())
    }

    /// Writes matching records to `out`, one JSON object per line (the
    /// record's fields plus `seq`, `prev` and `mac`). Returns how many.
    pub fn export_jsonl(&self, out: &mut dyn Write, filter: &Filter) -> Result<u64, AuditError> {
        let mut n = 0;
        self.for_each(filter, |stored| {
            serde_json::to_writer(&mut *out, &stored).map_err(|e| AuditError::Output(e.into()))?;
            out.write_all(b"\n").map_err(AuditError::Output)?;
            n += 1;
            Ok(())
        })?;
        out.flush().map_err(AuditError::Output)?;
        Ok(n)
    }

    /// Calls `f` for every new record matching `filter` (seq above
    /// `filter.since_seq`), in seq order, polling every `poll` until `stop`
    /// returns true or `f` fails. For `tail --follow`.
    pub fn follow(
        &self,
        filter: &Filter,
        poll: Duration,
        stop: &dyn Fn() -> bool,
        mut f: impl FnMut(StoredRecord) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let mut page = Filter {
            newest_first: false,
            limit: Some(FOLLOW_BATCH),
            ..filter.clone()
        };
        while !stop() {
            let mut got = 0;
            let mut last = page.since_seq;
            self.for_each(&page, |stored| {
                got += 1;
                last = Some(stored.seq);
                f(stored)
            })?;
            page.since_seq = last;
            if got < FOLLOW_BATCH {
                std::thread::sleep(poll);
            }
        }
        Ok(())
    }
}

fn build_query(filter: &Filter) -> (String, Vec<SqlValue>) {
    let mut sql = String::from("SELECT seq, prev, mac, record FROM records WHERE 1 = 1");
    let mut params = Vec::new();
    if let Some(since) = filter.since_seq {
        sql.push_str(" AND seq > ?");
        params.push(SqlValue::Integer(i64::try_from(since).unwrap_or(i64::MAX)));
    }
    if let Some(tunnel) = &filter.tunnel {
        sql.push_str(" AND tunnel = ?");
        params.push(SqlValue::Text(tunnel.clone()));
    }
    if let Some(tunnels) = &filter.tunnels {
        sql.push_str(" AND tunnel IN (");
        for (i, tunnel) in tunnels.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(SqlValue::Text(tunnel.clone()));
        }
        sql.push(')');
    }
    if let Some(principal) = &filter.principal {
        sql.push_str(" AND principal = ?");
        params.push(SqlValue::Text(principal.clone()));
    }
    sql.push_str(if filter.newest_first {
        " ORDER BY seq DESC, id DESC"
    } else {
        " ORDER BY seq, id"
    });
    if let Some(limit) = filter.limit {
        sql.push_str(" LIMIT ?");
        params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::test_support::record;
    use crate::{AuditLog, AuditOptions, AuditPaths};

    fn log_of(n: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(
            AuditPaths::in_dir(dir.path(), "audit"),
            AuditOptions::default(),
        )
        .unwrap();
        for i in 1..=n {
            log.append(record(i));
        }
        log.flush().unwrap();
        (dir, log)
    }

    fn seqs(log: &AuditLog, filter: Filter) -> Vec<u64> {
        log.query(&filter)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    #[test]
    fn filters_combine() {
        let (_dir, log) = log_of(12);
        assert_eq!(
            seqs(
                &log,
                Filter {
                    tunnel: Some("crm".into()),
                    ..Filter::default()
                }
            ),
            vec![3, 6, 9, 12]
        );
        assert_eq!(
            seqs(
                &log,
                Filter {
                    tunnels: Some(vec!["crm".into()]),
                    principal: Some("bob@example.com".into()),
                    ..Filter::default()
                }
            ),
            vec![6, 12]
        );
        assert_eq!(
            seqs(
                &log,
                Filter {
                    tunnels: Some(vec![]),
                    ..Filter::default()
                }
            ),
            Vec::<u64>::new()
        );
        assert_eq!(
            seqs(
                &log,
                Filter {
                    tunnel: Some("shop".into()),
                    tunnels: Some(vec!["crm".into()]),
                    ..Filter::default()
                }
            ),
            Vec::<u64>::new(),
            "tunnel outside the allowed list matches nothing"
        );
        assert_eq!(
            seqs(
                &log,
                Filter {
                    since_seq: Some(9),
                    ..Filter::default()
                }
            ),
            vec![10, 11, 12]
        );
        assert_eq!(
            seqs(
                &log,
                Filter {
                    limit: Some(2),
                    newest_first: true,
                    ..Filter::default()
                }
            ),
            vec![12, 11]
        );
    }

    #[test]
    fn export_writes_one_object_per_line_with_seq_and_mac() {
        let (_dir, log) = log_of(5);
        let reader = AuditReader::open(&log.paths().db).unwrap();
        let mut out = Vec::new();
        let n = reader
            .export_jsonl(
                &mut out,
                &Filter {
                    since_seq: Some(2),
                    ..Filter::default()
                },
            )
            .unwrap();
        assert_eq!(n, 3);
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["seq"], 3);
        assert_eq!(lines[0]["request_id"], "9f3a-3");
        assert_eq!(lines[0]["mac"].as_str().unwrap().len(), 64);
        assert_eq!(lines[1]["prev"], lines[0]["mac"]);
    }

    #[test]
    fn follow_sees_new_records_and_stops() {
        let (_dir, log) = log_of(3);
        let reader = AuditReader::open(&log.paths().db).unwrap();
        let seen = Cell::new(Vec::new());
        let writer = std::thread::scope(|s| {
            s.spawn(|| {
                for i in 4..=6 {
                    log.append(record(i));
                }
                log.flush().unwrap();
            });
            reader.follow(
                &Filter {
                    since_seq: Some(3),
                    ..Filter::default()
                },
                Duration::from_millis(5),
                &|| {
                    let v = seen.take();
                    let done = v.len() >= 3;
                    seen.set(v);
                    done
                },
                |stored| {
                    let mut v = seen.take();
                    v.push(stored.seq);
                    seen.set(v);
                    Ok(())
                },
            )
        });
        writer.unwrap();
        assert_eq!(seen.take(), vec![4, 5, 6]);
    }
}
