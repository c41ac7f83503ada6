//! Shared helpers: fixture databases and an rmcp client connected in-process.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};

use mcp_sqlite::{SqliteConfig, SqliteServer};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An rmcp client session talking to one server over an in-memory pipe.
pub type Client = RunningService<RoleClient, ()>;

/// A temp dir holding the demo shop database at `shop.db`.
pub fn demo_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    mcp_sqlite::create_demo_database(&path).unwrap();
    (dir, path)
}

/// Opens `config` and connects a client to it.
pub async fn connect(config: SqliteConfig) -> Client {
    let server = SqliteServer::open(config).unwrap();
    connect_server(server).await
}

/// Connects a client to an already opened server.
pub async fn connect_server(server: SqliteServer) -> Client {
    let (server_side, client_side) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_side).await {
            let _ = running.waiting().await;
        }
    });
    ().serve(client_side).await.unwrap()
}

/// Calls a tool, failing the test on a protocol error.
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    try_call(client, tool, args).await.unwrap()
}

/// Calls a tool and returns protocol errors too.
pub async fn try_call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(args) = args else {
        panic!("tool arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
}

/// The text of the first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// Asserts `result` is a tool error and returns its text.
pub fn error_text(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected an error, got {result:?}"
    );
    text(result)
}

/// Asserts `result` succeeded and returns its structured content.
pub fn structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "tool failed: {}", text(result));
    result.structured_content.clone().unwrap()
}

/// SHA-256 of a file's bytes.
pub fn file_hash(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The names of the files in a directory, sorted.
pub fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
