//! Issue 6 end to end: per-message authorization at the relay (Cedar),
//! `mcp-agent share`, filtered tool lists, session binding, rate limits, the
//! explain/check CLI and the audit log — with real processes and the
//! official Python SDK client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_testkit::{AgentHome, AgentOptions, Relay, RelayOptions, bin_path, python, workspace_root};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// The line-driven Python SDK client (tests/py/policy_client.py).
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    /// Signs in as `email` and opens a session; `Err` carries the refusal.
    fn start(relay: &Relay, url: &str, email: &str) -> Result<Self, String> {
        let mut child = Command::new(python())
            .arg(workspace_root().join("tests/py/policy_client.py"))
            .arg(url)
            .arg(relay.ca_file())
            .args([email, PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut c = Self {
            child,
            stdin,
            stdout,
        };
        let ready = c.read();
        if ready["ready"] == true {
            Ok(c)
        } else {
            Err(ready["error"].as_str().unwrap_or("").to_owned())
        }
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.read()
    }

    fn tools(&mut self) -> Vec<String> {
        serde_json::from_value(self.ask("list")["tools"].clone()).unwrap()
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        self.ask(&format!("call {tool} {args}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A relay with alice, bob and carol, and alice's laptop serving `shop`.
fn alice_serves_shop(relay: &Relay, extra: &[&str]) -> (AgentHome, mcp_testkit::Agent) {
    for (who, groups) in [(ALICE, &[][..]), (BOB, &[][..]), (CAROL, &["analysts"][..])] {
        relay.add_user_with_password(who, groups, PASSWORD).unwrap();
    }
    let home = AgentHome::new();
    ok(&home.login_with_token(relay, &relay.enroll_token(ALICE).unwrap()));
    let agent = home.run_agent_with(relay, "shop", extra, true).unwrap();
    (home, agent)
}

fn streams(agent: &mcp_testkit::Agent) -> u64 {
    agent.status().unwrap()["streams_received"]
        .as_u64()
        .unwrap()
}

#[test]
fn shared_tools_are_all_bob_sees_and_revoking_stops_him_within_a_second() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let (home, agent) = alice_serves_shop(&relay, &[]);

    let out = ok(&home
        .agent(&[
            "share",
            BOB,
            "--tools",
            "read_query,list_tables",
            "--expires",
            "7d",
        ])
        .output()
        .unwrap());
    assert!(out.contains(&agent.public_url), "{out}");
    for client in ["ChatGPT", "Claude", "VS Code"] {
        assert!(out.contains(client), "how to add it in {client}: {out}");
    }
    let grant = out
        .lines()
        .find_map(|l| l.strip_prefix("Revoke with: mcp-agent shares revoke "))
        .unwrap()
        .trim()
        .to_owned();

    // The grant is in the relay's inventory, owned by alice.
    let inv = relay
        .cli(&["credentials", "list", "--kind", "grant", "--json"])
        .unwrap();
    assert!(
        inv.contains(&grant) && inv.contains(ALICE) && inv.contains("active"),
        "{inv}"
    );

    // Bob sees exactly what was shared (SSE list response, filtered).
    let mut bob = Client::start(&relay, &agent.public_url, BOB).unwrap();
    assert_eq!(bob.tools(), ["list_tables", "read_query"]);
    let r = bob.call(
        "read_query",
        json!({"query": "select count(*) as n from customers"}),
    );
    assert_eq!(r["ok"], true, "{r}");

    // write_query: a JSON-RPC error naming the reason; nothing reached the laptop.
    let before = streams(&agent);
    let r = bob.call("write_query", json!({"query": "delete from customers"}));
    assert_eq!(r["ok"], false, "{r}");
    let err = r["error"].as_str().unwrap_or_default();
    assert!(err.contains("forbidden"), "{r}");
    assert!(err.contains("write_query"), "{r}");
    assert_eq!(streams(&agent), before, "the agent saw no stream");

    // Carol has no grant: refused at the door.
    let refused = Client::start(&relay, &agent.public_url, CAROL)
        .err()
        .unwrap();
    assert!(
        refused.contains("403") || refused.contains("orbidden"),
        "{refused}"
    );

    // The owner still sees (and may call) everything.
    let mut alice = Client::start(&relay, &agent.public_url, ALICE).unwrap();
    assert!(alice.tools().contains(&"write_query".to_owned()) || alice.tools().len() >= 3);

    // shares list shows the grant; revoking it stops bob's very next call.
    let list = ok(&home.agent(&["shares", "list"]).output().unwrap());
    assert!(
        list.contains(&grant) && list.contains("live") && list.contains(BOB),
        "{list}"
    );
    ok(&home
        .agent(&["shares", "revoke", &grant[..8]])
        .output()
        .unwrap());
    let revoked = Instant::now();
    let mut refused_after = None;
    while revoked.elapsed() < Duration::from_secs(3) {
        let r = bob.call("read_query", json!({"query": "select 1"}));
        if r["ok"] == false {
            refused_after = Some(revoked.elapsed());
            break;
        }
    }
    let took = refused_after.expect("bob was refused after the revocation");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let list = ok(&home.agent(&["shares", "list", "--json"]).output().unwrap());
    assert!(list.contains("revoked"), "{list}");

    // The owner's audit view: bob's allowed read, his denied write.
    let audit = ok(&home
        .agent(&["audit", "-n", "200", "--json"])
        .output()
        .unwrap());
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records.iter().any(|r| r["principal"] == BOB
            && r["tool"] == "write_query"
            && r["decision"] == "deny"),
        "{audit}"
    );
    assert!(
        records.iter().any(|r| r["principal"] == BOB
            && r["tool"] == "read_query"
            && r["decision"] == "allow"
            && r["status"] == 200),
        "{audit}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["principal"] == CAROL && r["decision"] == "deny"),
        "{audit}"
    );

    // The laptop's own log: what it executed for bob (same request ids as
    // the relay's records), and the log verifies.
    std::thread::sleep(Duration::from_millis(200));
    let local = ok(&agent.local_log(&["-n", "100", "--json"]).unwrap());
    assert!(
        local
            .lines()
            .any(|l| l.contains(BOB) && l.contains("read_query") && l.contains("\"allow\"")),
        "{local}"
    );
    assert!(
        !local.contains("write_query"),
        "the relay refused it: the laptop never saw it\n{local}"
    );
    ok(&agent.local_log(&["--verify"]).unwrap());

    // The relay's log verifies, and a record edited by hand is named.
    drop((bob, alice));
    let verify = |json: bool| {
        let mut c = Command::new(bin_path("mcp-relay"));
        c.args(["audit", "verify", "--state"])
            .arg(relay.state_dir());
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    // Records of answered requests are on disk within 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    let out = verify(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let db = rusqlite::Connection::open(relay.state_dir().join("audit.db")).unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT seq FROM records ORDER BY seq LIMIT 1 OFFSET 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        r#"UPDATE records SET record = replace(record, '"status":', '"status": ') WHERE seq = ?1"#,
        [seq],
    )
    .unwrap();
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&seq.to_string()), "{text}");
}

#[test]
fn sessions_belong_to_their_creator_and_rate_limits_say_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(
        &cfg,
        "[rate_limits]\nper_tool = 3\nper_identity = 1000\nwindow = \"3s\"\n",
    )
    .unwrap();
    let mut relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let db = dir.path().join("shop.db");
    assert!(
        Command::new(bin_path("mcp-agent"))
            .arg("demo-db")
            .arg(&db)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    // A dev relay's token-served tunnel is open to every signed-in caller.
    let agent = mcp_testkit::Agent::start(
        &relay,
        AgentOptions {
            name: "shop".into(),
            upstream: String::new(),
            token: None,
            args: vec!["--db".into(), db.display().to_string()],
        },
    )
    .unwrap();
    let url = agent.public_url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = relay.client();
    let dave = relay.access_token_for("dave@example.com", "shop").unwrap();
    let erin = relay.access_token_for("erin@example.com", "shop").unwrap();
    let sid = rt.block_on(async {
        let post = |token: &str, session: Option<&str>, body: Value| {
            let mut r = http
                .post(&url)
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .json(&body);
            if let Some(s) = session {
                r = r.header("mcp-session-id", s);
            }
            r.send()
        };
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
        let r = post(&dave, None, init).await.unwrap();
        assert_eq!(r.status(), 200);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.bytes().await;
        post(&dave, Some(&sid), json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await.unwrap();

        // Erin presenting dave's session: as if it did not exist.
        let before = streams(&agent);
        let r = post(&erin, Some(&sid), json!({"jsonrpc":"2.0","id":2,"method":"tools/list"})).await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(streams(&agent), before);

        // A batch under 2025-06-18 has no place: refused before the agent.
        let r = post(&dave, Some(&sid), json!([{"jsonrpc":"2.0","id":3,"method":"ping"}])).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32600, "{v}");

        // Three calls per tool per 3 s: the fourth is refused with retry information.
        let call = |id: u64| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"list_tables","arguments":{}}});
        for id in 10..13 {
            let r = post(&dave, Some(&sid), call(id)).await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            assert!(!body.contains("rate limited"), "{body}");
        }
        let r = post(&dave, Some(&sid), call(13)).await.unwrap();
        assert_eq!(r.status(), 200);
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=3).contains(&retry), "{retry}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32029, "{v}");
        let wait = v["error"]["data"]["retry_after_ms"].as_u64().unwrap();
        assert!(wait > 0 && wait <= 1000, "{v}");
        // Erin has her own allowance.
        let r = post(&erin, None, call(14)).await.unwrap();
        assert!(!r.text().await.unwrap().contains("rate limited"));
        tokio::time::sleep(Duration::from_millis(wait + 50)).await;
        let r = post(&dave, Some(&sid), call(15)).await.unwrap();
        let body = r.text().await.unwrap();
        assert!(!body.contains("rate limited") && body.contains("result"), "{body}");
        sid
    });

    // After a relay restart the relay no longer knows whose session it is;
    // the agent still does.
    relay.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.status().unwrap()["connects"] != 2 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.output());
        std::thread::sleep(Duration::from_millis(25));
    }
    rt.block_on(async {
        let post = |token: &str, body: Value| {
            http.post(&url)
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .header("mcp-session-id", &sid)
                .json(&body)
                .send()
        };
        let denied = |a: &mcp_testkit::Agent| a.status().unwrap()["requests_denied"].as_u64().unwrap();
        let before = denied(&agent);
        let list = json!({"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"list_tables","arguments":{}}});
        let r = post(&erin, list.clone()).await.unwrap();
        assert_eq!(r.status(), 404, "another identity's session, refused by the agent");
        assert_eq!(denied(&agent), before + 1);
        let r = post(&dave, list).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("result"));
    });
}

#[test]
fn admin_forbids_bind_the_owner_and_explain_shows_which_policy_decided() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.cedar");
    std::fs::write(
        &admin,
        "// Nobody runs destructive tools through this relay.\n@id(\"no-destructive\")\nforbid (principal, action == Mcp::Action::\"tools/call\", resource is Mcp::Tool)\nwhen { resource.destructive };\n",
    )
    .unwrap();
    let broken = dir.path().join("broken.cedar");
    std::fs::write(
        &broken,
        "permit (principal, action, resource)\nwhen { principal.emial == \"x\" };\n",
    )
    .unwrap();

    // `policy check`: good file ok, broken one names file:line:col.
    let out = Command::new(bin_path("mcp-relay"))
        .args(["policy", "check"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin_path("mcp-relay"))
        .args(["policy", "check"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", broken.display())), "{err}");

    let relay = Relay::start(RelayOptions {
        args: vec!["--policy".into(), admin.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let (home, agent) = alice_serves_shop(&relay, &["--allow-writes"]);

    // Bad shares are refused with what to fix (exit 4), and nothing is stored.
    for (args, says) in [
        (&["share", "not-an-email"][..], "subject"),
        (&["share", BOB, "--tunnel", "other"][..], "not yours"),
        (&["share", BOB, "--expires", "400d"][..], "366 days"),
        (&["share", BOB, "--tools", ""][..], "tool"),
        (&["shares", "revoke", "ffffff00"][..], "no live grant"),
    ] {
        let out = home.agent(args).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains(says), "{args:?}: {err}");
    }
    assert!(
        !relay
            .cli(&["credentials", "list", "--kind", "grant"])
            .unwrap()
            .contains(BOB)
    );
    // An invalid owner policy stops the agent before it connects, naming the line.
    let out = home
        .agent(&[
            "connect",
            "--relay",
            &relay.https_url(),
            "--name",
            "shop2",
            "--db",
            &home.db(),
        ])
        .arg("--ca")
        .arg(relay.ca_file())
        .arg("--policy")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", broken.display())), "{err}");

    ok(&home.agent(&["share", "group:analysts"]).output().unwrap());

    // The owner may not run write_query (destructive) under the admin's forbid.
    let mut alice = Client::start(&relay, &agent.public_url, ALICE).unwrap();
    let tools = alice.tools();
    assert!(
        tools.contains(&"read_query".to_owned()) && !tools.contains(&"write_query".to_owned()),
        "{tools:?}"
    );
    let r = alice.call("write_query", json!({"query": "delete from customers"}));
    assert!(
        r["error"].as_str().unwrap_or("").contains("no-destructive"),
        "{r}"
    );
    // Carol, in the analysts group, reads.
    let mut carol = Client::start(&relay, &agent.public_url, CAROL).unwrap();
    assert_eq!(carol.call("list_tables", json!({}))["ok"], true);

    let explain = |user: &str, tool: &str| {
        Command::new(bin_path("mcp-relay"))
            .args(["policy", "explain", "--state"])
            .arg(relay.state_dir())
            .args(["--policy"])
            .arg(&admin)
            .args([
                "--user",
                user,
                "--tunnel",
                "shop",
                "--method",
                "tools/call",
                "--tool",
                tool,
            ])
            .output()
            .unwrap()
    };
    let out = explain(ALICE, "write_query");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DENY") && text.contains("no-destructive"),
        "{text}"
    );
    let out = explain(CAROL, "read_query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("grant:"));
    let out = explain(BOB, "read_query");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("default deny"));
}
