//! Brings admin changes made by the CLI (another process writing the same
//! state database) into the running relay within a second: the store's
//! revision counter is polled, and on change revoked users, clients and
//! access-token ids are pushed into the bearer check's cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::user_subject;
use crate::oauth::token::unix_now;

/// How often the store's revision is checked (the "within 1 s" of revocation).
pub const POLL_INTERVAL: Duration = Duration::from_millis(400);

/// Runs until `shutdown`.
pub async fn watch(app: Arc<App>, shutdown: CancellationToken) {
    let mut last_revision: Option<i64> = None;
    let mut applied: HashMap<i64, i64> = HashMap::new();
    let mut applied_clients: HashMap<String, i64> = HashMap::new();
    loop {
        let store = app.store.clone();
        let seen = last_revision;
        let snapshot = tokio::task::spawn_blocking(move || {
            let rev = store.revision()?;
            if Some(rev) == seen {
                return Ok(None);
            }
            let now = unix_now() as i64;
            Ok::<_, crate::store::StoreError>(Some((
                rev,
                store.list_users()?,
                store.revoked_jtis(now)?,
                store.list_clients()?,
                store.list_devices()?,
            )))
        })
        .await;
        match snapshot {
            Ok(Ok(Some((rev, users, jtis, clients, devices)))) => {
                cut_devices(&app, &users, &devices);
                for c in clients {
                    let Some(at) = c.revoked_at else { continue };
                    if applied_clients.get(&c.client_id) == Some(&at) {
                        continue;
                    }
                    tracing::info!(client_id = %c.client_id, "revoking the client's tokens");
                    if c.kind == crate::store::ClientKind::ServiceAccount {
                        app.auth
                            .revoke_subject(&format!("sa-{}", c.client_id), at.max(0) as u64);
                    }
                    app.auth.revoke_client(&c.client_id, at.max(0) as u64);
                    applied_clients.insert(c.client_id, at);
                }
                for u in users {
                    if let Some(at) = u.tokens_revoked_at
                        && applied.get(&u.id.0) != Some(&at)
                    {
                        tracing::info!(user = u.email.as_str(), "revoking the user's tokens");
                        app.auth
                            .revoke_subject(&user_subject(u.id), at.max(0) as u64);
                        applied.insert(u.id.0, at);
                    }
                }
                for j in jtis {
                    app.auth.revoke_jti(&j.jti, j.expires_at.max(0) as u64);
                }
                // Grants, owner policies and catalogs may have changed too
                // (`credentials revoke grant`, another relay process).
                if last_revision.is_some() {
                    let app = app.clone();
                    let _ = tokio::task::spawn_blocking(move || app.refresh_all_policy()).await;
                }
                app.rate().limits.prune();
                last_revision = Some(rev);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reading revocations from the store failed"),
            Err(e) => tracing::warn!(error = %e, "revocation task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Closes the connections of revoked devices and of disabled users' devices,
/// telling the agent why.
fn cut_devices(app: &App, users: &[crate::store::User], devices: &[crate::store::Device]) {
    for (tunnel, agent) in app.registry.all_online() {
        let Some(id) = agent.device.as_deref() else {
            continue;
        };
        let why = match devices.iter().find(|d| d.id == id) {
            None => Some(format!("device {id} was removed; run `mcp-agent login`")),
            Some(d) => match d.revoked_at {
                Some(at) => Some(format!(
                    "device {id} was revoked at {}; run `mcp-agent login`",
                    crate::devices::rfc3339(at)
                )),
                None => users
                    .iter()
                    .find(|u| u.id == d.user_id)
                    .filter(|u| u.disabled)
                    .map(|u| {
                        format!(
                            "the account {} was disabled; ask the relay's admin",
                            u.email
                        )
                    }),
            },
        };
        if let Some(why) = why {
            tracing::info!(tunnel = %tunnel, device = id, "cutting the agent: {why}");
            agent.conn.close(
                mcp_tunnel_proto::ErrorCode::UNAUTHORIZED.0.into(),
                why.as_bytes(),
            );
        }
    }
}
