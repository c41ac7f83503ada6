//! Which agent serves which tunnel: persistent name claims plus the live
//! connections.
//!
//! A tunnel name is claimed by the first credential that serves it and stays
//! its own (so an unrelated agent cannot grab it while the owner's laptop
//! sleeps). Claims live in the state database (table `tunnel_claims`; one
//! primary-key lookup per connection) with a copy in memory for routing. The same credential connecting again replaces its old connection;
//! a different one is told the name is taken. A claim whose credential was
//! revoked is free again.
//!
//! Several devices of the same owner may serve one tunnel at once. New MCP
//! sessions are spread across them (round robin); a session stays on the
//! device whose upstream created it (its `Mcp-Session-Id` is remembered, in
//! a bounded cache); when that device leaves, the session's next request
//! gets 404 so the client re-initializes on a device that is still there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mcp_tunnel_proto::{ErrorCode, TunnelName};
use tokio::sync::Semaphore;

use crate::state_dir::StateDir;
use crate::store::Store;

impl AgentHandle {
    /// What a session is bound to: the device (or, for token agents, the
    /// credential), which stays the same when the agent reconnects.
    pub fn affinity(&self) -> &str {
        self.device.as_deref().unwrap_or(&self.owner)
    }
}

/// A connected agent serving one tunnel.
#[derive(Debug)]
pub struct AgentHandle {
    /// The QUIC connection to the agent.
    pub conn: quinn::Connection,
    /// Who owns the tunnel: an agent token id, or `user:<id>` for devices.
    pub owner: String,
    /// The device id, when it authenticated with a device certificate.
    pub device: Option<String>,
    /// Distinguishes this connection from earlier ones for the same tunnel.
    pub generation: u64,
    /// Bounds the request streams open to this agent at once.
    pub streams: Arc<Semaphore>,
    /// When it connected.
    pub connected_at: Instant,
    /// Where it connected from.
    pub remote: SocketAddr,
    /// Woken when the tunnel's grants change: the control loop then pushes
    /// a `PolicyUpdate`.
    pub policy_changed: tokio::sync::Notify,
}

/// One persisted claim.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// The credential (agent token id) that owns the name.
    pub owner: String,
    /// Seconds since the Unix epoch.
    pub claimed_at: u64,
}

/// What looking a tunnel up found.
#[derive(Debug, Clone)]
pub enum Route {
    /// Send it to this agent.
    Agent(Arc<AgentHandle>),
    /// The request's session lived on a device that is gone: 404.
    SessionGone,
    /// The tunnel is claimed but no agent is connected.
    Offline,
    /// No such tunnel.
    Unknown,
}

/// Sessions remembered at most (oldest evicted first).
pub const MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Clone)]
pub enum Lookup {
    /// An agent is connected.
    Online(Arc<AgentHandle>),
    /// The name is claimed but no agent is connected.
    Offline,
    /// Nobody ever served this name.
    Unknown,
}

/// Why an agent may not serve a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another credential owns the name.
    #[error(
        "tunnel name \"{0}\" belongs to someone else; choose another --name, or ask the relay's admin (`mcp-relay tunnels list`)"
    )]
    NameTaken(TunnelName),
    /// The claim could not be saved.
    #[error("the relay could not save the tunnel claim")]
    Store,
}

impl RegisterError {
    /// The wire code for a `Reject`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NameTaken(_) => ErrorCode::NAME_TAKEN,
            Self::Store => ErrorCode::INTERNAL,
        }
    }
}

/// Tunnels, their owners and their live agents.
#[derive(Debug)]
pub struct Registry {
    online: RwLock<HashMap<TunnelName, Vec<Arc<AgentHandle>>>>,
    /// Session id → (tunnel, affinity of the agent that holds it, the
    /// identity that created it).
    sessions: quick_cache::sync::Cache<String, (TunnelName, Arc<str>, Arc<str>)>,
    next_pick: std::sync::atomic::AtomicUsize,
    claims: Mutex<HashMap<TunnelName, Claim>>,
    store: Arc<dyn Store>,
    next_generation: AtomicU64,
    /// Connections in `online`, kept as a counter so admitting an agent does
    /// not walk every tunnel.
    online_total: std::sync::atomic::AtomicUsize,
    /// Woken whenever an agent registers (requests waiting for a
    /// reconnecting agent listen here).
    came_online: tokio::sync::Notify,
}

impl Registry {
    /// Loads the claims from `store` (importing a `tunnels.json` left in
    /// `state` by an older relay first).
    pub fn load(state: &StateDir, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        import_legacy_claims(state, store.as_ref())?;
        let claims = claims_from_store(store.as_ref())?;
        Ok(Self {
            online: RwLock::new(HashMap::new()),
            sessions: quick_cache::sync::Cache::new(MAX_SESSIONS),
            next_pick: std::sync::atomic::AtomicUsize::new(0),
            claims: Mutex::new(claims),
            store,
            next_generation: AtomicU64::new(1),
            online_total: std::sync::atomic::AtomicUsize::new(0),
            came_online: tokio::sync::Notify::new(),
        })
    }

    /// Re-reads every claim from the store (names reserved or released with
    /// `mcp-relay tunnels`, another process, since) and disconnects every
    /// agent serving a name that is no longer its owner's: a moved name must
    /// not keep reaching the old owner's machine. Returns how many were cut.
    pub fn reload_claims(&self) -> anyhow::Result<usize> {
        let mut cut = Vec::new();
        {
            // Under the claims lock throughout (then the online lock; nothing
            // takes them in the other order): a claim and registration made
            // meanwhile is neither lost nor taken for a stale agent.
            let mut claims = lock(&self.claims);
            *claims = claims_from_store(self.store.as_ref())?;
            let mut online = write(&self.online);
            online.retain(|name, agents| {
                let owner = claims.get(name).map(|c| c.owner.as_str());
                agents.retain(|a| {
                    let keep = Some(a.owner.as_str()) == owner;
                    if !keep {
                        cut.push(a.clone());
                    }
                    keep
                });
                !agents.is_empty()
            });
        }
        self.online_total.fetch_sub(cut.len(), Ordering::Relaxed);
        for a in &cut {
            tracing::warn!(remote = %a.remote, owner = %a.owner, "the tunnel name was moved or released by the admin: disconnecting its agent");
            a.conn.close(
                ErrorCode::REPLACED.0.into(),
                b"the tunnel name now belongs to someone else",
            );
        }
        Ok(cut.len())
    }

    /// Finds the agent serving `name`.
    pub fn lookup(&self, name: &TunnelName) -> Lookup {
        if let Some(h) = read(&self.online).get(name).and_then(|v| v.first()) {
            return Lookup::Online(h.clone());
        }
        if lock(&self.claims).contains_key(name) {
            Lookup::Offline
        } else {
            Lookup::Unknown
        }
    }

    /// Picks the agent for a request: the one holding its session, else the
    /// next device in turn.
    pub fn route(&self, name: &TunnelName, session: Option<&str>) -> Route {
        {
            let online = read(&self.online);
            let agents = online.get(name).map(Vec::as_slice).unwrap_or(&[]);
            // Connections known to be dead are skipped (they deregister shortly).
            let alive = |a: &&Arc<AgentHandle>| a.conn.close_reason().is_none();
            let live = agents.iter().filter(alive).count();
            if live > 0 {
                // Looked up by &str: no allocation on the request path.
                if let Some(sid) = session
                    && let Some((_, holder, _)) =
                        self.sessions.get(sid).filter(|(t, _, _)| t == name)
                {
                    return match agents
                        .iter()
                        .filter(alive)
                        .find(|a| a.affinity() == &*holder)
                    {
                        Some(a) => Route::Agent(a.clone()),
                        None => Route::SessionGone,
                    };
                }
                let k = if live == 1 {
                    0
                } else {
                    self.next_pick.fetch_add(1, Ordering::Relaxed) % live
                };
                if let Some(a) = agents.iter().filter(alive).nth(k) {
                    return Route::Agent(a.clone());
                }
            }
        }
        if lock(&self.claims).contains_key(name) {
            Route::Offline
        } else {
            Route::Unknown
        }
    }

    /// Remembers that `session` (an `Mcp-Session-Id` the upstream assigned)
    /// lives on `agent`'s machine (kept across its reconnects) and belongs
    /// to `principal` (the identity that created it).
    pub fn remember_session(
        &self,
        name: &TunnelName,
        session: &str,
        agent: &AgentHandle,
        principal: &str,
    ) {
        self.sessions.insert(
            session.to_owned(),
            (
                name.clone(),
                Arc::from(agent.affinity()),
                Arc::from(principal),
            ),
        );
    }

    /// Whether `principal` may use `session` on `name`: a session the relay
    /// knows belongs to the identity that created it. One it does not know
    /// (made before a relay restart, or evicted from the bounded cache) is
    /// passed on: the upstream answers 404 for sessions it does not hold.
    pub fn session_belongs_to(&self, name: &TunnelName, session: &str, principal: &str) -> bool {
        match self.sessions.get(session) {
            Some((t, _, p)) => &t == name && &*p == principal,
            None => true,
        }
    }

    /// Who claimed `name` (an agent token id, or `user:<id>`).
    pub fn claim_owner(&self, name: &str) -> Option<String> {
        lock(&self.claims).get(name).map(|c| c.owner.clone())
    }

    /// Every claimed tunnel and its owner string.
    pub fn claims_snapshot(&self) -> Vec<(TunnelName, String)> {
        lock(&self.claims)
            .iter()
            .map(|(t, c)| (t.clone(), c.owner.clone()))
            .collect()
    }

    /// The live connections serving `name`.
    pub fn agents_of(&self, name: &str) -> Vec<Arc<AgentHandle>> {
        read(&self.online).get(name).cloned().unwrap_or_default()
    }

    /// Number of connected agents.
    pub fn online_count(&self) -> usize {
        self.online_total.load(Ordering::Relaxed)
    }

    /// Tunnels with at least one connected agent.
    pub fn online_tunnel_count(&self) -> usize {
        read(&self.online).len()
    }

    /// Routes a request, waiting up to `wait` for an offline tunnel's agent
    /// to (re)connect: a relay that just restarted, or an agent on a
    /// flaky network, answers late instead of failing the call.
    pub async fn route_waiting(
        &self,
        name: &TunnelName,
        session: Option<&str>,
        wait: std::time::Duration,
    ) -> Route {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a registration in between wakes us.
            let notified = self.came_online.notified();
            let route = self.route(name, session);
            if !matches!(route, Route::Offline) || tokio::time::Instant::now() >= deadline {
                return route;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.route(name, session);
            }
        }
    }

    /// Makes `conn` the agent for `name`, claiming the name for `owner` if it is
    /// free. `owner_is_valid` says whether a claim's owner credential still
    /// exists (a revoked owner's claim is released). Returns the new handle and
    /// the connection it replaced, if any (the caller closes it).
    pub fn register(
        &self,
        name: &TunnelName,
        owner: &str,
        device: Option<String>,
        conn: quinn::Connection,
        max_streams: u32,
        owner_is_valid: impl Fn(&str) -> bool,
    ) -> Result<(Arc<AgentHandle>, Option<Arc<AgentHandle>>), RegisterError> {
        self.claim(name, owner, owner_is_valid)?;
        let handle = Arc::new(AgentHandle {
            remote: conn.remote_address(),
            conn,
            owner: owner.to_owned(),
            device,
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            streams: Arc::new(Semaphore::new(max_streams as usize)),
            connected_at: Instant::now(),
            policy_changed: tokio::sync::Notify::new(),
        });
        let mut online = write(&self.online);
        let agents = online.entry(name.clone()).or_default();
        let before = agents.len();
        // The same device (or, for token agents, the same credential)
        // reconnecting replaces its old connection; other devices stay.
        let same = |a: &Arc<AgentHandle>| match (&a.device, &handle.device) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a.owner == handle.owner,
            _ => false,
        };
        let old = agents.iter().position(same).map(|i| agents.swap_remove(i));
        // An owner change (a reservation moved the name) drops the others.
        let foreign: Vec<Arc<AgentHandle>> = agents
            .iter()
            .filter(|a| a.owner != handle.owner)
            .cloned()
            .collect();
        agents.retain(|a| a.owner == handle.owner);
        for f in foreign {
            f.conn.close(
                ErrorCode::REPLACED.0.into(),
                b"the tunnel now belongs to someone else",
            );
        }
        agents.push(handle.clone());
        let after = agents.len();
        // `before` counted `old` and the foreign ones, `after` the new one.
        if after >= before {
            self.online_total
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.online_total
                .fetch_sub(before - after, Ordering::Relaxed);
        }
        drop(online);
        self.came_online.notify_waiters();
        Ok((handle, old))
    }

    /// Removes `name`'s agent if it is still the connection `generation`.
    pub fn deregister(&self, name: &TunnelName, generation: u64) -> bool {
        let mut online = write(&self.online);
        let Some(agents) = online.get_mut(name) else {
            return false;
        };
        let before = agents.len();
        agents.retain(|a| a.generation != generation);
        let removed = agents.len() != before;
        self.online_total
            .fetch_sub(before - agents.len(), Ordering::Relaxed);
        if agents.is_empty() {
            online.remove(name);
        }
        removed
    }

    /// Every connected agent (for shutdown).
    pub fn all_online(&self) -> Vec<(TunnelName, Arc<AgentHandle>)> {
        read(&self.online)
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |a| (k.clone(), a.clone())))
            .collect()
    }
}

impl Registry {
    /// Claims `name` for `owner` unless another valid credential holds it.
    /// Reads the claim from the store (an admin may have reserved or
    /// released the name since), writes only a new or changed claim.
    fn claim(
        &self,
        name: &TunnelName,
        owner: &str,
        owner_is_valid: impl Fn(&str) -> bool,
    ) -> Result<(), RegisterError> {
        let store_err = |e: crate::store::StoreError| {
            tracing::error!(error = %e, tunnel = %name, "saving the tunnel claim");
            RegisterError::Store
        };
        let mut claims = lock(&self.claims);
        let current = self.store.tunnel_claim(name.as_str()).map_err(store_err)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match current {
            Some((o, at)) if o == owner || owner_is_valid(&o) => {
                let mine = o == owner;
                claims.insert(
                    name.clone(),
                    Claim {
                        owner: o,
                        claimed_at: u64::try_from(at).unwrap_or(0),
                    },
                );
                if !mine {
                    return Err(RegisterError::NameTaken(name.clone()));
                }
            }
            // The owner's credential was revoked: the name is free again,
            // unless an admin moved it in the meantime.
            Some((old, _)) => {
                if !self
                    .store
                    .replace_tunnel_claim(name.as_str(), &old, owner, now as i64)
                    .map_err(store_err)?
                {
                    return Err(RegisterError::NameTaken(name.clone()));
                }
                claims.insert(name.clone(), claim_of(owner, now));
            }
            None => {
                if !self
                    .store
                    .add_tunnel_claim(name.as_str(), owner, now as i64)
                    .map_err(store_err)?
                {
                    // Claimed by someone else a moment ago (`tunnels reserve`).
                    return Err(RegisterError::NameTaken(name.clone()));
                }
                claims.insert(name.clone(), claim_of(owner, now));
            }
        }
        Ok(())
    }
}

fn claim_of(owner: &str, at: u64) -> Claim {
    Claim {
        owner: owner.to_owned(),
        claimed_at: at,
    }
}

/// Every claim: the store's, plus (for names the store lacks) those of a
/// `tunnels.json` an older relay left in `state` and no relay has imported
/// yet. Read-only: only `mcp-relay serve` imports the file (see
/// [`Registry::load`]), so a command run beside an older relay changes
/// nothing under it.
pub fn load_claims(
    state: &StateDir,
    store: &dyn Store,
) -> anyhow::Result<HashMap<TunnelName, Claim>> {
    let mut claims = claims_from_store(store)?;
    for (name, c) in read_claims(&state.path("tunnels.json"))? {
        claims.entry(name).or_insert(c);
    }
    Ok(claims)
}

/// Moves the claims of an older relay's `tunnels.json` into the store (one
/// transaction; names the store already has keep their owner), then renames
/// the file `tunnels.json.imported`. Safe to repeat after a crash.
fn import_legacy_claims(state: &StateDir, store: &dyn Store) -> anyhow::Result<()> {
    let legacy = state.path("tunnels.json");
    let old = read_claims(&legacy)?;
    if old.is_empty() && !legacy.exists() {
        return Ok(());
    }
    let rows: Vec<(String, String, i64)> = old
        .iter()
        .map(|(n, c)| (n.as_str().to_owned(), c.owner.clone(), c.claimed_at as i64))
        .collect();
    let added = store
        .add_tunnel_claims(&rows)
        .context("importing tunnels.json into the state database")?;
    let done = state.path("tunnels.json.imported");
    match std::fs::rename(&legacy, &done) {
        Ok(()) => {}
        // Someone else finished the same import.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("renaming {} after importing it", legacy.display()));
        }
    }
    tracing::info!(
        claims = old.len(),
        added,
        "imported the tunnel claims of tunnels.json into the state database (kept as {})",
        done.display()
    );
    Ok(())
}

fn claims_from_store(store: &dyn Store) -> anyhow::Result<HashMap<TunnelName, Claim>> {
    let mut out = HashMap::new();
    for (name, owner, at) in store.tunnel_claims().context("reading tunnel claims")? {
        let name = TunnelName::parse(&name)
            .with_context(|| format!("tunnel_claims holds an invalid name {name:?}"))?;
        out.insert(name, claim_of(&owner, u64::try_from(at).unwrap_or(0)));
    }
    Ok(out)
}

/// Reads a tunnel-name claims file of an older relay (missing: none).
fn read_claims(path: &std::path::Path) -> anyhow::Result<HashMap<TunnelName, Claim>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "{} is corrupt; fix it (it records who owns which tunnel name: removing it frees every name it holds)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

// A poisoned lock means a thread panicked while holding it; the maps stay
// structurally valid, so carry on with the data rather than cascade the panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn fixture() -> (tempfile::TempDir, StateDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&state.path(crate::store::DB_FILE)).unwrap());
        (dir, state, store)
    }

    fn name(s: &str) -> TunnelName {
        TunnelName::parse(s).unwrap()
    }

    #[test]
    fn first_credential_keeps_the_name_until_it_is_revoked() {
        let (_dir, state, store) = fixture();
        let reg = Registry::load(&state, store.clone()).unwrap();
        let valid = |o: &str| o != "revoked";
        reg.claim(&name("shop"), "alice", valid).unwrap();
        // The same credential again: fine, nothing rewritten.
        reg.claim(&name("shop"), "alice", valid).unwrap();
        assert_eq!(
            reg.claim(&name("shop"), "bob", valid),
            Err(RegisterError::NameTaken(name("shop")))
        );
        assert_eq!(reg.claim_owner("shop").as_deref(), Some("alice"));
        assert_eq!(store.tunnel_claim("shop").unwrap().unwrap().0, "alice");

        // An admin moved the name (another process, straight to the store):
        // the next connection sees it without a reload.
        store.set_tunnel_claim("shop", "revoked", 1).unwrap();
        reg.claim(&name("shop"), "bob", valid).unwrap();
        assert_eq!(store.tunnel_claim("shop").unwrap().unwrap().0, "bob");
        // Taking over a revoked owner's name does not overwrite a claim an
        // admin made in between.
        store.set_tunnel_claim("gone", "revoked", 1).unwrap();
        assert!(
            !store
                .replace_tunnel_claim("gone", "someone-else", "bob", 3)
                .unwrap()
        );
        assert!(
            store
                .replace_tunnel_claim("gone", "revoked", "bob", 3)
                .unwrap()
        );
        // Connections' own claims do not wake every relay's watcher.
        let rev = store.revision().unwrap();
        reg.claim(&name("fresh"), "dave", valid).unwrap();
        assert_eq!(store.revision().unwrap(), rev);
        // An admin's claims do (and a taken name is not overwritten).
        let row = |o: &str| vec![("admin".to_owned(), o.to_owned(), 4)];
        assert_eq!(store.add_tunnel_claims(&row("erin")).unwrap(), 1);
        assert!(store.revision().unwrap() > rev);
        assert_eq!(store.add_tunnel_claims(&row("frank")).unwrap(), 0);
        assert_eq!(store.tunnel_claim("admin").unwrap().unwrap().0, "erin");

        // A reservation made elsewhere shows up after reload_claims.
        store.set_tunnel_claim("reserved", "carol", 2).unwrap();
        assert_eq!(reg.claim_owner("reserved"), None);
        reg.reload_claims().unwrap();
        assert_eq!(reg.claim_owner("reserved").as_deref(), Some("carol"));
        assert!(matches!(reg.lookup(&name("reserved")), Lookup::Offline));
        assert!(matches!(reg.lookup(&name("nobody")), Lookup::Unknown));
    }

    #[test]
    fn an_older_relays_tunnels_json_is_imported_once() {
        let (_dir, state, store) = fixture();
        std::fs::write(
            state.path("tunnels.json"),
            r#"{"shop": {"owner": "tok1", "claimed_at": 100}, "docs": {"owner": "user:7", "claimed_at": 200}}"#,
        )
        .unwrap();
        // Commands read it without importing (an older relay may still run).
        store.set_tunnel_claim("shop", "admin-moved", 50).unwrap();
        let claims = load_claims(&state, store.as_ref()).unwrap();
        assert_eq!(claims.len(), 2);
        assert_eq!(claims[&name("docs")].owner, "user:7");
        assert_eq!(claims[&name("shop")].owner, "admin-moved");
        assert!(state.path("tunnels.json").exists());
        // The relay imports it once; the store's own rows win.
        let reg = Registry::load(&state, store.clone()).unwrap();
        assert!(!state.path("tunnels.json").exists());
        assert!(state.path("tunnels.json.imported").exists());
        assert_eq!(
            store.tunnel_claim("docs").unwrap(),
            Some(("user:7".into(), 200))
        );
        assert_eq!(reg.claim_owner("shop").as_deref(), Some("admin-moved"));
        // A broken file stops start-up with a message naming it.
        std::fs::write(state.path("tunnels.json"), "{not json").unwrap();
        let e = Registry::load(&state, store.clone()).unwrap_err();
        assert!(
            format!("{e:#}").contains("tunnels.json is corrupt"),
            "{e:#}"
        );
    }
}
