//! What the kernel says about a process: resident memory, CPU time, and this
//! process's open-files limit, read from `/proc` (Linux only).

use std::time::Instant;

use anyhow::{Context, bail};

/// One reading of a process's memory and CPU time.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User + system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
}

/// Which process to read.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// This process.
    Me,
    /// Another process (the relay).
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Self::Me => "/proc/self".to_owned(),
            Self::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Reads `pid`'s RSS and CPU time now.
pub fn sample(pid: Pid) -> anyhow::Result<ProcSample> {
    let dir = pid.dir();
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    Ok(ProcSample {
        at: Instant::now(),
        rss_kib: vm_rss_kib(&status).with_context(|| format!("no VmRSS in {dir}/status"))?,
        cpu_ticks: cpu_ticks(&stat).with_context(|| format!("unreadable {dir}/stat"))?,
    })
}

/// CPU use between two samples of one process, in percent of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample, ticks_per_sec: u64) -> f64 {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    if secs <= 0.0 || ticks_per_sec == 0 {
        return 0.0;
    }
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    ticks / ticks_per_sec as f64 / secs * 100.0
}

/// CPU time between two samples, milliseconds.
pub fn cpu_ms(before: &ProcSample, after: &ProcSample, ticks_per_sec: u64) -> u64 {
    after.cpu_ticks.saturating_sub(before.cpu_ticks) * 1000 / ticks_per_sec.max(1)
}

/// Clock ticks per second (`getconf CLK_TCK`): the unit of `/proc/PID/stat`
/// CPU times. Reading it needs `sysconf`, which is `unsafe` to call from
/// Rust, so ask `getconf` once; Linux has used 100 on every common
/// architecture for decades, which is the fallback.
pub fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// This process's soft open-files limit (`None`: unlimited).
pub fn open_files_limit() -> anyhow::Result<Option<u64>> {
    let text = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    match soft_open_files(&text) {
        Some(v) => Ok(v),
        None => bail!("no \"Max open files\" line in /proc/self/limits"),
    }
}

/// `VmRSS` (KiB) from the text of `/proc/PID/status`.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// `utime + stime` (clock ticks) from the text of `/proc/PID/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: count fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit from the `Max open files` line of `/proc/PID/limits`:
/// `Some(None)` when unlimited.
fn soft_open_files(limits: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(None);
    }
    soft.parse().ok().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status =
            "Name:\tmcp-relay\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 8000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t 12 MB\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_past_a_tricky_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 900 0 3 0 250 75 0 0 20 0 9 0 100 2000000 500";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(soft_open_files(limits), Some(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_open_files(unlimited), Some(None));
        assert_eq!(soft_open_files("Max processes 10 10\n"), None);
    }

    #[test]
    fn cpu_percent_of_one_core() {
        let t = Instant::now();
        let a = ProcSample {
            at: t,
            rss_kib: 0,
            cpu_ticks: 100,
        };
        let b = ProcSample {
            at: t + std::time::Duration::from_secs(2),
            rss_kib: 0,
            cpu_ticks: 150,
        };
        // 50 ticks = 0.5 s of CPU over 2 s.
        assert!((cpu_percent(&a, &b, 100) - 25.0).abs() < 1e-9);
        assert_eq!(cpu_ms(&a, &b, 100), 500);
        assert_eq!(cpu_percent(&a, &a, 100), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(Pid::Me).expect("reading /proc/self");
        assert!(s.rss_kib > 0);
        assert!(ticks_per_sec() > 0);
        assert!(open_files_limit().is_ok());
    }
}
