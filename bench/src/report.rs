//! Turns the per-round results of a run into medians, ratios, a table and
//! the JSON written to `bench/results/latest.json`.
//!
//! Contenders are run alternately (A B C A B C …), so slow drift on a shared
//! machine hits all of them alike; the median over rounds then drops the odd
//! round that a neighbour's burst of work spoiled.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::summary::Summary;

/// Target for added median latency over the plain-HTTP front, in µs.
pub const TARGET_ADDED_P50_US: f64 = 150.0;
/// Target throughput at concurrency 64 over the plain-HTTP front, in req/s.
pub const TARGET_RPS_C64: f64 = 30_000.0;
/// The figure the targets were set from.
pub const REFERENCE: &str =
    "rathole 0.5 + Noise on this machine: ~33,000 req/s at c=64, added p50 ~50 µs";

/// Contender names as `run.sh` records them, in table order.
pub const DIRECT: &str = "direct";
/// Through the tunnel via the relay's plain-HTTP front.
pub const TUNNEL_HTTP: &str = "http";
/// Through the tunnel via the relay's HTTPS front.
pub const TUNNEL_HTTPS: &str = "https";
/// Raw loopback TCP ping-pong.
pub const TCP: &str = "tcp";
/// Scenario names as `run.sh` records them.
pub const LATENCY: &str = "c1";
/// The throughput scenario.
pub const THROUGHPUT: &str = "c64";

/// One measurement: one contender in one scenario in one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// `c1` or `c64`.
    pub scenario: String,
    /// `direct`, `http`, `https` or `tcp`.
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
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
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
    /// Measured seconds per round.
    pub duration_s: f64,
    /// Warm-up seconds per round (not measured).
    pub warmup_s: f64,
}

/// One contender in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contender {
    /// Per-field medians over the rounds.
    pub median: Summary,
    /// Every round, in order.
    pub rounds: Vec<Summary>,
}

/// Tunnel-vs-direct figures for one front, from the medians.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Comparison {
    /// Tunnel p50 − direct p50 at concurrency 1, µs.
    pub added_p50_us: f64,
    /// Tunnel p99 − direct p99 at concurrency 1, µs.
    pub added_p99_us: f64,
    /// Tunnel req/s ÷ direct req/s at concurrency 1.
    pub rps_ratio_c1: f64,
    /// Tunnel req/s at concurrency 64.
    pub rps_c64: f64,
    /// Tunnel req/s ÷ direct req/s at concurrency 64.
    pub rps_ratio_c64: f64,
    /// Tunnel p99 ÷ direct p99 at concurrency 64.
    pub p99_ratio_c64: f64,
}

/// Whether the plain-HTTP front met the targets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Verdict {
    /// Added p50 ≤ [`TARGET_ADDED_P50_US`].
    pub added_p50_ok: bool,
    /// Req/s at c=64 ≥ [`TARGET_RPS_C64`].
    pub rps_c64_ok: bool,
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
    /// Plain-HTTP front vs direct, if both were measured.
    pub tunnel_http: Option<Comparison>,
    /// HTTPS front vs direct, if both were measured.
    pub tunnel_https: Option<Comparison>,
    /// Targets for the plain-HTTP front.
    pub targets: Targets,
    /// The plain-HTTP front against the targets.
    pub verdict: Option<Verdict>,
}

/// The targets, as recorded in the JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    /// See [`TARGET_ADDED_P50_US`].
    pub added_p50_us_max: f64,
    /// See [`TARGET_RPS_C64`].
    pub rps_c64_min: f64,
    /// See [`REFERENCE`].
    pub reference: String,
}

impl Report {
    /// Builds the report from every round of a run.
    pub fn build(rounds: &[Round], run: RunInfo, machine: Machine) -> Self {
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
            tunnel_http: None,
            tunnel_https: None,
            targets: Targets {
                added_p50_us_max: TARGET_ADDED_P50_US,
                rps_c64_min: TARGET_RPS_C64,
                reference: REFERENCE.into(),
            },
            verdict: None,
        };
        report.tunnel_http = report.compare(TUNNEL_HTTP);
        report.tunnel_https = report.compare(TUNNEL_HTTPS);
        report.verdict = report.tunnel_http.map(|c| Verdict {
            added_p50_ok: c.added_p50_us <= TARGET_ADDED_P50_US,
            rps_c64_ok: c.rps_c64 >= TARGET_RPS_C64,
        });
        report
    }

    /// The median of `contender` in `scenario`, if it was measured.
    pub fn median(&self, scenario: &str, contender: &str) -> Option<&Summary> {
        Some(&self.scenarios.get(scenario)?.get(contender)?.median)
    }

    fn compare(&self, tunnel: &str) -> Option<Comparison> {
        let d1 = self.median(LATENCY, DIRECT)?;
        let t1 = self.median(LATENCY, tunnel)?;
        let d64 = self.median(THROUGHPUT, DIRECT)?;
        let t64 = self.median(THROUGHPUT, tunnel)?;
        Some(Comparison {
            added_p50_us: t1.p50_us - d1.p50_us,
            added_p99_us: t1.p99_us - d1.p99_us,
            rps_ratio_c1: ratio(t1.rps, d1.rps),
            rps_c64: t64.rps,
            rps_ratio_c64: ratio(t64.rps, d64.rps),
            p99_ratio_c64: ratio(t64.p99_us, d64.p99_us),
        })
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
            "machine: {} x {} | Linux {}",
            m.nproc, m.cpu_model, m.kernel
        );
        let cols = [DIRECT, TUNNEL_HTTP, TUNNEL_HTTPS];
        let header = |out: &mut String, title: &str| {
            let _ = writeln!(
                out,
                "\n{title:<34}{:>12}{:>14}{:>14}   target (plain-HTTP front)",
                "direct", "tunnel/http", "tunnel/https"
            );
        };
        let row = |out: &mut String, label: &str, cells: [Option<String>; 3], target: &str| {
            let cell = |c: &Option<String>| c.clone().unwrap_or_else(|| "-".into());
            let line = format!(
                "  {label:<32}{:>12}{:>14}{:>14}   {target}",
                cell(&cells[0]),
                cell(&cells[1]),
                cell(&cells[2])
            );
            let _ = writeln!(out, "{}", line.trim_end());
        };
        let metric = |scenario: &str, f: fn(&Summary) -> f64, fmt: fn(f64) -> String| {
            cols.map(|c| self.median(scenario, c).map(|s| fmt(f(s))))
        };
        let cmp = |f: fn(&Comparison) -> f64, fmt: fn(f64) -> String| {
            [
                None,
                self.tunnel_http.as_ref().map(|c| fmt(f(c))),
                self.tunnel_https.as_ref().map(|c| fmt(f(c))),
            ]
        };
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };

        header(&mut out, "concurrency 1 (latency)");
        row(&mut out, "p50 (µs)", metric(LATENCY, |s| s.p50_us, us), "");
        row(&mut out, "p99 (µs)", metric(LATENCY, |s| s.p99_us, us), "");
        row(
            &mut out,
            "added p50 (µs, tunnel - direct)",
            cmp(|c| c.added_p50_us, us),
            &format!(
                "<= {TARGET_ADDED_P50_US:.0} µs  {}",
                verdict(self.verdict.map(|v| v.added_p50_ok))
            ),
        );
        row(
            &mut out,
            "added p99 (µs, tunnel - direct)",
            cmp(|c| c.added_p99_us, us),
            "",
        );
        row(&mut out, "req/s", metric(LATENCY, |s| s.rps, rate), "");
        row(
            &mut out,
            "req/s ratio tunnel/direct",
            cmp(|c| c.rps_ratio_c1, times),
            "",
        );

        header(&mut out, "concurrency 64 (throughput)");
        row(
            &mut out,
            "req/s",
            metric(THROUGHPUT, |s| s.rps, rate),
            &format!(
                ">= {} req/s  {}",
                rate(TARGET_RPS_C64),
                verdict(self.verdict.map(|v| v.rps_c64_ok))
            ),
        );
        row(
            &mut out,
            "req/s ratio tunnel/direct",
            cmp(|c| c.rps_ratio_c64, times),
            "",
        );
        row(
            &mut out,
            "p50 (µs)",
            metric(THROUGHPUT, |s| s.p50_us, us),
            "",
        );
        row(
            &mut out,
            "p99 (µs)",
            metric(THROUGHPUT, |s| s.p99_us, us),
            "",
        );
        row(
            &mut out,
            "p99 ratio tunnel/direct",
            cmp(|c| c.p99_ratio_c64, times),
            "",
        );
        let errors = |scenario: &str| {
            cols.map(|c| {
                let s = self.scenarios.get(scenario)?.get(c)?;
                Some(s.rounds.iter().map(|r| r.errors).sum::<u64>().to_string())
            })
        };
        row(&mut out, "errors (all rounds, c=1)", errors(LATENCY), "");
        row(
            &mut out,
            "errors (all rounds, c=64)",
            errors(THROUGHPUT),
            "",
        );

        let tcp1 = self.median(LATENCY, TCP);
        let tcp64 = self.median(THROUGHPUT, TCP);
        if tcp1.is_some() || tcp64.is_some() {
            let _ = writeln!(
                out,
                "\nphysical reference: raw loopback TCP ping-pong, {}-byte messages",
                crate::tcp_rtt::MESSAGE_SIZE
            );
        }
        if let Some(t) = tcp1 {
            let mut line = format!("  c=1:  p50 {} µs, p99 {} µs", us(t.p50_us), us(t.p99_us));
            for (name, front) in [("http", TUNNEL_HTTP), ("https", TUNNEL_HTTPS)] {
                if let Some(s) = self.median(LATENCY, front) {
                    let _ = write!(
                        line,
                        "; tunnel/{name} p50 = {:.1} RTTs",
                        ratio(s.p50_us, t.p50_us)
                    );
                }
            }
            if let Some(d) = self.median(LATENCY, DIRECT) {
                let _ = write!(line, "; direct p50 = {:.1} RTTs", ratio(d.p50_us, t.p50_us));
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(t) = tcp64 {
            let mut line = format!("  c=64: {} round trips/s", rate(t.rps));
            for (name, front) in [("direct", DIRECT), ("tunnel/http", TUNNEL_HTTP)] {
                if let Some(s) = self.median(THROUGHPUT, front) {
                    let _ = write!(line, "; {name} = {:.2} of it", ratio(s.rps, t.rps));
                }
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "\nreference: {REFERENCE}");
        out
    }
}

/// Per-field medians of `rounds` (which must not be empty to mean anything;
/// an empty slice gives zeros).
pub fn median_summary(rounds: &[Summary]) -> Summary {
    let med = |f: fn(&Summary) -> f64| median(rounds.iter().map(f).collect());
    Summary {
        rps: med(|s| s.rps),
        p50_us: med(|s| s.p50_us),
        p90_us: med(|s| s.p90_us),
        p99_us: med(|s| s.p99_us),
        max_us: med(|s| s.max_us),
        errors: med(|s| s.errors as f64).round() as u64,
        requests: med(|s| s.requests as f64).round() as u64,
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

    fn summary(rps: f64, p50: f64) -> Summary {
        Summary {
            rps,
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p50 * 2.0,
            max_us: p50 * 10.0,
            errors: 0,
            requests: rps as u64,
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

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn thousands() {
        assert_eq!(rate(33_000.4), "33,000");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1_234_567.0), "1,234,567");
    }

    #[test]
    fn compares_medians_and_judges_targets() {
        let mut rounds = Vec::new();
        for (n, noise) in [(1, 0.0), (2, 500.0), (3, -1.0)] {
            rounds.push(round(LATENCY, DIRECT, n, summary(20_000.0, 50.0 + noise)));
            rounds.push(round(LATENCY, TUNNEL_HTTP, n, summary(8_000.0, 150.0)));
            rounds.push(round(THROUGHPUT, DIRECT, n, summary(60_000.0, 900.0)));
            rounds.push(round(THROUGHPUT, TUNNEL_HTTP, n, summary(31_000.0, 2000.0)));
            rounds.push(round(LATENCY, TCP, n, summary(50_000.0, 10.0)));
        }
        let run = RunInfo {
            mode: "quick".into(),
            rounds: 3,
            duration_s: 3.0,
            warmup_s: 0.5,
        };
        let machine = Machine {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            kernel: "6.0".into(),
        };
        let r = Report::build(&rounds, run, machine);
        let http = r.tunnel_http.unwrap();
        // The outlier round (550 µs) is dropped by the median.
        assert!((http.added_p50_us - 100.0).abs() < 1e-9);
        assert!((http.rps_ratio_c64 - 31.0 / 60.0).abs() < 1e-9);
        assert!(r.tunnel_https.is_none());
        let v = r.verdict.unwrap();
        assert!(v.added_p50_ok && v.rps_c64_ok);

        let table = r.table();
        assert!(table.contains("Test CPU"), "{table}");
        assert!(table.contains("100.0"), "{table}");
        assert!(table.contains("31,000"), "{table}");
        assert!(table.contains("PASS"), "{table}");
        assert!(table.contains("physical reference"), "{table}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"added_p50_us\":100.0"), "{json}");
    }
}
