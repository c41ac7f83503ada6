//! Agent tokens: the interim agent credential (until device certificates).
//!
//! A token reads `mcpat_<id>_<secret>`. The relay stores only the id and the
//! SHA-256 of the whole token; it finds the entry by id and compares hashes in
//! constant time. The id is the credential's identity: the tunnel names it
//! claims belong to it.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state_dir::{StateDir, write_private};

const FILE: &str = "agent-tokens.json";

/// One stored token (its hash, never its value).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Public id, part of the token.
    pub id: String,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Free-form note given at creation.
    #[serde(default)]
    pub label: String,
}

/// The agent-token store in a state dir.
#[derive(Debug, Clone)]
pub struct AgentTokens {
    path: PathBuf,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `mcpat_<id>_<secret>`.
    #[error("the agent token is malformed (expected mcpat_<id>_<secret>)")]
    Malformed,
    /// No token with that id, or the secret does not match.
    #[error(
        "the agent token is unknown or revoked; create one with `mcp-relay agent-tokens create`"
    )]
    Unknown,
    /// The store could not be read.
    #[error("the relay could not read its token store")]
    Store,
}

impl AgentTokens {
    /// The store inside `state`.
    pub fn new(state: &StateDir) -> Self {
        Self {
            path: state.path(FILE),
        }
    }

    /// Every stored token record.
    pub fn list(&self) -> anyhow::Result<Vec<TokenRecord>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Creates a token; returns its record and the one-time plain value.
    pub fn create(&self, label: &str) -> anyhow::Result<(TokenRecord, String)> {
        let mut rng = rand::rng();
        let id: String = (0..10)
            .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.random_range(0..32)]))
            .collect();
        let secret: [u8; 32] = rng.random();
        let token = format!("mcpat_{id}_{}", hex::encode(secret));
        let record = TokenRecord {
            id,
            sha256: hex::encode(Sha256::digest(token.as_bytes())),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            label: label.to_owned(),
        };
        let mut all = self.list()?;
        all.push(record.clone());
        self.save(&all)?;
        Ok((record, token))
    }

    /// Removes a token by id; `false` if there was none.
    pub fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        let mut all = self.list()?;
        let before = all.len();
        all.retain(|r| r.id != id);
        if all.len() == before {
            return Ok(false);
        }
        self.save(&all)?;
        Ok(true)
    }

    /// Checks a presented token; returns its id.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        let id = parse_id(token).ok_or(TokenError::Malformed)?;
        let all = self.list().map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "agent token store unreadable");
            TokenError::Store
        })?;
        let presented = Sha256::digest(token.as_bytes());
        let record = all.iter().find(|r| r.id == id).ok_or(TokenError::Unknown)?;
        let stored = hex::decode(&record.sha256).map_err(|_| TokenError::Store)?;
        if bool::from(presented.as_slice().ct_eq(&stored)) {
            Ok(record.id.clone())
        } else {
            Err(TokenError::Unknown)
        }
    }

    /// Whether a token with this id still exists (is not revoked).
    pub fn verify_id_exists(&self, id: &str) -> bool {
        // An unreadable store counts as "exists": never release a claim on a read error.
        self.list()
            .map(|all| all.iter().any(|r| r.id == id))
            .unwrap_or(true)
    }

    fn save(&self, all: &[TokenRecord]) -> anyhow::Result<()> {
        write_private(&self.path, &serde_json::to_vec_pretty(all)?)
    }
}

fn parse_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("mcpat_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 10 && secret.len() == 64).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentTokens::new(&StateDir::open(dir.path()).unwrap());
        let (rec, token) = store.create("laptop").unwrap();
        assert_eq!(store.verify(&token).unwrap(), rec.id);
        let raw = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!raw.contains(&token), "only the hash is stored");

        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(store.verify(&forged), Err(TokenError::Unknown));
        assert_eq!(store.verify("nope"), Err(TokenError::Malformed));

        assert!(store.revoke(&rec.id).unwrap());
        assert_eq!(store.verify(&token), Err(TokenError::Unknown));
        assert!(!store.revoke(&rec.id).unwrap());
    }
}
