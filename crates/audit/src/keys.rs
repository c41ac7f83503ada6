//! The two key files: created 0600 on first use, refused when others can
//! read them. Only fingerprints ever reach logs.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};
use aws_lc_rs::{digest, hmac};

use crate::error::AuditError;

const HMAC_WHAT: &str = "audit HMAC key";
const SIGNING_WHAT: &str = "audit signing key";
const HMAC_KEY_LEN: usize = 32;
/// PKCS#8 documents of an Ed25519 key are ~85 bytes; anything far larger is not one.
const MAX_KEY_FILE: u64 = 4096;

/// The chain key. `Debug` shows only its fingerprint.
pub(crate) struct ChainKey {
    key: hmac::Key,
    fingerprint: String,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl ChainKey {
    /// Loads the key, creating it (0600) when the file does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let bytes = match read_key_file(path, HMAC_WHAT)? {
            Some(bytes) => bytes,
            None => {
                let mut fresh = vec![0; HMAC_KEY_LEN];
                SystemRandom::new()
                    .fill(&mut fresh)
                    .map_err(|_| AuditError::Crypto("no randomness for the HMAC key"))?;
                create_key_file(path, HMAC_WHAT, &fresh)?
            }
        };
        Self::from_bytes(path, &bytes)
    }

    /// Loads an existing key (verification never creates one).
    pub(crate) fn load(path: &Path) -> Result<Self, AuditError> {
        match read_key_file(path, HMAC_WHAT)? {
            Some(bytes) => Self::from_bytes(path, &bytes),
            None => Err(missing(path, HMAC_WHAT)),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_raw(bytes: &[u8; HMAC_KEY_LEN]) -> Self {
        Self::from_bytes(Path::new("test"), bytes).expect("32 bytes")
    }

    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, AuditError> {
        if bytes.len() != HMAC_KEY_LEN {
            return Err(AuditError::BadKey {
                what: HMAC_WHAT,
                path: path.to_path_buf(),
                why: "expected exactly 32 bytes",
            });
        }
        Ok(ChainKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            fingerprint: fingerprint(bytes),
        })
    }

    pub(crate) fn key(&self) -> &hmac::Key {
        &self.key
    }

    /// First 8 bytes of SHA-256 of the key, hex: safe to log.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The checkpoint signing key.
#[derive(Debug)]
pub(crate) struct CheckpointKey {
    pair: Ed25519KeyPair,
}

impl CheckpointKey {
    /// Loads the key, creating it (0600, PKCS#8) when the file does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let bytes = match read_key_file(path, SIGNING_WHAT)? {
            Some(bytes) => bytes,
            None => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| {
                    AuditError::Crypto("could not generate the Ed25519 signing key")
                })?;
                create_key_file(path, SIGNING_WHAT, doc.as_ref())?
            }
        };
        Self::from_pkcs8(path, &bytes)
    }

    /// Loads an existing key.
    pub(crate) fn load(path: &Path) -> Result<Self, AuditError> {
        match read_key_file(path, SIGNING_WHAT)? {
            Some(bytes) => Self::from_pkcs8(path, &bytes),
            None => Err(missing(path, SIGNING_WHAT)),
        }
    }

    fn from_pkcs8(path: &Path, bytes: &[u8]) -> Result<Self, AuditError> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(|_| AuditError::BadKey {
            what: SIGNING_WHAT,
            path: path.to_path_buf(),
            why: "not an Ed25519 PKCS#8 key",
        })?;
        Ok(CheckpointKey { pair })
    }

    pub(crate) fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError> {
        self.pair
            .try_sign(msg)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| AuditError::Crypto("Ed25519 signing failed"))
    }
}

/// Whether `sig` is `public_key`'s Ed25519 signature of `msg`.
pub(crate) fn ed25519_verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&digest::digest(&digest::SHA256, bytes).as_ref()[..8])
}

fn missing(path: &Path, what: &'static str) -> AuditError {
    AuditError::io(
        match what {
            HMAC_WHAT => "reading the audit HMAC key",
            _ => "reading the audit signing key",
        },
        path,
        std::io::Error::from(ErrorKind::NotFound),
    )
}

/// The file's bytes, or `None` if it does not exist. Refuses files that group
/// or others may access.
fn read_key_file(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>, AuditError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io("opening key file", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| AuditError::io("reading key file metadata", path, e))?;
    check_mode(path, what, &meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| AuditError::io("reading key file", path, e))?;
    Ok(Some(bytes))
}

/// Writes a new key file (0600 from the start: never briefly readable).
/// If another process created it first, its key wins.
fn create_key_file(path: &Path, what: &'static str, bytes: &[u8]) -> Result<Vec<u8>, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io("creating directory", dir, e))?;
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return read_key_file(path, what)?.ok_or_else(|| missing(path, what));
        }
        Err(e) => return Err(AuditError::io("creating key file", path, e)),
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io("writing key file", path, e))?;
    tracing::info!(path = %path.display(), "created {what}");
    Ok(bytes.to_vec())
}

#[cfg(unix)]
fn check_mode(path: &Path, what: &'static str, meta: &std::fs::Metadata) -> Result<(), AuditError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let how = if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        "accessible"
    };
    Err(AuditError::KeyExposed {
        what,
        path: path.to_path_buf(),
        how,
        mode,
    })
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &'static str, _: &std::fs::Metadata) -> Result<(), AuditError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k");
        let a = ChainKey::load_or_create(&path).unwrap();
        let b = ChainKey::load_or_create(&path).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(!format!("{a:?}").contains(&hex::encode(std::fs::read(&path).unwrap())));

        let s = dir.path().join("s");
        let one = CheckpointKey::load_or_create(&s).unwrap();
        let two = CheckpointKey::load(&s).unwrap();
        assert_eq!(one.public_key(), two.public_key());
        let sig = one.sign(b"m").unwrap();
        assert!(ed25519_verify(two.public_key(), b"m", &sig));
        assert!(!ed25519_verify(two.public_key(), b"n", &sig));
    }

    #[cfg(unix)]
    #[test]
    fn exposed_key_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        ChainKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = ChainKey::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }

    #[test]
    fn wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        create_key_file(&path, HMAC_WHAT, b"short").unwrap();
        assert!(matches!(
            ChainKey::load(&path),
            Err(AuditError::BadKey { .. })
        ));
    }
}
