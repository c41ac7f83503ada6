//! A local Streamable HTTP MCP server reached over loopback HTTP/1.1 (pooled,
//! keep-alive, no Nagle).
//!
//! `--upstream-header 'Name: value'` headers ([`HeaderSpec`]) are set on
//! every request, replacing what the client sent under that name; their
//! values may hold stored secrets (`Authorization: Bearer secret:TOKEN`, see
//! [`crate::secrets`]), filled in once at start. They are added here, after
//! the request left the tunnel, so the relay never sees them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{BoxFuture, Upstream, UpstreamBody, UpstreamError, UpstreamRequest, error_chain};
use crate::secrets::{Resolved, SecretsError, Template};

/// Idle pooled connections kept per upstream.
const POOL_MAX_IDLE: usize = 256;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers `--upstream-header` may not set: the connection's own (the
/// agent manages them), and the MCP client's session and protocol headers.
pub const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One `--upstream-header 'Name: value'`; the value may hold `secret:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSpec {
    /// The header's name.
    pub name: HeaderName,
    /// Its value, with secret placeholders.
    pub value: Template,
}

/// Why an `--upstream-header` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum HeaderSpecError {
    /// Not `Name: value`.
    #[error("expected 'Name: value', e.g. 'Authorization: Bearer secret:TOKEN'")]
    Syntax,
    /// The name is not an HTTP header name.
    #[error("{0:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")]
    BadName(String),
    /// The name is one the agent or the MCP client manages.
    #[error("{0} cannot be set with --upstream-header: the agent or the MCP client manages it")]
    Reserved(String),
    /// The value misuses `secret:`, or names a secret that is not stored.
    #[error(transparent)]
    Value(#[from] SecretsError),
    /// The value's own text is not a valid header value.
    #[error(
        "the value of header {0} has a character a header cannot carry (a newline or control character)"
    )]
    BadText(String),
    /// A secret filled into the value makes it invalid.
    #[error(
        "the value of header {name} is not a valid header value once secret {secret} is filled in (a newline or control character?); store it again with: mcp-agent secrets set {secret}"
    )]
    BadSecret {
        /// The header.
        name: String,
        /// The secret (first of the template's).
        secret: String,
    },
}

impl std::str::FromStr for HeaderSpec {
    type Err = HeaderSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s.split_once(':').ok_or(HeaderSpecError::Syntax)?;
        let name = name.trim();
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HeaderSpecError::BadName(name.to_owned()))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(HeaderSpecError::Reserved(name.to_string()));
        }
        // HTTP drops whitespace around a field value.
        let value: Template = value.trim_matches([' ', '\t']).parse()?;
        if HeaderValue::from_str(&value.render_placeholders("x")).is_err() {
            return Err(HeaderSpecError::BadText(name.to_string()));
        }
        Ok(Self { name, value })
    }
}

impl HeaderSpec {
    /// The header with its secrets filled in from `resolved`, marked
    /// sensitive (its `Debug` prints `Sensitive`).
    pub fn render(
        &self,
        resolved: &Resolved,
    ) -> Result<(HeaderName, HeaderValue), HeaderSpecError> {
        let value = self.value.render(resolved)?;
        let mut value = HeaderValue::from_bytes(value.expose().as_bytes()).map_err(|_| {
            HeaderSpecError::BadSecret {
                name: self.name.to_string(),
                secret: self
                    .value
                    .secrets()
                    .next()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            }
        })?;
        value.set_sensitive(true);
        Ok((self.name.clone(), value))
    }
}

/// An HTTP upstream at a fixed URL.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    origin: String,
    host: HeaderValue,
    /// `--upstream-header`s, set on every request (values sensitive).
    headers: Arc<HeaderMap>,
}

impl HttpUpstream {
    /// An upstream at `url` (`http://127.0.0.1:PORT/mcp`).
    pub fn new(url: &url::Url) -> anyhow::Result<Self> {
        if url.scheme() != "http" {
            anyhow::bail!("--upstream must be an http:// URL of a local MCP server, got {url}");
        }
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("--upstream {url} has no host"))?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Ok(Self {
            client,
            url: url.as_str().parse()?,
            origin: format!("http://{authority}"),
            host: HeaderValue::from_str(&authority)?,
            headers: Arc::new(HeaderMap::new()),
        })
    }

    /// Sets `headers` on every request, replacing the client's values of
    /// those names.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Arc::new(headers);
        self
    }

    /// Maps a tunnel path to the upstream: `/mcp` is the upstream URL itself;
    /// anything else is taken relative to the upstream's origin.
    fn target(&self, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        let (p, q) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if p == "/mcp" {
            let mut s = self.url.to_string();
            if let Some(q) = q {
                s.push(if self.url.query().is_some() { '&' } else { '?' });
                s.push_str(q);
            }
            s.parse()
        } else {
            format!("{}{}", self.origin, path_and_query).parse()
        }
    }
}

impl Upstream for HttpUpstream {
    fn call(
        &self,
        mut req: UpstreamRequest,
    ) -> BoxFuture<Result<http::Response<UpstreamBody>, UpstreamError>> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned();
        let this = self.clone();
        Box::pin(async move {
            *req.uri_mut() = this
                .target(&pq)
                .map_err(|e| UpstreamError::BadRequest(format!("path {pq:?}: {e}")))?;
            req.headers_mut().insert(HOST, this.host.clone());
            for name in this.headers.keys() {
                req.headers_mut().remove(name);
            }
            for (name, value) in this.headers.iter() {
                req.headers_mut().append(name, value.clone());
            }
            let resp = this.client.request(req).await.map_err(|e| {
                UpstreamError::Unavailable(format!(
                    "could not reach the local MCP server at {}: {}",
                    this.url,
                    error_chain(&e)
                ))
            })?;
            Ok(resp.map(|b| b.map_err(|e| Box::new(e) as super::BoxError).boxed()))
        })
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_to_upstream() {
        let up = HttpUpstream::new(&"http://127.0.0.1:9000/mcp".parse().unwrap()).unwrap();
        assert_eq!(
            up.target("/mcp").unwrap().to_string(),
            "http://127.0.0.1:9000/mcp"
        );
        assert_eq!(
            up.target("/mcp?a=1").unwrap().to_string(),
            "http://127.0.0.1:9000/mcp?a=1"
        );
        assert_eq!(
            up.target("/.well-known/x").unwrap().to_string(),
            "http://127.0.0.1:9000/.well-known/x"
        );
        let up = HttpUpstream::new(&"http://127.0.0.1:9000/api/v1/mcp".parse().unwrap()).unwrap();
        assert_eq!(
            up.target("/mcp").unwrap().to_string(),
            "http://127.0.0.1:9000/api/v1/mcp"
        );
        assert!(HttpUpstream::new(&"https://x/mcp".parse().unwrap()).is_err());
    }

    #[test]
    fn header_specs_are_checked() {
        let h: HeaderSpec = "Authorization:   Bearer secret:TOKEN ".parse().unwrap();
        assert_eq!(h.name, "authorization");
        assert_eq!(h.value.render_placeholders("x"), "Bearer x");
        let h: HeaderSpec = "X-Api-Key:k".parse().unwrap();
        let (name, value) = h.render(&Resolved::default()).unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-api-key", "k"));
        assert!(value.is_sensitive());
        assert_eq!(format!("{value:?}"), "Sensitive");
        let cases = [
            ("no colon", "expected 'Name: value'"),
            ("Bad Name: v", "not an HTTP header name"),
            (": v", "not an HTTP header name"),
            ("Host: evil", "host cannot be set"),
            ("Mcp-Session-Id: x", "mcp-session-id cannot be set"),
            ("X-A: secret:", "must be followed by a secret name"),
            ("X-A: a\rb", "a newline or control character"),
        ];
        for (bad, want) in cases {
            let e = bad.parse::<HeaderSpec>().unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let e = "X-A: secret:NOPE"
            .parse::<HeaderSpec>()
            .unwrap()
            .render(&Resolved::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("no secret NOPE"), "{e}");
    }

    #[tokio::test]
    async fn configured_headers_replace_the_clients() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request head incomplete");
                buf.extend_from_slice(&chunk[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(buf).unwrap().to_ascii_lowercase()
        });
        let mut headers = HeaderMap::new();
        for spec in ["Authorization: Bearer abc", "X-Two: 1", "X-Two: 2"] {
            let (n, v) = spec
                .parse::<HeaderSpec>()
                .unwrap()
                .render(&Resolved::default())
                .unwrap();
            headers.append(n, v);
        }
        let up = HttpUpstream::new(&format!("http://{addr}/mcp").parse().unwrap())
            .unwrap()
            .with_headers(headers);
        assert!(!format!("{up:?}").contains("abc"));
        let req = http::Request::builder()
            .method("POST")
            .uri("/mcp")
            .header("authorization", "Bearer from-client")
            .header("x-other", "kept")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let resp = up.call(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let head = server.await.unwrap();
        assert!(head.contains("authorization: bearer abc\r\n"), "{head}");
        assert!(!head.contains("from-client"), "{head}");
        assert!(
            head.contains("x-two: 1\r\n") && head.contains("x-two: 2\r\n"),
            "{head}"
        );
        assert!(head.contains("x-other: kept\r\n"), "{head}");
    }
}
