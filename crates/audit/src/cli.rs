//! `mcp-relay audit …` and `mcp-agent log …`: argument structs and the
//! functions behind them, so both binaries only parse and call.

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;

use crate::error::AuditError;
use crate::limits::FOLLOW_POLL_INTERVAL;
use crate::paths::AuditPaths;
use crate::reader::{AuditReader, Filter, StoredRecord};
use crate::record::{AuditRecord, Decision};
use crate::verify::verify;

/// `tail`: the latest records, optionally following new ones.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct TailArgs {
    /// How many of the latest records to show.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new records as they are written (until interrupted).
    #[arg(short, long)]
    pub follow: bool,
    /// Only this tunnel.
    #[arg(long, value_name = "NAME")]
    pub tunnel: Option<String>,
    /// One JSON object per line (with seq and mac) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `export`: records as JSON lines.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct ExportArgs {
    /// JSON lines: one object per record with seq, prev and mac (the only format).
    #[arg(long, default_value_t = true)]
    pub jsonl: bool,
    /// Write to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Only this tunnel.
    #[arg(long, value_name = "NAME")]
    pub tunnel: Option<String>,
    /// Only records after this seq (for incremental exports).
    #[arg(long, value_name = "SEQ")]
    pub since_seq: Option<u64>,
}

/// `verify`: recompute the chain and check the signed checkpoints.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tail` on standard output. `restrict_tunnels` limits a caller to their own
/// tunnels (asking for another one is an error). Returns when done, or, with
/// `--follow`, when the process is interrupted or stdout is closed.
pub fn run_tail(
    paths: &AuditPaths,
    args: &TailArgs,
    restrict_tunnels: Option<&[String]>,
) -> Result<(), AuditError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    tail_to(paths, args, restrict_tunnels, &mut out, &|| false)
}

/// [`run_tail`] writing to `out`; following stops when `stop` returns true.
pub fn tail_to(
    paths: &AuditPaths,
    args: &TailArgs,
    restrict_tunnels: Option<&[String]>,
    out: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<(), AuditError> {
    let filter = filter_for(args.tunnel.as_deref(), restrict_tunnels)?;
    let reader = AuditReader::open(&paths.db)?;
    let head = reader.last_seq()?;
    let latest = Filter {
        limit: Some(args.lines),
        newest_first: true,
        ..filter.clone()
    };
    let mut shown = Vec::new();
    reader.for_each(&latest, |stored| {
        shown.push(stored);
        Ok(())
    })?;
    // Follow from the head as it was, not from the last record shown: with a
    // filter, everything in between is known not to match.
    let last = shown.iter().map(|s| s.seq).fold(head, u64::max);
    let mut print = |stored: StoredRecord| write_record(out, &stored, args.json);
    let result = shown
        .into_iter()
        .rev()
        .try_for_each(&mut print)
        .and_then(|()| {
            if !args.follow {
                return Ok(());
            }
            let since = Filter {
                since_seq: Some(last),
                ..filter
            };
            reader.follow(&since, FOLLOW_POLL_INTERVAL, stop, print)
        });
    quiet_broken_pipe(result)
}

/// `export` to `--out FILE` (created or replaced) or standard output.
/// Returns how many records were written.
pub fn run_export(
    paths: &AuditPaths,
    args: &ExportArgs,
    restrict_tunnels: Option<&[String]>,
) -> Result<u64, AuditError> {
    let filter = Filter {
        since_seq: args.since_seq,
        ..filter_for(args.tunnel.as_deref(), restrict_tunnels)?
    };
    let reader = AuditReader::open(&paths.db)?;
    match &args.out {
        Some(path) => {
            let file = File::create(path).map_err(|e| AuditError::io("creating", path, e))?;
            let mut out = BufWriter::new(file);
            let n = reader.export_jsonl(&mut out, &filter)?;
            let file = out
                .into_inner()
                .map_err(|e| AuditError::io("writing", path, e.into_error()))?;
            file.sync_all()
                .map_err(|e| AuditError::io("syncing", path, e))?;
            Ok(n)
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            match reader.export_jsonl(&mut out, &filter) {
                Err(AuditError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(0),
                other => other,
            }
        }
    }
}

/// `verify` on standard output; the exit code is 0 when the log is intact
/// and 1 when problems were found (errors opening the log are `Err`).
pub fn run_verify(paths: &AuditPaths, args: &VerifyArgs) -> Result<u8, AuditError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    verify_to(paths, args, &mut out)
}

/// [`run_verify`] writing to `out`.
pub fn verify_to(
    paths: &AuditPaths,
    args: &VerifyArgs,
    out: &mut dyn Write,
) -> Result<u8, AuditError> {
    let report = verify(paths)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(|e| AuditError::Output(e.into()))?;
        writeln!(out).map_err(AuditError::Output)?;
    } else {
        write!(out, "{report}").map_err(AuditError::Output)?;
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// One line of human `tail` output:
/// `2026-12-01T10:00:01Z  allow  bob@example.com  shop  tools/call read_query  200  1.2 ms  rid=…`.
pub fn format_line(rec: &AuditRecord) -> String {
    let ts = UNIX_EPOCH + Duration::from_millis(u64::try_from(rec.ts_ms).unwrap_or(0));
    let mut line = format!(
        "{}  {:<5}  {}  {}  {}",
        humantime::format_rfc3339_seconds(ts),
        rec.decision.as_str(),
        rec.principal.as_deref().unwrap_or("(anonymous)"),
        rec.tunnel,
        rec.method,
    );
    if let Some(tool) = &rec.tool {
        line.push(' ');
        line.push_str(tool);
    }
    match rec.status {
        Some(status) => line.push_str(&format!("  {status}")),
        None => line.push_str("  -"),
    }
    if let Some(code) = rec.rpc_error {
        line.push_str(&format!(" rpc={code}"));
    }
    line.push_str(&format!(
        "  {:.1} ms  rid={}",
        rec.latency_us as f64 / 1000.0,
        rec.request_id
    ));
    if let Some(reason) = rec
        .reason
        .as_deref()
        .filter(|_| rec.decision == Decision::Deny || rec.rpc_error.is_some())
    {
        line.push_str("  reason: ");
        // One line per record, whatever the reason contains.
        line.extend(reason.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
    line
}

fn write_record(out: &mut dyn Write, stored: &StoredRecord, json: bool) -> Result<(), AuditError> {
    if json {
        serde_json::to_writer(&mut *out, stored).map_err(|e| AuditError::Output(e.into()))?;
        out.write_all(b"\n").map_err(AuditError::Output)?;
    } else {
        writeln!(out, "{}", format_line(&stored.record)).map_err(AuditError::Output)?;
    }
    // Following: each record must show up as it arrives, not when a buffer fills.
    out.flush().map_err(AuditError::Output)
}

fn filter_for(tunnel: Option<&str>, restrict: Option<&[String]>) -> Result<Filter, AuditError> {
    if let (Some(tunnel), Some(allowed)) = (tunnel, restrict)
        && !allowed.iter().any(|t| t == tunnel)
    {
        return Err(AuditError::TunnelNotAllowed {
            tunnel: tunnel.to_owned(),
        });
    }
    Ok(Filter {
        tunnel: tunnel.map(str::to_owned),
        tunnels: restrict.map(<[String]>::to_vec),
        ..Filter::default()
    })
}

/// A reader that went away (`… | head`) ends the command quietly.
fn quiet_broken_pipe(result: Result<(), AuditError>) -> Result<(), AuditError> {
    match result {
        Err(AuditError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use clap::Parser;

    use super::*;
    use crate::test_support::{record, sealed_log, tamper};

    #[derive(Parser, Debug)]
    enum Cmd {
        Tail(TailArgs),
        Export(ExportArgs),
        Verify(VerifyArgs),
    }

    #[test]
    fn arguments_parse_with_their_defaults() {
        let Cmd::Tail(tail) = Cmd::try_parse_from(["x", "tail"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            tail,
            TailArgs {
                lines: 20,
                follow: false,
                tunnel: None,
                json: false
            }
        );
        let Cmd::Tail(tail) = Cmd::try_parse_from([
            "x", "tail", "-n", "5", "--follow", "--tunnel", "shop", "--json",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            tail,
            TailArgs {
                lines: 5,
                follow: true,
                tunnel: Some("shop".into()),
                json: true
            }
        );
        let Cmd::Export(export) =
            Cmd::try_parse_from(["x", "export", "--out", "f.jsonl", "--since-seq", "7"]).unwrap()
        else {
            panic!()
        };
        assert!(export.jsonl);
        assert_eq!(
            (export.out, export.since_seq),
            (Some(PathBuf::from("f.jsonl")), Some(7))
        );
        assert!(matches!(
            Cmd::try_parse_from(["x", "verify", "--json"]).unwrap(),
            Cmd::Verify(VerifyArgs { json: true })
        ));
    }

    #[test]
    fn human_line_format() {
        let mut rec = record(1);
        let at = humantime::parse_rfc3339("2026-12-01T10:00:01Z").unwrap();
        rec.ts_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(
            format_line(&rec),
            "2026-12-01T10:00:01Z  allow  alice@example.com  shop  tools/call read_query  200  1.2 ms  rid=9f3a-1"
        );
        let mut deny = record(5);
        deny.ts_ms = rec.ts_ms;
        deny.principal = None;
        deny.reason = Some("policy p-read\nforbids writes".into());
        assert_eq!(
            format_line(&deny),
            "2026-12-01T10:00:01Z  deny   (anonymous)  shop  tools/call read_query  403  1.2 ms  rid=9f3a-5  \
             reason: policy p-read forbids writes"
        );
    }

    #[test]
    fn tail_shows_the_latest_restricted_to_own_tunnels_and_follows() {
        let (_dir, paths) = sealed_log(30);
        let args = TailArgs {
            lines: 3,
            follow: false,
            tunnel: None,
            json: false,
        };
        let crm = vec!["crm".to_owned()];

        let mut out = Vec::new();
        tail_to(&paths, &args, Some(&crm), &mut out, &|| true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rids: Vec<&str> = text
            .lines()
            .map(|l| l.split("rid=").nth(1).unwrap().split(' ').next().unwrap())
            .collect();
        assert_eq!(rids, ["9f3a-24", "9f3a-27", "9f3a-30"], "{text}");

        let err = tail_to(
            &paths,
            &TailArgs {
                tunnel: Some("shop".into()),
                ..args.clone()
            },
            Some(&crm),
            &mut Vec::new(),
            &|| true,
        )
        .unwrap_err();
        assert!(matches!(err, AuditError::TunnelNotAllowed { .. }));

        // --follow --json: prints what arrives, until stopped.
        let log = crate::AuditLog::open(paths.clone(), crate::AuditOptions::default()).unwrap();
        let stop = AtomicBool::new(false);
        let follow = TailArgs {
            lines: 1,
            follow: true,
            json: true,
            ..args
        };
        let mut out = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Wait until tail has printed the latest record, then add two.
                std::thread::sleep(Duration::from_millis(300));
                log.append(record(31));
                log.append(record(32));
                log.flush().unwrap();
                std::thread::sleep(Duration::from_millis(600));
                stop.store(true, Ordering::SeqCst);
            });
            tail_to(&paths, &follow, None, &mut out, &|| {
                stop.load(Ordering::SeqCst)
            })
            .unwrap();
        });
        let seqs: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [30, 31, 32]);
    }

    #[test]
    fn export_to_file_and_verify_exit_codes() {
        let (dir, paths) = sealed_log(30);
        let out = dir.path().join("export.jsonl");
        let args = ExportArgs {
            jsonl: true,
            out: Some(out.clone()),
            tunnel: Some("shop".into()),
            since_seq: Some(10),
        };
        assert_eq!(run_export(&paths, &args, None).unwrap(), 13);
        assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 13);

        let mut text = Vec::new();
        assert_eq!(
            verify_to(&paths, &VerifyArgs { json: false }, &mut text).unwrap(),
            0
        );
        tamper(&paths)
            .execute("DELETE FROM records WHERE seq = 12", [])
            .unwrap();
        let mut json = Vec::new();
        assert_eq!(
            verify_to(&paths, &VerifyArgs { json: true }, &mut json).unwrap(),
            1
        );
        let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(report["problems"][0]["kind"], "deleted");
    }
}
