//! The tool catalogue: names, argument types, schemas and annotations.
//!
//! Names match the reference Python `mcp-server-sqlite` so prompts and policies written for it
//! keep working. Write tools exist only when writes are allowed.

use std::sync::Arc;

use rmcp::handler::server::tool::{schema_for_input, schema_for_output};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::results::{QueryResult, TableDescription, TableList, WriteResult};

/// `list_tables`: tables and views with row counts.
pub const LIST_TABLES: &str = "list_tables";
/// `describe_table`: one table's columns, keys, indexes and triggers.
pub const DESCRIBE_TABLE: &str = "describe_table";
/// `read_query`: one read-only SQL statement.
pub const READ_QUERY: &str = "read_query";
/// `explain_query`: the query plan of one read-only statement.
pub const EXPLAIN_QUERY: &str = "explain_query";
/// `write_query`: one data-changing statement (only with writes allowed).
pub const WRITE_QUERY: &str = "write_query";
/// `create_table`: one CREATE TABLE statement (only with writes allowed).
pub const CREATE_TABLE: &str = "create_table";

/// Arguments of `read_query` and `write_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryArgs {
    /// Exactly one SQLite statement. Use `?` placeholders for values.
    pub(crate) query: String,
    /// Values for the `?` placeholders, in order: null, boolean (bound as 0/1), integer,
    /// number, string, or {"$base64": "..."} for a BLOB.
    #[serde(default)]
    pub(crate) params: Option<Vec<Value>>,
}

/// Arguments of `explain_query` and `create_table`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlArgs {
    /// Exactly one SQLite statement.
    pub(crate) query: String,
}

/// Arguments of `describe_table`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableArgs {
    /// Name of a table or view, as listed by list_tables.
    pub(crate) table_name: String,
}

/// Arguments of `list_tables` (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

/// The annotations of each tool served in this mode, by tool name.
///
/// Read tools are `readOnlyHint: true, destructiveHint: false, idempotentHint: true,
/// openWorldHint: false`; write tools are `readOnlyHint: false, destructiveHint: true`.
pub fn tool_annotations(allow_writes: bool) -> Vec<(String, ToolAnnotations)> {
    tools(allow_writes)
        .into_iter()
        .filter_map(|tool| Some((tool.name.into_owned(), tool.annotations?)))
        .collect()
}

/// The tools served in this mode, with schemas and annotations.
pub(crate) fn tools(allow_writes: bool) -> Vec<Tool> {
    let mut tools = vec![
        tool::<NoArgs>(
            LIST_TABLES,
            "List tables",
            "List the tables and views in the database, with a row count for each table \
             (exact, capped, or the sqlite_stat1 estimate; row_count_source says which).",
        )
        .with_raw_output_schema(schema_for_output::<TableList>())
        .with_annotations(read_annotations("List tables")),
        tool::<TableArgs>(
            DESCRIBE_TABLE,
            "Describe table",
            "Show one table's or view's columns (declared type, nullability, default, primary \
             key), foreign keys, indexes, triggers and CREATE statement.",
        )
        .with_raw_output_schema(schema_for_output::<TableDescription>())
        .with_annotations(read_annotations("Describe table")),
        tool::<QueryArgs>(
            READ_QUERY,
            "Run a read-only SQL query",
            "Run one read-only SQLite statement (SELECT, or WITH ... SELECT) and return its \
             rows. Results are capped in rows and bytes: `truncated` says when rows were left \
             out and `total_rows` how many there were. Pass values through `params` and `?` \
             placeholders rather than in the SQL text. BLOBs come back as {\"$base64\": ...}.",
        )
        .with_raw_output_schema(schema_for_output::<QueryResult>())
        .with_annotations(read_annotations("Run a read-only SQL query")),
        tool::<SqlArgs>(
            EXPLAIN_QUERY,
            "Explain a query plan",
            "Show SQLite's EXPLAIN QUERY PLAN for one read-only statement, to see which \
             indexes a query uses before running it.",
        )
        .with_raw_output_schema(schema_for_output::<QueryResult>())
        .with_annotations(read_annotations("Explain a query plan")),
    ];
    if allow_writes {
        tools.push(
            tool::<QueryArgs>(
                WRITE_QUERY,
                "Run a data-changing SQL statement",
                "Run one INSERT, UPDATE, DELETE or other data- or schema-changing SQLite \
                 statement and return the number of rows affected. No BEGIN/COMMIT, ATTACH, \
                 VACUUM or setting PRAGMAs.",
            )
            .with_raw_output_schema(schema_for_output::<WriteResult>())
            .with_annotations(write_annotations(
                "Run a data-changing SQL statement",
                false,
            )),
        );
        tools.push(
            tool::<SqlArgs>(
                CREATE_TABLE,
                "Create a table",
                "Run one CREATE TABLE statement. Any other statement is refused.",
            )
            .with_raw_output_schema(schema_for_output::<WriteResult>())
            .with_annotations(write_annotations("Create a table", true)),
        );
    }
    tools
}

fn tool<A: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &'static str,
) -> Tool {
    Tool::new(name, description, input_schema::<A>()).with_title(title)
}

/// The input schema of `A`. Our argument types are plain structs, so generation cannot fail;
/// if it ever did, an open object schema keeps the tool usable and the arguments are still
/// checked when they are deserialized.
fn input_schema<A: JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<A>().unwrap_or_else(|error| {
        tracing::error!(%error, "tool input schema generation failed");
        let mut object = JsonObject::new();
        object.insert("type".to_owned(), Value::from("object"));
        Arc::new(object)
    })
}

fn read_annotations(title: &str) -> ToolAnnotations {
    ToolAnnotations::with_title(title)
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false)
}

fn write_annotations(title: &str, idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::with_title(title)
        .read_only(false)
        .destructive(true)
        .idempotent(idempotent)
        .open_world(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn read_only_mode_serves_only_read_tools() {
        let names: Vec<String> = tools(false)
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        assert_eq!(
            names,
            [LIST_TABLES, DESCRIBE_TABLE, READ_QUERY, EXPLAIN_QUERY]
        );
        for (name, annotations) in tool_annotations(false) {
            assert_eq!(annotations.read_only_hint, Some(true), "{name}");
            assert_eq!(annotations.destructive_hint, Some(false), "{name}");
            assert_eq!(annotations.idempotent_hint, Some(true), "{name}");
            assert_eq!(annotations.open_world_hint, Some(false), "{name}");
            assert!(annotations.title.is_some());
        }
    }

    #[test]
    fn write_tools_are_destructive() {
        let annotations = tool_annotations(true);
        assert_eq!(annotations.len(), 6);
        for (name, a) in annotations
            .iter()
            .filter(|(n, _)| n == WRITE_QUERY || n == CREATE_TABLE)
        {
            assert_eq!(a.read_only_hint, Some(false), "{name}");
            assert_eq!(a.destructive_hint, Some(true), "{name}");
        }
    }

    #[test]
    fn schemas_are_objects_with_required_fields() {
        for tool in tools(true) {
            assert_eq!(tool.input_schema.get("type"), Some(&Value::from("object")));
            assert!(tool.output_schema.is_some(), "{}", tool.name);
        }
        let read = tools(false)
            .into_iter()
            .find(|t| t.name == READ_QUERY)
            .unwrap();
        let required = read.input_schema.get("required").unwrap();
        assert_eq!(required, &serde_json::json!(["query"]));
    }
}
