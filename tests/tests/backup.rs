//! Issue 8 ("state care") end to end: `mcp-relay backup` of a relay that is
//! serving calls, `mcp-relay restore` into a new state dir, and a relay on the
//! restored dir that knows the same users, tunnels and grants, takes the
//! agent back, enforces the grant and has an audit log that verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcp_testkit::{AgentHome, Relay, RelayOptions, bin_path};
use serde_json::{Value, json};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// `mcp-relay ARGS` (the caller adds `--state`).
fn relay_cli(args: &[&str], state: &Path) -> Output {
    Command::new(bin_path("mcp-relay"))
        .args(args)
        .arg("--state")
        .arg(state)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the admin CLI says about the state: users, tunnels, grants.
#[derive(Debug, PartialEq)]
struct Known {
    users: Vec<String>,
    tunnels: Value,
    grants: Vec<(String, String)>,
}

fn known(state: &Path) -> Known {
    let list = ok(&relay_cli(&["users", "list"], state));
    let mut users: Vec<String> = [ALICE, BOB, "tester@example.com"]
        .into_iter()
        .filter(|e| list.contains(e))
        .map(str::to_owned)
        .collect();
    users.sort();
    let tunnels: Value =
        serde_json::from_str(&ok(&relay_cli(&["tunnels", "list", "--json"], state))).unwrap();
    let inv: Value = serde_json::from_str(&ok(&relay_cli(
        &["credentials", "list", "--kind", "grant", "--json"],
        state,
    )))
    .unwrap();
    let mut grants: Vec<(String, String)> = inv
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].to_string(), g["status"].to_string()))
        .collect();
    grants.sort();
    Known {
        users,
        tunnels,
        grants,
    }
}

/// An MCP session over plain HTTP with one bearer token.
#[derive(Clone)]
struct Session {
    http: reqwest::Client,
    url: String,
    sid: Option<String>,
}

impl Session {
    fn new(http: reqwest::Client, url: &str) -> Self {
        Self {
            http,
            url: url.to_owned(),
            sid: None,
        }
    }

    /// POSTs one JSON-RPC message; (status, parsed JSON or SSE data).
    async fn post(&self, body: &Value) -> anyhow::Result<(u16, Value, Option<String>)> {
        let mut r = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(body);
        if let Some(s) = &self.sid {
            r = r.header("mcp-session-id", s);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let sid = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.text().await?;
        // JSON, or an SSE stream whose last `data:` line is the answer.
        let json = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .next_back()
                .unwrap_or(Value::Null)
        });
        Ok((status, json, sid))
    }

    /// initialize + initialized.
    async fn open(&mut self) -> anyhow::Result<()> {
        self.sid = None;
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"backup-test","version":"1"}}});
        let (status, body, sid) = self.post(&init).await?;
        anyhow::ensure!(status == 200, "initialize: {status} {body}");
        self.sid = sid;
        let (status, body, _) = self
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await?;
        anyhow::ensure!(status < 300, "initialized: {status} {body}");
        Ok(())
    }

    /// `tools/call`; (status, answer).
    async fn call(&self, tool: &str, args: Value) -> anyhow::Result<(u16, Value)> {
        let (status, body, _) = self
            .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                "params":{"name":tool,"arguments":args}}))
            .await?;
        Ok((status, body))
    }
}

fn succeeded(status: u16, body: &Value) -> bool {
    status == 200 && body.get("result").is_some() && body["result"]["isError"] != true
}

/// `mcp-relay serve --dev` on a given state dir and the given endpoints'
/// ports (so the agent, which knows the old URL, finds it), killed on drop.
struct Serve(mcp_testkit::Process);

impl Serve {
    fn start(state: &Path, like: &mcp_testkit::process::Endpoints, config: &Path) -> Self {
        let mut cmd = Command::new(bin_path("mcp-relay"));
        cmd.args(["serve", "--dev", "--state"])
            .arg(state)
            .args(["--https", &like.https.to_string()])
            .args(["--quic", &like.quic.to_string()])
            .args([
                "--http",
                &like
                    .http
                    .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()),
            ])
            .args(["--public-url", &like.public_url])
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info");
        let mut p = mcp_testkit::Process::spawn("restored relay", cmd).unwrap();
        if let Err(e) = p.wait_for_line("relay listening", Duration::from_secs(20)) {
            panic!("the restored relay did not start: {e:#}");
        }
        Self(p)
    }

    fn output(&self) -> String {
        self.0.output()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_into_a_relay_that_knows_everything() {
    let dir = tempfile::tempdir().unwrap();
    // The load loop calls far more often than the default per-tool limit.
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[rate_limits]\nper_tool = 0\nper_identity = 0\n").unwrap();
    let mut relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    for who in [ALICE, BOB] {
        relay.ensure_user(who).unwrap();
    }
    let home = AgentHome::new();
    ok(&home.login_with_token(&relay, &relay.enroll_token(ALICE).unwrap()));
    let agent = home.run_agent(&relay, "shop", true).unwrap();
    let out = ok(&home
        .agent(&["share", BOB, "--tools", "read_query,list_tables"])
        .output()
        .unwrap());
    assert!(out.contains("Revoke with:"), "{out}");
    let url = agent.public_url.clone();
    let bob_http = relay.authed_client_as(BOB, "shop");
    let alice_http = relay.authed_client_as(ALICE, "shop");
    let before = known(relay.state_dir());
    assert_eq!(before.users.len(), 2, "{before:?}");
    assert_eq!(before.grants.len(), 1, "{before:?}");

    // Load: alice and bob call through the tunnel until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for http in [alice_http.clone(), bob_http.clone()] {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let mut s = Session::new(http, &url);
        s.open().await.unwrap();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let q = format!("select {n} as n, count(*) as c from customers");
                match s.call("read_query", json!({"query": q})).await {
                    Ok((status, body)) if succeeded(status, &body) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("load call failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Until the audit log has signed a checkpoint (every 10 s), so the backup
    // holds a checkpoint file that must agree with the copied database.
    let checkpoints = relay.state_dir().join("audit-checkpoints.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&checkpoints).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no audit checkpoint within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The backup, while the relay serves and writes its audit log.
    let archive = dir.path().join("relay-backup.tar.gz");
    let during = done.load(Ordering::Relaxed);
    let started = Instant::now();
    let backup = {
        let (archive, state) = (archive.clone(), relay.state_dir().to_path_buf());
        tokio::task::spawn_blocking(move || {
            Command::new(bin_path("mcp-relay"))
                .args(["backup", "--out"])
                .arg(&archive)
                .arg("--state")
                .arg(&state)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let took = started.elapsed();
    ok(&backup);
    let summary = String::from_utf8_lossy(&backup.stderr).into_owned();
    assert!(
        summary.contains("backup:") && summary.contains(&archive.display().to_string()),
        "{summary}"
    );
    eprintln!(
        "{} ({} bytes on disk, {took:?} wall)",
        summary.trim(),
        std::fs::metadata(&archive).unwrap().len()
    );

    // A restore into the live state dir is refused, even with --force.
    let refused = relay_cli(
        &["restore", archive.to_str().unwrap(), "--force"],
        relay.state_dir(),
    );
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("a relay is serving from"), "{why}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let served = done.load(Ordering::Relaxed);
    assert!(
        served > during,
        "calls went on during the backup: {during} -> {served}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no call failed under the backup"
    );

    // The relay's host is lost; its state comes back from the archive.
    relay.kill9();
    let new_state = dir.path().join("restored-state");
    let restored = relay_cli(&["restore", archive.to_str().unwrap()], &new_state);
    ok(&restored);
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(said.contains("restore:"), "{said}");
    assert_eq!(known(&new_state), before);
    // Restoring again over it needs --force.
    let again = relay_cli(&["restore", archive.to_str().unwrap()], &new_state);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let new_relay = Serve::start(&new_state, &relay.endpoints, &config);

    // The agent finds the restored relay (same device CA) and bob's grant,
    // made before the backup, still holds, with a token signed before it.
    let mut bob = Session::new(bob_http.clone(), &url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if bob.open().await.is_ok() {
            let (status, body) = bob
                .call(
                    "read_query",
                    json!({"query": "select count(*) as n from customers"}),
                )
                .await
                .unwrap();
            if succeeded(status, &body) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "bob's grant did not work on the restored relay\nrelay:\n{}\nagent:\n{}",
            new_relay.output(),
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = bob
        .call("write_query", json!({"query": "delete from customers"}))
        .await
        .unwrap();
    assert!(!succeeded(status, &body), "{status} {body}");
    assert!(body.to_string().contains("forbidden"), "{status} {body}");
    let connects = agent.status().unwrap()["connects"].as_u64().unwrap();
    assert!(connects >= 2, "the agent reconnected: {connects}");

    // Alice (the owner) may still call everything.
    let mut alice = Session::new(alice_http, &url);
    alice.open().await.unwrap();
    let (status, body) = alice.call("list_tables", json!({})).await.unwrap();
    assert!(succeeded(status, &body), "{status} {body}");

    // The audit log came across whole and keeps growing on the restored relay.
    let report: Value =
        serde_json::from_str(&ok(&relay_cli(&["audit", "verify", "--json"], &new_state))).unwrap();
    eprintln!("audit verify: {report}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["records"].as_u64().unwrap() >= during, "{report}");
    assert_eq!(report["problems"], json!([]), "{report}");
    drop(new_relay);
}
