//! `bench-upstream`: the minimal fast upstream the benchmark targets.
//!
//! Binds `--listen`, prints the bound address (one line on stdout, so a
//! script can read the port it got for `127.0.0.1:0`), then answers
//! `POST /mcp` until SIGINT or SIGTERM. See `mcp_tunnel_bench::upstream`.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

/// A minimal HTTP/1.1 upstream answering `POST /mcp` with a fixed JSON-RPC result.
#[derive(Debug, Parser)]
#[command(name = "bench-upstream", version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (1 keeps it on one core, like a small server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = runtime(cli.threads)?;
    rt.block_on(async {
        let listener = TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("binding {}", cli.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        println!("{addr}");
        mcp_tunnel_bench::upstream::run(listener, shutdown_signal())
            .await
            .context("serving")
    })
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, only Ctrl-C stops us.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
