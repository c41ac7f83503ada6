//! A local Streamable HTTP MCP server reached over loopback HTTP/1.1 (pooled,
//! keep-alive, no Nagle).

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{HOST, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{BoxFuture, Upstream, UpstreamBody, UpstreamError, UpstreamRequest, error_chain};

/// Idle pooled connections kept per upstream.
const POOL_MAX_IDLE: usize = 256;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP upstream at a fixed URL.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    origin: String,
    host: HeaderValue,
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
        })
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
}
