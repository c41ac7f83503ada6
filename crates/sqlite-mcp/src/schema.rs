//! Reading the schema: the table list with row counts, one table's structure, and the DDL.
//!
//! Everything here runs on a read connection under the read-only policy, using the
//! `pragma_*` table-valued functions with bound parameters rather than formatted PRAGMAs.

use rusqlite::{OptionalExtension, params};

use crate::authorizer::Policy;
use crate::config::{MAX_LISTED_TABLES, ROW_COUNT_SCAN_LIMIT};
use crate::error::QueryError;
use crate::pool::Conn;
use crate::results::{
    ColumnInfo, ForeignKeyInfo, IndexInfo, TableDescription, TableList, TableSummary, TriggerInfo,
};

/// Lists tables and views with a row count for each table.
///
/// Counts come from `sqlite_stat1` when ANALYZE left one, else from a `count(*)` that stops at
/// [`ROW_COUNT_SCAN_LIMIT`] rows. If the time limit runs out while counting, the remaining
/// tables are listed without a count.
pub(crate) fn list_tables(
    conn: &Conn,
    timeout: std::time::Duration,
) -> Result<TableList, QueryError> {
    let err = |e| conn.explain(e, timeout);
    conn.auth.begin(Policy::ReadOnly);
    let (mut tables, truncated) = table_names(conn, timeout)?;
    let has_stat1: bool = conn
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1'",
            [],
            |row| row.get(0),
        )
        .map_err(err)?;
    let mut counting = true;
    for table in tables.iter_mut().filter(|t| t.kind == "table") {
        if has_stat1 && let Some(estimate) = stat1_estimate(conn, &table.name).map_err(err)? {
            table.row_count = Some(estimate);
            table.row_count_source = "sqlite_stat1".to_owned();
            continue;
        }
        if !counting {
            continue;
        }
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {})",
            quote_ident(&table.name),
            ROW_COUNT_SCAN_LIMIT + 1
        );
        conn.auth.begin(Policy::ReadOnly);
        match conn.conn.query_row(&sql, [], |row| row.get::<_, i64>(0)) {
            Ok(n) => {
                let n = u64::try_from(n).unwrap_or_default();
                if n > ROW_COUNT_SCAN_LIMIT {
                    table.row_count = Some(ROW_COUNT_SCAN_LIMIT);
                    table.row_count_source = "count_capped".to_owned();
                } else {
                    table.row_count = Some(n);
                    table.row_count_source = "count".to_owned();
                }
            }
            // Out of time: list the rest without counts rather than fail the call.
            Err(_) if conn.budget.expired() => counting = false,
            Err(e) => return Err(conn.explain(e, timeout)),
        }
    }
    Ok(TableList { tables, truncated })
}

/// Names and kinds of the user tables and views, at most [`MAX_LISTED_TABLES`].
pub(crate) fn table_names(
    conn: &Conn,
    timeout: std::time::Duration,
) -> Result<(Vec<TableSummary>, bool), QueryError> {
    conn.auth.begin(Policy::ReadOnly);
    let err = |e| conn.explain(e, timeout);
    let mut stmt = conn
        .conn
        .prepare(
            "SELECT name, type FROM sqlite_schema \
             WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name LIMIT ?1",
        )
        .map_err(err)?;
    let mut tables = stmt
        .query_map(
            [i64::try_from(MAX_LISTED_TABLES).unwrap_or(i64::MAX) + 1],
            |row| {
                Ok(TableSummary {
                    name: row.get(0)?,
                    kind: row.get(1)?,
                    row_count: None,
                    row_count_source: "none".to_owned(),
                })
            },
        )
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let truncated = tables.len() > MAX_LISTED_TABLES;
    tables.truncate(MAX_LISTED_TABLES);
    Ok((tables, truncated))
}

/// The planner's row estimate for `table`: the first number of its `sqlite_stat1` entry.
fn stat1_estimate(conn: &Conn, table: &str) -> rusqlite::Result<Option<u64>> {
    conn.auth.begin(Policy::ReadOnly);
    let stat: Option<String> = conn
        .conn
        .query_row(
            "SELECT stat FROM sqlite_stat1 WHERE tbl = ?1 ORDER BY idx IS NOT NULL LIMIT 1",
            [table],
            |row| row.get(0),
        )
        .optional()?;
    Ok(stat.and_then(|s| s.split_whitespace().next()?.parse().ok()))
}

/// The structure of one table or view.
pub(crate) fn describe_table(
    conn: &Conn,
    name: &str,
    timeout: std::time::Duration,
) -> Result<TableDescription, QueryError> {
    conn.auth.begin(Policy::ReadOnly);
    let err = |e| conn.explain(e, timeout);
    let found: Option<(String, String, Option<String>)> = conn
        .conn
        .query_row(
            "SELECT name, type, sql FROM sqlite_schema \
             WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE \
             ORDER BY name = ?1 DESC LIMIT 1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(err)?;
    let Some((name, kind, sql)) = found else {
        return Err(QueryError::NoSuchTable(name.to_owned()));
    };

    let mut stmt = conn
        .conn
        .prepare(
            "SELECT name, type, \"notnull\", dflt_value, pk, hidden \
             FROM pragma_table_xinfo(?1) ORDER BY cid",
        )
        .map_err(err)?;
    let columns = stmt
        .query_map([&name], |row| {
            Ok(ColumnInfo {
                name: row.get(0)?,
                declared_type: row.get(1)?,
                nullable: row.get::<_, i64>(2)? == 0,
                default: row.get(3)?,
                primary_key_position: row.get(4)?,
                hidden: row.get::<_, i64>(5)? != 0,
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let mut pk: Vec<&ColumnInfo> = columns
        .iter()
        .filter(|c| c.primary_key_position > 0)
        .collect();
    pk.sort_by_key(|c| c.primary_key_position);
    let primary_key = pk.iter().map(|c| c.name.clone()).collect();

    let mut stmt = conn
        .conn
        .prepare(
            "SELECT id, \"from\", \"table\", \"to\", on_update, on_delete \
             FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .map_err(err)?;
    let foreign_keys = stmt
        .query_map([&name], |row| {
            Ok(ForeignKeyInfo {
                id: row.get(0)?,
                from: row.get(1)?,
                table: row.get(2)?,
                to: row.get(3)?,
                on_update: row.get(4)?,
                on_delete: row.get(5)?,
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;

    let mut stmt = conn
        .conn
        .prepare(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY name",
        )
        .map_err(err)?;
    let mut indexes = stmt
        .query_map([&name], |row| {
            Ok(IndexInfo {
                name: row.get(0)?,
                unique: row.get::<_, i64>(1)? != 0,
                origin: row.get(2)?,
                partial: row.get::<_, i64>(3)? != 0,
                columns: Vec::new(),
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let mut stmt = conn
        .conn
        .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
        .map_err(err)?;
    for index in &mut indexes {
        index.columns = stmt
            .query_map([&index.name], |row| {
                Ok(row
                    .get::<_, Option<String>>(0)?
                    .unwrap_or_else(|| "<expr>".to_owned()))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
    }

    let mut stmt = conn
        .conn
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 \
             ORDER BY name",
        )
        .map_err(err)?;
    let triggers = stmt
        .query_map(params![&name], |row| {
            Ok(TriggerInfo {
                name: row.get(0)?,
                sql: row.get(1)?,
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;

    Ok(TableDescription {
        name,
        kind,
        sql,
        columns,
        primary_key,
        foreign_keys,
        indexes,
        triggers,
    })
}

/// The whole schema as SQL: tables, then indexes, views and triggers, at most `max_bytes`.
pub(crate) fn schema_ddl(
    conn: &Conn,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<String, QueryError> {
    conn.auth.begin(Policy::ReadOnly);
    let err = |e| conn.explain(e, timeout);
    let mut stmt = conn
        .conn
        .prepare(
            "SELECT sql FROM sqlite_schema \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 \
             ELSE 3 END, name",
        )
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut ddl = String::new();
    while let Some(row) = rows.next().map_err(err)? {
        let sql: String = row.get(0).map_err(err)?;
        if ddl.len() + sql.len() + 3 > max_bytes {
            ddl.push_str("-- schema truncated at the byte limit\n");
            break;
        }
        ddl.push_str(&sql);
        ddl.push_str(";\n\n");
    }
    Ok(ddl)
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
