//! `bench-report`: turns the rounds `run.sh` recorded into the side-by-side
//! table (stdout) and the JSON report (`--out`). See `mcp_tunnel_bench::report`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mcp_tunnel_bench::report::{Extras, Machine, Report, Round, RunInfo};

/// Prints the benchmark table and writes the JSON report.
#[derive(Debug, Parser)]
#[command(name = "bench-report", version, about)]
struct Cli {
    /// JSON-lines file, one `{"scenario","contender","round","result"}` per line.
    #[arg(long)]
    rounds: PathBuf,
    /// Where to write the JSON report.
    #[arg(long)]
    out: PathBuf,
    /// `quick` or `full`, recorded in the report.
    #[arg(long)]
    mode: String,
    /// Rounds per contender.
    #[arg(long)]
    rounds_per_contender: u32,
    /// Measured seconds per round.
    #[arg(long)]
    duration: f64,
    /// Warm-up seconds per round.
    #[arg(long)]
    warmup: f64,
    /// Size of each bulk response, bytes.
    #[arg(long, default_value_t = 0)]
    bulk_bytes: u64,
    /// `sse-bench --json` output, if that scenario ran.
    #[arg(long)]
    sse: Option<PathBuf>,
    /// `swarm-bench --json` output, if those scenarios ran.
    #[arg(long)]
    swarm: Option<PathBuf>,
    /// `sqlite-bench --json` output, if that scenario ran.
    #[arg(long)]
    sqlite: Option<PathBuf>,
}

/// Reads one program's JSON results; a missing or broken file is reported
/// and leaves that scenario out (the rest of the report still stands).
fn extra(path: Option<&PathBuf>) -> Option<serde_json::Value> {
    let path = path?;
    let read = std::fs::read_to_string(path)
        .map_err(anyhow::Error::from)
        .and_then(|t| serde_json::from_str(&t).map_err(anyhow::Error::from));
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("bench-report: leaving out {}: {e}", path.display());
            None
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.rounds)
        .with_context(|| format!("reading {}", cli.rounds.display()))?;
    let rounds = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<Round>(l)
                .with_context(|| format!("{} line {}: {l}", cli.rounds.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run = RunInfo {
        mode: cli.mode,
        rounds: cli.rounds_per_contender,
        duration_s: cli.duration,
        warmup_s: cli.warmup,
        bulk_bytes: cli.bulk_bytes,
    };
    let extras = Extras {
        sse: extra(cli.sse.as_ref()),
        swarm: extra(cli.swarm.as_ref()),
        sqlite: extra(cli.sqlite.as_ref()),
    };
    let report = Report::build(&rounds, run, Machine::detect(), extras);
    print!("{}", report.table());
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&cli.out, json + "\n")
        .with_context(|| format!("writing {}", cli.out.display()))?;
    Ok(())
}
