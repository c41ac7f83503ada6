//! End-to-end tests of `mcp-agent connect --stdio`: a real relay and agent,
//! the reference stdio `mcp-server-sqlite` behind the bridge, and the official
//! MCP Python SDK client in front of the tunnel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_testkit::{Relay, RelayOptions, bin_path, python, workspace_root};
use serde_json::{Value, json};

/// Generous: the test machine is small and busy.
const PATIENCE: Duration = Duration::from_secs(60);

/// The reference SQLite MCP server (stdio only) that `tests/setup.sh` installs.
fn reference_sqlite_server() -> PathBuf {
    if let Some(p) = std::env::var_os("MCP_TEST_REF_SQLITE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cache/mcp-tunnel/venv-ref/bin/mcp-server-sqlite");
    assert!(
        p.exists(),
        "{} not found: run tests/setup.sh (it installs the reference mcp-server-sqlite)",
        p.display()
    );
    p
}

/// `mcp-agent connect --stdio CMD` (the test kit's `Agent` always passes
/// `--upstream`, which excludes `--stdio`).
struct StdioAgent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    public_url: String,
}

impl StdioAgent {
    fn spawn(relay: &Relay, name: &str, command: &str) -> Self {
        let runtime = relay.state_dir().join(format!("agent-runtime-{name}"));
        std::fs::create_dir_all(&runtime).unwrap();
        let mut child = Command::new(bin_path("mcp-agent"))
            .arg("connect")
            .args([
                "--relay",
                &relay.https_url(),
                "--name",
                name,
                "--stdio",
                command,
            ])
            .arg("--ca")
            .arg(relay.ca_file())
            .env("MCP_AGENT_TOKEN", relay.create_token().unwrap())
            .env("MCP_AGENT_RUNTIME_DIR", &runtime)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let outputs: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for out in outputs {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("MCP_TEST_VERBOSE").is_some() {
                        eprintln!("[agent] {line}");
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            lines,
            public_url: String::new(),
        }
    }

    /// Starts the agent and waits for its public URL.
    fn start(relay: &Relay, name: &str, command: &str) -> Self {
        let mut agent = Self::spawn(relay, name, command);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = agent.lines.lock().unwrap().iter().find_map(|l| {
                l.split("Public MCP URL: ")
                    .nth(1)
                    .map(|u| u.trim().to_owned())
            });
            if let Some(url) = found {
                agent.public_url = url;
                return agent;
            }
            if let Some(status) = agent.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the agent exited ({status}) before connecting:\n{}",
                    agent.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not connect in time:\n{}",
                agent.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn interrupt(&self) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for StdioAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Runs tests/py/stdio_client.py; returns what it printed.
fn run_client(agent: &StdioAgent, relay: &Relay, mode: &str, table: &str) -> Value {
    let out = Command::new(python())
        .env("MCP_TEST_BEARER", relay.access_token("notes").unwrap())
        .arg(workspace_root().join("tests/py/stdio_client.py"))
        .arg(&agent.public_url)
        .arg(relay.ca_file())
        .arg(mode)
        .arg(table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: client failed:\n{}\nagent:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.output()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rows_in(db: &Path, table: &str) -> Value {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sqlite3, sys; print(json.dumps(sqlite3.connect(sys.argv[1]).execute(f'SELECT body FROM {sys.argv[2]}').fetchall()))",
        ])
        .arg(db)
        .arg(table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_drives_the_reference_sqlite_server_over_stdio_in_auto_and_legacy_mode() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let db = relay.state_dir().join("notes.db");
    let command = format!(
        "\"{}\" --db-path \"{}\"",
        reference_sqlite_server().display(),
        db.display()
    );
    let mut agent = StdioAgent::start(&relay, "notes", &command);
    assert_eq!(
        agent.public_url,
        format!("{}/t/notes/mcp", relay.https_url())
    );

    for mode in ["auto", "legacy"] {
        let table = format!("notes_{mode}");
        let v = run_client(&agent, &relay, mode, &table);
        assert_eq!(
            v["tools"],
            json!([
                "append_insight",
                "create_table",
                "describe_table",
                "list_tables",
                "read_query",
                "write_query"
            ]),
            "{mode}: {v}"
        );
        for step in ["create", "insert", "read", "tables"] {
            assert_eq!(v[step]["error"], false, "{mode} {step}: {v}");
        }
        let read = v["read"]["text"].to_string();
        assert!(
            read.contains("héllo through the stdio bridge"),
            "{mode}: {v}"
        );
        assert!(
            v["tables"]["text"].to_string().contains(&table),
            "{mode}: {v}"
        );
        if mode == "legacy" {
            assert_ne!(v["protocol_version"], "2026-07-28", "{v}");
        }
    }

    // The raw protocol through the tunnel: an unknown session is a 404 with
    // a JSON-RPC error, so clients re-initialize.
    let resp = relay
        .authed_client("notes")
        .post(&agent.public_url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", "0123456789abcdef")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32001);

    // Ctrl-C: the agent stops, and so does every child it started.
    let needle = db.display().to_string();
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "the children run while the agent does"
    );
    agent.interrupt();
    let status = agent.wait_exit();
    assert!(status.success(), "{status}\n{}", agent.output());
    let deadline = Instant::now() + PATIENCE;
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "stdio children outlived the agent: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the client wrote is in the database file.
    for mode in ["auto", "legacy"] {
        assert_eq!(
            rows_in(&db, &format!("notes_{mode}")),
            json!([["héllo through the stdio bridge"]])
        );
    }
}

#[test]
fn a_stdio_command_that_does_not_exist_fails_before_connecting() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let mut agent = StdioAgent::spawn(&relay, "missing", "no-such-mcp-server-xyz --flag");
    let status = agent.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", agent.output());
    let out = agent.output();
    assert!(
        out.contains("`no-such-mcp-server-xyz` was not found on PATH"),
        "{out}"
    );
}
