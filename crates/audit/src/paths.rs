//! Where one audit log keeps its four files.

use std::path::{Path, PathBuf};

/// The files of one audit log. The keys are deliberately outside the
/// database: whoever can rewrite the database must not thereby hold the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPaths {
    /// The SQLite database (WAL mode: `-wal` and `-shm` files sit beside it).
    pub db: PathBuf,
    /// 32 random bytes keying the HMAC chain (created 0600).
    pub hmac_key: PathBuf,
    /// The Ed25519 checkpoint key, PKCS#8 DER (created 0600).
    pub signing_key: PathBuf,
    /// Signed chain heads, one JSON object per line.
    pub checkpoints: PathBuf,
}

impl AuditPaths {
    /// The conventional layout: stem "audit" gives `dir/audit.db`,
    /// `dir/audit.hmac-key`, `dir/audit.signing-key` and
    /// `dir/audit-checkpoints.jsonl`.
    pub fn in_dir(dir: impl AsRef<Path>, stem: &str) -> Self {
        let dir = dir.as_ref();
        AuditPaths {
            db: dir.join(format!("{stem}.db")),
            hmac_key: dir.join(format!("{stem}.hmac-key")),
            signing_key: dir.join(format!("{stem}.signing-key")),
            checkpoints: dir.join(format!("{stem}-checkpoints.jsonl")),
        }
    }
}
