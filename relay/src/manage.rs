//! Management requests from a tunnel owner's device: `mcp-agent share`,
//! `shares list|revoke`, `audit`.
//!
//! The device certificate presented in the QUIC handshake is the
//! authentication (the same checks as for serving a tunnel: enrolled key,
//! not revoked, owner enabled). An owner acts on their own tunnels only.

use std::sync::Arc;

use mcp_tunnel_policy::GrantSubject;
use mcp_tunnel_proto::{ErrorCode, Frame, ManageRequest, ManageResponse, TunnelName};
use mcp_tunnel_transport::write_frame;
use serde_json::{Value, json};

use crate::app::App;
use crate::store::{Email, NewGrant, NewUser, Store};

/// Longest grant lifetime (`--expires`): one year.
pub const MAX_GRANT_LIFETIME_SECS: u64 = 366 * 24 * 3600;
/// Most tools one grant may name.
pub const MAX_GRANT_TOOLS: usize = 256;
/// Most audit records one request returns.
pub const MAX_AUDIT_PAGE: u32 = 1_000;

/// Answers one management request on `send`, then closes the connection.
pub async fn handle(
    app: &Arc<App>,
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    req: ManageRequest,
) {
    let response = match crate::agents::check_device(app, conn).await {
        Err((code, message)) => ManageResponse::Error { code, message },
        Ok(device) => {
            let app = app.clone();
            let email = device.email.clone();
            let user = device.user;
            tokio::task::spawn_blocking(move || match run(&app, user, &email, req) {
                Ok(result) => ManageResponse::Ok { result },
                Err((code, message)) => ManageResponse::Error { code, message },
            })
            .await
            .unwrap_or_else(|_| ManageResponse::Error {
                code: ErrorCode::INTERNAL,
                message: "the relay failed while answering".into(),
            })
        }
    };
    if let ManageResponse::Error { code, message } = &response {
        tracing::info!(remote = %conn.remote_address(), code = %code, "management request refused: {message}");
    }
    let _ = write_frame(&mut send, &Frame::ManageResponse(response)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send.stopped()).await;
    conn.close(ErrorCode::NO_ERROR.0.into(), b"done");
}

type Refusal = (ErrorCode, String);

fn internal(e: impl std::fmt::Display) -> Refusal {
    (
        ErrorCode::INTERNAL,
        format!("the relay's state could not be read or written: {e}"),
    )
}

/// The tunnels `user` owns.
fn owned_tunnels(app: &App, user: crate::store::UserId) -> Vec<TunnelName> {
    let me = crate::agents::user_owner(user);
    let mut v: Vec<TunnelName> = app
        .registry
        .claims_snapshot()
        .into_iter()
        .filter(|(_, o)| *o == me)
        .map(|(t, _)| t)
        .collect();
    v.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    v
}

/// The tunnel a request is about: the named one (must be the caller's), or
/// the caller's only one.
fn pick_tunnel(
    app: &App,
    user: crate::store::UserId,
    named: Option<TunnelName>,
) -> Result<TunnelName, Refusal> {
    let mine = owned_tunnels(app, user);
    match named {
        Some(t) if mine.contains(&t) => Ok(t),
        Some(t) => Err((
            ErrorCode::FORBIDDEN,
            format!(
                "tunnel \"{t}\" is not yours (your tunnels: {})",
                list(&mine)
            ),
        )),
        None => match mine.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err((
                ErrorCode::NOT_FOUND,
                "you have no tunnel on this relay yet; run `mcp-agent connect --name NAME …` first"
                    .into(),
            )),
            _ => Err((
                ErrorCode::BAD_REQUEST,
                format!(
                    "you have several tunnels ({}); pass --tunnel NAME",
                    list(&mine)
                ),
            )),
        },
    }
}

fn list(t: &[TunnelName]) -> String {
    if t.is_empty() {
        return "none".into();
    }
    t.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
}

fn run(
    app: &Arc<App>,
    user: crate::store::UserId,
    email: &str,
    req: ManageRequest,
) -> Result<Value, Refusal> {
    let store: &dyn Store = app.store.as_ref();
    let now = crate::oauth::token::unix_now() as i64;
    match req {
        ManageRequest::Share {
            tunnel,
            subject,
            tools,
            read_only,
            expires_in_secs,
        } => {
            let tunnel = pick_tunnel(app, user, tunnel)?;
            let subject: GrantSubject = subject
                .parse()
                .map_err(|e| (ErrorCode::BAD_REQUEST, format!("{e}")))?;
            if let Some(t) = &tools {
                if t.is_empty() || t.len() > MAX_GRANT_TOOLS {
                    return Err((
                        ErrorCode::BAD_REQUEST,
                        format!("--tools names 1 to {MAX_GRANT_TOOLS} tools"),
                    ));
                }
                if let Some(bad) = t
                    .iter()
                    .find(|n| n.is_empty() || n.len() > crate::agents::MAX_TOOL_NAME)
                {
                    return Err((ErrorCode::BAD_REQUEST, format!("bad tool name {bad:?}")));
                }
            }
            let expires_at = match expires_in_secs {
                Some(0) => {
                    return Err((
                        ErrorCode::BAD_REQUEST,
                        "--expires must be longer than zero".into(),
                    ));
                }
                Some(s) if s > MAX_GRANT_LIFETIME_SECS => {
                    return Err((
                        ErrorCode::BAD_REQUEST,
                        "--expires is at most 366 days".into(),
                    ));
                }
                Some(s) => Some(now.saturating_add(s as i64)),
                None => None,
            };
            // Sharing with a person who has no account makes one, with a
            // one-time link to set a password.
            let mut setup_link = None;
            if let GrantSubject::Email(e) = &subject {
                let addr = Email::parse(e).map_err(|e| (ErrorCode::BAD_REQUEST, e.to_string()))?;
                if store.get_user_by_email(&addr).map_err(internal)?.is_none() {
                    let (u, token) = store
                        .add_user(&NewUser {
                            email: addr,
                            display_name: String::new(),
                            groups: Vec::new(),
                        })
                        .map_err(internal)?;
                    tracing::info!(
                        user = u.email.as_str(),
                        by = email,
                        "account created by a share"
                    );
                    setup_link = Some(format!("{}/setup?token={}", app.public_url, token.expose()));
                }
            }
            let g = store
                .insert_grant(&NewGrant {
                    tunnel: tunnel.as_str().to_owned(),
                    subject: subject.to_string(),
                    tools,
                    read_only,
                    created_by: email.to_owned(),
                    expires_at,
                })
                .map_err(internal)?;
            tracing::info!(grant = %g.id, tunnel = %tunnel, subject = %g.subject, by = email, "grant made");
            app.refresh_tunnel_policy(tunnel.as_str());
            Ok(json!({
                "grant": grant_json(&g, now),
                "mcp_url": app.public_mcp_url(&tunnel),
                "setup_link": setup_link,
            }))
        }
        ManageRequest::ListShares { tunnel } => {
            let mine = owned_tunnels(app, user);
            if let Some(t) = &tunnel
                && !mine.contains(t)
            {
                return Err((ErrorCode::FORBIDDEN, format!("tunnel \"{t}\" is not yours")));
            }
            let grants: Vec<Value> = store
                .list_grants(None)
                .map_err(internal)?
                .into_iter()
                .filter(|g| mine.iter().any(|t| t.as_str() == g.tunnel))
                .filter(|g| tunnel.as_ref().is_none_or(|t| t.as_str() == g.tunnel))
                .map(|g| grant_json(&g, now))
                .collect();
            Ok(json!({ "grants": grants }))
        }
        ManageRequest::RevokeShare { id } => {
            let mine = owned_tunnels(app, user);
            let id = id.trim().to_ascii_lowercase();
            // Only grants on the caller's tunnels can match.
            let candidates: Vec<_> = store
                .list_grants(None)
                .map_err(internal)?
                .into_iter()
                .filter(|g| g.revoked_at.is_none() && g.id.starts_with(&id))
                .collect();
            let theirs: Vec<_> = candidates
                .iter()
                .filter(|g| mine.iter().any(|t| t.as_str() == g.tunnel))
                .collect();
            let g = match (theirs.as_slice(), candidates.is_empty()) {
                ([one], _) => (*one).clone(),
                ([], _) => {
                    return Err((
                        ErrorCode::NOT_FOUND,
                        format!("no live grant {id} on your tunnels; see `mcp-agent shares list`"),
                    ));
                }
                _ => {
                    return Err((
                        ErrorCode::BAD_REQUEST,
                        format!("\"{id}\" matches several grants; give more of the id"),
                    ));
                }
            };
            let revoked = store
                .revoke_grant(&g.id)
                .map_err(|e| (ErrorCode::BAD_REQUEST, e.to_string()))?
                .ok_or_else(|| {
                    (
                        ErrorCode::NOT_FOUND,
                        format!("grant {} was already revoked", g.id),
                    )
                })?;
            tracing::info!(grant = %revoked.id, tunnel = %revoked.tunnel, by = email, "grant revoked");
            app.refresh_tunnel_policy(&revoked.tunnel);
            Ok(json!({ "grant": grant_json(&revoked, now) }))
        }
        ManageRequest::Audit {
            tunnel,
            limit,
            after_seq,
        } => {
            let mine = owned_tunnels(app, user);
            let tunnels: Vec<String> = match &tunnel {
                Some(t) if mine.contains(t) => vec![t.as_str().to_owned()],
                Some(t) => {
                    return Err((ErrorCode::FORBIDDEN, format!("tunnel \"{t}\" is not yours")));
                }
                None => mine.iter().map(|t| t.as_str().to_owned()).collect(),
            };
            let records =
                crate::audit::records_for(app, tunnels, after_seq, limit.min(MAX_AUDIT_PAGE))
                    .map_err(internal)?;
            Ok(json!({ "records": records }))
        }
    }
}

fn grant_json(g: &crate::store::Grant, now: i64) -> Value {
    let status = if g.revoked_at.is_some() {
        "revoked"
    } else if g.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "live"
    };
    json!({
        "id": g.id,
        "tunnel": g.tunnel,
        "subject": g.subject,
        "tools": g.tools,
        "read_only": g.read_only,
        "created_by": g.created_by,
        "created_at": g.created_at,
        "expires_at": g.expires_at,
        "revoked_at": g.revoked_at,
        "status": status,
    })
}
