//! The agent checks the relay's identity assertion on every request stream.
//!
//! A fake relay written here (the real wire format from `mcp-tunnel-proto`
//! over quinn, plus an HTTPS front for discovery and the JWKS) faces a real
//! `mcp-agent connect` and opens request streams a real relay never would:
//! forged, expired, for another tunnel, replayed, without an assertion. Each
//! must be refused, and the upstream (a local HTTP MCP server that counts
//! requests) must see none of them; a valid assertion's request is the
//! control that does get through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use mcp_testkit::{Upstream, bin_path};
use mcp_tunnel_proto::{
    ALPN, ErrorCode, Frame, Limits, PROTOCOL_VERSION, RequestHead, StreamError, Welcome,
};
use mcp_tunnel_transport::{FrameReader, write_frame, write_frames};
use rcgen::SigningKey as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TUNNEL: &str = "shop";
/// The fake relay's public base URL: its issuer, and what the agent reads
/// the issuer from (`Welcome.public_url`).
const ISSUER: &str = "https://relay.test";
const TYP: &str = "mcp-tunnel-assertion+jwt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_assertions_never_reach_the_upstream() {
    let key = RelayKey::new();
    let stranger = RelayKey::new();
    let relay = FakeRelay::start(key.jwks()).await;
    let upstream = Upstream::start().await.unwrap();
    let mut agent = AgentProcess::spawn(&relay, &upstream.mcp_url());
    let link = relay.accept_agent(Some(key.jwks())).await;
    agent.wait_for_line("Public MCP URL:");

    let now = unix_now();
    let valid = key.sign(&claims("boot-a-1", TUNNEL, now, now + 30));
    // The control: a valid assertion goes through, with the caller on the live line.
    assert_eq!(link.request(Some(&valid)).await, Answer::Status(200));
    assert_eq!(upstream.observed.requests.load(Ordering::Relaxed), 1);
    let line = agent.wait_for_line("bob@example.com");
    assert!(line.contains("tools/call"), "{line}");

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "signed by a key the relay never published, under the relay's kid",
            Some(stranger.sign_as(&key.kid, &claims("boot-a-2", TUNNEL, now, now + 30))),
            "(refused: assertion signature)",
        ),
        (
            "signed by a key the relay never published, under its own kid",
            Some(stranger.sign(&claims("boot-a-3", TUNNEL, now, now + 30))),
            "(refused: assertion key unknown)",
        ),
        (
            "expired",
            Some(key.sign(&claims("boot-a-4", TUNNEL, now - 100, now - 70))),
            "(refused: assertion expired)",
        ),
        (
            "for another tunnel",
            Some(key.sign(&claims("boot-a-5", "other", now, now + 30))),
            "(refused: assertion audience)",
        ),
        (
            "a replay of the accepted one",
            Some(valid.clone()),
            "(refused: assertion replayed)",
        ),
        ("no assertion at all", None, "(refused: no assertion)"),
    ];
    for (what, assertion, note) in &cases {
        match link.request(assertion.as_deref()).await {
            Answer::Refused(e) => {
                assert_eq!(e.code, ErrorCode::UNAUTHORIZED, "{what}: {}", e.message);
                assert!(
                    e.message.contains("identity assertion"),
                    "{what}: {}",
                    e.message
                );
            }
            other => panic!("{what}: not refused: {other:?}"),
        }
        let line = agent.wait_for_line(note);
        assert!(line.contains("POST"), "{what}: {line}");
        assert_eq!(
            upstream.observed.requests.load(Ordering::Relaxed),
            1,
            "{what} reached the upstream"
        );
    }

    let status = agent.status();
    assert_eq!(
        status["streams_received"],
        1 + cases.len() as u64,
        "{status}"
    );
    assert_eq!(status["streams_refused"], cases.len() as u64, "{status}");
    assert_eq!(status["streams_rejected"], 0, "{status}");
    assert_eq!(status["requests_completed"], 1, "{status}");
    // The unknown kid made the agent look at the relay's JWKS once.
    assert_eq!(relay.jwks_fetches.load(Ordering::Relaxed), 1);
    let output = agent.output();
    assert!(
        !output.contains(&valid),
        "the agent never logs an assertion:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_caller_the_owner_never_allowed_is_refused_by_the_agent_itself() {
    // A relay that forwards what the owner's policy does not allow (broken,
    // or compromised but holding a valid signing key): the agent decides
    // again and the upstream sees nothing.
    let key = RelayKey::new();
    let relay = FakeRelay::start(key.jwks()).await;
    let upstream = Upstream::start().await.unwrap();
    let mut agent = AgentProcess::spawn(&relay, &upstream.mcp_url());
    let link = relay.accept_agent(Some(key.jwks())).await;
    agent.wait_for_line("Public MCP URL:");
    let now = unix_now();
    let carol = key.sign(&claims_for(
        "carol@example.com",
        "boot-p-1",
        TUNNEL,
        now,
        now + 30,
    ));
    // The call is answered (a JSON-RPC error written by the agent), not forwarded.
    assert_eq!(link.request(Some(&carol)).await, Answer::Status(200));
    let line = agent.wait_for_line("(denied by the owner's policy)");
    assert!(line.contains("carol@example.com"), "{line}");
    assert_eq!(upstream.observed.requests.load(Ordering::Relaxed), 0);
    // The owner (bob, per the fake relay's PolicyUpdate) goes through.
    let bob = key.sign(&claims("boot-p-2", TUNNEL, now, now + 30));
    assert_eq!(link.request(Some(&bob)).await, Answer::Status(200));
    assert_eq!(upstream.observed.requests.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_is_fetched_from_the_relay() {
    let old = RelayKey::new();
    let new = RelayKey::new();
    // The agent was welcomed with the old key; the relay has since rotated.
    let relay = FakeRelay::start(json!({ "keys": [new.jwk(), old.jwk()] })).await;
    let upstream = Upstream::start().await.unwrap();
    let mut agent = AgentProcess::spawn(&relay, &upstream.mcp_url());
    let link = relay.accept_agent(Some(old.jwks())).await;
    agent.wait_for_line("Public MCP URL:");

    let now = unix_now();
    let a = new.sign(&claims("boot-b-1", TUNNEL, now, now + 30));
    assert_eq!(link.request(Some(&a)).await, Answer::Status(200));
    let b = old.sign(&claims("boot-b-2", TUNNEL, now, now + 30));
    assert_eq!(link.request(Some(&b)).await, Answer::Status(200));
    assert_eq!(upstream.observed.requests.load(Ordering::Relaxed), 2);
    assert_eq!(relay.jwks_fetches.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_relay_without_keys_gets_unchecked_streams_and_the_agent_says_so() {
    let relay = FakeRelay::start(json!({ "keys": [] })).await;
    let upstream = Upstream::start().await.unwrap();
    let mut agent = AgentProcess::spawn(&relay, &upstream.mcp_url());
    let link = relay.accept_agent(None).await;
    agent.wait_for_line(
        "this relay does not authenticate callers (dev mode); requests are not identity-checked",
    );
    assert_eq!(link.request(None).await, Answer::Status(200));
    assert_eq!(link.request(None).await, Answer::Status(200));
    assert_eq!(upstream.observed.requests.load(Ordering::Relaxed), 2);
    let status = agent.status();
    assert_eq!(status["streams_refused"], 0, "{status}");
    assert_eq!(status["requests_completed"], 2, "{status}");
}

// ---------------------------------------------------------------------------
// The fake relay.

/// An HTTPS front (discovery and JWKS) and a QUIC endpoint, on loopback,
/// with a CA made for this test.
struct FakeRelay {
    endpoint: quinn::Endpoint,
    https_port: u16,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
    jwks_fetches: Arc<AtomicU64>,
}

impl FakeRelay {
    /// Starts with `published` at `/.well-known/jwks.json`.
    async fn start(published: Value) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (chain, key) = server_certificate(&dir.path().join("ca.pem"));

        let mut quic_tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .unwrap();
        quic_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut quic = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(quic_tls).unwrap(),
        ));
        quic.transport_config(mcp_tunnel_transport::quic::relay_transport());
        let endpoint = quinn::Endpoint::server(quic, "127.0.0.1:0".parse().unwrap()).unwrap();
        let quic_port = endpoint.local_addr().unwrap().port();

        let mut https_tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        https_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(https_tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_port = listener.local_addr().unwrap().port();
        let jwks_fetches = Arc::new(AtomicU64::new(0));
        let discovery = json!({ "quic": { "port": quic_port, "host": "127.0.0.1" } });
        let fetches = jwks_fetches.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, discovery, published, fetches) = (
                    acceptor.clone(),
                    discovery.clone(),
                    published.clone(),
                    fetches.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let path = read_request_path(&mut tls).await;
                    let body = match path.as_str() {
                        "/.well-known/mcp-relay" => Some(discovery),
                        "/.well-known/jwks.json" => {
                            fetches.fetch_add(1, Ordering::Relaxed);
                            Some(published)
                        }
                        _ => None,
                    };
                    let response = match body {
                        Some(b) => {
                            let b = b.to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                                b.len()
                            )
                        }
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            endpoint,
            https_port,
            ca_file: dir.path().join("ca.pem"),
            _dir: dir,
            jwks_fetches,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.https_port)
    }

    /// Accepts the agent's connection and control stream, answers its Hello
    /// with a Welcome carrying `assertion_keys` and a PolicyUpdate naming the
    /// owner, and keeps answering pings.
    async fn accept_agent(&self, assertion_keys: Option<Value>) -> Link {
        let incoming = tokio::time::timeout(Duration::from_secs(20), self.endpoint.accept())
            .await
            .expect("the agent connects")
            .unwrap();
        let conn = incoming.await.unwrap();
        let (mut send, recv) = conn.accept_bi().await.unwrap();
        let mut reader = FrameReader::new(recv, 0);
        match reader.next().await.unwrap() {
            Some(Frame::Hello(h)) => assert_eq!(h.tunnel.as_str(), TUNNEL),
            other => panic!("expected Hello, got {other:?}"),
        }
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            public_url: format!("{ISSUER}/t/{TUNNEL}/mcp"),
            relay_version: "fake".into(),
            heartbeat_interval_ms: 1000,
            limits: Limits::default(),
            assertion_keys,
        };
        write_frame(&mut send, &Frame::Welcome(welcome))
            .await
            .unwrap();
        // The tunnel's owner (the callers below sign as bob), for the
        // agent's own policy check.
        write_frame(
            &mut send,
            &Frame::PolicyUpdate(mcp_tunnel_proto::PolicyUpdate {
                owner: Some("bob@example.com".into()),
                grants: Vec::new(),
                open: false,
            }),
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.next().await {
                if let Frame::Ping(n) = frame
                    && write_frame(&mut send, &Frame::Pong(n)).await.is_err()
                {
                    break;
                }
            }
        });
        Link {
            conn,
            next_id: AtomicU64::new(1),
        }
    }
}

/// The fake relay's connection to the agent.
struct Link {
    conn: quinn::Connection,
    next_id: AtomicU64,
}

/// How the agent answered a request stream.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A response head with this status (the body was read to `End`).
    Status(u16),
    /// A `StreamError` frame.
    Refused(StreamError),
    /// Anything else (reset, protocol error).
    Broken(String),
}

impl Link {
    /// Sends `tools/call` on a new request stream with `assertion` in its head.
    async fn request(&self, assertion: Option<&str>) -> Answer {
        let (mut send, recv) = self.conn.open_bi().await.unwrap();
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "read_query", "arguments": {} },
        });
        let head = RequestHead {
            request_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            method: "POST".into(),
            path: "/mcp".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            deadline_ms: None,
            assertion: assertion.map(str::to_owned),
        };
        let frames = [
            Frame::RequestHead(head),
            Frame::Data(Bytes::from(body.to_string())),
            Frame::End,
        ];
        // A refusing agent may stop reading before the body: not an error here.
        let _ = write_frames(&mut send, &frames).await;
        let _ = send.finish();
        let mut reader = FrameReader::new(recv, Limits::default().max_frame_payload as usize);
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let status = match reader.next().await {
                Ok(Some(Frame::ResponseHead(h))) => h.status,
                Ok(Some(Frame::StreamError(e))) => return Answer::Refused(e),
                other => return Answer::Broken(format!("{other:?}")),
            };
            loop {
                match reader.next().await {
                    Ok(Some(Frame::End)) => return Answer::Status(status),
                    Ok(Some(Frame::Data(_))) => {}
                    other => return Answer::Broken(format!("{other:?}")),
                }
            }
        })
        .await;
        answer.unwrap_or_else(|_| Answer::Broken("no answer within 10 s".into()))
    }
}

/// A CA and a `localhost` / `127.0.0.1` server certificate it signed; the
/// CA goes to `ca_file` for the agent's `--ca`.
fn server_certificate(
    ca_file: &std::path::Path,
) -> (
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "fake relay test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(ca_file, ca_cert.pem()).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

/// Reads an HTTP/1.1 request head; returns its path.
async fn read_request_path(tls: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned()
}

// ---------------------------------------------------------------------------
// Assertions, signed the way the relay signs them (compact JWS, EdDSA).

/// An Ed25519 signing key with its `kid`.
struct RelayKey {
    pair: rcgen::KeyPair,
    kid: String,
}

impl RelayKey {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let kid = URL_SAFE_NO_PAD.encode(&pair.public_key_raw()[..12]);
        Self { pair, kid }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.pair.public_key_raw()),
        })
    }

    fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs with this key but names `kid` in the header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": TYP, "kid": kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn claims(rid: &str, tunnel: &str, iat: u64, exp: u64) -> Value {
    claims_for("bob@example.com", rid, tunnel, iat, exp)
}

/// The claims of an assertion for `email`.
fn claims_for(email: &str, rid: &str, tunnel: &str, iat: u64, exp: u64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": format!("urn:mcp-tunnel:tunnel:{tunnel}"),
        "sub": format!("user-{email}"),
        "email": email,
        "groups": ["eng"],
        "client_id": "client-1",
        "tunnel": tunnel,
        "rid": rid,
        "iat": iat,
        "exp": exp,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// The real agent binary, pointed at the fake relay.

/// `mcp-agent connect` with an agent token, killed on drop.
struct AgentProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl AgentProcess {
    fn spawn(relay: &FakeRelay, upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin_path("mcp-agent"))
            .args(["connect", "--relay", &relay.url(), "--name", TUNNEL])
            .args(["--upstream", upstream, "--ca"])
            .arg(&relay.ca_file)
            .env("MCP_AGENT_TOKEN", "fake-relay-ignores-it")
            .env("MCP_AGENT_RUNTIME_DIR", dir.path().join("run"))
            .env("MCP_AGENT_CONFIG_DIR", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in out {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("MCP_TEST_VERBOSE").is_some() {
                        eprintln!("[agent] {line}");
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines, dir }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not print {needle:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mcp-agent status --json` for this agent.
    fn status(&self) -> Value {
        let out = Command::new(bin_path("mcp-agent"))
            .args(["status", "--json"])
            .env("MCP_AGENT_RUNTIME_DIR", self.dir.path().join("run"))
            .env("MCP_AGENT_CONFIG_DIR", self.dir.path().join("config"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["agents"][0].clone()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
