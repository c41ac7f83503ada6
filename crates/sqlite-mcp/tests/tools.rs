//! Each tool and resource through an rmcp client, read-only and with writes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use mcp_sqlite::{OpenError, SqliteConfig, SqliteServer};
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use rusqlite::Connection;
use serde_json::{Value, json};

use common::{call, connect, connect_server, demo_db, error_text, structured, text, try_call};

const RUNAWAY: &str =
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_tools_with_annotations_and_schemas() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "list_tables",
            "describe_table",
            "read_query",
            "explain_query"
        ]
    );
    for tool in &tools {
        let annotations = tool.annotations.as_ref().unwrap();
        assert_eq!(annotations.read_only_hint, Some(true));
        assert_eq!(annotations.destructive_hint, Some(false));
        assert!(tool.title.is_some() && tool.output_schema.is_some());
    }
    let info = client.peer_info().unwrap();
    assert!(info.capabilities.resources.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tables_counts_rows() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let result = call(&client, "list_tables", json!({})).await;
    let list = structured(&result);
    let tables = list["tables"].as_array().unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "categories",
            "customers",
            "order_items",
            "order_totals",
            "orders",
            "products"
        ]
    );
    let customers = &tables[1];
    assert_eq!(customers["row_count"], json!(500));
    assert_eq!(customers["row_count_source"], json!("count"));
    assert_eq!(tables[3]["type"], json!("view"));
    assert!(
        text(&result).contains("customers (table, 500 rows)"),
        "{}",
        text(&result)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tables_uses_sqlite_stat1_when_present() {
    let (_dir, path) = demo_db();
    Connection::open(&path)
        .unwrap()
        .execute_batch("ANALYZE")
        .unwrap();
    let client = connect(SqliteConfig::new(&path)).await;
    let list = structured(&call(&client, "list_tables", json!({})).await);
    let orders = list["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["row_count_source"], json!("sqlite_stat1"));
    assert_eq!(orders["row_count"], json!(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_table_shows_keys_and_indexes() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let desc = structured(
        &call(
            &client,
            "describe_table",
            json!({"table_name": "order_items"}),
        )
        .await,
    );
    assert_eq!(desc["primary_key"], json!(["order_id", "product_id"]));
    let fks = desc["foreign_keys"].as_array().unwrap();
    assert!(
        fks.iter()
            .any(|fk| fk["table"] == "orders" && fk["on_delete"] == "CASCADE")
    );
    let quantity = desc["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "quantity")
        .unwrap();
    assert_eq!(quantity["declared_type"], json!("INTEGER"));
    assert_eq!(quantity["nullable"], json!(false));

    let orders =
        structured(&call(&client, "describe_table", json!({"table_name": "ORDERS"})).await);
    assert_eq!(orders["name"], json!("orders"));
    let indexes = orders["indexes"].as_array().unwrap();
    assert!(
        indexes
            .iter()
            .any(|i| i["name"] == "orders_by_customer" && i["columns"] == json!(["customer_id"]))
    );
    let products =
        structured(&call(&client, "describe_table", json!({"table_name": "products"})).await);
    let stock = &products["columns"].as_array().unwrap()[4];
    assert_eq!(stock["default"], json!("0"));

    let missing = call(&client, "describe_table", json!({"table_name": "nope"})).await;
    assert!(error_text(&missing).contains("no such table or view: nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_query_maps_sqlite_types_faithfully() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("types.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE v(i INTEGER, r REAL, t TEXT, b BLOB, n);
         INSERT INTO v VALUES (9007199254740993, 2.5, 'héllo\nworld', x'00ff10', NULL);
         INSERT INTO v VALUES (-1, 1e999, '', x'', NULL);",
    )
    .unwrap();
    drop(conn);
    let client = connect(SqliteConfig::new(&path)).await;
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT * FROM v ORDER BY rowid"}),
    )
    .await;
    let data = structured(&result);
    assert_eq!(data["columns"], json!(["i", "r", "t", "b", "n"]));
    assert_eq!(
        data["rows"],
        json!([
            [9_007_199_254_740_993_i64, 2.5, "héllo\nworld", {"$base64": "AP8Q"}, null],
            [-1, "Infinity", "", {"$base64": ""}, null]
        ])
    );
    assert_eq!(data["row_count"], json!(2));
    assert_eq!(data["truncated"], json!(false));
    // The text view carries the same values.
    let shown = text(&result);
    for needle in [
        "9007199254740993",
        "2.5",
        "héllo\\nworld",
        "<blob 3 bytes>",
        "NULL",
        "Infinity",
    ] {
        assert!(shown.contains(needle), "{needle} missing from\n{shown}");
    }

    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT ? AS a, ? AS b, ? AS c, ? AS d, typeof(?) AS e",
               "params": [1, 1.5, "x", {"$base64": "AAE="}, null]}),
    )
    .await;
    assert_eq!(
        structured(&result)["rows"],
        json!([[1, 1.5, "x", {"$base64": "AAE="}, "null"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_content_matches_text_and_ctes_work() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let result = call(
        &client,
        "read_query",
        json!({"query": "WITH big AS (SELECT customer_id, count(*) AS n FROM orders GROUP BY 1) \
                         SELECT c.name, big.n FROM big JOIN customers c ON c.id = big.customer_id \
                         ORDER BY big.n DESC, c.id LIMIT 5"}),
    )
    .await;
    let data = structured(&result);
    let shown = text(&result);
    assert_eq!(data["row_count"], json!(5));
    for row in data["rows"].as_array().unwrap() {
        let line = row[0].as_str().unwrap();
        assert!(shown.contains(line), "{line} not in\n{shown}");
        assert!(shown.contains(&row[1].to_string()));
    }
    assert!(shown.ends_with("(5 rows)"), "{shown}");

    // Schema-reading pragmas work as table-valued functions.
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT name FROM pragma_table_info('orders') ORDER BY cid"}),
    )
    .await;
    assert_eq!(
        structured(&result)["rows"],
        json!([
            ["id"],
            ["customer_id"],
            ["ordered_on"],
            ["status"],
            ["note"]
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_truncated_by_rows_and_bytes() {
    let (_dir, path) = demo_db();
    let mut config = SqliteConfig::new(&path);
    config.max_rows = 10;
    let client = connect(config).await;
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT * FROM customers"}),
    )
    .await;
    let data = structured(&result);
    assert_eq!(data["row_count"], json!(10));
    assert_eq!(data["truncated"], json!(true));
    assert_eq!(data["total_rows"], json!(500));
    assert!(text(&result).contains("truncated at the 10-row limit; 500 rows in total"));

    let mut config = SqliteConfig::new(&path);
    config.max_bytes = 1024;
    let client = connect(config).await;
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT * FROM customers"}),
    )
    .await;
    let data = structured(&result);
    assert_eq!(data["truncated"], json!(true));
    let rows = data["rows"].as_array().unwrap().len();
    assert!(rows > 0 && rows < 30, "{rows}");
    assert!(serde_json::to_string(&data["rows"]).unwrap().len() <= 1024);
    assert!(text(&result).contains("byte limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_query_shows_the_plan() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let result = call(
        &client,
        "explain_query",
        json!({"query": "SELECT * FROM orders WHERE customer_id = 7"}),
    )
    .await;
    let data = structured(&result);
    assert_eq!(
        data["columns"],
        json!(["id", "parent", "notused", "detail"])
    );
    assert!(
        text(&result).contains("orders_by_customer"),
        "{}",
        text(&result)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_fast_and_the_next_call_works() {
    let (_dir, path) = demo_db();
    let mut config = SqliteConfig::new(&path);
    config.query_timeout = Duration::from_millis(200);
    let client = connect(config).await;
    let started = Instant::now();
    let result = call(&client, "read_query", json!({"query": RUNAWAY})).await;
    let elapsed = started.elapsed();
    assert!(
        error_text(&result).contains("200ms time limit"),
        "{}",
        text(&result)
    );
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let result = call(&client, "read_query", json!({"query": "SELECT 1 AS one"})).await;
    assert_eq!(structured(&result)["rows"], json!([[1]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_does_not_block_a_fast_one() {
    let (_dir, path) = demo_db();
    let mut config = SqliteConfig::new(&path);
    config.query_timeout = Duration::from_secs(2);
    let server = SqliteServer::open(config).unwrap();
    let slow_client = connect_server(server.clone()).await;
    let fast_client = connect_server(server).await;

    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let result = call(&slow_client, "read_query", json!({"query": RUNAWAY})).await;
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let result = call(
        &fast_client,
        "read_query",
        json!({"query": "SELECT count(*) FROM orders"}),
    )
    .await;
    let fast_done = started.elapsed();
    assert_eq!(structured(&result)["rows"], json!([[1500]]));
    let (slow_result, slow_done) = slow.await.unwrap();
    assert!(error_text(&slow_result).contains("time limit"));
    assert!(
        fast_done < slow_done,
        "fast {fast_done:?} vs slow {slow_done:?}"
    );
    assert!(fast_done < Duration::from_millis(1_500), "{fast_done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_tool_errors_and_unknown_tools_protocol_errors() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let result = call(&client, "read_query", json!({})).await;
    assert!(error_text(&result).contains("missing field `query`"));
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT 1", "limit": 3}),
    )
    .await;
    assert!(error_text(&result).contains("unknown field `limit`"));
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT ?", "params": []}),
    )
    .await;
    assert!(error_text(&result).contains("1 placeholder(s) but 0 param(s)"));
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT * FROM nope"}),
    )
    .await;
    assert!(error_text(&result).contains("no such table: nope"));
    let result = call(&client, "read_query", json!({"query": "SELEC 1"})).await;
    assert!(error_text(&result).contains("syntax error"));
    let result = call(
        &client,
        "write_query",
        json!({"query": "DELETE FROM orders"}),
    )
    .await;
    assert!(error_text(&result).contains("--allow-writes"));
    let err = try_call(&client, "drop_everything", json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_list_and_read() {
    let (_dir, path) = demo_db();
    let client = connect(SqliteConfig::new(&path)).await;
    let resources = client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris[0], "sqlite://schema");
    assert!(uris.contains(&"sqlite://table/order_items"));
    assert_eq!(uris.len(), 7);

    let schema = client
        .read_resource(ReadResourceRequestParams::new("sqlite://schema"))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &schema.contents[0] else {
        panic!("schema is text");
    };
    assert!(text.contains("CREATE TABLE orders"));
    assert!(text.contains("CREATE VIEW order_totals"));

    let table = client
        .read_resource(ReadResourceRequestParams::new("sqlite://table/customers"))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents {
        text, mime_type, ..
    } = &table.contents[0]
    else {
        panic!("table is text");
    };
    assert_eq!(mime_type.as_deref(), Some("application/json"));
    let desc: Value = serde_json::from_str(text).unwrap();
    assert_eq!(desc["columns"][2]["name"], json!("email"));

    let templates = client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates[0].uri_template, "sqlite://table/{name}");
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("sqlite://table/nope"))
            .await
            .is_err()
    );
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("file:///etc/passwd"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let client = connect(SqliteConfig::new(&path).with_allow_writes(true)).await;
    let tools = client.list_all_tools().await.unwrap();
    let write = tools.iter().find(|t| t.name == "write_query").unwrap();
    assert_eq!(
        write.annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );

    let result = call(
        &client,
        "create_table",
        json!({"query": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT UNIQUE)"}),
    )
    .await;
    structured(&result);
    let result = call(
        &client,
        "write_query",
        json!({"query": "INSERT INTO notes(body) VALUES (?), (?)", "params": ["a", "b"]}),
    )
    .await;
    assert_eq!(structured(&result)["rows_affected"], json!(2));
    assert_eq!(structured(&result)["last_insert_rowid"], json!(2));
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT body FROM notes ORDER BY id"}),
    )
    .await;
    assert_eq!(structured(&result)["rows"], json!([["a"], ["b"]]));
    let result = call(
        &client,
        "write_query",
        json!({"query": "DELETE FROM notes WHERE id = 1 RETURNING body"}),
    )
    .await;
    assert_eq!(structured(&result)["rows_affected"], json!(1));

    // Creating an existing table with IF NOT EXISTS is a harmless no-op.
    let result = call(
        &client,
        "create_table",
        json!({"query": "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY)"}),
    )
    .await;
    structured(&result);

    for (tool, sql, expected) in [
        (
            "create_table",
            "DROP TABLE notes",
            "create_table only accepts",
        ),
        (
            "create_table",
            "CREATE INDEX ix ON notes(body)",
            "create_table only accepts",
        ),
        (
            "create_table",
            "CREATE VIEW v AS SELECT 1",
            "create_table only accepts",
        ),
        (
            "create_table",
            "CREATE TABLE a(x); DROP TABLE notes",
            "one sql statement",
        ),
        (
            "create_table",
            "INSERT INTO notes(body) VALUES ('x')",
            "create_table only accepts",
        ),
        ("write_query", "SELECT * FROM notes", "use read_query"),
        ("write_query", "BEGIN", "begin"),
        ("write_query", "VACUUM INTO '/tmp/escape.db'", "attach"),
        ("write_query", "ATTACH '/tmp/escape.db' AS e", "attach"),
        (
            "write_query",
            "PRAGMA journal_mode = delete",
            "pragma journal_mode",
        ),
        (
            "write_query",
            "INSERT INTO notes(body) VALUES ('b')",
            "unique constraint",
        ),
        ("read_query", "DELETE FROM notes", "delete on notes"),
    ] {
        let result = call(&client, tool, json!({"query": sql})).await;
        let message = error_text(&result).to_lowercase();
        assert!(message.contains(expected), "{tool} {sql}: {message}");
    }
    assert!(!std::path::Path::new("/tmp/escape.db").exists());
    let result = call(
        &client,
        "read_query",
        json!({"query": "SELECT count(*) FROM notes"}),
    )
    .await;
    assert_eq!(structured(&result)["rows"], json!([[1]]));
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn open_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let err = SqliteServer::open(SqliteConfig::new(&missing)).unwrap_err();
    assert!(matches!(err, OpenError::Missing { .. }));
    assert!(err.to_string().contains("--allow-writes"), "{err}");
    assert!(!missing.exists());

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = SqliteServer::open(SqliteConfig::new(&junk)).unwrap_err();
    assert!(err.to_string().contains("not a database"), "{err}");

    let mut config = SqliteConfig::new(&junk);
    config.max_rows = 0;
    let err = SqliteServer::open(config).unwrap_err();
    assert!(err.to_string().contains("max_rows"), "{err}");
}
