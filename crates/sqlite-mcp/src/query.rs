//! Running one statement on a connection: compile it under a policy, bind parameters, and
//! stream rows into a result bounded by the row and byte caps.
//!
//! These functions run on a pool's blocking thread ([`crate::pool::Pool::run`]); the time limit
//! is enforced there by the connection's progress handler.

use rusqlite::Statement;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

use crate::authorizer::Policy;
use crate::config::COUNT_AHEAD_ROWS;
use crate::error::QueryError;
use crate::pool::Conn;
use crate::render::{json_size, param_from_json, value_to_json};
use crate::results::{QueryResult, WriteResult};

/// The caps one call works under, copied from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) max_rows: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_query_len: usize,
    pub(crate) timeout: std::time::Duration,
}

/// A query's rows plus, when truncated, which cap stopped it.
#[derive(Debug)]
pub(crate) struct Rows {
    pub(crate) result: QueryResult,
    pub(crate) note: Option<String>,
}

/// Runs one statement that must not change the database.
pub(crate) fn read_query(
    conn: &mut Conn,
    sql: &str,
    params: &[Value],
    caps: Caps,
) -> Result<Rows, QueryError> {
    check_sql(sql, caps.max_query_len)?;
    let params = bind_values(params)?;
    let mut stmt = prepare(conn, sql, Policy::ReadOnly, caps)?;
    // The authorizer already refused every write action; this is the engine's second opinion.
    if !stmt.readonly() {
        return Err(QueryError::NotReadOnly);
    }
    bind(&mut stmt, &params)?;
    collect(conn, stmt, caps)
}

/// Runs `EXPLAIN QUERY PLAN` for one read-only statement.
pub(crate) fn explain_query(conn: &mut Conn, sql: &str, caps: Caps) -> Result<Rows, QueryError> {
    check_sql(sql, caps.max_query_len)?;
    // Compile the statement itself first: an EXPLAIN is always "read-only", what it explains
    // may not be (VACUUM INTO compiles without any authorizer action).
    if !prepare(conn, sql, Policy::ReadOnly, caps)?.readonly() {
        return Err(QueryError::NotReadOnly);
    }
    let explained = format!("EXPLAIN QUERY PLAN {sql}");
    let stmt = prepare(conn, &explained, Policy::ReadOnly, caps)?;
    // Unbound placeholders are NULL, which is fine for a plan.
    collect(conn, stmt, caps)
}

/// Runs one statement that changes data or schema (the write connection only).
pub(crate) fn write_query(
    conn: &mut Conn,
    sql: &str,
    params: &[Value],
    caps: Caps,
) -> Result<WriteResult, QueryError> {
    check_sql(sql, caps.max_query_len)?;
    let params = bind_values(params)?;
    let mut stmt = prepare(conn, sql, Policy::Write, caps)?;
    if stmt.readonly() {
        return Err(QueryError::InvalidArguments(
            "write_query is for statements that change the database; use read_query for \
             SELECT"
                .to_owned(),
        ));
    }
    bind(&mut stmt, &params)?;
    execute(conn, stmt, caps)
}

/// Runs one CREATE TABLE statement (the write connection only).
pub(crate) fn create_table(
    conn: &mut Conn,
    sql: &str,
    caps: Caps,
) -> Result<WriteResult, QueryError> {
    check_sql(sql, caps.max_query_len)?;
    let stmt = match prepare(conn, sql, Policy::CreateTable, caps) {
        Err(QueryError::Denied { what, .. }) => {
            return Err(QueryError::NotCreateTable(format!(
                "this statement would run {what}"
            )));
        }
        other => other?,
    };
    if conn.auth.tables_created() != 1 {
        return Err(QueryError::NotCreateTable(
            "this statement does not create a table".to_owned(),
        ));
    }
    execute(conn, stmt, caps)
}

/// Refuses SQL that is too long before SQLite sees it.
fn check_sql(sql: &str, max_len: usize) -> Result<(), QueryError> {
    if sql.len() > max_len {
        return Err(QueryError::TooLong {
            len: sql.len(),
            max: max_len,
        });
    }
    Ok(())
}

fn bind_values(params: &[Value]) -> Result<Vec<SqlValue>, QueryError> {
    params
        .iter()
        .enumerate()
        .map(|(i, v)| param_from_json(i, v))
        .collect::<Result<_, _>>()
        .map_err(QueryError::InvalidArguments)
}

/// Compiles exactly one statement under `policy`.
fn prepare<'c>(
    conn: &'c Conn,
    sql: &str,
    policy: Policy,
    caps: Caps,
) -> Result<Statement<'c>, QueryError> {
    conn.auth.begin(policy);
    conn.conn.prepare(sql).map_err(|e| {
        let error = conn.explain(e, caps.timeout);
        // A refusal of a later statement reads better as "one statement per call".
        if matches!(error, QueryError::Denied { .. }) && has_second_statement(sql) {
            QueryError::MultipleStatements
        } else {
            error
        }
    })
}

fn bind(stmt: &mut Statement<'_>, params: &[SqlValue]) -> Result<(), QueryError> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(QueryError::InvalidArguments(format!(
            "the statement has {expected} placeholder(s) but {} param(s) were given",
            params.len()
        )));
    }
    for (i, value) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)
            .map_err(|e| QueryError::InvalidArguments(format!("params[{i}]: {e}")))?;
    }
    Ok(())
}

/// Steps a statement to the end, keeping rows until a cap is reached and counting the rest up
/// to [`COUNT_AHEAD_ROWS`].
fn collect(conn: &Conn, mut stmt: Statement<'_>, caps: Caps) -> Result<Rows, QueryError> {
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut kept: Vec<Vec<Value>> = Vec::new();
    let mut bytes = 0usize;
    let mut note = None;
    let mut produced: u64 = 0;
    let mut counted_all = true;
    let mut rows = stmt.raw_query();
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            // Running out of time while only counting still returns the rows we kept.
            Err(_) if note.is_some() => {
                counted_all = false;
                break;
            }
            Err(e) => return Err(conn.explain(e, caps.timeout)),
        };
        produced += 1;
        if note.is_some() {
            if produced > kept.len() as u64 + COUNT_AHEAD_ROWS {
                counted_all = false;
                break;
            }
            continue;
        }
        if kept.len() >= caps.max_rows {
            note = Some(format!("at the {}-row limit", caps.max_rows));
            continue;
        }
        let mut row_bytes = 2 + columns.len();
        for i in 0..columns.len() {
            let value = row.get_ref(i).map_err(|e| conn.explain(e, caps.timeout))?;
            row_bytes += json_size(value);
        }
        if bytes + row_bytes > caps.max_bytes {
            note = Some(format!("at the {}-byte limit", caps.max_bytes));
            continue;
        }
        bytes += row_bytes;
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let value = row.get_ref(i).map_err(|e| conn.explain(e, caps.timeout))?;
            values.push(value_to_json(value));
        }
        kept.push(values);
    }
    let truncated = note.is_some();
    Ok(Rows {
        result: QueryResult {
            columns,
            row_count: kept.len(),
            rows: kept,
            truncated,
            total_rows: counted_all.then_some(produced),
        },
        note,
    })
}

/// Steps a changing statement to completion (RETURNING rows are stepped over).
fn execute(conn: &Conn, mut stmt: Statement<'_>, caps: Caps) -> Result<WriteResult, QueryError> {
    let mut rows = stmt.raw_query();
    loop {
        match rows.next() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(conn.explain(e, caps.timeout)),
        }
    }
    drop(rows);
    Ok(WriteResult {
        rows_affected: conn.conn.changes(),
        last_insert_rowid: conn.conn.last_insert_rowid(),
    })
}

/// Whether `sql` has more than whitespace and comments after its first statement.
///
/// Only used to word an error: the engine decides what runs. Knows SQL's quotes (`'`, `"`,
/// `` ` ``, `[...]`), comments (`--`, `/* */`) and that inside `CREATE TRIGGER` only a `;` after
/// `END` ends the statement (the rule of SQLite's `sqlite3_complete`).
pub(crate) fn has_second_statement(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut words: Vec<String> = Vec::new();
    let mut ended = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
                continue;
            }
            _ if b.is_ascii_whitespace() => {}
            _ if ended => return true,
            b';' => ended = !is_trigger(&words) || words.last().is_some_and(|w| w == "END"),
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if b == b'[' { b']' } else { b };
                i = bytes[i + 1..]
                    .iter()
                    .position(|&c| c == close)
                    .map_or(bytes.len(), |n| i + 1 + n);
                words.push(String::new());
            }
            _ if b.is_ascii_alphanumeric() || b == b'_' => {
                let len = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .unwrap_or(bytes.len() - i);
                words.push(sql[i..i + len].to_ascii_uppercase());
                i += len;
                continue;
            }
            _ => words.push(String::new()),
        }
        i += 1;
    }
    false
}

/// Whether the statement so far is a `CREATE [TEMP|TEMPORARY] TRIGGER`.
fn is_trigger(words: &[String]) -> bool {
    match words {
        [create, trigger, ..] if create == "CREATE" && trigger == "TRIGGER" => true,
        [create, temp, trigger, ..] => {
            create == "CREATE" && (temp == "TEMP" || temp == "TEMPORARY") && trigger == "TRIGGER"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_statement_detection_ignores_quotes_and_comments() {
        assert!(!has_second_statement("SELECT 1"));
        assert!(!has_second_statement("SELECT 1;"));
        assert!(!has_second_statement("SELECT 1; -- trailing\n /* c */ "));
        assert!(!has_second_statement("SELECT ';DROP TABLE t'"));
        assert!(!has_second_statement("SELECT \"a;b\" FROM [x;y]"));
        assert!(has_second_statement("SELECT 1; DROP TABLE t"));
        assert!(has_second_statement("SELECT 1;/* */DELETE FROM t"));
        assert!(has_second_statement("SELECT 'a'';'; x"));
        let trigger = "CREATE TEMP TRIGGER t AFTER INSERT ON c BEGIN SELECT 1; SELECT 2; END";
        assert!(!has_second_statement(trigger));
        assert!(!has_second_statement(&format!("{trigger};")));
        assert!(has_second_statement(&format!("{trigger}; DROP TABLE c")));
    }
}
