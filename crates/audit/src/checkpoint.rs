//! Signed chain heads: one JSON object per line in the checkpoint file.
//!
//! A line is `{"seq":…,"mac":"<hex>","ts_ms":…,"key":"<hex Ed25519 public
//! key>","sig":"<hex>"}`; the public key is repeated on every line so the file
//! can be checked on another host with nothing but that key.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chain::MAC_LEN;
use crate::error::AuditError;
use crate::keys::{CheckpointKey, ed25519_verify};

const CHECKPOINT_TAG: &[u8] = b"mcp-tunnel-audit/v1/checkpoint\0";
/// A longer line is not one of ours (a real one is ~300 bytes).
const MAX_LINE: usize = 4096;

/// One signed chain head.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    pub(crate) mac: String,
    pub(crate) ts_ms: i64,
    pub(crate) key: String,
    pub(crate) sig: String,
}

impl Checkpoint {
    pub(crate) fn sign(
        key: &CheckpointKey,
        seq: u64,
        mac: &[u8; MAC_LEN],
        ts_ms: i64,
    ) -> Result<Self, AuditError> {
        let sig = key.sign(&message(seq, mac, ts_ms))?;
        Ok(Checkpoint {
            seq,
            mac: hex::encode(mac),
            ts_ms,
            key: hex::encode(key.public_key()),
            sig: hex::encode(sig),
        })
    }

    /// The MAC it seals, if the line is well formed and `trusted` signed it.
    pub(crate) fn verified_mac(&self, trusted: &[u8]) -> Option<[u8; MAC_LEN]> {
        let key = hex::decode(&self.key).ok()?;
        if key != trusted {
            return None;
        }
        let mac: [u8; MAC_LEN] = hex::decode(&self.mac).ok()?.try_into().ok()?;
        let sig = hex::decode(&self.sig).ok()?;
        ed25519_verify(trusted, &message(self.seq, &mac, self.ts_ms), &sig).then_some(mac)
    }
}

/// Appends one line and syncs it: a checkpoint only ever names records that
/// are already committed with `synchronous=FULL`, so after a power cut the
/// file never claims more than the database holds.
pub(crate) fn append(path: &Path, cp: &Checkpoint) -> Result<(), AuditError> {
    let mut line = serde_json::to_string(cp).map_err(|e| AuditError::Corrupt {
        seq: i64::try_from(cp.seq).unwrap_or(i64::MAX),
        why: e.to_string(),
    })?;
    line.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io("opening the checkpoint file", path, e))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| AuditError::io("appending to the checkpoint file", path, e))
}

/// Every line of the file (1-based line numbers), parsed where possible.
pub(crate) fn read_all(path: &Path) -> Result<Vec<(usize, Option<Checkpoint>)>, AuditError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io("opening the checkpoint file", path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| AuditError::io("reading the checkpoint file", path, e))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = (line.len() <= MAX_LINE)
            .then(|| serde_json::from_slice::<Checkpoint>(&line).ok())
            .flatten();
        out.push((i + 1, parsed));
    }
    Ok(out)
}

/// The highest seq any line names (unverified: only used to avoid writing the
/// same checkpoint twice after a restart).
pub(crate) fn last_seq(path: &Path) -> Result<u64, AuditError> {
    Ok(read_all(path)?
        .into_iter()
        .filter_map(|(_, cp)| cp.map(|cp| cp.seq))
        .max()
        .unwrap_or(0))
}

fn message(seq: u64, mac: &[u8; MAC_LEN], ts_ms: i64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CHECKPOINT_TAG.len() + 8 + MAC_LEN + 8);
    msg.extend_from_slice(CHECKPOINT_TAG);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(mac);
    msg.extend_from_slice(&ts_ms.to_be_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_lines_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = CheckpointKey::load_or_create(&dir.path().join("k")).unwrap();
        let cp = Checkpoint::sign(&key, 7, &[3; 32], 1_000).unwrap();
        assert_eq!(cp.verified_mac(key.public_key()), Some([3; 32]));

        let mut moved = cp.clone();
        moved.seq = 9;
        assert_eq!(moved.verified_mac(key.public_key()), None);

        let other = CheckpointKey::load_or_create(&dir.path().join("k2")).unwrap();
        let foreign = Checkpoint::sign(&other, 7, &[3; 32], 1_000).unwrap();
        assert_eq!(foreign.verified_mac(key.public_key()), None);

        let path = dir.path().join("cp.jsonl");
        append(&path, &cp).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        append(&path, &moved).unwrap();
        let lines = read_all(&path).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (1, Some(cp)));
        assert_eq!(lines[1], (2, None));
        assert_eq!(last_seq(&path).unwrap(), 9);
    }
}
