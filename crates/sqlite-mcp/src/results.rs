//! The shapes of tool results: each is a tool's `structuredContent` and its `outputSchema`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rows of a `read_query` or `explain_query`.
///
/// Values keep SQLite's storage class: INTEGER is a JSON integer, REAL a JSON number (a
/// non-finite REAL is the string `"Infinity"`, `"-Infinity"` or `"NaN"`), TEXT a string, BLOB an
/// object `{"$base64": "..."}` and NULL `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The returned rows; each has one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Number of rows in `rows`.
    pub row_count: usize,
    /// True when the query produced more rows than were returned (row or byte cap reached).
    pub truncated: bool,
    /// Rows the query produced in all, when they were counted (omitted past the count bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rows: Option<u64>,
}

/// The outcome of a `write_query` or `create_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WriteResult {
    /// Rows inserted, updated or deleted by the statement (0 for DDL).
    pub rows_affected: u64,
    /// The rowid of the last row inserted on this connection.
    pub last_insert_rowid: i64,
}

/// The tables and views of the database, from `list_tables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableList {
    /// One entry per table or view (internal `sqlite_*` tables are left out).
    pub tables: Vec<TableSummary>,
    /// True when there were more than the listing limit.
    pub truncated: bool,
}

/// One table or view in [`TableList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableSummary {
    /// Its name.
    pub name: String,
    /// `table` or `view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Rows in the table, as described by `row_count_source`; absent for views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    /// Where `row_count` comes from: `count` (exact), `count_capped` (at least that many; the
    /// count stopped at the scan limit), `sqlite_stat1` (the planner's estimate from ANALYZE)
    /// or `none` (a view, or there was no time left to count).
    pub row_count_source: String,
}

/// One table's structure, from `describe_table` and the `sqlite://table/{name}` resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TableDescription {
    /// Its name, as stored in the schema.
    pub name: String,
    /// `table` or `view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The CREATE statement SQLite stored.
    pub sql: Option<String>,
    /// The columns, in order.
    pub columns: Vec<ColumnInfo>,
    /// Names of the primary key columns, in key order (empty: rowid only).
    pub primary_key: Vec<String>,
    /// Foreign keys, one entry per referencing column.
    pub foreign_keys: Vec<ForeignKeyInfo>,
    /// Indexes on the table.
    pub indexes: Vec<IndexInfo>,
    /// Triggers on the table: name and SQL.
    pub triggers: Vec<TriggerInfo>,
}

/// One column of a [`TableDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// The declared type, as written in CREATE TABLE (may be empty).
    pub declared_type: String,
    /// False when the column is NOT NULL.
    pub nullable: bool,
    /// The default value expression, as SQL text.
    pub default: Option<String>,
    /// Position in the primary key, counting from 1; 0 when not part of it.
    pub primary_key_position: i64,
    /// True for generated columns and hidden virtual-table columns.
    pub hidden: bool,
}

/// One referencing column of a foreign key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ForeignKeyInfo {
    /// Which foreign key of the table (columns of a composite key share it).
    pub id: i64,
    /// The column in this table.
    pub from: String,
    /// The referenced table.
    pub table: String,
    /// The referenced column (absent: the referenced table's primary key).
    pub to: Option<String>,
    /// ON UPDATE action.
    pub on_update: String,
    /// ON DELETE action.
    pub on_delete: String,
}

/// One index of a [`TableDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IndexInfo {
    /// Index name (`sqlite_autoindex_*` for constraint indexes).
    pub name: String,
    /// Whether it enforces uniqueness.
    pub unique: bool,
    /// `c` (CREATE INDEX), `u` (UNIQUE constraint) or `pk` (PRIMARY KEY).
    pub origin: String,
    /// Whether it is a partial index.
    pub partial: bool,
    /// Indexed columns in order (`<expr>` for an expression).
    pub columns: Vec<String>,
}

/// One trigger of a [`TableDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerInfo {
    /// Trigger name.
    pub name: String,
    /// Its CREATE TRIGGER statement.
    pub sql: Option<String>,
}
