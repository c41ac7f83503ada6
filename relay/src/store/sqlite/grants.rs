//! Grants (`mcp-agent share`), owner policies and tool catalogs.

use rusqlite::{Connection, Row, params};

use super::{col, exec, get_json, query_all, query_opt};
use crate::store::{Grant, NewGrant, StoreError, TunnelPolicy, UnixTime};

const SELECT: &str = "SELECT id, tunnel, subject, tools_json, read_only, created_by, created_at, \
                      expires_at, revoked_at FROM grants";

/// Shortest id prefix `revoke` accepts (ids are 16 hex characters).
pub const MIN_GRANT_ID_PREFIX: usize = 6;

pub(super) fn insert(tx: &Connection, now: UnixTime, g: &NewGrant) -> Result<Grant, StoreError> {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let tools = match &g.tools {
        Some(t) => Some(serde_json::to_string(t).map_err(|e| StoreError::Invalid {
            field: "tools",
            reason: e.to_string(),
        })?),
        None => None,
    };
    exec(
        tx,
        "saving a grant",
        "INSERT INTO grants (id, tunnel, subject, tools_json, read_only, created_by, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![id, g.tunnel, g.subject, tools, g.read_only, g.created_by, now, g.expires_at],
    )?;
    get(tx, &id)?.ok_or(StoreError::NotFound {
        what: "grant",
        key: id,
    })
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Grant>, StoreError> {
    query_opt(
        conn,
        "reading a grant",
        &format!("{SELECT} WHERE id = ?1"),
        [id],
        decode,
    )
}

pub(super) fn list(conn: &Connection, tunnel: Option<&str>) -> Result<Vec<Grant>, StoreError> {
    match tunnel {
        Some(t) => query_all(
            conn,
            "listing grants",
            &format!("{SELECT} WHERE tunnel = ?1 ORDER BY created_at, id"),
            [t],
            decode,
        ),
        None => query_all(
            conn,
            "listing grants",
            &format!("{SELECT} ORDER BY tunnel, created_at, id"),
            [],
            decode,
        ),
    }
}

/// Revokes the one live grant whose id starts with `prefix`.
pub(super) fn revoke(
    tx: &Connection,
    now: UnixTime,
    prefix: &str,
) -> Result<Option<Grant>, StoreError> {
    if prefix.len() < MIN_GRANT_ID_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid {
            field: "grant id",
            reason: format!("give at least {MIN_GRANT_ID_PREFIX} hex characters of the id"),
        });
    }
    let found = query_all(
        tx,
        "finding a grant",
        &format!("{SELECT} WHERE id LIKE ?1 || '%' AND revoked_at IS NULL"),
        [prefix.to_ascii_lowercase()],
        decode,
    )?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            exec(
                tx,
                "revoking a grant",
                "UPDATE grants SET revoked_at = ?1 WHERE id = ?2",
                params![now, one.id],
            )?;
            get(tx, &one.id)
        }
        _ => Err(StoreError::Invalid {
            field: "grant id",
            reason: format!("\"{prefix}\" matches several grants; give more of the id"),
        }),
    }
}

pub(super) fn set_policy(
    tx: &Connection,
    now: UnixTime,
    tunnel: &str,
    policy: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    match policy {
        Some((name, text)) => exec(
            tx,
            "saving a tunnel policy",
            "INSERT INTO tunnel_policies (tunnel, file_name, text, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tunnel) DO UPDATE SET file_name = ?2, text = ?3, updated_at = ?4
             WHERE file_name IS NOT ?2 OR text IS NOT ?3",
            params![tunnel, name, text, now],
        )?,
        None => exec(
            tx,
            "removing a tunnel policy",
            "DELETE FROM tunnel_policies WHERE tunnel = ?1",
            [tunnel],
        )?,
    };
    Ok(())
}

pub(super) fn policies(
    conn: &Connection,
    tunnel: Option<&str>,
) -> Result<Vec<TunnelPolicy>, StoreError> {
    // Two statements rather than `?1 IS NULL OR tunnel = ?1`, which SQLite
    // plans as a full scan: one tunnel's row is a primary-key lookup.
    let (sql, tunnel) = match tunnel {
        Some(t) => (
            "SELECT tunnel, file_name, text, updated_at FROM tunnel_policies WHERE tunnel = ?1",
            t,
        ),
        None => (
            "SELECT tunnel, file_name, text, updated_at FROM tunnel_policies
             WHERE ?1 = ?1 ORDER BY tunnel",
            "",
        ),
    };
    query_all(conn, "reading tunnel policies", sql, [tunnel], |r| {
        Ok(TunnelPolicy {
            tunnel: col(r, "tunnel", "tunnel_policies")?,
            file_name: col(r, "file_name", "tunnel_policies")?,
            text: col(r, "text", "tunnel_policies")?,
            updated_at: col(r, "updated_at", "tunnel_policies")?,
        })
    })
}

pub(super) fn set_tools(
    tx: &Connection,
    now: UnixTime,
    tunnel: &str,
    tools: &serde_json::Value,
) -> Result<(), StoreError> {
    let text = tools.to_string();
    exec(
        tx,
        "saving a tool catalog",
        "INSERT INTO tool_catalogs (tunnel, tools_json, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (tunnel) DO UPDATE SET tools_json = ?2, updated_at = ?3
         WHERE tools_json IS NOT ?2",
        params![tunnel, text, now],
    )?;
    Ok(())
}

pub(super) fn tools(
    conn: &Connection,
    tunnel: Option<&str>,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    let (sql, tunnel) = match tunnel {
        Some(t) => (
            "SELECT tunnel, tools_json FROM tool_catalogs WHERE tunnel = ?1",
            t,
        ),
        None => (
            "SELECT tunnel, tools_json FROM tool_catalogs WHERE ?1 = ?1 ORDER BY tunnel",
            "",
        ),
    };
    query_all(conn, "reading tool catalogs", sql, [tunnel], |r| {
        Ok((
            col(r, "tunnel", "tool_catalogs")?,
            get_json(r, "tools_json", "tool_catalogs")?,
        ))
    })
}

fn decode(r: &Row<'_>) -> Result<Grant, StoreError> {
    let tools: Option<String> = col(r, "tools_json", "grants")?;
    let tools = match tools {
        Some(t) => {
            Some(
                serde_json::from_str::<Vec<String>>(&t).map_err(|e| StoreError::Corrupt {
                    table: "grants",
                    detail: format!("column tools_json: {e}"),
                })?,
            )
        }
        None => None,
    };
    Ok(Grant {
        id: col(r, "id", "grants")?,
        tunnel: col(r, "tunnel", "grants")?,
        subject: col(r, "subject", "grants")?,
        tools,
        read_only: col(r, "read_only", "grants")?,
        created_by: col(r, "created_by", "grants")?,
        created_at: col(r, "created_at", "grants")?,
        expires_at: col(r, "expires_at", "grants")?,
        revoked_at: col(r, "revoked_at", "grants")?,
    })
}
