//! Turns the per-round results of a run into medians, ratios, a table and
//! the JSON written to `bench/results/latest.json`.
//!
//! Contenders are run alternately (A B C A B C …), so slow drift on a shared
//! machine hits all of them alike; the median over rounds then drops the odd
//! round that a neighbour's burst of work spoiled.
//!
//! The request scenarios (`c1`, `c64`, `c256`, `bulk`) come as rounds; the
//! scenarios that run as one program each (`sse-bench`, `swarm-bench`,
//! `sqlite-bench`) come as their own JSON and are shown and judged here too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::summary::Summary;

/// Straight to the upstream.
pub const DIRECT: &str = "direct";
/// rathole 0.5, TCP transport.
pub const RATHOLE_TCP: &str = "rathole-tcp";
/// rathole 0.5, Noise transport (encrypted, like ours).
pub const RATHOLE_NOISE: &str = "rathole-noise";
/// bore.
pub const BORE: &str = "bore";
/// Our tunnel through the relay's plain-HTTP front, auth off.
pub const TUNNEL_HTTP: &str = "tunnel-http";
/// Our tunnel through the HTTPS front with OAuth bearer auth, Cedar policy
/// and the audit log on: what a production relay does per request.
pub const TUNNEL_AUTH: &str = "tunnel-https-auth";
/// Raw loopback TCP (the physical reference).
pub const TCP: &str = "tcp";

/// Contenders of the request scenarios in table order, with their column titles.
pub const CONTENDERS: [(&str, &str); 6] = [
    (DIRECT, "direct"),
    (RATHOLE_TCP, "rathole/tcp"),
    (RATHOLE_NOISE, "rathole/noise"),
    (BORE, "bore"),
    (TUNNEL_HTTP, "ours/http"),
    (TUNNEL_AUTH, "ours/https+auth"),
];

/// Concurrency 1: latency.
pub const C1: &str = "c1";
/// Concurrency 64: rate.
pub const C64: &str = "c64";
/// Concurrency 256: rate.
pub const C256: &str = "c256";
/// One large streamed response at a time.
pub const BULK: &str = "bulk";

/// One measurement: one contender in one scenario in one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// `c1`, `c64`, `c256` or `bulk`.
    pub scenario: String,
    /// One of [`CONTENDERS`] or [`TCP`].
    pub contender: String,
    /// 1-based round number.
    pub round: u32,
    /// What the run measured.
    pub result: Summary,
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, MiB.
    #[serde(default)]
    pub mem_mib: u64,
}

impl Machine {
    /// Reads the facts of this machine (best effort: unknowns are "unknown").
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mem_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(0, |kib| kib / 1024);
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
            mem_mib,
        }
    }
}

/// How the run was configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// `quick` or `full`.
    pub mode: String,
    /// Rounds per contender.
    pub rounds: u32,
    /// Measured seconds per round of the request-rate scenarios.
    pub duration_s: f64,
    /// Warm-up seconds per round (not measured).
    pub warmup_s: f64,
    /// Size of each bulk response, bytes.
    #[serde(default)]
    pub bulk_bytes: u64,
}

/// One contender in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contender {
    /// Per-field medians over the rounds.
    pub median: Summary,
    /// Every round, in order.
    pub rounds: Vec<Summary>,
}

/// One of the targets, judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What is aimed for, in words.
    pub goal: String,
    /// The measured figure, in the unit of `limit`.
    pub value: Option<f64>,
    /// The bound.
    pub limit: f64,
    /// `true` if `value` must be at least `limit`, `false` if at most.
    pub at_least: bool,
    /// How `value` was obtained.
    pub how: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub pass: Option<bool>,
}

impl Target {
    fn new(goal: &str, value: Option<f64>, limit: f64, at_least: bool, how: &str) -> Self {
        let value = value.filter(|v| v.is_finite());
        let pass = value.map(|v| if at_least { v >= limit } else { v <= limit });
        Self {
            goal: goal.into(),
            value,
            limit,
            at_least,
            how: how.into(),
            pass,
        }
    }
}

/// What a path adds to the direct one at concurrency 1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Added {
    /// Median p50 − direct's, µs.
    pub p50_us: f64,
    /// Median p99 − direct's, µs.
    pub p99_us: f64,
}

/// The results of the scenarios that run as programs of their own.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// See [`Report::sse`].
    pub sse: Option<Value>,
    /// See [`Report::swarm`].
    pub swarm: Option<Value>,
    /// See [`Report::sqlite`].
    pub sqlite: Option<Value>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub run: RunInfo,
    /// Scenario → contender → results.
    pub scenarios: BTreeMap<String, BTreeMap<String, Contender>>,
    /// Contender → median p50/p99 at c=1 minus direct's, µs.
    pub added_latency_us: BTreeMap<String, Added>,
    /// `sse-bench`'s results (`{"sse": [...]}`), if it ran.
    pub sse: Option<Value>,
    /// `swarm-bench`'s results (`{"idle": [...], "reconnect": {...}}`), if it ran.
    pub swarm: Option<Value>,
    /// `sqlite-bench`'s results, if it ran.
    pub sqlite: Option<Value>,
    /// The targets, judged.
    pub targets: Vec<Target>,
}

impl Report {
    /// Builds the report from every round of a run and the other programs' results.
    pub fn build(rounds: &[Round], run: RunInfo, machine: Machine, extras: Extras) -> Self {
        let mut scenarios: BTreeMap<String, BTreeMap<String, Contender>> = BTreeMap::new();
        for r in rounds {
            scenarios
                .entry(r.scenario.clone())
                .or_default()
                .entry(r.contender.clone())
                .or_insert_with(|| Contender {
                    median: r.result,
                    rounds: Vec::new(),
                })
                .rounds
                .push(r.result);
        }
        for contenders in scenarios.values_mut() {
            for c in contenders.values_mut() {
                c.median = median_summary(&c.rounds);
            }
        }
        let mut report = Self {
            machine,
            run,
            scenarios,
            added_latency_us: BTreeMap::new(),
            sse: extras.sse,
            swarm: extras.swarm,
            sqlite: extras.sqlite,
            targets: Vec::new(),
        };
        if let Some(d) = report.median(C1, DIRECT).copied() {
            for (name, _) in CONTENDERS.iter().skip(1) {
                if let Some(s) = report.median(C1, name) {
                    let added = Added {
                        p50_us: s.p50_us - d.p50_us,
                        p99_us: s.p99_us - d.p99_us,
                    };
                    report.added_latency_us.insert((*name).to_owned(), added);
                }
            }
        }
        report.targets = report.judge();
        report
    }

    /// The median of `contender` in `scenario`, if it was measured.
    pub fn median(&self, scenario: &str, contender: &str) -> Option<&Summary> {
        Some(&self.scenarios.get(scenario)?.get(contender)?.median)
    }

    fn judge(&self) -> Vec<Target> {
        let rps = |s: &str, c: &str| self.median(s, c).map(|m| m.rps);
        let added = |c: &str| self.added_latency_us.get(c).map(|a| a.p50_us);
        let idle = self
            .swarm
            .as_ref()
            .and_then(|s| s.get("idle"))
            .and_then(Value::as_array);
        let per_agent_kib = idle.and_then(|a| marginal_kib_per_agent(a));
        let sse_ok = self
            .sse
            .as_ref()
            .and_then(|s| s.get("sse"))
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .filter(|e| {
                        e.get("errors").and_then(Value::as_u64) == Some(0)
                            && e.get("deliver_all_ms").and_then(Value::as_f64).is_some()
                    })
                    .filter_map(|e| e.get("streams")?.as_f64())
                    .reduce(f64::max)
            });
        let back = self
            .swarm
            .as_ref()
            .and_then(|s| s.get("reconnect"))
            .and_then(|r| {
                let agents = r.get("agents")?.as_f64()?;
                let ms = r.get("all_serving_ms")?.as_f64()?;
                (agents >= 1000.0).then_some(ms / 1000.0)
            });
        let sqlite = self
            .sqlite
            .as_ref()
            .and_then(|s| s.get("ten_rows_calls_per_s")?.get("ratio")?.as_f64());
        vec![
            Target::new(
                "req/s at c=64 with auth + policy >= rathole-noise's",
                zip_ratio(rps(C64, TUNNEL_AUTH), rps(C64, RATHOLE_NOISE)),
                1.0,
                true,
                "ours/https+auth ÷ rathole/noise, c=64 req/s (x)",
            ),
            Target::new(
                "added p50 <= 2x rathole-noise's",
                zip_ratio(added(TUNNEL_AUTH), added(RATHOLE_NOISE)),
                2.0,
                false,
                "ours/https+auth added p50 ÷ rathole/noise added p50, c=1 (x)",
            ),
            Target::new(
                "bulk >= 1 Gbit/s",
                self.median(BULK, TUNNEL_AUTH)
                    .and_then(|m| m.mbps)
                    .map(|mb| mb * 8.0 / 1000.0),
                1.0,
                true,
                "ours/https+auth, one stream of 64 MiB responses (Gbit/s)",
            ),
            Target::new(
                "relay memory <= 50 KiB per idle agent",
                per_agent_kib,
                50.0,
                false,
                "relay RSS slope between the smallest and largest size run, per agent (KiB)",
            ),
            Target::new(
                "10,000 SSE streams on one tunnel",
                sse_ok,
                10_000.0,
                true,
                "most streams held and delivered to with no error (streams)",
            ),
            Target::new(
                "1,000 agents back within 5 s of a relay restart",
                back,
                5.0,
                false,
                "new relay started -> every agent serving again (s)",
            ),
            Target::new(
                "SQLite tool >= 10x the reference server",
                sqlite,
                10.0,
                true,
                "10-row read_query calls/s, ours ÷ mcp-server-sqlite (x)",
            ),
        ]
    }

    /// The side-by-side table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let run = &self.run;
        let m = &self.machine;
        let _ = writeln!(
            out,
            "mcp-tunnel bench ({}): {} rounds x {} s (+{} s warm-up) per contender, contenders alternated, medians shown",
            run.mode, run.rounds, run.duration_s, run.warmup_s
        );
        let _ = writeln!(
            out,
            "machine: {} x {} | {} MiB | Linux {}",
            m.nproc, m.cpu_model, m.mem_mib, m.kernel
        );
        self.request_tables(&mut out);
        self.physical(&mut out);
        self.extras_table(&mut out);

        let _ = writeln!(out, "\ntargets");
        for t in &self.targets {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "not measured",
            };
            let value = t.value.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
            let bound = if t.at_least { ">=" } else { "<=" };
            let _ = writeln!(
                out,
                "  {:<52} {:>10} {bound} {:<7} {verdict:<12} {}",
                t.goal, value, t.limit, t.how
            );
        }
        out
    }

    fn request_tables(&self, out: &mut String) {
        let present: Vec<(&str, &str)> = CONTENDERS
            .iter()
            .copied()
            .filter(|(c, _)| self.scenarios.values().any(|s| s.contains_key(*c)))
            .collect();
        let header = |out: &mut String, title: &str| {
            let mut line = format!("\n{title:<30}");
            for (_, col) in &present {
                let _ = write!(line, "{col:>16}");
            }
            let _ = writeln!(out, "{line}");
        };
        let row = |out: &mut String, label: &str, cell: &dyn Fn(&str) -> Option<String>| {
            let mut line = format!("  {label:<28}");
            for (c, _) in &present {
                let _ = write!(line, "{:>16}", cell(c).unwrap_or_else(|| "-".into()));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        };
        let errors = |scenario: &str, c: &str| {
            let s = self.scenarios.get(scenario)?.get(c)?;
            Some(s.rounds.iter().map(|r| r.errors).sum::<u64>().to_string())
        };
        let noise_added = self
            .added_latency_us
            .get(RATHOLE_NOISE)
            .map(|a| a.p50_us)
            .filter(|n| *n > 0.0);

        if self.scenarios.contains_key(C1) {
            header(out, "c=1 (latency)");
            row(out, "p50 (µs)", &|c| Some(us(self.median(C1, c)?.p50_us)));
            row(out, "p99 (µs)", &|c| Some(us(self.median(C1, c)?.p99_us)));
            row(out, "added p50 (µs, vs direct)", &|c| {
                Some(us(self.added_latency_us.get(c)?.p50_us))
            });
            row(out, "added p50 ÷ rathole/noise's", &|c| {
                let a = self.added_latency_us.get(c)?.p50_us;
                Some(times(a / noise_added?))
            });
            row(out, "errors (all rounds)", &|c| errors(C1, c));
        }
        for (scenario, title) in [(C64, "c=64 (rate)"), (C256, "c=256 (rate)")] {
            if !self.scenarios.contains_key(scenario) {
                continue;
            }
            let med = |c: &str| self.median(scenario, c);
            header(out, title);
            row(out, "req/s", &|c| Some(rate(med(c)?.rps)));
            row(out, "÷ direct", &|c| {
                Some(times(med(c)?.rps / med(DIRECT)?.rps))
            });
            row(out, "÷ rathole/noise", &|c| {
                Some(times(med(c)?.rps / med(RATHOLE_NOISE)?.rps))
            });
            row(out, "p99 (µs)", &|c| Some(us(med(c)?.p99_us)));
            row(out, "errors (all rounds)", &|c| errors(scenario, c));
        }
        if self.scenarios.contains_key(BULK) {
            let mbps = |c: &str| self.median(BULK, c)?.mbps;
            header(
                out,
                &format!("bulk ({} MiB responses)", self.run.bulk_bytes >> 20),
            );
            row(out, "MB/s", &|c| Some(format!("{:.0}", mbps(c)?)));
            row(out, "Gbit/s", &|c| {
                Some(format!("{:.2}", mbps(c)? * 8.0 / 1000.0))
            });
            row(out, "÷ direct", &|c| Some(times(mbps(c)? / mbps(DIRECT)?)));
            row(out, "errors (all rounds)", &|c| errors(BULK, c));
        }
    }

    fn physical(&self, out: &mut String) {
        let t1 = self.median(C1, TCP);
        let t64 = self.median(C64, TCP);
        let tb = self.median(BULK, TCP).and_then(|s| s.mbps);
        if t1.is_none() && t64.is_none() && tb.is_none() {
            return;
        }
        let _ = writeln!(
            out,
            "\nphysical reference: raw loopback TCP on this machine"
        );
        if let Some(t) = t1 {
            let mut line = format!(
                "  round trip ({} B), c=1: p50 {} µs; in round trips:",
                crate::tcp_rtt::MESSAGE_SIZE,
                us(t.p50_us)
            );
            for (c, col) in CONTENDERS {
                if let Some(s) = self.median(C1, c) {
                    let _ = write!(line, " {col} {:.1}", ratio(s.p50_us, t.p50_us));
                }
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(t) = t64 {
            let _ = writeln!(out, "  round trips/s, c=64: {}", rate(t.rps));
        }
        if let Some(mb) = tb {
            let mut line = format!(
                "  bulk, one connection: {mb:.0} MB/s ({:.1} Gbit/s); fraction of it:",
                mb * 8.0 / 1000.0
            );
            for (c, col) in CONTENDERS {
                if let Some(s) = self.median(BULK, c).and_then(|s| s.mbps) {
                    let _ = write!(line, " {col} {:.2}", s / mb);
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }

    fn extras_table(&self, out: &mut String) {
        let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        let num = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
        };
        if let Some(list) = self
            .sse
            .as_ref()
            .and_then(|s| s.get("sse"))
            .and_then(Value::as_array)
        {
            let _ = writeln!(
                out,
                "\nSSE fan-out through one tunnel (ours/http)\n  {:>8} {:>10} {:>12} {:>10} {:>10} {:>13} {:>13} {:>7}",
                "streams",
                "open (s)",
                "deliver (ms)",
                "p50 (ms)",
                "p99 (ms)",
                "relay KiB/st",
                "agent KiB/st",
                "errors"
            );
            for e in list {
                let _ = writeln!(
                    out,
                    "  {:>8} {:>10} {:>12} {:>10} {:>10} {:>13} {:>13} {:>7}",
                    num(f(e, "streams"), 0),
                    num(f(e, "open_all_s"), 2),
                    num(f(e, "deliver_all_ms"), 1),
                    num(f(e, "deliver_p50_ms"), 1),
                    num(f(e, "deliver_p99_ms"), 1),
                    num(f(e, "relay_kib_per_stream"), 1),
                    num(f(e, "agent_kib_per_stream"), 1),
                    num(f(e, "errors"), 0),
                );
            }
        }
        if let Some(list) = self
            .swarm
            .as_ref()
            .and_then(|s| s.get("idle"))
            .and_then(Value::as_array)
        {
            let _ = writeln!(
                out,
                "\nidle agents held by one relay\n  {:>8} {:>12} {:>14} {:>14} {:>17}",
                "agents", "connect (s)", "relay RSS MiB", "KiB per agent", "relay CPU idle %"
            );
            for e in list {
                let _ = writeln!(
                    out,
                    "  {:>8} {:>12} {:>14} {:>14} {:>17}",
                    num(f(e, "agents"), 0),
                    num(f(e, "connect_all_s"), 2),
                    num(f(e, "relay_rss_kib").map(|k| k / 1024.0), 1),
                    num(f(e, "relay_kib_per_agent"), 1),
                    num(f(e, "relay_cpu_pct_idle"), 1),
                );
            }
        }
        if let Some(k) = self
            .swarm
            .as_ref()
            .and_then(|s| s.get("idle"))
            .and_then(Value::as_array)
            .filter(|a| a.len() > 1)
            .and_then(|a| marginal_kib_per_agent(a))
        {
            let _ = writeln!(
                out,
                "  each further agent: {k:.1} KiB (RSS slope between the sizes)"
            );
        }
        if let Some(r) = self.swarm.as_ref().and_then(|s| s.get("reconnect")) {
            let _ = writeln!(
                out,
                "\nrelay restart: {} agents serving again {} ms after the new relay started (p50 {} ms, p90 {} ms); {} connection attempts, at most {} in any 100 ms",
                num(f(r, "agents"), 0),
                num(f(r, "all_serving_ms"), 0),
                num(f(r, "p50_ms"), 0),
                num(f(r, "p90_ms"), 0),
                num(f(r, "attempts"), 0),
                num(f(r, "max_attempts_per_100ms"), 0),
            );
        }
        if let Some(s) = &self.sqlite {
            let _ = writeln!(
                out,
                "\n{:<44}{:>12}{:>20}{:>10}",
                "SQLite tool over stdio, same Rust client", "ours", "mcp-server-sqlite", "ratio"
            );
            if let Some(v) = s.get("ten_rows_calls_per_s") {
                let _ = writeln!(
                    out,
                    "  {:<42}{:>12}{:>20}{:>10}",
                    "10-row read_query (calls/s)",
                    num(f(v, "ours"), 0),
                    num(f(v, "reference"), 0),
                    f(v, "ratio").map_or_else(|| "-".into(), times)
                );
            }
            if let Some(v) = s.get("ten_thousand_rows_ms") {
                let _ = writeln!(
                    out,
                    "  {:<42}{:>12}{:>20}{:>10}",
                    "10,000-row read_query (ms)",
                    num(f(v, "ours"), 1),
                    num(f(v, "reference"), 1),
                    f(v, "speedup").map_or_else(|| "-".into(), times)
                );
            }
        }
    }
}

/// What one more idle agent costs the relay: the RSS slope between the
/// smallest and the largest size run (fixed start-up and runtime costs cancel
/// out); with one size, that size's growth over the baseline per agent.
pub fn marginal_kib_per_agent(idle: &[Value]) -> Option<f64> {
    let point = |e: &Value| {
        Some((
            e.get("agents")?.as_f64()?,
            e.get("relay_rss_kib")?.as_f64()?,
        ))
    };
    let points: Vec<(f64, f64)> = idle.iter().filter_map(point).collect();
    let lo = points
        .iter()
        .copied()
        .reduce(|a, b| if b.0 < a.0 { b } else { a });
    let hi = points
        .iter()
        .copied()
        .reduce(|a, b| if b.0 > a.0 { b } else { a });
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi.0 > lo.0 => Some((hi.1 - lo.1) / (hi.0 - lo.0)),
        _ => idle
            .iter()
            .filter_map(|e| e.get("relay_kib_per_agent")?.as_f64())
            .reduce(f64::max),
    }
}

/// Per-field medians of `rounds` (which must not be empty to mean anything;
/// an empty slice gives zeros).
pub fn median_summary(rounds: &[Summary]) -> Summary {
    let med = |f: fn(&Summary) -> f64| median(rounds.iter().map(f).collect());
    let mbps: Vec<f64> = rounds.iter().filter_map(|s| s.mbps).collect();
    Summary {
        rps: med(|s| s.rps),
        p50_us: med(|s| s.p50_us),
        p90_us: med(|s| s.p90_us),
        p99_us: med(|s| s.p99_us),
        max_us: med(|s| s.max_us),
        errors: med(|s| s.errors as f64).round() as u64,
        requests: med(|s| s.requests as f64).round() as u64,
        mbps: (!mbps.is_empty()).then(|| median(mbps)),
    }
}

/// The median; the mean of the middle two for an even count; 0 when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn zip_ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(ratio(a?, b?))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn us(v: f64) -> String {
    format!("{v:.1}")
}

fn rate(v: f64) -> String {
    // Thousands separators keep req/s columns readable.
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn times(v: f64) -> String {
    format!("{v:.2}x")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(rps: f64, p50: f64) -> Summary {
        Summary {
            rps,
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p50 * 2.0,
            max_us: p50 * 3.0,
            errors: 0,
            requests: rps as u64,
            mbps: None,
        }
    }

    fn round(scenario: &str, contender: &str, n: u32, s: Summary) -> Round {
        Round {
            scenario: scenario.into(),
            contender: contender.into(),
            round: n,
            result: s,
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            mode: "quick".into(),
            rounds: 3,
            duration_s: 3.0,
            warmup_s: 0.5,
            bulk_bytes: 64 << 20,
        }
    }

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            cpu_model: "test cpu".into(),
            kernel: "6.1".into(),
            mem_mib: 1024,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn thousands() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1000.0), "1,000");
    }

    #[test]
    fn judges_every_target_from_medians_and_extras() {
        let mut rounds = Vec::new();
        for n in 1..=3 {
            let jitter = f64::from(n);
            rounds.push(round(C1, DIRECT, n, summary(10_000.0, 20.0 + jitter)));
            rounds.push(round(C1, RATHOLE_NOISE, n, summary(5_000.0, 70.0 + jitter)));
            rounds.push(round(C1, TUNNEL_AUTH, n, summary(2_000.0, 150.0 + jitter)));
            rounds.push(round(C64, RATHOLE_NOISE, n, summary(30_000.0, 2000.0)));
            rounds.push(round(C64, TUNNEL_AUTH, n, summary(15_000.0, 4000.0)));
            let mut bulk = summary(10.0, 60_000.0);
            bulk.mbps = Some(600.0 + jitter);
            rounds.push(round(BULK, TUNNEL_AUTH, n, bulk));
        }
        // One spoiled round more is dropped by the median.
        rounds.push(round(C1, TUNNEL_AUTH, 4, summary(1.0, 99_999.0)));
        let extras = Extras {
            sse: Some(json!({"sse": [
                {"streams": 1000, "deliver_all_ms": 40.0, "errors": 0},
                {"streams": 10000, "deliver_all_ms": 400.0, "errors": 3}
            ]})),
            swarm: Some(json!({
                "idle": [{"agents": 1000, "relay_kib_per_agent": 130.0, "relay_rss_kib": 200000.0},
                         {"agents": 10000, "relay_kib_per_agent": 41.5, "relay_rss_kib": 605000.0}],
                "reconnect": {"agents": 1000, "all_serving_ms": 2500.0}
            })),
            sqlite: Some(
                json!({"ten_rows_calls_per_s": {"ours": 5000.0, "reference": 600.0, "ratio": 8.33}}),
            ),
        };
        let r = Report::build(&rounds, run(), machine(), extras);
        // Median of 151,152,153,99999 is 152.5; direct's is 22.
        let added = r.added_latency_us[TUNNEL_AUTH].p50_us;
        assert!((added - 130.5).abs() < 1e-9, "{added}");
        let by_goal = |prefix: &str| {
            r.targets
                .iter()
                .find(|t| t.goal.starts_with(prefix))
                .unwrap()
                .clone()
        };
        let t = by_goal("req/s at c=64");
        assert_eq!((t.value, t.pass), (Some(0.5), Some(false)));
        let t = by_goal("added p50");
        assert!((t.value.unwrap() - 130.5 / 50.0).abs() < 1e-9);
        assert_eq!(t.pass, Some(false));
        let t = by_goal("bulk");
        assert!((t.value.unwrap() - 602.0 * 8.0 / 1000.0).abs() < 1e-9);
        assert_eq!(t.pass, Some(true));
        // The slope: 405,000 KiB more for 9,000 agents more.
        assert_eq!(by_goal("relay memory").value, Some(45.0));
        assert_eq!(by_goal("relay memory").pass, Some(true));
        // 10,000 had errors: only 1,000 counts.
        assert_eq!(by_goal("10,000 SSE").value, Some(1000.0));
        assert_eq!(by_goal("10,000 SSE").pass, Some(false));
        assert_eq!(by_goal("1,000 agents").value, Some(2.5));
        assert_eq!(by_goal("1,000 agents").pass, Some(true));
        assert_eq!(by_goal("SQLite").pass, Some(false));

        let table = r.table();
        assert!(table.contains("rathole/noise"), "{table}");
        assert!(table.contains("MISS") && table.contains("PASS"), "{table}");
        // Columns only for contenders that ran.
        assert!(!table.contains("bore"), "{table}");
    }

    #[test]
    fn unmeasured_targets_say_so() {
        let r = Report::build(&[], run(), machine(), Extras::default());
        assert!(r.targets.iter().all(|t| t.pass.is_none()));
        assert!(r.table().contains("not measured"));
    }
}
