//! Agent devices and their one-time enrollment tokens.

use rusqlite::{Connection, Row, params};

use super::{col, exec, get_hash, query_all, query_opt};
use crate::store::{
    Device, ENROLL_TOKEN_ID_LEN, EnrollError, EnrollToken, MIN_ENROLL_TOKEN_ID_LEN, NewDevice,
    Secret, StoreError, TokenHash, UnixTime, UserId,
};

const TABLE: &str = "devices";
const SELECT: &str = "SELECT id, user_id, label, key_sha256, created_at, cert_expires_at, \
                      last_seen_at, revoked_at FROM devices";

/// Longest device label.
pub const MAX_LABEL_LEN: usize = 128;

pub(super) fn issue_enroll(
    tx: &Connection,
    now: UnixTime,
    user: UserId,
    ttl_secs: i64,
) -> Result<Secret, StoreError> {
    if ttl_secs <= 0 {
        return Err(StoreError::Invalid {
            field: "ttl",
            reason: "must be positive".to_owned(),
        });
    }
    let token = Secret::generate();
    let n = exec(
        tx,
        "issuing an enrollment token",
        "INSERT INTO enroll_tokens (hash, user_id, created_at, expires_at)
         SELECT ?1, id, ?2, ?3 FROM users WHERE id = ?4",
        params![
            token.hash().as_bytes(),
            now,
            now.saturating_add(ttl_secs),
            user.0
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "user",
            key: user.0.to_string(),
        });
    }
    Ok(token)
}

pub(super) fn take_enroll(
    tx: &Connection,
    now: UnixTime,
    token: &TokenHash,
) -> Result<Result<UserId, EnrollError>, StoreError> {
    let row = query_opt(
        tx,
        "reading an enrollment token",
        "SELECT t.user_id, t.expires_at, t.used_at, u.disabled FROM enroll_tokens t
         JOIN users u ON u.id = t.user_id WHERE t.hash = ?1",
        [token.as_bytes()],
        |r| {
            Ok((
                col::<i64>(r, "user_id", "enroll_tokens")?,
                col::<i64>(r, "expires_at", "enroll_tokens")?,
                col::<Option<i64>>(r, "used_at", "enroll_tokens")?,
                col::<bool>(r, "disabled", "users")?,
            ))
        },
    )?;
    let Some((user, expires_at, used_at, disabled)) = row else {
        return Ok(Err(EnrollError::Unknown));
    };
    if let Some(at) = used_at {
        return Ok(Err(EnrollError::Used(at)));
    }
    if expires_at <= now {
        return Ok(Err(EnrollError::Expired(expires_at)));
    }
    if disabled {
        return Ok(Err(EnrollError::Disabled));
    }
    exec(
        tx,
        "using an enrollment token",
        "UPDATE enroll_tokens SET used_at = ?1 WHERE hash = ?2",
        params![now, token.as_bytes()],
    )?;
    Ok(Ok(UserId(user)))
}

pub(super) fn list_enroll(conn: &Connection) -> Result<Vec<EnrollToken>, StoreError> {
    const TABLE: &str = "enroll_tokens";
    query_all(
        conn,
        "listing enrollment tokens",
        "SELECT hash, user_id, created_at, expires_at, used_at FROM enroll_tokens
         ORDER BY created_at DESC, hash",
        [],
        |r| {
            Ok(EnrollToken {
                id: enroll_id(&get_hash(r, "hash", TABLE)?),
                user_id: UserId(col(r, "user_id", TABLE)?),
                created_at: col(r, "created_at", TABLE)?,
                expires_at: col(r, "expires_at", TABLE)?,
                used_at: col(r, "used_at", TABLE)?,
            })
        },
    )
}

pub(super) fn revoke_enroll(
    tx: &Connection,
    now: UnixTime,
    id_prefix: &str,
) -> Result<bool, StoreError> {
    let prefix = id_prefix.trim().to_ascii_lowercase();
    if prefix.len() < MIN_ENROLL_TOKEN_ID_LEN
        || prefix.len() > 64
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(StoreError::Invalid {
            field: "enrollment token id",
            reason: format!(
                "expected {MIN_ENROLL_TOKEN_ID_LEN} to 64 hex digits, as `mcp-relay credentials list --kind enroll-token` shows"
            ),
        });
    }
    // The table holds a handful of short-lived rows: matching on the hex of
    // every hash is cheaper than an index nobody else needs.
    let matches = query_all(
        tx,
        "revoking an enrollment token",
        "SELECT hash, expires_at, used_at FROM enroll_tokens
         WHERE substr(lower(hex(hash)), 1, length(?1)) = ?1",
        [&prefix],
        |r| {
            Ok((
                get_hash(r, "hash", "enroll_tokens")?,
                col::<UnixTime>(r, "expires_at", "enroll_tokens")?,
                col::<Option<UnixTime>>(r, "used_at", "enroll_tokens")?,
            ))
        },
    )?;
    let (hash, expires_at, used_at) = match matches.as_slice() {
        [] => {
            return Err(StoreError::NotFound {
                what: "enrollment token",
                key: prefix,
            });
        }
        [one] => one,
        several => {
            return Err(StoreError::Invalid {
                field: "enrollment token id",
                reason: format!(
                    "{prefix} matches {} tokens; give more hex digits",
                    several.len()
                ),
            });
        }
    };
    if used_at.is_some() || *expires_at <= now {
        return Ok(false);
    }
    exec(
        tx,
        "revoking an enrollment token",
        "UPDATE enroll_tokens SET expires_at = ?1 WHERE hash = ?2",
        params![now, hash.as_bytes()],
    )?;
    Ok(true)
}

/// The listed id of a token: the first hex digits of its hash.
fn enroll_id(hash: &TokenHash) -> String {
    let mut id = hex::encode(hash.as_bytes());
    id.truncate(ENROLL_TOKEN_ID_LEN);
    id
}

pub(super) fn insert(tx: &Connection, now: UnixTime, d: &NewDevice) -> Result<Device, StoreError> {
    if d.label.len() > MAX_LABEL_LEN || d.label.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field: "label",
            reason: format!("at most {MAX_LABEL_LEN} bytes, no control characters"),
        });
    }
    exec(
        tx,
        "recording a device",
        "INSERT INTO devices (id, user_id, label, key_sha256, created_at, cert_expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            d.id,
            d.user_id.0,
            d.label,
            d.key_sha256,
            now,
            d.cert_expires_at
        ],
    )?;
    get(tx, &d.id)?.ok_or_else(|| StoreError::NotFound {
        what: "device",
        key: d.id.clone(),
    })
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<Device>, StoreError> {
    query_opt(
        conn,
        "reading a device",
        &format!("{SELECT} WHERE id = ?1"),
        [id],
        decode,
    )
}

pub(super) fn list(conn: &Connection) -> Result<Vec<Device>, StoreError> {
    query_all(
        conn,
        "listing devices",
        &format!("{SELECT} ORDER BY created_at DESC, id"),
        [],
        decode,
    )
}

pub(super) fn revoke(tx: &Connection, now: UnixTime, id: &str) -> Result<(), StoreError> {
    let n = exec(
        tx,
        "revoking a device",
        "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
        params![now, id],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "device",
            key: id.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn renew(tx: &Connection, id: &str, expires: UnixTime) -> Result<(), StoreError> {
    exec(
        tx,
        "renewing a device certificate",
        "UPDATE devices SET cert_expires_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![expires, id],
    )
    .map(drop)
}

pub(super) fn touch(conn: &Connection, now: UnixTime, id: &str) -> Result<(), StoreError> {
    exec(
        conn,
        "recording a device connection",
        "UPDATE devices SET last_seen_at = ?1 WHERE id = ?2",
        params![now, id],
    )
    .map(drop)
}

fn decode(row: &Row<'_>) -> Result<Device, StoreError> {
    Ok(Device {
        id: col(row, "id", TABLE)?,
        user_id: UserId(col(row, "user_id", TABLE)?),
        label: col(row, "label", TABLE)?,
        key_sha256: col(row, "key_sha256", TABLE)?,
        created_at: col(row, "created_at", TABLE)?,
        cert_expires_at: col(row, "cert_expires_at", TABLE)?,
        last_seen_at: col(row, "last_seen_at", TABLE)?,
        revoked_at: col(row, "revoked_at", TABLE)?,
    })
}
