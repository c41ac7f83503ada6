//! The physical reference: a raw loopback TCP ping-pong.
//!
//! An echo server on its own thread (so it competes for the CPU like a real
//! upstream would) and closed-loop workers that each write a message the size
//! of the benchmark request and read the echo back. Its p50 at concurrency 1
//! is the floor any HTTP round trip on this machine sits on; its rate at
//! concurrency 64 is what the loopback alone can carry.

use std::future::Future;
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
    let server = ServerThread::start("echo", echo_serve)?;
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(Pinger::connect(server.addr).await?);
    }
    let summary = closed_loop::run(clients, plan).await;
    server.stop();
    Ok(summary)
}

/// A loopback server on a dedicated thread with its own single-threaded
/// runtime (so it competes for the CPU like a real upstream would).
#[derive(Debug)]
struct ServerThread {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    /// Binds 127.0.0.1:0 and runs `serve(listener, stopped)` on a thread named `name`.
    fn start<F, Fut>(name: &str, serve: F) -> anyhow::Result<Self>
    where
        F: FnOnce(std::net::TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .with_context(|| format!("binding the {name} server"))?;
        std_listener
            .set_nonblocking(true)
            .with_context(|| format!("setting the {name} listener non-blocking"))?;
        let addr = std_listener
            .local_addr()
            .with_context(|| format!("reading the {name} address"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("starting the {name} runtime"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rt.block_on(serve(std_listener, stopped)))
            .with_context(|| format!("spawning the {name} thread"))?;
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

/// Raw loopback TCP bulk transfer, the physical reference for the bulk
/// scenario: each exchange asks a server thread for `bytes` bytes (an 8-byte
/// big-endian length) and reads them all.
pub async fn bulk(bytes: u64, concurrency: usize, plan: Plan) -> anyhow::Result<Summary> {
    let server = ServerThread::start("bulk", bulk_serve)?;
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(BulkClient {
            addr: server.addr,
            stream: Some(open(server.addr).await?),
            bytes,
            buf: vec![0u8; 256 * 1024],
        });
    }
    let mut summary = closed_loop::run(clients, plan).await;
    server.stop();
    summary.mbps = Some(summary.rps * bytes as f64 / 1e6);
    Ok(summary)
}

async fn bulk_serve(std_listener: std::net::TcpListener, stopped: oneshot::Receiver<()>) {
    let Ok(listener) = TcpListener::from_std(std_listener) else {
        return;
    };
    let chunk = vec![b'x'; 256 * 1024];
    let chunk: &'static [u8] = chunk.leak();
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                conns.spawn(async move {
                    let mut len = [0u8; 8];
                    while stream.read_exact(&mut len).await.is_ok() {
                        let mut left = u64::from_be_bytes(len);
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if stream.write_all(&chunk[..n]).await.is_err() {
                                return;
                            }
                            left -= n as u64;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One bulk-reading connection.
#[derive(Debug)]
struct BulkClient {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    bytes: u64,
    buf: Vec<u8>,
}

impl Exchange for BulkClient {
    async fn exchange(&mut self) -> anyhow::Result<bool> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(open(self.addr).await?),
        };
        let buf = &mut self.buf;
        let want = self.bytes;
        let result = async {
            stream.write_all(&want.to_be_bytes()).await?;
            let mut got = 0u64;
            while got < want {
                let n = stream.read(buf).await?;
                if n == 0 {
                    anyhow::bail!("the bulk server closed after {got} of {want} bytes");
                }
                got += n as u64;
            }
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result.map(|()| true)
    }
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

    #[tokio::test]
    async fn bulk_reads_every_byte() {
        let plan = Plan {
            warmup: Duration::ZERO,
            stop: Stop::Requests(4),
        };
        let s = bulk(3 * 1024 * 1024 + 7, 2, plan).await.unwrap();
        assert_eq!((s.requests, s.errors), (4, 0));
        assert!(s.mbps.unwrap() > 0.0);
    }
}
