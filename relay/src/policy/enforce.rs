//! The relay's decision for one HTTP request on the MCP path: who is asking
//! ([`Who`]), what the body says ([`super::message`]), what policy and the
//! rate limits say, and — when refused — the answer the MCP spec expects.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_tunnel_policy::{Principal, Request as PolicyRequest, RequestContext};
use serde_json::{Value, json};

use super::message::{ListKind, Message, parse_body};
use crate::app::App;
use crate::oauth::token::AccessClaims;

/// JSON-RPC error code for a call policy refused (implementation-defined
/// server error range).
pub const RPC_FORBIDDEN: i64 = -32003;
/// JSON-RPC error code for a call over a rate limit.
pub const RPC_RATE_LIMITED: i64 = -32029;

/// The authenticated caller, as policy, rate limits and audit see it.
#[derive(Debug, Clone)]
pub struct Who {
    /// The Cedar principal.
    pub principal: Principal,
    /// A stable key (email, or `sa:<client id>`): sessions are bound to it
    /// and rate limits counted by it.
    pub key: String,
    /// For the audit log: the email or service-account name.
    pub name: String,
    /// Request context (client, scopes, address, time, protocol version).
    pub context: RequestContext,
}

impl Who {
    /// From a validated access token.
    pub fn new(
        claims: &AccessClaims,
        source_ip: Option<IpAddr>,
        protocol_version: Option<String>,
    ) -> Self {
        let principal =
            Principal::from_identity(claims.email.as_deref(), &claims.groups, &claims.client_id);
        let (key, name) = match &principal {
            Principal::User { email, .. } => (email.clone(), email.clone()),
            Principal::ServiceAccount { name } => (format!("sa:{name}"), name.clone()),
        };
        Self {
            principal,
            key,
            name,
            context: RequestContext {
                client_id: claims.client_id.clone(),
                scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
                source_ip,
                time: crate::oauth::token::unix_now() as i64,
                protocol_version,
            },
        }
    }
}

/// What was decided for a request that may go on.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// The messages, for the audit record (first one named).
    pub method: String,
    /// Its target.
    pub target: Option<String>,
    /// Its arguments.
    pub args: Option<Value>,
    /// Policies behind the decision.
    pub policies: Vec<String>,
    /// The list whose response must be filtered, if any.
    pub list: Option<ListKind>,
}

/// A refusal: the response to send and what to audit.
#[derive(Debug)]
pub struct Denied {
    /// The response.
    pub response: Response,
    /// Method, target, args of the refused message.
    pub what: Allowed,
    /// One human line.
    pub reason: String,
    /// The JSON-RPC error code, if the answer is one.
    pub rpc_error: Option<i64>,
}

/// Decides one HTTP request. `body` is the whole request body.
pub fn authorize(
    app: &App,
    who: &Who,
    tunnel: &str,
    http_method: &str,
    body: &[u8],
) -> Result<Allowed, Box<Denied>> {
    let messages = match http_method {
        "POST" => match parse_body(body, who.context.protocol_version.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                let code = e.rpc_code();
                let reason = e.to_string();
                return Err(Box::new(Denied {
                    response: rpc_error_response(
                        StatusCode::BAD_REQUEST,
                        &Value::Null,
                        code,
                        &reason,
                        None,
                    ),
                    what: Allowed {
                        method: "POST".into(),
                        ..Default::default()
                    },
                    reason,
                    rpc_error: Some(code),
                }));
            }
        },
        // The server-to-client stream (GET) and ending a session (DELETE)
        // are housekeeping: anyone with access to the tunnel may.
        "GET" | "DELETE" => vec![Message {
            id: None,
            method: "notifications".into(),
            wire_method: http_method.to_owned(),
            target: None,
            args: None,
        }],
        other => {
            let reason =
                format!("{other} is not an MCP Streamable HTTP method (POST, GET, DELETE)");
            let mut r = crate::proxy::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &reason,
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            return Err(Box::new(Denied {
                response: r,
                what: Allowed {
                    method: other.to_owned(),
                    ..Default::default()
                },
                reason,
                rpc_error: None,
            }));
        }
    };
    let engine = app.policy.engine();
    let policies = match engine.decide_messages(&who.principal, tunnel, &messages, &who.context) {
        Ok(p) => p,
        Err(refusal) => return Err(refused(&messages, refusal.0, &refusal.1, tunnel)),
    };
    let first = &messages[0];
    let tool = messages
        .iter()
        .find(|m| m.is_tool_call())
        .and_then(|m| m.target.as_deref());
    let rate = app.rate();
    if let Err(l) = rate.limits.check(&rate.config, &who.key, tunnel, tool) {
        let reason = l.message();
        let data = json!({
            "reason": reason,
            "retry_after_ms": l.retry_after.as_millis() as u64,
            "limit": l.which,
        });
        let mut response = match (&first.id, first.is_tool_call() && messages.len() == 1) {
            (Some(id), true) => {
                rpc_error_response(StatusCode::OK, id, RPC_RATE_LIMITED, &reason, Some(data))
            }
            (Some(id), false) => rpc_error_response(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                RPC_RATE_LIMITED,
                &reason,
                Some(data),
            ),
            (None, _) => {
                crate::proxy::json_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &reason)
            }
        };
        if let Ok(v) = HeaderValue::from_str(&l.retry_after_secs().to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(Box::new(Denied {
            response,
            what: Allowed {
                method: first.wire_method.clone(),
                target: first.target.clone(),
                args: first.args.clone(),
                policies: Vec::new(),
                list: None,
            },
            reason,
            rpc_error: first.id.as_ref().map(|_| RPC_RATE_LIMITED),
        }));
    }
    Ok(Allowed {
        method: first.wire_method.clone(),
        target: first.target.clone(),
        args: first.args.clone(),
        policies,
        list: if messages.len() == 1 {
            first.list_kind()
        } else {
            None
        },
    })
}

/// The answer to a message policy refused: a JSON-RPC error the model can
/// read for a lone `tools/call`, else 403 (with a JSON-RPC error body when
/// the message had an id).
fn refused(
    messages: &[Message],
    i: usize,
    d: &mcp_tunnel_policy::Decision,
    tunnel: &str,
) -> Box<Denied> {
    let m = &messages[i];
    let reason = d.reason();
    let data = json!({
        "reason": reason,
        "policies": d.policies,
        "tunnel": tunnel,
        "method": m.wire_method,
        "target": m.target,
    });
    let message = format!("forbidden: {reason}");
    let response = match &m.id {
        Some(id) if m.is_tool_call() && messages.len() == 1 => {
            rpc_error_response(StatusCode::OK, id, RPC_FORBIDDEN, &message, Some(data))
        }
        Some(id) => rpc_error_response(
            StatusCode::FORBIDDEN,
            id,
            RPC_FORBIDDEN,
            &message,
            Some(data),
        ),
        None => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "forbidden", "message": reason, "policies": d.policies})),
        )
            .into_response(),
    };
    Box::new(Denied {
        response,
        what: Allowed {
            method: m.wire_method.clone(),
            target: m.target.clone(),
            args: m.args.clone(),
            policies: d.policies.clone(),
            list: None,
        },
        reason,
        rpc_error: m.id.as_ref().map(|_| RPC_FORBIDDEN),
    })
}

/// What the caller may see of a list response.
pub fn list_keep(app: &Arc<App>, who: &Who, tunnel: &str, kind: ListKind) -> super::filter::Keep {
    let engine = app.policy.engine();
    let who = who.clone();
    let tunnel = tunnel.to_owned();
    Arc::new(move |names: &[&str]| match kind {
        ListKind::Tools => engine.allowed_tools(&who.principal, &tunnel, &who.context, names),
        ListKind::Prompts | ListKind::Resources => {
            let method = if kind == ListKind::Prompts {
                "prompts/get"
            } else {
                "resources/read"
            };
            names
                .iter()
                .map(|n| {
                    !n.is_empty()
                        && engine
                            .decide(&PolicyRequest {
                                principal: &who.principal,
                                tunnel: &tunnel,
                                method,
                                target: Some(n),
                                args: None,
                                context: &who.context,
                            })
                            .allowed
                })
                .collect()
        }
    })
}

/// A JSON-RPC error response with HTTP `status`.
pub fn rpc_error_response(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    (
        status,
        axum::Json(json!({ "jsonrpc": "2.0", "id": id, "error": error })),
    )
        .into_response()
}
