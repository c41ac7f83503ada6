//! End-to-end tests of upstream secrets: `mcp-agent secrets set|list|rm`
//! against the file credential store (in a temp config dir, so the real
//! user's keyring and files are never touched), and `mcp-agent connect` with
//! `--upstream-header … secret:KEY` and `--env NAME=secret:KEY` behind a real
//! relay. The secret must reach the upstream and nothing else: not the relay's
//! output, not the agent's, not the client's response.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mcp_testkit::{Agent, AgentOptions, Relay, RelayOptions, Upstream, bin_path, python};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Generous: the test machine is small and busy.
const PATIENCE: Duration = Duration::from_secs(60);

/// A config dir of its own (made by the agent on first use): the file
/// store, never the OS keyring.
struct Store {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Store {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Self {
            dir: tmp.path().join("mcp-agent"),
            _tmp: tmp,
        }
    }

    fn env(&self) -> [(&'static str, &OsStr); 2] {
        [
            ("MCP_AGENT_CREDENTIAL_STORE", OsStr::new("file")),
            ("MCP_AGENT_CONFIG_DIR", self.dir.as_os_str()),
        ]
    }

    fn file(&self) -> PathBuf {
        self.dir.join("credentials.toml")
    }

    /// Runs `mcp-agent ARGS` with `stdin` piped in.
    fn agent(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin_path("mcp-agent"))
            .args(args)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `mcp-agent secrets set NAME` with the value on stdin.
    fn set(&self, name: &str, value: &str) {
        let out = self.agent(&["secrets", "set", name], &format!("{value}\n"));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn list_json(&self) -> Value {
        let out = self.agent(&["secrets", "list", "--json"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A value no other test or log line could contain by chance.
fn unique_secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{nanos:x}-{}", std::process::id())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_set_list_and_rm_through_the_cli() {
    let store = Store::new();
    let db = unique_secret("db");
    store.set("DBPASS", &db);
    store.set("api.token", "tok");
    // The file store: 0600 in a 0700 directory, values not in plain text.
    assert_eq!(mode(&store.file()), 0o600);
    assert_eq!(mode(&store.dir), 0o700);
    assert!(!std::fs::read_to_string(store.file()).unwrap().contains(&db));

    let out = store.agent(&["secrets", "list"], "");
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table.contains("DBPASS") && table.contains("api.token"),
        "{table}"
    );
    assert!(table.contains("never"), "{table}");
    assert!(!table.contains(&db) && !table.contains("tok "), "{table}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "credential store: file {} (MCP_AGENT_CREDENTIAL_STORE=file)",
            store.file().display()
        )),
        "{stderr}"
    );
    let list = store.list_json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["name"], "DBPASS");
    assert!(
        list[0]["created"].as_str().unwrap().ends_with('Z'),
        "{list}"
    );
    assert!(list[0]["last_used"].is_null(), "{list}");
    assert!(!list.to_string().contains(&db));

    // Replacing keeps one entry; removing deletes it.
    let out = store.agent(&["secrets", "set", "DBPASS", "--value-stdin"], "new\n");
    assert!(out.status.success());
    assert!(text(&out.stderr).starts_with("replaced secret DBPASS"));
    let out = store.agent(&["secrets", "rm", "DBPASS"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(store.list_json(), json!([list[1].clone()]));

    // Errors: meaningful exit codes and what to do next.
    let out = store.agent(&["secrets", "rm", "DBPASS"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no secret DBPASS in file")
            && text(&out.stderr).contains("mcp-agent secrets list"),
        "{}",
        text(&out.stderr)
    );
    let out = store.agent(&["secrets", "set", "bad name"], "x\n");
    assert_eq!(out.status.code(), Some(2), "a bad name is a usage error");
    assert!(text(&out.stderr).contains("is not a secret name"));
    let out = store.agent(&["secrets", "set", "EMPTY"], "\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is empty; nothing was stored"));
    assert_eq!(store.list_json().as_array().unwrap().len(), 1);
    // Only the store file and its lock: no temporary files left behind.
    let mut names: Vec<String> = std::fs::read_dir(&store.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["credentials.lock", "credentials.toml"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_gets_the_secret_header_and_the_relay_never_sees_it() {
    let store = Store::new();
    let token = unique_secret("bearer");
    store.set("API_TOKEN", &token);
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start_with_env(
        &relay,
        AgentOptions {
            name: "api".into(),
            upstream: upstream.mcp_url(),
            token: None,
            args: vec![
                "--upstream-header".into(),
                "Authorization: Bearer secret:API_TOKEN".into(),
                "--upstream-header".into(),
                "X-Static: plain".into(),
            ],
        },
        &store.env(),
    )
    .unwrap();

    let resp = relay
        .authed_client("api")
        .post(&agent.public_url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = format!("{:?}", resp.headers());
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"id\":7"), "{body}");

    // The upstream got the secret, in place of the client's relay token.
    let seen = upstream.observed.last_headers.lock().unwrap().clone();
    let auth: Vec<&str> = seen
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(auth, [format!("Bearer {token}")], "{seen:?}");
    assert!(
        seen.iter().any(|(k, v)| k == "x-static" && v == "plain"),
        "{seen:?}"
    );
    // Nothing else did: not the client's response, not the relay, not the logs.
    assert!(!headers.contains(&token) && !body.contains(&token));
    assert!(!relay.output().contains(&token), "{}", relay.output());
    assert!(!agent.output().contains(&token), "{}", agent.output());
    assert!(
        agent.output().contains("secrets API_TOKEN from file"),
        "{}",
        agent.output()
    );
    // Resolving it counted as a use.
    assert!(
        store.list_json()[0]["last_used"].is_string(),
        "{}",
        store.list_json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_child_gets_the_secret_in_its_environment() {
    let store = Store::new();
    let dbpass = unique_secret("dbpass");
    store.set("DBPASS", &dbpass);
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let server = mcp_testkit::workspace_root().join("tests/py/env_server.py");
    let command = format!("\"{}\" \"{}\"", python().display(), server.display());
    let agent = Agent::start_with_env(
        &relay,
        AgentOptions {
            name: "envs".into(),
            upstream: String::new(),
            token: None,
            args: vec![
                "--stdio".into(),
                command,
                "--env".into(),
                "MCP_TEST_DBPASS=secret:DBPASS".into(),
                "--env".into(),
                "MCP_TEST_DSN=postgres://app:secret:DBPASS@db/app".into(),
                "--env".into(),
                "MCP_TEST_PLAIN=plain".into(),
            ],
        },
        &store.env(),
    )
    .unwrap();

    let client = relay.authed_client("envs");
    let post = |session: Option<String>, body: Value| {
        let mut req = client
            .post(&agent.public_url)
            .header("accept", "application/json")
            .json(&body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let resp = post(
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "secrets-test", "version": "1"}}}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp
        .headers()
        .get("mcp-session-id")
        .expect("a session")
        .to_str()
        .unwrap()
        .to_owned();
    let sha = |v: &str| hex(&Sha256::digest(v.as_bytes()));
    let cases = [
        ("MCP_TEST_DBPASS", sha(&dbpass)),
        (
            "MCP_TEST_DSN",
            sha(&format!("postgres://app:{dbpass}@db/app")),
        ),
        ("MCP_TEST_PLAIN", sha("plain")),
        ("MCP_TEST_NOT_SET", "unset".to_owned()),
    ];
    for (i, (var, want)) in cases.into_iter().enumerate() {
        let resp = post(
            Some(session.clone()),
            json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                   "params": {"name": "env_sha256", "arguments": {"name": var}}}),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["result"]["content"][0]["text"], want, "{var}: {body}");
    }
    assert!(!relay.output().contains(&dbpass), "{}", relay.output());
    assert!(!agent.output().contains(&dbpass), "{}", agent.output());
}

#[test]
fn a_credentials_file_others_can_read_is_refused_with_the_chmod_hint() {
    let store = Store::new();
    store.set("API_TOKEN", "tok");
    let file = store.file();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hint = format!(
        "credentials file {0} is readable by others (mode 0644); run: chmod 600 {0}",
        file.display()
    );
    let out = store.agent(&["secrets", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&hint), "{}", text(&out.stderr));
    // A set is refused before the value is read, and changes nothing.
    let out = store.agent(&["secrets", "set", "OTHER"], "v\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&hint), "{}", text(&out.stderr));
    assert_eq!(mode(&file), 0o644);

    // connect fails at start with the same hint, before reaching the relay.
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let mut agent = Agent::spawn_with_env(
        &relay,
        AgentOptions {
            name: "refused".into(),
            upstream: "http://127.0.0.1:9/mcp".into(),
            token: None,
            args: vec![
                "--upstream-header".into(),
                "Authorization: Bearer secret:API_TOKEN".into(),
            ],
        },
        &store.env(),
    )
    .unwrap();
    assert_eq!(agent.wait_exit(PATIENCE).unwrap(), 1, "{}", agent.output());
    assert!(agent.output().contains(&hint), "{}", agent.output());
    assert!(!agent.output().contains("Public MCP URL"));

    // The fix in the hint works.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(store.list_json()[0]["name"], "API_TOKEN");
}

#[test]
fn connect_refuses_unknown_secrets_and_bad_headers_at_start() {
    let store = Store::new();
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let spawn = |args: &[&str]| {
        let mut agent = Agent::spawn_with_env(
            &relay,
            AgentOptions {
                name: "bad".into(),
                upstream: "http://127.0.0.1:9/mcp".into(),
                token: None,
                args: args.iter().map(|a| (*a).to_owned()).collect(),
            },
            &store.env(),
        )
        .unwrap();
        let code = agent.wait_exit(PATIENCE).unwrap();
        (code, agent.output())
    };
    let (code, out) = spawn(&["--upstream-header", "Authorization: Bearer secret:NOPE"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no secret NOPE; add it with: mcp-agent secrets set NOPE"),
        "{out}"
    );
    let (code, out) = spawn(&["--upstream-header", "Host: evil.example"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("host cannot be set with --upstream-header"),
        "{out}"
    );
    let (code, out) = spawn(&["--upstream-header", "no colon here"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("expected 'Name: value'"), "{out}");
    let (code, out) = spawn(&["--env", "X=secret:K"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--env sets the environment of a --stdio child"),
        "{out}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
