//! Hostile SQL against a read-only server, driven through the MCP layer: every input is refused
//! (or timed out) with a clear message, and the database file is byte-for-byte unchanged.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use mcp_sqlite::SqliteConfig;
use serde_json::json;

use common::{call, connect, demo_db, dir_listing, error_text, file_hash, structured};

/// Each hostile input and the words (any of them, case-insensitive) its error must contain.
fn catalogue(dir: &std::path::Path) -> Vec<(String, &'static [&'static str])> {
    let outside = dir.join("copy.db");
    let outside = outside.display();
    let long = format!("SELECT 1 -- {}", "x".repeat(200_000));
    vec![
        // More than one statement.
        (
            "SELECT 1; DELETE FROM customers".into(),
            &["one sql statement"],
        ),
        ("SELECT 1; SELECT 2".into(), &["one sql statement"]),
        (
            "SELECT 1;\n\nDROP TABLE orders; -- bye".into(),
            &["one sql statement"],
        ),
        (
            "BEGIN; DELETE FROM orders; COMMIT".into(),
            &["one sql statement", "begin"],
        ),
        // Leaving the database file.
        (format!("ATTACH DATABASE '{outside}' AS x"), &["attach"]),
        (
            format!("VACUUM INTO '{outside}'"),
            &["attach", "change the database"],
        ),
        ("VACUUM".into(), &["attach", "change the database"]),
        ("DETACH DATABASE main".into(), &["detach"]),
        (
            "SELECT load_extension('/tmp/evil.so')".into(),
            &["load_extension"],
        ),
        ("SELECT readfile('/etc/passwd')".into(), &["readfile"]),
        (
            format!("SELECT writefile('{outside}', 'x')"),
            &["writefile"],
        ),
        (
            "SELECT fts3_tokenizer('simple')".into(),
            &["fts3_tokenizer"],
        ),
        // PRAGMAs that set or read settings.
        (
            "PRAGMA writable_schema=1".into(),
            &["pragma writable_schema"],
        ),
        ("PRAGMA journal_mode=WAL".into(), &["pragma journal_mode"]),
        ("PRAGMA journal_mode".into(), &["pragma journal_mode"]),
        ("PRAGMA query_only=0".into(), &["pragma query_only"]),
        (
            "SELECT * FROM pragma_journal_mode('delete')".into(),
            &["pragma journal_mode", "unknown database"],
        ),
        // Writes in disguise.
        (
            "WITH x AS (SELECT 1) DELETE FROM customers".into(),
            &["delete on customers"],
        ),
        (
            "WITH x AS (SELECT 1) INSERT INTO categories(name) SELECT 'x' FROM x".into(),
            &["insert into categories"],
        ),
        (
            "REPLACE INTO categories(id, name) VALUES (1, 'x')".into(),
            &["insert into categories"],
        ),
        (
            "INSERT INTO categories(name) VALUES ('x') RETURNING id".into(),
            &["insert into categories"],
        ),
        (
            "INSERT INTO orders SELECT * FROM orders".into(),
            &["insert into orders"],
        ),
        (
            "UPDATE products SET price = 0".into(),
            &["update of products"],
        ),
        (
            "/* harmless */ DELETE FROM orders".into(),
            &["delete on orders"],
        ),
        (
            "-- just a comment\nDROP TABLE orders".into(),
            &["dropping a schema object"],
        ),
        ("dElEtE\n\t FROM   orders".into(), &["delete on orders"]),
        ("EXPLAIN DELETE FROM orders".into(), &["delete on orders"]),
        (
            "UPDATE sqlite_master SET sql = 'x' WHERE name = 'orders'".into(),
            &["sqlite_master"],
        ),
        (
            "DROP VIEW order_totals".into(),
            &["dropping a schema object"],
        ),
        (
            "ALTER TABLE orders RENAME TO o2".into(),
            &["alter table orders"],
        ),
        (
            "CREATE INDEX ix ON orders(status)".into(),
            &["creating a schema object"],
        ),
        // TEMP objects live outside the read-only file but are still refused.
        (
            "CREATE TEMP TABLE scratch(a)".into(),
            &["creating a schema object"],
        ),
        (
            "CREATE TEMP TRIGGER t AFTER INSERT ON customers BEGIN SELECT 1; END".into(),
            &["create temp trigger t"],
        ),
        (
            "CREATE TEMP VIEW v AS SELECT 1".into(),
            &["creating a schema object"],
        ),
        (
            "CREATE VIRTUAL TABLE temp.ft USING fts5(x)".into(),
            &["create virtual table", "not allowed"],
        ),
        // Transactions and maintenance.
        ("BEGIN IMMEDIATE".into(), &["begin"]),
        ("SAVEPOINT s1".into(), &["savepoint s1"]),
        ("ANALYZE".into(), &["analyze", "creating a schema object"]),
        ("REINDEX".into(), &["reindex"]),
        // Size.
        (long, &["over the limit"]),
        ("".into(), &["empty"]),
        ("   -- only a comment".into(), &["empty"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_refused_and_the_file_is_unchanged() {
    let (dir, path) = demo_db();
    let before_hash = file_hash(&path);
    let before_files = dir_listing(dir.path());
    let client = connect(SqliteConfig::new(&path)).await;

    let cases = catalogue(dir.path());
    assert!(cases.len() >= 25);
    let mut unclear = Vec::new();
    for (sql, expected) in &cases {
        let result = call(&client, "read_query", json!({ "query": sql })).await;
        let message = error_text(&result).to_lowercase();
        let shown: String = sql.chars().take(60).collect();
        if !expected.iter().any(|e| message.contains(e)) {
            unclear.push(format!(
                "{shown:?}: {message:?} mentions none of {expected:?}"
            ));
        }
        assert!(result.structured_content.is_none(), "{shown:?}");
    }
    assert!(
        unclear.is_empty(),
        "unclear refusals:\n{}",
        unclear.join("\n")
    );
    // The same statements through explain_query are refused too (a table-valued pragma only
    // fails when it runs, and explaining it does not run it).
    let explainable = cases
        .iter()
        .filter(|(s, _)| s.len() < 1_000 && !s.trim().is_empty() && !s.contains("pragma_"));
    for (sql, _) in explainable {
        let result = call(&client, "explain_query", json!({ "query": sql })).await;
        let is_comment_only = sql.trim_start().starts_with("--") && !sql.contains('\n');
        if !is_comment_only {
            assert_eq!(result.is_error, Some(true), "explain_query {sql:?}");
        }
    }

    // A runaway recursive query is interrupted, and the server keeps answering.
    drop(client);
    let mut config = SqliteConfig::new(&path);
    config.query_timeout = Duration::from_millis(200);
    let client = connect(config).await;
    let started = Instant::now();
    let result = call(
        &client,
        "read_query",
        json!({ "query": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r" }),
    )
    .await;
    assert!(
        error_text(&result).contains("time limit"),
        "{}",
        error_text(&result)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let result = call(
        &client,
        "read_query",
        json!({ "query": "SELECT count(*) AS n FROM orders" }),
    )
    .await;
    assert_eq!(structured(&result)["rows"], json!([[1500]]));

    // A huge string built at run time is refused by SQLite's length limit, not by memory.
    let result = call(
        &client,
        "read_query",
        json!({ "query": "SELECT length(randomblob(200000000))" }),
    )
    .await;
    assert!(
        error_text(&result).to_lowercase().contains("too big"),
        "{}",
        error_text(&result)
    );

    drop(client);
    assert_eq!(file_hash(&path), before_hash, "database bytes changed");
    assert_eq!(
        dir_listing(dir.path()),
        before_files,
        "files appeared next to the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_parameters_are_values_not_sql() {
    let (_dir, path) = demo_db();
    let before = file_hash(&path);
    let client = connect(SqliteConfig::new(&path)).await;
    let evil = "x'); DROP TABLE orders; --";
    let result = call(
        &client,
        "read_query",
        json!({ "query": "SELECT ? AS v, count(*) AS n FROM orders", "params": [evil] }),
    )
    .await;
    assert_eq!(structured(&result)["rows"], json!([[evil, 1500]]));
    drop(client);
    assert_eq!(file_hash(&path), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_query_refuses_writes_even_when_writes_are_allowed() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path).with_allow_writes(true)).await;
    for sql in [
        "DELETE FROM orders",
        "WITH x AS (SELECT 1) UPDATE products SET price = 1",
        "INSERT INTO categories(name) VALUES ('x') RETURNING id",
        "CREATE TABLE sneaky(a)",
        "SELECT 1; DELETE FROM orders",
    ] {
        let result = call(&client, "read_query", json!({ "query": sql })).await;
        error_text(&result);
    }
    let result = call(
        &client,
        "read_query",
        json!({ "query": "SELECT count(*) FROM orders" }),
    )
    .await;
    assert_eq!(structured(&result)["rows"], json!([[1500]]));
}
