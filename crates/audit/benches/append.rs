//! Audit log cost, side by side:
//! * `append/caller` — what the request path pays per record (queue only);
//! * `sustained/commit` — records per second through to a synchronous=FULL
//!   commit (append a burst, then `flush`).
//!
//! `cargo bench -p mcp-tunnel-audit --bench append`. Criterion prints the
//! median of each; the sustained group reports elements/s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcp_tunnel_audit::{AuditLog, AuditOptions, AuditPaths, AuditRecord, Decision, args_digest};
use serde_json::json;

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        ts_ms: 1_780_000_000_000 + i as i64,
        request_id: format!("9f3a0c51-{i}"),
        principal: Some("bob@example.com".into()),
        client_id: Some("https://client.example.com/metadata.json".into()),
        source: Some("203.0.113.7:51234".into()),
        tunnel: "shop".into(),
        method: "tools/call".into(),
        tool: Some("read_query".into()),
        args_digest: Some(args_digest(
            &json!({"sql": "select * from orders where id = ?", "params": [i]}),
        )),
        args: None,
        decision: Decision::Allow,
        policies: vec!["allow-readers".into()],
        reason: None,
        status: Some(200),
        rpc_error: None,
        latency_us: 1_234,
        bytes_in: 312,
        bytes_out: 4_096,
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(
        AuditPaths::in_dir(dir.path(), "audit"),
        AuditOptions::default(),
    )
    .expect("open");
    let template = record(0);

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    // Measured in bursts that fit the queue, flushed outside the timing, so
    // every measured append is accepted (a dropped one would be cheaper).
    const BURST: u64 = 4_096;
    g.bench_function("caller", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BURST);
                let recs: Vec<AuditRecord> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                for rec in recs {
                    log.append(black_box(rec));
                }
                spent += start.elapsed();
                log.flush().expect("flush");
                left -= n;
            }
            spent
        })
    });
    g.finish();
    assert_eq!(
        log.dropped(),
        0,
        "the caller benchmark must not drop records"
    );

    let mut g = c.benchmark_group("sustained");
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("commit_10k", |b| {
        b.iter(|| {
            for i in 0..N {
                log.append(record(i));
            }
            log.flush().expect("flush");
        })
    });
    g.finish();
    assert_eq!(log.dropped(), 0);
    log.close().expect("close");
}

criterion_group!(benches, append);
criterion_main!(benches);
