//! One inventory of every non-human credential the relay knows, for
//! `mcp-relay credentials list|revoke|rotate`.
//!
//! ```text
//!   relay.db ─── devices, OAuth clients, refresh families, enrollment tokens ──┐
//!   state dir ── signing-keys.json, device-ca.pem, dev-ca.pem,                 ├─► [Credential] ─► Filter ─► table / JSON
//!                agent-tokens.json                                           ──┘
//! ```
//!
//! Each source is a pure function from the records it reads to
//! [`Credential`] rows (kind, id, owner, created, expires, last used,
//! status), so the rules (what "expired" means for a family, who owns a
//! self-registered client) are tested without a state dir; [`collect`] is the
//! thin I/O shell that reads the store and the files. Nothing here ever reads
//! or prints a secret: rows carry ids, key ids and fingerprints.
//!
//! Signing keys are read from `<state>/signing-keys.json`, where the relay
//! keeps, reloads and rotates them; the store's `signing_keys` table is not
//! what a running relay signs with, so it is not listed.
//!
//! Adding a kind (share grants, when they exist) is: a [`Kind`] variant, a
//! source function, one line in [`collect`], and an arm in [`revoke`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::agent_tokens::{AgentTokens, TokenRecord};
use crate::auth::KEYS_FILE;
use crate::devices::rfc3339;
use crate::oauth::keys::StoredKeySet;
use crate::state_dir::StateDir;
use crate::store::{
    Client, ClientKind, ClientOwner, Device, EnrollToken, FamilyId, RefreshFamily, Store,
    StoreError, UnixTime, User, UserId,
};

/// Owner of credentials an admin made with the CLI (service accounts, agent tokens).
pub const OWNER_ADMIN: &str = "admin";
/// Owner of clients that registered themselves (dynamic registration, metadata documents).
pub const OWNER_SELF_REGISTERED: &str = "self-registered";
/// Owner of the relay's own keys (signing keys, CAs).
pub const OWNER_RELAY: &str = "relay";

/// The device CA certificate in the state dir.
pub const DEVICE_CA_FILE: &str = "device-ca.pem";
/// The development TLS CA certificate in the state dir (`serve --dev` only).
pub const DEV_CA_FILE: &str = "dev-ca.pem";

/// How many hex digits of a CA certificate's SHA-256 name it (16).
const CA_ID_HEX_DIGITS: usize = 16;

/// The kinds of credential, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An agent's device certificate (`dev_…`).
    Device,
    /// An OAuth client registered dynamically (RFC 7591).
    OauthClient,
    /// An OAuth client identified by its metadata document URL.
    MetadataClient,
    /// A service account (`client_credentials` with a secret).
    ServiceAccount,
    /// A refresh-token family: one sign-in of a user at a client.
    RefreshFamily,
    /// A key that signs access tokens and identity assertions.
    SigningKey,
    /// The CA that issues device certificates.
    DeviceCa,
    /// The development TLS CA (`serve --dev`).
    DevCa,
    /// A one-time token that enrolls a headless agent.
    EnrollToken,
    /// A legacy agent token (`mcpat_…`).
    AgentToken,
    /// Access to a tunnel shared by its owner (`mcp-agent share`).
    Grant,
}

impl Kind {
    /// Every kind, in listing order.
    pub const ALL: [Kind; 11] = [
        Kind::Device,
        Kind::OauthClient,
        Kind::MetadataClient,
        Kind::ServiceAccount,
        Kind::RefreshFamily,
        Kind::SigningKey,
        Kind::DeviceCa,
        Kind::DevCa,
        Kind::EnrollToken,
        Kind::AgentToken,
        Kind::Grant,
    ];

    /// The name used on the command line and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::OauthClient => "oauth-client",
            Kind::MetadataClient => "metadata-client",
            Kind::ServiceAccount => "service-account",
            Kind::RefreshFamily => "refresh-family",
            Kind::SigningKey => "signing-key",
            Kind::DeviceCa => "device-ca",
            Kind::DevCa => "dev-ca",
            Kind::EnrollToken => "enroll-token",
            Kind::AgentToken => "agent-token",
            Kind::Grant => "grant",
        }
    }

    /// The inventory kind of an OAuth client.
    pub fn of_client(kind: ClientKind) -> Self {
        match kind {
            ClientKind::Dynamic => Kind::OauthClient,
            ClientKind::MetadataDocument => Kind::MetadataClient,
            ClientKind::ServiceAccount => Kind::ServiceAccount,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown credential kind {given:?}; expected one of: {}", kind_names())]
pub struct UnknownKind {
    /// What was given.
    pub given: String,
}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownKind {
                given: s.to_owned(),
            })
    }
}

/// Every kind name, comma-separated (for help and errors).
pub fn kind_names() -> String {
    Kind::ALL.map(Kind::as_str).join(", ")
}

/// Where a credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Usable now.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked by an admin, a user, or reuse detection.
    Revoked,
    /// A one-time credential that was used.
    Used,
    /// A replaced signing key, still published so tokens it signed verify.
    Retired,
}

impl Status {
    /// The name shown in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
            Status::Used => "used",
            Status::Retired => "retired",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// What it is.
    pub kind: Kind,
    /// What `credentials revoke KIND ID` takes (never a secret).
    pub id: String,
    /// A human hint: label, client name, algorithm; may be empty.
    pub name: String,
    /// A user's email, or [`OWNER_ADMIN`], [`OWNER_SELF_REGISTERED`], [`OWNER_RELAY`].
    pub owner: String,
    /// When it was made, if known.
    pub created_at: Option<UnixTime>,
    /// When it stops working, if ever.
    pub expires_at: Option<UnixTime>,
    /// When it was last presented or exchanged, if recorded.
    pub last_used_at: Option<UnixTime>,
    /// Where it stands at the time of listing.
    pub status: Status,
}

impl Credential {
    /// The row as a JSON object (times as RFC 3339, unknown ones as `null`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "created_at": self.created_at.map(rfc3339),
            "expires_at": self.expires_at.map(rfc3339),
            "last_used_at": self.last_used_at.map(rfc3339),
            "status": self.status.as_str(),
        })
    }
}

/// Which rows `credentials list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these kinds (all when empty).
    pub kinds: Vec<Kind>,
    /// Only this owner (an email, compared case-insensitively, or `admin`, `relay`, `self-registered`).
    pub owner: Option<String>,
    /// Only active credentials that expire within this long.
    pub expiring_within: Option<Duration>,
}

impl Filter {
    /// Whether `c` passes, at `now`.
    pub fn matches(&self, c: &Credential, now: UnixTime) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&c.kind) {
            return false;
        }
        if let Some(owner) = &self.owner
            && !owner.trim().eq_ignore_ascii_case(&c.owner)
        {
            return false;
        }
        if let Some(within) = self.expiring_within {
            let horizon = now.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
            if c.status != Status::Active || c.expires_at.is_none_or(|e| e > horizon) {
                return false;
            }
        }
        true
    }
}

/// Why the inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The relay database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in the state dir could not be read or parsed.
    #[error("{}: {detail}; restore it from a backup of the state dir", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// Every credential in `state` and `store`, sorted by kind, then creation.
/// Reads only: a missing key or CA file (a relay never started) is no row,
/// never a file made here.
pub fn collect(
    state: &StateDir,
    store: &dyn Store,
    now: UnixTime,
) -> Result<Vec<Credential>, InventoryError> {
    let users = store.list_users()?;
    let owners = Owners::new(&users);
    let clients = store.list_clients()?;
    let mut rows = Vec::new();
    rows.extend(from_devices(&store.list_devices()?, &owners, now));
    rows.extend(from_clients(&clients, &owners, now));
    rows.extend(from_refresh_families(
        &store.list_refresh_families()?,
        &clients,
        &owners,
        now,
    ));
    let keys_path = state.path(KEYS_FILE);
    if let Some(bytes) = read_optional(&keys_path)? {
        let stored: StoredKeySet =
            serde_json::from_slice(&bytes).map_err(|e| InventoryError::File {
                path: keys_path.clone(),
                detail: e.to_string(),
            })?;
        // The file is rewritten only when a key is made (first use, rotation),
        // so its modification time is when the active key was created.
        let active_created = std::fs::metadata(&keys_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        rows.extend(from_signing_keys(&stored, active_created, now));
    }
    for (kind, file) in [(Kind::DeviceCa, DEVICE_CA_FILE), (Kind::DevCa, DEV_CA_FILE)] {
        let path = state.path(file);
        if let Some(bytes) = read_optional(&path)? {
            let row = from_ca_certificate(kind, &bytes, now)
                .map_err(|detail| InventoryError::File { path, detail })?;
            rows.push(row);
        }
    }
    rows.extend(from_enroll_tokens(
        &store.list_enroll_tokens()?,
        &owners,
        now,
    ));
    let agent_tokens = AgentTokens::new(state)
        .list()
        .map_err(|e| InventoryError::File {
            path: state.path("agent-tokens.json"),
            detail: format!("{e:#}"),
        })?;
    rows.extend(from_agent_tokens(&agent_tokens));
    rows.extend(from_grants(&store.list_grants(None)?, now));
    sort(&mut rows);
    Ok(rows)
}

/// Sorts rows by kind, then creation (unknown first), then id.
pub fn sort(rows: &mut [Credential]) {
    rows.sort_by(|a, b| (a.kind, a.created_at, &a.id).cmp(&(b.kind, b.created_at, &b.id)));
}

/// The rows as an aligned table with a header line; unknown values are `-`.
pub fn render_table(rows: &[Credential]) -> String {
    const HEADER: [&str; 8] = [
        "KIND",
        "ID",
        "NAME",
        "OWNER",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "STATUS",
    ];
    /// Names are free text from clients and agents: keep the table readable.
    const MAX_NAME_CHARS: usize = 32;
    let time = |t: Option<UnixTime>| t.map_or_else(|| "-".to_owned(), rfc3339);
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|c| {
            let mut name: String = c.name.chars().take(MAX_NAME_CHARS).collect();
            if name.is_empty() {
                name.push('-');
            } else if c.name.chars().count() > MAX_NAME_CHARS {
                name.pop();
                name.push('…');
            }
            [
                c.kind.as_str().to_owned(),
                c.id.clone(),
                name,
                c.owner.clone(),
                time(c.created_at),
                time(c.expires_at),
                time(c.last_used_at),
                c.status.as_str().to_owned(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut text = String::new();
        for (i, (col, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                text.push_str(col);
            } else {
                text.push_str(col);
                let pad = w - col.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// Device certificates.
pub fn from_devices<'a>(
    devices: &'a [Device],
    owners: &'a Owners,
    now: UnixTime,
) -> impl Iterator<Item = Credential> + 'a {
    devices.iter().map(move |d| Credential {
        kind: Kind::Device,
        id: d.id.clone(),
        name: d.label.clone(),
        owner: owners.user(d.user_id),
        created_at: Some(d.created_at),
        expires_at: Some(d.cert_expires_at),
        last_used_at: d.last_seen_at,
        status: lifetime_status(d.revoked_at, Some(d.cert_expires_at), now),
    })
}

/// OAuth clients and service accounts.
pub fn from_clients<'a>(
    clients: &'a [Client],
    owners: &'a Owners,
    now: UnixTime,
) -> impl Iterator<Item = Credential> + 'a {
    clients.iter().map(move |c| Credential {
        kind: Kind::of_client(c.kind),
        id: c.client_id.clone(),
        name: c.name.clone(),
        owner: match c.owner {
            ClientOwner::Admin => OWNER_ADMIN.to_owned(),
            ClientOwner::SelfRegistered => OWNER_SELF_REGISTERED.to_owned(),
            ClientOwner::User(id) => owners.user(id),
        },
        created_at: Some(c.created_at),
        expires_at: c.expires_at,
        last_used_at: c.last_used_at,
        status: lifetime_status(c.revoked_at, c.expires_at, now),
    })
}

/// Refresh-token families, named after their client.
pub fn from_refresh_families<'a>(
    families: &'a [RefreshFamily],
    clients: &'a [Client],
    owners: &'a Owners,
    now: UnixTime,
) -> impl Iterator<Item = Credential> + 'a {
    families.iter().map(move |f| Credential {
        kind: Kind::RefreshFamily,
        id: f.family.as_str().to_owned(),
        name: clients
            .iter()
            .find(|c| c.client_id == f.client_id)
            .map_or_else(|| f.client_id.clone(), |c| c.name.clone()),
        owner: owners.user(f.user_id),
        created_at: Some(f.created_at),
        expires_at: Some(f.expires_at),
        last_used_at: Some(f.last_used_at),
        status: lifetime_status(f.revoked_at, Some(f.expires_at), now),
    })
}

/// The relay's signing keys: the active one and the replaced ones still
/// published. `active_created` is when the active key was made, if known.
pub fn from_signing_keys(
    keys: &StoredKeySet,
    active_created: Option<UnixTime>,
    now: UnixTime,
) -> impl Iterator<Item = Credential> + '_ {
    let active = Credential {
        kind: Kind::SigningKey,
        id: keys.active.kid.clone(),
        name: keys.active.alg.as_str().to_owned(),
        owner: OWNER_RELAY.to_owned(),
        created_at: active_created,
        expires_at: None,
        last_used_at: None,
        status: Status::Active,
    };
    let retired = keys.retired.iter().map(move |r| {
        let retires_at = i64::try_from(r.retires_at).unwrap_or(i64::MAX);
        Credential {
            kind: Kind::SigningKey,
            id: r.key.kid.clone(),
            name: r.key.alg.as_str().to_owned(),
            owner: OWNER_RELAY.to_owned(),
            created_at: None,
            expires_at: Some(retires_at),
            last_used_at: None,
            status: if retires_at > now {
                Status::Retired
            } else {
                Status::Expired
            },
        }
    });
    std::iter::once(active).chain(retired)
}

/// A CA certificate (PEM): its fingerprint, subject and validity. `Err` says
/// what is wrong with the file.
pub fn from_ca_certificate(kind: Kind, pem: &[u8], now: UnixTime) -> Result<Credential, String> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or("no certificate in the file")?
        .map_err(|e| format!("not PEM: {e}"))?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| format!("not a certificate: {e}"))?;
    let mut id = hex::encode(Sha256::digest(&der));
    id.truncate(CA_ID_HEX_DIGITS);
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let validity = cert.validity();
    let expires_at = validity.not_after.timestamp();
    Ok(Credential {
        kind,
        id,
        name,
        owner: OWNER_RELAY.to_owned(),
        created_at: Some(validity.not_before.timestamp()),
        expires_at: Some(expires_at),
        last_used_at: None,
        status: lifetime_status(None, Some(expires_at), now),
    })
}

/// One-time enrollment tokens.
pub fn from_enroll_tokens<'a>(
    tokens: &'a [EnrollToken],
    owners: &'a Owners,
    now: UnixTime,
) -> impl Iterator<Item = Credential> + 'a {
    tokens.iter().map(move |t| Credential {
        kind: Kind::EnrollToken,
        id: t.id.clone(),
        name: String::new(),
        owner: owners.user(t.user_id),
        created_at: Some(t.created_at),
        expires_at: Some(t.expires_at),
        last_used_at: t.used_at,
        status: if t.used_at.is_some() {
            Status::Used
        } else {
            lifetime_status(None, Some(t.expires_at), now)
        },
    })
}

/// Share grants: the tunnel and who it is shared with; owned by the owner
/// who made it.
pub fn from_grants(
    grants: &[crate::store::Grant],
    now: UnixTime,
) -> impl Iterator<Item = Credential> + '_ {
    grants.iter().map(move |g| Credential {
        kind: Kind::Grant,
        id: g.id.clone(),
        name: format!(
            "{} → {}{}",
            g.tunnel,
            g.subject,
            match (&g.tools, g.read_only) {
                (Some(t), _) => format!(" tools={}", t.join(",")),
                (None, true) => " read-only".to_owned(),
                (None, false) => String::new(),
            }
        ),
        owner: g.created_by.clone(),
        created_at: Some(g.created_at),
        expires_at: g.expires_at,
        last_used_at: None,
        status: lifetime_status(g.revoked_at, g.expires_at, now),
    })
}

/// Agent tokens (revoked ones are deleted, so every one listed is active).
pub fn from_agent_tokens(tokens: &[TokenRecord]) -> impl Iterator<Item = Credential> + '_ {
    tokens.iter().map(|t| Credential {
        kind: Kind::AgentToken,
        id: t.id.clone(),
        name: t.label.clone(),
        owner: OWNER_ADMIN.to_owned(),
        created_at: i64::try_from(t.created_at).ok(),
        expires_at: None,
        last_used_at: None,
        status: Status::Active,
    })
}

/// User ids to the emails shown as owners.
#[derive(Debug, Clone, Default)]
pub struct Owners(HashMap<UserId, String>);

impl Owners {
    /// The owners among `users`.
    pub fn new(users: &[User]) -> Self {
        Self(
            users
                .iter()
                .map(|u| (u.id, u.email.as_str().to_owned()))
                .collect(),
        )
    }

    /// The email of `id`, or `user #id` for an id no user has.
    pub fn user(&self, id: UserId) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user #{id}"))
    }
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// It worked until now and no longer does.
    Now,
    /// It was already revoked, used or expired; nothing changed.
    Already,
}

/// Why [`revoke`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No credential of that kind has that id.
    #[error("no {kind} {id}; see `mcp-relay credentials list --kind {kind}`")]
    NotFound {
        /// The kind asked for.
        kind: Kind,
        /// The id given.
        id: String,
    },
    /// The id names a credential of another kind (clients share one id space).
    #[error(
        "{id} is of kind {actual}, not {asked}; run `mcp-relay credentials revoke {actual} {id}`"
    )]
    WrongKind {
        /// The id given.
        id: String,
        /// The kind asked for.
        asked: Kind,
        /// The kind it is.
        actual: Kind,
    },
    /// The id is not of the form this kind uses.
    #[error("{id:?} is not an id of kind {kind}: {reason}")]
    BadId {
        /// The kind asked for.
        kind: Kind,
        /// The id given.
        id: String,
        /// What the id should look like.
        reason: String,
    },
    /// This kind is not revoked one at a time.
    #[error("{0}")]
    NotRevocable(&'static str),
    /// The relay database could not be read or written.
    #[error(transparent)]
    Store(StoreError),
    /// A file in the state dir could not be read or written.
    #[error("{0}")]
    File(String),
}

/// Revokes the credential `kind` `id` through the operation that owns it:
/// devices, clients and service accounts, refresh families and enrollment
/// tokens in the store, agent tokens in their file. Signing keys and CAs are
/// refused ([`RevokeError::NotRevocable`]): they are replaced, not revoked.
pub fn revoke(
    state: &StateDir,
    store: &dyn Store,
    kind: Kind,
    id: &str,
) -> Result<Revoked, RevokeError> {
    let not_found = || RevokeError::NotFound {
        kind,
        id: id.to_owned(),
    };
    match kind {
        Kind::Device => {
            let device = store
                .get_device(id)
                .map_err(RevokeError::Store)?
                .ok_or_else(not_found)?;
            if device.revoked_at.is_some() {
                return Ok(Revoked::Already);
            }
            store.revoke_device(id).map_err(RevokeError::Store)?;
            Ok(Revoked::Now)
        }
        Kind::OauthClient | Kind::MetadataClient | Kind::ServiceAccount => {
            let client = store
                .get_client(id)
                .map_err(RevokeError::Store)?
                .ok_or_else(not_found)?;
            let actual = Kind::of_client(client.kind);
            if actual != kind {
                return Err(RevokeError::WrongKind {
                    id: id.to_owned(),
                    asked: kind,
                    actual,
                });
            }
            if client.revoked_at.is_some() {
                return Ok(Revoked::Already);
            }
            store.revoke_client(id).map_err(RevokeError::Store)?;
            Ok(Revoked::Now)
        }
        Kind::RefreshFamily => {
            let family = FamilyId::parse(id).ok_or_else(|| RevokeError::BadId {
                kind,
                id: id.to_owned(),
                reason: "expected 32 lowercase hex digits".to_owned(),
            })?;
            if store.revoke_family(&family).map_err(RevokeError::Store)? > 0 {
                return Ok(Revoked::Now);
            }
            let known = store
                .list_refresh_families()
                .map_err(RevokeError::Store)?
                .iter()
                .any(|f| f.family == family);
            if known {
                Ok(Revoked::Already)
            } else {
                Err(not_found())
            }
        }
        Kind::EnrollToken => match store.revoke_enroll_token(id) {
            Ok(true) => Ok(Revoked::Now),
            Ok(false) => Ok(Revoked::Already),
            Err(StoreError::NotFound { .. }) => Err(not_found()),
            Err(StoreError::Invalid { reason, .. }) => Err(RevokeError::BadId {
                kind,
                id: id.to_owned(),
                reason,
            }),
            Err(e) => Err(RevokeError::Store(e)),
        },
        Kind::AgentToken => {
            let revoked = AgentTokens::new(state)
                .revoke(id)
                .map_err(|e| RevokeError::File(format!("{e:#}")))?;
            if revoked {
                Ok(Revoked::Now)
            } else {
                Err(not_found())
            }
        }
        Kind::Grant => match store.revoke_grant(id) {
            Ok(Some(_)) => Ok(Revoked::Now),
            Ok(None) => {
                let known = store
                    .list_grants(None)
                    .map_err(RevokeError::Store)?
                    .iter()
                    .any(|g| g.id.starts_with(id));
                if known {
                    Ok(Revoked::Already)
                } else {
                    Err(not_found())
                }
            }
            Err(StoreError::Invalid { reason, .. }) => Err(RevokeError::BadId {
                kind,
                id: id.to_owned(),
                reason,
            }),
            Err(e) => Err(RevokeError::Store(e)),
        },
        Kind::SigningKey => Err(RevokeError::NotRevocable(
            "signing keys are replaced, not revoked: run `mcp-relay credentials rotate signing-key` (the old key stays published until tokens it signed expire)",
        )),
        Kind::DeviceCa => Err(RevokeError::NotRevocable(
            "the device CA cannot be revoked: rotate it with `mcp-relay credentials rotate device-ca` (the old one stays trusted while devices renew), or revoke devices one at a time with `mcp-relay credentials revoke device ID`",
        )),
        Kind::DevCa => Err(RevokeError::NotRevocable(
            "the dev TLS CA cannot be revoked, and rotating it is not supported yet; it exists only for `serve --dev`: use a fresh --state dir for a new one",
        )),
    }
}

/// What happens to a credential of `kind` after [`revoke`], for the
/// confirmation line.
pub fn revoke_effect(kind: Kind) -> &'static str {
    match kind {
        Kind::Device => "a running relay cuts its connections within a second",
        Kind::OauthClient | Kind::MetadataClient | Kind::ServiceAccount => {
            "its refresh tokens are revoked; a running relay refuses its access tokens within a second"
        }
        Kind::RefreshFamily => {
            "it can no longer be refreshed; access tokens already issued from it work until they expire (15 minutes by default)"
        }
        Kind::EnrollToken => "it can no longer enroll a device",
        Kind::AgentToken => "its tunnel names are free for others to claim",
        Kind::Grant => "a running relay refuses the grantee's next request (within a second)",
        Kind::SigningKey | Kind::DeviceCa | Kind::DevCa => "",
    }
}

/// A signing-key rotation: the new key's id, and the replaced one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The key that was active.
    pub old: String,
    /// The key now active.
    pub new: String,
    /// How long the old key stays published.
    pub overlap: Duration,
}

/// Why [`rotate`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Only signing keys rotate.
    #[error("{0}")]
    NotSupported(String),
    /// The key file could not be read, made or written.
    #[error("{0}")]
    Keys(String),
}

/// Rotates the credential of `kind`: a new signing key (the old one stays
/// published for [`crate::oauth::keys::DEFAULT_ROTATION_OVERLAP`]), as
/// `mcp-relay keys rotate` does. Other kinds are refused with what to do instead.
pub fn rotate(state: &StateDir, kind: Kind, now: UnixTime) -> Result<Rotated, RotateError> {
    use crate::oauth::keys::DEFAULT_ROTATION_OVERLAP;
    match kind {
        Kind::SigningKey => {
            let keys_err = |e: anyhow::Error| RotateError::Keys(format!("{e:#}"));
            let mut keys = crate::auth::load_or_create_keys(state).map_err(keys_err)?;
            let old = keys.active().kid().to_owned();
            keys.rotate(u64::try_from(now).unwrap_or(0), DEFAULT_ROTATION_OVERLAP)
                .map_err(|e| RotateError::Keys(format!("making a new signing key: {e}")))?;
            crate::auth::save_keys(state, &keys).map_err(keys_err)?;
            Ok(Rotated {
                old,
                new: keys.active().kid().to_owned(),
                overlap: DEFAULT_ROTATION_OVERLAP,
            })
        }
        Kind::DeviceCa => {
            // The old CA stays trusted while certificates it issued may still
            // be renewed: the default certificate lifetime plus renewal grace.
            let defaults = crate::limits::RelayLimits::default();
            let trust = defaults.device_cert_ttl + defaults.device_renew_grace;
            let old = crate::devices::DeviceCa::load_or_create(state)
                .map(|c| ca_fingerprint(c.cert_der()))
                .map_err(|e| RotateError::Keys(format!("{e:#}")))?;
            let new = crate::devices::DeviceCa::rotate(state, trust)
                .map_err(|e| RotateError::Keys(format!("{e:#}")))?;
            Ok(Rotated {
                old,
                new: ca_fingerprint(new.cert_der()),
                overlap: trust,
            })
        }
        Kind::DevCa => Err(RotateError::NotSupported(format!(
            "rotating the {kind} is not supported; delete dev-ca.pem and dev-ca.key and restart the --dev relay"
        ))),
        other => Err(RotateError::NotSupported(format!(
            "credentials of kind {other} do not rotate; revoke one with `mcp-relay credentials revoke {other} ID` and issue a new one (only `signing-key` rotates)"
        ))),
    }
}

fn ca_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "device CA {}",
        &hex::encode(sha2::Sha256::digest(der))[..16]
    )
}

/// Revoked first, then expired: a revoked credential stays "revoked" after
/// its expiry passes, which is what an audit wants to see.
fn lifetime_status(
    revoked_at: Option<UnixTime>,
    expires_at: Option<UnixTime>,
    now: UnixTime,
) -> Status {
    if revoked_at.is_some() {
        Status::Revoked
    } else if expires_at.is_some_and(|e| e <= now) {
        Status::Expired
    } else {
        Status::Active
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InventoryError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InventoryError::File {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::{Email, FamilyId};

    const NOW: UnixTime = 1_700_000_000;
    const DAY: i64 = 86_400;

    fn users() -> Vec<User> {
        vec![User {
            id: UserId(1),
            email: Email::parse("alice@example.com").unwrap(),
            display_name: String::new(),
            groups: Vec::new(),
            password_hash: None,
            disabled: false,
            created_at: NOW - 10 * DAY,
            tokens_revoked_at: None,
        }]
    }

    fn device(id: &str, expires: UnixTime, revoked: Option<UnixTime>) -> Device {
        Device {
            id: id.into(),
            user_id: UserId(1),
            label: "laptop".into(),
            key_sha256: "ab".repeat(32),
            created_at: NOW - DAY,
            cert_expires_at: expires,
            last_seen_at: Some(NOW - 60),
            revoked_at: revoked,
        }
    }

    fn client(id: &str, kind: ClientKind, owner: ClientOwner) -> Client {
        Client {
            client_id: id.into(),
            kind,
            name: format!("client {id}"),
            redirect_uris: Vec::new(),
            has_secret: kind == ClientKind::ServiceAccount,
            owner,
            metadata: serde_json::json!({}),
            registered_from: None,
            created_at: NOW - 2 * DAY,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn devices_carry_owner_expiry_last_seen_and_status() {
        let owners = Owners::new(&users());
        let rows: Vec<_> = from_devices(
            &[
                device("dev_live", NOW + DAY, None),
                device("dev_old", NOW - 1, None),
                device("dev_gone", NOW - 1, Some(NOW - 5)),
            ],
            &owners,
            NOW,
        )
        .collect();
        assert_eq!(rows[0].owner, "alice@example.com");
        assert_eq!(rows[0].expires_at, Some(NOW + DAY));
        assert_eq!(rows[0].last_used_at, Some(NOW - 60));
        let status: Vec<_> = rows.iter().map(|r| r.status).collect();
        assert_eq!(
            status,
            [Status::Active, Status::Expired, Status::Revoked],
            "revoked wins over expired"
        );
    }

    #[test]
    fn clients_are_kinded_and_owned_by_how_they_registered() {
        let owners = Owners::new(&users());
        let mut sa = client("mcpsa_x", ClientKind::ServiceAccount, ClientOwner::Admin);
        sa.expires_at = Some(NOW + 3 * DAY);
        let mut revoked = client("dyn", ClientKind::Dynamic, ClientOwner::SelfRegistered);
        revoked.revoked_at = Some(NOW - 1);
        let clients = [
            sa,
            revoked,
            client(
                "https://app.example/client.json",
                ClientKind::MetadataDocument,
                ClientOwner::SelfRegistered,
            ),
            client(
                "mine",
                ClientKind::ServiceAccount,
                ClientOwner::User(UserId(1)),
            ),
            client(
                "orphan",
                ClientKind::ServiceAccount,
                ClientOwner::User(UserId(9)),
            ),
        ];
        let rows: Vec<_> = from_clients(&clients, &owners, NOW).collect();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.kind, r.owner.as_str(), r.status))
            .collect();
        assert_eq!(
            got,
            [
                (Kind::ServiceAccount, "admin", Status::Active),
                (Kind::OauthClient, "self-registered", Status::Revoked),
                (Kind::MetadataClient, "self-registered", Status::Active),
                (Kind::ServiceAccount, "alice@example.com", Status::Active),
                (Kind::ServiceAccount, "user #9", Status::Active),
            ]
        );
        assert_eq!(rows[0].expires_at, Some(NOW + 3 * DAY));
    }

    #[test]
    fn refresh_families_are_named_after_their_client() {
        let owners = Owners::new(&users());
        let clients = [client(
            "c1",
            ClientKind::Dynamic,
            ClientOwner::SelfRegistered,
        )];
        let fam = |client: &str, expires, revoked| RefreshFamily {
            family: FamilyId::generate(),
            client_id: client.into(),
            user_id: UserId(1),
            created_at: NOW - DAY,
            expires_at: expires,
            last_used_at: NOW - 100,
            revoked_at: revoked,
        };
        let families = [
            fam("c1", NOW + DAY, None),
            fam("gone", NOW - 1, None),
            fam("c1", NOW + DAY, Some(NOW - 2)),
        ];
        let rows: Vec<_> = from_refresh_families(&families, &clients, &owners, NOW).collect();
        assert_eq!(rows[0].name, "client c1");
        assert_eq!(rows[0].id, families[0].family.as_str());
        assert_eq!(rows[0].last_used_at, Some(NOW - 100));
        assert_eq!(rows[1].name, "gone", "an unknown client shows its id");
        let status: Vec<_> = rows.iter().map(|r| r.status).collect();
        assert_eq!(status, [Status::Active, Status::Expired, Status::Revoked]);
    }

    #[test]
    fn enrollment_tokens_are_active_used_or_expired() {
        let owners = Owners::new(&users());
        let tok = |id: &str, expires, used| EnrollToken {
            id: id.into(),
            user_id: UserId(1),
            created_at: NOW - 60,
            expires_at: expires,
            used_at: used,
        };
        let rows: Vec<_> = from_enroll_tokens(
            &[
                tok("aaaaaaaaaaaa", NOW + 3600, None),
                tok("bbbbbbbbbbbb", NOW + 3600, Some(NOW - 5)),
                tok("cccccccccccc", NOW - 1, None),
            ],
            &owners,
            NOW,
        )
        .collect();
        let got: Vec<_> = rows.iter().map(|r| (r.status, r.last_used_at)).collect();
        assert_eq!(
            got,
            [
                (Status::Active, None),
                (Status::Used, Some(NOW - 5)),
                (Status::Expired, None)
            ]
        );
        assert!(rows.iter().all(|r| r.owner == "alice@example.com"));
    }

    #[test]
    fn signing_keys_list_the_active_key_and_retired_ones_until_they_go() {
        let mut set = crate::oauth::keys::KeySet::generate().unwrap();
        set.rotate(NOW as u64 - 100, Duration::from_secs(1000))
            .unwrap();
        set.rotate(NOW as u64 - 50, Duration::from_secs(10))
            .unwrap();
        let stored = set.to_stored();
        let rows: Vec<_> = from_signing_keys(&stored, Some(NOW - 50), NOW).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].id, set.active().kid());
        assert_eq!(
            (rows[0].status, rows[0].created_at, rows[0].expires_at),
            (Status::Active, Some(NOW - 50), None)
        );
        assert_eq!(rows[0].name, "EdDSA");
        let retired: Vec<_> = rows[1..].iter().map(|r| (r.status, r.expires_at)).collect();
        assert_eq!(
            retired,
            [
                (Status::Retired, Some(NOW + 900)),
                (Status::Expired, Some(NOW - 40))
            ]
        );
        assert!(rows.iter().all(|r| r.owner == OWNER_RELAY));
        let printed = render_table(&rows) + &serde_json::to_string(&rows[0].to_json()).unwrap();
        let private = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            stored.active.pkcs8.expose(),
        );
        assert!(
            !printed.contains(&private[..16]),
            "no private key material is printed"
        );
    }

    #[test]
    fn a_ca_certificate_reads_as_fingerprint_subject_and_validity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mcp-relay device CA");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - DAY).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 365 * DAY).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let row = from_ca_certificate(Kind::DeviceCa, cert.pem().as_bytes(), NOW).unwrap();
        assert_eq!(row.kind, Kind::DeviceCa);
        assert_eq!(row.name, "mcp-relay device CA");
        assert_eq!(row.id, &hex::encode(Sha256::digest(cert.der()))[..16]);
        assert_eq!(row.created_at, Some(NOW - DAY));
        assert_eq!(row.expires_at, Some(NOW + 365 * DAY));
        assert_eq!(row.status, Status::Active);
        let later = from_ca_certificate(Kind::DeviceCa, cert.pem().as_bytes(), NOW + 366 * DAY);
        assert_eq!(later.unwrap().status, Status::Expired);
        assert!(from_ca_certificate(Kind::DevCa, b"not a pem", NOW).is_err());
    }

    #[test]
    fn filters_combine_kind_owner_and_expiry_window() {
        let owners = Owners::new(&users());
        let mut rows: Vec<_> = from_devices(
            &[
                device("dev_soon", NOW + 3 * DAY, None),
                device("dev_later", NOW + 30 * DAY, None),
                device("dev_revoked", NOW + DAY, Some(NOW - 1)),
                device("dev_expired", NOW - 1, None),
            ],
            &owners,
            NOW,
        )
        .collect();
        rows.extend(from_agent_tokens(&[TokenRecord {
            id: "abcdefghjk".into(),
            sha256: "00".repeat(32),
            created_at: NOW as u64,
            label: "ci".into(),
        }]));
        let ids = |f: &Filter| -> Vec<String> {
            rows.iter()
                .filter(|r| f.matches(r, NOW))
                .map(|r| r.id.clone())
                .collect()
        };
        assert_eq!(ids(&Filter::default()).len(), 5);
        assert_eq!(
            ids(&Filter {
                expiring_within: Some(Duration::from_secs(7 * DAY as u64)),
                ..Filter::default()
            }),
            ["dev_soon"],
            "active and within the window; revoked, expired and never-expiring ones are not 'expiring'"
        );
        assert_eq!(
            ids(&Filter {
                owner: Some(" ADMIN ".into()),
                ..Filter::default()
            }),
            ["abcdefghjk"]
        );
        assert_eq!(
            ids(&Filter {
                owner: Some("Alice@Example.com".into()),
                kinds: vec![Kind::Device],
                expiring_within: Some(Duration::from_secs(60 * DAY as u64)),
            }),
            ["dev_soon", "dev_later"]
        );
        assert!(
            ids(&Filter {
                kinds: vec![Kind::ServiceAccount],
                ..Filter::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn kinds_parse_from_their_listed_names_only() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        let err = "client".parse::<Kind>().unwrap_err().to_string();
        assert!(
            err.contains("device, oauth-client") && err.contains("agent-token"),
            "{err}"
        );
    }

    #[test]
    fn the_table_is_aligned_and_marks_unknowns() {
        let rows = vec![
            Credential {
                kind: Kind::AgentToken,
                id: "abcdefghjk".into(),
                name: String::new(),
                owner: OWNER_ADMIN.into(),
                created_at: Some(NOW),
                expires_at: None,
                last_used_at: None,
                status: Status::Active,
            },
            Credential {
                kind: Kind::MetadataClient,
                id: "https://app.example/client.json".into(),
                name: "x".repeat(40),
                owner: OWNER_SELF_REGISTERED.into(),
                created_at: Some(NOW),
                expires_at: None,
                last_used_at: Some(NOW),
                status: Status::Revoked,
            },
        ];
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("KIND             ID"), "{table}");
        // Columns line up in characters (names may hold non-ASCII).
        let from = |line: &str, col: &str| -> String {
            let at = lines[0][..lines[0].find(col).unwrap()].chars().count();
            line.chars().skip(at).collect()
        };
        assert_eq!(from(lines[1], "STATUS"), "active");
        assert_eq!(from(lines[2], "STATUS"), "revoked");
        assert!(from(lines[1], "OWNER").starts_with("admin "));
        assert!(from(lines[2], "OWNER").starts_with("self-registered "));
        assert!(lines[1].contains(" - "), "unknown times and names are '-'");
        assert!(
            lines[2].contains(&format!("{}…", "x".repeat(31))),
            "long names are cut"
        );
        assert_eq!(rows[0].to_json()["expires_at"], serde_json::Value::Null);
        assert_eq!(rows[0].to_json()["created_at"], "2023-11-14T22:13:20Z");
    }
}
