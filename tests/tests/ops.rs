//! Running the relay: metrics a Prometheus parser accepts and that move,
//! health probes, `check-config` on broken files, SIGHUP reloads, and
//! sockets handed over by a service manager.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use mcp_testkit::{
    Agent, AgentOptions, Process, Relay, RelayOptions, Upstream, bin_path, python, workspace_root,
};
use serde_json::{Value, json};

fn ping(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

/// Scrapes `/metrics` and parses it with the official Python client's
/// OpenMetrics and classic parsers; the samples by `name{labels}`.
async fn scrape(relay: &Relay) -> serde_json::Map<String, Value> {
    let addr = relay.endpoints.metrics.expect("--metrics given");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let out = Command::new(python())
        .arg(workspace_root().join("tests/py/parse_metrics.py"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parsers refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["classic_families"].as_u64().unwrap() >= 6, "{v}");
    v["samples"].as_object().unwrap().clone()
}

fn sample(s: &serde_json::Map<String, Value>, key: &str) -> f64 {
    s.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_and_probes_answer() {
    let relay = Relay::start(RelayOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let _agent = Agent::start(
        &relay,
        AgentOptions::for_upstream("metered", &upstream.mcp_url()),
    )
    .unwrap();
    let url = format!("{}/t/metered/mcp", relay.https_url());
    let before = scrape(&relay).await;

    let client = relay.authed_client("metered");
    let mut ids = Vec::new();
    for id in 1..=3 {
        let r = client.post(&url).json(&ping(id)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        r.bytes().await.unwrap();
    }
    // The request id the client sees is the one the audit log records.
    let mut exported = String::new();
    for _ in 0..50 {
        exported = relay.cli(&["audit", "export"]).unwrap();
        if ids.iter().all(|id| exported.contains(id.as_str())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert!(
            exported.contains(&format!("\"{id}\"")),
            "{id} not in the audit log:\n{exported}"
        );
    }
    let anonymous = relay.client();
    let r = anonymous.post(&url).json(&ping(9)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A failed token request counts as an OAuth event.
    let r = anonymous
        .post(format!("{}/token", relay.https_url()))
        .form(&[("grant_type", "authorization_code"), ("code", "nope")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());

    let after = scrape(&relay).await;
    let moved = |k: &str| sample(&after, k) - sample(&before, k);
    assert_eq!(
        moved("mcp_relay_requests_total{outcome=allowed}"),
        3.0,
        "{after:?}"
    );
    assert_eq!(
        moved("mcp_relay_requests_total{outcome=unauthenticated}"),
        1.0
    );
    assert_eq!(
        moved("mcp_relay_request_duration_seconds_count{outcome=allowed}"),
        3.0
    );
    assert!(moved("mcp_relay_tunnel_bytes_total{direction=request}") > 0.0);
    assert!(moved("mcp_relay_tunnel_bytes_total{direction=response}") > 0.0);
    assert_eq!(
        moved("mcp_relay_oauth_events_total{endpoint=token,result=error}"),
        1.0
    );
    assert_eq!(sample(&after, "mcp_relay_agents_connected{}"), 1.0);
    assert_eq!(sample(&after, "mcp_relay_tunnels_online{}"), 1.0);
    let expiry = sample(&after, "mcp_relay_certificate_expiry_timestamp_seconds{}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "certificate expiry {expiry} is in the future");

    // Probes on the public front and the metrics listener; /metrics only on the latter.
    let metrics = relay.endpoints.metrics.unwrap();
    for base in [relay.https_url(), format!("http://{metrics}")] {
        let r = relay
            .client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{base}/healthz");
        let r = relay
            .client()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{base}/readyz");
        let ready: Value = r.json().await.unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["store_writable"], true);
        assert_eq!(ready["certificate_valid"], true);
    }
    let r = relay
        .client()
        .get(format!("{}/metrics", relay.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "metrics never on the public port");
}

/// `mcp-relay check-config --config FILE`: exit code and stderr.
fn check_config(file: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path("mcp-relay"))
        .args(["check-config", "--config"])
        .arg(file)
        .args(extra)
        .env_remove("MCP_RELAY_STATE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_key_and_line_of_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    let a_file = d.join("plain-file");
    std::fs::write(&a_file, "x").unwrap();
    // A real certificate and key (rcgen), and one that does not match it.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["relay.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(
        d.join("other-key.pem"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let good = format!(
        "# a production relay\npublic_url = \"https://relay.example.com\"\nhttps = \"127.0.0.1:8443\"\nquic = \"127.0.0.1:8443\"\nstate = \"{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nmetrics = \"127.0.0.1:9464\"\n",
        state.display(),
        d.join("cert.pem").display(),
        d.join("key.pem").display(),
    );
    let cases: Vec<(&str, String, &str, Option<usize>)> = vec![
        (
            "unknown key",
            format!("{good}[limits]\nmax_streams_per_tunnel = 8\nmax_stremas = 9\n"),
            "max_stremas",
            Some(11),
        ),
        (
            "bad address",
            good.replace("https = \"127.0.0.1:8443\"", "https = \"localhost:eighty\""),
            "https",
            Some(3),
        ),
        (
            "missing certificate file",
            good.replace("cert.pem", "missing-cert.pem"),
            "tls_cert",
            Some(6),
        ),
        (
            "key of another certificate",
            good.replace("key.pem", "other-key.pem"),
            "tls_key",
            Some(7),
        ),
        (
            "state is a file's child",
            good.replace(
                &format!("state = \"{}\"", state.display()),
                &format!("state = \"{}/sub\"", a_file.display()),
            ),
            "state",
            Some(5),
        ),
        (
            "unwritable state dir",
            good.replace(
                &format!("state = \"{}\"", state.display()),
                "state = \"/proc/mcp-relay-state\"",
            ),
            "state",
            Some(5),
        ),
        (
            "certificate files and ACME",
            format!("{good}\n[acme]\n"),
            "acme",
            Some(10),
        ),
        (
            "metrics on the https address",
            good.replace("9464", "8443"),
            "metrics",
            Some(8),
        ),
        (
            "password login off without OIDC",
            format!("{good}password_login = false\n"),
            "password_login",
            Some(9),
        ),
        (
            "zero rate window",
            format!("{good}[rate_limits]\nwindow = \"0s\"\n"),
            "rate_limits.window",
            Some(10),
        ),
    ];
    let path = d.join("relay.toml");
    std::fs::write(&path, &good).unwrap();
    let (code, stdout, stderr) = check_config(&path, &[]);
    assert_eq!(code, 0, "the good config passes: {stderr}");
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(!state.exists(), "check-config creates nothing");
    for (what, text, key, line) in cases {
        std::fs::write(&path, &text).unwrap();
        let (code, _, stderr) = check_config(&path, &[]);
        assert_eq!(code, 1, "{what}: exit 1\n{stderr}");
        assert!(stderr.contains(key), "{what}: names {key}: {stderr}");
        if let Some(line) = line {
            assert!(
                stderr.contains(&format!("line {line}")),
                "{what}: names line {line}: {stderr}"
            );
        }
        assert!(
            stderr.contains(&path.display().to_string()),
            "{what}: names the file: {stderr}"
        );
    }
    // A flag overrides the file and is checked the same way.
    std::fs::write(&path, &good).unwrap();
    let (code, _, stderr) = check_config(&path, &["--tls-cert", "/nonexistent.pem"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tls_cert") && stderr.contains("/nonexistent.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rate_limits_keeps_tunnels_and_survives_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[rate_limits]\nper_identity = 1000\n").unwrap();
    let mut relay = Relay::start(RelayOptions {
        args: vec![
            "--config".into(),
            config.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(
        &relay,
        AgentOptions::for_upstream("hup", &upstream.mcp_url()),
    )
    .unwrap();
    let client = relay.authed_client("hup");
    let url = format!("{}/t/hup/mcp", relay.https_url());
    for id in 0..5 {
        let r = client.post(&url).json(&ping(id)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    std::fs::write(
        &config,
        "[rate_limits]\nper_identity = 2\nwindow = \"1h\"\n",
    )
    .unwrap();
    relay.signal("HUP");
    relay
        .wait_for_line("configuration reloaded", Duration::from_secs(10))
        .unwrap();
    let mut statuses = Vec::new();
    for id in 10..14 {
        statuses.push(
            client
                .post(&url)
                .json(&ping(id))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429], "the new limit is in force");
    // JSON log lines: the refusal's request id is the audit record's.
    let line = relay
        .wait_for_line("\"denied: ", Duration::from_secs(5))
        .unwrap();
    let logged: Value = serde_json::from_str(&line).expect("a JSON log line");
    let rid = logged["fields"]["request_id"].as_str().unwrap().to_owned();
    let mut exported = String::new();
    for _ in 0..50 {
        exported = relay.cli(&["audit", "export"]).unwrap();
        if exported.contains(&rid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exported.contains(&format!("\"{rid}\"")),
        "{rid} not in the audit log"
    );

    // A broken file changes nothing and the relay keeps serving.
    std::fs::write(&config, "[rate_limits]\nper_identity = 2\nbogus = true\n").unwrap();
    relay.signal("HUP");
    relay
        .wait_for_line("keeping the running configuration", Duration::from_secs(10))
        .unwrap();
    let r = relay
        .client()
        .get(format!("{}/healthz", relay.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = agent.status().unwrap();
    assert_eq!(status["connects"], 1, "no tunnel was dropped: {status}");
    assert_eq!(status["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_passed_by_the_service_manager_is_used_and_queues_clients() {
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("systemd-socket-activate not installed; skipping");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(activate);
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "--fdname=https"])
        .arg(bin_path("mcp-relay"))
        .args(["serve", "--dev", "--state"])
        .arg(state.path())
        .args([
            "--https",
            &format!("127.0.0.1:{port}"),
            "--quic",
            "127.0.0.1:0",
        ]);
    let mut relay = Process::spawn("activated relay", cmd).unwrap();
    // systemd-socket-activate starts the relay on the first connection: this
    // request waits in the socket's queue instead of being refused.
    let started = Instant::now();
    let mut ok = false;
    let pem = loop {
        if let Ok(p) = std::fs::read(state.path().join("dev-ca.pem")) {
            break Some(p);
        }
        // Any connection triggers the start; the dev CA appears right after.
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(pem) = pem {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let r = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await;
        ok = matches!(r, Ok(r) if r.status() == 200);
    }
    relay.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = relay.output();
    assert!(ok, "no answer through the passed socket:\n{out}");
    assert!(
        out.contains("using sockets passed by the service manager"),
        "{out}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_of_the_previous_schema_migrates_on_start_after_a_backup() {
    use mcp_relay::store::SqliteStore;
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("relay.db");
    let latest = SqliteStore::latest_schema_version();
    // What the previous relay version left: its schema, two accounts.
    SqliteStore::create_at_version(&db, latest - 1);
    assert_eq!(SqliteStore::file_schema_version(&db).unwrap(), latest - 1);

    let mut cmd = Command::new(bin_path("mcp-relay"));
    cmd.args(["serve", "--dev", "--state"])
        .arg(state.path())
        .args(["--https", "127.0.0.1:0", "--quic", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let mut relay = Process::spawn("relay", cmd).unwrap();
    relay
        .wait_for_line("relay listening", Duration::from_secs(20))
        .unwrap();
    let endpoints = state.path().join("endpoints.json");
    let e: Value = serde_json::from_slice(&std::fs::read(&endpoints).unwrap()).unwrap();
    let port = e["https"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    // Migrated, with the old file kept first.
    assert_eq!(SqliteStore::file_schema_version(&db).unwrap(), latest);
    let copies: Vec<String> = std::fs::read_dir(state.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with(&format!("relay.db.v{}-", latest - 1))),
        "{copies:?}"
    );
    let copy = state.path().join("backups").join(&copies[0]);
    assert_eq!(SqliteStore::file_schema_version(&copy).unwrap(), latest - 1);
    let logged = relay.output();
    assert!(
        logged.contains("backups/relay.db.v"),
        "the copy is logged:\n{logged}"
    );

    // The accounts are there, and the relay serves.
    let out = Command::new(bin_path("mcp-relay"))
        .args(["users", "list", "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    let users = String::from_utf8_lossy(&out.stdout);
    assert!(
        users.contains("alice@example.com") && users.contains("bob@example.com"),
        "{users}"
    );
    let pem = std::fs::read(state.path().join("dev-ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_readyz_says_503_and_in_flight_requests_finish() {
    let mut relay = Relay::start(RelayOptions {
        args: vec!["--metrics".into(), "127.0.0.1:0".into()],
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(
        &relay,
        AgentOptions::for_upstream("drain", &upstream.mcp_url()),
    )
    .unwrap();
    let client = relay.authed_client("drain");
    let slow = format!("{}/t/drain/slow?ms=1500", relay.https_url());
    let call = tokio::spawn(async move {
        let r = client.get(slow).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.status().unwrap()["in_flight"] != 1 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.signal("TERM");
    relay
        .wait_for_line("shutting down", Duration::from_secs(5))
        .unwrap();
    let readyz = format!("http://{}/readyz", relay.endpoints.metrics.unwrap());
    let r = reqwest::get(&readyz).await.unwrap();
    assert_eq!(r.status(), 503, "not ready while draining");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["draining"], true, "{v}");
    assert_eq!(v["ready"], false, "{v}");
    let (status, body) = call.await.unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "done"),
        "the in-flight request finished"
    );
    assert_eq!(
        relay.wait_exit(Duration::from_secs(15)).unwrap(),
        0,
        "{}",
        relay.output()
    );
    assert!(relay.output().contains("sending agents GoAway"));
}
