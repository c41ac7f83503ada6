//! Per-identity and per-tool rate limits (GCRA, via `governor`).
//!
//! Keys are the principal's id and `(principal, tunnel, tool)`. A limit of
//! zero turns that check off. Keyed state grows with the number of distinct
//! callers; [`RateLimits::prune`] drops keys that are back to full allowance.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitConfig;

/// The relay's rate limiters.
#[derive(Debug)]
pub struct RateLimits {
    per_identity: Option<DefaultKeyedRateLimiter<String>>,
    per_tool: Option<DefaultKeyedRateLimiter<(String, String, String)>>,
    clock: DefaultClock,
}

/// Over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which limit (`"identity"` or `"tool"`).
    pub which: &'static str,
    /// The allowance per window.
    pub allowance: u32,
    /// The window.
    pub window: Duration,
    /// When the next request would be allowed.
    pub retry_after: Duration,
}

impl Limited {
    /// One human line.
    pub fn message(&self) -> String {
        format!(
            "rate limited: over {} requests per {} for this {}; retry after {} ms",
            self.allowance,
            humantime::format_duration(self.window),
            if self.which == "tool" {
                "tool"
            } else {
                "identity"
            },
            self.retry_after.as_millis()
        )
    }

    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl RateLimits {
    /// Limiters from the config.
    pub fn new(c: &RateLimitConfig) -> Self {
        let quota = |n: u32| {
            NonZeroU32::new(n)
                .and_then(|n| Quota::with_period(c.window / n.get()).map(|q| q.allow_burst(n)))
        };
        Self {
            per_identity: quota(c.per_identity).map(governor::RateLimiter::keyed),
            per_tool: quota(c.per_tool).map(governor::RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request by `principal` (and, for a tool call, on `tool`).
    pub fn check(
        &self,
        c: &RateLimitConfig,
        principal: &str,
        tunnel: &str,
        tool: Option<&str>,
    ) -> Result<(), Limited> {
        if let Some(l) = &self.per_identity
            && let Err(not_until) = l.check_key(&principal.to_owned())
        {
            return Err(Limited {
                which: "identity",
                allowance: c.per_identity,
                window: c.window,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        if let (Some(l), Some(tool)) = (&self.per_tool, tool)
            && let Err(not_until) =
                l.check_key(&(principal.to_owned(), tunnel.to_owned(), tool.to_owned()))
        {
            return Err(Limited {
                which: "tool",
                allowance: c.per_tool,
                window: c.window,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// Forgets callers whose allowance is full again (bounded memory).
    pub fn prune(&self) {
        if let Some(l) = &self.per_identity {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_tool {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_over_the_allowance_is_refused_with_a_retry_time_then_allowed_again() {
        let c = RateLimitConfig {
            per_identity: 100,
            per_tool: 3,
            window: Duration::from_millis(300),
        };
        let r = RateLimits::new(&c);
        for _ in 0..3 {
            r.check(&c, "bob", "shop", Some("read_query")).unwrap();
        }
        let e = r.check(&c, "bob", "shop", Some("read_query")).unwrap_err();
        assert_eq!(e.which, "tool");
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_millis(100));
        assert!(e.message().contains("retry after"), "{}", e.message());
        // Another tool, another caller: their own allowance.
        r.check(&c, "bob", "shop", Some("list_tables")).unwrap();
        r.check(&c, "carol", "shop", Some("read_query")).unwrap();
        std::thread::sleep(e.retry_after + Duration::from_millis(20));
        r.check(&c, "bob", "shop", Some("read_query")).unwrap();
        r.prune();
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let c = RateLimitConfig {
            per_identity: 0,
            per_tool: 0,
            window: Duration::from_secs(60),
        };
        let r = RateLimits::new(&c);
        for _ in 0..1000 {
            r.check(&c, "bob", "shop", Some("x")).unwrap();
        }
    }
}
