//! A minimal HTTPS client for the relay's front: one fresh HTTP/1.1
//! connection per request (as an agent's discovery after a restart opens
//! one), trusting only the relay's dev CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How long one request (connect, TLS, exchange) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response body read.
const MAX_BODY: usize = 64 * 1024;

/// The relay's HTTPS front.
#[derive(Clone)]
pub struct Front {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// Where to connect (the bound address, not a DNS lookup of the URL).
    addr: SocketAddr,
    /// `Host`: the public URL's authority, which the relay checks.
    host: HeaderValue,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Front {
    /// A client for the relay at `public_url`, listening on `addr`, whose
    /// certificate chains to the CA in `ca`.
    pub fn new(public_url: &str, addr: SocketAddr, ca: &Path) -> anyhow::Result<Self> {
        let uri: Uri = public_url
            .parse()
            .with_context(|| format!("parsing the relay's public URL {public_url}"))?;
        let authority = uri
            .authority()
            .with_context(|| format!("{public_url} has no host"))?;
        let name = ServerName::try_from(authority.host().to_owned())
            .with_context(|| format!("{} is not a TLS server name", authority.host()))?;
        let host = HeaderValue::from_str(authority.as_str()).context("building the Host header")?;
        let roots = mcp_agent::tls::load_ca(ca)?;
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store.add(cert).context("adding the dev CA")?;
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            addr,
            host,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = self
            .request(Method::GET, path)?
            .body(Empty::<Bytes>::new().boxed())?;
        self.send(req).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = self
            .request(Method::POST, path)?
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())).boxed())?;
        self.send(req).await
    }

    /// `GET /.well-known/mcp-relay` (as `mcp-agent connect` does before every
    /// attempt): the relay's QUIC port.
    pub async fn discover_quic_port(&self) -> anyhow::Result<u16> {
        #[derive(serde::Deserialize)]
        struct WellKnown {
            quic: Quic,
        }
        #[derive(serde::Deserialize)]
        struct Quic {
            port: u16,
        }
        let (status, body) = self.get("/.well-known/mcp-relay").await?;
        if !status.is_success() {
            bail!("GET /.well-known/mcp-relay answered {status}");
        }
        let w: WellKnown =
            serde_json::from_slice(&body).context("parsing /.well-known/mcp-relay")?;
        Ok(w.quic.port)
    }

    fn request(&self, method: Method, path: &str) -> anyhow::Result<hyper::http::request::Builder> {
        let uri: Uri = path.parse().with_context(|| format!("bad path {path}"))?;
        Ok(Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, self.host.clone()))
    }

    async fn send(
        &self,
        req: Request<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let exchange = async {
            let tcp = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
            let tls = self
                .connector
                .connect(self.name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .context("HTTP/1.1 handshake")?;
            let driver = tokio::spawn(async move { drop(conn.await) });
            let result = async {
                let resp = sender.send_request(req).await.context("sending")?;
                let status = resp.status();
                let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
                    .to_bytes();
                Ok::<_, anyhow::Error>((status, body))
            }
            .await;
            driver.abort();
            result
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }
}
