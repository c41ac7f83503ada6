//! The physical reference: a raw loopback TCP ping-pong.
//!
//! An echo server on its own thread (so it competes for the CPU like a real
//! upstream would) and closed-loop workers that each write a message the size
//! of the benchmark request and read the echo back. Its p50 at concurrency 1
//! is the floor any HTTP round trip on this machine sits on; its rate at
//! concurrency 64 is what the loopback alone can carry.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::closed_loop::{self, Exchange, Plan};
use crate::summary::Summary;

/// Size of each ping, equal to the HTTP benchmark's request body.
pub const MESSAGE_SIZE: usize = crate::loadgen::REQUEST_BODY.len();
/// Read buffer of the echo server, per connection.
const ECHO_BUFFER: usize = 4096;

/// Runs the ping-pong with `concurrency` connections according to `plan`.
pub async fn run(concurrency: usize, plan: Plan) -> anyhow::Result<Summary> {
    let server = EchoServer::start()?;
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(Pinger::connect(server.addr).await?);
    }
    let summary = closed_loop::run(clients, plan).await;
    server.stop();
    Ok(summary)
}

/// An echo server on a dedicated thread with its own single-threaded runtime.
#[derive(Debug)]
struct EchoServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EchoServer {
    fn start() -> anyhow::Result<Self> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the echo server")?;
        std_listener
            .set_nonblocking(true)
            .context("setting the echo listener non-blocking")?;
        let addr = std_listener
            .local_addr()
            .context("reading the echo address")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the echo runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || rt.block_on(echo_serve(std_listener, stopped)))
            .context("spawning the echo thread")?;
        Ok(Self { addr, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

async fn echo_serve(std_listener: std::net::TcpListener, stopped: oneshot::Receiver<()>) {
    let Ok(listener) = TcpListener::from_std(std_listener) else {
        return;
    };
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                conns.spawn(async move {
                    let mut buf = vec![0u8; ECHO_BUFFER];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One ping-pong connection.
#[derive(Debug)]
struct Pinger {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Pinger {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            stream: Some(open(addr).await?),
            buf: vec![0u8; MESSAGE_SIZE],
        })
    }
}

impl Exchange for Pinger {
    async fn exchange(&mut self) -> anyhow::Result<bool> {
        let buf = &mut self.buf;
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(open(self.addr).await?),
        };
        let result = async {
            stream
                .write_all(&crate::loadgen::REQUEST_BODY.as_bytes()[..MESSAGE_SIZE])
                .await?;
            stream.read_exact(buf).await?;
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result.map(|()| true)
    }
}

async fn open(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the echo server at {addr}"))?;
    s.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closed_loop::Stop;
    use std::time::Duration;

    #[tokio::test]
    async fn ping_pongs() {
        let plan = Plan {
            warmup: Duration::ZERO,
            stop: Stop::Requests(500),
        };
        let s = run(3, plan).await.unwrap();
        assert_eq!((s.requests, s.errors), (500, 0));
        assert!(s.p50_us > 0.0);
    }
}
