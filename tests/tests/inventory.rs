//! `mcp-relay credentials`: one inventory of every non-human credential. A
//! real relay gets one credential of each kind it can make (a device enrolled
//! by CSR, a client registered by DCR, one identified by a metadata document,
//! a refresh family from a real sign-in, a service account, enrollment and
//! agent tokens, plus the keys and CAs it makes itself); the listing, its
//! filters, and revocation through it are checked from the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use base64::Engine;
use mcp_testkit::{Relay, RelayOptions, bin_path};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const PASSWORD: &str = "correct horse battery staple";
const REDIRECT: &str = "http://127.0.0.1:39999/callback";
const VERIFIER: &str = "inventory-test-verifier-0123456789abcdefghijklmnop";

fn cli(relay: &Relay, args: &[&str]) -> Output {
    Command::new(bin_path("mcp-relay"))
        .args(args)
        .arg("--state")
        .arg(relay.state_dir())
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(relay: &Relay, args: &[&str]) -> String {
    let out = cli(relay, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn list(relay: &Relay, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["credentials", "list", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str::<Value>(&ok(relay, &args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [Value], kind: &str, id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["kind"] == kind && r["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} {id} in {rows:#?}"))
}

fn add_user(relay: &Relay, email: &str) {
    relay.add_user_with_password(email, &[], PASSWORD).unwrap();
}

fn http(relay: &Relay, extra_ca: Option<&str>) -> reqwest::Client {
    relay.page_client(extra_ca)
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let der = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der)
}

fn authorize_query(base: &str, client_id: &str) -> String {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER));
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "st8")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &format!("{base}/t/shop/mcp"))
        .append_pair("scope", "mcp")
        .finish()
}

/// Signs ALICE in at `client_id` and exchanges the code; returns the token response.
async fn sign_in(http: &reqwest::Client, base: &str, client_id: &str) -> Value {
    let page = http
        .get(format!(
            "{base}/authorize?{}",
            authorize_query(base, client_id)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut fields = hidden_inputs(&page.text().await.unwrap());
    fields.push(("email".into(), ALICE.into()));
    fields.push(("password".into(), PASSWORD.into()));
    fields.push(("decision".into(), "allow".into()));
    let r = http
        .post(format!("{base}/authorize"))
        .header("cookie", cookie)
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let (status, tokens) = token(
        http,
        base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn token(http: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http
        .post(format!("{base}/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Hidden inputs of a page (name, value), HTML-unescaped.
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|part| {
            let (name, rest) = part.split_once("\" value=\"")?;
            let (value, _) = rest.split_once('"')?;
            Some((unescape(name), unescape(value)))
        })
        .collect()
}

/// Serves a client metadata document over HTTPS on localhost with a
/// certificate from a CA made here; returns (client id URL, CA PEM).
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
    let url = format!(
        "https://localhost:{}/client.json",
        listener.local_addr().unwrap().port()
    );
    let doc = json!({
        "client_id": url,
        "client_name": "inventory metadata client",
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
        while let Ok((tcp, _)) = listener.accept().await {
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
async fn credentials_list_shows_every_kind_filters_and_revokes() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (metadata_url, metadata_ca) = serve_client_metadata().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("cimd-ca.pem");
    std::fs::write(&ca_file, &metadata_ca).unwrap();
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
    add_user(&relay, ALICE);
    add_user(&relay, BOB);
    let http = http(&relay, Some(&metadata_ca));
    let base = relay.https_url();

    // A device: enrolled with a one-time token (which is then "used").
    let enroll = ok(&relay, &["enroll-tokens", "create", "--user", ALICE]);
    let r = http
        .post(format!("{base}/agent/enroll"))
        .json(&json!({"enroll_token": enroll.trim(), "csr": csr(), "label": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let device_id = r.json::<Value>().await.unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An enrollment token nobody used yet.
    ok(
        &relay,
        &["enroll-tokens", "create", "--user", BOB, "--ttl", "1h"],
    );

    // A client registered by DCR, and a refresh family from signing in with it.
    let r = http
        .post(format!("{base}/register"))
        .json(&json!({"client_name": "inventory app", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client_id = r.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens = sign_in(&http, &base, &client_id).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // A client known by its metadata document: recorded when it first asks to authorize.
    let page = http
        .get(format!(
            "{base}/authorize?{}",
            authorize_query(&base, &metadata_url)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());

    // A service account expiring in 3 days, and an agent token.
    let sa = ok(
        &relay,
        &["service-accounts", "create", "nightly", "--ttl", "3d"],
    );
    let sa_id = sa.lines().next().unwrap().to_owned();
    let agent_token = relay.create_token().unwrap();
    let agent_token_id = agent_token
        .strip_prefix("mcpat_")
        .unwrap()
        .split('_')
        .next()
        .unwrap()
        .to_owned();

    // ---- every kind is listed, with owner and status ----
    let all = list(&relay, &[]);
    let d = row(&all, "device", &device_id);
    assert_eq!(
        (&d["owner"], &d["name"], &d["status"]),
        (&json!(ALICE), &json!("laptop"), &json!("active"))
    );
    assert!(d["expires_at"].is_string() && d["created_at"].is_string());
    let c = row(&all, "oauth-client", &client_id);
    assert_eq!(
        (&c["owner"], &c["status"]),
        (&json!("self-registered"), &json!("active"))
    );
    assert!(
        c["last_used_at"].is_string(),
        "the code exchange used it: {c}"
    );
    let m = row(&all, "metadata-client", &metadata_url);
    assert_eq!(
        (&m["owner"], &m["name"], &m["status"]),
        (
            &json!("self-registered"),
            &json!("inventory metadata client"),
            &json!("active")
        )
    );
    let s = row(&all, "service-account", &sa_id);
    assert_eq!(
        (&s["owner"], &s["status"]),
        (&json!("admin"), &json!("active"))
    );
    let families: Vec<&Value> = all
        .iter()
        .filter(|r| r["kind"] == "refresh-family")
        .collect();
    assert_eq!(families.len(), 1, "{families:#?}");
    let family_id = families[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            &families[0]["owner"],
            &families[0]["name"],
            &families[0]["status"]
        ),
        (&json!(ALICE), &json!("inventory app"), &json!("active"))
    );
    let a = row(&all, "agent-token", &agent_token_id);
    assert_eq!(
        (&a["owner"], &a["status"]),
        (&json!("admin"), &json!("active"))
    );
    let enroll_rows: Vec<(&Value, &Value)> = all
        .iter()
        .filter(|r| r["kind"] == "enroll-token")
        .map(|r| (&r["owner"], &r["status"]))
        .collect();
    assert_eq!(enroll_rows.len(), 2, "{all:#?}");
    assert!(enroll_rows.contains(&(&json!(ALICE), &json!("used"))));
    assert!(enroll_rows.contains(&(&json!(BOB), &json!("active"))));
    for kind in ["signing-key", "device-ca", "dev-ca"] {
        let r = all
            .iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"));
        assert_eq!(
            (&r["owner"], &r["status"]),
            (&json!("relay"), &json!("active")),
            "{r}"
        );
    }
    let printed = serde_json::to_string(&all).unwrap();
    for secret in [
        enroll.trim(),
        refresh.as_str(),
        agent_token.as_str(),
        sa.lines().nth(1).unwrap(),
    ] {
        assert!(!printed.contains(secret), "a secret was listed");
    }
    let table = ok(&relay, &["credentials", "list"]);
    assert!(table.starts_with("KIND "), "{table}");
    assert!(
        table.contains(&device_id) && table.contains(&family_id),
        "{table}"
    );

    // ---- filters ----
    let mine = list(&relay, &["--owner", "Alice@Example.com"]);
    let mut kinds: Vec<&str> = mine.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["device", "enroll-token", "refresh-family"],
        "{mine:#?}"
    );
    assert!(mine.iter().all(|r| r["owner"] == ALICE));

    let week = list(&relay, &["--expiring", "7d"]);
    let ids: Vec<&str> = week.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&device_id.as_str()),
        "a 24 h certificate: {ids:?}"
    );
    assert!(
        ids.contains(&sa_id.as_str()),
        "a 3-day service account: {ids:?}"
    );
    assert!(
        !ids.contains(&family_id.as_str()),
        "a 30-day refresh family is not within 7 days"
    );
    assert!(
        week.iter()
            .all(|r| r["status"] == "active" && r["expires_at"].is_string()),
        "{week:#?}"
    );
    assert!(
        week.iter()
            .all(|r| !["signing-key", "device-ca", "dev-ca", "agent-token"]
                .contains(&r["kind"].as_str().unwrap())),
        "never-expiring or far-off credentials are not 'expiring': {week:#?}"
    );
    let month = list(&relay, &["--expiring", "45d", "--kind", "refresh-family"]);
    assert_eq!(month.len(), 1);
    assert_eq!(month[0]["id"], family_id);

    // ---- revoke through the inventory ----
    ok(&relay, &["credentials", "revoke", "device", &device_id]);
    let devices: Value = serde_json::from_str(&ok(&relay, &["devices", "list", "--json"])).unwrap();
    assert_eq!(devices[0]["id"], device_id);
    assert_eq!(devices[0]["status"], "revoked");
    assert_eq!(
        row(&list(&relay, &[]), "device", &device_id)["status"],
        "revoked"
    );

    // The refresh token worked until its family was revoked.
    let (status, rotated) = token(
        &http,
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    ok(
        &relay,
        &["credentials", "revoke", "refresh-family", &family_id],
    );
    let (status, e) = token(
        &http,
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        row(&list(&relay, &[]), "refresh-family", &family_id)["status"],
        "revoked"
    );
    assert!(
        list(&relay, &["--expiring", "45d"])
            .iter()
            .all(|r| r["id"] != family_id.as_str()),
        "a revoked credential is not 'expiring'"
    );

    // Again: nothing to do, still success. Unknown ids and keys say what to do, with distinct exit codes.
    ok(
        &relay,
        &["credentials", "revoke", "refresh-family", &family_id],
    );
    let out = cli(
        &relay,
        &["credentials", "revoke", "device", "dev_nosuchdevice"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials list --kind device"));
    let out = cli(&relay, &["credentials", "revoke", "oauth-client", &sa_id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials revoke service-account"));
    let out = cli(&relay, &["credentials", "revoke", "signing-key", "any"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials rotate signing-key"));
    let out = cli(&relay, &["credentials", "rotate", "dev-ca"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));

    // Rotating the signing key leaves the old one listed as retired.
    let before = list(&relay, &["--kind", "signing-key"]);
    assert_eq!(before.len(), 1);
    ok(&relay, &["credentials", "rotate", "signing-key"]);
    let after = list(&relay, &["--kind", "signing-key"]);
    assert_eq!(after.len(), 2);
    assert_eq!(
        row(&after, "signing-key", before[0]["id"].as_str().unwrap())["status"],
        "retired"
    );
}
