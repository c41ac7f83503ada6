//! `bench-report`: turns the rounds `run.sh` recorded into the side-by-side
//! table (stdout) and the JSON report (`--out`). See `mcp_tunnel_bench::report`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mcp_tunnel_bench::report::{Machine, Report, Round, RunInfo};

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
    };
    let report = Report::build(&rounds, run, Machine::detect());
    print!("{}", report.table());
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&cli.out, json + "\n")
        .with_context(|| format!("writing {}", cli.out.display()))?;
    Ok(())
}
