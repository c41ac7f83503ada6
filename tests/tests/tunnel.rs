//! End-to-end tests of the tunnel core: real `mcp-relay` and `mcp-agent`
//! processes on loopback, driven by the official MCP Python SDK client, plain
//! HTTP clients and a hand-made hostile agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mcp_testkit::{
    Agent, AgentOptions, Relay, RelayOptions, Upstream, python, run_python_driver, workspace_root,
};
use serde_json::{Value, json};

fn agent_opts(name: &str, upstream: &str) -> AgentOptions {
    AgentOptions::for_upstream(name, upstream)
}

fn rpc(id: u64, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"n": id}})
}

/// Polls `f` until it returns true or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Starts the Python SDK's MCP server on a free port.
struct PyServer {
    child: std::process::Child,
    url: String,
}

impl PyServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(python())
            .arg(workspace_root().join("tests/py/mcp_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Python MCP server did not start");
            assert!(
                child.try_wait().unwrap().is_none(),
                "Python MCP server exited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_lists_and_calls_tools_in_auto_and_legacy_mode() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let server = PyServer::start();
    let agent = Agent::start(&relay, agent_opts("pysdk", &server.url)).unwrap();
    assert_eq!(
        agent.public_url,
        format!("{}/t/pysdk/mcp", relay.https_url())
    );

    for mode in ["auto", "legacy"] {
        let v = run_python_driver(
            "mcp_client.py",
            &[
                agent.public_url.as_ref(),
                relay.ca_file().as_os_str(),
                mode.as_ref(),
            ],
            Some(&relay.access_token("pysdk").unwrap()),
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}\nagent:\n{}", agent.output()));
        assert_eq!(v["tools"], json!(["add", "echo", "progress"]), "{mode}");
        assert_eq!(v["add"], json!(["42"]), "{mode}");
        assert_eq!(v["echo"], json!(["héllo through the tunnel"]), "{mode}");
        if mode == "legacy" {
            assert_ne!(v["protocol_version"], "2026-07-28");
        }
        // Progress notifications stream through unbuffered: the first one
        // reached the client before the server produced the last one.
        let received = v["progress_received"].as_array().unwrap();
        let produced = v["progress_produced"].as_array().unwrap();
        assert_eq!(received.len(), 5, "{mode}: {v}");
        assert!(
            received[0].as_f64().unwrap() < produced[4].as_f64().unwrap(),
            "{mode}: first progress event arrived only after the last was produced: {v}"
        );
    }
    let status = agent.status().unwrap();
    assert!(
        status["streams_received"].as_u64().unwrap() >= 10,
        "{status}"
    );
    assert_eq!(status["streams_rejected"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_are_not_buffered() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let _agent = Agent::start(&relay, agent_opts("sse", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("sse");
    let resp = client
        .get(format!(
            "{}/t/sse/sse?n=5&interval_ms=250",
            relay.https_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let produced_when_first_arrived = upstream.observed.produced.lock().unwrap().len();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    assert!(
        produced_when_first_arrived < 5,
        "the first event arrived only after all {produced_when_first_arrived} were produced"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("\"i\":4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_kill9_and_restart_agent_reconnects_by_itself() {
    let mut relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(&relay, agent_opts("restart", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("restart");
    let url = format!("{}/t/restart/mcp", relay.http_url());
    assert_eq!(
        client
            .post(&url)
            .json(&rpc(1, "ping"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    relay.kill9();
    relay.restart().unwrap();
    let back = Instant::now();
    let url = format!("{}/t/restart/mcp", relay.http_url());
    let ok = eventually(Duration::from_secs(2), async || {
        matches!(client.post(&url).json(&rpc(2, "ping")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(
        ok,
        "no successful call within 2 s of the relay being back\nagent:\n{}\nrelay:\n{}",
        agent.output(),
        relay.output()
    );
    eprintln!(
        "reconnected and served {:?} after the relay came back",
        back.elapsed()
    );
    assert_eq!(agent.status().unwrap()["connects"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_all_succeed() {
    // Rate limits off: this is about the tunnel carrying 200 at once (the
    // default per-tool limit is 120 a minute).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "[rate_limits]\nper_tool = 0\nper_identity = 0\n").unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), cfg.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(&relay, agent_opts("many", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("many");
    let url = format!("{}/t/many/mcp", relay.https_url());
    let results = futures_util::future::join_all((0..200u64).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"n": i}}});
            let r = client.post(&url).json(&call).send().await?;
            let status = r.status();
            let body: Value = r.json().await?;
            anyhow::Ok((status, body))
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        let (status, body) = r.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["id"], i as u64);
        assert_eq!(body["result"]["echo"]["arguments"]["n"], i as u64);
    }
    let status = agent.status().unwrap();
    assert_eq!(status["requests_completed"], 200, "{status}");
    // The client's credentials never reach the laptop.
    let headers = upstream.observed.last_headers.lock().unwrap().clone();
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k == "authorization" || k == "cookie")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_the_upstream_request() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(&relay, agent_opts("cancel", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("cancel");
    let resp = client
        .get(format!(
            "{}/t/cancel/sse?n=1000&interval_ms=50",
            relay.https_url()
        ))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    drop(client);
    let cancelled = eventually(Duration::from_secs(5), async || {
        upstream.observed.sse_cancelled.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(
        cancelled,
        "upstream never saw the cancellation\n{}",
        agent.output()
    );
    assert_eq!(upstream.observed.sse_completed.load(Ordering::Relaxed), 0);
    assert_eq!(agent.status().unwrap()["requests_cancelled"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let relay = Relay::start(RelayOptions {
        args: [
            "--max-request-body",
            "1024",
            "--max-streams-per-tunnel",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let mut agent = Agent::start(&relay, agent_opts("limits", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("limits");
    let base = relay.https_url();

    // Unknown tunnel (with a valid token for that name): 404 with a JSON body.
    let r = relay
        .authed_client("nope")
        .post(format!("{base}/t/nope/mcp"))
        .json(&rpc(1, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unknown_tunnel");
    let r = client
        .get(format!("{base}/t/NOT..valid/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Body over the limit: 413, and the agent never sees a stream.
    let before = agent.status().unwrap()["streams_received"]
        .as_u64()
        .unwrap();
    let big = "x".repeat(2048);
    let r = client
        .post(format!("{base}/t/limits/mcp"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "body_too_large");
    // Same without Content-Length (chunked): still 413.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let r = client
        .post(format!("{base}/t/limits/mcp"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Headers over the limit: 431.
    let r = client
        .post(format!("{base}/t/limits/mcp"))
        .header("x-padding", "y".repeat(20 * 1024))
        .json(&rpc(1, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(
        agent.status().unwrap()["streams_received"]
            .as_u64()
            .unwrap(),
        before
    );

    // Too many requests in flight: 503 with Retry-After.
    let slow =
        |c: reqwest::Client, u: String| async move { c.get(u).send().await.unwrap().status() };
    let s1 = tokio::spawn(slow(
        client.clone(),
        format!("{base}/t/limits/slow?ms=1500"),
    ));
    let s2 = tokio::spawn(slow(
        client.clone(),
        format!("{base}/t/limits/slow?ms=1500"),
    ));
    let in_flight = eventually(Duration::from_secs(3), async || {
        agent.status().unwrap()["in_flight"] == 2
    })
    .await;
    assert!(in_flight);
    let r = client
        .get(format!("{base}/t/limits/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(s1.await.unwrap(), 200);
    assert_eq!(s2.await.unwrap(), 200);

    // Known tunnel, agent gone: 502 saying so.
    agent.kill();
    let gone = eventually(Duration::from_secs(15), async || {
        let r = client
            .post(format!("{base}/t/limits/mcp"))
            .json(&rpc(1, "x"))
            .send()
            .await
            .unwrap();
        if r.status() != 502 {
            return false;
        }
        let v: Value = r.json().await.unwrap();
        v["error"] == "agent_offline" || v["error"] == "agent_disconnected"
    })
    .await;
    assert!(gone, "relay never reported the agent gone");
}

/// The relay allows more streams than the agent accepts (`--max-streams`):
/// the request beyond the agent's cap is refused with 503 after
/// `stream_open_timeout`, not left hanging, and the tunnel keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_agents_own_stream_cap_get_503_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[limits]\nstream_open_timeout = \"1s\"\n").unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec![
            "--config".into(),
            config.display().to_string(),
            "--max-streams-per-tunnel".into(),
            "8".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let upstream = Upstream::start().await.unwrap();
    let mut opts = agent_opts("capped", &upstream.mcp_url());
    opts.args.extend(["--max-streams".into(), "2".into()]);
    let agent = Agent::start(&relay, opts).unwrap();
    let client = relay.authed_client("capped");
    let base = relay.https_url();

    let slow =
        |c: reqwest::Client, u: String| async move { c.get(u).send().await.unwrap().status() };
    let s1 = tokio::spawn(slow(
        client.clone(),
        format!("{base}/t/capped/slow?ms=4000"),
    ));
    let s2 = tokio::spawn(slow(
        client.clone(),
        format!("{base}/t/capped/slow?ms=4000"),
    ));
    let in_flight = eventually(Duration::from_secs(3), async || {
        agent.status().unwrap()["in_flight"] == 2
    })
    .await;
    assert!(in_flight, "{}", agent.output());
    let started = Instant::now();
    let r = client
        .get(format!("{base}/t/capped/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "agent_busy");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(s1.await.unwrap(), 200);
    assert_eq!(s2.await.unwrap(), 200);
    // Capacity is back once the slow ones are done.
    let r = client
        .get(format!("{base}/t/capped/slow?ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `mcp-relay tunnels reserve --force` (another process) moves a name that a
/// live agent serves: the running relay disconnects that agent within its
/// revision poll, and the name now refuses the old credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_moving_a_served_name_cuts_the_old_owners_agent() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let mut agent = Agent::start(&relay, agent_opts("moved", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("moved");
    let url = format!("{}/t/moved/mcp", relay.https_url());
    let r = client.post(&url).json(&rpc(1, "x")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    relay.cli(&["users", "add", "bob@example.com"]).unwrap();
    relay
        .cli(&[
            "tunnels",
            "reserve",
            "moved",
            "--owner",
            "bob@example.com",
            "--force",
        ])
        .unwrap();
    let cut = eventually(Duration::from_secs(5), async || {
        // 502 (no agent for bob's name) or 403 (bob's policy: the tester
        // is not its owner), depending on which the relay learns first.
        let r = client.post(&url).json(&rpc(2, "x")).send().await.unwrap();
        r.status() == 502 || r.status() == 403
    })
    .await;
    assert!(
        cut,
        "the old owner's agent still serves\n{}",
        agent.output()
    );
    // The agent is told why and stops (exit code 6: replaced).
    assert_eq!(
        agent.wait_exit(Duration::from_secs(15)).unwrap(),
        6,
        "{}",
        agent.output()
    );
    assert!(
        agent.output().contains("now belongs to someone else"),
        "{}",
        agent.output()
    );
    assert!(
        relay
            .cli(&["tunnels", "list"])
            .unwrap()
            .contains("moved\tbob@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_credential_cannot_take_a_tunnel_name_but_the_same_one_replaces_its_ghost() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let token = relay.create_token().unwrap();
    let mut first = Agent::start(
        &relay,
        AgentOptions {
            token: Some(token.clone()),
            ..agent_opts("owned", &upstream.mcp_url())
        },
    )
    .unwrap();

    // A different credential: refused with a clear message, exit code 4.
    let mut thief = Agent::spawn(&relay, agent_opts("owned", &upstream.mcp_url())).unwrap();
    assert_eq!(
        thief.wait_exit(Duration::from_secs(15)).unwrap(),
        4,
        "{}",
        thief.output()
    );
    assert!(
        thief.output().contains("belongs to someone else"),
        "{}",
        thief.output()
    );

    // The same credential (a laptop waking up): replaces the old connection.
    let second = Agent::start(
        &relay,
        AgentOptions {
            token: Some(token),
            ..agent_opts("owned", &upstream.mcp_url())
        },
    )
    .unwrap();
    assert_eq!(
        first.wait_exit(Duration::from_secs(15)).unwrap(),
        6,
        "{}",
        first.output()
    );
    let r = relay
        .authed_client("owned")
        .post(format!("{}/t/owned/mcp", relay.http_url()))
        .json(&rpc(7, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(second.status().unwrap()["requests_completed"], 1);

    // A bad token: exit code 3 with a hint.
    let mut bad = Agent::spawn(
        &relay,
        AgentOptions {
            token: Some("mcpat_aaaaaaaaaa_".to_owned() + &"0".repeat(64)),
            ..agent_opts("other", &upstream.mcp_url())
        },
    )
    .unwrap();
    assert_eq!(
        bad.wait_exit(Duration::from_secs(15)).unwrap(),
        3,
        "{}",
        bad.output()
    );
    assert!(
        bad.output().contains("agent-tokens create"),
        "{}",
        bad.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_in_flight_requests() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let mut agent = Agent::start(&relay, agent_opts("drain", &upstream.mcp_url())).unwrap();
    let client = relay.authed_client("drain");
    let url = format!("{}/t/drain/slow?ms=1000", relay.https_url());
    let call = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    assert!(
        eventually(
            Duration::from_secs(3),
            async || agent.status().unwrap()["in_flight"] == 1
        )
        .await
    );
    agent.interrupt();
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "done");
    assert_eq!(
        agent.wait_exit(Duration::from_secs(15)).unwrap(),
        0,
        "{}",
        agent.output()
    );
}

mod fake_agent {
    //! A hostile agent speaking raw QUIC: the relay must close it with a code
    //! and keep serving everyone else.

    use std::sync::Arc;

    use bytes::{BufMut, BytesMut};
    use mcp_tunnel_proto::{ALPN, Credentials, ErrorCode, Frame, Hello, Secret, TunnelName};
    use mcp_tunnel_transport::{FrameReader, write_frame};

    use super::*;

    async fn connect(relay: &Relay) -> quinn::Connection {
        let pem = std::fs::read(relay.ca_file()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        ep.connect(relay.endpoints.quic, "localhost")
            .unwrap()
            .await
            .unwrap()
    }

    async fn hello(
        conn: &quinn::Connection,
        name: &str,
        token: String,
    ) -> (quinn::SendStream, FrameReader) {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        write_frame(
            &mut send,
            &Frame::Hello(Hello {
                protocol_versions: vec![1],
                agent_version: "fake".into(),
                tunnel: TunnelName::parse(name).unwrap(),
                credentials: Credentials::AgentToken {
                    token: Secret::new(token),
                },
            }),
        )
        .await
        .unwrap();
        let mut reader = FrameReader::new(recv, 1 << 20);
        let first = reader.next().await.unwrap().unwrap();
        assert!(matches!(first, Frame::Welcome(_)), "{first:?}");
        (send, reader)
    }

    fn close_code(conn: &quinn::Connection) -> Option<ErrorCode> {
        match conn.close_reason()? {
            quinn::ConnectionError::ApplicationClosed(c) => {
                Some(ErrorCode(c.error_code.into_inner() as u32))
            }
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_and_oversize_frames_close_only_the_offender() {
        let relay = Relay::start(RelayOptions::default()).unwrap();
        let upstream = Upstream::start().await.unwrap();
        let _good = Agent::start(&relay, agent_opts("good", &upstream.mcp_url())).unwrap();
        let client = relay.authed_client("good");
        let evil3 = relay.authed_client("evil3");
        let good_url = format!("{}/t/good/mcp", relay.https_url());

        // 1. Garbage on the control stream: connection closed with UNKNOWN_FRAME.
        let conn = connect(&relay).await;
        let (mut send, _reader) = hello(&conn, "evil1", relay.create_token().unwrap()).await;
        send.write_all(&[0x7f, 0, 0, 0, 0]).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        assert_eq!(close_code(&conn), Some(ErrorCode::UNKNOWN_FRAME));

        // 2. An oversize frame announced on the control stream: FRAME_TOO_LARGE.
        let conn = connect(&relay).await;
        let (mut send, _reader) = hello(&conn, "evil2", relay.create_token().unwrap()).await;
        let mut b = BytesMut::new();
        b.put_u8(0x04);
        b.put_u32(1 << 30);
        send.write_all(&b).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        assert_eq!(close_code(&conn), Some(ErrorCode::FRAME_TOO_LARGE));

        // 3. A request stream answered with garbage: the client gets 502, the
        //    relay resets that stream, other tunnels are unaffected.
        let conn = connect(&relay).await;
        let (_send, _reader) = hello(&conn, "evil3", relay.create_token().unwrap()).await;
        let answer = tokio::spawn({
            let conn = conn.clone();
            async move {
                let (mut s, _r) = conn.accept_bi().await.unwrap();
                let mut b = BytesMut::new();
                b.put_u8(0x12); // Data before ResponseHead
                b.put_u32(2);
                b.put_slice(b"hi");
                s.write_all(&b).await.unwrap();
                s.stopped().await.ok()
            }
        });
        let r = evil3
            .post(format!("{}/t/evil3/mcp", relay.https_url()))
            .json(&rpc(1, "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "agent_protocol_error"
        );
        let stopped = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stopped.flatten().map(|c| ErrorCode(c.into_inner() as u32)),
            Some(ErrorCode::UNEXPECTED_FRAME)
        );

        // 4. A Hello that is not JSON: MALFORMED_FRAME.
        let conn = connect(&relay).await;
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x01, 0, 0, 0, 3, b'{', b'x', b'}'])
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        assert_eq!(close_code(&conn), Some(ErrorCode::MALFORMED_FRAME));

        // Through all of it the good tunnel kept serving.
        let r = client
            .post(&good_url)
            .json(&rpc(9, "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
