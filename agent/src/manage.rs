//! The owner's side of management: `mcp-agent share`, `shares list|revoke`
//! and `audit`. Each is one request on its own QUIC connection to the relay,
//! authenticated by this device's certificate (mutual TLS).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mcp_tunnel_proto::{ALPN, Frame, ManageRequest, ManageResponse};
use mcp_tunnel_transport::{FrameReader, write_frame};
use url::Url;

use crate::credstore::CredentialStore;

/// How long one management request may take, end to end.
pub const MANAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Not logged in, or the relay is unreachable.
    #[error(transparent)]
    Setup(#[from] anyhow::Error),
    /// The relay refused (with its reason).
    #[error("{message}")]
    Refused {
        /// Its code.
        code: mcp_tunnel_proto::ErrorCode,
        /// Its reason.
        message: String,
    },
}

impl ManageError {
    /// The process exit code: 1 local/network trouble, 3 refused as
    /// unauthorized, 4 forbidden / not found / bad request.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Setup(_) => 1,
            Self::Refused { code, .. } if *code == mcp_tunnel_proto::ErrorCode::UNAUTHORIZED => 3,
            Self::Refused { .. } => 4,
        }
    }
}

/// Sends `req` to the relay this device is logged in to; returns the result.
pub async fn request(
    store: &CredentialStore,
    dir: &Path,
    req: ManageRequest,
) -> Result<serde_json::Value, ManageError> {
    let id = crate::identity::load(store, dir)?
        .context("this machine is not logged in; run `mcp-agent login --relay URL` first")?;
    let relay = id.profile.relay.clone();
    let extra = match &id.profile.ca {
        Some(p) => crate::tls::load_ca(p)?,
        None => Vec::new(),
    };
    let run = async {
        let http_tls = crate::tls::client_config(extra.clone(), &[b"h2", b"http/1.1"])?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(http_tls)
            .timeout(MANAGE_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let addr = discover_quic(&relay, &http).await?;
        let tls = crate::tls::client_config_with_auth(extra, &[ALPN], Some((id.chain, id.key)))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .context("building the QUIC TLS config")?;
        let client = quinn::ClientConfig::new(Arc::new(crypto));
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let ep = quinn::Endpoint::client(bind).context("binding a UDP socket")?;
        let host = relay.host_str().unwrap_or("localhost");
        let conn = ep
            .connect_with(client, addr, host)
            .context("starting the QUIC connection")?
            .await
            .with_context(|| format!("connecting to the relay at {addr}"))?;
        let (mut send, recv) = conn.open_bi().await.context("opening a stream")?;
        write_frame(&mut send, &Frame::ManageRequest(req))
            .await
            .context("sending the request")?;
        let _ = send.finish();
        let mut reader = FrameReader::new(recv, 0);
        let answer = reader.next().await;
        let out = match answer {
            Ok(Some(Frame::ManageResponse(r))) => Ok(r),
            Ok(Some(_)) => Err(anyhow::anyhow!(
                "the relay answered with an unexpected frame"
            )),
            Ok(None) | Err(_) => match conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(c)) => Ok(ManageResponse::Error {
                    code: mcp_tunnel_proto::ErrorCode(c.error_code.into_inner() as u32),
                    message: String::from_utf8_lossy(&c.reason).into_owned(),
                }),
                Some(e) => Err(anyhow::anyhow!("the relay closed the connection: {e}")),
                None => Err(anyhow::anyhow!(
                    "the relay closed the stream without answering"
                )),
            },
        };
        conn.close(0u32.into(), b"done");
        ep.wait_idle().await;
        out
    };
    let answer = tokio::time::timeout(MANAGE_TIMEOUT, run)
        .await
        .map_err(|_| anyhow::anyhow!("the relay did not answer within {MANAGE_TIMEOUT:?}"))??;
    match answer {
        ManageResponse::Ok { result } => Ok(result),
        ManageResponse::Error { code, message } => Err(ManageError::Refused { code, message }),
    }
}

/// The relay's QUIC address, from `/.well-known/mcp-relay`.
pub async fn discover_quic(relay: &Url, http: &reqwest::Client) -> anyhow::Result<SocketAddr> {
    #[derive(serde::Deserialize)]
    struct WellKnown {
        quic: QuicInfo,
    }
    #[derive(serde::Deserialize)]
    struct QuicInfo {
        port: u16,
        #[serde(default)]
        host: Option<String>,
    }
    let url = relay.join("/.well-known/mcp-relay")?;
    let resp = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {}", crate::connect::reqwest_chain(&e)))?;
    if !resp.status().is_success() {
        bail!(
            "GET {url} answered {}; is {relay} an mcp-relay?",
            resp.status()
        );
    }
    let info: WellKnown = resp
        .json()
        .await
        .with_context(|| format!("parsing {url}"))?;
    let host = info
        .quic
        .host
        .or_else(|| {
            relay
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
        })
        .context("the relay URL has no host")?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), info.quic.port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{host} resolved to no address"))
}

/// How to add the shared URL in the common MCP clients.
pub fn how_to_add(url: &str) -> String {
    format!(
        "Add it in the MCP client:\n\
         \x20 ChatGPT (Developer Mode): Settings → Connectors → Create → MCP server URL: {url} → Authentication: OAuth\n\
         \x20 Claude: Settings → Connectors → Add custom connector → Remote MCP server URL: {url}\n\
         \x20 VS Code: Command Palette → \"MCP: Add Server…\" → HTTP → {url}\n\
         \x20 (or in .vscode/mcp.json: {{\"servers\": {{\"shared\": {{\"type\": \"http\", \"url\": \"{url}\"}}}}}})\n\
         They sign in at the relay the first time they connect."
    )
}
