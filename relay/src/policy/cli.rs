//! `mcp-relay policy check|explain`: validate policy files, and show what
//! the relay would decide for a request — and why — without sending anything.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use mcp_tunnel_policy::{PolicySource, Principal, Request, RequestContext};

use crate::state_dir::StateDir;
use crate::store::Store;

/// Validates each file against the published schema. Prints `FILE: N
/// policies ok` or every problem as `FILE:LINE:COL: message`; returns
/// whether all were valid.
pub fn check(files: &[PathBuf]) -> anyhow::Result<bool> {
    let mut ok = true;
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match mcp_tunnel_policy::validate(&PolicySource::new(f.display().to_string(), text)) {
            Ok(n) => println!(
                "{}: {n} {} ok",
                f.display(),
                if n == 1 { "policy" } else { "policies" }
            ),
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    Ok(ok)
}

/// What `policy explain` asks about.
#[derive(Debug, Clone)]
pub struct ExplainQuery {
    /// The caller: a user's email, or a service account (`sa:NAME`).
    pub principal: String,
    /// The user's groups (default: the account's groups at the relay).
    pub groups: Option<Vec<String>>,
    /// The tunnel.
    pub tunnel: String,
    /// The JSON-RPC method.
    pub method: String,
    /// Tool, prompt or resource.
    pub target: Option<String>,
    /// Arguments (JSON object).
    pub args: Option<serde_json::Value>,
    /// OAuth client id.
    pub client_id: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Source address.
    pub source_ip: Option<std::net::IpAddr>,
    /// Unix time to decide at (default now).
    pub time: Option<i64>,
}

/// Builds the relay's policy state from `state` (+ admin files) and explains
/// one decision. Returns (allowed, report text).
pub fn explain(
    state: &StateDir,
    store: &dyn Store,
    admin_files: &[PathBuf],
    dev: bool,
    q: &ExplainQuery,
) -> anyhow::Result<(bool, String)> {
    let policy = super::PolicyState::load(admin_files)?;
    let claims = crate::registry::load_claims(state, store)?;
    let owners: HashMap<String, super::Owner> = claims
        .iter()
        .map(|(t, c)| {
            (
                t.as_str().to_owned(),
                super::owner_from_claim(store, dev, &c.owner),
            )
        })
        .collect();
    let now = q
        .time
        .unwrap_or_else(|| crate::oauth::token::unix_now() as i64);
    policy.refresh_all(store, &owners, now)?;
    let principal = match q.principal.strip_prefix("sa:") {
        Some(name) => Principal::ServiceAccount {
            name: name.to_owned(),
        },
        None => {
            let email = q.principal.to_ascii_lowercase();
            let groups = match &q.groups {
                Some(g) => g.clone(),
                None => crate::store::Email::parse(&email)
                    .ok()
                    .and_then(|e| store.get_user_by_email(&e).ok().flatten())
                    .map(|u| u.groups)
                    .unwrap_or_default(),
            };
            Principal::User { email, groups }
        }
    };
    let context = RequestContext {
        client_id: q.client_id.clone(),
        scopes: q.scopes.clone(),
        source_ip: q.source_ip,
        time: now,
        protocol_version: None,
    };
    let engine = policy.engine();
    let x = engine.explain(&Request {
        principal: &principal,
        tunnel: &q.tunnel,
        method: &q.method,
        target: q.target.as_deref(),
        args: q.args.as_ref(),
        context: &context,
    });
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "decision: {}  ({})",
        if x.decision.allowed { "ALLOW" } else { "DENY" },
        x.decision.reason()
    );
    let _ = writeln!(
        out,
        "request:  {} {} on tunnel {} as {}  (Cedar action {}; {} policies evaluated)",
        q.method,
        q.target.as_deref().unwrap_or(""),
        q.tunnel,
        q.principal,
        x.action,
        x.evaluated
    );
    match engine.tunnel(&q.tunnel) {
        Some(t) if t.owner.is_empty() => {
            let _ = writeln!(out, "tunnel:   no owning account");
        }
        Some(t) => {
            let _ = writeln!(out, "tunnel:   owned by {}", t.owner);
        }
        None => {
            let _ = writeln!(
                out,
                "tunnel:   unknown to this relay (only admin policies apply)"
            );
        }
    }
    if x.policies.is_empty() {
        let _ = writeln!(out, "policies: none matched (default deny)");
    } else {
        let _ = writeln!(out, "policies that decided it:");
        for p in &x.policies {
            let _ = writeln!(out, "  {} ({}:{})", p.id, p.source, p.line);
            for l in p.text.lines() {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    for e in &x.errors {
        let _ = writeln!(out, "error:    {e}");
    }
    Ok((x.decision.allowed, out))
}
