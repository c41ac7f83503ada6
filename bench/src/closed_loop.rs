//! The closed-loop driver shared by the HTTP load generator and the TCP
//! ping-pong: N workers, each with its own connection, each sending the next
//! request as soon as the previous answer arrived (like wrk).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::summary::{Recorder, Summary};

/// Pause after a failed exchange before the worker tries again, so a dead
/// target costs errors, not a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// One worker's connection to the target.
pub trait Exchange: Send + 'static {
    /// Sends one request and waits for its whole answer. `Ok(true)` is a
    /// success, `Ok(false)` an answer that counts as an error (e.g. non-2xx);
    /// `Err` means the connection broke and the next call must reconnect.
    fn exchange(&mut self) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// When the measured window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests (summed over workers).
    Requests(u64),
}

/// How to drive the workers.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Time spent sending without recording, before the measured window.
    pub warmup: Duration,
    /// When the measured window ends.
    pub stop: Stop,
}

/// Runs every client in `clients` as a closed-loop worker according to
/// `plan` and returns the merged summary of the measured window.
pub async fn run<E: Exchange>(clients: Vec<E>, plan: Plan) -> Summary {
    let measure_start = Instant::now() + plan.warmup;
    let budget = Arc::new(AtomicU64::new(match plan.stop {
        Stop::Requests(n) => n,
        Stop::After(_) => u64::MAX,
    }));
    let mut workers = JoinSet::new();
    for client in clients {
        workers.spawn(worker(client, plan, measure_start, Arc::clone(&budget)));
    }
    let mut total = Recorder::new();
    let mut last = measure_start;
    while let Some(done) = workers.join_next().await {
        // A worker only ends by returning; a panic there is a bug in this
        // crate, and hiding it would print wrong numbers.
        let (rec, worker_last) = match done {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        total.merge(&rec);
        last = last.max(worker_last);
    }
    total.summary(last.saturating_duration_since(measure_start))
}

/// One worker: returns its recorder and when its last measured request ended.
async fn worker<E: Exchange>(
    mut client: E,
    plan: Plan,
    measure_start: Instant,
    budget: Arc<AtomicU64>,
) -> (Recorder, Instant) {
    let mut rec = Recorder::new();
    let mut last = measure_start;
    loop {
        let start = Instant::now();
        let measuring = start >= measure_start;
        if measuring {
            let more = match plan.stop {
                Stop::After(d) => start < measure_start + d,
                Stop::Requests(_) => budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok(),
            };
            if !more {
                break;
            }
        }
        let outcome = client.exchange().await;
        let end = Instant::now();
        if measuring {
            match outcome {
                Ok(true) => rec.ok(end - start),
                Ok(false) | Err(_) => rec.error(),
            }
            last = end;
        }
        if outcome.is_err() {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    (rec, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Succeeds every other call after a fixed pause.
    struct Alternating(bool);

    impl Exchange for Alternating {
        async fn exchange(&mut self) -> anyhow::Result<bool> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.0 = !self.0;
            Ok(self.0)
        }
    }

    #[tokio::test]
    async fn request_budget_is_exact_across_workers() {
        let plan = Plan {
            warmup: Duration::ZERO,
            stop: Stop::Requests(40),
        };
        let clients = (0..4).map(|_| Alternating(false)).collect();
        let s = run(clients, plan).await;
        assert_eq!(s.requests, 40);
        assert_eq!(s.errors, 20);
        assert!(s.p50_us >= 1000.0, "{s:?}");
    }
}
