//! Authorization codes, refresh-token families and revoked access tokens.

use rusqlite::{Connection, Row, params};

use super::{
    col, exec, get_family, is_foreign_key_violation, is_unique_violation, query_all, query_opt,
    sql, users,
};
use crate::store::model::check_jti;
use crate::store::{
    CodeError, CodeRecord, FamilyId, NewCode, NewRefresh, RefreshError, RefreshFamily,
    RefreshRecord, RevokedJti, StoreError, TokenHash, UnixTime, UserId,
};

pub(super) fn insert_code(
    tx: &Connection,
    now: UnixTime,
    c: &NewCode,
) -> Result<FamilyId, StoreError> {
    c.validate()?;
    let family = FamilyId::generate();
    tx.execute(
        "INSERT INTO auth_codes (hash, family_id, client_id, user_id, redirect_uri,
                                 code_challenge, resource, scope, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            c.hash.as_bytes(),
            family.as_str(),
            c.client_id,
            c.user_id.0,
            c.redirect_uri,
            c.code_challenge,
            c.resource,
            c.scope,
            now,
            c.expires_at,
        ],
    )
    .map_err(|e| insert_error(e, "authorization code", &c.client_id, c.user_id))?;
    Ok(family)
}

/// The outer error aborts the transaction; the inner outcome is committed
/// (a detected reuse must persist the revocation it caused).
pub(super) fn take_code(
    tx: &Connection,
    now: UnixTime,
    code: &TokenHash,
) -> Result<Result<CodeRecord, CodeError>, StoreError> {
    const TABLE: &str = "auth_codes";
    let found = query_opt(
        tx,
        "exchanging an authorization code",
        "SELECT family_id, client_id, user_id, redirect_uri, code_challenge, resource, scope,
                created_at, expires_at, used_at
         FROM auth_codes WHERE hash = ?1",
        [code.as_bytes()],
        |r| {
            let used_at: Option<UnixTime> = col(r, "used_at", TABLE)?;
            let record = CodeRecord {
                family: get_family(r, TABLE)?,
                client_id: col(r, "client_id", TABLE)?,
                user_id: UserId(col(r, "user_id", TABLE)?),
                redirect_uri: col(r, "redirect_uri", TABLE)?,
                code_challenge: col(r, "code_challenge", TABLE)?,
                resource: col(r, "resource", TABLE)?,
                scope: col(r, "scope", TABLE)?,
                created_at: col(r, "created_at", TABLE)?,
                expires_at: col(r, "expires_at", TABLE)?,
            };
            Ok((record, used_at))
        },
    )?;
    let Some((record, used_at)) = found else {
        return Ok(Err(CodeError::Unknown));
    };
    // Reuse is checked before expiry: a replayed code is an attack even late.
    if used_at.is_some() {
        let revoked = revoke_family(tx, now, &record.family)?;
        return Ok(Err(CodeError::Reused {
            family: record.family,
            revoked,
        }));
    }
    if record.expires_at <= now {
        return Ok(Err(CodeError::Expired));
    }
    exec(
        tx,
        "exchanging an authorization code",
        "UPDATE auth_codes SET used_at = ?2 WHERE hash = ?1",
        params![code.as_bytes(), now],
    )?;
    Ok(Ok(record))
}

pub(super) fn insert_refresh(
    tx: &Connection,
    now: UnixTime,
    r: &NewRefresh,
) -> Result<(), StoreError> {
    r.validate()?;
    tx.execute(
        "INSERT INTO refresh_tokens (hash, family_id, client_id, user_id, resource, scope,
                                     created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.hash.as_bytes(),
            r.family.as_str(),
            r.client_id,
            r.user_id.0,
            r.resource,
            r.scope,
            now,
            r.expires_at,
        ],
    )
    .map_err(|e| insert_error(e, "refresh token", &r.client_id, r.user_id))?;
    Ok(())
}

/// As [`take_code`]: the inner outcome is committed.
pub(super) fn rotate_refresh(
    tx: &Connection,
    now: UnixTime,
    old: &TokenHash,
    client_id: &str,
    new: &TokenHash,
    new_expires_at: UnixTime,
) -> Result<Result<RefreshRecord, RefreshError>, StoreError> {
    const TABLE: &str = "refresh_tokens";
    let found = query_opt(
        tx,
        "rotating a refresh token",
        "SELECT r.family_id, r.client_id, r.user_id, r.resource, r.scope, r.created_at,
                r.expires_at, r.used_at, r.revoked_at,
                u.disabled AS user_disabled,
                c.revoked_at AS client_revoked_at, c.expires_at AS client_expires_at
         FROM refresh_tokens r
         JOIN users u ON u.id = r.user_id
         JOIN clients c ON c.client_id = r.client_id
         WHERE r.hash = ?1",
        [old.as_bytes()],
        |r| {
            let record = RefreshRecord {
                family: get_family(r, TABLE)?,
                client_id: col(r, "client_id", TABLE)?,
                user_id: UserId(col(r, "user_id", TABLE)?),
                resource: col(r, "resource", TABLE)?,
                scope: col(r, "scope", TABLE)?,
                created_at: col(r, "created_at", TABLE)?,
                expires_at: col(r, "expires_at", TABLE)?,
            };
            let used_at: Option<UnixTime> = col(r, "used_at", TABLE)?;
            let revoked_at: Option<UnixTime> = col(r, "revoked_at", TABLE)?;
            let user_disabled: bool = col(r, "user_disabled", "users")?;
            let client_revoked: Option<UnixTime> = col(r, "client_revoked_at", "clients")?;
            let client_expires: Option<UnixTime> = col(r, "client_expires_at", "clients")?;
            let principal_gone = user_disabled
                || client_revoked.is_some()
                || client_expires.is_some_and(|e| e <= now);
            Ok((record, used_at, revoked_at.is_some() || principal_gone))
        },
    )?;
    let Some((old_record, used_at, revoked)) = found else {
        return Ok(Err(RefreshError::Unknown));
    };
    // Another client's token is refused without consuming it, so a confused
    // or malicious client cannot burn someone else's session.
    if old_record.client_id != client_id {
        return Ok(Err(RefreshError::WrongClient));
    }
    if revoked {
        return Ok(Err(RefreshError::Revoked));
    }
    if used_at.is_some() {
        let revoked = revoke_family(tx, now, &old_record.family)?;
        return Ok(Err(RefreshError::Reused {
            family: old_record.family,
            revoked,
        }));
    }
    if old_record.expires_at <= now {
        return Ok(Err(RefreshError::Expired));
    }
    exec(
        tx,
        "rotating a refresh token",
        "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1",
        params![old.as_bytes(), now],
    )?;
    let next = NewRefresh {
        hash: *new,
        family: old_record.family,
        client_id: old_record.client_id,
        user_id: old_record.user_id,
        resource: old_record.resource,
        scope: old_record.scope,
        expires_at: new_expires_at,
    };
    insert_refresh(tx, now, &next)?;
    Ok(Ok(RefreshRecord {
        family: next.family,
        client_id: next.client_id,
        user_id: next.user_id,
        resource: next.resource,
        scope: next.scope,
        created_at: now,
        expires_at: next.expires_at,
    }))
}

pub(super) fn revoke_refresh_token(
    tx: &Connection,
    now: UnixTime,
    token: &TokenHash,
    client_id: &str,
) -> Result<bool, StoreError> {
    let family = query_opt(
        tx,
        "revoking a refresh token",
        "SELECT family_id FROM refresh_tokens WHERE hash = ?1 AND client_id = ?2",
        params![token.as_bytes(), client_id],
        |r| get_family(r, "refresh_tokens"),
    )?;
    match family {
        Some(family) => revoke_family(tx, now, &family).map(|_| true),
        None => Ok(false),
    }
}

pub(super) fn revoke_family(
    tx: &Connection,
    now: UnixTime,
    family: &FamilyId,
) -> Result<u64, StoreError> {
    exec(
        tx,
        "revoking a token family",
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
        params![family.as_str(), now],
    )
}

/// One row per family. "Live" tokens are the ones that can still be
/// exchanged (neither used nor revoked); a family is revoked once every token
/// is, which is how every revocation path leaves it.
pub(super) fn list_families(conn: &Connection) -> Result<Vec<RefreshFamily>, StoreError> {
    const TABLE: &str = "refresh_tokens";
    query_all(
        conn,
        "listing refresh-token families",
        "SELECT family_id, client_id, user_id,
                min(created_at) AS created_at,
                coalesce(max(CASE WHEN used_at IS NULL AND revoked_at IS NULL
                                  THEN expires_at END),
                         max(expires_at)) AS expires_at,
                max(max(created_at, coalesce(used_at, created_at))) AS last_used_at,
                CASE WHEN count(revoked_at) = count(*) THEN max(revoked_at) END AS revoked_at
         FROM refresh_tokens
         GROUP BY family_id, client_id, user_id
         ORDER BY created_at, family_id",
        [],
        |r| {
            Ok(RefreshFamily {
                family: get_family(r, TABLE)?,
                client_id: col(r, "client_id", TABLE)?,
                user_id: UserId(col(r, "user_id", TABLE)?),
                created_at: col(r, "created_at", TABLE)?,
                expires_at: col(r, "expires_at", TABLE)?,
                last_used_at: col(r, "last_used_at", TABLE)?,
                revoked_at: col(r, "revoked_at", TABLE)?,
            })
        },
    )
}

pub(super) fn revoke_user(tx: &Connection, now: UnixTime, id: UserId) -> Result<u64, StoreError> {
    users::must_get(tx, id)?;
    let doing = "revoking a user's tokens";
    exec(
        tx,
        doing,
        "UPDATE users SET tokens_revoked_at = ?2 WHERE id = ?1",
        params![id.0, now],
    )?;
    let refresh = exec(
        tx,
        doing,
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![id.0, now],
    )?;
    let codes = exec(
        tx,
        doing,
        "DELETE FROM auth_codes WHERE user_id = ?1 AND used_at IS NULL",
        [id.0],
    )?;
    Ok(refresh + codes)
}

pub(super) fn revoke_client(
    tx: &Connection,
    now: UnixTime,
    client_id: &str,
) -> Result<u64, StoreError> {
    let doing = "revoking a client's tokens";
    let refresh = exec(
        tx,
        doing,
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
        params![client_id, now],
    )?;
    let codes = exec(
        tx,
        doing,
        "DELETE FROM auth_codes WHERE client_id = ?1 AND used_at IS NULL",
        [client_id],
    )?;
    Ok(refresh + codes)
}

pub(super) fn revoke_jti(
    tx: &Connection,
    jti: &str,
    expires_at: UnixTime,
) -> Result<(), StoreError> {
    check_jti(jti)?;
    exec(
        tx,
        "revoking an access token",
        "INSERT INTO revoked_jtis (jti, expires_at) VALUES (?1, ?2)
         ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at
         WHERE excluded.expires_at > revoked_jtis.expires_at",
        params![jti, expires_at],
    )
    .map(drop)
}

pub(super) fn is_jti_revoked(conn: &Connection, jti: &str) -> Result<bool, StoreError> {
    query_opt(
        conn,
        "checking an access token",
        "SELECT 1 AS hit FROM revoked_jtis WHERE jti = ?1",
        [jti],
        |r| col::<i64>(r, "hit", "revoked_jtis"),
    )
    .map(|hit| hit.is_some())
}

pub(super) fn revoked_jtis(
    conn: &Connection,
    now: UnixTime,
) -> Result<Vec<RevokedJti>, StoreError> {
    query_all(
        conn,
        "listing revoked access tokens",
        "SELECT jti, expires_at FROM revoked_jtis WHERE expires_at > ?1 ORDER BY expires_at",
        [now],
        decode_jti,
    )
}

/// Deletes expired codes, refresh tokens and revoked-jti records.
pub(super) fn purge(tx: &Connection, now: UnixTime) -> Result<(u64, u64, u64), StoreError> {
    let doing = "purging expired tokens";
    let codes = exec(
        tx,
        doing,
        "DELETE FROM auth_codes WHERE expires_at <= ?1",
        [now],
    )?;
    let refresh = exec(
        tx,
        doing,
        "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
        [now],
    )?;
    let jtis = exec(
        tx,
        doing,
        "DELETE FROM revoked_jtis WHERE expires_at <= ?1",
        [now],
    )?;
    Ok((codes, refresh, jtis))
}

fn decode_jti(row: &Row<'_>) -> Result<RevokedJti, StoreError> {
    Ok(RevokedJti {
        jti: col(row, "jti", "revoked_jtis")?,
        expires_at: col(row, "expires_at", "revoked_jtis")?,
    })
}

fn insert_error(
    e: rusqlite::Error,
    what: &'static str,
    client_id: &str,
    user: UserId,
) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict {
            what,
            key: "with this hash".to_owned(),
        }
    } else if is_foreign_key_violation(&e) {
        StoreError::NotFound {
            what: "client or user",
            key: format!("{client_id} / #{user}"),
        }
    } else {
        sql("storing a token")(e)
    }
}
