//! Bearer validation cost: the cached hot path beside the full
//! (signature-verifying) check, and the per-request identity assertion.
//!
//! `cargo bench -p mcp-relay --bench token`. The target from issue 4 is
//! ≤ 20 µs p50 for the cached path; criterion prints the median of each.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_relay::oauth::assertion::{AssertionClaims, sign_assertion, verify_assertion};
use mcp_relay::oauth::cache::ValidatorWithCache;
use mcp_relay::oauth::keys::{KeySet, VerifyingKeys};
use mcp_relay::oauth::token::{AccessGrant, Issuer, Validator};

const ISS: &str = "https://relay.example.com";
const AUD: &str = "https://relay.example.com/t/shop/mcp";
const NOW: u64 = 1_750_000_000;

fn grant() -> AccessGrant {
    AccessGrant {
        sub: "user-1".to_owned(),
        email: Some("alice@example.com".to_owned()),
        groups: vec!["eng".to_owned(), "oncall".to_owned()],
        client_id: "https://client.example.com/metadata.json".to_owned(),
        scope: "mcp".to_owned(),
        resource: AUD.to_owned(),
    }
}

fn bearer(c: &mut Criterion) {
    let keys = KeySet::generate().expect("key generation");
    let issued = Issuer::new(ISS).issue(&keys, &grant(), NOW).expect("issue");
    let token = issued.token().to_owned();

    let uncached = Validator::new(ISS, keys.verifying_keys());
    let cached = ValidatorWithCache::new(Validator::new(ISS, keys.verifying_keys()));
    cached.validate(&token, AUD, NOW).expect("warm the cache");

    let mut g = c.benchmark_group("bearer_validation");
    g.bench_function("cached", |b| {
        b.iter(|| cached.validate(black_box(&token), black_box(AUD), NOW + 1))
    });
    g.bench_function("uncached", |b| {
        b.iter(|| uncached.validate(black_box(&token), black_box(AUD), NOW + 1))
    });
    g.finish();

    let agent_keys = VerifyingKeys::from_jwks(&keys.jwks(NOW)).expect("jwks");
    let claims = AssertionClaims::for_request(&issued.claims, "shop", "req-1", NOW);
    let assertion = sign_assertion(&keys, &claims).expect("sign");
    let mut g = c.benchmark_group("identity_assertion");
    g.bench_function("sign_at_relay", |b| {
        b.iter(|| sign_assertion(&keys, black_box(&claims)))
    });
    g.bench_function("verify_at_agent", |b| {
        b.iter(|| verify_assertion(black_box(&assertion), &agent_keys, "shop", NOW + 1))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // Two noisy cores: short runs, many samples, report the median.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bearer
}
criterion_main!(benches);
