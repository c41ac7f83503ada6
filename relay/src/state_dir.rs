//! The relay's state directory: keys, certificates and small JSON stores.
//!
//! ```text
//! <state>/
//!   quic-reset.key        stateless-reset key (0600): a restarted relay resets old agent
//!                         connections at once, so agents reconnect within a heartbeat
//!   agent-tokens.json     hashes of agent tokens (never the tokens)
//!   tunnels.json.imported claims of an older relay, moved into relay.db
//!   endpoints.json        the addresses this relay bound (written at start, for tools and tests)
//!   dev-ca.pem, dev-ca.key, dev-cert.pem, dev-key.pem   (--dev only)
//!   relay.db              users, clients, tokens, grants, tunnel claims (SQLite, versioned schema)
//!   audit.db, audit.*     the tamper-evident audit log and its key/checkpoints
//!   backups/              copies of relay.db taken before a schema migration (the last 5)
//!   acme/<dir host>-<hash>/account.json, certificate.pem   ACME account key; chain + key (0600)
//! ```
//!
//! Two relays may use one state dir at once for a moment: `serve --replace`
//! starts the new one while the old one drains. Nothing here may assume a
//! single process (SQLite handles the concurrent writers).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The lock file serving relays share and `restore` takes alone.
pub const LOCK_FILE: &str = "relay.lock";

fn open_lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let mut o = std::fs::OpenOptions::new();
    o.create(true).write(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Takes `<dir>/relay.lock` exclusively (restore): fails at once if a relay
/// holds it. Released when the file is dropped.
pub fn lock_exclusive(dir: &Path) -> anyhow::Result<std::fs::File> {
    let f = open_lock(dir)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("{} is locked", dir.join(LOCK_FILE).display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", dir.join(LOCK_FILE).display()))
        }
    }
}

/// An opened (created if needed) state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Holds `relay.lock` shared for as long as the file lives (`serve`):
    /// several relays may (`serve --replace`), a restore may not meanwhile.
    pub fn lock_shared(&self) -> anyhow::Result<std::fs::File> {
        let f = open_lock(&self.root)?;
        match f.try_lock_shared() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{} is being restored (`mcp-relay restore` holds {}); start the relay when it is done",
                self.root.display(),
                LOCK_FILE
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", self.root.join(LOCK_FILE).display()))
            }
        }
    }

    /// Opens `root`, creating it (mode 0700) if it does not exist.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating state directory {}", root.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(root)?;
            if meta.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The default state dir: the per-user data dir (`~/.local/share/mcp-relay` on Linux).
    pub fn default_path() -> anyhow::Result<PathBuf> {
        let dirs = directories::ProjectDirs::from("", "", "mcp-relay")
            .context("cannot find a home directory for the default state dir; pass --state DIR")?;
        Ok(dirs.data_dir().to_path_buf())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file inside the state dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The development CA certificate agents pass as `--ca`.
    pub fn dev_ca_cert(&self) -> PathBuf {
        self.path("dev-ca.pem")
    }

    /// Loads the QUIC stateless-reset key, creating it on first start.
    pub fn reset_key(&self) -> anyhow::Result<[u8; 32]> {
        let path = self.path("quic-reset.key");
        match std::fs::read(&path) {
            Ok(bytes) => bytes.as_slice().try_into().with_context(|| {
                format!(
                    "{} is corrupt (expected 32 bytes, found {}); delete it to make a new one",
                    path.display(),
                    bytes.len()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_private(&path, &key)?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700 (existing ones are
/// left as they are).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `path` atomically (temp file + rename), mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(&dir.path().join("nested")).unwrap();
        let a = s.reset_key().unwrap();
        let b = s.reset_key().unwrap();
        assert_eq!(a, b);
        std::fs::write(s.path("quic-reset.key"), b"short").unwrap();
        let err = s.reset_key().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
