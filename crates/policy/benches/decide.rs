//! Decision latency with 1,000 policies across 100 tunnels, side by side with
//! the same requests against a single tunnel: indexing should make the two
//! cost the same.
//!
//! `cargo bench -p mcp-tunnel-policy --bench decide -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcp_tunnel_policy::{
    Engine, Grant, PolicySource, Principal, Request, RequestContext, ToolAnnotations, ToolInfo,
    TunnelSpec,
};
use serde_json::json;

const TOOLS_PER_TUNNEL: usize = 100;
const T0: i64 = 1_700_000_000;

/// Five global admin policies, one a forbid with a context condition.
fn admin() -> Vec<PolicySource> {
    vec![PolicySource::new(
        "admin.cedar",
        r#"
@id("no-destructive-from-outside")
forbid (principal, action == Mcp::Action::"tools/call", resource)
when { resource.destructive && !context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("night-freeze")
forbid (principal in Mcp::Group::"contractors", action, resource)
when { context.hour < 6 };

@id("scope-required")
forbid (principal, action == Mcp::Action::"tools/call", resource)
unless { context.scopes.contains("mcp") };

@id("auditors-list")
permit (principal in Mcp::Group::"auditors", action in [Mcp::Action::"connect", Mcp::Action::"tools/list"], resource);

@id("sre-read-only")
permit (principal in Mcp::Group::"sre", action == Mcp::Action::"tools/call", resource)
when { resource.readOnly };
"#,
    )]
}

fn tools() -> Vec<ToolInfo> {
    (0..TOOLS_PER_TUNNEL)
        .map(|i| ToolInfo {
            name: format!("tool{i}"),
            annotations: match i % 3 {
                0 => Some(ToolAnnotations {
                    read_only: Some(true),
                    ..Default::default()
                }),
                1 => Some(ToolAnnotations {
                    destructive: Some(true),
                    ..Default::default()
                }),
                _ => None,
            },
        })
        .collect()
}

/// An owner, eight grants (emails with and without tool lists, a domain, two
/// groups, one read-only, one expiring) and one owner policy with conditions:
/// ten policies per tunnel.
fn tunnel(t: usize) -> TunnelSpec {
    let name = format!("tunnel{t}");
    let grant = |i: usize, subject: String, tools: Option<Vec<String>>| Grant {
        id: format!("{name}-{i}"),
        tunnel: name.clone(),
        subject: subject.parse().expect("subject"),
        tools,
        read_only: i == 5,
        expires_at: (i == 6).then_some(T0 + 86_400),
    };
    let some_tools = |n: usize| Some((0..n).map(|k| format!("tool{}", k * 3)).collect());
    TunnelSpec {
        owner: format!("owner{t}@corp.example"),
        owner_policies: vec![PolicySource::new(
            "owner.cedar",
            format!(
                r#"@id("small-queries")
permit (principal in Mcp::Group::"analysts{t}", action == Mcp::Action::"tools/call", resource)
when {{
  resource.name == "tool0" &&
  context.args.numbers.hasTag("limit") && context.args.numbers.getTag("limit") <= 100
}};"#
            ),
        )],
        grants: vec![
            grant(0, format!("user{t}a@corp.example"), some_tools(5)),
            grant(1, format!("user{t}b@corp.example"), some_tools(10)),
            grant(2, format!("user{t}c@corp.example"), None),
            grant(3, format!("user{t}d@partner.example"), some_tools(2)),
            grant(4, format!("@team{t}.example"), some_tools(20)),
            grant(5, format!("group:eng{t}"), None),
            grant(6, format!("group:ops{t}"), some_tools(3)),
            grant(7, format!("user{t}e@corp.example"), Some(vec![])),
        ],
        tools: tools(),
        name,
    }
}

fn engine(tunnels: usize) -> Engine {
    let mut engine = Engine::new(&admin()).expect("admin policies");
    for t in 0..tunnels {
        engine = engine.with_tunnel(tunnel(t)).expect("tunnel");
    }
    engine
}

fn benches(c: &mut Criterion) {
    let ctx = RequestContext {
        client_id: "claude-desktop".into(),
        scopes: vec!["mcp".into()],
        source_ip: Some("10.1.2.3".parse().expect("ip")),
        time: T0 + 12 * 3600,
        protocol_version: Some("2025-06-18".into()),
    };
    let grantee = Principal::User {
        email: "user0a@corp.example".into(),
        groups: vec!["staff".into()],
    };
    let stranger = Principal::user("nobody@else.example");
    let args = json!({"sql": "select * from t", "limit": 50});
    let tool_names: Vec<String> = (0..TOOLS_PER_TUNNEL).map(|i| format!("tool{i}")).collect();
    let tool_refs: Vec<&str> = tool_names.iter().map(String::as_str).collect();

    let small = engine(1);
    let big = engine(100);
    let policies = 5 + 100 * 10;
    println!("policies: {policies} across 100 tunnels (vs 15 in 1 tunnel)");

    let mut group = c.benchmark_group("decide");
    for (tunnels, engine) in [(1, &small), (100, &big)] {
        let call = Request {
            principal: &grantee,
            tunnel: "tunnel0",
            method: "tools/call",
            target: Some("tool3"),
            args: Some(&args),
            context: &ctx,
        };
        assert!(
            engine.decide(&call).allowed,
            "{}",
            engine.decide(&call).reason()
        );
        group.bench_with_input(
            BenchmarkId::new("grantee tools/call", tunnels),
            &call,
            |b, req| b.iter(|| engine.decide(black_box(req))),
        );
        let denied = Request {
            principal: &stranger,
            ..call
        };
        assert!(!engine.decide(&denied).allowed);
        group.bench_with_input(
            BenchmarkId::new("stranger tools/call", tunnels),
            &denied,
            |b, req| b.iter(|| engine.decide(black_box(req))),
        );
        let ping = Request {
            method: "ping",
            target: None,
            args: None,
            ..call
        };
        assert!(engine.decide(&ping).allowed);
        group.bench_with_input(
            BenchmarkId::new("grantee ping (housekeeping)", tunnels),
            &ping,
            |b, req| b.iter(|| engine.decide(black_box(req))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("allowed_tools x100");
    for (tunnels, engine) in [(1, &small), (100, &big)] {
        let allowed = engine.allowed_tools(&grantee, "tunnel0", &ctx, &tool_refs);
        assert_eq!(allowed.iter().filter(|a| **a).count(), 5);
        group.bench_function(BenchmarkId::new("grantee", tunnels), |b| {
            b.iter(|| engine.allowed_tools(black_box(&grantee), "tunnel0", &ctx, &tool_refs))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("with_tunnel");
    let replacement = tunnel(42);
    group.bench_function("replace one of 100", |b| {
        b.iter(|| big.with_tunnel(black_box(replacement.clone())))
    });
    group.finish();
}

criterion_group!(decide, benches);
criterion_main!(decide);
