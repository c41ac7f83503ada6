//! End-to-end tests of the built-in SQLite MCP tool: served in-process by a
//! real agent through a real relay (and standalone with `mcp-agent serve`),
//! driven by the official Python SDK client and the official MCP conformance
//! suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_testkit::{
    Agent, AgentOptions, Relay, RelayOptions, bin_path, conformance_suite, run_python_driver,
};
use serde_json::json;

/// The generic server scenarios of the conformance suite (those that need no
/// suite-specific fixture tools). `logging-set-level` is left out: the tool
/// offers no logging.
const SCENARIOS: &[&str] = &[
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
];

fn demo_db(dir: &Path) -> PathBuf {
    let db = dir.join("shop.db");
    let st = Command::new(bin_path("mcp-agent"))
        .arg("demo-db")
        .arg(&db)
        .status()
        .unwrap();
    assert!(st.success());
    db
}

fn sqlite_agent(relay: &Relay, db: &Path, extra: &[&str]) -> Agent {
    let mut args = vec![
        "--quiet".to_owned(),
        "--db".into(),
        db.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start(
        relay,
        AgentOptions {
            name: "shop".into(),
            upstream: String::new(),
            token: None,
            args,
        },
    )
    .unwrap()
}

/// Runs one conformance scenario; returns (passed, total) and the output.
fn conformance(url: &str, scenario: &str, ca: Option<&Path>) -> (u32, u32, String) {
    let (node, suite) = conformance_suite();
    let mut cmd = Command::new(node);
    cmd.arg(suite)
        .args(["server", "--url", url, "--scenario", scenario]);
    if let Some(ca) = ca {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("Passed: "))
        .unwrap_or_else(|| panic!("{scenario}: no result line:\n{text}"));
    // "Passed: 2/2, 0 failed, 0 warnings"
    let frac = line
        .trim_start_matches("Passed: ")
        .split(',')
        .next()
        .unwrap();
    let (p, t) = frac.split_once('/').unwrap();
    (p.parse().unwrap(), t.parse().unwrap(), text)
}

fn assert_all_pass(url: &str, scenarios: &[&str], ca: Option<&Path>) {
    for s in scenarios {
        let (passed, total, text) = conformance(url, s, ca);
        assert!(
            total > 0 && passed == total,
            "{s} against {url}: {passed}/{total}\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_uses_every_read_tool_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path());
    let before = std::fs::read(&db).unwrap();
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let agent = sqlite_agent(&relay, &db, &[]);
    assert!(agent.public_url.ends_with("/t/shop/mcp"));

    for mode in ["auto", "legacy"] {
        let v = run_python_driver(
            "sqlite_client.py",
            &[
                agent.public_url.as_ref(),
                relay.ca_file().as_os_str(),
                mode.as_ref(),
            ],
            Some(&relay.access_token("shop").unwrap()),
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}\nagent:\n{}", agent.output()));
        let read_tools = json!([
            "describe_table",
            "explain_query",
            "list_tables",
            "read_query"
        ]);
        assert_eq!(v["tools"], read_tools, "read-only: no write tools listed");
        assert_eq!(v["read_only_hints"], read_tools);
        assert_eq!(
            v["tables"],
            json!([
                "categories",
                "customers",
                "order_items",
                "order_totals",
                "orders",
                "products"
            ])
        );
        assert_eq!(v["customer_count"], 500);
        assert_eq!(v["read_rows"].as_array().unwrap().len(), 3);
        assert!(v["explain_text"].as_str().unwrap().contains("QUERY PLAN"));
        assert_eq!(v["delete_refused"], true);
        assert!(
            v["delete_message"].as_str().unwrap().contains("read-only"),
            "{v}"
        );
        assert_eq!(v["schema_has_orders"], true);
        assert_eq!(v["prompts"], json!(["sqlite-analyst"]));
        assert_eq!(v["prompt_mentions_question"], true);
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database file is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_standalone_and_through_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path());

    // Standalone: `mcp-agent serve --db FILE --http ADDR`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = Command::new(bin_path("mcp-agent"))
        .args(["serve", "--db"])
        .arg(&db)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mcp-agent serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let local = format!("http://localhost:{port}/mcp");
    assert_all_pass(&local, SCENARIOS, None);
    assert_all_pass(&local, &["dns-rebinding-protection"], None);
    let _ = serve.kill();
    let _ = serve.wait();

    // Through the tunnel: HTTPS front, and the plain front for the DNS-rebinding
    // scenario (it sends a foreign Host, which TLS name checks would reject first).
    // The suite cannot send a bearer token, so this relay runs with --no-auth.
    let relay = Relay::start(RelayOptions {
        no_auth: true,
        ..Default::default()
    })
    .unwrap();
    let _agent = sqlite_agent(&relay, &db, &[]);
    let tunnel = format!("{}/t/shop/mcp", relay.https_url());
    assert_all_pass(&tunnel, SCENARIOS, Some(&relay.ca_file()));
    let plain = format!(
        "http://localhost:{}/t/shop/mcp",
        relay.endpoints.http.unwrap().port()
    );
    assert_all_pass(&plain, &["dns-rebinding-protection"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_writes_when_the_owner_allows_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path());
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let agent = sqlite_agent(&relay, &db, &["--allow-writes"]);
    for mode in ["auto", "legacy"] {
        let v = run_python_driver(
            "sqlite_client.py",
            &[
                agent.public_url.as_ref(),
                relay.ca_file().as_os_str(),
                mode.as_ref(),
                "--writes".as_ref(),
            ],
            Some(&relay.access_token("shop").unwrap()),
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}\nagent:\n{}", agent.output()));
        assert_eq!(
            v["tools"],
            json!([
                "create_table",
                "describe_table",
                "explain_query",
                "list_tables",
                "read_query",
                "write_query"
            ])
        );
        assert_eq!(v["destructive"], json!(["create_table", "write_query"]));
        assert_eq!(v["rows_affected"], 2);
        assert_eq!(v["bodies"], json!(["hello", "wörld"]));
        assert_eq!(v["read_query_refuses_write"], true);
        assert_eq!(v["create_table_refuses_drop"], true);
    }
}
