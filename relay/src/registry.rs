//! Which agent serves which tunnel: persistent name claims plus the live
//! connections.
//!
//! A tunnel name is claimed by the first credential that serves it and stays
//! its own (so an unrelated agent cannot grab it while the owner's laptop
//! sleeps). The same credential connecting again replaces its old connection;
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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mcp_tunnel_proto::{ErrorCode, TunnelName};
use tokio::sync::Semaphore;

use crate::state_dir::{StateDir, write_private};

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
    claims_path: PathBuf,
    next_generation: AtomicU64,
}

impl Registry {
    /// Loads the claims from `state`.
    pub fn load(state: &StateDir) -> anyhow::Result<Self> {
        let claims_path = state.path("tunnels.json");
        let claims = read_claims(&claims_path)?;
        Ok(Self {
            online: RwLock::new(HashMap::new()),
            sessions: quick_cache::sync::Cache::new(MAX_SESSIONS),
            next_pick: std::sync::atomic::AtomicUsize::new(0),
            claims: Mutex::new(claims),
            claims_path,
            next_generation: AtomicU64::new(1),
        })
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
        lock(&self.claims)
            .iter()
            .find(|(t, _)| t.as_str() == name)
            .map(|(_, c)| c.owner.clone())
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
        read(&self.online)
            .iter()
            .find(|(t, _)| t.as_str() == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Number of connected agents.
    pub fn online_count(&self) -> usize {
        read(&self.online).values().map(Vec::len).sum()
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
        {
            let mut claims = lock(&self.claims);
            // An admin may have reserved names (`mcp-relay tunnels reserve`) since.
            if let Ok(on_disk) = read_claims(&self.claims_path) {
                *claims = on_disk;
            }
            match claims.get(name) {
                Some(c) if c.owner == owner => {}
                Some(c) if owner_is_valid(&c.owner) => {
                    return Err(RegisterError::NameTaken(name.clone()));
                }
                _ => {
                    claims.insert(
                        name.clone(),
                        Claim {
                            owner: owner.to_owned(),
                            claimed_at: SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0),
                        },
                    );
                    let bytes =
                        serde_json::to_vec_pretty(&*claims).map_err(|_| RegisterError::Store)?;
                    write_private(&self.claims_path, &bytes).map_err(|e| {
                        tracing::error!(error = %format!("{e:#}"), "saving tunnel claims");
                        RegisterError::Store
                    })?;
                }
            }
        }
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

/// Reads the tunnel-name claims file (missing: none).
pub fn read_claims(path: &std::path::Path) -> anyhow::Result<HashMap<TunnelName, Claim>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "{} is corrupt; fix or remove it (it only records who owns which tunnel name)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the tunnel-name claims file (0600, atomically).
pub fn write_claims(
    path: &std::path::Path,
    claims: &HashMap<TunnelName, Claim>,
) -> anyhow::Result<()> {
    write_private(path, &serde_json::to_vec_pretty(claims)?)
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
