//! [`SqliteServer`]: the rmcp `ServerHandler` that maps tools and resources onto the pools.

use std::path::Path;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::SqliteConfig;
use crate::error::{OpenError, QueryError};
use crate::pool::{Conn, Pool};
use crate::prompts;
use crate::query::{self, Caps};
use crate::render;
use crate::resources::{self, ResourceUri};
use crate::schema;
use crate::tools::{
    self, CREATE_TABLE, DESCRIBE_TABLE, EXPLAIN_QUERY, LIST_TABLES, NoArgs, QueryArgs, READ_QUERY,
    SqlArgs, TableArgs, WRITE_QUERY,
};

/// A SQLite database served as MCP tools and resources.
///
/// Cheap to clone: clones share the connection pools, so one server can back many MCP sessions
/// (one clone per session, as [`streamable_http_service`](crate::streamable_http_service) does).
#[derive(Debug, Clone)]
pub struct SqliteServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SqliteConfig,
    caps: Caps,
    read: Pool,
    write: Option<Pool>,
    tools: Vec<Tool>,
    /// The file name shown to clients; the full path stays on this machine.
    display_name: String,
}

impl SqliteServer {
    /// Opens the database and its connections.
    ///
    /// Read-only mode (the default) needs an existing SQLite file and opens it with
    /// `SQLITE_OPEN_READ_ONLY`. With `allow_writes` the file is created if missing and put in
    /// WAL mode.
    ///
    /// # Errors
    /// [`OpenError`] when the configuration is out of range, the file is missing in read-only
    /// mode, or SQLite cannot open it as a database.
    pub fn open(config: SqliteConfig) -> Result<Self, OpenError> {
        config.validate()?;
        // An absolute path never starts with `file:`, so SQLite cannot read it as a URI.
        let path = std::path::absolute(&config.path).map_err(|e| {
            OpenError::InvalidConfig(format!(
                "cannot resolve database path {}: {e}",
                config.path.display()
            ))
        })?;
        let sqlite_err = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };
        if !config.allow_writes && !path.is_file() {
            return Err(OpenError::Missing { path });
        }
        let write = if config.allow_writes {
            let conn = Conn::open_write(&path, &config).map_err(sqlite_err)?;
            probe(&conn).map_err(sqlite_err)?;
            Some(Pool::new(vec![conn], config.query_timeout))
        } else {
            None
        };
        let mut readers = Vec::with_capacity(config.connections);
        for _ in 0..config.connections {
            let conn = Conn::open_read(&path, &config).map_err(sqlite_err)?;
            readers.push(conn);
        }
        if let Some(first) = readers.first() {
            probe(first).map_err(sqlite_err)?;
        }
        let caps = Caps {
            max_rows: config.max_rows,
            max_bytes: config.max_bytes,
            max_query_len: config.max_query_len,
            timeout: config.query_timeout,
        };
        let display_name = display_name(&path);
        tracing::info!(
            db = %display_name,
            allow_writes = config.allow_writes,
            connections = config.connections,
            "SQLite MCP server opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                tools: tools::tools(config.allow_writes),
                read: Pool::new(readers, config.query_timeout),
                caps,
                write,
                display_name,
                config,
            }),
        })
    }

    /// The configuration the server was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// The tools this server lists, with schemas and annotations.
    pub fn tools(&self) -> &[Tool] {
        &self.inner.tools
    }

    /// Runs one tool call. Every failure the caller can act on (bad SQL, refused statement,
    /// timeout, bad arguments) is an `isError` result; only an unknown tool name is a protocol
    /// error, as the MCP specification asks.
    async fn call(&self, name: &str, args: Value) -> Result<CallToolResult, McpError> {
        let outcome = match name {
            LIST_TABLES => self.list_tables(args).await,
            DESCRIBE_TABLE => self.describe_table(args).await,
            READ_QUERY => self.read_query(args).await,
            EXPLAIN_QUERY => self.explain_query(args).await,
            WRITE_QUERY => self.write_query(args).await,
            CREATE_TABLE => self.create_table(args).await,
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool {other:?}; call tools/list for the available tools"),
                    None,
                ));
            }
        };
        Ok(outcome.unwrap_or_else(|error| {
            tracing::debug!(tool = name, %error, "tool call failed");
            CallToolResult::error(vec![ContentBlock::text(error.to_string())])
        }))
    }

    async fn list_tables(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let NoArgs {} = parse_args(args)?;
        let timeout = self.inner.caps.timeout;
        let list = self
            .inner
            .read
            .run(move |conn| schema::list_tables(conn, timeout))
            .await?;
        success(render::tables_text(&list), &list)
    }

    async fn describe_table(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let TableArgs { table_name } = parse_args(args)?;
        let desc = self.describe(table_name).await?;
        success(render::description_text(&desc), &desc)
    }

    async fn read_query(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let QueryArgs { query, params } = parse_args(args)?;
        let caps = self.inner.caps;
        let rows = self
            .inner
            .read
            .run(move |conn| query::read_query(conn, &query, &params.unwrap_or_default(), caps))
            .await?;
        success(
            render::query_text(&rows.result, rows.note.as_deref()),
            &rows.result,
        )
    }

    async fn explain_query(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let SqlArgs { query } = parse_args(args)?;
        let caps = self.inner.caps;
        let rows = self
            .inner
            .read
            .run(move |conn| query::explain_query(conn, &query, caps))
            .await?;
        success(render::plan_text(&rows.result), &rows.result)
    }

    async fn write_query(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let pool = self.writer(WRITE_QUERY)?;
        let QueryArgs { query, params } = parse_args(args)?;
        let caps = self.inner.caps;
        let result = pool
            .run(move |conn| query::write_query(conn, &query, &params.unwrap_or_default(), caps))
            .await?;
        success(render::write_text(&result), &result)
    }

    async fn create_table(&self, args: Value) -> Result<CallToolResult, QueryError> {
        let pool = self.writer(CREATE_TABLE)?;
        let SqlArgs { query } = parse_args(args)?;
        let caps = self.inner.caps;
        let result = pool
            .run(move |conn| query::create_table(conn, &query, caps))
            .await?;
        success("table created".to_owned(), &result)
    }

    fn writer(&self, tool: &str) -> Result<&Pool, QueryError> {
        self.inner
            .write
            .as_ref()
            .ok_or_else(|| QueryError::WritesDisabled(tool.to_owned()))
    }

    async fn describe(
        &self,
        table: String,
    ) -> Result<crate::results::TableDescription, QueryError> {
        let timeout = self.inner.caps.timeout;
        self.inner
            .read
            .run(move |conn| schema::describe_table(conn, &table, timeout))
            .await
    }
}

impl ServerHandler for SqliteServer {
    fn get_info(&self) -> ServerConfig {
        let mode = if self.inner.config.allow_writes {
            "Writes are allowed through write_query and create_table."
        } else {
            "The database is read-only: the SQLite engine refuses every write."
        };
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(
            Implementation::new("mcp-sqlite", env!("CARGO_PKG_VERSION"))
                .with_title("SQLite")
                .with_description("A SQLite database served as MCP tools"),
        )
        .with_instructions(format!(
            "SQLite database {}. Start with list_tables, then describe_table; read_query runs \
             one statement per call and returns at most {} rows. {mode}",
            self.inner.display_name, self.inner.config.max_rows
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.unwrap_or_default());
        // Dropping the call on cancellation interrupts its statement (see `Pool::run`).
        tokio::select! {
            result = self.call(&request.name, args) => result.map(CallToolResponse::from),
            () = context.ct.cancelled() => Ok(CallToolResult::error(vec![ContentBlock::text(
                QueryError::Cancelled.to_string(),
            )])
            .into()),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(prompts::prompt_list()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        if request.name != prompts::ANALYST_PROMPT {
            return Err(McpError::invalid_params(
                format!(
                    "no prompt {:?}; this server has {}",
                    request.name,
                    prompts::ANALYST_PROMPT
                ),
                None,
            ));
        }
        let question = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("question"))
            .and_then(|v| v.as_str());
        Ok(prompts::analyst_prompt(&self.inner.display_name, question).into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let timeout = self.inner.caps.timeout;
        let (tables, _truncated) = self
            .inner
            .read
            .run(move |conn| schema::table_names(conn, timeout))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ListResourcesResult::with_all_items(
            resources::resource_list(&tables),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            resources::table_template(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let contents = match ResourceUri::parse(&uri) {
            Some(ResourceUri::Schema) => {
                let (max_bytes, timeout) = (self.inner.caps.max_bytes, self.inner.caps.timeout);
                let ddl = self
                    .inner
                    .read
                    .run(move |conn| schema::schema_ddl(conn, max_bytes, timeout))
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                ResourceContents::text(ddl, uri).with_mime_type("application/sql")
            }
            Some(ResourceUri::Table(name)) => {
                let desc = self.describe(name).await.map_err(|e| match e {
                    QueryError::NoSuchTable(_) => McpError::resource_not_found(e.to_string(), None),
                    other => McpError::internal_error(other.to_string(), None),
                })?;
                let json = serde_json::to_string_pretty(&desc)
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                ResourceContents::text(json, uri).with_mime_type("application/json")
            }
            None => {
                return Err(McpError::resource_not_found(
                    format!(
                        "no resource {uri:?}; this server serves {} and {}{{name}}",
                        resources::SCHEMA_URI,
                        resources::TABLE_URI_PREFIX
                    ),
                    None,
                ));
            }
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// Deserializes tool arguments, naming what is wrong.
fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, QueryError> {
    serde_json::from_value(args).map_err(|e| QueryError::InvalidArguments(e.to_string()))
}

/// A successful result: the text view plus the same data as `structuredContent`.
fn success<T: Serialize>(text: String, data: &T) -> Result<CallToolResult, QueryError> {
    let value = serde_json::to_value(data)
        .map_err(|e| QueryError::Internal(format!("cannot serialize result: {e}")))?;
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    Ok(result)
}

/// Checks that the file is a readable SQLite database.
fn probe(conn: &Conn) -> rusqlite::Result<()> {
    conn.auth.begin(crate::authorizer::Policy::ReadOnly);
    conn.conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|_| ())
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || "database".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}
