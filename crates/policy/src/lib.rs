//! Cedar authorization of MCP messages, shared by the relay (first check,
//! before anything reaches the laptop) and the agent (second check).
//!
//! # The picture
//!
//! ```text
//!  admin .cedar files ──┐
//!                        ├─► Engine ── decide(Request) ──► Decision { allowed, kind, policies, reason() }
//!  per tunnel: owner     │     │
//!  .cedar, grants,  ─────┘     └─ allowed_tools(...) for filtering tools/list
//!  tools + annotations
//! ```
//!
//! Every message becomes one Cedar request against [`SCHEMA`] (namespace
//! `Mcp`): the principal is a `User` (id = lowercase email, parents
//! `Group::"<g>"` and `Domain::"<d>"`) or a `ServiceAccount`; the action is
//! the JSON-RPC method ([`method_action`]); the resource is the `Tunnel`, or a
//! `Tool`, `Prompt` or `Resource` in it; the context carries client id,
//! scopes, source address (`0.0.0.0` when unknown, outside every allow-list
//! range), time (`time`, UTC `hour`, ISO `weekday`) and arguments. Validation
//! is strict and per request type, so a policy that reads `principal.email`
//! without `principal is Mcp::User` (scope or `&&` guard) is refused, since
//! service accounts have no email.
//!
//! Policy sources:
//! - the relay admin's files (global, or scoped to a tunnel with
//!   `resource == Mcp::Tunnel::"x"` / `resource in Mcp::Tunnel::"x"`);
//! - per tunnel, the owner's files (applied to that tunnel only), grants
//!   ([`grant_policies`], ids `grant:<id>`) and the built-in permit
//!   `builtin:owner` that lets the owner do everything.
//!
//! Forbid wins; default deny for everyone but the owner. Housekeeping
//! ([`is_housekeeping`]) passes for anyone with access to the tunnel (the
//! owner, or whoever is permitted `connect` or a list action) unless a forbid
//! matches it.
//!
//! # Arguments in policies
//!
//! Tool and prompt arguments are arbitrary JSON, which Cedar's strict
//! validator cannot type as a closed record (open records exist only behind
//! the experimental `partial-validate` feature, and then do not validate
//! strictly). So they are exposed as typed *entity tags*: `context.args` is a
//! record of tag-bearing entities, one per value type, and every use is
//! validated at load:
//!
//! ```cedar
//! @id("small-queries")
//! permit (principal in Mcp::Group::"analysts", action == Mcp::Action::"tools/call", resource)
//! when {
//!   resource.name == "query" &&
//!   context.args.numbers.hasTag("limit") &&
//!   context.args.numbers.getTag("limit") <= 100 &&
//!   context.args.strings.hasTag("table") &&
//!   context.args.strings.getTag("table") like "public_*"
//! };
//! ```
//!
//! `numbers` holds integer arguments (`Long`), `strings` strings, `bools`
//! booleans, `lists` arrays of strings (`Set<String>`), and `names` every key
//! present. Nested objects are flattened with dots (`filter.table`), up to
//! [`MAX_ARG_DEPTH`] objects deep and [`MAX_ARG_KEYS`] keys; non-integer
//! numbers and other arrays appear only in `names`. A permit that requires
//! `hasTag` denies a missing argument; write forbids as
//! `unless { ...hasTag(..) && ... }` so that they fail closed too.
//!
//! # Indexing
//!
//! A decision evaluates only the policies that can apply: each tunnel holds a
//! prebuilt set (global admin policies + that tunnel's policies) and one set
//! per principal named in a `principal == ...` scope; admin policies scoped
//! to one principal but no tunnel are a second, per-principal set.
//!
//! # Example
//!
//! ```
//! use mcp_tunnel_policy::*;
//!
//! let admin = PolicySource::new(
//!     "admin.cedar",
//!     r#"@id("no-destructive") forbid (principal, action == Mcp::Action::"tools/call", resource)
//!        when { resource.destructive };"#,
//! );
//! let engine = Engine::new(&[admin])?.with_tunnel(TunnelSpec {
//!     name: "laptop".into(),
//!     owner: "alice@example.com".into(),
//!     owner_policies: vec![],
//!     grants: vec![Grant {
//!         id: "g1".into(),
//!         tunnel: "laptop".into(),
//!         subject: "@example.com".parse()?,
//!         tools: None,
//!         read_only: true,
//!         expires_at: None,
//!     }],
//!     tools: vec![ToolInfo {
//!         name: "query".into(),
//!         annotations: Some(ToolAnnotations { read_only: Some(true), ..Default::default() }),
//!     }],
//! })?;
//! let bob = Principal::user("bob@example.com");
//! let ctx = RequestContext { time: 1_700_000_000, ..Default::default() };
//! let call = |tool| Request {
//!     principal: &bob,
//!     tunnel: "laptop",
//!     method: "tools/call",
//!     target: Some(tool),
//!     args: None,
//!     context: &ctx,
//! };
//! assert!(engine.decide(&call("query")).allowed);
//! let denied = engine.decide(&call("drop_table"));
//! assert_eq!(denied.reason(), "forbidden by policy admin.cedar:1 (no-destructive)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod action;
mod args;
mod decision;
mod engine;
mod entities;
mod error;
mod grant;
mod listing;
pub mod message;
mod model;
mod source;

pub use action::{is_housekeeping, method_action};
pub use args::{MAX_ARG_DEPTH, MAX_ARG_KEYS};
pub use decision::{Decision, DecisionKind, Explanation};
pub use engine::{Engine, OWNER_POLICY_ID, dev_open_policy};
pub use error::{PolicyError, Problem};
pub use grant::{Grant, GrantSubject, InvalidSubject, grant_policies};
pub use model::{
    Principal, Request, RequestContext, ToolAnnotations, ToolFlags, ToolInfo, TunnelSpec,
};
pub use source::{Effect, PolicyInfo, PolicySource, SCHEMA, validate};

#[cfg(test)]
mod tests;
