//! Secrets an upstream needs (a database password, an API token), kept in
//! the [credential store](crate::credstore) and used only on this machine.
//!
//! ```text
//!  mcp-agent secrets set DBPASS ─► store: "secret:DBPASS" = value
//!                                         "secrets-index" = {DBPASS: created, last used}
//!  mcp-agent connect --stdio CMD --env PGPASSWORD=secret:DBPASS
//!  mcp-agent connect --upstream URL --upstream-header 'Authorization: Bearer secret:TOKEN'
//!      └─ resolved once at start (last used := now) ─► the child's environment,
//!         or a header on every request to the local HTTP upstream
//! ```
//!
//! A value never travels to the relay: the relay only ever sees the requests
//! MCP clients send and the responses the upstream returns. Values are not
//! logged and print as `MASKED`; errors name secrets, never their values.
//!
//! In a [`Template`] (`--env` and `--upstream-header` values), `secret:NAME`
//! stands for the value of secret NAME; the name runs to the first character
//! that cannot be in one. There is no escape: a literal `secret:` followed by
//! a name character cannot be written.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use mcp_tunnel_proto::Secret;

use crate::credstore::{CredStoreError, CredentialStore, SecretBytes};

/// What marks a secret in a template, and prefixes a secret's name in the store.
pub const PREFIX: &str = "secret:";
/// The store entry holding every secret's name, created and last-used times.
pub const INDEX_KEY: &str = "secrets-index";
/// Longest secret name.
pub const MAX_NAME_LEN: usize = 64;
/// Most secrets kept (the index must fit one credential).
pub const MAX_SECRETS: usize = 256;

/// A secret's name: 1 to [`MAX_NAME_LEN`] letters, digits, `_`, `.` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The credential-store entry holding the value (`secret:NAME`).
    fn store_key(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }
}

impl FromStr for SecretName {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.is_empty() && s.len() <= MAX_NAME_LEN && s.chars().all(is_name_char) {
            Ok(Self(s.to_owned()))
        } else {
            Err(SecretsError::BadName(s.to_owned()))
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `secrets list` shows about a secret (never its value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When the current value was stored.
    #[serde(serialize_with = "ser_time")]
    pub created: SystemTime,
    /// When an agent last resolved it, if ever.
    #[serde(serialize_with = "ser_time_opt")]
    pub last_used: Option<SystemTime>,
}

/// Why a secrets operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A secret name has characters outside the allowed set, or is too long.
    #[error("{0:?} is not a secret name: use 1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-'")]
    BadName(String),
    /// No secret of this name is stored.
    #[error("no secret {0}; add it with: mcp-agent secrets set {0}")]
    Unknown(String),
    /// `secrets set` was given an empty value.
    #[error("the value for {0} is empty; nothing was stored")]
    Empty(String),
    /// A secret's value is not UTF-8 text, but it is used where text is needed.
    #[error(
        "the value of secret {0} is not UTF-8 text; store it again with: mcp-agent secrets set {0}"
    )]
    NotText(String),
    /// Storing another secret would exceed [`MAX_SECRETS`].
    #[error("{MAX_SECRETS} secrets are stored already; remove one with: mcp-agent secrets rm NAME")]
    TooMany,
    /// A `--env` / `--upstream-header` value misuses `secret:`.
    #[error(
        "{0:?}: `secret:` must be followed by a secret name (1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-')"
    )]
    BadTemplate(String),
    /// The index entry is not what this program writes.
    #[error(
        "the secrets index ({INDEX_KEY}) in the credential store is damaged: {0}; remove the secrets with `mcp-agent secrets rm NAME` and set them again"
    )]
    DamagedIndex(String),
    /// The credential store failed.
    #[error(transparent)]
    Store(#[from] CredStoreError),
}

/// The secrets of one credential store.
#[derive(Debug)]
pub struct Secrets<'a> {
    store: &'a CredentialStore,
    now: fn() -> SystemTime,
}

impl<'a> Secrets<'a> {
    /// The secrets in `store`.
    pub fn new(store: &'a CredentialStore) -> Self {
        Self {
            store,
            now: SystemTime::now,
        }
    }

    /// The same, with another clock (tests).
    pub fn with_clock(self, now: fn() -> SystemTime) -> Self {
        Self { now, ..self }
    }

    /// The store holding them.
    pub fn store(&self) -> &CredentialStore {
        self.store
    }

    /// Stores `value` as secret `name`; `true` if it replaced a value.
    pub fn set(&self, name: &SecretName, value: &str) -> Result<bool, SecretsError> {
        if value.is_empty() {
            return Err(SecretsError::Empty(name.to_string()));
        }
        let now = (self.now)();
        self.store.update(|u| {
            let mut index = read_index(u.get(INDEX_KEY)?)?;
            let replaced = u.get(&name.store_key())?.is_some();
            if !index.secrets.contains_key(name.as_str()) && index.secrets.len() >= MAX_SECRETS {
                return Err(SecretsError::TooMany);
            }
            u.set(&name.store_key(), value.as_bytes())?;
            let last_used = index
                .secrets
                .get(name.as_str())
                .and_then(|e| e.last_used.clone());
            index.secrets.insert(
                name.to_string(),
                IndexEntry {
                    created: rfc3339(now),
                    last_used,
                },
            );
            u.set(INDEX_KEY, &write_index(&index)?)?;
            Ok(replaced)
        })
    }

    /// Every secret's name and dates, by name.
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        let index = read_index(self.store.get(INDEX_KEY)?)?;
        index
            .secrets
            .into_iter()
            .map(|(name, e)| {
                Ok(SecretInfo {
                    created: parse_time(&e.created)?,
                    last_used: e.last_used.as_deref().map(parse_time).transpose()?,
                    name,
                })
            })
            .collect()
    }

    /// Deletes secret `name` ([`SecretsError::Unknown`] if there is none).
    pub fn remove(&self, name: &SecretName) -> Result<(), SecretsError> {
        self.store.update(|u| {
            let mut index = read_index(u.get(INDEX_KEY)?)?;
            let listed = index.secrets.remove(name.as_str()).is_some();
            let stored = u.delete(&name.store_key())?;
            if !listed && !stored {
                return Err(SecretsError::Unknown(name.to_string()));
            }
            if listed {
                u.set(INDEX_KEY, &write_index(&index)?)?;
            }
            Ok(())
        })
    }

    /// The values of `names`, for an upstream about to start; records them
    /// as used now. Fails on the first secret that is not stored.
    pub fn resolve<'n>(
        &self,
        names: impl IntoIterator<Item = &'n SecretName>,
    ) -> Result<Resolved, SecretsError> {
        let mut values = BTreeMap::new();
        for name in names {
            if values.contains_key(name) {
                continue;
            }
            let value = self
                .store
                .get(&name.store_key())?
                .ok_or_else(|| SecretsError::Unknown(name.to_string()))?;
            values.insert(name.clone(), value);
        }
        if !values.is_empty() {
            let now = rfc3339((self.now)());
            let touched = self.store.update(|u| {
                let mut index = read_index(u.get(INDEX_KEY)?)?;
                for name in values.keys() {
                    if let Some(e) = index.secrets.get_mut(name.as_str()) {
                        e.last_used = Some(now.clone());
                    }
                }
                u.set(INDEX_KEY, &write_index(&index)?)?;
                Ok::<_, SecretsError>(())
            });
            // The values are there; a failed bookkeeping write is no reason
            // not to serve.
            if let Err(e) = touched {
                tracing::warn!("could not record when the secrets were last used: {e}");
            }
        }
        Ok(Resolved(values))
    }
}

/// Secret values an upstream was started with, by name (`Debug` masks them).
#[derive(Debug, Default, Clone)]
pub struct Resolved(BTreeMap<SecretName, SecretBytes>);

impl Resolved {
    /// The names resolved.
    pub fn names(&self) -> impl Iterator<Item = &SecretName> {
        self.0.keys()
    }
}

/// A value with `secret:NAME` placeholders, e.g. `Bearer secret:TOKEN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Secret(SecretName),
}

impl FromStr for Template {
    type Err = SecretsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find(PREFIX) {
            let (before, after) = rest.split_at(at);
            let after = &after[PREFIX.len()..];
            let end = after
                .find(|c: char| !is_name_char(c))
                .unwrap_or(after.len());
            let name = after[..end]
                .parse::<SecretName>()
                .map_err(|_| SecretsError::BadTemplate(s.to_owned()))?;
            if !before.is_empty() {
                parts.push(Part::Text(before.to_owned()));
            }
            parts.push(Part::Secret(name));
            rest = &after[end..];
        }
        if !rest.is_empty() || parts.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }
}

impl Template {
    /// The secrets it refers to, in order (repeats included).
    pub fn secrets(&self) -> impl Iterator<Item = &SecretName> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(n) => Some(n),
            Part::Text(_) => None,
        })
    }

    /// True if it refers to at least one secret.
    pub fn has_secrets(&self) -> bool {
        self.secrets().next().is_some()
    }

    /// The value with each placeholder replaced by its secret from `resolved`.
    pub fn render(&self, resolved: &Resolved) -> Result<Secret, SecretsError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Secret(name) => {
                    let value = resolved
                        .0
                        .get(name)
                        .ok_or_else(|| SecretsError::Unknown(name.to_string()))?;
                    let text = value
                        .expose_str()
                        .ok_or_else(|| SecretsError::NotText(name.to_string()))?;
                    out.push_str(text);
                }
            }
        }
        Ok(Secret::new(out))
    }

    /// The value with each placeholder replaced by `with` (to check the
    /// literal parts before any secret is read).
    pub fn render_placeholders(&self, with: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Secret(_) => with,
            })
            .collect()
    }
}

/// `secrets list` as a table: name, created, last used.
pub fn format_table(infos: &[SecretInfo]) -> String {
    let width = infos
        .iter()
        .map(|i| i.name.len())
        .chain(std::iter::once("NAME".len()))
        .max()
        .unwrap_or(4);
    let mut out = format!("{:<width$}  {:<20}  LAST USED\n", "NAME", "CREATED");
    for i in infos {
        out.push_str(&format!(
            "{:<width$}  {:<20}  {}\n",
            i.name,
            rfc3339(i.created),
            i.last_used.map(rfc3339).unwrap_or_else(|| "never".into())
        ));
    }
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The index's format (JSON in the credential store).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Index {
    version: u32,
    secrets: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct IndexEntry {
    created: String,
    #[serde(default)]
    last_used: Option<String>,
}

const INDEX_VERSION: u32 = 1;

fn read_index(raw: Option<SecretBytes>) -> Result<Index, SecretsError> {
    let Some(raw) = raw else {
        return Ok(Index {
            version: INDEX_VERSION,
            ..Index::default()
        });
    };
    let index: Index = serde_json::from_slice(raw.expose())
        .map_err(|e| SecretsError::DamagedIndex(e.to_string()))?;
    if index.version != INDEX_VERSION {
        return Err(SecretsError::DamagedIndex(format!(
            "version {} is not {INDEX_VERSION}",
            index.version
        )));
    }
    Ok(index)
}

fn write_index(index: &Index) -> Result<Vec<u8>, SecretsError> {
    serde_json::to_vec(index).map_err(|e| SecretsError::DamagedIndex(e.to_string()))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse_time(s: &str) -> Result<SystemTime, SecretsError> {
    humantime::parse_rfc3339(s).map_err(|e| SecretsError::DamagedIndex(format!("time {s:?}: {e}")))
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

fn ser_time_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn t1() -> SystemTime {
        t0() + Duration::from_secs(3600)
    }

    fn name(s: &str) -> SecretName {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_checked() {
        for ok in ["DBPASS", "api.token", "a-b_c", &"x".repeat(MAX_NAME_LEN)] {
            assert!(ok.parse::<SecretName>().is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a:b", "ü", "a/b", &"x".repeat(MAX_NAME_LEN + 1)] {
            let e = bad.parse::<SecretName>().unwrap_err().to_string();
            assert!(e.contains("is not a secret name"), "{bad}: {e}");
        }
    }

    #[test]
    fn set_list_resolve_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        let secrets = Secrets::new(&store).with_clock(t0);
        assert!(secrets.list().unwrap().is_empty());
        assert!(!secrets.set(&name("DBPASS"), "hunter2").unwrap());
        assert!(!secrets.set(&name("TOKEN"), "tok-123").unwrap());
        let list = secrets.list().unwrap();
        assert_eq!(
            list,
            [
                SecretInfo {
                    name: "DBPASS".into(),
                    created: t0(),
                    last_used: None
                },
                SecretInfo {
                    name: "TOKEN".into(),
                    created: t0(),
                    last_used: None
                }
            ]
        );
        // The value sits under secret:NAME in the store.
        assert_eq!(
            store.get("secret:DBPASS").unwrap().unwrap().expose(),
            b"hunter2"
        );

        let later = Secrets::new(&store).with_clock(t1);
        let resolved = later.resolve([&name("DBPASS"), &name("DBPASS")]).unwrap();
        assert_eq!(
            format!("{resolved:?}"),
            "Resolved({SecretName(\"DBPASS\"): MASKED})"
        );
        let list = secrets.list().unwrap();
        assert_eq!(list[0].last_used, Some(t1()));
        assert_eq!(list[1].last_used, None);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"name": "DBPASS", "created": "2027-01-15T08:00:00Z", "last_used": "2027-01-15T09:00:00Z"})
        );
        assert!(json[1]["last_used"].is_null());
        let table = format_table(&list);
        assert!(!table.contains("hunter2"), "{table}");
        assert_eq!(
            table,
            "NAME    CREATED               LAST USED\n\
             DBPASS  2027-01-15T08:00:00Z  2027-01-15T09:00:00Z\n\
             TOKEN   2027-01-15T08:00:00Z  never\n"
        );

        // Replacing keeps last used, renews created.
        assert!(later.set(&name("DBPASS"), "hunter3").unwrap());
        let list = secrets.list().unwrap();
        assert_eq!((list[0].created, list[0].last_used), (t1(), Some(t1())));

        let e = secrets.resolve([&name("NOPE")]).unwrap_err().to_string();
        assert_eq!(e, "no secret NOPE; add it with: mcp-agent secrets set NOPE");
        secrets.remove(&name("DBPASS")).unwrap();
        assert_eq!(store.get("secret:DBPASS").unwrap(), None);
        assert_eq!(secrets.list().unwrap().len(), 1);
        let e = secrets.remove(&name("DBPASS")).unwrap_err().to_string();
        assert!(e.starts_with("no secret DBPASS"), "{e}");
        assert!(matches!(
            secrets.set(&name("E"), ""),
            Err(SecretsError::Empty(_))
        ));
    }

    #[test]
    fn templates_substitute_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        let secrets = Secrets::new(&store);
        secrets.set(&name("TOKEN"), "tok-123").unwrap();
        secrets.set(&name("U"), "alice").unwrap();

        let t: Template = "Bearer secret:TOKEN".parse().unwrap();
        assert_eq!(t.secrets().collect::<Vec<_>>(), [&name("TOKEN")]);
        let resolved = secrets.resolve(t.secrets()).unwrap();
        assert_eq!(t.render(&resolved).unwrap().expose(), "Bearer tok-123");
        assert_eq!(t.render_placeholders("x"), "Bearer x");

        let t: Template = "secret:U:secret:TOKEN@host".parse().unwrap();
        let resolved = secrets.resolve(t.secrets()).unwrap();
        assert_eq!(t.render(&resolved).unwrap().expose(), "alice:tok-123@host");

        let t: Template = "plain value".parse().unwrap();
        assert!(!t.has_secrets());
        assert_eq!(
            t.render(&Resolved::default()).unwrap().expose(),
            "plain value"
        );
        let t: Template = "".parse().unwrap();
        assert_eq!(t.render(&Resolved::default()).unwrap().expose(), "");

        for bad in ["secret:", "Bearer secret: x", "secret:ü"] {
            let e = bad.parse::<Template>().unwrap_err().to_string();
            assert!(
                e.contains("must be followed by a secret name"),
                "{bad}: {e}"
            );
        }
        // A secret missing from what was resolved is named, not guessed.
        let t: Template = "secret:OTHER".parse().unwrap();
        let e = t.render(&Resolved::default()).unwrap_err().to_string();
        assert!(e.starts_with("no secret OTHER"), "{e}");
    }

    #[test]
    fn a_damaged_index_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        store.set(INDEX_KEY, b"{not json").unwrap();
        let e = Secrets::new(&store).list().unwrap_err().to_string();
        assert!(e.contains("secrets index") && e.contains("damaged"), "{e}");
    }
}
