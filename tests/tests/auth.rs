//! The relay as an OAuth resource server: every request under `/t/{tunnel}/`
//! needs a bearer access token for exactly that tunnel; refusals carry the
//! RFC 6750 / RFC 9728 challenge and nothing reaches the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mcp_testkit::{Agent, AgentOptions, Relay, RelayOptions, Upstream};
use serde_json::{Value, json};

fn rpc() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_never_reach_the_agent() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let agent = Agent::start(
        &relay,
        AgentOptions {
            name: "guarded".into(),
            upstream: upstream.mcp_url(),
            token: None,
            args: vec!["--quiet".into()],
        },
    )
    .unwrap();
    let url = format!("{}/t/guarded/mcp", relay.https_url());
    let plain = relay.client();
    let metadata = format!(
        "{}/.well-known/oauth-protected-resource/t/guarded/mcp",
        relay.https_url()
    );

    // No token: 401 with the resource-metadata challenge.
    let r = plain.post(&url).json(&rpc()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp\""), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no error code without a token: {challenge}"
    );

    // Bad tokens: 401 invalid_token.
    let other_tunnel = relay.access_token("elsewhere").unwrap();
    let good = relay.access_token("guarded").unwrap();
    let mut tampered = good.clone();
    let mid = tampered.len() / 2;
    tampered.replace_range(
        mid..mid + 1,
        if &good[mid..mid + 1] == "A" { "B" } else { "A" },
    );
    let forged_alg_none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = good.split('.').nth(1).unwrap();
        format!(
            "{}.{payload}.",
            b64.encode(br#"{"alg":"none","typ":"at+jwt"}"#)
        )
    };
    for (what, token) in [
        ("garbage", "not-a-jwt".to_owned()),
        ("token for another tunnel", other_tunnel),
        ("tampered", tampered),
        ("alg none", forged_alg_none),
    ] {
        let r = plain
            .post(&url)
            .bearer_auth(&token)
            .json(&rpc())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let c = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(c.contains("error=\"invalid_token\""), "{what}: {c}");
        assert!(c.contains("resource_metadata="), "{what}: {c}");
    }

    // Token in the query string: refused, even if valid.
    let r = plain
        .post(format!("{url}?access_token={good}"))
        .json(&rpc())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Unknown tunnels are not revealed to anonymous callers.
    let r = plain
        .post(format!("{}/t/does-not-exist/mcp", relay.https_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    assert_eq!(
        agent.status().unwrap()["streams_received"],
        0,
        "nothing reached the laptop"
    );
    assert_eq!(
        upstream
            .observed
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // The right token goes through, and the upstream never sees it.
    let r = plain
        .post(&url)
        .bearer_auth(&good)
        .json(&rpc())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.observed.last_headers.lock().unwrap().clone();
    assert!(
        !seen
            .iter()
            .any(|(k, v)| k == "authorization" || v.contains(&good))
    );
    assert_eq!(agent.status().unwrap()["streams_received"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_and_jwks() {
    let relay = Relay::start(RelayOptions::default()).unwrap();
    let client = relay.client();
    let base = relay.https_url();
    let m: Value = client
        .get(format!(
            "{base}/.well-known/oauth-protected-resource/t/shop/mcp"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["resource"], format!("{base}/t/shop/mcp"));
    assert_eq!(m["authorization_servers"], json!([base]));
    assert_eq!(m["bearer_methods_supported"], json!(["header"]));
    let root: Value = client
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["resource"], base);
    let jwks: Value = client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "no private part published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_keep_old_tokens_valid_and_survive_restarts() {
    let mut relay = Relay::start(RelayOptions::default()).unwrap();
    let upstream = Upstream::start().await.unwrap();
    let _agent = Agent::start(
        &relay,
        AgentOptions {
            name: "rot".into(),
            upstream: upstream.mcp_url(),
            token: None,
            args: vec!["--quiet".into()],
        },
    )
    .unwrap();
    let before = relay.access_token("rot").unwrap();
    let st = std::process::Command::new(mcp_testkit::bin_path("mcp-relay"))
        .args(["keys", "rotate", "--state"])
        .arg(relay.state_dir())
        .status()
        .unwrap();
    assert!(st.success());
    let after = relay.access_token("rot").unwrap();
    assert_ne!(
        before.split('.').next(),
        after.split('.').next(),
        "new kid in the header"
    );
    // The running relay picks the rotation up within a second or so.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let url = format!("{}/t/rot/mcp", relay.http_url());
    let c = reqwest::Client::new();
    for t in [&before, &after] {
        let r = c
            .post(&url)
            .bearer_auth(t)
            .json(&rpc())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    relay.restart().unwrap();
    let url = format!("{}/t/rot/mcp", relay.http_url());
    let ok = {
        let mut ok = false;
        for _ in 0..60 {
            let r = c
                .post(&url)
                .bearer_auth(&after)
                .json(&rpc())
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        ok
    };
    assert!(ok, "tokens stay valid across a relay restart");
}
