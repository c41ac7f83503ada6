//! The upstream's tools and their annotations, for policy: the agent lists
//! them itself (as an MCP client of its own upstream: `initialize`,
//! `notifications/initialized`, `tools/list` with pagination, then `DELETE`
//! of the session) and reports them to the relay in a `Catalog` frame.
//! Works the same for every upstream kind, because they all take
//! Streamable HTTP requests.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mcp_tunnel_proto::ToolDescriptor;
use serde_json::{Value, json};

use crate::upstream::Upstream;

/// Longest the whole listing may take.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response body read while listing.
pub const MAX_CATALOG_BODY: usize = 16 * 1024 * 1024;
/// Pages of `tools/list` followed at most.
pub const MAX_PAGES: usize = 100;

/// How the agent's own listing requests introduce themselves to the upstream.
const USER_AGENT: &str = concat!("mcp-agent/", env!("CARGO_PKG_VERSION"), " (tool catalog)");

/// The MCP protocol version the agent's own client speaks to its upstream.
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Lists the upstream's tools (name + annotations).
pub async fn fetch_tools(upstream: &dyn Upstream) -> anyhow::Result<Vec<ToolDescriptor>> {
    tokio::time::timeout(CATALOG_TIMEOUT, list(upstream))
        .await
        .context("the upstream did not list its tools in time")?
}

async fn list(upstream: &dyn Upstream) -> anyhow::Result<Vec<ToolDescriptor>> {
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-agent (tool catalog)", "version": env!("CARGO_PKG_VERSION")}
        }
    });
    let (session, reply) = post_v(upstream, None, PROTOCOL_VERSION, &init).await?;
    let reply = reply.context("the upstream did not answer initialize")?;
    if let Some(e) = reply.get("error") {
        bail!("the upstream refused initialize: {e}");
    }
    let version = reply["result"]["protocolVersion"]
        .as_str()
        .unwrap_or(PROTOCOL_VERSION)
        .to_owned();
    let s = session.as_deref();
    let _ = post_v(
        upstream,
        s,
        &version,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let mut params = json!({});
        if let Some(c) = &cursor {
            params["cursor"] = Value::String(c.clone());
        }
        let req =
            json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params});
        let (_, reply) = post_v(upstream, s, &version, &req).await?;
        let reply = reply.context("the upstream did not answer tools/list")?;
        if let Some(e) = reply.get("error") {
            // A server without tools answers "method not found".
            if reply["error"]["code"].as_i64() == Some(-32601) {
                break;
            }
            bail!("the upstream refused tools/list: {e}");
        }
        for t in reply["result"]["tools"].as_array().into_iter().flatten() {
            if let Some(name) = t["name"].as_str() {
                tools.push(ToolDescriptor {
                    name: name.to_owned(),
                    annotations: t.get("annotations").filter(|a| a.is_object()).cloned(),
                });
            }
        }
        cursor = reply["result"]["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    if let Some(s) = s {
        let req = http::Request::builder()
            .method("DELETE")
            .uri("/mcp")
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", &version)
            .header("user-agent", USER_AGENT)
            .body(Full::new(Bytes::new()))?;
        let _ = upstream.call(req).await;
    }
    Ok(tools)
}

/// POSTs one message; returns the session id the response set and the
/// JSON-RPC response to it (from a JSON or an SSE body).
async fn post_v(
    upstream: &dyn Upstream,
    session: Option<&str>,
    version: &str,
    msg: &Value,
) -> anyhow::Result<(Option<String>, Option<Value>)> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .header("user-agent", USER_AGENT);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let req = req.body(Full::new(Bytes::from(msg.to_string())))?;
    let resp = upstream
        .call(req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let status = resp.status();
    let new_session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = read_bounded(resp.into_body()).await?;
    if status == http::StatusCode::ACCEPTED || body.is_empty() {
        return Ok((new_session, None));
    }
    if !status.is_success() {
        bail!(
            "the upstream answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    let id = msg.get("id");
    let reply = if sse {
        sse_messages(&body).into_iter().find(|m| m.get("id") == id)
    } else {
        serde_json::from_slice::<Value>(&body).ok()
    };
    Ok((new_session, reply))
}

/// Reads a whole body of at most [`MAX_CATALOG_BODY`] bytes.
async fn read_bounded(mut body: crate::upstream::UpstreamBody) -> anyhow::Result<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => bail!("reading the upstream's answer: {e}"),
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_CATALOG_BODY {
                bail!("the upstream's answer is over {MAX_CATALOG_BODY} bytes");
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The JSON payloads of an SSE body's events.
fn sse_messages(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if line.is_empty() && !data.is_empty() {
            if let Ok(v) = serde_json::from_str(&data) {
                out.push(v);
            }
            data.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_bodies_yield_their_json_messages() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n: ping\n\ndata: {\"a\":\ndata: 1}\n\n";
        let m = sse_messages(body);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["id"], 1);
        assert_eq!(m[1]["a"], 1);
    }

    #[tokio::test]
    async fn lists_the_built_in_sqlite_tools_with_their_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shop.db");
        mcp_sqlite::create_demo_database(&db).unwrap();
        let server = mcp_sqlite::SqliteServer::open(mcp_sqlite::SqliteConfig::new(&db)).unwrap();
        let up = crate::upstream::sqlite::SqliteUpstream::new(server);
        let tools = fetch_tools(&up).await.unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert!(
            names.contains(&"read_query") && names.contains(&"list_tables"),
            "{names:?}"
        );
        let read = tools.iter().find(|t| t.name == "read_query").unwrap();
        assert_eq!(read.annotations.as_ref().unwrap()["readOnlyHint"], true);
    }
}
