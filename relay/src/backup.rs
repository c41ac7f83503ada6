//! Online backup and restore of a relay's state directory.
//!
//! ```text
//!  mcp-relay backup --out F                   mcp-relay restore F --state DIR [--force]
//!  ────────────────────────                   ────────────────────────────────────────
//!  walk <state> (skip endpoints.json,         unpack into a staging dir beside DIR, refusing
//!   backups/, -wal/-shm, locks, temp files)    links, devices, absolute or `..` paths and
//!  plain files ──► copied (first)               members over the size limits
//!  SQLite files ─► online backup API (last:   check every member's size and sha256 against
//!   never older than the checkpoint file        the manifest; refuse a newer schema
//!   that names their records)                 refuse if DIR's databases are held open
//!  manifest (versions, sha256 per member)      (a running relay) or DIR holds state
//!  ──► F.tmp (tar.gz, 0600) ─ fsync ─► F        without --force (then: DIR.before-restore-T)
//!                                             rename staging ─► DIR; open relay.db (migrates)
//! ```
//!
//! The relay keeps serving and writing while `backup` runs: each database is
//! copied in one step of SQLite's online backup API, a read transaction that
//! (in WAL mode) never blocks the relay's writers, so each copy is one
//! committed state. Nothing ever copies a live database file byte by byte.
//!
//! The sha256 sums catch a damaged or edited archive; they are not a
//! signature (whoever can rewrite the archive can rewrite the manifest). Keep
//! backups where the state dir's own secrets would be safe: they hold the
//! signing keys and CA keys in the clear.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{DB_FILE, SqliteStore};

/// The archive layout this build writes and reads (1).
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's name inside the archive (its first member).
pub const MANIFEST_NAME: &str = "mcp-relay-backup.json";

/// Most members an archive may hold (10,000): a state dir holds a few dozen.
pub const MAX_MEMBERS: usize = 10_000;

/// Largest member `restore` unpacks (8 GiB): far above any relay database.
pub const MAX_MEMBER_BYTES: u64 = 8 << 30;

/// Largest total `restore` unpacks (32 GiB), so a crafted archive cannot fill the disk.
pub const MAX_TOTAL_BYTES: u64 = 32 << 30;

/// Largest manifest `restore` reads (4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// How long copying one database waits for locks before giving up (60 s).
pub const COPY_TIMEOUT: Duration = Duration::from_secs(60);

/// Deepest directory nesting `backup` walks (16).
const MAX_DEPTH: usize = 16;

/// State files live under this prefix in the archive.
const STATE_PREFIX: &str = "state/";

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What an archive holds, written as its first member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The `mcp-relay` version that made the backup.
    pub relay_version: String,
    /// When the backup was made (Unix seconds).
    pub created_at: u64,
    /// The schema version of `relay.db` in the archive.
    pub schema_version: i64,
    /// Every state file, with its size and sha256.
    pub members: Vec<Member>,
}

/// One state file in the archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Path relative to the state dir, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the contents.
    pub sha256: String,
    /// How it was copied.
    pub kind: MemberKind,
}

/// How a member was copied.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    /// A plain file, read as it was.
    File,
    /// A SQLite database, copied with the online backup API.
    Sqlite,
}

/// Writes a consistent backup of the state dir `state` to `out` and prints a
/// one-line summary to stderr.
pub fn backup(state: &Path, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let m = write_backup(state, out)?;
    let databases = m
        .members
        .iter()
        .filter(|m| m.kind == MemberKind::Sqlite)
        .count();
    let state_bytes: u64 = m.members.iter().map(|m| m.size).sum();
    let archive_bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "backup: {} files ({databases} SQLite databases, schema v{}), {} of state -> {} ({}, {:.1?})",
        m.members.len(),
        m.schema_version,
        human(state_bytes),
        out.display(),
        human(archive_bytes),
        started.elapsed(),
    );
    Ok(())
}

/// Restores the backup `file` into the state dir `state`; with `force`, a
/// state dir that already holds state is moved aside first.
pub fn restore(file: &Path, state: &Path, force: bool) -> anyhow::Result<()> {
    let r = restore_into(file, state, force)?;
    if let Some(aside) = &r.moved_aside {
        eprintln!(
            "restore: the previous state of {} is now in {}",
            r.state.display(),
            aside.display()
        );
    }
    eprintln!(
        "restore: {} files (schema v{}, made by mcp-relay {} at {}) into {}{}; start the relay with --state {}",
        r.manifest.members.len(),
        r.manifest.schema_version,
        r.manifest.relay_version,
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(r.manifest.created_at)),
        r.state.display(),
        if r.manifest.schema_version < SqliteStore::schema_version() {
            format!(", upgraded to schema v{}", SqliteStore::schema_version())
        } else {
            String::new()
        },
        r.state.display(),
    );
    Ok(())
}

/// Copies the SQLite database open as `src` to the new file `dest` (0600)
/// with the online backup API, in one step: one read transaction, so the
/// copy is one committed state even while other connections write. The copy
/// is left in rollback-journal mode (a single self-contained file) and
/// passes `PRAGMA quick_check`.
///
/// `dest` must not exist (it is created exclusively, so two processes
/// picking the same name cannot overwrite each other's copy); an
/// [`std::io::ErrorKind::AlreadyExists`] error leaves it alone.
pub(crate) fn copy_database(src: &Connection, dest: &Path) -> anyhow::Result<()> {
    create_new_private_file(dest)?;
    let copy = || -> anyhow::Result<()> {
        let mut out = Connection::open_with_flags(
            dest,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        {
            let backup = rusqlite::backup::Backup::new(src, &mut out)?;
            let deadline = Instant::now() + COPY_TIMEOUT;
            loop {
                // -1: every page in this step, so no writer can restart it.
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => {}
                    _ if Instant::now() > deadline => bail!(
                        "the database stayed locked for {COPY_TIMEOUT:?}; try again when it is less busy"
                    ),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let mode: String =
            out.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            bail!("the copy stayed in journal mode {mode}");
        }
        let check: String = out.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            bail!("the copy fails SQLite's quick_check: {check}");
        }
        out.close().map_err(|(_, e)| e)?;
        Ok(())
    };
    copy().inspect_err(|_| {
        let _ = std::fs::remove_file(dest);
        let _ = std::fs::remove_file(sidecar(dest, "-journal"));
    })
}

/// Writes the archive; returns its manifest.
fn write_backup(state: &Path, out: &Path) -> anyhow::Result<Manifest> {
    let state_meta = std::fs::metadata(state).with_context(|| {
        format!(
            "no state directory at {}: pass the relay's --state DIR",
            state.display()
        )
    })?;
    if !state_meta.is_dir() {
        bail!(
            "{} is not a directory: pass the relay's --state DIR",
            state.display()
        );
    }
    if !state.join(DB_FILE).is_file() {
        bail!(
            "{} holds no {DB_FILE}: is it a relay's state directory? Pass the relay's --state DIR",
            state.display()
        );
    }
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not name a file: pass --out FILE", out.display()))?;
    if out.is_dir() {
        bail!("{} is a directory: pass --out FILE", out.display());
    }
    let out_dir_abs = std::fs::canonicalize(&out_dir).with_context(|| {
        format!(
            "the directory {} for the backup does not exist: create it or pick another --out",
            out_dir.display()
        )
    })?;
    let state_abs = std::fs::canonicalize(state)
        .with_context(|| format!("resolving the state directory {}", state.display()))?;
    if out_dir_abs.starts_with(&state_abs) {
        bail!(
            "refusing to write the backup inside the state directory {}: pick an --out elsewhere",
            state.display()
        );
    }

    let staging =
        Staging::create(out_dir.join(format!(".{out_name}.tmp-{}.d", std::process::id())))?;
    let (files, databases) = collect(state)?;
    let mut members = Vec::with_capacity(files.len() + databases.len());
    // Plain files first, databases last: the audit log's checkpoint file must
    // never name a record the copied database lacks.
    for rel in &files {
        let from = state.join(rel);
        let to = staging.path.join(rel);
        create_private_dir(to.parent().unwrap_or(&staging.path))?;
        // None: removed since the walk (e.g. a file the relay retired).
        if copy_plain(&from, &to)?.is_some() {
            members.push(member(&to, rel, MemberKind::File)?);
        }
    }
    for rel in &databases {
        let from = state.join(rel);
        let to = staging.path.join(rel);
        create_private_dir(to.parent().unwrap_or(&staging.path))?;
        let src = open_source(&from)?;
        copy_database(&src, &to).with_context(|| {
            format!(
                "copying the database {} with SQLite's online backup",
                from.display()
            )
        })?;
        members.push(member(&to, rel, MemberKind::Sqlite)?);
    }
    let schema_version = SqliteStore::file_schema_version(&staging.path.join(DB_FILE))
        .with_context(|| format!("reading the schema version of the copy of {DB_FILE}"))?;
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        relay_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: unix_now(),
        schema_version,
        members,
    };

    let tmp = out_dir.join(format!(".{out_name}.tmp-{}", std::process::id()));
    let written = write_archive(&tmp, &manifest, &staging.path);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing the backup {}", tmp.display())));
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("replacing {} with the new backup", out.display()));
    }
    sync_dir(&out_dir);
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
struct Restored {
    manifest: Manifest,
    state: PathBuf,
    moved_aside: Option<PathBuf>,
}

/// Verifies `file`, then swaps it in as the state dir `state`.
fn restore_into(file: &Path, state: &Path, force: bool) -> anyhow::Result<Restored> {
    let archive = File::open(file)
        .with_context(|| format!("cannot read the backup {}: check the path", file.display()))?;
    let target = std::path::absolute(state)
        .with_context(|| format!("resolving the state directory {}", state.display()))?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} cannot be a state directory", target.display()))?
        .to_owned();
    let parent = target
        .parent()
        .with_context(|| format!("{} cannot be a state directory", target.display()))?
        .to_path_buf();
    create_private_dir(&parent)
        .with_context(|| format!("creating {} for the state directory", parent.display()))?;

    // Unpack beside the target, so the final step is one rename.
    let staging = Staging::create(parent.join(format!(".{name}.restore-{}", std::process::id())))?;
    let manifest = unpack(archive, file, &staging.path)?;

    // A serving relay holds a shared lock on <state>/relay.lock (two may, for
    // a moment, during `serve --replace`); restore takes it exclusively for
    // the whole swap, so no relay starts on a half-restored directory.
    let _lock = if target.is_dir() {
        Some(crate::state_dir::lock_exclusive(&target).with_context(|| {
            format!(
                "a relay is serving from {}: stop it first (under systemd: `systemctl stop mcp-relay.socket mcp-relay.service`, or the socket starts it again), then restore",
                target.display()
            )
        })?)
    } else {
        None
    };
    // Open it once as the relay would, before anything is swapped: a backup
    // from an older relay is upgraded now (with its own pre-migration copy
    // under backups/), and one that does not open changes nothing.
    SqliteStore::open(&staging.path.join(DB_FILE)).with_context(|| {
        format!(
            "the database in {} does not open; the backup may come from an incompatible relay. Nothing was changed",
            file.display()
        )
    })?;
    if holds_state(&target)? {
        for db in [DB_FILE, "audit.db"] {
            let path = target.join(db);
            if held_open(&path)? {
                bail!(
                    "{} is open in another process, most likely a relay running on {}: stop it (and any `mcp-relay audit tail --follow`), then restore again",
                    path.display(),
                    target.display()
                );
            }
        }
        if !force {
            bail!(
                "{} already holds state: restoring would replace it. Pass --force to move it aside (to {}.before-restore-<time>) and restore, or pick an empty --state DIR",
                target.display(),
                target.display()
            );
        }
    }
    let moved_aside = if holds_state(&target)? {
        let mut aside = parent.join(format!("{name}.before-restore-{}", unix_now()));
        let mut n = 1;
        while aside.exists() {
            aside = parent.join(format!("{name}.before-restore-{}-{n}", unix_now()));
            n += 1;
        }
        std::fs::rename(&target, &aside).with_context(|| {
            format!(
                "moving the old state directory {} aside to {}",
                target.display(),
                aside.display()
            )
        })?;
        Some(aside)
    } else {
        // Absent, or an empty directory (which a rename cannot replace).
        if target.is_dir() {
            let _ = std::fs::remove_file(target.join(crate::state_dir::LOCK_FILE));
            std::fs::remove_dir(&target)
                .with_context(|| format!("replacing the empty directory {}", target.display()))?;
        }
        None
    };
    if let Err(e) = std::fs::rename(&staging.path, &target) {
        if let Some(aside) = &moved_aside {
            let _ = std::fs::rename(aside, &target);
        }
        return Err(e)
            .with_context(|| format!("moving the restored state into {}", target.display()));
    }
    staging.disarm();
    sync_dir(&parent);
    Ok(Restored {
        manifest,
        state: target,
        moved_aside,
    })
}

/// Unpacks the archive into `dest` and checks it against its manifest.
fn unpack(archive: File, file: &Path, dest: &Path) -> anyhow::Result<Manifest> {
    let shown = file.display();
    let damaged = |e: std::io::Error| {
        anyhow::anyhow!(
            "{shown} is damaged or is not a backup made by `mcp-relay backup` ({e}); use another backup"
        )
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(archive)));
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut count = 0usize;
    for entry in ar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        count += 1;
        if count > MAX_MEMBERS + 1 {
            bail!("{shown} holds more than {MAX_MEMBERS} files; refusing it");
        }
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            anyhow::anyhow!("{shown} holds a member whose name is not UTF-8; refusing it")
        })?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            bail!(
                "{shown}: member {path:?} is a {kind:?} entry, but a relay backup holds only regular files; refusing it"
            );
        }
        let size = entry.size();
        if size > MAX_MEMBER_BYTES {
            bail!(
                "{shown}: member {path:?} is {size} bytes, over the {MAX_MEMBER_BYTES}-byte limit; refusing it"
            );
        }
        total = total.saturating_add(size);
        if total > MAX_TOTAL_BYTES {
            bail!("{shown} unpacks to more than {MAX_TOTAL_BYTES} bytes; refusing it");
        }
        if path == MANIFEST_NAME {
            if manifest_bytes.is_some() || size > MAX_MANIFEST_BYTES {
                bail!("{shown} has a duplicate or oversized manifest; refusing it");
            }
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut bytes)
                .map_err(damaged)?;
            manifest_bytes = Some(bytes);
            continue;
        }
        let rel = path
            .strip_prefix(STATE_PREFIX)
            .filter(|rel| is_safe_relative(rel))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{shown}: member {path:?} is not a plain path under {STATE_PREFIX} (absolute, `..` or empty parts); refusing it"
                )
            })?
            .to_owned();
        if found.contains_key(&rel) {
            bail!("{shown}: member {path:?} appears twice; refusing it");
        }
        let to = dest.join(&rel);
        create_private_dir(to.parent().unwrap_or(dest))?;
        let mut out = create_private_file(&to)?;
        let (n, sha) = copy_hashing(&mut (&mut entry).take(size), &mut out).map_err(damaged)?;
        out.sync_all()
            .with_context(|| format!("writing {}", to.display()))?;
        found.insert(rel, (n, sha));
    }

    let bytes = manifest_bytes.with_context(|| {
        format!("{shown} has no {MANIFEST_NAME}: it is not a backup made by `mcp-relay backup`")
    })?;
    #[derive(Deserialize)]
    struct Format {
        format_version: u32,
    }
    let format: Format = serde_json::from_slice(&bytes)
        .with_context(|| format!("{shown}: its manifest is not valid JSON; use another backup"))?;
    if format.format_version > FORMAT_VERSION {
        bail!(
            "{shown} was made by a newer mcp-relay (backup format {}; this one reads up to {FORMAT_VERSION}): restore it with that version or newer",
            format.format_version
        );
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{shown}: its manifest is malformed; use another backup"))?;
    if manifest.schema_version > SqliteStore::schema_version() {
        bail!(
            "{shown} was made by mcp-relay {} with database schema v{}; this mcp-relay ({}) knows up to v{}: restore it with mcp-relay {} or newer",
            manifest.relay_version,
            manifest.schema_version,
            env!("CARGO_PKG_VERSION"),
            SqliteStore::schema_version(),
            manifest.relay_version,
        );
    }
    let mut listed = BTreeSet::new();
    for m in &manifest.members {
        if !listed.insert(m.path.as_str()) {
            bail!(
                "{shown}: the manifest lists {:?} twice; refusing it",
                m.path
            );
        }
        match found.get(&m.path) {
            None => bail!(
                "{shown}: {:?} is in the manifest but not in the archive: the file is truncated or was altered; use another backup",
                m.path
            ),
            Some((size, sha)) if *size != m.size || !sha.eq_ignore_ascii_case(&m.sha256) => {
                bail!(
                    "{shown}: {:?} does not match its sha256 in the manifest: the file is damaged or was altered; use another backup",
                    m.path
                )
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|p| !listed.contains(p.as_str())) {
        bail!("{shown}: {extra:?} is in the archive but not in its manifest; refusing it");
    }
    if !manifest
        .members
        .iter()
        .any(|m| m.path == DB_FILE && m.kind == MemberKind::Sqlite)
    {
        bail!("{shown} holds no {DB_FILE}: it is not a relay backup");
    }
    // The database's own word, not just the manifest's.
    let found_version = SqliteStore::file_schema_version(&dest.join(DB_FILE))
        .with_context(|| format!("{shown}: its {DB_FILE} does not open"))?;
    if found_version != manifest.schema_version {
        bail!(
            "{shown}: its {DB_FILE} has schema v{found_version} but the manifest says v{}: the file was altered; use another backup",
            manifest.schema_version
        );
    }
    Ok(manifest)
}

/// The state files to back up, relative to `state`: (plain files, SQLite files).
fn collect(state: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut files = Vec::new();
    let mut databases = Vec::new();
    walk(state, "", 0, &mut files, &mut databases)?;
    Ok((files, databases))
}

fn walk(
    dir: &Path,
    rel: &str,
    depth: usize,
    files: &mut Vec<String>,
    databases: &mut Vec<String>,
) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        bail!(
            "{} is nested more than {MAX_DEPTH} directories deep in the state dir; move it out",
            dir.display()
        );
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            bail!(
                "{} has a name that is not UTF-8: rename or remove it, then back up again",
                path.display()
            );
        };
        if skipped(&name, depth == 0) {
            continue;
        }
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if meta.is_dir() {
            walk(&path, &rel, depth + 1, files, databases)?;
        } else if meta.is_file() {
            if is_sqlite(&path)? {
                databases.push(rel);
            } else {
                files.push(rel);
            }
        } else {
            // Symlinks, sockets, FIFOs: not state a restore could recreate safely.
            eprintln!("backup: skipping {} (not a regular file)", path.display());
        }
    }
    Ok(())
}

/// Whether a state-dir entry stays out of backups.
fn skipped(name: &str, top_level: bool) -> bool {
    (top_level && matches!(name, "endpoints.json" | "backups"))
        || [
            "-wal", "-shm", "-journal", ".lock", ".pid", ".sock", ".tmp", "~",
        ]
        .iter()
        .any(|s| name.ends_with(s))
        || name.contains(".tmp-")
}

/// Whether `path` starts with the SQLite header.
fn is_sqlite(path: &Path) -> anyhow::Result<bool> {
    let mut head = [0u8; 16];
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match f.read_exact(&mut head) {
        Ok(()) => Ok(&head == SQLITE_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Opens a live database for copying: read-write (a WAL reader may need to
/// create the `-shm` file) but `query_only`, falling back to read-only.
fn open_source(path: &Path) -> anyhow::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_READ_WRITE)
        .or_else(|_| Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_READ_ONLY))
        .with_context(|| format!("opening the database {} to copy it", path.display()))?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Copies a plain file; `None` if it no longer exists. An append-only
/// `.jsonl` file loses a line being appended at this very moment (the next
/// backup has it), never gets half of it.
fn copy_plain(from: &Path, to: &Path) -> anyhow::Result<Option<()>> {
    let mut src = match File::open(from) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    };
    let mut out = create_private_file(to)?;
    std::io::copy(&mut src, &mut out).with_context(|| format!("copying {}", from.display()))?;
    if from.extension().is_some_and(|e| e == "jsonl") {
        let bytes = std::fs::read(to)?;
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        out.set_len(keep as u64)?;
    }
    out.sync_all()?;
    Ok(Some(()))
}

/// The manifest entry of the staged copy `staged`.
fn member(staged: &Path, rel: &str, kind: MemberKind) -> anyhow::Result<Member> {
    let mut f = File::open(staged).with_context(|| format!("reading {}", staged.display()))?;
    let (size, sha256) = copy_hashing(&mut f, &mut std::io::sink())
        .with_context(|| format!("reading {}", staged.display()))?;
    Ok(Member {
        path: rel.to_owned(),
        size,
        sha256,
        kind,
    })
}

/// Writes the tar.gz: the manifest, then every member from `staged`.
fn write_archive(tmp: &Path, manifest: &Manifest, staged: &Path) -> anyhow::Result<()> {
    let file = create_private_file(tmp)?;
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let manifest_bytes = serde_json::to_vec_pretty(manifest)?;
    append(
        &mut tar,
        MANIFEST_NAME,
        manifest_bytes.len() as u64,
        manifest.created_at,
        manifest_bytes.as_slice(),
    )?;
    for m in &manifest.members {
        let f = File::open(staged.join(&m.path))?;
        append(
            &mut tar,
            &format!("{STATE_PREFIX}{}", m.path),
            m.size,
            manifest.created_at,
            f,
        )?;
    }
    let file = tar
        .into_inner()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, data)?;
    Ok(())
}

/// Whether `rel` is a relative path of plain components (no `..`, `.`,
/// empty parts, backslashes or NULs).
fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']))
}

/// Whether `dir` exists and holds anything.
fn holds_state(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        // The lock file alone is no state (restore itself creates it).
        Ok(entries) => Ok(entries
            .flatten()
            .any(|e| e.file_name() != std::ffi::OsStr::new(crate::state_dir::LOCK_FILE))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} is a file, not a state directory", dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Whether another connection (in any process) has the database at `path`
/// open. A connection to a WAL database holds a shared lock on the file for
/// as long as it is open, and the relay keeps `relay.db` and `audit.db` open
/// for its whole life; asking for the exclusive lock without waiting fails
/// while any such connection exists. Nothing is written either way.
fn held_open(path: &Path) -> anyhow::Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} to see whether it is in use", path.display()))?;
    conn.busy_timeout(Duration::ZERO)?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    match conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        Ok(()) => Ok(false),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ) =>
        {
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("checking whether {} is in use", path.display())),
    }
}

/// Copies `from` to `to`; returns the byte count and hex sha256.
fn copy_hashing(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n: u64 = 0;
    loop {
        let got = from.read(&mut buf)?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
    Ok((n, hex::encode(hasher.finalize())))
}

/// A directory removed on drop unless disarmed.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Staging {
    fn create(path: PathBuf) -> anyhow::Result<Self> {
        // Left over from an earlier run with the same process id.
        let _ = std::fs::remove_dir_all(&path);
        create_private_dir(&path)
            .with_context(|| format!("creating the staging directory {}", path.display()))?;
        Ok(Self { path, armed: true })
    }

    /// Keeps the directory (it was renamed into place).
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    crate::state_dir::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Creates `path` with mode 0600; fails if it exists.
fn create_new_private_file(path: &Path) -> anyhow::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Creates (or truncates) `path` with mode 0600.
fn create_private_file(path: &Path) -> anyhow::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    Ok(f)
}

/// `path` with `suffix` appended to its file name (`relay.db-journal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Best-effort fsync of a directory, so a rename in it survives a power cut.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `1.5 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::{Email, NewUser, Store};

    fn new_user(email: &str) -> NewUser {
        NewUser {
            email: Email::parse(email).unwrap(),
            display_name: String::new(),
            groups: Vec::new(),
        }
    }

    fn record(n: i64) -> mcp_tunnel_audit::AuditRecord {
        mcp_tunnel_audit::AuditRecord {
            ts_ms: 1_700_000_000_000 + n,
            request_id: format!("r-{n}"),
            principal: Some("alice@example.com".into()),
            client_id: None,
            source: None,
            tunnel: "shop".into(),
            method: "tools/call".into(),
            tool: Some("read_query".into()),
            args_digest: None,
            args: None,
            decision: mcp_tunnel_audit::Decision::Allow,
            policies: Vec::new(),
            reason: None,
            status: Some(200),
            rpc_error: None,
            latency_us: 1,
            bytes_in: 1,
            bytes_out: 1,
        }
    }

    /// A state dir with a store (two users), an audit log, keys and a nested file.
    fn state_dir(root: &Path) -> PathBuf {
        let state = root.join("state");
        create_private_dir(&state).unwrap();
        let store = SqliteStore::open(&state.join(DB_FILE)).unwrap();
        for who in ["alice@example.com", "bob@example.com"] {
            store.add_user(&new_user(who)).unwrap();
        }
        let log = crate::audit::open(&state).unwrap();
        for n in 0..3 {
            log.append(record(n));
        }
        log.close().unwrap();
        std::fs::write(state.join("quic-reset.key"), [7u8; 32]).unwrap();
        std::fs::write(state.join("endpoints.json"), "{}").unwrap();
        std::fs::write(state.join(".keys.json.tmp-123"), "half").unwrap();
        create_private_dir(&state.join("acme/certs")).unwrap();
        std::fs::write(state.join("acme/certs/relay.pem"), "PEM").unwrap();
        create_private_dir(&state.join("backups")).unwrap();
        std::fs::write(state.join("backups/relay.db.v1-1.bak"), "old").unwrap();
        state
    }

    fn users(state: &Path) -> Vec<String> {
        let store = SqliteStore::open(&state.join(DB_FILE)).unwrap();
        store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.email.to_string())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Every member of a backup: (header, name, data).
    fn members(file: &Path) -> Vec<(tar::Header, String, Vec<u8>)> {
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(File::open(file).unwrap()));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.header().clone(), name, data)
            })
            .collect()
    }

    /// Writes `members` as a tar.gz, names and types exactly as given.
    fn write_members(file: &Path, members: &[(tar::Header, String, Vec<u8>)]) {
        let gz = flate2::write::GzEncoder::new(File::create(file).unwrap(), Default::default());
        let mut tar = tar::Builder::new(gz);
        for (header, name, data) in members {
            let mut h = header.clone();
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_cksum();
            tar.append(&h, data.as_slice()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    fn edit_manifest(file: &Path, edit: impl FnOnce(&mut Manifest)) {
        let mut all = members(file);
        let mut m: Manifest = serde_json::from_slice(&all[0].2).unwrap();
        edit(&mut m);
        all[0].2 = serde_json::to_vec(&m).unwrap();
        write_members(file, &all);
    }

    fn restore_err(file: &Path, state: &Path, force: bool) -> String {
        format!("{:#}", restore(file, state, force).unwrap_err())
    }

    #[test]
    fn backup_while_writing_then_restore_gives_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path());
        let out = dir.path().join("out/relay.tar.gz");
        create_private_dir(out.parent().unwrap()).unwrap();

        // A writer keeps adding users (and the audit log records) meanwhile.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::spawn(move || {
                let store = SqliteStore::open(&state.join(DB_FILE)).unwrap();
                let log = crate::audit::open(&state).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .add_user(&new_user(&format!("u{n}@example.com")))
                        .unwrap();
                    log.append(record(100 + n));
                    n += 1;
                }
                log.close().unwrap();
                n
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        backup(&state, &out).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);

        assert_eq!(mode(&out), 0o600);
        let names: Vec<String> = members(&out).into_iter().map(|m| m.1).collect();
        assert_eq!(names[0], MANIFEST_NAME);
        for want in [
            "state/relay.db",
            "state/audit.db",
            "state/audit.hmac-key",
            "state/quic-reset.key",
            "state/acme/certs/relay.pem",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        for gone in ["endpoints.json", "backups", "-wal", "-shm", ".tmp-"] {
            assert!(
                !names.iter().any(|n| n.contains(gone)),
                "{gone} in {names:?}"
            );
        }
        // Nothing left beside the archive.
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);

        let restored = dir.path().join("restored");
        restore(&out, &restored, false).unwrap();
        let who = users(&restored);
        assert!(
            who.contains(&"alice@example.com".to_owned()) && who.len() >= 2,
            "{who:?}"
        );
        assert_eq!(mode(&restored), 0o700);
        assert_eq!(mode(&restored.join("acme")), 0o700);
        assert_eq!(mode(&restored.join("quic-reset.key")), 0o600);
        assert_eq!(
            std::fs::read(restored.join("quic-reset.key")).unwrap(),
            [7u8; 32]
        );
        assert!(!restored.join("endpoints.json").exists());
        // The audit chain and its checkpoints still agree.
        let report = mcp_tunnel_audit::verify(&crate::audit::paths(&restored)).unwrap();
        assert!(report.ok() && report.records >= 3, "{report:?}");
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn damaged_or_altered_archives_are_refused_and_nothing_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path());
        let good = dir.path().join("good.tar.gz");
        backup(&state, &good).unwrap();
        let target = dir.path().join("target");
        let case = |name: &str| dir.path().join(name);

        // Truncated: the gzip stream ends early.
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(case("cut"), &bytes[..bytes.len() / 2]).unwrap();
        let err = restore_err(&case("cut"), &target, false);
        assert!(err.contains("damaged"), "{err}");

        // Not a gzip file at all.
        std::fs::write(case("junk"), b"not a backup").unwrap();
        let err = restore_err(&case("junk"), &target, false);
        assert!(err.contains("damaged"), "{err}");

        // One member altered after the manifest was written.
        std::fs::copy(&good, case("tampered")).unwrap();
        let mut all = members(&case("tampered"));
        let key = all
            .iter_mut()
            .find(|m| m.1 == "state/quic-reset.key")
            .unwrap();
        key.2[0] ^= 1;
        write_members(&case("tampered"), &all);
        let err = restore_err(&case("tampered"), &target, false);
        assert!(
            err.contains("quic-reset.key") && err.contains("sha256"),
            "{err}"
        );

        // A member the manifest does not list.
        let mut all = members(&good);
        all.push((all[1].0.clone(), "state/extra".into(), b"x".to_vec()));
        write_members(&case("extra"), &all);
        let err = restore_err(&case("extra"), &target, false);
        assert!(err.contains("not in its manifest"), "{err}");

        // Path traversal and absolute paths.
        for evil in ["state/../escaped", "/tmp/escaped", "state//x", "state/./x"] {
            let mut all = members(&good);
            all.push((all[1].0.clone(), evil.into(), b"x".to_vec()));
            write_members(&case("evil"), &all);
            let err = restore_err(&case("evil"), &target, false);
            assert!(err.contains("not a plain path"), "{evil}: {err}");
        }
        assert!(!dir.path().join("escaped").exists());

        // A symlink member.
        let mut all = members(&good);
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_link_name("/etc/passwd").unwrap();
        all.push((link, "state/link".into(), Vec::new()));
        write_members(&case("link"), &all);
        let err = restore_err(&case("link"), &target, false);
        assert!(
            err.contains("Symlink") && err.contains("regular files"),
            "{err}"
        );

        // No manifest.
        let all: Vec<_> = members(&good).into_iter().skip(1).collect();
        write_members(&case("bare"), &all);
        let err = restore_err(&case("bare"), &target, false);
        assert!(err.contains("no mcp-relay-backup.json"), "{err}");

        // Over the size limit (the header alone says so; nothing is read).
        let mut all = members(&good);
        all.truncate(1);
        let mut big = tar::Header::new_gnu();
        big.set_entry_type(tar::EntryType::Regular);
        big.set_size(MAX_MEMBER_BYTES + 1);
        big.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"state/x");
        big.set_cksum();
        let gz =
            flate2::write::GzEncoder::new(File::create(case("big")).unwrap(), Default::default());
        let mut tar = tar::Builder::new(gz);
        tar.append(&all[0].0, all[0].2.as_slice()).unwrap();
        tar.get_mut().write_all(big.as_bytes()).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let err = restore_err(&case("big"), &target, false);
        assert!(err.contains("over the"), "{err}");

        // Nothing of it reached the target or was left beside it.
        assert!(!target.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The good one still restores.
        restore(&good, &target, false).unwrap();
    }

    #[test]
    fn a_backup_from_a_newer_schema_or_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path());
        let file = dir.path().join("b.tar.gz");
        backup(&state, &file).unwrap();
        let target = dir.path().join("target");

        edit_manifest(&file, |m| {
            m.schema_version = SqliteStore::schema_version() + 1;
            m.relay_version = "9.0.0".into();
        });
        let err = restore_err(&file, &target, false);
        assert!(err.contains("newer") || err.contains("9.0.0"), "{err}");
        assert!(
            err.contains("restore it with mcp-relay 9.0.0 or newer"),
            "{err}"
        );

        edit_manifest(&file, |m| m.format_version = FORMAT_VERSION + 1);
        let err = restore_err(&file, &target, false);
        assert!(err.contains("newer mcp-relay (backup format 2"), "{err}");
        assert!(!target.exists());

        // The database itself, not only the manifest, is checked.
        let file = dir.path().join("c.tar.gz");
        let db = state.join(DB_FILE);
        let conn = Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
            [SqliteStore::schema_version() + 1],
        )
        .unwrap();
        drop(conn);
        backup(&state, &file).unwrap();
        let err = restore_err(&file, &target, false);
        assert!(err.contains("newer"), "{err}");
        edit_manifest(&file, |m| m.schema_version = SqliteStore::schema_version());
        let err = restore_err(&file, &target, false);
        assert!(err.contains("but the manifest says"), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn restore_refuses_a_dir_with_state_unless_forced_and_a_dir_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path());
        let file = dir.path().join("b.tar.gz");
        backup(&state, &file).unwrap();

        let target = dir.path().join("target");
        create_private_dir(&target).unwrap();
        // An empty directory is fine.
        restore(&file, &target, false).unwrap();
        SqliteStore::open(&target.join(DB_FILE))
            .unwrap()
            .add_user(&new_user("carol@example.com"))
            .unwrap();

        let err = restore_err(&file, &target, false);
        assert!(
            err.contains("already holds state") && err.contains("--force"),
            "{err}"
        );
        assert!(users(&target).contains(&"carol@example.com".to_owned()));

        // A process holding relay.db open (as a running relay does) blocks even --force.
        let relay = SqliteStore::open(&target.join(DB_FILE)).unwrap();
        let err = restore_err(&file, &target, true);
        assert!(err.contains("open in another process"), "{err}");
        drop(relay);
        let audit = crate::audit::open(&target).unwrap();
        let err = restore_err(&file, &target, true);
        assert!(err.contains("audit.db is open"), "{err}");
        audit.close().unwrap();
        drop(audit);
        // A serving relay's shared lock (two may hold it) blocks restore; a
        // relay cannot start while restore holds it.
        let serving = crate::state_dir::StateDir::open(&target).unwrap();
        let lock = serving.lock_shared().unwrap();
        let second = serving.lock_shared().expect("a --replace relay shares it");
        let err = restore_err(&file, &target, true);
        assert!(err.contains("a relay is serving from"), "{err}");
        drop((lock, second));
        let held = crate::state_dir::lock_exclusive(&target).unwrap();
        let refused = serving.lock_shared().unwrap_err().to_string();
        assert!(refused.contains("is being restored"), "{refused}");
        drop(held);

        restore(&file, &target, true).unwrap();
        assert!(!users(&target).contains(&"carol@example.com".to_owned()));
        let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("target.before-restore-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(users(&aside[0]).contains(&"carol@example.com".to_owned()));
    }

    #[test]
    fn backup_explains_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!(
            "{:#}",
            backup(&dir.path().join("nope"), &dir.path().join("b")).unwrap_err()
        );
        assert!(
            err.contains("no state directory") && err.contains("--state"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            backup(dir.path(), &dir.path().join("b")).unwrap_err()
        );
        assert!(err.contains("holds no relay.db"), "{err}");
        let state = state_dir(dir.path());
        let err = format!("{:#}", backup(&state, &state.join("b")).unwrap_err());
        assert!(err.contains("inside the state directory"), "{err}");
        let err = format!(
            "{:#}",
            backup(&state, &dir.path().join("missing/b")).unwrap_err()
        );
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn restoring_an_older_schema_upgrades_it_after_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        create_private_dir(&state).unwrap();
        let old = SqliteStore::schema_version() - 1;
        SqliteStore::create_at_version(&state.join(DB_FILE), old);
        let file = dir.path().join("b.tar.gz");
        backup(&state, &file).unwrap();
        let m: Manifest = serde_json::from_slice(&members(&file)[0].2).unwrap();
        assert_eq!(m.schema_version, old);

        let target = dir.path().join("target");
        restore(&file, &target, false).unwrap();
        assert_eq!(
            SqliteStore::file_schema_version(&target.join(DB_FILE)).unwrap(),
            SqliteStore::schema_version()
        );
        let copies: Vec<_> = std::fs::read_dir(target.join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(
            copies[0].starts_with(&format!("relay.db.v{old}-")),
            "{copies:?}"
        );
    }
}
