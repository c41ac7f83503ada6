//! The agent's credential store: small secrets kept by name on this machine
//! (`device-key`, `device-cert`, `secret:DBPASS`, …).
//!
//! ```text
//!  CredentialStore::open()
//!    MCP_AGENT_CREDENTIAL_STORE=keyring ─► the OS keyring, or an error if it does not work here
//!    MCP_AGENT_CREDENTIAL_STORE=file    ─► <config dir>/credentials.toml
//!    unset ─► probe the OS keyring (write → read → delete a random value)
//!               works ─► the OS keyring          fails ─► <config dir>/credentials.toml
//! ```
//!
//! **OS keyring**: the macOS Keychain, the Windows Credential Manager, or the
//! Secret Service (GNOME Keyring, KWallet, KeePassXC) on Linux and the BSDs,
//! through the `keyring` crate (v3). Its features are chosen so that building
//! needs no system `-dev` package (CI runs clippy before installing anything)
//! and pulls neither `ring` nor `openssl` (the tree has one crypto provider,
//! aws-lc-rs):
//! - `apple-native`, `windows-native`: the platform APIs, nothing to install;
//! - `sync-secret-service` + `vendored`: libdbus is compiled from the crate's
//!   own sources instead of found with pkg-config (no `libdbus-1-dev`);
//! - `crypto-rust`: the Secret Service session is encrypted with RustCrypto
//!   (not OpenSSL).
//!
//! Keyutils (`linux-native`) is deliberately left out: the kernel keyring
//! forgets everything at reboot, which would silently lose a device key, and
//! on a desktop the Secret Service is the store users expect. A headless Linux
//! host has no Secret Service, so the probe fails there and the file store is
//! used. Without a platform store the crate falls back to an in-memory mock
//! without saying so; the probe catches that (a mock entry's value is not
//! seen by a second entry of the same name) and so does the persistence check.
//!
//! **File store**: one TOML file, `credentials.toml`, in the agent's config
//! directory ([`crate::config::config_dir`], `MCP_AGENT_CONFIG_DIR` moves it).
//! The directory is made 0700 and the file 0600; a file that group or others
//! can access, or a directory they can write, is refused with the `chmod` that
//! fixes it. Values are base64 (bytes are allowed), not encrypted: the file's
//! protection is its mode, like `~/.ssh/id_ed25519`. Writes go to a temporary
//! file in the same directory, are fsynced and renamed over the old file, so a
//! crash leaves the old or the new file, never half of one. Read-modify-write
//! updates hold a lock file (`credentials.lock`) so two agent processes do not
//! lose each other's changes.
//!
//! Values are [`SecretBytes`]: `Debug` prints `MASKED` and the memory is
//! wiped on drop. Errors and logs name credentials, never their values.
//!
//! | limit                      | default                        |
//! |----------------------------|--------------------------------|
//! | one value                  | [`MAX_VALUE_BYTES`]: 64 KiB    |
//! | the credentials file       | [`MAX_FILE_BYTES`]: 4 MiB      |
//! | a credential name          | [`MAX_NAME_LEN`]: 128 bytes    |
//! | the keyring probe          | [`PROBE_TIMEOUT`]: 10 s        |

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

/// The variable that forces a store: `keyring` or `file`.
pub const STORE_ENV: &str = "MCP_AGENT_CREDENTIAL_STORE";
/// The keyring service name every credential is filed under.
pub const SERVICE: &str = "mcp-agent";
/// The file store's file name, in the config directory.
pub const FILE_NAME: &str = "credentials.toml";
/// The lock file serializing updates, in the config directory.
pub const LOCK_FILE_NAME: &str = "credentials.lock";
/// Largest value one credential may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest credentials file read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Longest credential name.
pub const MAX_NAME_LEN: usize = 128;
/// How long the keyring probe may take (a locked keyring may be prompting).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of this platform's OS keyring, as [`CredentialStore::describe`] says it.
pub const KEYRING_NAME: &str = if cfg!(target_os = "macos") {
    "macOS Keychain"
} else if cfg!(windows) {
    "Windows Credential Manager"
} else if cfg!(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd"
)) {
    "Secret Service"
} else {
    "none on this platform"
};

/// Secret bytes: `Debug` prints `MASKED`, the memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8 text, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// Which backend a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The OS keyring ([`KEYRING_NAME`]).
    Keyring,
    /// `credentials.toml` in the config directory.
    File,
}

impl std::str::FromStr for StoreKind {
    type Err = CredStoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keyring" => Ok(Self::Keyring),
            "file" => Ok(Self::File),
            _ => Err(CredStoreError::BadChoice(s.to_owned())),
        }
    }
}

/// Why the credential store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CredStoreError {
    /// `MCP_AGENT_CREDENTIAL_STORE` names no store.
    #[error("{STORE_ENV}={0:?} is not a credential store; set it to keyring or file, or unset it")]
    BadChoice(String),
    /// `MCP_AGENT_CREDENTIAL_STORE=keyring`, but the OS keyring does not work here.
    #[error(
        "{STORE_ENV}=keyring, but the OS keyring ({KEYRING_NAME}) is not usable here: {0}; unlock or start it, or set {STORE_ENV}=file to keep credentials in a 0600 file instead"
    )]
    KeyringUnusable(String),
    /// The platform has no config directory and none was given.
    #[error(
        "this system has no config directory for mcp-agent; set MCP_AGENT_CONFIG_DIR to a directory for its credentials"
    )]
    NoConfigDir,
    /// A credential name is empty, too long or has characters keyrings may not take.
    #[error(
        "{0:?} is not a credential name: use 1 to {MAX_NAME_LEN} letters, digits or '_', '.', '-', ':'"
    )]
    BadName(String),
    /// A value is larger than [`MAX_VALUE_BYTES`].
    #[error("the value for {name} is {len} bytes; a credential holds at most {MAX_VALUE_BYTES}")]
    TooLarge {
        /// The credential.
        name: String,
        /// Its size.
        len: usize,
    },
    /// The credentials file or its directory is open to other users.
    #[error("{what} {path} is {how} by others (mode {mode:04o}); run: chmod {fix:o} {path}")]
    Exposed {
        /// "credentials file" or "credentials directory".
        what: &'static str,
        /// Where it is (shell-ready).
        path: String,
        /// "readable", "writable" or "accessible".
        how: &'static str,
        /// Its permission bits.
        mode: u32,
        /// The mode that fixes it.
        fix: u32,
    },
    /// The credentials file is not what this program writes.
    #[error(
        "credentials file {path} is damaged: {reason}; fix it by hand, restore a backup, or move it away (its credentials must then be set again)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never a value).
        reason: String,
    },
    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The OS keyring refused an operation.
    #[error("OS keyring ({KEYRING_NAME}): {action} {name}: {reason}")]
    Keyring {
        /// What was being done.
        action: &'static str,
        /// The credential.
        name: String,
        /// The keyring's message (its error's `Display`, which holds no value).
        reason: String,
    },
}

/// The credential store in use: the OS keyring or the file.
#[derive(Debug)]
pub struct CredentialStore {
    backend: Backend,
    /// The config directory (the file store and the lock file live there).
    dir: PathBuf,
    /// Why the file store was chosen, for [`CredentialStore::describe`].
    why_file: Option<String>,
}

#[derive(Debug)]
enum Backend {
    Keyring,
    File(FileStore),
}

/// An environment lookup (`std::env::var` in the program, a map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl CredentialStore {
    /// Opens the store `MCP_AGENT_CREDENTIAL_STORE` asks for, else the OS
    /// keyring if its probe works, else the file (see the module docs).
    pub fn open() -> Result<Self, CredStoreError> {
        Self::open_with(&|k| std::env::var(k).ok(), &probe_os_keyring)
    }

    /// [`CredentialStore::open`] with an injected environment and keyring probe.
    pub fn open_with(
        env: EnvLookup<'_>,
        probe: &dyn Fn() -> Result<(), String>,
    ) -> Result<Self, CredStoreError> {
        let dir = crate::config::config_dir_with(env).ok_or(CredStoreError::NoConfigDir)?;
        let forced = env(STORE_ENV)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.parse::<StoreKind>())
            .transpose()?;
        match forced {
            Some(StoreKind::File) => Ok(Self::file(dir, format!("{STORE_ENV}=file"))),
            Some(StoreKind::Keyring) => match probe() {
                Ok(()) => Ok(Self::keyring(dir)),
                Err(reason) => Err(CredStoreError::KeyringUnusable(reason)),
            },
            None => match probe() {
                Ok(()) => Ok(Self::keyring(dir)),
                Err(reason) => {
                    tracing::debug!("no usable OS keyring ({reason}); using the credentials file");
                    Ok(Self::file(dir, format!("no usable OS keyring: {reason}")))
                }
            },
        }
    }

    /// The file store in `dir` (no keyring probe), e.g. for tests.
    pub fn file_in(dir: impl Into<PathBuf>) -> Self {
        Self::file(dir.into(), "chosen by the caller".to_owned())
    }

    fn file(dir: PathBuf, why: String) -> Self {
        Self {
            backend: Backend::File(FileStore {
                path: dir.join(FILE_NAME),
            }),
            dir,
            why_file: Some(why),
        }
    }

    fn keyring(dir: PathBuf) -> Self {
        Self {
            backend: Backend::Keyring,
            dir,
            why_file: None,
        }
    }

    /// Which backend is in use.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Keyring => StoreKind::Keyring,
            Backend::File(_) => StoreKind::File,
        }
    }

    /// Which store is in use and where, for people: `OS keyring (Secret
    /// Service)` or `file /home/me/.config/mcp-agent/credentials.toml (no
    /// usable OS keyring: …)`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Keyring => format!("OS keyring ({KEYRING_NAME})"),
            Backend::File(f) => format!(
                "file {} ({})",
                f.path.display(),
                self.why_file.as_deref().unwrap_or("")
            ),
        }
    }

    /// The value of `name`, if it is stored.
    pub fn get(&self, name: &str) -> Result<Option<SecretBytes>, CredStoreError> {
        check_name(name)?;
        match &self.backend {
            Backend::Keyring => keyring_get(name),
            Backend::File(f) => Ok(f.load()?.remove(name)),
        }
    }

    /// Stores `value` under `name`, replacing what was there.
    pub fn set(&self, name: &str, value: &[u8]) -> Result<(), CredStoreError> {
        self.update(|u| u.set(name, value))
    }

    /// Deletes `name`; `false` if it was not stored.
    pub fn delete(&self, name: &str) -> Result<bool, CredStoreError> {
        self.update(|u| u.delete(name))
    }

    /// Runs a read-modify-write under the store's lock, so concurrent agent
    /// processes do not lose each other's changes. With the file store all
    /// changes land in one atomic write when `f` returns `Ok` (none if it
    /// fails); with the keyring each change is applied as it is made.
    pub fn update<R, E>(&self, f: impl FnOnce(&mut Update) -> Result<R, E>) -> Result<R, E>
    where
        E: From<CredStoreError>,
    {
        let _lock = self.lock()?;
        let mut update = Update {
            entries: match &self.backend {
                Backend::Keyring => None,
                Backend::File(file) => Some(file.load()?),
            },
            dirty: false,
        };
        let out = f(&mut update)?;
        if let (Backend::File(file), Some(entries), true) =
            (&self.backend, &update.entries, update.dirty)
        {
            file.save(entries)?;
        }
        Ok(out)
    }

    /// Takes the update lock (released when the file is dropped).
    fn lock(&self) -> Result<File, CredStoreError> {
        ensure_dir(&self.dir)?;
        let path = self.dir.join(LOCK_FILE_NAME);
        let mut options = OpenOptions::new();
        options.create(true).read(true).write(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|source| CredStoreError::Io {
            action: "opening the lock file",
            path: path.clone(),
            source,
        })?;
        file.lock().map_err(|source| CredStoreError::Io {
            action: "locking",
            path,
            source,
        })?;
        Ok(file)
    }
}

/// Changes made inside [`CredentialStore::update`].
#[derive(Debug)]
pub struct Update {
    /// The file's entries (file store only).
    entries: Option<BTreeMap<String, SecretBytes>>,
    dirty: bool,
}

impl Update {
    /// The value of `name`, if it is stored (including changes made so far).
    pub fn get(&self, name: &str) -> Result<Option<SecretBytes>, CredStoreError> {
        check_name(name)?;
        match &self.entries {
            Some(entries) => Ok(entries.get(name).cloned()),
            None => keyring_get(name),
        }
    }

    /// Stores `value` under `name`.
    pub fn set(&mut self, name: &str, value: &[u8]) -> Result<(), CredStoreError> {
        check_name(name)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(CredStoreError::TooLarge {
                name: name.to_owned(),
                len: value.len(),
            });
        }
        match &mut self.entries {
            Some(entries) => {
                entries.insert(name.to_owned(), SecretBytes::new(value));
                self.dirty = true;
                Ok(())
            }
            None => keyring_entry(name, "opening")?
                .set_secret(value)
                .map_err(|e| keyring_error("storing", name, &e)),
        }
    }

    /// Deletes `name`; `false` if it was not stored.
    pub fn delete(&mut self, name: &str) -> Result<bool, CredStoreError> {
        check_name(name)?;
        match &mut self.entries {
            Some(entries) => {
                let was = entries.remove(name).is_some();
                self.dirty |= was;
                Ok(was)
            }
            None => match keyring_entry(name, "opening")?.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(keyring_error("deleting", name, &e)),
            },
        }
    }
}

/// Probes the OS keyring: it must persist credentials, and a random value
/// written under a probe entry must read back (through a second entry, which
/// the crate's silent in-memory mock fails) and delete.
pub fn probe_os_keyring() -> Result<(), String> {
    use keyring::credential::CredentialPersistence;
    let persistence = keyring::default::default_credential_builder().persistence();
    if !matches!(persistence, CredentialPersistence::UntilDelete) {
        return Err(format!(
            "this build has no OS keyring for this platform (the keyring crate's store keeps credentials only {})",
            match persistence {
                CredentialPersistence::EntryOnly => "in memory",
                CredentialPersistence::ProcessOnly => "until the process exits",
                CredentialPersistence::UntilReboot => "until reboot",
                _ => "for a while",
            }
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    // A thread, because a keyring can block (a locked collection prompting,
    // a D-Bus peer that never answers); on timeout it is left behind.
    std::thread::Builder::new()
        .name("keyring-probe".into())
        .spawn(move || {
            let _ = tx.send(probe_round_trip());
        })
        .map_err(|e| format!("starting the probe: {e}"))?;
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "it did not answer within {}s (locked, or waiting for a prompt?)",
            PROBE_TIMEOUT.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the probe stopped without an answer".into())
        }
    }
}

fn probe_round_trip() -> Result<(), String> {
    let name = format!("probe-{:016x}", rand::random::<u64>());
    let value: [u8; 16] = rand::random();
    let entry = || keyring::Entry::new(SERVICE, &name).map_err(|e| e.to_string());
    entry()?
        .set_secret(&value)
        .map_err(|e| format!("writing a test entry: {e}"))?;
    let read = entry()?.get_secret();
    let deleted = entry()?.delete_credential();
    match read {
        Ok(v) if v == value => {}
        Ok(_) => return Err("a test entry read back a different value".into()),
        Err(e) => return Err(format!("reading a test entry back: {e}")),
    }
    deleted.map_err(|e| format!("deleting a test entry: {e}"))
}

fn keyring_entry(name: &str, action: &'static str) -> Result<keyring::Entry, CredStoreError> {
    keyring::Entry::new(SERVICE, name).map_err(|e| keyring_error(action, name, &e))
}

fn keyring_get(name: &str) -> Result<Option<SecretBytes>, CredStoreError> {
    match keyring_entry(name, "opening")?.get_secret() {
        Ok(v) => Ok(Some(SecretBytes::new(v))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(keyring_error("reading", name, &e)),
    }
}

/// `keyring::Error`'s `Debug` may carry raw bytes (`BadEncoding`), so only
/// its `Display` is kept.
fn keyring_error(action: &'static str, name: &str, e: &keyring::Error) -> CredStoreError {
    CredStoreError::Keyring {
        action,
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

fn check_name(name: &str) -> Result<(), CredStoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(CredStoreError::BadName(name.to_owned()))
    }
}

/// `credentials.toml`.
#[derive(Debug)]
struct FileStore {
    path: PathBuf,
}

/// The file's format.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u32,
    /// Name → base64 of the value.
    #[serde(default)]
    credentials: BTreeMap<String, String>,
}

const FILE_VERSION: u32 = 1;
const FILE_HEADER: &str = "# mcp-agent credentials, written by mcp-agent. Values are base64, not encrypted:\n# this file's protection is its mode (0600). Manage them with `mcp-agent secrets`.\n";

impl FileStore {
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Every stored credential (none if the file does not exist).
    fn load(&self) -> Result<BTreeMap<String, SecretBytes>, CredStoreError> {
        let io = |action| {
            let path = self.path.clone();
            move |source| CredStoreError::Io {
                action,
                path,
                source,
            }
        };
        if let Ok(meta) = std::fs::metadata(self.dir()) {
            check_dir_mode(self.dir(), &meta)?;
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(io("opening")(e)),
        };
        // The mode of what was opened, not of whatever the path names now.
        let meta = file.metadata().map_err(io("inspecting"))?;
        if !meta.is_file() {
            return Err(self.damaged("it is not a regular file"));
        }
        check_file_mode(&self.path, &meta)?;
        let mut raw = Zeroizing::new(Vec::new());
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(io("reading"))?;
        if raw.len() as u64 > MAX_FILE_BYTES {
            return Err(self.damaged(&format!("it is larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::str::from_utf8(&raw).map_err(|_| self.damaged("it is not UTF-8 text"))?;
        // toml's messages quote the offending line, which may hold a value:
        // keep only the position.
        let contents: FileContents = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            self.damaged(&match line {
                Some(l) => format!("invalid TOML at line {l}"),
                None => "invalid TOML".to_owned(),
            })
        })?;
        if contents.version != FILE_VERSION {
            return Err(self.damaged(&format!(
                "version {} is not {FILE_VERSION} (written by another mcp-agent version?)",
                contents.version
            )));
        }
        let mut out = BTreeMap::new();
        for (name, b64) in contents.credentials {
            let b64 = Zeroizing::new(b64);
            let value = BASE64
                .decode(b64.as_bytes())
                .map_err(|_| self.damaged(&format!("the value of {name:?} is not base64")))?;
            check_name(&name).map_err(|_| self.damaged(&format!("{name:?} is not a name")))?;
            out.insert(name, SecretBytes::new(value));
        }
        Ok(out)
    }

    /// Writes every credential: temp file in the same directory (0600),
    /// fsync, rename over the old file, fsync the directory.
    fn save(&self, entries: &BTreeMap<String, SecretBytes>) -> Result<(), CredStoreError> {
        let dir = self.dir();
        ensure_dir(dir)?;
        let contents = FileContents {
            version: FILE_VERSION,
            credentials: entries
                .iter()
                .map(|(k, v)| (k.clone(), BASE64.encode(v.expose())))
                .collect(),
        };
        let body = toml::to_string(&contents);
        // The encoded values are secrets too.
        for (_, v) in contents.credentials {
            drop(Zeroizing::new(v));
        }
        let body = Zeroizing::new(body.map_err(|e| self.damaged(&e.to_string()))?);
        let io = |action| {
            let path = self.path.clone();
            move |source| CredStoreError::Io {
                action,
                path,
                source,
            }
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".credentials.").suffix(".tmp");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        // Dropping the temp file on any error below removes it.
        let mut tmp = builder
            .tempfile_in(dir)
            .map_err(io("creating a temporary file next to"))?;
        tmp.write_all(FILE_HEADER.as_bytes())
            .and_then(|()| tmp.write_all(body.as_bytes()))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(io("writing a temporary file next to"))?;
        tmp.persist(&self.path)
            .map_err(|e| io("replacing")(e.error))?;
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory of"))?;
        Ok(())
    }

    fn damaged(&self, reason: &str) -> CredStoreError {
        CredStoreError::Damaged {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Creates `dir` (0700, with missing parents) and checks it is not writable
/// by others.
fn ensure_dir(dir: &Path) -> Result<(), CredStoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| CredStoreError::Io {
        action: "creating the directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let meta = std::fs::metadata(dir).map_err(|source| CredStoreError::Io {
        action: "inspecting",
        path: dir.to_path_buf(),
        source,
    })?;
    check_dir_mode(dir, &meta)
}

/// A file others can read (or write) is refused: its secrets may have leaked
/// and they may be replaced.
#[cfg(unix)]
fn check_file_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), CredStoreError> {
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
    Err(CredStoreError::Exposed {
        what: "credentials file",
        path: shell_path(path),
        how,
        mode,
        fix: 0o600,
    })
}

/// A directory others can write is refused: they could swap the file.
#[cfg(unix)]
fn check_dir_mode(dir: &Path, meta: &std::fs::Metadata) -> Result<(), CredStoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 == 0 {
        return Ok(());
    }
    Err(CredStoreError::Exposed {
        what: "credentials directory",
        path: shell_path(dir),
        how: "writable",
        mode,
        fix: 0o700,
    })
}

/// Windows has no mode bits; the file lives in the user's profile.
#[cfg(not(unix))]
fn check_file_mode(_: &Path, _: &std::fs::Metadata) -> Result<(), CredStoreError> {
    Ok(())
}

#[cfg(not(unix))]
fn check_dir_mode(_: &Path, _: &std::fs::Metadata) -> Result<(), CredStoreError> {
    Ok(())
}

/// The path as it can be pasted into a shell (single-quoted if it needs it).
fn shell_path(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+' | b'~'));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    #[cfg(unix)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn no_keyring() -> Result<(), String> {
        Err("no Secret Service on this bus".into())
    }

    fn working_keyring() -> Result<(), String> {
        Ok(())
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn file_store_round_trips_bytes_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path().join("mcp-agent"));
        assert_eq!(store.get("device-key").unwrap(), None);
        let key = [0u8, 159, 146, 150, 255];
        store.set("device-key", &key).unwrap();
        store.set("secret:DBPASS", b"hunter2").unwrap();
        assert_eq!(store.get("device-key").unwrap().unwrap().expose(), key);
        assert_eq!(
            store
                .get("secret:DBPASS")
                .unwrap()
                .unwrap()
                .expose_str()
                .unwrap(),
            "hunter2"
        );
        // Another handle (another process) sees the same.
        let again = CredentialStore::file_in(dir.path().join("mcp-agent"));
        assert_eq!(again.get("device-key").unwrap().unwrap().expose(), key);
        assert!(again.delete("device-key").unwrap());
        assert!(!again.delete("device-key").unwrap());
        assert_eq!(store.get("device-key").unwrap(), None);
        assert!(store.get("secret:DBPASS").unwrap().is_some());
        // Values are base64 in the file, not plain text.
        let text = std::fs::read_to_string(dir.path().join("mcp-agent").join(FILE_NAME)).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(&BASE64.encode("hunter2")), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn file_store_makes_a_0700_directory_and_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("a").join("mcp-agent");
        CredentialStore::file_in(&cfg).set("k", b"v").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cfg), 0o700);
        assert_eq!(mode(&cfg.join(FILE_NAME)), 0o600);
        assert_eq!(mode(&cfg.join(LOCK_FILE_NAME)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_chmod_that_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        store.set("secret:X", b"v").unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = store.get("secret:X").unwrap_err().to_string();
        let p = file.display();
        assert_eq!(
            e,
            format!("credentials file {p} is readable by others (mode 0644); run: chmod 600 {p}")
        );
        // Writes are refused too (they would read the file first).
        assert!(store.set("secret:Y", b"w").is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = store.get("secret:X").unwrap_err().to_string();
        assert!(e.contains("is writable by others (mode 0620)"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(store.get("secret:X").unwrap().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        store.set("k", b"v").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = store.get("k").unwrap_err().to_string();
        let p = dir.path().display();
        assert_eq!(
            e,
            format!(
                "credentials directory {p} is writable by others (mode 0777); run: chmod 700 {p}"
            )
        );
        // Readable by others is fine for the directory (the file is 0600).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(store.get("k").unwrap().is_some());
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        for i in 0..20 {
            store.set(&format!("k{i}"), &[i; 100]).unwrap();
        }
        assert_eq!(listing(dir.path()), [LOCK_FILE_NAME, FILE_NAME]);
        // A failed write (the rename target is a non-empty directory) keeps
        // the old state and leaves no temporary file behind.
        let blocked = tempfile::tempdir().unwrap();
        let file = FileStore {
            path: blocked.path().join(FILE_NAME),
        };
        std::fs::create_dir(&file.path).unwrap();
        std::fs::write(file.path.join("x"), "x").unwrap();
        let mut entries = BTreeMap::new();
        entries.insert("k".to_owned(), SecretBytes::new("v"));
        assert!(file.save(&entries).is_err());
        assert_eq!(listing(blocked.path()), [FILE_NAME]);
    }

    #[test]
    fn an_update_lands_all_at_once_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        store.set("a", b"1").unwrap();
        let r: Result<(), CredStoreError> = store.update(|u| {
            u.set("b", b"2")?;
            assert_eq!(u.get("b")?.unwrap().expose(), b"2");
            Err(CredStoreError::BadName("stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(store.get("b").unwrap(), None);
        store
            .update(|u| {
                u.set("b", b"2")?;
                u.delete("a").map(|_| ())
            })
            .unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        assert_eq!(store.get("b").unwrap().unwrap().expose(), b"2");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let store = CredentialStore::file_in(dir);
                    for i in 0..10 {
                        store.set(&format!("t{t}-{i}"), b"v").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = CredentialStore::file_in(dir.path());
        for t in 0..4 {
            for i in 0..10 {
                assert!(store.get(&format!("t{t}-{i}")).unwrap().is_some());
            }
        }
    }

    #[test]
    fn damaged_files_are_refused_without_quoting_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        store.set("k", b"v").unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(
            &file,
            "version = 1\n[credentials]\nk = hunter2-not-quoted\n",
        )
        .unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = store.get("k").unwrap_err().to_string();
        assert!(e.contains("is damaged: invalid TOML at line 3"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&file, "version = 1\n[credentials]\nk = \"@@hunter2\"\n").unwrap();
        let e = store.get("k").unwrap_err().to_string();
        assert!(e.contains("the value of \"k\" is not base64"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&file, "version = 7\n").unwrap();
        let e = store.get("k").unwrap_err().to_string();
        assert!(e.contains("version 7"), "{e}");
    }

    #[test]
    fn names_values_and_debug_are_checked_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        for bad in ["", "has space", "new\nline", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(
                matches!(store.set(bad, b"v"), Err(CredStoreError::BadName(_))),
                "{bad:?}"
            );
        }
        let e = store
            .set("big", &vec![0; MAX_VALUE_BYTES + 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 65536"), "{e}");
        let v = SecretBytes::new("hunter2");
        assert_eq!(format!("{v:?}"), "MASKED");
        assert_eq!(format!("{:?}", Some(v)), "Some(MASKED)");
    }

    #[test]
    fn selection_follows_the_forced_store_and_the_probe() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // Forced file: no probe at all.
        let probe_never = || -> Result<(), String> { panic!("probed") };
        let s = CredentialStore::open_with(
            &env(&[(STORE_ENV, "file"), ("MCP_AGENT_CONFIG_DIR", &d)]),
            &probe_never,
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::File);
        assert_eq!(
            s.describe(),
            format!("file {d}/{FILE_NAME} ({STORE_ENV}=file)")
        );
        // Unset: the keyring if the probe works, else the file with the reason.
        let s = CredentialStore::open_with(&env(&[("MCP_AGENT_CONFIG_DIR", &d)]), &working_keyring)
            .unwrap();
        assert_eq!(s.kind(), StoreKind::Keyring);
        assert_eq!(s.describe(), format!("OS keyring ({KEYRING_NAME})"));
        let s =
            CredentialStore::open_with(&env(&[("MCP_AGENT_CONFIG_DIR", &d)]), &no_keyring).unwrap();
        assert_eq!(s.kind(), StoreKind::File);
        assert_eq!(
            s.describe(),
            format!("file {d}/{FILE_NAME} (no usable OS keyring: no Secret Service on this bus)")
        );
        // Forced keyring: an error that says why and what to do.
        let e = CredentialStore::open_with(
            &env(&[(STORE_ENV, "keyring"), ("MCP_AGENT_CONFIG_DIR", &d)]),
            &no_keyring,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not usable here: no Secret Service on this bus")
                && e.contains(&format!("set {STORE_ENV}=file")),
            "{e}"
        );
        let s = CredentialStore::open_with(
            &env(&[(STORE_ENV, " Keyring "), ("MCP_AGENT_CONFIG_DIR", &d)]),
            &working_keyring,
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::Keyring);
        // Anything else is an error naming the choices.
        let e = CredentialStore::open_with(
            &env(&[(STORE_ENV, "vault"), ("MCP_AGENT_CONFIG_DIR", &d)]),
            &working_keyring,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"vault\"") && e.contains("keyring or file"),
            "{e}"
        );
        // Nothing was written by choosing.
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn paths_in_hints_are_shell_ready() {
        assert_eq!(shell_path(Path::new("/a/b.toml")), "/a/b.toml");
        assert_eq!(shell_path(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
