//! SQLite values to JSON and back, and the compact text views of tool results.
//!
//! The text view is for people and models reading the `content` block: an aligned table whose
//! cells hold the same values as `structuredContent` (BLOBs are summarised by size there, and
//! newlines and tabs inside values are escaped so a row stays on one line).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::{Map, Value};

use crate::results::{QueryResult, TableDescription, TableList, WriteResult};

/// The JSON key of a BLOB value: `{"$base64": "..."}`, in results and in bind parameters.
pub const BLOB_KEY: &str = "$base64";

/// Columns wider than this are not padded further in the text view (values are never cut).
const MAX_PAD: usize = 40;

/// The JSON form of one SQLite value (see [`QueryResult`] for the mapping).
pub(crate) fn value_to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(non_finite(f).to_owned())),
        ValueRef::Text(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => {
            let mut object = Map::new();
            object.insert(BLOB_KEY.to_owned(), Value::String(BASE64.encode(bytes)));
            Value::Object(object)
        }
    }
}

/// About how many bytes `value` takes as JSON, computed without converting it, so a huge BLOB
/// or TEXT can be refused before it is copied.
pub(crate) fn json_size(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 4,
        ValueRef::Integer(_) | ValueRef::Real(_) => 20,
        ValueRef::Text(bytes) => bytes.len() + 2,
        ValueRef::Blob(bytes) => bytes.len().div_ceil(3) * 4 + BLOB_KEY.len() + 6,
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// A bind parameter from its JSON form: null, boolean (bound as 0/1), integer, number, string,
/// or `{"$base64": "..."}` for a BLOB.
pub(crate) fn param_from_json(position: usize, value: &Value) -> Result<SqlValue, String> {
    let bad = |what: &str| format!("params[{position}] {what}");
    Ok(match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                SqlValue::Integer(i)
            } else if let Some(f) = n.as_f64() {
                SqlValue::Real(f)
            } else {
                return Err(bad("is a number SQLite cannot hold"));
            }
        }
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::Object(object) => match (object.len(), object.get(BLOB_KEY)) {
            (1, Some(Value::String(encoded))) => SqlValue::Blob(
                BASE64
                    .decode(encoded)
                    .map_err(|e| bad(&format!("is not valid base64 ({e})")))?,
            ),
            _ => {
                return Err(bad(
                    "is an object; only {\"$base64\": \"...\"} (a BLOB) is accepted",
                ));
            }
        },
        Value::Array(_) => return Err(bad("is an array; pass one scalar per placeholder")),
    })
}

/// The text view of a [`QueryResult`]; `note` explains a truncation.
pub(crate) fn query_text(result: &QueryResult, note: Option<&str>) -> String {
    let mut out = String::new();
    if !result.columns.is_empty() {
        let cells: Vec<Vec<String>> = result
            .rows
            .iter()
            .map(|row| row.iter().map(cell).collect())
            .collect();
        let widths: Vec<usize> = (0..result.columns.len())
            .map(|i| {
                let header = width(&result.columns[i]);
                let widest = cells.iter().filter_map(|r| r.get(i)).map(|c| width(c));
                widest.fold(header, usize::max).min(MAX_PAD)
            })
            .collect();
        let header: Vec<String> = result.columns.iter().map(|c| escape(c)).collect();
        push_row(&mut out, &header, &widths);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for row in &cells {
            push_row(&mut out, row, &widths);
        }
    }
    let rows = plural(result.row_count, "row");
    if result.truncated {
        let _ = write!(out, "({rows} shown; result truncated");
        if let Some(note) = note {
            let _ = write!(out, " {note}");
        }
        match result.total_rows {
            Some(total) => {
                let _ = write!(out, "; {total} rows in total)");
            }
            None => out.push_str("; total not counted)"),
        }
    } else {
        let _ = write!(out, "({rows})");
    }
    out
}

/// The text view of an EXPLAIN QUERY PLAN result: the plan as an indented tree.
pub(crate) fn plan_text(result: &QueryResult) -> String {
    // Columns are id, parent, notused, detail.
    let mut depth: Vec<(i64, usize)> = Vec::new();
    let mut out = String::from("QUERY PLAN\n");
    for row in &result.rows {
        let id = row.first().and_then(Value::as_i64).unwrap_or_default();
        let parent = row.get(1).and_then(Value::as_i64).unwrap_or_default();
        let detail = row.get(3).and_then(Value::as_str).unwrap_or_default();
        let level = depth
            .iter()
            .rev()
            .find(|(node, _)| *node == parent)
            .map_or(0, |(_, level)| level + 1);
        depth.push((id, level));
        let _ = writeln!(out, "{}`--{detail}", "   ".repeat(level));
    }
    out
}

/// The text view of a [`WriteResult`].
pub(crate) fn write_text(result: &WriteResult) -> String {
    format!(
        "{} affected (last insert rowid {})",
        plural(
            usize::try_from(result.rows_affected).unwrap_or(usize::MAX),
            "row"
        ),
        result.last_insert_rowid
    )
}

/// The text view of a [`TableList`].
pub(crate) fn tables_text(list: &TableList) -> String {
    let mut out = String::new();
    for table in &list.tables {
        let count = match (table.row_count, table.row_count_source.as_str()) {
            (Some(n), "count") => format!("{n} rows"),
            (Some(n), "count_capped") => format!("at least {n} rows"),
            (Some(n), _) => format!("~{n} rows (sqlite_stat1 estimate)"),
            (None, _) => "rows not counted".to_owned(),
        };
        let _ = writeln!(out, "{} ({}, {count})", table.name, table.kind);
    }
    if list.tables.is_empty() {
        out.push_str("(no tables)\n");
    }
    if list.truncated {
        out.push_str("(list truncated)\n");
    }
    out
}

/// The text view of a [`TableDescription`].
pub(crate) fn description_text(desc: &TableDescription) -> String {
    let mut out = format!("{} {}\n", desc.kind, desc.name);
    for column in &desc.columns {
        let mut line = format!("  {} {}", column.name, column.declared_type);
        if column.primary_key_position > 0 {
            line.push_str(" PRIMARY KEY");
        }
        if !column.nullable {
            line.push_str(" NOT NULL");
        }
        if let Some(default) = &column.default {
            let _ = write!(line, " DEFAULT {default}");
        }
        if column.hidden {
            line.push_str(" (hidden/generated)");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for fk in &desc.foreign_keys {
        let to = fk.to.as_deref().unwrap_or("(primary key)");
        let _ = writeln!(
            out,
            "  foreign key {} -> {}.{to} (on update {}, on delete {})",
            fk.from, fk.table, fk.on_update, fk.on_delete
        );
    }
    for index in &desc.indexes {
        let unique = if index.unique { "unique " } else { "" };
        let _ = writeln!(
            out,
            "  {unique}index {} ({})",
            index.name,
            index.columns.join(", ")
        );
    }
    for trigger in &desc.triggers {
        let _ = writeln!(out, "  trigger {}", trigger.name);
    }
    if let Some(sql) = &desc.sql {
        let _ = write!(out, "\n{sql}");
    }
    out
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => escape(s),
        Value::Object(object) => match object.get(BLOB_KEY).and_then(Value::as_str) {
            Some(encoded) => format!("<blob {} bytes>", encoded.len() / 4 * 3),
            None => value.to_string(),
        },
        other => other.to_string(),
    }
}

fn escape(s: &str) -> String {
    if s.contains(['\n', '\r', '\t']) {
        s.replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', "\\t")
    } else {
        s.to_owned()
    }
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(width(c)))))
        .collect();
    out.push_str(padded.join(" | ").trim_end());
    out.push('\n');
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn values_keep_their_storage_class() {
        assert_eq!(value_to_json(ValueRef::Integer(42)), json!(42));
        assert_eq!(value_to_json(ValueRef::Real(1.5)), json!(1.5));
        assert_eq!(
            value_to_json(ValueRef::Real(f64::INFINITY)),
            json!("Infinity")
        );
        assert_eq!(
            value_to_json(ValueRef::Real(f64::NEG_INFINITY)),
            json!("-Infinity")
        );
        assert_eq!(value_to_json(ValueRef::Text(b"hi")), json!("hi"));
        assert_eq!(
            value_to_json(ValueRef::Blob(&[0, 1, 2, 255])),
            json!({"$base64": "AAEC/w=="})
        );
        assert_eq!(value_to_json(ValueRef::Null), Value::Null);
    }

    #[test]
    fn params_round_trip_and_reject_nonsense() {
        assert_eq!(param_from_json(0, &json!(7)).unwrap(), SqlValue::Integer(7));
        assert_eq!(
            param_from_json(0, &json!(true)).unwrap(),
            SqlValue::Integer(1)
        );
        assert_eq!(
            param_from_json(0, &json!(2.5)).unwrap(),
            SqlValue::Real(2.5)
        );
        assert_eq!(
            param_from_json(0, &json!({"$base64": "AAEC/w=="})).unwrap(),
            SqlValue::Blob(vec![0, 1, 2, 255])
        );
        let err = param_from_json(3, &json!([1])).unwrap_err();
        assert!(err.starts_with("params[3] is an array"), "{err}");
        assert!(param_from_json(0, &json!({"x": 1})).is_err());
        assert!(param_from_json(0, &json!({"$base64": "!!"})).is_err());
    }

    #[test]
    fn text_table_is_aligned_and_escaped() {
        let result = QueryResult {
            columns: vec!["id".into(), "name".into()],
            rows: vec![vec![json!(1), json!("a\nb")], vec![json!(22), Value::Null]],
            row_count: 2,
            truncated: false,
            total_rows: Some(2),
        };
        let text = query_text(&result, None);
        assert_eq!(
            text,
            "id | name\n---+-----\n1  | a\\nb\n22 | NULL\n(2 rows)"
        );
    }

    #[test]
    fn truncation_is_explained() {
        let result = QueryResult {
            columns: vec!["x".into()],
            rows: vec![vec![json!(1)]],
            row_count: 1,
            truncated: true,
            total_rows: Some(10),
        };
        let text = query_text(&result, Some("at the 1-row limit"));
        assert!(
            text.ends_with("(1 row shown; result truncated at the 1-row limit; 10 rows in total)")
        );
    }
}
