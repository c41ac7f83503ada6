//! Subdomain routing: `https://NAME.relay/mcp` reaches tunnel NAME, beside
//! `https://relay/t/NAME/mcp`, with OAuth metadata in the matching form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mcp_testkit::{Agent, AgentOptions, Relay, RelayOptions, Upstream};
use serde_json::{Value, json};

/// A CA and a leaf for `localhost`, `relay.test` and `*.relay.test`.
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.clone().self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let mut leaf = CertificateParams::new(vec![
        "localhost".into(),
        "relay.test".into(),
        "*.relay.test".into(),
    ])
    .unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, leaf_cert.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (cert, key, ca_cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_answer_on_their_subdomain_and_on_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_pem) = certificates(dir.path());
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"https://relay.test\"\nsubdomains = true\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let relay = Relay::start(RelayOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    })
    .unwrap();
    // Agents and the kit's clients trust the relay through this file.
    std::fs::write(relay.ca_file(), &ca_pem).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(
        &relay,
        AgentOptions::for_upstream("shop", &upstream.mcp_url()),
    )
    .unwrap();
    assert_eq!(agent.public_url, "https://shop.relay.test/mcp");

    let port = relay.endpoints.https.port();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("shop.relay.test", ([127, 0, 0, 1], port).into())
        .resolve("nope.relay.test", ([127, 0, 0, 1], port).into())
        .resolve("relay.test", ([127, 0, 0, 1], port).into())
        .resolve("evil.example", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let sub = format!("https://shop.relay.test:{port}/mcp");
    let token = relay.access_token("shop").unwrap();
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});

    // No token: the challenge points at the subdomain form's metadata.
    let r = client.post(&sub).json(&ping).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("https://shop.relay.test/.well-known/oauth-protected-resource/mcp"),
        "{challenge}"
    );
    let meta: Value = client
        .get(format!(
            "https://shop.relay.test:{port}/.well-known/oauth-protected-resource/mcp"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], "https://shop.relay.test/mcp");
    assert_eq!(meta["authorization_servers"][0], "https://relay.test");

    // With a token: through the subdomain and through the path.
    for url in [sub.clone(), format!("https://relay.test:{port}/t/shop/mcp")] {
        let r = client
            .post(&url)
            .bearer_auth(&token)
            .json(&ping)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["id"], 7, "{url}: {body}");
    }

    // A name nobody serves, another path on a tunnel host, a foreign host.
    let r = client
        .post(format!("https://nope.relay.test:{port}/mcp"))
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(r.status().as_u16(), 401 | 404),
        "unknown subdomain: {}",
        r.status()
    );
    let r = client
        .get(format!("https://shop.relay.test:{port}/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "only /mcp lives on a tunnel host");
    let r = client
        .post(format!("https://evil.example:{port}/t/shop/mcp"))
        .bearer_auth(&token)
        .json(&ping)
        .send()
        .await;
    // The certificate does not cover it; a client that ignored that still
    // gets refused by the Host check.
    assert!(r.is_err() || r.unwrap().status() == 403);
    let r = client
        .get(format!("https://shop.relay.test:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
