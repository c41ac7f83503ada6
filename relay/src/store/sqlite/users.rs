//! Users and their password-setup tokens.

use rusqlite::{Connection, Row, params};

use super::{col, exec, get_json, is_unique_violation, query_all, query_opt, sql};
use crate::store::{
    Email, NewUser, PasswordHash, SETUP_TOKEN_TTL_SECS, Secret, StoreError, TokenHash, UnixTime,
    User, UserId,
};

const TABLE: &str = "users";
const SELECT: &str = "SELECT id, email, display_name, groups_json, password_hash, disabled, \
                      created_at, tokens_revoked_at FROM users";

pub(super) fn add(
    tx: &Connection,
    now: UnixTime,
    user: &NewUser,
) -> Result<(User, Secret), StoreError> {
    user.validate()?;
    let groups = groups_json(&user.groups)?;
    tx.execute(
        "INSERT INTO users (email, display_name, groups_json, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![user.email.as_str(), user.display_name, groups, now],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                what: "user",
                key: user.email.to_string(),
            }
        } else {
            sql("adding a user")(e)
        }
    })?;
    let id = UserId(tx.last_insert_rowid());
    let token = issue_setup(tx, now, id)?;
    Ok((must_get(tx, id)?, token))
}

pub(super) fn sync_external(
    tx: &Connection,
    now: UnixTime,
    user: &NewUser,
) -> Result<User, StoreError> {
    user.validate()?;
    let groups = groups_json(&user.groups)?;
    exec(
        tx,
        "recording a signed-in user",
        "INSERT INTO users (email, display_name, groups_json, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (email) DO UPDATE SET display_name = excluded.display_name,
                                           groups_json = excluded.groups_json
         WHERE display_name IS NOT excluded.display_name OR groups_json IS NOT excluded.groups_json",
        params![user.email.as_str(), user.display_name, groups, now],
    )?;
    get_by_email(tx, &user.email)?.ok_or_else(|| StoreError::NotFound {
        what: "user",
        key: user.email.to_string(),
    })
}

pub(super) fn get(conn: &Connection, id: UserId) -> Result<Option<User>, StoreError> {
    query_opt(
        conn,
        "reading a user",
        &format!("{SELECT} WHERE id = ?1"),
        [id.0],
        decode,
    )
}

pub(super) fn get_by_email(conn: &Connection, email: &Email) -> Result<Option<User>, StoreError> {
    query_opt(
        conn,
        "reading a user",
        &format!("{SELECT} WHERE email = ?1"),
        [email.as_str()],
        decode,
    )
}

pub(super) fn list(conn: &Connection) -> Result<Vec<User>, StoreError> {
    query_all(
        conn,
        "listing users",
        &format!("{SELECT} ORDER BY email"),
        [],
        decode,
    )
}

pub(super) fn set_password(
    tx: &Connection,
    id: UserId,
    hash: &PasswordHash,
) -> Result<(), StoreError> {
    let n = exec(
        tx,
        "setting a password",
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id.0, hash.as_str()],
    )?;
    found(n, id)
}

pub(super) fn set_disabled(tx: &Connection, id: UserId, disabled: bool) -> Result<(), StoreError> {
    // Only touch the row when the flag changes, so an idempotent call does not
    // bump the revision.
    exec(
        tx,
        "changing a user's disabled flag",
        "UPDATE users SET disabled = ?2 WHERE id = ?1 AND disabled != ?2",
        params![id.0, disabled],
    )?;
    must_get(tx, id).map(drop)
}

pub(super) fn issue_setup(
    tx: &Connection,
    now: UnixTime,
    id: UserId,
) -> Result<Secret, StoreError> {
    must_get(tx, id)?;
    let token = Secret::generate();
    exec(
        tx,
        "issuing a password-setup token",
        "DELETE FROM setup_tokens WHERE user_id = ?1",
        [id.0],
    )?;
    exec(
        tx,
        "issuing a password-setup token",
        "INSERT INTO setup_tokens (hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
        params![
            token.hash().as_bytes(),
            id.0,
            now.saturating_add(SETUP_TOKEN_TTL_SECS)
        ],
    )?;
    Ok(token)
}

pub(super) fn setup_token_user(
    conn: &Connection,
    now: UnixTime,
    token: &TokenHash,
) -> Result<Option<UserId>, StoreError> {
    query_opt(
        conn,
        "checking a password-setup token",
        "SELECT s.user_id FROM setup_tokens s JOIN users u ON u.id = s.user_id
         WHERE s.hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
        params![token.as_bytes(), now],
        |r| col(r, "user_id", "setup_tokens").map(UserId),
    )
}

pub(super) fn consume_setup(
    tx: &Connection,
    now: UnixTime,
    token: &TokenHash,
) -> Result<Option<UserId>, StoreError> {
    let user = setup_token_user(tx, now, token)?;
    // Delete it whatever the outcome: an expired or refused token is dead too.
    exec(
        tx,
        "using a password-setup token",
        "DELETE FROM setup_tokens WHERE hash = ?1",
        [token.as_bytes()],
    )?;
    Ok(user)
}

pub(super) fn purge_setup_tokens(tx: &Connection, now: UnixTime) -> Result<u64, StoreError> {
    exec(
        tx,
        "purging setup tokens",
        "DELETE FROM setup_tokens WHERE expires_at <= ?1",
        [now],
    )
}

/// The user, or [`StoreError::NotFound`].
pub(super) fn must_get(conn: &Connection, id: UserId) -> Result<User, StoreError> {
    get(conn, id)?.ok_or_else(|| StoreError::NotFound {
        what: "user",
        key: format!("#{id}"),
    })
}

fn found(changed: u64, id: UserId) -> Result<(), StoreError> {
    if changed == 0 {
        return Err(StoreError::NotFound {
            what: "user",
            key: format!("#{id}"),
        });
    }
    Ok(())
}

fn groups_json(groups: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(groups).map_err(|e| StoreError::Invalid {
        field: "groups",
        reason: e.to_string(),
    })
}

fn decode(row: &Row<'_>) -> Result<User, StoreError> {
    let email: String = col(row, "email", TABLE)?;
    let password_hash: Option<String> = col(row, "password_hash", TABLE)?;
    let corrupt = |detail: String| StoreError::Corrupt {
        table: TABLE,
        detail,
    };
    Ok(User {
        id: UserId(col(row, "id", TABLE)?),
        email: Email::parse(&email)
            .ok()
            .filter(|e| e.as_str() == email)
            .ok_or_else(|| {
                corrupt(format!(
                    "column email: {email:?} is not a normalized address"
                ))
            })?,
        display_name: col(row, "display_name", TABLE)?,
        groups: get_json(row, "groups_json", TABLE)?,
        password_hash: password_hash
            .map(|p| PasswordHash::parse(&p))
            .transpose()
            .map_err(|e| corrupt(format!("column password_hash: {e}")))?,
        disabled: col(row, "disabled", TABLE)?,
        created_at: col(row, "created_at", TABLE)?,
        tokens_revoked_at: col(row, "tokens_revoked_at", TABLE)?,
    })
}
