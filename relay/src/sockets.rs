//! The relay's listening sockets, made so a restart never refuses a client.
//!
//! Three ways to get them:
//! - **Socket activation** (systemd `mcp-relay.socket`, or anything speaking
//!   the `LISTEN_FDS` protocol): the service manager holds the sockets across
//!   restarts; connections queue in the kernel while one relay drains and the
//!   next starts. Inherited TCP listeners are matched to `https`, `http` and
//!   `metrics` by their bound address (a single unmatched one is `https`); the
//!   first inherited UDP socket is `quic`.
//! - **`--replace`**: a new relay starts beside the old one on the same host.
//!   TCP listeners use `SO_REUSEPORT`, so both accept while the old one drains;
//!   the QUIC port is taken the moment the old relay releases it (UDP is not
//!   shared: the kernel would spread existing agents' packets over both).
//! - Plain binding, the default (TCP still with `SO_REUSEPORT`, so a
//!   `--replace` relay can join it later; Linux only lets the same user do so).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per TCP listener.
const LISTEN_BACKLOG: i32 = 4096;
/// Receive buffer asked for the QUIC socket: room for the burst of a
/// thousand agents reconnecting at once (the kernel caps it at
/// `net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 8 << 20;
/// How often `--replace` retries the QUIC port.
const REPLACE_POLL: Duration = Duration::from_millis(5);

/// What to listen on.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// HTTPS front.
    pub https: SocketAddr,
    /// Plain-HTTP front.
    pub http: Option<SocketAddr>,
    /// Metrics listener.
    pub metrics: Option<SocketAddr>,
    /// QUIC endpoint.
    pub quic: SocketAddr,
    /// Wait up to this long for another relay to release the QUIC port.
    pub replace: Option<Duration>,
    /// The process id of the relay being replaced (from its endpoints.json):
    /// it gets SIGTERM once the TCP listeners are up.
    pub replacing: Option<u32>,
}

/// The bound sockets.
#[derive(Debug)]
pub struct Sockets {
    /// HTTPS front.
    pub https: TcpListener,
    /// Plain-HTTP front.
    pub http: Option<TcpListener>,
    /// Metrics listener.
    pub metrics: Option<TcpListener>,
    /// QUIC endpoint.
    pub quic: UdpSocket,
    /// They came from the service manager.
    pub activated: bool,
}

/// Opens (or inherits) every socket.
pub fn open(w: &Wanted) -> anyhow::Result<Sockets> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        return inherited(&mut fds, w);
    }
    let https = bind_tcp(w.https, "https")?;
    let http = w.http.map(|a| bind_tcp(a, "http")).transpose()?;
    let metrics = w.metrics.map(|a| bind_tcp(a, "metrics")).transpose()?;
    let quic = match w.replace {
        Some(wait) => {
            if let Some(pid) = w.replacing {
                ask_to_hand_over(pid);
            }
            bind_udp_replacing(w.quic, wait)?
        }
        None => bind_udp(w.quic)?,
    };
    grow_recv_buffer(&quic);
    Ok(Sockets {
        https,
        http,
        metrics,
        quic,
        activated: false,
    })
}

fn inherited(fds: &mut listenfd::ListenFd, w: &Wanted) -> anyhow::Result<Sockets> {
    let mut tcp = Vec::new();
    let mut quic = None;
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            tcp.push(l);
        } else if let Ok(Some(u)) = fds.take_udp_socket(i) {
            if quic.is_none() {
                quic = Some(u);
            } else {
                tracing::warn!(fd = i + 3, "ignoring an extra inherited UDP socket");
            }
        } else {
            tracing::warn!(
                fd = i + 3,
                "ignoring an inherited socket that is neither a TCP listener nor UDP"
            );
        }
    }
    let mut take = |addr: Option<SocketAddr>| -> Option<TcpListener> {
        let addr = addr?;
        let i = tcp.iter().position(|l| {
            l.local_addr()
                .ok()
                .is_some_and(|a| same_port_and_ip(a, addr))
        })?;
        Some(tcp.swap_remove(i))
    };
    let metrics = take(w.metrics);
    let http = take(w.http);
    let https = match take(Some(w.https)) {
        Some(l) => l,
        None if tcp.len() == 1 => tcp.remove(0),
        None => bail!(
            "the service manager passed {} TCP sockets and none is bound to the https address {}; set `https` in relay.toml to the socket unit's ListenStream address",
            tcp.len(),
            w.https
        ),
    };
    for l in tcp {
        tracing::warn!(addr = ?l.local_addr().ok(), "ignoring an inherited TCP listener that matches no configured address");
    }
    // Inherited HTTP/metrics addresses that were not passed are bound here.
    let http = match (http, w.http) {
        (Some(l), _) => Some(l),
        (None, Some(a)) => Some(bind_tcp(a, "http")?),
        (None, None) => None,
    };
    let metrics = match (metrics, w.metrics) {
        (Some(l), _) => Some(l),
        (None, Some(a)) => Some(bind_tcp(a, "metrics")?),
        (None, None) => None,
    };
    let quic = match quic {
        Some(u) => u,
        None => bind_udp(w.quic)?,
    };
    https.set_nonblocking(true)?;
    quic.set_nonblocking(true)?;
    grow_recv_buffer(&quic);
    for l in http.iter().chain(metrics.iter()) {
        l.set_nonblocking(true)?;
    }
    tracing::info!("using sockets passed by the service manager");
    Ok(Sockets {
        https,
        http,
        metrics,
        quic,
        activated: true,
    })
}

fn grow_recv_buffer(s: &UdpSocket) {
    let sock = socket2::SockRef::from(s);
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(error = %e, "could not grow the QUIC receive buffer");
    }
}

/// `[::]:443` matches `0.0.0.0:443` too (a dual-stack socket).
fn same_port_and_ip(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound.port() == wanted.port()
        && (bound.ip() == wanted.ip()
            || (bound.ip().is_unspecified() && wanted.ip().is_unspecified()))
}

/// A TCP listener with `SO_REUSEPORT` (Unix) and a deep backlog.
pub fn bind_tcp(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let err = || {
        format!(
            "binding the {what} listener on {addr} (is another program using it? pick another with --{what} ADDR)"
        )
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .with_context(err)?;
    socket.set_reuse_address(true).with_context(err)?;
    #[cfg(unix)]
    socket.set_reuse_port(true).with_context(err)?;
    socket.bind(&addr.into()).with_context(err)?;
    socket.listen(LISTEN_BACKLOG).with_context(err)?;
    socket.set_nonblocking(true).with_context(err)?;
    Ok(socket.into())
}

fn bind_udp(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr).with_context(|| {
        format!(
            "binding the QUIC (UDP) listener on {addr} (another relay running? start the new one with --replace, or pick another port with --quic ADDR)"
        )
    })
}

/// Sends SIGTERM to the relay being replaced, if `pid` still is one (a
/// stale endpoints.json may name a process id reused by something else).
fn ask_to_hand_over(pid: u32) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "mcp-relay" {
        tracing::info!(
            pid,
            "the relay named in endpoints.json is not running; not signalling it"
        );
        return;
    }
    tracing::info!(pid, "asking the running relay to hand over (SIGTERM)");
    match std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => {
            tracing::warn!(pid, status = %s, "could not signal the running relay; send it SIGTERM yourself")
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "could not run kill; send the running relay SIGTERM yourself")
        }
    }
}

/// Binds the QUIC port as soon as the relay holding it lets go.
fn bind_udp_replacing(addr: SocketAddr, wait: Duration) -> anyhow::Result<UdpSocket> {
    let start = Instant::now();
    let mut said = false;
    loop {
        match UdpSocket::bind(addr) {
            Ok(s) => {
                if said {
                    tracing::info!(
                        waited_ms = start.elapsed().as_millis() as u64,
                        "took over the QUIC port"
                    );
                }
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < wait => {
                if !said {
                    tracing::info!(%addr, "waiting for the QUIC port: the running relay releases it once it has drained (send it SIGTERM if it was not signalled)");
                    said = true;
                }
                std::thread::sleep(REPLACE_POLL);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("binding the QUIC (UDP) listener on {addr} (waited {wait:?} for the running relay to release it)")
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_relays_share_tcp_but_not_udp() {
        let a = bind_tcp("127.0.0.1:0".parse().unwrap(), "https").unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind_tcp(addr, "https").expect("SO_REUSEPORT lets a replacement join");
        assert_eq!(b.local_addr().unwrap(), addr);
        let u = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let uaddr = u.local_addr().unwrap();
        let err = bind_udp(uaddr).unwrap_err();
        assert!(format!("{err:#}").contains("--replace"), "{err:#}");
        // --replace takes the port once it is free.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(u);
        });
        let taken = bind_udp_replacing(uaddr, Duration::from_secs(5)).unwrap();
        assert_eq!(taken.local_addr().unwrap(), uaddr);
        t.join().unwrap();
        let err = bind_udp_replacing(uaddr, Duration::from_millis(20)).unwrap_err();
        assert!(format!("{err:#}").contains("waited"), "{err:#}");
    }

    #[test]
    fn wildcard_addresses_match_across_families() {
        let v6: SocketAddr = "[::]:443".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:443".parse().unwrap();
        assert!(same_port_and_ip(v6, v4));
        assert!(!same_port_and_ip(v6, "0.0.0.0:80".parse().unwrap()));
        assert!(!same_port_and_ip(
            "127.0.0.1:443".parse().unwrap(),
            "127.0.0.2:443".parse().unwrap()
        ));
    }
}
