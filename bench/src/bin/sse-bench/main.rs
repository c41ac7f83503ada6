//! `sse-bench`: SSE fan-out through one tunnel.
//!
//! For each stream count N (`--streams 1000,10000`) it starts a fresh dev
//! relay and one agent (so every baseline is clean), opens N long-lived
//! `GET /t/bench/mcp` SSE streams through the relay's plain-HTTP front — one
//! HTTP/1.1 connection each, as N separate MCP clients would — and checks
//! they all reached the upstream. It then reads the relay's and the agent's
//! RSS (against a baseline taken before the streams), has the upstream write
//! one event to every stream and times its delivery to all of them (and
//! p50/p99 per stream), sends a few more events, closes every stream and
//! times until the upstream holds none.
//!
//! The upstream (`upstream.rs`) runs in a child process, `sse-bench
//! --serve-upstream`: client and upstream sockets then count against two
//! processes' `RLIMIT_NOFILE`, N each, instead of 2N in one (20,000 for
//! N = 10,000 would hit the usual hard limit). Every process holds about N
//! sockets, so the soft limit is checked against N at start.
//!
//! Prints a summary on stderr and one JSON object, `{"sse": [...]}`, on
//! stdout (and to `--json FILE`).

mod clients;
mod measure;
mod stack;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use crate::clients::Streams;
use crate::measure::{SizeResult, ns_to_ms, open_files_limits, percentile};
use crate::stack::{Stack, StackConfig, TUNNEL, cpu_ns};
use crate::upstream::UpstreamChild;

/// File descriptors every process needs besides one per stream.
const FD_HEADROOM: u64 = 512;
/// Longest time all N streams may take to open.
const OPEN_ALL_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for the upstream to hold (or drop) every stream.
const UPSTREAM_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for one event to reach every stream.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time before reading RSS (lets in-flight work and allocator settle).
const SETTLE: Duration = Duration::from_millis(1000);
/// Pause between events.
const EVENT_GAP: Duration = Duration::from_millis(200);

/// SSE fan-out through one tunnel: relay and agent memory per stream, time
/// to deliver one event to every stream.
#[derive(Debug, Parser)]
#[command(name = "sse-bench", version)]
struct Cli {
    /// The mcp-relay binary [default: next to this one].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// The mcp-agent binary [default: next to this one].
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Stream counts to measure, in order, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    streams: Vec<usize>,
    /// Also write the JSON result to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Streams connecting at once while opening.
    #[arg(long, default_value_t = 256)]
    open_concurrency: usize,
    /// Events broadcast per stream count (the first is the headline figure).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    events: u64,
    /// The relay's max_streams_per_tunnel [default: the largest count + 1000].
    #[arg(long)]
    relay_max_streams: Option<u32>,
    /// The agent's --max-streams.
    #[arg(long, default_value_t = 20_000)]
    agent_max_streams: u32,
    /// Use one relay and agent for every count instead of a fresh pair each
    /// (shows whether memory comes back between counts).
    #[arg(long)]
    one_stack: bool,
    /// Run as the SSE upstream (internal: the parent starts it).
    #[arg(long, hide = true)]
    serve_upstream: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.serve_upstream {
        return upstream::serve_child().await;
    }
    let started = Instant::now();
    let results = run(&cli).await?;
    let json = serde_json::json!({ "sse": results });
    println!("{json}");
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{json:#}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("sse-bench done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn run(cli: &Cli) -> anyhow::Result<Vec<SizeResult>> {
    let Some(&largest) = cli.streams.iter().max() else {
        bail!("--streams needs at least one count");
    };
    if cli.streams.contains(&0) {
        bail!("--streams: every count must be at least 1");
    }
    check_fd_limit(largest as u64)?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let sibling = |name: &str| exe.with_file_name(name);
    let relay_bin = cli
        .relay_bin
        .clone()
        .unwrap_or_else(|| sibling("mcp-relay"));
    let agent_bin = cli
        .agent_bin
        .clone()
        .unwrap_or_else(|| sibling("mcp-agent"));
    for b in [&relay_bin, &agent_bin] {
        if !b.is_file() {
            bail!(
                "{} not found: build it (cargo build --release -p mcp-relay -p mcp-agent) or pass --relay-bin/--agent-bin",
                b.display()
            );
        }
    }
    let relay_max_streams = match cli.relay_max_streams {
        Some(n) => n,
        None => u32::try_from(largest + 1000).context("--streams count too large")?,
    };
    if (cli.agent_max_streams as usize) < largest || (relay_max_streams as usize) < largest {
        eprintln!(
            "note: the relay allows {relay_max_streams} and the agent {} streams per tunnel, fewer than {largest}: expect refusals or stalls",
            cli.agent_max_streams
        );
    }
    let mut upstream = UpstreamChild::start(&exe).await?;
    let cfg = StackConfig {
        relay_bin,
        agent_bin,
        upstream_port: upstream.port,
        relay_max_streams,
        agent_max_streams: cli.agent_max_streams,
    };
    let mut results = Vec::new();
    let mut shared = None;
    for &n in &cli.streams {
        let mut fresh = None;
        if shared.is_some() {
            eprintln!("==> {n} streams: on the same relay and agent");
        } else {
            eprintln!("==> {n} streams: starting a relay and an agent");
            let s = Stack::start(&cfg).await?;
            if cli.one_stack {
                shared = Some(s);
            } else {
                fresh = Some(s);
            }
        }
        let Some(stack) = fresh.as_mut().or(shared.as_mut()) else {
            bail!("no relay and agent to measure with");
        };
        let r = measure(n, cli, stack, &mut upstream)
            .await
            .map_err(|e| e.context(format!("{n} streams\n{}", stack.log_tail())))?;
        eprintln!("{}\n", r.summary());
        results.push(r);
    }
    Ok(results)
}

/// One stream count on a fresh stack.
async fn measure(
    n: usize,
    cli: &Cli,
    stack: &mut Stack,
    upstream: &mut UpstreamChild,
) -> anyhow::Result<SizeResult> {
    let mut r = SizeResult {
        streams: n,
        ..Default::default()
    };
    wait_upstream(upstream, |open| open == 0, "hold no streams from before").await?;
    tokio::time::sleep(SETTLE).await;
    (r.relay_rss_baseline_kib, r.agent_rss_baseline_kib) = stack.rss_kib()?;

    let t = Instant::now();
    let path = format!("/t/{TUNNEL}/mcp");
    let mut streams = Streams::start(stack.relay_http, &path, n, cli.open_concurrency);
    streams.wait_opened(n, OPEN_ALL_TIMEOUT).await?;
    r.open_all_s = round3(t.elapsed().as_secs_f64());
    r.opened = streams.alive;
    eprintln!(
        "    opened {} of {n} in {:.2} s ({} failed{})",
        streams.alive,
        r.open_all_s,
        streams.errors,
        match streams.error_samples.first() {
            Some(e) => format!("; first: {e}"),
            None => String::new(),
        }
    );
    if streams.alive == 0 {
        bail!(
            "no stream opened; first errors: {:?}",
            streams.error_samples
        );
    }
    let alive = streams.alive as u64;
    r.upstream_streams =
        wait_upstream(upstream, |open| open >= alive, "hold every opened stream").await?;
    tokio::time::sleep(SETTLE).await;
    stack.check_alive()?;
    (r.relay_rss_kib, r.agent_rss_kib) = stack.rss_kib()?;
    r.derive_per_stream();

    let mut missing = 0;
    let pids = [
        stack.relay_pid()?,
        stack.agent_pid()?,
        upstream.pid()?,
        std::process::id(),
    ];
    for seq in 1..=cli.events {
        let before = pids.map(cpu_ns);
        let (sent, _) = upstream.broadcast(seq).await?;
        let d = streams.wait_delivered(seq, DELIVER_TIMEOUT).await;
        let mut used = [0.0; 4];
        for (i, (pid, before)) in pids.iter().zip(before).enumerate() {
            used[i] = ns_to_ms(cpu_ns(*pid)?.saturating_sub(before?));
        }
        r.relay_cpu_ms_each.push(used[0]);
        r.agent_cpu_ms_each.push(used[1]);
        r.upstream_cpu_ms_each.push(used[2]);
        r.client_cpu_ms_each.push(used[3]);
        missing += d.missing;
        let mut lat = d.latencies_ns;
        lat.sort_unstable();
        let all = ns_to_ms(lat.last().copied().unwrap_or(0));
        r.deliver_all_ms_each.push(all);
        eprintln!(
            "    event {seq}: queued on {sent} streams, delivered to {} in {all:.1} ms ({} missing)",
            lat.len(),
            d.missing
        );
        if seq == 1 {
            r.deliver_all_ms = all;
            r.deliver_p50_ms = ns_to_ms(percentile(&lat, 50.0));
            r.deliver_p99_ms = ns_to_ms(percentile(&lat, 99.0));
        }
        tokio::time::sleep(EVENT_GAP).await;
    }

    let t = Instant::now();
    let errors = streams.errors;
    streams.close().await;
    wait_upstream(upstream, |open| open == 0, "see every stream closed").await?;
    r.close_all_s = round3(t.elapsed().as_secs_f64());
    tokio::time::sleep(SETTLE).await;
    (r.relay_rss_after_close_kib, r.agent_rss_after_close_kib) = stack.rss_kib()?;
    r.errors = errors + missing;
    Ok(r)
}

/// Polls the upstream's open-stream count until `done` holds; returns it.
async fn wait_upstream(
    upstream: &mut UpstreamChild,
    done: impl Fn(u64) -> bool,
    what: &str,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + UPSTREAM_WAIT;
    loop {
        let open = upstream.open().await?;
        if done(open) {
            return Ok(open);
        }
        if Instant::now() > deadline {
            bail!("the upstream did not {what} within {UPSTREAM_WAIT:?} (it holds {open} streams)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every process here (this one, the upstream child, the relay, the agent)
/// holds about one socket per stream; they all inherit this soft limit.
fn check_fd_limit(streams: u64) -> anyhow::Result<()> {
    let path = Path::new("/proc/self/limits");
    let text = std::fs::read_to_string(path).context("reading /proc/self/limits")?;
    let (soft, hard) =
        open_files_limits(&text).context("no \"Max open files\" in /proc/self/limits")?;
    let need = streams + FD_HEADROOM;
    if soft.is_some_and(|s| s < need) {
        let fmt = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        bail!(
            "{streams} streams need {need} open files per process (one socket per stream in each of sse-bench, its upstream, the relay and the agent), but RLIMIT_NOFILE is {} (hard {}): run `ulimit -n {need}` first{}",
            fmt(soft),
            fmt(hard),
            if hard.is_some_and(|h| h < need) {
                " (the hard limit must be raised too, as root)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
