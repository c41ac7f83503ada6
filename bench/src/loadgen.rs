//! A closed-loop HTTP/1.1 load generator.
//!
//! One keep-alive connection per concurrent worker (like wrk), each posting
//! the same small JSON-RPC request as soon as the previous response body has
//! been read in full. HTTPS uses rustls with whatever crypto provider the
//! process installed (the binaries install aws-lc-rs) and trusts only the CA
//! file given. A connection that breaks is counted as an error and re-opened.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::closed_loop::{self, Exchange, Plan};
use crate::summary::Summary;

/// The request body every worker sends: a ~100-byte MCP `tools/call`.
pub const REQUEST_BODY: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"bench"}}}"#;

/// Where to send requests, resolved once.
pub struct Target {
    /// The origin-form request target (`/t/name/mcp`).
    path: Uri,
    /// The `Host` header value (the URL's authority).
    host: HeaderValue,
    /// Resolved addresses, IPv4 first.
    addrs: Vec<SocketAddr>,
    /// TLS connector and the name to verify, for `https` URLs.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `Authorization` header to send (from `LOADGEN_BEARER`, for auth-on runs).
    authorization: Option<HeaderValue>,
    /// The request body every worker sends.
    body: Bytes,
    /// Bulk runs: the response text must be at least this long.
    bulk: Option<u64>,
}

impl Target {
    /// Parses and resolves `url`. `https` URLs need `ca`, the PEM file of the
    /// CA to trust (e.g. a dev relay's `dev-ca.pem`).
    pub async fn new(url: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("parsing --url {url}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("--url {url}: the scheme must be http or https"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url} has no host"))?
            .clone();
        let host_name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_name, port))
            .await
            .with_context(|| format!("resolving {host_name}"))?
            .collect();
        // "localhost" resolves to ::1 too; the bench binds 127.0.0.1 only.
        addrs.sort_by_key(|a| !a.is_ipv4());
        let tls = if https {
            let ca = ca.with_context(|| {
                format!("--url {url} is https: pass --ca FILE with the CA certificate to trust")
            })?;
            let name = ServerName::try_from(host_name.to_owned())
                .with_context(|| format!("{host_name} is not a valid TLS server name"))?;
            Some((tls_connector(ca)?, name))
        } else {
            None
        };
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("building the request path")?;
        let host = HeaderValue::from_str(authority.as_str()).context("building the Host header")?;
        let authorization = match std::env::var("LOADGEN_BEARER") {
            Ok(t) if !t.is_empty() => Some(
                HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .context("LOADGEN_BEARER is not a valid header value")?,
            ),
            _ => None,
        };
        Ok(Self {
            path,
            host,
            addrs,
            tls,
            authorization,
            body: Bytes::from_static(REQUEST_BODY.as_bytes()),
            bulk: None,
        })
    }

    /// Makes every request a bulk `tools/call` asking the bench upstream for
    /// `bytes` bytes of text (see [`crate::upstream::bulk_request`]); a
    /// response shorter than that counts as an error.
    pub fn with_bulk(mut self, bytes: u64) -> Self {
        self.body = Bytes::from(crate::upstream::bulk_request(bytes));
        self.bulk = Some(bytes);
        self
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // TlsConnector has no Debug; whether TLS is on is what matters.
        f.debug_struct("Target")
            .field("path", &self.path)
            .field("host", &self.host)
            .field("addrs", &self.addrs)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

/// Checks that `target` answers the benchmark request with a 2xx JSON-RPC
/// response, so a misrouted run fails loudly instead of timing 404s.
pub async fn probe(target: &Arc<Target>) -> anyhow::Result<()> {
    let mut conn = Conn::open(target).await?;
    let (status, body) = conn.send(target).await?;
    if let Some(want) = target.bulk {
        if !status.is_success() || (body.len() as u64) < want {
            bail!(
                "bulk probe got {status} and {} bytes, want {want}",
                body.len()
            );
        }
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() || !text.contains("\"jsonrpc\"") {
        bail!("probe request got {status}: {text}");
    }
    Ok(())
}

/// Opens `concurrency` connections to `target`, then drives them closed-loop
/// according to `plan`.
pub async fn run(target: Arc<Target>, concurrency: usize, plan: Plan) -> anyhow::Result<Summary> {
    let mut clients = Vec::with_capacity(concurrency);
    // Connect (and handshake TLS) before the clock starts.
    for i in 0..concurrency {
        let conn = Conn::open(&target)
            .await
            .with_context(|| format!("opening connection {} of {concurrency}", i + 1))?;
        clients.push(HttpClient {
            target: Arc::clone(&target),
            conn: Some(conn),
        });
    }
    Ok(closed_loop::run(clients, plan).await)
}

/// One worker's keep-alive connection.
#[derive(Debug)]
struct HttpClient {
    target: Arc<Target>,
    conn: Option<Conn>,
}

impl Exchange for HttpClient {
    async fn exchange(&mut self) -> anyhow::Result<bool> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(Conn::open(&self.target).await?),
        };
        let result = match self.target.bulk {
            None => conn.send(&self.target).await.map(|(s, _)| s.is_success()),
            Some(want) => conn
                .send_counting(&self.target)
                .await
                .map(|(s, n)| s.is_success() && n >= want),
        };
        match result {
            Ok(ok) => Ok(ok),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// An HTTP/1.1 client connection; its driver task is aborted on drop.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Conn {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let tcp = connect_any(&target.addrs).await?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, driver) = match &target.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .context("HTTP/1.1 handshake")?;
                (sender, tokio::spawn(async move { drop(conn.await) }))
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .context("HTTP/1.1 handshake")?;
                (sender, tokio::spawn(async move { drop(conn.await) }))
            }
        };
        Ok(Self { sender, driver })
    }

    async fn send(&mut self, target: &Target) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.request(target).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends the request and reads the response body frame by frame,
    /// returning only its length (bulk runs: nothing is kept).
    async fn send_counting(&mut self, target: &Target) -> anyhow::Result<(StatusCode, u64)> {
        let resp = self.request(target).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the response body")?;
            if let Some(data) = frame.data_ref() {
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }

    async fn request(
        &mut self,
        target: &Target,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let req = Request::post(target.path.clone())
            .header(HOST, target.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
        let req = match &target.authorization {
            Some(a) => req.header(hyper::header::AUTHORIZATION, a.clone()),
            None => req,
        };
        let req = req
            .body(Full::new(target.body.clone()))
            .context("building the request")?;
        self.sender.ready().await.context("connection closed")?;
        self.sender.send_request(req).await.context("sending")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects to the first address that accepts.
async fn connect_any(addrs: &[SocketAddr]) -> anyhow::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("connecting to {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the host resolved to no address")))
}

/// A TLS connector trusting only the CA certificates in the PEM file `ca`,
/// offering HTTP/1.1 by ALPN.
fn tls_connector(ca: &Path) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding a CA from {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca {}: no PEM certificate in it", ca.display());
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::closed_loop::Stop;

    #[test]
    fn request_body_is_small_json_rpc() {
        let v: serde_json::Value = serde_json::from_str(REQUEST_BODY).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert!((80..=120).contains(&REQUEST_BODY.len()));
    }

    #[tokio::test]
    async fn drives_the_bench_upstream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::upstream::run(listener, async move {
            let _ = stop_rx.await;
        }));

        let target = Arc::new(
            Target::new(&format!("http://{addr}/mcp"), None)
                .await
                .unwrap(),
        );
        probe(&target).await.unwrap();
        let plan = Plan {
            warmup: Duration::ZERO,
            stop: Stop::Requests(200),
        };
        let s = run(Arc::clone(&target), 4, plan).await.unwrap();
        assert_eq!((s.requests, s.errors), (200, 0));

        // A wrong path is a non-2xx answer: counted as errors, and the probe refuses it.
        let wrong = Arc::new(
            Target::new(&format!("http://{addr}/nope"), None)
                .await
                .unwrap(),
        );
        assert!(probe(&wrong).await.is_err());
        let s = run(wrong, 2, plan).await.unwrap();
        assert_eq!((s.requests, s.errors), (200, 200));

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn https_needs_a_ca() {
        let err = Target::new("https://127.0.0.1:1/mcp", None)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("--ca"));
    }
}
