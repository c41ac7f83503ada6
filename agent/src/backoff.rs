//! Jittered exponential backoff for reconnects.
//!
//! Attempt n waits a random time in `[base·2ⁿ/2, base·2ⁿ]`, capped. The jitter
//! spreads a thousand agents reconnecting to a restarted relay over time
//! instead of having them arrive in one burst.

use std::time::Duration;

use rand::Rng;

/// Reconnect delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// First retry within 200–400 ms, cap 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(400), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let lo = ceiling / 2;
        let span = (ceiling - lo).as_millis() as u64;
        lo + Duration::from_millis(rand::rng().random_range(0..=span))
    }

    /// Back to the first delay (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_jittered_and_capped() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(200) && first <= Duration::from_millis(400));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
            assert!(last <= Duration::from_secs(30));
        }
        assert!(last >= Duration::from_secs(15), "reaches the cap region");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(400));
    }

    #[test]
    fn spreads_many_agents() {
        let delays: std::collections::HashSet<u128> = (0..100)
            .map(|_| Backoff::default().next_delay().as_millis())
            .collect();
        assert!(
            delays.len() > 20,
            "jitter spreads first retries: {}",
            delays.len()
        );
    }
}
