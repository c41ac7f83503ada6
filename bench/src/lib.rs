//! Side-by-side benchmarks for mcp-tunnel.
//!
//! The same small JSON-RPC POST is sent to the same upstream three ways —
//! **direct** (client → upstream), through the tunnel via the relay's
//! **plain-HTTP front**, and through the tunnel via its **HTTPS front** — and
//! the results are compared in one table. `bench/run.sh` drives the whole run;
//! this library holds the pieces it uses:
//!
//! - [`upstream`]: a minimal, fast HTTP/1.1 upstream answering `POST /mcp`.
//! - [`loadgen`]: a closed-loop HTTP/1.1 load generator (one keep-alive
//!   connection per concurrent worker, like wrk) recording latencies in a
//!   histogram.
//! - [`tcp_rtt`]: a raw loopback TCP ping-pong, the physical reference the
//!   HTTP figures are read against.
//! - [`closed_loop`]: the worker loop both of them share.
//! - [`summary`]: the per-run result every measurement prints as one JSON line.
//! - [`report`]: medians over alternated rounds, ratios, the table and the
//!   JSON written to `bench/results/latest.json`.

pub mod closed_loop;
pub mod loadgen;
pub mod report;
pub mod summary;
pub mod tcp_rtt;
pub mod upstream;
