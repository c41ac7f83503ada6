//! `sqlite-bench`: the built-in SQLite tool (`mcp-agent serve --db`) against
//! the reference Python `mcp-server-sqlite`, both over stdio, driven by the
//! same Rust MCP client (rmcp), on the same database.
//!
//! Scenarios, each alternating the two servers A B A B … and reporting medians:
//! - `read_query` calls/s for a 10-row SELECT (sequential calls, one session);
//! - latency of a 10,000-row SELECT (our caps raised so all rows come back).
//!
//! Usage: sqlite-bench --agent PATH --reference PATH [--rounds N] [--seconds S] [--json FILE]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

/// Command-line options.
#[derive(Debug, Parser)]
struct Args {
    /// The `mcp-agent` binary.
    #[arg(long)]
    agent: PathBuf,
    /// The reference `mcp-server-sqlite` executable.
    #[arg(long)]
    reference: PathBuf,
    /// Rounds per scenario (each round runs both servers).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per calls/s measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

type Client = RunningService<RoleClient, ()>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender {
    Ours,
    Reference,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "mcp-agent serve --db (Rust)",
            Self::Reference => "mcp-server-sqlite (Python)",
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    make_db(&db)?;

    let ten = "SELECT id, name, email, city FROM people WHERE id <= 10 ORDER BY id";
    let many = "SELECT id, name, email, city FROM people ORDER BY id";
    let mut rate = [Vec::new(), Vec::new()];
    let mut big = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for (i, c) in [Contender::Ours, Contender::Reference]
            .into_iter()
            .enumerate()
        {
            let client = start(c, &args, &db).await?;
            // Warm up: first calls load the module / open connections.
            for _ in 0..20 {
                call(&client, ten, 10).await?;
            }
            let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
            let started = Instant::now();
            let mut n = 0u64;
            while Instant::now() < deadline {
                call(&client, ten, 10).await?;
                n += 1;
            }
            rate[i].push(n as f64 / started.elapsed().as_secs_f64());
            let t = Instant::now();
            call(&client, many, 10_000).await?;
            big[i].push(t.elapsed().as_secs_f64() * 1000.0);
            client.cancel().await.ok();
            eprintln!(
                "round {}: {:<28} {:>8.0} calls/s  {:>8.1} ms for 10,000 rows",
                round + 1,
                c.name(),
                rate[i].last().copied().unwrap_or_default(),
                big[i].last().copied().unwrap_or_default()
            );
        }
    }
    let (r0, r1) = (median(&mut rate[0]), median(&mut rate[1]));
    let (b0, b1) = (median(&mut big[0]), median(&mut big[1]));
    println!();
    println!(
        "SQLite tool over stdio, same Rust MCP client, medians of {} rounds",
        args.rounds
    );
    println!(
        "| scenario | {} | {} | ratio |",
        Contender::Ours.name(),
        Contender::Reference.name()
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| read_query, 10 rows (calls/s) | {r0:.0} | {r1:.0} | {:.1}x |",
        r0 / r1
    );
    println!(
        "| read_query, 10,000 rows (ms) | {b0:.1} | {b1:.1} | {:.1}x faster |",
        b1 / b0
    );
    if let Some(path) = args.json {
        let v = json!({
            "rounds": args.rounds,
            "ten_rows_calls_per_s": {"ours": r0, "reference": r1, "ratio": r0 / r1},
            "ten_thousand_rows_ms": {"ours": b0, "reference": b1, "speedup": b1 / b0},
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn start(c: Contender, args: &Args, db: &Path) -> anyhow::Result<Client> {
    let mut cmd = match c {
        Contender::Ours => {
            let mut cmd = tokio::process::Command::new(&args.agent);
            cmd.arg("serve").arg("--db").arg(db).args([
                "--max-rows",
                "20000",
                "--max-bytes",
                "67108864",
            ]);
            cmd
        }
        Contender::Reference => {
            let mut cmd = tokio::process::Command::new(&args.reference);
            cmd.arg("--db-path").arg(db);
            cmd
        }
    };
    cmd.stderr(std::process::Stdio::null());
    let transport =
        TokioChildProcess::new(cmd).with_context(|| format!("starting {}", c.name()))?;
    ().serve(transport)
        .await
        .with_context(|| format!("initializing {}", c.name()))
}

async fn call(client: &Client, query: &str, expect_rows: usize) -> anyhow::Result<()> {
    let args = json!({ "query": query });
    let serde_json::Value::Object(args) = args else {
        anyhow::bail!("arguments are an object");
    };
    let r = client
        .call_tool(CallToolRequestParams::new("read_query").with_arguments(args))
        .await?;
    anyhow::ensure!(r.is_error != Some(true), "read_query failed: {r:?}");
    // Both servers must really return every row: count them in whichever form they use.
    let rows = match &r.structured_content {
        Some(s) => s["rows"].as_array().map(|a| a.len()).unwrap_or(0),
        None => {
            let text = r
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|t| t.text.clone())
                .unwrap_or_default();
            text.matches("'id':")
                .count()
                .max(text.matches("\"id\":").count())
        }
    };
    anyhow::ensure!(
        rows == expect_rows,
        "expected {expect_rows} rows, got {rows}"
    );
    Ok(())
}

fn make_db(path: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, city TEXT);",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut st =
            tx.prepare("INSERT INTO people (id, name, email, city) VALUES (?1, ?2, ?3, ?4)")?;
        for i in 1..=10_000i64 {
            st.execute(rusqlite::params![
                i,
                format!("Person {i}"),
                format!("p{i}@example.com"),
                format!("City {}", i % 97)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}
