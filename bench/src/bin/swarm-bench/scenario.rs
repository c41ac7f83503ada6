//! The two measurements: many idle agents held by one relay, and a relay
//! killed and restarted under a connected swarm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::seq::IndexedRandom;

use crate::https::Front;
use crate::procfs::{self, Pid};
use crate::relay::{Relay, RelayDir};
use crate::spread;
use crate::swarm::{Event, EventKind, Swarm, SwarmConfig, tunnel_name};

/// Width of the reconnect-attempt histogram buckets.
pub const BUCKET_MS: u64 = 100;

/// How often waits poll the swarm.
const POLL: Duration = Duration::from_millis(10);

/// Settings shared by both scenarios.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `mcp-relay` binary.
    pub relay_bin: PathBuf,
    /// Where relay state dirs go (a temp dir).
    pub work: PathBuf,
    /// `[limits] max_agents` for every relay.
    pub max_agents: usize,
    /// QUIC client endpoints of a swarm.
    pub endpoints: usize,
    /// First-connection handshakes in flight at once.
    pub first_connects: usize,
    /// Discovery before every attempt.
    pub discovery: bool,
    /// Catalogs after every Welcome.
    pub catalog: bool,
    /// Quiet time before RSS readings.
    pub settle: Duration,
    /// The idle CPU window.
    pub idle: Duration,
    /// Tunnels checked with a real HTTP request after each (re)connect.
    pub check_sample: usize,
    /// Longest wait for a swarm to connect.
    pub connect_timeout: Duration,
    /// Longest wait for a swarm to be back after the restart.
    pub reconnect_timeout: Duration,
    /// Clock ticks per second of `/proc` CPU times.
    pub ticks_per_sec: u64,
}

/// Scenario 5, for one swarm size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleResult {
    /// Agents asked for.
    pub agents: usize,
    /// Agents connected when measured (fewer than `agents` if the ramp-up
    /// ran out of time; the rest were stopped and the figures are over these).
    pub connected: usize,
    /// Every agent connected within the connect timeout.
    pub complete: bool,
    /// From starting the swarm until every agent was welcomed (or the timeout).
    pub connect_all_s: f64,
    /// `[seconds, agents connected]` every 5 s of the ramp-up.
    pub connect_progress: Vec<(f64, usize)>,
    /// Relay CPU spent while they connected, per agent (µs).
    pub relay_cpu_us_per_connect: f64,
    /// Relay RSS, started with no agent.
    pub relay_rss_baseline_kib: u64,
    /// Relay RSS with every agent connected, after settling.
    pub relay_rss_kib: u64,
    /// `(rss - baseline) / connected`.
    pub relay_kib_per_agent: f64,
    /// Relay RSS at the end of the idle window (idle blocking threads have
    /// exited by then, and the allocator has returned what it frees).
    pub relay_rss_after_idle_kib: u64,
    /// `(rss after idle - baseline) / connected`.
    pub relay_kib_per_agent_after_idle: f64,
    /// Relay CPU (% of one core) over the idle window.
    pub relay_cpu_pct_idle: f64,
    /// This process's CPU (% of one core) over the idle window.
    pub swarm_cpu_pct_idle: f64,
    /// This process's RSS at the end of the idle window.
    pub swarm_rss_kib: u64,
    /// The idle window (s).
    pub idle_secs: f64,
    /// Connections lost during the idle window (should be 0).
    pub lost_during_idle: usize,
    /// Tunnels that answered the HTTP check (out of the sample).
    pub http_checked: usize,
}

/// Scenario 6.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReconnectResult {
    /// Agents connected when the relay was killed.
    pub agents: usize,
    /// From spawning the new relay until it listened (`endpoints.json`).
    pub listening_ms: u64,
    /// From spawning the new relay until the last agent was welcomed.
    pub all_serving_ms: u64,
    /// Per agent, from spawning the new relay until its Welcome: median.
    pub p50_ms: u64,
    /// … 90th percentile.
    pub p90_ms: u64,
    /// … slowest.
    pub max_ms: u64,
    /// Per agent, from spawning the new relay until it noticed the loss: median.
    pub detect_p50_ms: u64,
    /// … slowest.
    pub detect_max_ms: u64,
    /// Connection attempts after the kill.
    pub attempts: usize,
    /// Of those, attempts that failed (then backed off).
    pub failed_attempts: usize,
    /// Largest number of attempts starting in one 100 ms bucket.
    pub max_attempts_per_100ms: u32,
    /// Attempts per 100 ms bucket from the new relay's spawn (earlier ones in bucket 0).
    pub histogram_100ms: Vec<u32>,
    /// Relay CPU from spawn until every agent was back (ms).
    pub relay_cpu_ms_to_all: u64,
    /// Tunnels that answered the HTTP check after the restart.
    pub http_checked: usize,
}

/// A relay of its own in `s.work/NAME`, an agent token for it and an HTTPS
/// client of its front.
async fn fresh_relay(s: &Settings, name: &str) -> anyhow::Result<(RelayDir, Relay, String, Front)> {
    let dir = RelayDir::create(&s.work.join(name), s.max_agents)?;
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let relay = Relay::start(&s.relay_bin, &dir, any, any).await?;
    let token = dir.create_token(&s.relay_bin)?;
    let front = Front::new(
        &relay.endpoints.public_url,
        relay.endpoints.https,
        &dir.ca(),
    )?;
    Ok((dir, relay, token, front))
}

/// Scenario 5 for `agents` agents, on a fresh relay.
pub async fn idle(s: &Settings, agents: usize) -> anyhow::Result<IdleResult> {
    let (dir, mut relay, token, front) = fresh_relay(s, &format!("idle-{agents}")).await?;
    tokio::time::sleep(s.settle).await;
    let relay_pid = Pid::Other(relay.pid);
    let baseline = procfs::sample(relay_pid)?;

    progress(&format!("idle {agents}: connecting"));
    let swarm = Swarm::start(swarm_config(s, agents, &relay, &front, &dir, token))?;
    let ramp = wait_online(&swarm, agents, s.connect_timeout, &mut relay, &dir).await?;
    let connected_cpu = procfs::sample(relay_pid)?;
    if !ramp.complete {
        swarm.stop_connecting();
        progress(&format!(
            "idle {agents}: only {} connected within {:.0} s; stopped the others, measuring those",
            ramp.online,
            s.connect_timeout.as_secs_f64()
        ));
    } else {
        progress(&format!(
            "idle {agents}: all connected in {:.2} s; settling, then {:.0} s idle",
            ramp.elapsed.as_secs_f64(),
            s.idle.as_secs_f64()
        ));
    }
    tokio::time::sleep(s.settle).await;
    let connected = swarm.online();
    let http_checked = check_serving(&front, &swarm.online_agents(), s.check_sample).await?;
    let settled = procfs::sample(relay_pid)?;

    let lost_before = count(&swarm.events(), EventKind::Lost);
    let (r0, m0) = (procfs::sample(relay_pid)?, procfs::sample(Pid::Me)?);
    tokio::time::sleep(s.idle).await;
    let (r1, m1) = (procfs::sample(relay_pid)?, procfs::sample(Pid::Me)?);
    let lost_during_idle = count(&swarm.events(), EventKind::Lost) - lost_before;
    let online = swarm.online();
    swarm.shutdown().await;
    relay.kill();
    if online != connected {
        bail!("only {online} of {connected} agents were still connected after the idle window");
    }
    let per_agent = |rss: u64| {
        round(
            rss.saturating_sub(baseline.rss_kib) as f64 / connected.max(1) as f64,
            2,
        )
    };
    Ok(IdleResult {
        agents,
        connected,
        complete: ramp.complete,
        connect_all_s: round(ramp.elapsed.as_secs_f64(), 3),
        connect_progress: ramp.progress,
        relay_cpu_us_per_connect: round(
            procfs::cpu_ms(&baseline, &connected_cpu, s.ticks_per_sec) as f64 * 1000.0
                / ramp.online.max(1) as f64,
            1,
        ),
        relay_rss_baseline_kib: baseline.rss_kib,
        relay_rss_kib: settled.rss_kib,
        relay_kib_per_agent: per_agent(settled.rss_kib),
        relay_rss_after_idle_kib: r1.rss_kib,
        relay_kib_per_agent_after_idle: per_agent(r1.rss_kib),
        relay_cpu_pct_idle: round(procfs::cpu_percent(&r0, &r1, s.ticks_per_sec), 2),
        swarm_cpu_pct_idle: round(procfs::cpu_percent(&m0, &m1, s.ticks_per_sec), 2),
        swarm_rss_kib: m1.rss_kib,
        idle_secs: round(r1.at.duration_since(r0.at).as_secs_f64(), 3),
        lost_during_idle,
        http_checked,
    })
}

/// Scenario 6: `agents` connected, relay SIGKILLed and restarted on the same
/// state dir and ports; how long until every agent serves again.
pub async fn reconnect(s: &Settings, agents: usize) -> anyhow::Result<ReconnectResult> {
    let (dir, mut relay, token, front) = fresh_relay(s, &format!("reconnect-{agents}")).await?;
    progress(&format!("reconnect {agents}: connecting"));
    let swarm = Swarm::start(swarm_config(s, agents, &relay, &front, &dir, token))?;
    let ramp = wait_online(&swarm, agents, s.connect_timeout, &mut relay, &dir).await?;
    if !ramp.complete {
        bail!(
            "only {} of {agents} agents connected within {:?} (last failure: {})",
            ramp.online,
            s.connect_timeout,
            swarm.last_failure().unwrap_or_else(|| "none".into())
        );
    }
    check_serving(&front, &swarm.online_agents(), s.check_sample).await?;
    // Heartbeats and keep-alives in their steady rhythm before the crash.
    tokio::time::sleep(s.settle).await;

    let (https, quic) = (relay.endpoints.https, relay.endpoints.quic);
    progress(&format!(
        "reconnect {agents}: killing the relay (SIGKILL), restarting it on {quic} / {https}"
    ));
    let killed = Instant::now();
    relay.kill();
    drop(relay);
    let mut relay = Relay::start(&s.relay_bin, &dir, https, quic)
        .await
        .context("restarting the relay")?;
    let t0 = relay.spawned;
    let deadline = t0 + s.reconnect_timeout;
    let events = loop {
        let events = swarm.events();
        let back = welcomed_since(&events, killed);
        if back >= agents {
            break events;
        }
        if let Some(why) = swarm.fatal() {
            bail!("an agent was refused after the restart: {why}");
        }
        if !relay.is_running() {
            bail!(
                "the restarted relay exited; its log ends:\n{}",
                dir.log_tail(20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "only {back} of {agents} agents were back {:?} after the restart (last failure: {})",
                s.reconnect_timeout,
                swarm.last_failure().unwrap_or_else(|| "none".into())
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let relay_cpu = procfs::sample(Pid::Other(relay.pid))?;
    let http_checked = check_serving(&front, &swarm.online_agents(), s.check_sample)
        .await
        .context("after the restart")?;
    swarm.shutdown().await;
    relay.kill();

    let a = analyze(&events, killed, t0);
    let pct = |v: &[u64], p| spread::percentile(v, p).unwrap_or(0);
    let histogram = spread::histogram(&a.attempt_offsets_ms, BUCKET_MS);
    Ok(ReconnectResult {
        agents,
        listening_ms: relay.listening.duration_since(t0).as_millis() as u64,
        all_serving_ms: pct(&a.welcome_ms, 100.0),
        p50_ms: pct(&a.welcome_ms, 50.0),
        p90_ms: pct(&a.welcome_ms, 90.0),
        max_ms: pct(&a.welcome_ms, 100.0),
        detect_p50_ms: pct(&a.lost_ms, 50.0),
        detect_max_ms: pct(&a.lost_ms, 100.0),
        attempts: a.attempt_offsets_ms.len(),
        failed_attempts: a.failed,
        max_attempts_per_100ms: histogram.iter().copied().max().unwrap_or(0),
        histogram_100ms: histogram,
        relay_cpu_ms_to_all: relay_cpu.cpu_ticks * 1000 / s.ticks_per_sec.max(1),
        http_checked,
    })
}

/// The reconnect events, relative to the new relay's spawn (`t0`).
#[derive(Debug, Default, PartialEq)]
struct Analysis {
    /// Start of every attempt after the kill (ms; negative: before `t0`).
    attempt_offsets_ms: Vec<i64>,
    /// Failed attempts after the kill.
    failed: usize,
    /// Per agent: its first Welcome after the kill (ms after `t0`), sorted.
    welcome_ms: Vec<u64>,
    /// Per agent: when it first noticed the loss (ms after `t0`), sorted.
    lost_ms: Vec<u64>,
}

fn analyze(events: &[Event], killed: Instant, t0: Instant) -> Analysis {
    let offset = |at: Instant| -> i64 {
        if at >= t0 {
            at.duration_since(t0).as_millis() as i64
        } else {
            -(t0.duration_since(at).as_millis() as i64)
        }
    };
    let mut a = Analysis::default();
    let mut welcome: HashMap<u32, u64> = HashMap::new();
    let mut lost: HashMap<u32, u64> = HashMap::new();
    for e in events.iter().filter(|e| e.at >= killed) {
        let after_t0 = offset(e.at).max(0) as u64;
        match e.kind {
            EventKind::Attempt => a.attempt_offsets_ms.push(offset(e.at)),
            EventKind::Failed => a.failed += 1,
            EventKind::Welcome => {
                welcome.entry(e.agent).or_insert(after_t0);
            }
            EventKind::Lost => {
                lost.entry(e.agent).or_insert(after_t0);
            }
        }
    }
    a.welcome_ms = welcome.into_values().collect();
    a.welcome_ms.sort_unstable();
    a.lost_ms = lost.into_values().collect();
    a.lost_ms.sort_unstable();
    a
}

/// How many distinct agents were welcomed at or after `since`.
fn welcomed_since(events: &[Event], since: Instant) -> usize {
    let mut agents: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::Welcome && e.at >= since)
        .map(|e| e.agent)
        .collect();
    agents.sort_unstable();
    agents.dedup();
    agents.len()
}

fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

fn swarm_config(
    s: &Settings,
    agents: usize,
    relay: &Relay,
    front: &Front,
    dir: &RelayDir,
    token: String,
) -> SwarmConfig {
    SwarmConfig {
        agents,
        endpoints: s.endpoints,
        first_connects: s.first_connects,
        quic: relay.endpoints.quic,
        front: front.clone(),
        discovery: s.discovery,
        catalog: s.catalog,
        ca: dir.ca(),
        token,
    }
}

/// How a swarm's first connections went.
#[derive(Debug)]
struct Ramp {
    /// Every agent connected.
    complete: bool,
    /// Agents connected at the end.
    online: usize,
    /// Until all connected, or the timeout.
    elapsed: Duration,
    /// `(seconds, connected)` every [`PROGRESS_EVERY`].
    progress: Vec<(f64, usize)>,
}

/// How often the ramp-up reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Waits until `agents` agents are connected, or `timeout`.
async fn wait_online(
    swarm: &Swarm,
    agents: usize,
    timeout: Duration,
    relay: &mut Relay,
    dir: &RelayDir,
) -> anyhow::Result<Ramp> {
    let started = Instant::now();
    let mut next_report = started + PROGRESS_EVERY;
    let mut progress_points = Vec::new();
    loop {
        let online = swarm.online();
        let elapsed = started.elapsed();
        if online >= agents || elapsed > timeout {
            progress_points.push((round(elapsed.as_secs_f64(), 2), online));
            return Ok(Ramp {
                complete: online >= agents,
                online,
                elapsed,
                progress: progress_points,
            });
        }
        if let Some(why) = swarm.fatal() {
            bail!("the relay refused an agent: {why}");
        }
        if !relay.is_running() {
            bail!("the relay exited; its log ends:\n{}", dir.log_tail(20));
        }
        if Instant::now() >= next_report {
            next_report += PROGRESS_EVERY;
            progress_points.push((round(elapsed.as_secs_f64(), 2), online));
            progress(&format!(
                "  {online}/{agents} connected after {:.0} s",
                elapsed.as_secs_f64()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends a real MCP POST through the relay's HTTPS front to `sample` random
/// tunnels of the connected `agents`; each must answer 200 from its own agent.
async fn check_serving(front: &Front, agents: &[usize], sample: usize) -> anyhow::Result<usize> {
    let picked: Vec<usize> = agents
        .choose_multiple(&mut rand::rng(), sample.min(agents.len()))
        .copied()
        .collect();
    for &i in &picked {
        let name = tunnel_name(i);
        let (status, body) = front
            .post_json(
                &format!("/t/{name}/mcp"),
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            )
            .await
            .with_context(|| format!("HTTP check of tunnel {name}"))?;
        let text = String::from_utf8_lossy(&body);
        if status != hyper::StatusCode::OK || !text.contains(&format!("\"tunnel\":\"{name}\"")) {
            bail!("HTTP check of tunnel {name}: {status} {text}");
        }
    }
    Ok(picked.len())
}

/// A progress line on stderr.
pub fn progress(line: &str) {
    eprintln!("==> {line}");
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t0: Instant, ms: i64, agent: u32, kind: EventKind) -> Event {
        let at = if ms >= 0 {
            t0 + Duration::from_millis(ms as u64)
        } else {
            t0 - Duration::from_millis((-ms) as u64)
        };
        Event { at, agent, kind }
    }

    #[test]
    fn analysis_keeps_each_agents_first_welcome_after_the_kill() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let killed = t0 - Duration::from_millis(50);
        let events = vec![
            // Before the kill: ignored.
            ev(t0, -5000, 0, EventKind::Attempt),
            ev(t0, -4990, 0, EventKind::Welcome),
            // After.
            ev(t0, 800, 0, EventKind::Lost),
            ev(t0, 900, 0, EventKind::Attempt),
            ev(t0, 950, 0, EventKind::Failed),
            ev(t0, 1300, 0, EventKind::Attempt),
            ev(t0, 1350, 0, EventKind::Welcome),
            ev(t0, -10, 1, EventKind::Lost),
            ev(t0, -5, 1, EventKind::Attempt),
            ev(t0, 400, 1, EventKind::Welcome),
            ev(t0, 5000, 1, EventKind::Welcome),
        ];
        let a = analyze(&events, killed, t0);
        assert_eq!(a.attempt_offsets_ms, vec![900, 1300, -5]);
        assert_eq!(a.failed, 1);
        assert_eq!(a.welcome_ms, vec![400, 1350]);
        assert_eq!(a.lost_ms, vec![0, 800]);
        assert_eq!(welcomed_since(&events, killed), 2);
        assert_eq!(welcomed_since(&events, t0 + Duration::from_secs(2)), 1);
    }
}
