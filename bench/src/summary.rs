//! The result of one measurement run, printed as one JSON line.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Lowest latency a histogram tracks, in nanoseconds.
const HIST_LOW_NS: u64 = 1;
/// Highest latency a histogram tracks, in nanoseconds (60 s); longer samples
/// are clamped to it.
const HIST_HIGH_NS: u64 = 60_000_000_000;
/// Significant decimal digits the histogram keeps (0.1 % resolution).
const HIST_SIGFIGS: u8 = 3;

/// What one run measured. Latencies are in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Successful (2xx) responses per second over the measured window.
    pub rps: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 90th percentile latency.
    pub p90_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// Largest latency seen.
    pub max_us: f64,
    /// Requests that failed: non-2xx status or a broken connection.
    pub errors: u64,
    /// Requests attempted in the measured window (successes + errors).
    pub requests: u64,
    /// Payload megabytes (10^6 bytes) per second, for bulk runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbps: Option<f64>,
}

/// Per-worker latency recorder; workers record without sharing, and the
/// recorders are merged once at the end.
#[derive(Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    /// Requests attempted while measuring.
    pub requests: u64,
    /// Failed requests while measuring.
    pub errors: u64,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            // The bounds are constants that satisfy Histogram's preconditions
            // (low >= 1, high >= 2 * low, sigfigs <= 5).
            hist: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIGS)
                .expect("constant histogram bounds are valid"),
            requests: 0,
            errors: 0,
        }
    }

    /// Records one successful request's latency.
    pub fn ok(&mut self, latency: Duration) {
        self.requests += 1;
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist
            .saturating_record(ns.clamp(HIST_LOW_NS, HIST_HIGH_NS));
    }

    /// Records one failed request.
    pub fn error(&mut self) {
        self.requests += 1;
        self.errors += 1;
    }

    /// Adds another recorder's samples to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms share the same constant bounds, so adding cannot
        // fail; saturate rather than panic if that ever changes.
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.errors += other.errors;
    }

    /// The summary over `elapsed`, the length of the measured window.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        let ok = self.requests - self.errors;
        let secs = elapsed.as_secs_f64();
        Summary {
            rps: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            max_us: self.hist.max() as f64 / 1000.0,
            errors: self.errors,
            requests: self.requests,
            mbps: None,
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rate() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for i in 1..=50u64 {
            a.ok(Duration::from_micros(i));
        }
        for i in 51..=100u64 {
            b.ok(Duration::from_micros(i));
        }
        b.error();
        a.merge(&b);
        let s = a.summary(Duration::from_secs(2));
        assert_eq!(s.requests, 101);
        assert_eq!(s.errors, 1);
        assert!((s.rps - 50.0).abs() < 1e-9);
        assert!((s.p50_us - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_us - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_us - 100.0).abs() < 0.1, "{s:?}");
    }
}
