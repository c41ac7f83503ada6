//! The command lines as a user meets them: help, versions, completions,
//! config files (good and broken) and the errors that say what to do next.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::Duration;

use mcp_testkit::{Relay, RelayOptions, Upstream, bin_path};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin_path(bin))
        .args(args)
        .env_remove("MCP_AGENT_TOKEN")
        .env("HOME", "/nonexistent-home-for-tests")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_version_and_completions() {
    for bin in ["mcp-relay", "mcp-agent"] {
        let o = run(bin, &["--version"]);
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).starts_with(bin));
        let o = run(bin, &["--help"]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("Examples:"));
        let o = run(bin, &["completions", "bash"]);
        assert!(
            o.status.success() && o.stdout.len() > 1000,
            "{bin} completions"
        );
        let o = run(bin, &["no-such-command"]);
        assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
    }
}

#[test]
fn broken_config_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let relay_cfg = dir.path().join("relay.toml");
    std::fs::write(&relay_cfg, "dev = true\n\nhttps = \"not an address\"\n").unwrap();
    let o = run(
        "mcp-relay",
        &["serve", "--config", relay_cfg.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));

    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        "relay = \"https://r.example\"\ndbb = \"x.db\"\n",
    )
    .unwrap();
    let o = run(
        "mcp-agent",
        &["connect", "--config", agent_cfg.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("line 2") && e.contains("dbb"), "{e}");
}

#[test]
fn missing_pieces_say_what_to_pass() {
    let o = run(
        "mcp-agent",
        &["connect", "--relay", "https://r.example", "--token", "t"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--db FILE, --stdio CMD or --upstream URL"),
        "{}",
        stderr(&o)
    );

    let o = run(
        "mcp-agent",
        &[
            "connect",
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--name",
            "x",
            "--token",
            "t",
        ],
    );
    assert!(
        stderr(&o).contains("no relay: pass --relay"),
        "{}",
        stderr(&o)
    );

    let o = run(
        "mcp-agent",
        &[
            "connect",
            "--relay",
            "https://r.example",
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--name",
            "x",
        ],
    );
    assert!(
        stderr(&o).contains("not signed in: run `mcp-agent login"),
        "{}",
        stderr(&o)
    );

    let o = run(
        "mcp-agent",
        &[
            "connect",
            "--relay",
            "https://r.example",
            "--token",
            "t",
            "--db",
            "/nonexistent/x.db",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/x.db"), "{}", stderr(&o));

    let o = run(
        "mcp-agent",
        &[
            "connect",
            "--relay",
            "https://r.example",
            "--token",
            "t",
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--name",
            "Bad Name",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid tunnel name"), "{}", stderr(&o));

    let o = run("mcp-relay", &["serve", "--state", "/tmp/x-never-created"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--tls-cert FILE --tls-key FILE") && stderr(&o).contains("--dev"),
        "{}",
        stderr(&o)
    );

    let o = run(
        "mcp-relay",
        &[
            "agent-tokens",
            "revoke",
            "nope",
            "--state",
            tempfile::tempdir().unwrap().path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_from_a_config_file() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, relay.create_token().unwrap()).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "relay = \"{}\"\nname = \"fromfile\"\nca = \"{}\"\ntoken_file = \"{}\"\nupstream = \"{}\"\nquiet = true\n",
            relay.https_url(),
            relay.ca_file().display(),
            token_file.display(),
            upstream.mcp_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin_path("mcp-agent"))
        .args(["connect", "--config", cfg.to_str().unwrap()])
        .env_remove("MCP_AGENT_TOKEN")
        .env("MCP_AGENT_RUNTIME_DIR", dir.path().join("run"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("{}/t/fromfile/mcp", relay.http_url());
    let client = relay.authed_client("fromfile");
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(&url)
            .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .send()
            .await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "agent configured by file never served");
}
