//! The pure parts: reading `/proc` text, percentiles, and the result of one
//! stream count as JSON and as a summary line.

use serde::Serialize;

/// What one stream count measured (one element of the `"sse"` array).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeResult {
    /// Streams asked for.
    pub streams: usize,
    /// Streams that opened (`200 text/event-stream` at the client).
    pub opened: usize,
    /// Streams the upstream held once all had opened.
    pub upstream_streams: u64,
    /// Seconds from the first connect to the last response head.
    pub open_all_s: f64,
    /// Relay VmRSS (KiB) with the streams open.
    pub relay_rss_kib: u64,
    /// Relay VmRSS (KiB) before the streams.
    pub relay_rss_baseline_kib: u64,
    /// Agent VmRSS (KiB) with the streams open.
    pub agent_rss_kib: u64,
    /// Agent VmRSS (KiB) before the streams.
    pub agent_rss_baseline_kib: u64,
    /// (relay_rss - baseline) / opened.
    pub relay_kib_per_stream: f64,
    /// (agent_rss - baseline) / opened.
    pub agent_kib_per_stream: f64,
    /// First event: ms from the upstream stamping it until the last stream had it.
    pub deliver_all_ms: f64,
    /// First event: median per-stream delivery time (ms).
    pub deliver_p50_ms: f64,
    /// First event: 99th percentile per-stream delivery time (ms).
    pub deliver_p99_ms: f64,
    /// `deliver_all_ms` of every event sent (the first one included).
    pub deliver_all_ms_each: Vec<f64>,
    /// Relay CPU time (ms) while each event was delivered.
    pub relay_cpu_ms_each: Vec<f64>,
    /// Agent CPU time (ms) while each event was delivered.
    pub agent_cpu_ms_each: Vec<f64>,
    /// The SSE upstream's CPU time (ms) while each event was delivered.
    pub upstream_cpu_ms_each: Vec<f64>,
    /// The clients' (this process's) CPU time (ms) while each event was delivered.
    pub client_cpu_ms_each: Vec<f64>,
    /// Seconds from closing every client until the upstream held none.
    pub close_all_s: f64,
    /// Relay VmRSS (KiB) after the streams closed.
    pub relay_rss_after_close_kib: u64,
    /// Agent VmRSS (KiB) after the streams closed.
    pub agent_rss_after_close_kib: u64,
    /// Streams that failed to open or ended early, plus events not delivered.
    pub errors: usize,
}

impl SizeResult {
    /// Fills the per-stream memory figures from the RSS ones.
    pub fn derive_per_stream(&mut self) {
        let per = |now: u64, base: u64| {
            if self.opened == 0 {
                0.0
            } else {
                round1((now as f64 - base as f64) / self.opened as f64)
            }
        };
        self.relay_kib_per_stream = per(self.relay_rss_kib, self.relay_rss_baseline_kib);
        self.agent_kib_per_stream = per(self.agent_rss_kib, self.agent_rss_baseline_kib);
    }

    /// The human-readable lines for stderr.
    pub fn summary(&self) -> String {
        format!(
            "{} SSE streams ({} opened, {} at the upstream, {} errors)\n\
             \x20 open all          {:>8.2} s   (close all {:.2} s)\n\
             \x20 relay RSS         {:>8} KiB  baseline {} KiB  -> {:.1} KiB/stream  (after close {} KiB)\n\
             \x20 agent RSS         {:>8} KiB  baseline {} KiB  -> {:.1} KiB/stream  (after close {} KiB)\n\
             \x20 deliver 1 event   {:>8.1} ms to all streams   p50 {:.1} ms  p99 {:.1} ms   (each event: {} ms)\n\
             \x20 CPU per event     relay {} ms; agent {} ms\n\
             \x20                   upstream {} ms; clients {} ms",
            self.streams,
            self.opened,
            self.upstream_streams,
            self.errors,
            self.open_all_s,
            self.close_all_s,
            self.relay_rss_kib,
            self.relay_rss_baseline_kib,
            self.relay_kib_per_stream,
            self.relay_rss_after_close_kib,
            self.agent_rss_kib,
            self.agent_rss_baseline_kib,
            self.agent_kib_per_stream,
            self.agent_rss_after_close_kib,
            self.deliver_all_ms,
            self.deliver_p50_ms,
            self.deliver_p99_ms,
            ms_list(&self.deliver_all_ms_each),
            ms_list(&self.relay_cpu_ms_each),
            ms_list(&self.agent_cpu_ms_each),
            ms_list(&self.upstream_cpu_ms_each),
            ms_list(&self.client_cpu_ms_each),
        )
    }
}

fn ms_list(v: &[f64]) -> String {
    let each: Vec<String> = v.iter().map(|v| format!("{v:.1}")).collect();
    each.join(", ")
}

/// The `Max open files` soft and hard limits from `/proc/self/limits`
/// (`None` for "unlimited").
pub fn open_files_limits(limits: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    let mut next = || -> Option<Option<u64>> {
        match words.next()? {
            "unlimited" => Some(None),
            w => Some(Some(w.parse().ok()?)),
        }
    };
    Some((next()?, next()?))
}

/// A `KEY:   N kB` value of `/proc/PID/status`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next()? == "kB").then_some(n)
    })
}

/// The `p`-th percentile (0..=100, nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds as milliseconds, to 0.01 ms.
pub fn ns_to_ms(ns: u64) -> f64 {
    (ns as f64 / 10_000.0).round() / 100.0
}

/// Rounds to one decimal.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_open_files_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            1024                 20000                files     \n";
        assert_eq!(open_files_limits(text), Some((Some(1024), Some(20_000))));
        let text = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_limits(text), Some((None, None)));
        assert_eq!(open_files_limits("Max processes 1 1\n"), None);
    }

    #[test]
    fn reads_kib_from_proc_status() {
        let text = "Name:\tmcp-relay\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(status_kib(text, "VmRSS"), Some(12_345));
        assert_eq!(status_kib(text, "VmHWM"), Some(20_480));
        assert_eq!(status_kib(text, "Threads"), None);
        assert_eq!(status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(ns_to_ms(1_234_567), 1.23);
    }

    #[test]
    fn per_stream_memory_is_the_growth_over_the_baseline() {
        let mut r = SizeResult {
            opened: 1000,
            relay_rss_baseline_kib: 10_000,
            relay_rss_kib: 30_000,
            agent_rss_baseline_kib: 8_000,
            agent_rss_kib: 23_500,
            ..Default::default()
        };
        r.derive_per_stream();
        assert_eq!(r.relay_kib_per_stream, 20.0);
        assert_eq!(r.agent_kib_per_stream, 15.5);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "streams",
            "open_all_s",
            "relay_rss_kib",
            "relay_rss_baseline_kib",
            "agent_rss_kib",
            "agent_rss_baseline_kib",
            "relay_kib_per_stream",
            "agent_kib_per_stream",
            "deliver_all_ms",
            "deliver_p50_ms",
            "deliver_p99_ms",
            "errors",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
