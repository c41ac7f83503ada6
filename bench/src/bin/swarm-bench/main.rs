//! `swarm-bench`: many agents on one relay (benchmark scenarios 5 and 6).
//!
//! ```text
//!  swarm-bench ──starts, kills, restarts──► mcp-relay serve --dev (its own process)
//!    │  N in-process agents on a few UDP sockets, real wire protocol:
//!    │  Hello/Welcome, Catalog, Ping/Pong, request streams, agent backoff
//!    └──► HTTPS POST /t/<name>/mcp to a sample of tunnels ("serving?")
//! ```
//!
//! - **Idle agents at scale** (per `--agents` size, fresh relay each): relay
//!   RSS before and with N connected agents (KiB per agent), relay and swarm
//!   CPU over `--idle-secs` of heartbeats and keep-alives.
//! - **Reconnect** (`--reconnect-agents`): N connected, the relay SIGKILLed
//!   and restarted on the same state dir and ports; time until every agent is
//!   welcomed again, and when their attempts came (100 ms histogram).
//!
//! Prints a summary on stderr and one JSON object on stdout (and to `--json`).
//! Every relay it starts is killed when it exits, also on error or Ctrl-C.

mod https;
mod procfs;
mod relay;
mod scenario;
mod spread;
mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use scenario::{IdleResult, ReconnectResult, Settings, progress};

/// The issue's target: relay memory per idle agent (KiB).
const TARGET_KIB_PER_AGENT: f64 = 50.0;
/// The issue's target: every agent back within this long of a restart (ms).
const TARGET_RECONNECT_MS: u64 = 5_000;

/// Idle agents at scale and reconnect after a relay restart, against a real relay.
#[derive(Debug, Parser)]
#[command(name = "swarm-bench", version, about)]
struct Cli {
    /// The mcp-relay binary [default: mcp-relay next to this program].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Swarm sizes for the idle scenario, comma-separated (fresh relay each).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    agents: Vec<usize>,
    /// Agents for the reconnect scenario (0: skip it).
    #[arg(long, default_value_t = 1000)]
    reconnect_agents: usize,
    /// QUIC client endpoints (UDP sockets) the swarm shares.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Seconds of the idle CPU window.
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Seconds to let things settle before memory readings.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,
    /// Handshakes in flight at once while a swarm first connects.
    #[arg(long, default_value_t = 64)]
    handshakes: usize,
    /// Tunnels checked with a real HTTP request after each (re)connect.
    #[arg(long, default_value_t = 20)]
    check: usize,
    /// Skip the agent's discovery request (`GET /.well-known/mcp-relay`) before each attempt.
    #[arg(long)]
    no_discovery: bool,
    /// Skip the agent's Catalog messages after Welcome.
    #[arg(long)]
    no_catalog: bool,
    /// Longest wait for a swarm to connect (s).
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Longest wait for the swarm to be back after the restart (s).
    #[arg(long, default_value_t = 60.0)]
    reconnect_timeout: f64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A short run: idle 1000 only, 3 s window, 1 s settle.
    #[arg(long)]
    quick: bool,
}

/// Everything measured.
#[derive(Debug, serde::Serialize)]
struct Report {
    idle: Vec<IdleResult>,
    reconnect: Option<ReconnectResult>,
    settings: serde_json::Value,
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.agents = vec![1000];
        cli.idle_secs = 3.0;
        cli.settle_secs = 1.0;
    }
    mcp_agent::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Dropping `run` (Ctrl-C, SIGTERM) drops the relays it owns, which kills them.
    rt.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            s = signal() => bail!("interrupted by {s}"),
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let relay_bin = match &cli.relay_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("mcp-relay"),
    };
    if !relay_bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p mcp-relay) or pass --relay-bin",
            relay_bin.display()
        );
    }
    let largest = cli
        .agents
        .iter()
        .copied()
        .chain([cli.reconnect_agents])
        .max()
        .unwrap_or(0);
    check_open_files(cli.reconnect_agents.max(cli.handshakes))?;
    let work = tempfile::Builder::new()
        .prefix("swarm-bench.")
        .tempdir()
        .context("creating a temp dir")?;
    let settings = Settings {
        relay_bin,
        work: work.path().to_owned(),
        max_agents: (largest * 2).max(20_000),
        endpoints: cli.endpoints.max(1),
        first_connects: cli.handshakes.max(1),
        discovery: !cli.no_discovery,
        catalog: !cli.no_catalog,
        settle: Duration::from_secs_f64(cli.settle_secs),
        idle: Duration::from_secs_f64(cli.idle_secs),
        check_sample: cli.check,
        connect_timeout: Duration::from_secs_f64(cli.connect_timeout),
        reconnect_timeout: Duration::from_secs_f64(cli.reconnect_timeout),
        ticks_per_sec: procfs::ticks_per_sec(),
    };
    progress(&format!(
        "relay {}; {} QUIC endpoints; discovery {}; catalog {}; state under {}",
        settings.relay_bin.display(),
        settings.endpoints,
        on_off(settings.discovery),
        on_off(settings.catalog),
        settings.work.display()
    ));
    let mut idle = Vec::new();
    for &n in &cli.agents {
        idle.push(
            scenario::idle(&settings, n)
                .await
                .with_context(|| format!("idle scenario, {n} agents"))?,
        );
    }
    let reconnect = if cli.reconnect_agents > 0 {
        Some(
            scenario::reconnect(&settings, cli.reconnect_agents)
                .await
                .with_context(|| format!("reconnect scenario, {} agents", cli.reconnect_agents))?,
        )
    } else {
        None
    };
    let report = Report {
        idle,
        reconnect,
        settings: serde_json::json!({
            "endpoints": settings.endpoints,
            "handshakes": settings.first_connects,
            "discovery": settings.discovery,
            "catalog": settings.catalog,
            "idle_secs": settings.idle.as_secs_f64(),
            "settle_secs": settings.settle.as_secs_f64(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    print_summary(&report);
    let json = serde_json::to_string(&report).context("serializing the report")?;
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}

/// The swarm needs a socket per agent only while it reconnects (discovery
/// over TCP); the relay inherits the same limit.
fn check_open_files(concurrent: usize) -> anyhow::Result<()> {
    let need = concurrent as u64 + 1024;
    match procfs::open_files_limit()? {
        Some(limit) if limit < need => bail!(
            "the open-files limit is {limit}; this run needs at least {need} (for this \
             process and the relay it starts): run `ulimit -n {need}` (or higher) first"
        ),
        _ => Ok(()),
    }
}

fn print_summary(r: &Report) {
    eprintln!();
    if !r.idle.is_empty() {
        eprintln!("Idle agents at scale (target: relay ≤ {TARGET_KIB_PER_AGENT} KiB per agent)");
        eprintln!(
            "  {:>11}  {:>9}  {:>10}  {:>26}  {:>15}  {:>9}  {:>9}  {:>4}",
            "agents",
            "connect",
            "relay CPU",
            "relay RSS MiB",
            "KiB/agent",
            "relay CPU",
            "swarm CPU",
            "lost"
        );
        eprintln!(
            "  {:>11}  {:>9}  {:>10}  {:>26}  {:>15}  {:>9}  {:>9}  {:>4}",
            "connected",
            "all (s)",
            "µs/conn",
            "base → connected → idled",
            "conn. / idled",
            "idle %",
            "idle %",
            "idle"
        );
        for i in &r.idle {
            let mib = |k: u64| k as f64 / 1024.0;
            let flag = |kib: f64| {
                if kib <= TARGET_KIB_PER_AGENT {
                    ' '
                } else {
                    '!'
                }
            };
            eprintln!(
                "  {:>11}  {:>9.2}  {:>10.0}  {:>6.1} → {:>7.1} → {:>7.1}  {:>6.1}{} {:>6.1}{}  {:>9.1}  {:>9.1}  {:>4}",
                if i.complete {
                    i.connected.to_string()
                } else {
                    format!("{}/{}", i.connected, i.agents)
                },
                i.connect_all_s,
                i.relay_cpu_us_per_connect,
                mib(i.relay_rss_baseline_kib),
                mib(i.relay_rss_kib),
                mib(i.relay_rss_after_idle_kib),
                i.relay_kib_per_agent,
                flag(i.relay_kib_per_agent),
                i.relay_kib_per_agent_after_idle,
                flag(i.relay_kib_per_agent_after_idle),
                i.relay_cpu_pct_idle,
                i.swarm_cpu_pct_idle,
                i.lost_during_idle,
            );
        }
        eprintln!(
            "  (CPU in % of one core over {:.0} s idle; \"!\": over the target)",
            r.idle[0].idle_secs
        );
        for i in r.idle.iter().filter(|i| !i.complete) {
            let steps: Vec<String> = i
                .connect_progress
                .iter()
                .map(|(t, n)| format!("{n}@{t:.0}s"))
                .collect();
            eprintln!(
                "  {}: only {} connected within the timeout; ramp-up: {}",
                i.agents,
                i.connected,
                steps.join(" ")
            );
        }
    }
    if let Some(c) = &r.reconnect {
        let met = if c.all_serving_ms <= TARGET_RECONNECT_MS {
            "met"
        } else {
            "MISSED"
        };
        eprintln!();
        eprintln!(
            "Reconnect: {} agents, relay SIGKILLed and restarted (target: all back within {} s: {met})",
            c.agents,
            TARGET_RECONNECT_MS / 1000
        );
        eprintln!(
            "  new relay listening after {} ms; all serving after {} ms (per agent p50 {} / p90 {} / max {} ms)",
            c.listening_ms, c.all_serving_ms, c.p50_ms, c.p90_ms, c.max_ms
        );
        eprintln!(
            "  loss noticed p50 {} / max {} ms; {} attempts, {} failed; at most {} attempts in one 100 ms; relay CPU {} ms",
            c.detect_p50_ms,
            c.detect_max_ms,
            c.attempts,
            c.failed_attempts,
            c.max_attempts_per_100ms,
            c.relay_cpu_ms_to_all
        );
        eprintln!("  attempts per 500 ms since the restart:");
        for line in spread::bars(&spread::coarsen(&c.histogram_100ms, 5), 500, 40) {
            eprintln!("    {line}");
        }
    }
    eprintln!();
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn signal() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term => "SIGTERM",
    }
}
