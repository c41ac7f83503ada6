//! `loadgen`: a closed-loop HTTP/1.1 load generator, plus a raw TCP ping-pong.
//!
//! `loadgen --url URL --concurrency N --duration S` opens N keep-alive
//! connections (one per worker, like wrk), sends one small JSON-RPC POST per
//! worker at a time for a warm-up and then the measured window, and prints
//! one JSON line: `{"rps", "p50_us", "p90_us", "p99_us", "max_us", "errors",
//! "requests"}`. `rps` counts 2xx responses only; non-2xx answers and broken
//! connections are `errors`. For `https` URLs pass `--ca FILE`; TLS is rustls
//! with the aws-lc-rs provider.
//!
//! `loadgen --tcp-rtt` measures the same way over a raw loopback TCP
//! ping-pong with an in-process echo server: the physical floor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use mcp_tunnel_bench::closed_loop::{Plan, Stop};
use mcp_tunnel_bench::loadgen::{self, Target};

/// Closed-loop HTTP/1.1 load generator printing one JSON line of results.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    /// URL to POST to, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long, required_unless_present = "tcp_rtt", conflicts_with = "tcp_rtt")]
    url: Option<String>,
    /// Instead of HTTP, ping-pong raw TCP over loopback (the physical reference).
    #[arg(long)]
    tcp_rtt: bool,
    /// Bulk transfer: each request asks the bench upstream for BYTES bytes of
    /// text (or, with --tcp-rtt, a raw loopback TCP transfer of BYTES) and the
    /// result line gains `mbps`.
    #[arg(long, value_name = "BYTES")]
    bulk: Option<u64>,
    /// Concurrent workers, one connection each.
    #[arg(long, short, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, short, default_value_t = 10.0, conflicts_with = "requests")]
    duration: f64,
    /// Stop after this many measured requests instead of after --duration.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Seconds of unmeasured load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// CA certificate (PEM) to trust for https URLs.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Runtime worker threads for the generator itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The one crypto provider of this workspace; an Err only means one is
    // already installed, which is what we want anyway.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if cli.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let plan = Plan {
        warmup: seconds(cli.warmup, "--warmup")?,
        stop: match cli.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::After(seconds(cli.duration, "--duration")?),
        },
    };
    let rt = runtime(cli.threads)?;
    if cli.bulk == Some(0) {
        bail!("--bulk must be at least 1 byte");
    }
    let summary = rt.block_on(async {
        if cli.tcp_rtt {
            return match cli.bulk {
                Some(bytes) => mcp_tunnel_bench::tcp_rtt::bulk(bytes, cli.concurrency, plan).await,
                None => mcp_tunnel_bench::tcp_rtt::run(cli.concurrency, plan).await,
            };
        }
        // clap guarantees --url when --tcp-rtt is absent.
        let url = cli.url.as_deref().context("--url is required")?;
        let mut target = Target::new(url, cli.ca.as_deref()).await?;
        if let Some(bytes) = cli.bulk {
            target = target.with_bulk(bytes);
        }
        let target = Arc::new(target);
        loadgen::probe(&target)
            .await
            .with_context(|| format!("probing {url}"))?;
        let mut summary = loadgen::run(target, cli.concurrency, plan).await?;
        if let Some(bytes) = cli.bulk {
            summary.mbps = Some(summary.rps * bytes as f64 / 1e6);
        }
        Ok(summary)
    })?;
    println!(
        "{}",
        serde_json::to_string(&summary).context("encoding the result")?
    );
    Ok(())
}

fn seconds(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("{flag} {v}: not a number of seconds"))
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
