//! OAuth clients: dynamic registrations, metadata-document clients, service accounts.

use std::net::IpAddr;

use rusqlite::{Connection, Row, params};

use super::{
    col, exec, get_hash, get_json, is_foreign_key_violation, is_unique_violation, query_all,
    query_opt, sql,
};
use crate::store::model::check_registration;
use crate::store::{
    Client, ClientKind, ClientOwner, NewClient, StoreError, TokenHash, UnixTime, UserId,
};

const TABLE: &str = "clients";
const SELECT: &str = "SELECT client_id, kind, name, redirect_uris_json, secret_hash, owner, \
                      owner_user_id, metadata_json, registered_from, created_at, last_used_at, \
                      expires_at, revoked_at FROM clients";

pub(super) fn insert(tx: &Connection, now: UnixTime, c: &NewClient) -> Result<Client, StoreError> {
    c.validate()?;
    let metadata = check_registration(&c.name, &c.redirect_uris, &c.metadata)?;
    let uris = uris_json(&c.redirect_uris)?;
    let (owner, owner_user_id) = match c.owner {
        ClientOwner::Admin => ("admin", None),
        ClientOwner::User(id) => ("user", Some(id.0)),
        ClientOwner::SelfRegistered => ("self-registered", None),
    };
    tx.execute(
        "INSERT INTO clients (client_id, kind, name, redirect_uris_json, secret_hash, owner,
                              owner_user_id, metadata_json, registered_from, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            c.client_id,
            c.kind.as_str(),
            c.name,
            uris,
            c.secret_hash.as_ref().map(|h| h.as_bytes().as_slice()),
            owner,
            owner_user_id,
            metadata,
            c.registered_from.map(|ip| ip.to_canonical().to_string()),
            now,
            c.expires_at,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                what: "client",
                key: c.client_id.clone(),
            }
        } else if is_foreign_key_violation(&e) {
            StoreError::NotFound {
                what: "owner user",
                key: owner_user_id.map(|id| format!("#{id}")).unwrap_or_default(),
            }
        } else {
            sql("registering a client")(e)
        }
    })?;
    must_get(tx, &c.client_id)
}

pub(super) fn update_registration(
    tx: &Connection,
    client_id: &str,
    name: &str,
    redirect_uris: &[String],
    metadata: &serde_json::Value,
) -> Result<Client, StoreError> {
    let metadata = check_registration(name, redirect_uris, metadata)?;
    exec(
        tx,
        "updating a client",
        "UPDATE clients SET name = ?2, redirect_uris_json = ?3, metadata_json = ?4
         WHERE client_id = ?1",
        params![client_id, name, uris_json(redirect_uris)?, metadata],
    )?;
    must_get(tx, client_id)
}

pub(super) fn get(conn: &Connection, client_id: &str) -> Result<Option<Client>, StoreError> {
    query_opt(
        conn,
        "reading a client",
        &format!("{SELECT} WHERE client_id = ?1"),
        [client_id],
        decode,
    )
}

pub(super) fn list(conn: &Connection) -> Result<Vec<Client>, StoreError> {
    query_all(
        conn,
        "listing clients",
        &format!("{SELECT} ORDER BY created_at, rowid"),
        [],
        decode,
    )
}

pub(super) fn revoke(tx: &Connection, now: UnixTime, client_id: &str) -> Result<(), StoreError> {
    exec(
        tx,
        "revoking a client",
        "UPDATE clients SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
        params![client_id, now],
    )?;
    must_get(tx, client_id).map(drop)
}

pub(super) fn touch(tx: &Connection, now: UnixTime, client_id: &str) -> Result<(), StoreError> {
    let n = exec(
        tx,
        "recording client use",
        "UPDATE clients SET last_used_at = ?2 WHERE client_id = ?1",
        params![client_id, now],
    )?;
    if n == 0 {
        return Err(not_found(client_id));
    }
    Ok(())
}

pub(super) fn count_registrations_since(
    conn: &Connection,
    source: IpAddr,
    since: UnixTime,
) -> Result<u64, StoreError> {
    let n: i64 = query_opt(
        conn,
        "counting registrations",
        "SELECT count(*) AS n FROM clients WHERE registered_from = ?1 AND created_at >= ?2",
        params![source.to_canonical().to_string(), since],
        |r| col(r, "n", TABLE),
    )?
    .unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) fn verify_secret(
    conn: &Connection,
    now: UnixTime,
    client_id: &str,
    secret: &str,
) -> Result<bool, StoreError> {
    // Hash first so an unknown client costs about what a wrong secret does.
    let presented = TokenHash::of(secret);
    let found = query_opt(
        conn,
        "verifying a client secret",
        "SELECT secret_hash, revoked_at, expires_at FROM clients
         WHERE client_id = ?1 AND secret_hash IS NOT NULL",
        [client_id],
        |r| {
            let stored = get_hash(r, "secret_hash", TABLE)?;
            let revoked_at: Option<UnixTime> = col(r, "revoked_at", TABLE)?;
            let expires_at: Option<UnixTime> = col(r, "expires_at", TABLE)?;
            Ok((
                stored,
                revoked_at.is_none() && expires_at.is_none_or(|e| now < e),
            ))
        },
    )?;
    Ok(found.is_some_and(|(stored, active)| stored.ct_eq(&presented) && active))
}

/// The client, or [`StoreError::NotFound`].
pub(super) fn must_get(conn: &Connection, client_id: &str) -> Result<Client, StoreError> {
    get(conn, client_id)?.ok_or_else(|| not_found(client_id))
}

fn not_found(client_id: &str) -> StoreError {
    StoreError::NotFound {
        what: "client",
        key: client_id.to_owned(),
    }
}

fn uris_json(uris: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(uris).map_err(|e| StoreError::Invalid {
        field: "redirect_uris",
        reason: e.to_string(),
    })
}

fn decode(row: &Row<'_>) -> Result<Client, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: TABLE,
        detail,
    };
    let kind: String = col(row, "kind", TABLE)?;
    let owner: String = col(row, "owner", TABLE)?;
    let owner_user_id: Option<i64> = col(row, "owner_user_id", TABLE)?;
    let secret_hash: Option<Vec<u8>> = col(row, "secret_hash", TABLE)?;
    let registered_from: Option<String> = col(row, "registered_from", TABLE)?;
    Ok(Client {
        client_id: col(row, "client_id", TABLE)?,
        kind: ClientKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("column kind: unknown client kind {kind:?}")))?,
        name: col(row, "name", TABLE)?,
        redirect_uris: get_json(row, "redirect_uris_json", TABLE)?,
        has_secret: secret_hash.is_some(),
        owner: match (owner.as_str(), owner_user_id) {
            ("admin", None) => ClientOwner::Admin,
            ("user", Some(id)) => ClientOwner::User(UserId(id)),
            ("self-registered", None) => ClientOwner::SelfRegistered,
            _ => {
                return Err(corrupt(format!(
                    "columns owner/owner_user_id: {owner:?}/{owner_user_id:?} is not an owner"
                )));
            }
        },
        metadata: get_json(row, "metadata_json", TABLE)?,
        registered_from: registered_from
            .map(|s| {
                s.parse().map_err(|_| {
                    corrupt(format!("column registered_from: {s:?} is not an address"))
                })
            })
            .transpose()?,
        created_at: col(row, "created_at", TABLE)?,
        last_used_at: col(row, "last_used_at", TABLE)?,
        expires_at: col(row, "expires_at", TABLE)?,
        revoked_at: col(row, "revoked_at", TABLE)?,
    })
}
