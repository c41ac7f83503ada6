//! Behaviour tests of the engine: who may do what, and why.

use serde_json::{Value, json};

use crate::DecisionKind::{Forbidden, NotPermitted, Permitted};
use crate::*;

const T0: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC, a Tuesday
const ALICE: &str = "alice@x.com"; // owner of "laptop"

fn admin(text: &str) -> PolicySource {
    PolicySource::new("admin.cedar", text)
}

fn owner_file(text: &str) -> PolicySource {
    PolicySource::new("owner.cedar", text)
}

fn tool(name: &str, annotations: Option<Value>) -> ToolInfo {
    let mut v = json!({ "name": name });
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    serde_json::from_value(v).expect("tool json")
}

/// query/list_tables read-only, write_query and drop destructive, safe_write
/// annotated non-destructive, mystery without annotations.
fn tools() -> Vec<ToolInfo> {
    vec![
        tool("query", Some(json!({"readOnlyHint": true}))),
        tool(
            "list_tables",
            Some(json!({"readOnlyHint": true, "openWorldHint": false})),
        ),
        tool("write_query", Some(json!({"readOnlyHint": false}))),
        tool("drop", Some(json!({"destructiveHint": true}))),
        tool("safe_write", Some(json!({"destructiveHint": false}))),
        tool("mystery", None),
    ]
}

fn grant(id: &str, tunnel: &str, subject: &str) -> Grant {
    Grant {
        id: id.into(),
        tunnel: tunnel.into(),
        subject: subject.parse().expect("subject"),
        tools: None,
        read_only: false,
        expires_at: None,
    }
}

fn spec(
    name: &str,
    owner: &str,
    grants: Vec<Grant>,
    owner_policies: Vec<PolicySource>,
) -> TunnelSpec {
    TunnelSpec {
        name: name.into(),
        owner: owner.into(),
        owner_policies,
        grants,
        tools: tools(),
    }
}

fn engine(admin: &[PolicySource], specs: Vec<TunnelSpec>) -> Engine {
    let mut engine = Engine::new(admin).expect("admin policies");
    for s in specs {
        engine = engine.with_tunnel(s).expect("tunnel spec");
    }
    engine
}

fn user(email: &str, groups: &[&str]) -> Principal {
    Principal::User {
        email: email.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn ctx_at(time: i64) -> RequestContext {
    RequestContext {
        client_id: "inspector".into(),
        scopes: vec!["mcp".into()],
        source_ip: Some("203.0.113.7".parse().expect("ip")),
        time,
        protocol_version: Some("2025-06-18".into()),
    }
}

/// One row of a decision table.
struct Case {
    who: Principal,
    tunnel: &'static str,
    method: &'static str,
    target: Option<&'static str>,
    args: Option<Value>,
    ctx: RequestContext,
    want: DecisionKind,
}

fn case(
    who: &Principal,
    method: &'static str,
    target: Option<&'static str>,
    want: DecisionKind,
) -> Case {
    Case {
        who: who.clone(),
        tunnel: "laptop",
        method,
        target,
        args: None,
        ctx: ctx_at(T0),
        want,
    }
}

fn decide(engine: &Engine, c: &Case) -> Decision {
    engine.decide(&Request {
        principal: &c.who,
        tunnel: c.tunnel,
        method: c.method,
        target: c.target,
        args: c.args.as_ref(),
        context: &c.ctx,
    })
}

fn run_table(engine: &Engine, cases: &[Case]) {
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let d = decide(engine, c);
        if d.kind != c.want || d.allowed != (c.want == Permitted) {
            failures.push(format!(
                "case {i}: {:?} {} {:?} on {} args {:?}: want {:?}, got {:?} ({})",
                c.who,
                c.method,
                c.target,
                c.tunnel,
                c.args,
                c.want,
                d.kind,
                d.reason()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn owner_may_do_everything_on_its_tunnel() {
    let e = engine(&[], vec![spec("laptop", "Alice@X.com", vec![], vec![])]);
    let alice = user(ALICE, &[]);
    let mut cases = vec![
        case(&alice, "connect", None, Permitted),
        case(&alice, "tools/list", None, Permitted),
        case(&alice, "tools/call", Some("drop"), Permitted),
        case(&alice, "tools/call", Some("not_reported"), Permitted),
        case(
            &alice,
            "resources/read",
            Some("file:///etc/hosts"),
            Permitted,
        ),
        case(&alice, "prompts/get", Some("summarize"), Permitted),
        case(&alice, "ping", None, Permitted),
        case(&alice, "notifications/initialized", None, Permitted),
        case(&alice, "sampling/createMessage", None, Permitted),
    ];
    let mut other = case(&alice, "tools/call", Some("query"), NotPermitted);
    other.tunnel = "elsewhere";
    cases.push(other);
    run_table(&e, &cases);
    let d = decide(&e, &case(&alice, "tools/call", Some("drop"), Permitted));
    assert_eq!(d.policies, ["builtin:owner"]);
    assert_eq!(d.reason(), "permitted by policy builtin:owner");
}

#[test]
fn email_grant_lists_and_calls_granted_tools_only() {
    let mut g = grant("g1", "laptop", "Bob@X.com");
    g.tools = Some(vec!["query".into(), "write_query".into()]);
    let e = engine(
        &[],
        vec![
            spec("laptop", ALICE, vec![g], vec![]),
            spec("desktop", "zed@x.com", vec![], vec![]),
        ],
    );
    let bob = user("bob@x.com", &[]);
    let carol = user("carol@x.com", &[]);
    let mut cases = vec![
        case(&bob, "connect", None, Permitted),
        case(&bob, "tools/list", None, Permitted),
        case(&bob, "resources/list", None, Permitted),
        case(&bob, "resources/templates/list", None, Permitted),
        case(&bob, "prompts/list", None, Permitted),
        case(&bob, "tools/call", Some("query"), Permitted),
        case(&bob, "tools/call", Some("write_query"), Permitted),
        case(&bob, "tools/call", Some("drop"), NotPermitted),
        case(&bob, "tools/call", Some("mystery"), NotPermitted),
        case(&bob, "resources/read", Some("file:///a"), NotPermitted),
        case(&bob, "prompts/get", Some("p"), NotPermitted),
        case(&bob, "completion/complete", None, NotPermitted),
        case(&bob, "tools/call", None, NotPermitted),
        case(&carol, "tools/list", None, NotPermitted),
        case(&carol, "tools/call", Some("query"), NotPermitted),
    ];
    let mut elsewhere = case(&bob, "tools/list", None, NotPermitted);
    elsewhere.tunnel = "desktop";
    cases.push(elsewhere);
    run_table(&e, &cases);

    let d = decide(&e, &case(&bob, "tools/call", Some("query"), Permitted));
    assert_eq!(d.policies, ["grant:g1"]);
    let d = decide(&e, &case(&bob, "tools/call", Some("drop"), NotPermitted));
    assert_eq!(
        d.reason(),
        "no policy permits tools/call on tool drop for bob@x.com"
    );
}

#[test]
fn domain_grant_covers_every_user_of_the_domain() {
    let e = engine(
        &[],
        vec![spec(
            "laptop",
            ALICE,
            vec![grant("g", "laptop", "@Example.com")],
            vec![],
        )],
    );
    let dave = user("Dave@EXAMPLE.com", &[]);
    let eve = user("eve@example.org", &[]);
    let sneaky = user("eve@notexample.com", &[]);
    run_table(
        &e,
        &[
            case(&dave, "tools/call", Some("write_query"), Permitted),
            case(&dave, "resources/read", Some("file:///a"), Permitted),
            case(&dave, "prompts/get", Some("p"), Permitted),
            case(&dave, "completion/complete", None, Permitted),
            case(&dave, "sampling/createMessage", None, NotPermitted),
            case(&eve, "tools/list", None, NotPermitted),
            case(&sneaky, "tools/list", None, NotPermitted),
        ],
    );
}

#[test]
fn group_grant_read_only_allows_only_read_only_tools() {
    let mut g = grant("eng", "laptop", "group:eng");
    g.read_only = true;
    let e = engine(&[], vec![spec("laptop", ALICE, vec![g], vec![])]);
    let frank = user("frank@y.com", &["staff", "eng"]);
    let grace = user("grace@y.com", &["staff"]);
    run_table(
        &e,
        &[
            case(&frank, "tools/list", None, Permitted),
            case(&frank, "tools/call", Some("query"), Permitted),
            case(&frank, "tools/call", Some("list_tables"), Permitted),
            case(&frank, "tools/call", Some("write_query"), NotPermitted),
            case(&frank, "tools/call", Some("safe_write"), NotPermitted),
            // Unknown annotations count as destructive.
            case(&frank, "tools/call", Some("mystery"), NotPermitted),
            case(&frank, "tools/call", Some("not_reported"), NotPermitted),
            // read_only limits tool calls only.
            case(&frank, "resources/read", Some("file:///a"), Permitted),
            case(&grace, "tools/list", None, NotPermitted),
        ],
    );
}

#[test]
fn expired_grant_is_denied() {
    let mut g = grant("temp", "laptop", "bob@x.com");
    g.expires_at = Some(T0);
    let e = engine(&[], vec![spec("laptop", ALICE, vec![g], vec![])]);
    let bob = user("bob@x.com", &[]);
    let at = |method, target, time, want| Case {
        ctx: ctx_at(time),
        ..case(&bob, method, target, want)
    };
    run_table(
        &e,
        &[
            at("tools/call", Some("query"), T0 - 1, Permitted),
            at("tools/call", Some("query"), T0, NotPermitted),
            at("tools/list", None, T0 + 3600, NotPermitted),
            at("ping", None, T0 - 1, Permitted),
            at("ping", None, T0 + 1, NotPermitted),
        ],
    );
}

#[test]
fn forbid_wins_over_owner_and_grants() {
    let admin_forbid = admin(
        "// Nobody runs destructive tools through the relay.\n@id(\"no-destructive\")\nforbid (principal, action == Mcp::Action::\"tools/call\", resource)\nwhen { resource.destructive };\n",
    );
    let owner_forbid = owner_file(
        "@id(\"no-query-for-contractors\")\nforbid (principal in Mcp::Group::\"contractors\", action == Mcp::Action::\"tools/call\", resource)\nwhen { resource.name == \"query\" };\n",
    );
    let grants = vec![
        grant("all", "laptop", "@x.com"),
        grant("c", "laptop", "group:contractors"),
    ];
    let e = engine(
        &[admin_forbid],
        vec![spec("laptop", ALICE, grants, vec![owner_forbid])],
    );
    let alice = user(ALICE, &[]);
    let bob = user("bob@x.com", &[]);
    let carl = user("carl@y.com", &["contractors"]);
    run_table(
        &e,
        &[
            case(&alice, "tools/call", Some("write_query"), Forbidden),
            case(&alice, "tools/call", Some("mystery"), Forbidden),
            case(&alice, "tools/call", Some("query"), Permitted),
            case(&alice, "tools/call", Some("safe_write"), Permitted),
            case(&bob, "tools/call", Some("drop"), Forbidden),
            case(&bob, "tools/call", Some("not_reported"), Forbidden),
            case(&bob, "tools/call", Some("query"), Permitted),
            case(&carl, "tools/call", Some("query"), Forbidden),
            case(&carl, "tools/call", Some("list_tables"), Permitted),
        ],
    );
    let d = decide(
        &e,
        &case(&alice, "tools/call", Some("write_query"), Forbidden),
    );
    assert_eq!(d.policies, ["no-destructive"]);
    assert_eq!(
        d.reason(),
        "forbidden by policy admin.cedar:2 (no-destructive)"
    );
    let d = decide(&e, &case(&carl, "tools/call", Some("query"), Forbidden));
    assert_eq!(
        d.reason(),
        "forbidden by policy owner.cedar:1 (no-query-for-contractors)"
    );
}

#[test]
fn context_conditions_client_time_window_and_arguments() {
    let rules = owner_file(
        r#"@id("ci-only")
permit (principal, action == Mcp::Action::"tools/call", resource)
when { resource.name == "deploy" && context.client_id == "ci-client" };

@id("office-hours")
permit (principal in Mcp::Domain::"example.com", action == Mcp::Action::"tools/call", resource)
when { resource.name == "report" && context.hour >= 9 && context.hour < 17 && context.weekday <= 5 };

@id("small-queries")
permit (principal in Mcp::Group::"analysts", action == Mcp::Action::"tools/call", resource)
when {
  resource.name == "query" &&
  context.args.numbers.hasTag("limit") &&
  context.args.numbers.getTag("limit") <= 100
};

// Forbids fail closed: a present but non-string table is refused too.
@id("public-tables-only")
forbid (principal, action == Mcp::Action::"tools/call", resource)
when { context.args.names.contains("filter.table") }
unless {
  context.args.strings.hasTag("filter.table") &&
  context.args.strings.getTag("filter.table") like "public_*"
};

@id("no-drop-from-outside")
forbid (principal, action, resource)
unless { context.source_ip.isInRange(ip("203.0.113.0/24")) };
"#,
    );
    let e = engine(&[], vec![spec("laptop", ALICE, vec![], vec![rules])]);
    let ann = user("ann@example.com", &["analysts"]);
    let with = |client: &str, time: i64, target, args: Option<Value>, want| Case {
        ctx: RequestContext {
            client_id: client.into(),
            ..ctx_at(time)
        },
        args,
        ..case(&ann, "tools/call", Some(target), want)
    };
    // 2023-11-14 is a Tuesday; T0 is 22:13 UTC.
    let tuesday_10h = T0 - 22 * 3600 - 13 * 60 - 20 + 10 * 3600;
    let saturday_10h = tuesday_10h + 4 * 86_400;
    let mut outside = with("x", T0, "query", Some(json!({"limit": 5})), Forbidden);
    outside.ctx.source_ip = Some("198.51.100.1".parse().expect("ip"));
    let mut unknown_ip = with("x", T0, "query", Some(json!({"limit": 5})), Forbidden);
    unknown_ip.ctx.source_ip = None;
    run_table(
        &e,
        &[
            with("ci-client", T0, "deploy", None, Permitted),
            with("inspector", T0, "deploy", None, NotPermitted),
            with("x", tuesday_10h, "report", None, Permitted),
            with("x", T0, "report", None, NotPermitted),
            with("x", saturday_10h, "report", None, NotPermitted),
            with("x", T0, "query", Some(json!({"limit": 100})), Permitted),
            with("x", T0, "query", Some(json!({"limit": 100.0})), Permitted),
            with("x", T0, "query", Some(json!({"limit": 101})), NotPermitted),
            with("x", T0, "query", Some(json!({"limit": 99.5})), NotPermitted),
            with(
                "x",
                T0,
                "query",
                Some(json!({"limit": "100"})),
                NotPermitted,
            ),
            with("x", T0, "query", Some(json!({})), NotPermitted),
            with("x", T0, "query", None, NotPermitted),
            with(
                "x",
                T0,
                "query",
                Some(json!({"limit": 1, "filter": {"table": "public_a"}})),
                Permitted,
            ),
            with(
                "x",
                T0,
                "query",
                Some(json!({"limit": 1, "filter": {"table": "secret"}})),
                Forbidden,
            ),
            with(
                "x",
                T0,
                "query",
                Some(json!({"limit": 1, "filter": {"table": 7}})),
                Forbidden,
            ),
            outside,
            unknown_ip,
        ],
    );
}

#[test]
fn housekeeping_needs_access_and_yields_to_forbids() {
    let ping_forbid = admin(
        "@id(\"no-ping-for-mallory\")\nforbid (principal == Mcp::User::\"mallory@x.com\", action == Mcp::Action::\"ping\", resource);\n",
    );
    let lister = owner_file(
        "permit (principal == Mcp::User::\"lee@x.com\", action == Mcp::Action::\"tools/list\", resource);\n",
    );
    let grants = vec![
        grant("b", "laptop", "bob@x.com"),
        grant("m", "laptop", "mallory@x.com"),
    ];
    let e = engine(
        &[ping_forbid],
        vec![spec("laptop", ALICE, grants, vec![lister])],
    );
    let bob = user("bob@x.com", &[]);
    let mallory = user("mallory@x.com", &[]);
    let lee = user("lee@x.com", &[]);
    let carol = user("carol@x.com", &[]);
    let mut cases = Vec::new();
    for method in [
        "initialize",
        "ping",
        "server/discover",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "response",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    ] {
        cases.push(case(&bob, method, None, Permitted));
        cases.push(case(&lee, method, None, Permitted));
        cases.push(case(&carol, method, None, NotPermitted));
    }
    cases.push(case(&mallory, "ping", None, Forbidden));
    cases.push(case(&mallory, "initialize", None, Permitted));
    run_table(&e, &cases);

    let d = decide(&e, &case(&bob, "ping", None, Permitted));
    assert_eq!(d.policies, ["grant:b"]);
    assert_eq!(
        d.reason(),
        "ping allowed as housekeeping: connect permitted by policy grant:b"
    );
    let d = decide(&e, &case(&mallory, "ping", None, Forbidden));
    assert_eq!(d.policies, ["no-ping-for-mallory"]);
    let d = decide(&e, &case(&carol, "ping", None, NotPermitted));
    assert_eq!(
        d.reason(),
        "no policy permits ping on tunnel laptop for carol@x.com"
    );
}

#[test]
fn a_forbidden_connect_blocks_housekeeping() {
    let block = admin(
        "forbid (principal, action == Mcp::Action::\"connect\", resource) when { context.client_id == \"bad\" };",
    );
    let e = engine(
        &[block],
        vec![spec(
            "laptop",
            ALICE,
            vec![grant("b", "laptop", "bob@x.com")],
            vec![],
        )],
    );
    let bob = user("bob@x.com", &[]);
    let mut bad = case(&bob, "ping", None, NotPermitted);
    bad.ctx.client_id = "bad".into();
    run_table(&e, &[case(&bob, "ping", None, Permitted), bad]);
}

#[test]
fn unknown_methods_map_to_other_and_are_denied_for_grantees() {
    let e = engine(
        &[],
        vec![spec(
            "laptop",
            ALICE,
            vec![grant("b", "laptop", "bob@x.com")],
            vec![],
        )],
    );
    let bob = user("bob@x.com", &[]);
    let alice = user(ALICE, &[]);
    run_table(
        &e,
        &[
            case(&bob, "sampling/createMessage", None, NotPermitted),
            case(&bob, "tools/delete", None, NotPermitted),
            case(&alice, "tools/delete", None, Permitted),
        ],
    );
    let d = decide(&e, &case(&bob, "elicitation/create", None, NotPermitted));
    assert_eq!(
        d.reason(),
        "no policy permits other on tunnel laptop for bob@x.com"
    );

    let explicit = owner_file(
        "permit (principal == Mcp::User::\"bob@x.com\", action == Mcp::Action::\"other\", resource);",
    );
    let e = e
        .with_tunnel(spec("laptop", ALICE, vec![], vec![explicit]))
        .expect("spec");
    run_table(&e, &[case(&bob, "sampling/createMessage", None, Permitted)]);
}

#[test]
fn owner_policies_of_one_tunnel_never_affect_another() {
    let open = owner_file(
        "@id(\"open-house\") permit (principal, action, resource);\n@id(\"no-inspector\") forbid (principal, action, resource) when { context.client_id == \"inspector\" };\n",
    );
    let e = engine(
        &[],
        vec![
            spec("a", "ann@x.com", vec![], vec![open]),
            spec("b", "ben@x.com", vec![], vec![]),
        ],
    );
    let stranger = user("zoe@z.com", &[]);
    let ben = user("ben@x.com", &[]);
    let at = |who: &Principal, tunnel, client: &str, want| Case {
        tunnel,
        ctx: RequestContext {
            client_id: client.into(),
            ..ctx_at(T0)
        },
        ..case(who, "tools/call", Some("drop"), want)
    };
    run_table(
        &e,
        &[
            at(&stranger, "a", "cli", Permitted),
            at(&stranger, "a", "inspector", Forbidden),
            at(&stranger, "b", "cli", NotPermitted),
            at(&ben, "b", "inspector", Permitted),
        ],
    );

    // Naming another tunnel in an owner file is refused, with its position.
    let reach = owner_file("\n\npermit (principal, action, resource in Mcp::Tunnel::\"b\");");
    let err = Engine::new(&[])
        .expect("engine")
        .with_tunnel(spec("a", "ann@x.com", vec![], vec![reach]))
        .expect_err("names another tunnel");
    let text = err.to_string();
    assert!(
        text.starts_with("owner.cedar:3:1: this policy names tunnel \"b\""),
        "{text}"
    );
}

#[test]
fn admin_policies_scoped_to_a_tunnel_or_principal() {
    let text = r#"@id("ci-on-laptop")
permit (principal == Mcp::ServiceAccount::"ci", action in [Mcp::Action::"connect", Mcp::Action::"tools/call"], resource in Mcp::Tunnel::"laptop");

@id("auditor-lists")
permit (principal == Mcp::User::"auditor@x.com", action == Mcp::Action::"tools/list", resource);

@id("laptop-no-drop")
forbid (principal, action, resource in Mcp::Tunnel::"laptop") when { resource is Mcp::Tool && resource.name == "drop" };
"#;
    let e = engine(
        &[admin(text)],
        vec![
            spec("laptop", ALICE, vec![], vec![]),
            spec("desktop", "dan@x.com", vec![], vec![]),
        ],
    );
    let ci = Principal::ServiceAccount { name: "ci".into() };
    let auditor = user("auditor@x.com", &[]);
    let dan = user("dan@x.com", &[]);
    let on = |who: &Principal, tunnel, method, target, want| Case {
        tunnel,
        ..case(who, method, target, want)
    };
    run_table(
        &e,
        &[
            on(&ci, "laptop", "tools/call", Some("query"), Permitted),
            on(&ci, "laptop", "ping", None, Permitted),
            on(&ci, "laptop", "tools/call", Some("drop"), Forbidden),
            on(&ci, "desktop", "tools/call", Some("query"), NotPermitted),
            on(&auditor, "laptop", "tools/list", None, Permitted),
            on(&auditor, "desktop", "tools/list", None, Permitted),
            on(&auditor, "desktop", "ping", None, Permitted),
            on(
                &auditor,
                "desktop",
                "tools/call",
                Some("query"),
                NotPermitted,
            ),
            on(&dan, "desktop", "tools/call", Some("drop"), Permitted),
            on(
                &user(ALICE, &[]),
                "laptop",
                "tools/call",
                Some("drop"),
                Forbidden,
            ),
        ],
    );
    let d = decide(&e, &on(&ci, "laptop", "ping", None, Permitted));
    assert_eq!(
        d.reason(),
        "ping allowed as housekeeping: connect permitted by policy admin.cedar:1 (ci-on-laptop)"
    );
}

#[test]
fn decisions_evaluate_only_the_indexed_policies() {
    let global = admin(
        "@id(\"g\") forbid (principal, action, resource) when { context.client_id == \"evil\" };\n@id(\"t\") forbid (principal, action, resource == Mcp::Tunnel::\"a\") when { context.hour == 3 };",
    );
    let grants = |t: &str| {
        let mut grants: Vec<Grant> = (0..5)
            .map(|i| grant(&format!("{t}{i}"), t, &format!("u{i}@x.com")))
            .collect();
        grants.push(grant(&format!("{t}-eng"), t, "group:eng"));
        grants.push(grant(&format!("{t}-dom"), t, "@y.com"));
        grants
    };
    let e = engine(
        &[global],
        vec![
            spec("a", "ann@x.com", grants("a"), vec![]),
            spec("b", "ben@x.com", grants("b"), vec![]),
        ],
    );
    let ctx = ctx_at(T0);
    let explain = |who: &str, tunnel| {
        let groups: &[&str] = if who.starts_with("eng") {
            &["eng", "ops"]
        } else {
            &[]
        };
        e.explain(&Request {
            principal: &user(who, groups),
            tunnel,
            method: "tools/list",
            target: None,
            args: None,
            context: &ctx,
        })
    };
    // Stranger on a: g + t. Grantee u1 on a: g + t + grant:a1. Owner of b: g + builtin:owner.
    assert_eq!(explain("zoe@x.com", "a").evaluated, 2);
    assert_eq!(explain("u1@x.com", "a").evaluated, 3);
    assert_eq!(explain("ben@x.com", "b").evaluated, 2);
    // Group and domain grants are evaluated only for members.
    assert_eq!(explain("eng1@x.com", "a").evaluated, 3);
    assert_eq!(explain("eng1@y.com", "a").evaluated, 4);
    assert_eq!(explain("zoe@y.com", "a").evaluated, 3);
    assert!(explain("eng1@y.com", "a").decision.allowed);
}

#[test]
fn validation_errors_carry_file_line_and_column() {
    let typo = PolicySource::new(
        "typo.cedar",
        "// Allow reads.\n@id(\"reads\")\npermit (principal, action, resource) whn { true };\n",
    );
    let err = validate(&typo).expect_err("typo");
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(
        (
            problems[0].file.as_str(),
            problems[0].line,
            problems[0].column
        ),
        ("typo.cedar", 3, 38),
        "{err}"
    );
    assert!(err.to_string().starts_with("typo.cedar:3:38: "), "{err}");

    let attr = PolicySource::new(
        "attr.cedar",
        "permit (principal, action == Mcp::Action::\"tools/call\", resource)\nwhen {\n  resource.readonly\n};\n",
    );
    let err = validate(&attr).expect_err("unknown attribute");
    assert_eq!(err.problems().len(), 1, "{err}");
    let p = &err.problems()[0];
    assert_eq!((p.line, p.column), (3, 3), "{err}");
    assert!(p.message.contains("readonly"), "{err}");

    // Wrong tag type: a number argument compared with a string.
    let tag = PolicySource::new(
        "tag.cedar",
        "permit (principal, action, resource)\nwhen { context.args.numbers.hasTag(\"n\") && context.args.numbers.getTag(\"n\") == \"x\" };",
    );
    assert!(validate(&tag).is_err());
    // getTag without hasTag is refused, like an optional attribute without `has`.
    let unguarded = PolicySource::new(
        "tag.cedar",
        "permit (principal, action, resource) when { context.args.numbers.getTag(\"n\") < 5 };",
    );
    assert!(validate(&unguarded).is_err());

    // All problems of all files are collected, one per line.
    let err = Engine::new(&[typo, attr]).expect_err("two files");
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("typo.cedar:3:38: "), "{text}");
    assert!(lines[1].starts_with("attr.cedar:3:3: "), "{text}");

    // Owner files are validated the same way when the tunnel is added.
    let bad_owner = owner_file("permit (principal, action, resource)\nwhen { context.nope };");
    let err = Engine::new(&[])
        .expect("engine")
        .with_tunnel(spec("laptop", ALICE, vec![], vec![bad_owner]))
        .expect_err("invalid owner file");
    assert!(err.to_string().starts_with("owner.cedar:2:8: "), "{err}");
}

#[test]
fn explain_lists_the_determining_policies() {
    let forbid = admin(
        "\n@id(\"no-destructive\")\nforbid (principal, action == Mcp::Action::\"tools/call\", resource) when { resource.destructive };\n",
    );
    let e = engine(
        &[forbid],
        vec![spec(
            "laptop",
            ALICE,
            vec![grant("g1", "laptop", "bob@x.com")],
            vec![],
        )],
    );
    let ctx = ctx_at(T0);
    let bob = user("bob@x.com", &[]);
    let req = |target| Request {
        principal: &bob,
        tunnel: "laptop",
        method: "tools/call",
        target: Some(target),
        args: None,
        context: &ctx,
    };
    let x = e.explain(&req("drop"));
    assert_eq!(x.decision.kind, Forbidden);
    assert_eq!(x.action, "tools/call");
    assert_eq!(x.policies.len(), 1);
    assert_eq!(
        (
            x.policies[0].id.as_str(),
            x.policies[0].source.as_str(),
            x.policies[0].line
        ),
        ("no-destructive", "admin.cedar", 2)
    );
    assert_eq!(x.policies[0].effect, Effect::Forbid);
    assert!(
        x.policies[0]
            .text
            .starts_with("@id(\"no-destructive\")\nforbid")
    );
    assert!(x.errors.is_empty());

    let x = e.explain(&req("query"));
    assert_eq!(x.decision.policies, ["grant:g1"]);
    assert_eq!(
        x.policies[0].text.trim_end(),
        grant_policies(&grant("g1", "laptop", "bob@x.com")).trim_end()
    );
}

#[test]
fn allowed_tools_matches_per_tool_decide() {
    let forbid = admin(
        "forbid (principal, action, resource) when { resource is Mcp::Tool && resource.name == \"drop\" };",
    );
    let auditor = admin(
        "permit (principal == Mcp::User::\"aud@x.com\", action, resource) when { resource is Mcp::Tool && resource.readOnly };",
    );
    let mut ro = grant("ro", "laptop", "group:eng");
    ro.read_only = true;
    let mut some = grant("some", "laptop", "bob@x.com");
    some.tools = Some(vec!["write_query".into(), "nope".into()]);
    let e = engine(
        &[forbid, PolicySource::new("aud.cedar", auditor.text)],
        vec![spec("laptop", ALICE, vec![ro, some], vec![])],
    );
    let names = [
        "query",
        "list_tables",
        "write_query",
        "drop",
        "safe_write",
        "mystery",
        "nope",
        "query",
    ];
    let ctx = ctx_at(T0);
    for who in [
        user(ALICE, &[]),
        user("bob@x.com", &[]),
        user("eve@y.com", &["eng"]),
        user("aud@x.com", &[]),
        user("zed@x.com", &[]),
        Principal::ServiceAccount { name: "ci".into() },
    ] {
        let filtered = e.allowed_tools(&who, "laptop", &ctx, &names);
        let one_by_one: Vec<bool> = names
            .iter()
            .map(|t| {
                e.decide(&Request {
                    principal: &who,
                    tunnel: "laptop",
                    method: "tools/call",
                    target: Some(t),
                    args: None,
                    context: &ctx,
                })
                .allowed
            })
            .collect();
        assert_eq!(filtered, one_by_one, "{who:?}");
    }
    assert_eq!(
        e.allowed_tools(&user("eve@y.com", &["eng"]), "laptop", &ctx, &names),
        [true, true, false, false, false, false, false, true]
    );
    assert_eq!(
        e.allowed_tools(&user(ALICE, &[]), "nowhere", &ctx, &names),
        [false; 8]
    );
    let prompts = e.allowed_prompts(&user(ALICE, &[]), "laptop", &ctx, &["a", "b"]);
    assert_eq!(prompts, [true, true]);
    let resources =
        e.allowed_resources(&user("eve@y.com", &["eng"]), "laptop", &ctx, &["file:///a"]);
    assert_eq!(resources, [true]);
}

#[test]
fn tunnels_are_replaced_and_removed() {
    let e = engine(
        &[],
        vec![spec(
            "laptop",
            ALICE,
            vec![grant("b", "laptop", "bob@x.com")],
            vec![],
        )],
    );
    let bob = user("bob@x.com", &[]);
    run_table(&e, &[case(&bob, "tools/list", None, Permitted)]);
    let replaced = e
        .with_tunnel(spec("laptop", ALICE, vec![], vec![]))
        .expect("spec");
    run_table(&replaced, &[case(&bob, "tools/list", None, NotPermitted)]);
    run_table(&e, &[case(&bob, "tools/list", None, Permitted)]);
    let removed = e.without_tunnel("laptop");
    let d = decide(&removed, &case(&bob, "tools/list", None, NotPermitted));
    assert_eq!(d.kind, NotPermitted);
    assert!(d.reason().contains("not registered"), "{}", d.reason());
    assert!(removed.tunnel("laptop").is_none());
    assert_eq!(e.tunnel("laptop").map(|t| t.grants.len()), Some(1));

    // New admin policies apply to existing tunnels.
    let stricter = e
        .with_admin(&[admin(
            "forbid (principal, action, resource) when { context.client_id == \"inspector\" };",
        )])
        .expect("admin");
    run_table(&stricter, &[case(&bob, "tools/list", None, Forbidden)]);
}

#[test]
fn bad_specs_are_refused() {
    let e = Engine::new(&[]).expect("engine");
    let mut wrong_tunnel = spec(
        "laptop",
        ALICE,
        vec![grant("g", "desktop", "bob@x.com")],
        vec![],
    );
    assert!(matches!(
        e.with_tunnel(wrong_tunnel.clone()),
        Err(PolicyError::InvalidSpec { .. })
    ));
    wrong_tunnel.grants = vec![
        grant("g", "laptop", "bob@x.com"),
        grant("g", "laptop", "carol@x.com"),
    ];
    assert!(matches!(
        e.with_tunnel(wrong_tunnel),
        Err(PolicyError::InvalidSpec { .. })
    ));
    assert!(e.with_tunnel(spec("", ALICE, vec![], vec![])).is_err());
    assert!(
        e.with_tunnel(spec("laptop", "alice", vec![], vec![]))
            .is_err()
    );
    // Owner and admin may use the same @id without clashing.
    let same = "@id(\"x\") permit (principal == Mcp::User::\"q@x.com\", action, resource);";
    let e = Engine::new(&[admin(same)]).expect("engine");
    assert!(
        e.with_tunnel(spec("laptop", ALICE, vec![], vec![owner_file(same)]))
            .is_ok()
    );
}

#[test]
fn generated_grants_validate_for_every_shape() {
    for subject in ["bob@x.com", "@x.com", "group:a \"quoted\" \\ group"] {
        for tools in [
            None,
            Some(vec![]),
            Some(vec!["a".to_string(), "b\"c".to_string()]),
        ] {
            for read_only in [false, true] {
                for expires_at in [None, Some(T0)] {
                    let g = Grant {
                        id: "id with \"quotes\"".into(),
                        tunnel: "t\\1".into(),
                        subject: subject.parse().expect("subject"),
                        tools: tools.clone(),
                        read_only,
                        expires_at,
                    };
                    let text = grant_policies(&g);
                    assert_eq!(
                        validate(&PolicySource::new("g", text.clone())),
                        Ok(1),
                        "{text}"
                    );
                }
            }
        }
    }
}

#[test]
fn built_entities_and_context_conform_to_the_schema() {
    use crate::args::FlatArgs;
    use crate::entities::{self, PrincipalKey, TYPES};
    use cedar_policy::{Entities, Entity};

    let schema = &*crate::source::PARSED_SCHEMA;
    let alice = user(ALICE, &["eng"]);
    let principal = entities::principal_node(&alice, &PrincipalKey::of(&alice));
    assert_eq!(principal.memberships.len(), 3);
    let ci = Principal::ServiceAccount { name: "ci".into() };
    let service = entities::principal_node(&ci, &PrincipalKey::of(&ci));
    let args = FlatArgs::from_json(Some(
        &json!({"n": 1, "s": "x", "b": true, "l": ["a"], "o": {"p": 2}}),
    ));
    let mut nodes = vec![
        principal.node.clone(),
        service.node,
        entities::tunnel_node("laptop", ALICE),
        entities::tool_node("laptop", "query", ToolFlags::UNKNOWN),
        entities::member_node(&TYPES.prompt, "name", "laptop", "p"),
        entities::member_node(&TYPES.resource, "uri", "laptop", "file:///a"),
    ];
    let arg_nodes = entities::arg_nodes(&args);
    assert_eq!(arg_nodes.len(), 4);
    nodes.extend(arg_nodes);
    let public: Vec<Entity> = nodes.iter().map(|n| Entity::from((**n).clone())).collect();
    Entities::from_entities(public, Some(schema)).expect("entities conform to the schema");
    entities::store(nodes).expect("store");
    for ip in [None, Some("2001:db8::1".parse().expect("ip"))] {
        let ctx = RequestContext {
            source_ip: ip,
            ..ctx_at(T0)
        };
        let context = entities::context(&ctx, &args.names).expect("context");
        let tool = entities::uid(&TYPES.tool, "laptop/query");
        let action = crate::action::Action::ToolsCall;
        cedar_policy::Request::new(
            principal.uid.clone(),
            action.uid().clone(),
            tool,
            context,
            Some(schema),
        )
        .expect("request conforms to the schema");
    }
}

#[test]
fn time_fields_are_utc_hour_and_iso_weekday() {
    let e = engine(
        &[],
        vec![spec(
            "laptop",
            ALICE,
            vec![],
            vec![owner_file(
                "permit (principal, action, resource) when { context.hour == 22 && context.weekday == 2 };",
            )],
        )],
    );
    let zoe = user("zoe@z.com", &[]);
    let mut monday = case(&zoe, "tools/list", None, NotPermitted);
    monday.ctx = ctx_at(T0 - 86_400);
    run_table(&e, &[case(&zoe, "tools/list", None, Permitted), monday]);
}

/// `allowed_tools` (one evaluation per class of tools, or per tool when a
/// policy reads the tool in a way the analysis does not cover) equals
/// `decide` on `tools/call` per tool, over many policy mixes, principals,
/// contexts and tool lists (known, unknown and repeated names).
#[test]
fn allowed_tools_equals_decide_over_policy_mixes() {
    let admin_policies = [
        // destructive-forbid with a context condition
        r#"forbid (principal, action == Mcp::Action::"tools/call", resource)
           when { resource.destructive && context.client_id != "trusted" };"#,
        // named by name and by uid, incl. a tool of another tunnel
        r#"forbid (principal in Mcp::Group::"eng", action, resource)
           when { resource is Mcp::Tool && (resource.name == "drop" || resource == Mcp::Tool::"laptop/safe_write") };"#,
        r#"permit (principal in Mcp::Domain::"y.com", action == Mcp::Action::"tools/call", resource == Mcp::Tool::"laptop/mystery");"#,
        r#"permit (principal, action == Mcp::Action::"tools/call", resource) when { resource in [Mcp::Tool::"laptop/drop", Mcp::Tool::"other/query"] && context.hour >= 12 };"#,
        // flags and hour
        r#"permit (principal in Mcp::Group::"sre", action == Mcp::Action::"tools/call", resource)
           when { resource.readOnly || (resource.annotated && !resource.openWorld) || context.hour < 3 };"#,
        // context.args: no arguments when listing
        r#"permit (principal == Mcp::ServiceAccount::"ci", action == Mcp::Action::"tools/call", resource)
           when { resource.name == "write_query" && context.args.numbers.hasTag("limit") };"#,
        r#"forbid (principal, action == Mcp::Action::"tools/call", resource)
           unless { !(resource.name == "list_tables") || context.args.names.isEmpty() };"#,
        // shapes the analysis does not cover: per-tool evaluation
        r#"permit (principal in Mcp::Group::"ops", action == Mcp::Action::"tools/call", resource)
           when { resource.name like "*_query" };"#,
        r#"forbid (principal in Mcp::Group::"ops", action == Mcp::Action::"tools/call", resource)
           when { resource.name == context.client_id };"#,
        r#"permit (principal in Mcp::Group::"lit", action == Mcp::Action::"tools/call", resource)
           when { Mcp::Tool::"laptop/query".readOnly };"#,
    ];
    let owner_policies = [
        r#"permit (principal == Mcp::User::"carol@y.com", action == Mcp::Action::"tools/call", resource)
           when { ["query", "drop", "nope"].contains(resource.name) && context.client_id == "inspector" };"#,
        r#"forbid (principal, action == Mcp::Action::"tools/call", resource)
           when { resource.name != "query" && principal is Mcp::User && principal.domain == "z.com" };"#,
        r#"permit (principal is Mcp::User, action, resource) when { principal.email like "*@z.com" && resource is Mcp::Tool && !resource.destructive };"#,
    ];
    let grants = || {
        let mut some = grant("some", "laptop", "bob@x.com");
        some.tools = Some(vec!["write_query".into(), "drop".into(), "nope".into()]);
        let mut ro = grant("ro", "laptop", "group:eng");
        ro.read_only = true;
        let all = grant("dom", "laptop", "@y.com");
        let mut late = grant("late", "laptop", "group:sre");
        late.tools = Some(vec!["mystery".into()]);
        late.expires_at = Some(T0 + 3600);
        vec![some, ro, all, late]
    };
    let principals = [
        user(ALICE, &[]),
        user("bob@x.com", &["eng"]),
        user("carol@y.com", &["sre"]),
        user("dan@z.com", &["ops"]),
        user("erin@x.com", &["lit", "ops"]),
        user("zed@q.com", &[]),
        Principal::ServiceAccount { name: "ci".into() },
    ];
    let names = [
        "query",
        "list_tables",
        "write_query",
        "drop",
        "safe_write",
        "mystery",
        "nope",
        "unknown_query",
        "inspector",
        "query",
    ];
    let mut contexts = Vec::new();
    for (time, client) in [
        (T0, "inspector"),
        (T0 + 2 * 3600, "trusted"),
        (T0 + 6 * 3600, "inspector"),
    ] {
        let mut ctx = ctx_at(time);
        ctx.client_id = client.into();
        contexts.push(ctx);
    }
    // Mixes: subsets of the admin and owner policies (bit masks), with and
    // without grants.
    let mut mixes = 0;
    for mask in 0u32..(1 << (admin_policies.len() + owner_policies.len())) {
        // a spread of subsets, not all 8192
        if mask.count_ones() > 2 && mask % 97 != 0 {
            continue;
        }
        mixes += 1;
        let admin: Vec<PolicySource> = admin_policies
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(i, t)| PolicySource::new(format!("admin{i}.cedar"), *t))
            .collect();
        let owner: Vec<PolicySource> = owner_policies
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (admin_policies.len() + i)) != 0)
            .map(|(i, t)| PolicySource::new(format!("owner{i}.cedar"), *t))
            .collect();
        let with_grants = if mask % 3 == 0 { vec![] } else { grants() };
        let e = engine(&admin, vec![spec("laptop", ALICE, with_grants, owner)]);
        for who in &principals {
            for ctx in &contexts {
                let filtered = e.allowed_tools(who, "laptop", ctx, &names);
                let one_by_one: Vec<bool> = names
                    .iter()
                    .map(|t| {
                        e.decide(&Request {
                            principal: who,
                            tunnel: "laptop",
                            method: "tools/call",
                            target: Some(t),
                            args: None,
                            context: ctx,
                        })
                        .allowed
                    })
                    .collect();
                assert_eq!(filtered, one_by_one, "mask {mask:#b} {who:?} {ctx:?}");
            }
        }
    }
    assert!(mixes > 150, "{mixes}");
}
