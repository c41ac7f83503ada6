//! Failed sign-in attempts, counted per account and per source address in a
//! sliding window; over the limit, sign-in is refused until the window passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per account per window.
pub const MAX_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failures allowed per source address per window.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys tracked at most (oldest dropped beyond this), bounding memory.
pub const MAX_TRACKED: usize = 50_000;

/// Counts failed sign-ins.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Whether another attempt for `email` from `addr` may be tried now.
    pub fn allowed(&self, email: &str, addr: Option<IpAddr>) -> bool {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = |k: &str| {
            map.get(k)
                .filter(|(_, t)| t.elapsed() < WINDOW)
                .map(|(n, _)| *n)
                .unwrap_or(0)
        };
        count(&account_key(email)) < MAX_FAILURES_PER_ACCOUNT
            && addr.is_none_or(|a| count(&addr_key(a)) < MAX_FAILURES_PER_ADDRESS)
    }

    /// Records a failed attempt.
    pub fn failed(&self, email: &str, addr: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, t)| t.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let mut bump = |k: String| {
            let e = map.entry(k).or_insert((0, Instant::now()));
            if e.1.elapsed() >= WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        };
        bump(account_key(email));
        if let Some(a) = addr {
            bump(addr_key(a));
        }
    }

    /// Clears the account's count after a successful sign-in.
    pub fn succeeded(&self, email: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&account_key(email));
    }
}

fn account_key(email: &str) -> String {
    format!("acct:{}", email.trim().to_ascii_lowercase())
}

fn addr_key(a: IpAddr) -> String {
    format!("addr:{a}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_resets_on_success() {
        let l = LoginLimiter::default();
        let ip = Some("192.0.2.1".parse().unwrap());
        for _ in 0..MAX_FAILURES_PER_ACCOUNT {
            assert!(l.allowed("a@example.com", ip));
            l.failed("A@example.com", ip);
        }
        assert!(!l.allowed("a@example.com", ip), "account locked");
        assert!(l.allowed("b@example.com", ip), "other accounts still fine");
        l.succeeded("a@example.com");
        assert!(l.allowed("a@example.com", ip));
    }
}
