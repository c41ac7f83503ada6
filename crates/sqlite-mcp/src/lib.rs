//! A SQLite database as an MCP server, whose read-only mode is enforced by the SQLite engine.
//!
//! ```text
//!  MCP client ──stdio / Streamable HTTP──▶ SqliteServer (rmcp ServerHandler)
//!                                             │ tools: list_tables, describe_table,
//!                                             │        read_query, explain_query
//!                                             │        (+ write_query, create_table)
//!                                             │ resources: sqlite://schema,
//!                                             │            sqlite://table/{name}
//!                                             ▼
//!                     ┌──────── read pool (N connections, spawn_blocking) ────────┐
//!                     │ SQLITE_OPEN_READ_ONLY + query_only + authorizer(ReadOnly) │
//!                     │ progress-handler deadline, interrupt on cancel            │
//!                     └───────────────────────────────────────────────────────────┘
//!                     ┌──── write connection (only with allow_writes, WAL) ───────┐
//!                     │ authorizer(Write | CreateTable): one file, no BEGIN       │
//!                     └───────────────────────────────────────────────────────────┘
//! ```
//!
//! Read-only is not a string check: every statement is compiled by SQLite with an
//! [authorizer](https://sqlite.org/c3ref/set_authorizer.html) that allows only reading actions
//! (see `authorizer.rs`), on a connection opened read-only with `query_only` on, ATTACH limited
//! to zero databases, defensive mode and an untrusted schema. A `DELETE` hidden in a CTE, a
//! comment or a second statement is refused as the `DELETE` it is.
//!
//! Every query runs on a blocking thread from a bounded pool, under a time limit enforced by
//! SQLite's progress handler, and returns at most `max_rows` rows and `max_bytes` bytes with an
//! explicit `truncated` flag. Every limit is listed in [`config`].
//!
//! Entry points: [`SqliteServer::open`], then [`serve_stdio`], [`serve_http`] or
//! [`streamable_http_service`] (an in-process tower service). [`create_demo_database`] makes a
//! sample shop database.

mod authorizer;
pub mod config;
mod demo;
mod error;
mod pool;
pub(crate) mod prompts;
mod query;
mod render;
mod resources;
mod results;
mod schema;
mod serve;
mod server;
mod tools;

pub use config::SqliteConfig;
pub use demo::{DEMO_CATEGORIES, DEMO_CUSTOMERS, DEMO_ORDERS, DEMO_PRODUCTS, create_demo_database};
pub use error::{OpenError, QueryError, ServeError};
pub use prompts::ANALYST_PROMPT;
pub use render::BLOB_KEY;
pub use resources::{SCHEMA_URI, TABLE_URI_PREFIX, table_uri};
pub use results::{
    ColumnInfo, ForeignKeyInfo, IndexInfo, QueryResult, TableDescription, TableList, TableSummary,
    TriggerInfo, WriteResult,
};
pub use serve::{
    MCP_PATH, SqliteHttpService, serve_http, serve_stdio, streamable_http_service,
    streamable_http_service_with,
};
pub use server::SqliteServer;
pub use tools::{
    CREATE_TABLE, DESCRIBE_TABLE, EXPLAIN_QUERY, LIST_TABLES, READ_QUERY, WRITE_QUERY,
    tool_annotations,
};
