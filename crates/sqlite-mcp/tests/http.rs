//! Streamable HTTP: raw JSON-RPC over a real socket (`serve_http`) and in-process (the tower
//! service), as an MCP client that speaks HTTP would.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mcp_sqlite::{SqliteConfig, SqliteServer, serve_http, streamable_http_service};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::demo_db;

/// What one POST returned: status, session id header, and the JSON-RPC messages in the body.
struct Reply {
    status: StatusCode,
    session: Option<String>,
    messages: Vec<Value>,
}

fn request(authority: &str, session: Option<&str>, body: &Value) -> Request<Full<Bytes>> {
    let mut builder = Request::post(format!("http://{authority}/mcp"))
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(session) = session {
        builder = builder
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-06-18");
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn read_reply<B>(response: http::Response<B>) -> Reply
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    // A JSON body, or SSE events whose `data:` lines carry the messages.
    let messages = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(&text).unwrap()]
    } else {
        text.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect()
    };
    Reply {
        status,
        session,
        messages,
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-http-test", "version": "0"}
    }})
}

fn result_of(reply: &Reply, id: i64) -> Value {
    reply
        .messages
        .iter()
        .find(|m| m["id"] == json!(id))
        .unwrap_or_else(|| panic!("no response {id} in {:?}", reply.messages))["result"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_http_speaks_streamable_http_and_shuts_down() {
    let (_dir, path) = demo_db();
    let server = SqliteServer::open(SqliteConfig::new(&path)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_http(server, listener, async {
        let _ = stopped.await;
    }));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send = |session: Option<String>, body: Value| {
        let client = client.clone();
        let authority = authority.clone();
        async move {
            let response = client
                .request(request(&authority, session.as_deref(), &body))
                .await
                .unwrap();
            read_reply(response).await
        }
    };

    let reply = send(None, initialize()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let session = reply.session.clone().expect("stateful sessions by default");
    let info = result_of(&reply, 1);
    assert_eq!(info["serverInfo"]["name"], json!("mcp-sqlite"));
    assert!(info["capabilities"]["tools"].is_object());

    let reply = send(
        Some(session.clone()),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    let reply = send(
        Some(session.clone()),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let tools = result_of(&reply, 2)["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 4);
    assert_eq!(tools[2]["annotations"]["readOnlyHint"], json!(true));

    let reply = send(
        Some(session.clone()),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "read_query",
            "arguments": {"query": "SELECT name FROM categories ORDER BY id LIMIT 2"}
        }}),
    )
    .await;
    let result = result_of(&reply, 3);
    assert_eq!(result["isError"], json!(false));
    assert_eq!(
        result["structuredContent"]["rows"],
        json!([["Coffee"], ["Tea"]])
    );

    let reply = send(
        Some(session),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "read_query", "arguments": {"query": "DROP TABLE orders"}
        }}),
    )
    .await;
    let result = result_of(&reply, 4);
    assert_eq!(result["isError"], json!(true));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve_http stops after shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_service_works_in_process() {
    let (_dir, path) = demo_db();
    let server = SqliteServer::open(SqliteConfig::new(&path)).unwrap();
    let service = streamable_http_service(server);

    let reply = read_reply(
        service
            .clone()
            .oneshot(request("localhost", None, &initialize()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let session = reply.session.clone().unwrap();
    assert_eq!(
        result_of(&reply, 1)["serverInfo"]["name"],
        json!("mcp-sqlite")
    );

    let notified = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = read_reply(
        service
            .clone()
            .oneshot(request("localhost", Some(&session), &notified))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "list_tables", "arguments": {}
    }});
    let reply = read_reply(
        service
            .clone()
            .oneshot(request("localhost", Some(&session), &call))
            .await
            .unwrap(),
    )
    .await;
    let tables = result_of(&reply, 2)["structuredContent"]["tables"].clone();
    assert_eq!(tables.as_array().unwrap().len(), 6);

    // A non-loopback Host is refused by default (DNS-rebinding protection).
    let reply = read_reply(
        service
            .oneshot(request("evil.example", None, &initialize()))
            .await
            .unwrap(),
    )
    .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
}
