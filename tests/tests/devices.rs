//! Device identity at the relay over HTTP: the RFC 8628 device grant, the
//! one-time enrollment token it yields, and enrollment by CSR — with the
//! hostile cases (polling too fast, reused codes and tokens, a CSR naming
//! someone else, a tampered CSR).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use base64::Engine;
use mcp_testkit::{AgentHome as Home, Relay, RelayOptions, bin_path};
use serde_json::Value;

const EMAIL: &str = "dana@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn add_user(relay: &Relay, email: &str) {
    relay.add_user_with_password(email, &[], PASSWORD).unwrap();
}

fn http(relay: &Relay) -> reqwest::Client {
    relay.page_client(None)
}

fn csr(san_email: Option<&str>) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    if let Some(e) = san_email {
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(e.try_into().unwrap())];
    }
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der)
}

async fn poll(http: &reqwest::Client, base: &str, device_code: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", "mcp-agent"),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Approves `user_code` on the /device page; returns the page's status and text.
async fn approve(
    http: &reqwest::Client,
    base: &str,
    user_code: &str,
    password: &str,
) -> (u16, String) {
    let page = http
        .get(format!("{base}/device?user_code={user_code}"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    assert!(html.contains(user_code), "the code is prefilled");
    let csrf = cookie.split_once('=').unwrap().1.to_owned();
    let r = http
        .post(format!("{base}/device"))
        .header("cookie", cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("user_code", &user_code.to_lowercase()),
            ("email", EMAIL),
            ("password", password),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_grant_yields_a_one_time_enrollment_and_a_certificate() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let http = http(&relay);
    let base = relay.https_url();

    let meta: Value = http
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["device_authorization_endpoint"],
        format!("{base}/device_authorization")
    );

    let start: Value = http
        .post(format!("{base}/device_authorization"))
        .form(&[("client_id", "mcp-agent"), ("label", "ci-runner")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    let user_code = start["user_code"].as_str().unwrap().to_owned();
    assert_eq!(start["verification_uri"], format!("{base}/device"));
    assert_eq!(start["interval"], 5);
    assert!(
        user_code.len() == 9 && user_code.as_bytes()[4] == b'-',
        "{user_code}"
    );

    // Before approval: pending; polling again at once: slow_down.
    let (s, v) = poll(&http, &base, &device_code).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (s, v) = poll(&http, &base, &device_code).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("slow_down")));

    // A wrong password does not approve; the right one does.
    let (s, body) = approve(&http, &base, &user_code, "wrong password!!").await;
    assert_eq!(s, 401, "{body}");
    let (s, body) = approve(&http, &base, &user_code, PASSWORD).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("Device approved"), "{body}");
    // An unknown code is refused on the page.
    let (s, _) = approve(&http, &base, "BCDF-GHJK", PASSWORD).await;
    assert_eq!(s, 400);

    // The interval grew by 5 s after slow_down (RFC 8628 §3.5): wait it out.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let (s, v) = poll(&http, &base, &device_code).await;
    assert_eq!(s, 200, "{v}");
    let enroll = v["enroll_token"].as_str().unwrap().to_owned();
    // The device code is spent.
    let (s, v) = poll(&http, &base, &device_code).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("expired_token")));

    // Enroll with the token and a CSR (the key stays here).
    let r = http
        .post(format!("{base}/agent/enroll"))
        .json(&serde_json::json!({"enroll_token": enroll, "csr": csr(None), "label": "ci-runner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["user"], EMAIL);
    assert!(v["device_id"].as_str().unwrap().starts_with("dev_"));
    assert!(
        v["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        v["assertion_keys"]["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
    );

    // Reusing the enrollment token.
    let r = http
        .post(format!("{base}/agent/enroll"))
        .json(&serde_json::json!({"enroll_token": enroll, "csr": csr(None)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("already used"),
        "{v}"
    );

    // The device is listed.
    let out = Command::new(bin_path("mcp-relay"))
        .args(["devices", "list", "--json", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["user"], EMAIL);
    assert_eq!(list[0]["label"], "ci-runner");
    assert_eq!(list[0]["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_enrollments_are_refused_with_reasons() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let http = http(&relay);
    let base = relay.https_url();
    let token = || {
        let out = Command::new(bin_path("mcp-relay"))
            .args(["enroll-tokens", "create", "--user", EMAIL, "--state"])
            .arg(relay.state_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let enroll = |body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .post(format!("{base}/agent/enroll"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // A CSR naming another user.
    let (s, v) =
        enroll(serde_json::json!({"enroll_token": token(), "csr": csr(Some("boss@example.com"))}))
            .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("names boss@example.com"),
        "{v}"
    );
    // A tampered CSR (signature no longer matches).
    let mut der = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(csr(None))
        .unwrap();
    let n = der.len();
    der[n - 3] ^= 0x5a;
    let (s, v) = enroll(serde_json::json!({
        "enroll_token": token(),
        "csr": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
    }))
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_csr");
    // An unknown token; unknown fields; an oversized body.
    let (s, v) = enroll(serde_json::json!({"enroll_token": "nope", "csr": csr(None)})).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("unknown"), "{v}");
    let (s, _) = enroll(serde_json::json!({"enroll_token": "x", "csr": "y", "admin": true})).await;
    assert_eq!(s, 400);
    let (s, _) = enroll(serde_json::json!({"enroll_token": "x", "csr": "A".repeat(40_000)})).await;
    assert_eq!(s, 413);
    // The device grant is for mcp-agent only; a made-up device code is refused.
    let r = http
        .post(format!("{base}/device_authorization"))
        .form(&[("client_id", "someone-else")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, v) = poll(&http, &base, "forged").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("expired_token")));
    // A token for a disabled account.
    let t = token();
    let st = Command::new(bin_path("mcp-relay"))
        .args(["users", "disable", EMAIL, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (s, v) = enroll(serde_json::json!({"enroll_token": t, "csr": csr(None)})).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");
}

fn enroll_token(relay: &Relay, email: &str) -> String {
    relay.enroll_token(email).unwrap()
}

/// `initialize` on `tunnel` as its owner ([`EMAIL`]).
async fn tools_list_status(relay: &Relay, tunnel: &str) -> u16 {
    relay
        .authed_client_as(EMAIL, tunnel)
        .post(format!("{}/t/{tunnel}/mcp", relay.https_url()))
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_by_device_code_serves_over_mutual_tls_and_revocation_cuts_it() {
    use std::io::BufRead;
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let http = http(&relay);
    let home = Home::new();

    // `mcp-agent login` prints a URL and a code; a person approves it in a browser.
    let mut login = home
        .agent(&[
            "login",
            "--relay",
            &relay.https_url(),
            "--no-browser",
            "--label",
            "laptop",
        ])
        .arg("--ca")
        .arg(relay.ca_file())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = login.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    let code = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no code printed:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(c) = line.split("the code").nth(1) {
            break c.trim().to_owned();
        }
    };
    assert!(
        printed.contains(&format!("{}/device?user_code=", relay.https_url())),
        "{printed}"
    );
    let (s, body) = approve(&http, &relay.https_url(), &code, PASSWORD).await;
    assert_eq!(s, 200, "{body}");
    let status = tokio::task::spawn_blocking(move || login.wait().unwrap())
        .await
        .unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        status.success(),
        "login failed:\n{printed}{}",
        rest.join("\n")
    );
    assert!(
        rest.join("\n").contains(&format!("signed in as {EMAIL}")),
        "{rest:?}"
    );

    // Status says where the credentials are and who is signed in.
    let out = home.agent(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("credential store: file"), "{text}");
    assert!(text.contains(&format!("signed in as {EMAIL}")), "{text}");

    // connect needs no --token: the device certificate authenticates the QUIC connection.
    let mut agent = home.connect(&relay, "shop").unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);
    let out = Command::new(bin_path("mcp-relay"))
        .args(["devices", "list", "--json", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(list[0]["last_seen_at"].is_string(), "{list}");
    let out = Command::new(bin_path("mcp-relay"))
        .args(["tunnels", "list", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("shop\t{EMAIL}")));

    // A signing-key rotation reaches the connected agent's pinned keys within a heartbeat.
    let pinned = home.config_dir().join("assertion-keys.json");
    let kids = || -> usize {
        let v: Value = serde_json::from_slice(&std::fs::read(&pinned).unwrap()).unwrap();
        v["keys"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(kids(), 1);
    let st = Command::new(bin_path("mcp-relay"))
        .args(["keys", "rotate", "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = std::time::Instant::now();
    while kids() < 2 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(12),
            "rotated keys not pushed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Revoking the device cuts the live tunnel within a second; the agent says why.
    let st = Command::new(bin_path("mcp-relay"))
        .args(["devices", "revoke", &id, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let started = std::time::Instant::now();
    let code = agent.wait_exit(std::time::Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 3, "{}", agent.output());
    assert!(
        agent.output().contains("was revoked at"),
        "{}",
        agent.output()
    );
    // And it cannot come back.
    let mut again = home.spawn(&relay, "shop");
    assert_eq!(
        again.wait_exit(std::time::Duration::from_secs(10)).unwrap(),
        3
    );
    assert!(
        again.output().contains("was revoked at"),
        "{}",
        again.output()
    );
    assert_ne!(tools_list_status(&relay, "shop").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_keep_their_tunnels_disabled_users_are_cut_and_certificates_renew() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[limits]\ndevice_cert_ttl = \"9s\"\n").unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    add_user(&relay, EMAIL);
    add_user(&relay, "erin@example.com");
    let dana = Home::new();
    let erin = Home::new();
    let out = dana.login_with_token(&relay, &enroll_token(&relay, EMAIL));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A reused enrollment token is refused with the reason.
    let reused = enroll_token(&relay, "erin@example.com");
    assert!(erin.login_with_token(&relay, &reused).status.success());
    let out = Home::new().login_with_token(&relay, &reused);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));

    let mut shop = dana.connect(&relay, "shop").unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);
    // Another user's agent cannot take the name, and is told why.
    let mut thief = erin.spawn(&relay, "shop");
    assert_eq!(
        thief.wait_exit(std::time::Duration::from_secs(10)).unwrap(),
        4
    );
    assert!(
        thief.output().contains("belongs to someone else"),
        "{}",
        thief.output()
    );

    // The 9 s certificate is renewed over the control stream with a third of its life left.
    shop.wait_for_line(
        "device certificate renewed",
        std::time::Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);

    // Offline past expiry (within the grace): it reconnects, renews first thing, serves.
    shop.kill();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let mut back = dana.connect(&relay, "shop").unwrap();
    back.wait_for_line(
        "device certificate renewed",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);

    // Disabling the user cuts the device within a second.
    let st = Command::new(bin_path("mcp-relay"))
        .args(["users", "disable", EMAIL, "--state"])
        .arg(relay.state_dir())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        back.wait_exit(std::time::Duration::from_secs(2)).unwrap(),
        3
    );
    assert!(back.output().contains("was disabled"), "{}", back.output());
}

/// A client certificate for `device_id` with `key`, issued by the relay's own
/// device CA (read from its state dir: what only the relay should be able
/// to do), valid until `until_year`.
fn relay_ca_issue(relay: &Relay, device_id: &str, key: &rcgen::KeyPair, until_year: i32) -> String {
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(relay.state_dir().join("device-ca.key")).unwrap(),
    )
    .unwrap();
    let ca_pem = std::fs::read_to_string(relay.state_dir().join("device-ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    leaf(device_id, until_year)
        .signed_by(key, &issuer)
        .unwrap()
        .pem()
}

fn leaf(device_id: &str, until_year: i32) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, device_id);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(until_year, 1, 1);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_foreign_certificates_are_refused_with_reasons() {
    use mcp_agent::credstore::CredentialStore;
    use mcp_agent::identity::{CERT_ENTRY, KEY_ENTRY, Profile};
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let home = Home::new();
    let out = home.login_with_token(&relay, &enroll_token(&relay, EMAIL));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = home.config_dir();
    let profile = Profile::load(&cfg).unwrap().unwrap();
    let store = CredentialStore::file_in(&cfg);
    let real_key_pem =
        String::from_utf8(store.get(KEY_ENTRY).unwrap().unwrap().expose().to_vec()).unwrap();
    let real_key = rcgen::KeyPair::from_pem(&real_key_pem).unwrap();
    let real_cert =
        String::from_utf8(store.get(CERT_ENTRY).unwrap().unwrap().expose().to_vec()).unwrap();

    // Each case: what the agent presents (key PEM, certificate PEM), and what it must be told.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_ca_key = rcgen::KeyPair::generate().unwrap();
    let mut other_ca = rcgen::CertificateParams::default();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = rcgen::Issuer::new(other_ca, other_ca_key);
    let tampered = {
        let der = rustls_pemfile::certs(&mut real_cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let mut der = der.to_vec();
        let n = der.len();
        der[n - 10] ^= 0x01;
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    };
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "self-signed",
            real_key_pem.clone(),
            leaf(&profile.device_id, 2099)
                .self_signed(&real_key)
                .unwrap()
                .pem(),
            "refused this device's certificate",
        ),
        (
            "another CA",
            real_key_pem.clone(),
            leaf(&profile.device_id, 2099)
                .signed_by(&real_key, &other_ca)
                .unwrap()
                .pem(),
            "refused this device's certificate",
        ),
        (
            "tampered",
            real_key_pem.clone(),
            tampered,
            "refused this device's certificate",
        ),
        (
            "expired past the grace",
            real_key_pem.clone(),
            relay_ca_issue(&relay, &profile.device_id, &real_key, 2021),
            "refused this device's certificate",
        ),
        (
            "unknown device",
            real_key_pem.clone(),
            relay_ca_issue(&relay, "dev_madeupdevice0000000", &real_key, 2099),
            "is not known to this relay",
        ),
        (
            "another key for a real device",
            other_key.serialize_pem(),
            relay_ca_issue(&relay, &profile.device_id, &other_key, 2099),
            "not the one device",
        ),
    ];
    for (what, key_pem, cert_pem, expect) in cases {
        store
            .update(|u| {
                u.set(KEY_ENTRY, key_pem.as_bytes())?;
                u.set(CERT_ENTRY, cert_pem.as_bytes())
            })
            .unwrap();
        let mut agent = home.spawn(&relay, "shop");
        let code = agent.wait_exit(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(code, 3, "{what}: {}", agent.output());
        assert!(
            agent.output().contains(expect),
            "{what}: {}",
            agent.output()
        );
        assert_ne!(tools_list_status(&relay, "shop").await, 200, "{what}");
    }
    // The genuine certificate still works.
    store
        .update(|u| {
            u.set(KEY_ENTRY, real_key_pem.as_bytes())?;
            u.set(CERT_ENTRY, real_cert.as_bytes())
        })
        .unwrap();
    let _agent = home.connect(&relay, "shop").unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);
}

/// An MCP session over raw HTTP: initialize, initialized; returns its id.
async fn open_session(http: &reqwest::Client, url: &str) -> Result<String, u16> {
    let r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.bytes().await;
    let r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .json(&serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    Ok(sid)
}

async fn list_tools(http: &reqwest::Client, url: &str, sid: &str) -> u16 {
    let r = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", sid)
        .json(&serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let _ = r.bytes().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_share_a_tunnel_and_sessions_move_when_one_leaves() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let (laptop, desktop) = (Home::new(), Home::new());
    for h in [&laptop, &desktop] {
        let out = h.login_with_token(&relay, &enroll_token(&relay, EMAIL));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut a = laptop.connect(&relay, "shop").unwrap();
    let b = desktop.connect(&relay, "shop").unwrap();
    let http = relay.authed_client_as(EMAIL, "shop");
    let url = format!("{}/t/shop/mcp", relay.https_url());

    // New sessions are spread across both devices; each stays on its own.
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(open_session(&http, &url).await.unwrap());
    }
    for sid in &sessions {
        for _ in 0..2 {
            assert_eq!(
                list_tools(&http, &url, sid).await,
                200,
                "session {sid} lost its device"
            );
        }
    }
    let served = |agent: &mcp_testkit::Agent| {
        agent.status().unwrap()["streams_received"]
            .as_u64()
            .unwrap()
    };
    assert!(
        served(&a) >= 4 && served(&b) >= 4,
        "{} / {}",
        served(&a),
        served(&b)
    );

    // One device leaves: its sessions get 404 (so clients re-initialize), the
    // others carry on, and no new session fails.
    a.kill();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut gone = 0;
    for sid in &sessions {
        match list_tools(&http, &url, sid).await {
            200 => {}
            404 => gone += 1,
            s => panic!("session {sid}: {s}"),
        }
    }
    assert_eq!(gone, 3, "the laptop's sessions");
    for _ in 0..6 {
        let sid = open_session(&http, &url).await.unwrap();
        assert_eq!(list_tools(&http, &url, &sid).await, 200);
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_device_at_the_relay_and_forged_logouts_are_refused() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    add_user(&relay, EMAIL);
    let home = Home::new();
    let out = home.login_with_token(&relay, &enroll_token(&relay, EMAIL));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = home.config_dir();
    let profile = mcp_agent::identity::Profile::load(&cfg).unwrap().unwrap();
    let http = http(&relay);
    let logout = |device: String, cn: String, key: rcgen::KeyPair| {
        let http = http.clone();
        let base = relay.https_url();
        async move {
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let der = p.serialize_request(&key).unwrap().der().to_vec();
            let r = http
                .post(format!("{base}/agent/logout"))
                .json(&serde_json::json!({
                    "device_id": device,
                    "proof": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
                }))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id = profile.device_id.clone();
    // Signed with another key; stale; naming another device: all refused.
    let other = rcgen::KeyPair::generate().unwrap();
    assert_eq!(
        logout(id.clone(), format!("logout {id} {now}"), other).await,
        401
    );
    let store = mcp_agent::credstore::CredentialStore::file_in(&cfg);
    let key_pem = String::from_utf8(
        store
            .get(mcp_agent::identity::KEY_ENTRY)
            .unwrap()
            .unwrap()
            .expose()
            .to_vec(),
    )
    .unwrap();
    let key = || rcgen::KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(
        logout(id.clone(), format!("logout {id} {}", now - 3600), key()).await,
        401
    );
    assert_eq!(
        logout(id.clone(), format!("logout dev_other {now}"), key()).await,
        401
    );

    // The real thing: `mcp-agent logout` cuts the running agent and forgets the device here.
    let mut agent = home.connect(&relay, "shop").unwrap();
    let out = home.agent(&["logout"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("revoked at"), "{err}");
    assert_eq!(
        agent.wait_exit(std::time::Duration::from_secs(3)).unwrap(),
        3
    );
    let out = home.agent(&["status"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("not signed in"));
    let out = Command::new(bin_path("mcp-relay"))
        .args(["devices", "list", "--json", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_device_ca_keeps_devices_working_and_moves_them_to_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "[limits]\ndevice_cert_ttl = \"9s\"\n").unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    add_user(&relay, EMAIL);
    let home = Home::new();
    let out = home.login_with_token(&relay, &enroll_token(&relay, EMAIL));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_ca = std::fs::read_to_string(relay.state_dir().join("device-ca.pem")).unwrap();

    let out = Command::new(bin_path("mcp-relay"))
        .args(["credentials", "rotate", "device-ca", "--state"])
        .arg(relay.state_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_ca = std::fs::read_to_string(relay.state_dir().join("device-ca.pem")).unwrap();
    assert_ne!(old_ca, new_ca);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // A certificate from the old CA still connects (the old CA stays trusted) …
    let mut agent = home.connect(&relay, "shop").unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);
    // … and its renewal comes from the new CA.
    agent
        .wait_for_line(
            "device certificate renewed",
            std::time::Duration::from_secs(15),
        )
        .unwrap();
    let store = mcp_agent::credstore::CredentialStore::file_in(home.config_dir());
    let cert = store.get(mcp_agent::identity::CERT_ENTRY).unwrap().unwrap();
    let der = rustls_pemfile::certs(&mut cert.expose())
        .next()
        .unwrap()
        .unwrap();
    let ca_der = rustls_pemfile::certs(&mut new_ca.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    // The renewed certificate verifies under the new CA (webpki, through rustls).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&der, &[], rustls_pki_types::UnixTime::now())
        .expect("renewed under the new CA");
    // Reconnecting with the renewed certificate works too.
    agent.kill();
    let _again = home.connect(&relay, "shop").unwrap();
    assert_eq!(tools_list_status(&relay, "shop").await, 200);
}
