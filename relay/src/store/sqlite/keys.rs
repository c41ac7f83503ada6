//! JWT signing keys: one active, older ones kept in the JWKS until they retire.

use rusqlite::{Connection, Row, params};

use super::{col, exec, get_json, is_unique_violation, query_all, query_opt, sql};
use crate::store::{
    KeyAlgorithm, NewSigningKey, PrivateKeyDer, PublicSigningKey, SigningKey, StoreError, UnixTime,
};

const TABLE: &str = "signing_keys";

pub(super) fn insert(
    tx: &Connection,
    now: UnixTime,
    key: &NewSigningKey,
) -> Result<(), StoreError> {
    key.validate()?;
    tx.execute(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            key.kid,
            key.algorithm.as_str(),
            key.private_key.0,
            key.public_jwk.to_string(),
            now,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict {
                what: "signing key",
                key: key.kid.clone(),
            }
        } else {
            sql("storing a signing key")(e)
        }
    })?;
    Ok(())
}

/// The newest key not retired at `now`; ties (same second) go to the later insert.
pub(super) fn active(conn: &Connection, now: UnixTime) -> Result<Option<SigningKey>, StoreError> {
    query_opt(
        conn,
        "reading the active signing key",
        "SELECT kid, algorithm, private_key, public_jwk, created_at, retires_at
         FROM signing_keys WHERE retires_at IS NULL OR retires_at > ?1
         ORDER BY created_at DESC, rowid DESC LIMIT 1",
        [now],
        |r| {
            let public = decode_public(r)?;
            Ok(SigningKey {
                kid: public.kid,
                algorithm: public.algorithm,
                private_key: PrivateKeyDer(col(r, "private_key", TABLE)?),
                public_jwk: public.public_jwk,
                created_at: public.created_at,
                retires_at: public.retires_at,
            })
        },
    )
}

pub(super) fn retire(tx: &Connection, kid: &str, at: UnixTime) -> Result<(), StoreError> {
    let n = exec(
        tx,
        "retiring a signing key",
        "UPDATE signing_keys SET retires_at = ?2 WHERE kid = ?1",
        params![kid, at],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "signing key",
            key: kid.to_owned(),
        });
    }
    Ok(())
}

/// Schedules every key not retiring by `at` to retire at `at`.
pub(super) fn retire_all(tx: &Connection, at: UnixTime) -> Result<u64, StoreError> {
    exec(
        tx,
        "retiring signing keys",
        "UPDATE signing_keys SET retires_at = ?1 WHERE retires_at IS NULL OR retires_at > ?1",
        [at],
    )
}

pub(super) fn for_jwks(
    conn: &Connection,
    now: UnixTime,
) -> Result<Vec<PublicSigningKey>, StoreError> {
    query_all(
        conn,
        "listing signing keys",
        "SELECT kid, algorithm, public_jwk, created_at, retires_at
         FROM signing_keys WHERE retires_at IS NULL OR retires_at > ?1
         ORDER BY created_at DESC, rowid DESC",
        [now],
        decode_public,
    )
}

pub(super) fn purge(tx: &Connection, now: UnixTime) -> Result<u64, StoreError> {
    exec(
        tx,
        "purging retired signing keys",
        "DELETE FROM signing_keys WHERE retires_at <= ?1",
        [now],
    )
}

fn decode_public(row: &Row<'_>) -> Result<PublicSigningKey, StoreError> {
    let algorithm: String = col(row, "algorithm", TABLE)?;
    Ok(PublicSigningKey {
        kid: col(row, "kid", TABLE)?,
        algorithm: KeyAlgorithm::parse(&algorithm).ok_or_else(|| StoreError::Corrupt {
            table: TABLE,
            detail: format!("column algorithm: unknown algorithm {algorithm:?}"),
        })?,
        public_jwk: get_json(row, "public_jwk", TABLE)?,
        created_at: col(row, "created_at", TABLE)?,
        retires_at: col(row, "retires_at", TABLE)?,
    })
}
