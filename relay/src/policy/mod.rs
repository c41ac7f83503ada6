//! Authorization of every MCP message at the relay.
//!
//! ```text
//!  admin policy files ─┐
//!  owner policy (Catalog from the agent) ─┼─► Engine (per-tunnel indexed Cedar sets) ─► decide / filter
//!  grants (mcp-agent share, store) ───────┤
//!  tools + annotations (Catalog) ─────────┘
//! ```
//!
//! The engine is immutable; [`PolicyState`] swaps in a new one when a
//! tunnel's inputs change (a grant made or revoked, an agent's catalog, an
//! admin change seen through the store revision). Readers clone an `Arc`.
//! Everything is persisted in the store, so a restarted relay decides the
//! same way before any agent reconnects.

pub mod cli;
pub mod enforce;
pub mod filter;
pub mod rate;

/// JSON-RPC parsing shared with the agent.
pub use mcp_tunnel_policy::message;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use mcp_tunnel_policy::{
    Engine, Grant, GrantSubject, PolicySource, ToolInfo, TunnelSpec, dev_open_policy,
};
use mcp_tunnel_proto::PolicyUpdate;

use crate::store::{Store, UnixTime};

/// The relay's authorization state.
#[derive(Debug)]
pub struct PolicyState {
    admin: RwLock<Vec<PolicySource>>,
    engine: RwLock<Arc<Engine>>,
    /// What each tunnel was last built from (a fingerprint of its inputs);
    /// held while rebuilding, so two refreshes cannot lose each other's change.
    built: Mutex<HashMap<String, u64>>,
}

/// Who owns a tunnel, for policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A person (their email).
    User(String),
    /// An agent token on a `--dev` relay: no person owns the tunnel, and
    /// every signed-in caller may use it (dev convenience; agent tokens are
    /// refused by non-dev relays).
    DevToken,
    /// Nobody (a claim whose owner is gone): only grants and admin permits apply.
    Nobody,
}

impl Owner {
    fn email(&self) -> Option<String> {
        match self {
            Self::User(e) => Some(e.clone()),
            _ => None,
        }
    }
}

/// Who owns a tunnel, from its claim's owner string (`user:<id>` or an
/// agent token id). Reads the store.
pub fn owner_from_claim(store: &dyn Store, dev: bool, claim: &str) -> Owner {
    if let Some(id) = claim.strip_prefix("user:") {
        let user = id
            .parse::<i64>()
            .ok()
            .and_then(|id| store.get_user(crate::store::UserId(id)).ok().flatten());
        return match user {
            Some(u) => Owner::User(u.email.as_str().to_owned()),
            None => Owner::Nobody,
        };
    }
    if dev { Owner::DevToken } else { Owner::Nobody }
}

/// Reads and validates the admin policy files; the engine made of them alone.
fn admin_engine(files: &[PathBuf]) -> anyhow::Result<(Vec<PolicySource>, Engine)> {
    let mut admin = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading policy file {}", f.display()))?;
        admin.push(PolicySource::new(f.display().to_string(), text));
    }
    let engine = Engine::new(&admin).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((admin, engine))
}

/// One tunnel's inputs, as read from the store.
#[derive(Debug)]
struct Inputs {
    owner: Owner,
    policy: Option<PolicySource>,
    grants: Vec<Grant>,
    tools: Vec<ToolInfo>,
}

impl PolicyState {
    /// Loads and validates the admin policy files. An invalid file stops the
    /// relay from starting, with `FILE:LINE:COL` for each problem.
    pub fn load(files: &[PathBuf]) -> anyhow::Result<Self> {
        let (admin, engine) = admin_engine(files)?;
        Ok(Self {
            admin: RwLock::new(admin),
            engine: RwLock::new(Arc::new(engine)),
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The current engine.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many admin policy files are loaded.
    pub fn admin_files(&self) -> usize {
        self.admin.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Brings every tunnel up to date with the store (start-up, and whenever
    /// the store's revision moves — which most writes, e.g. OAuth sign-ins,
    /// do): only tunnels whose inputs changed are rebuilt; their names are
    /// returned so only their agents are told. `owners` maps tunnel → owner.
    pub fn refresh_all(
        &self,
        store: &dyn Store,
        owners: &HashMap<String, Owner>,
        now: UnixTime,
    ) -> anyhow::Result<Vec<String>> {
        self.rebuild(store, owners, now, None)
    }

    /// Replaces the admin policy files (SIGHUP): the new files are validated
    /// and every tunnel rebuilt on them before the new engine replaces the
    /// old one, so no request ever sees a half-built engine. On an error the
    /// old policies stay.
    pub fn reload_admin(
        &self,
        files: &[PathBuf],
        store: &dyn Store,
        owners: &HashMap<String, Owner>,
        now: UnixTime,
    ) -> anyhow::Result<Vec<String>> {
        let (admin, engine) = admin_engine(files)?;
        let changed = self.rebuild(store, owners, now, Some(engine))?;
        *self.admin.write().unwrap_or_else(|e| e.into_inner()) = admin;
        Ok(changed)
    }

    fn rebuild(
        &self,
        store: &dyn Store,
        owners: &HashMap<String, Owner>,
        now: UnixTime,
        base: Option<Engine>,
    ) -> anyhow::Result<Vec<String>> {
        // Held throughout, so two rebuilds cannot lose each other's change.
        let mut guard = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let replacing = base.is_some();
        let mut fresh_built = HashMap::new();
        let built: &mut HashMap<String, u64> = if replacing {
            &mut fresh_built
        } else {
            &mut guard
        };
        let mut inputs: HashMap<String, Inputs> = HashMap::new();
        let blank = |t: &str| Inputs {
            owner: owners.get(t).cloned().unwrap_or(Owner::Nobody),
            policy: None,
            grants: Vec::new(),
            tools: Vec::new(),
        };
        for t in owners.keys() {
            inputs.insert(t.clone(), blank(t));
        }
        for p in store.tunnel_policies(None)? {
            inputs
                .entry(p.tunnel.clone())
                .or_insert_with(|| blank(&p.tunnel))
                .policy = Some(PolicySource::new(p.file_name, p.text));
        }
        for (t, tools) in store.tool_catalogs(None)? {
            inputs.entry(t.clone()).or_insert_with(|| blank(&t)).tools = parse_tools(&tools);
        }
        for g in store.list_grants(None)? {
            if !g.is_live(now) {
                continue;
            }
            let tunnel = g.tunnel.clone();
            if let Some(g) = to_policy_grant(g) {
                inputs
                    .entry(tunnel.clone())
                    .or_insert_with(|| blank(&tunnel))
                    .grants
                    .push(g);
            }
        }
        let mut engine = match base {
            Some(e) => e,
            None => (*self.engine()).clone(),
        };
        let mut changed = Vec::new();
        for (name, i) in inputs {
            let print = fingerprint(&i);
            if built.get(&name) == Some(&print) {
                continue;
            }
            set_tunnel(&mut engine, name.clone(), i);
            built.insert(name.clone(), print);
            changed.push(name);
        }
        if !changed.is_empty() || replacing {
            *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
        }
        if replacing {
            *guard = fresh_built;
        }
        Ok(changed)
    }

    /// Rebuilds one tunnel from the store (after a grant or catalog change).
    pub fn refresh_tunnel(
        &self,
        store: &dyn Store,
        tunnel: &str,
        owner: Owner,
        now: UnixTime,
    ) -> anyhow::Result<()> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let i = Inputs {
            owner,
            policy: store
                .tunnel_policies(Some(tunnel))?
                .into_iter()
                .next()
                .map(|p| PolicySource::new(p.file_name, p.text)),
            tools: store
                .tool_catalogs(Some(tunnel))?
                .into_iter()
                .next()
                .map(|(_, v)| parse_tools(&v))
                .unwrap_or_default(),
            grants: store
                .list_grants(Some(tunnel))?
                .into_iter()
                .filter(|g| g.is_live(now))
                .filter_map(to_policy_grant)
                .collect(),
        };
        built.insert(tunnel.to_owned(), fingerprint(&i));
        let current = self.engine();
        let mut next = (*current).clone();
        set_tunnel(&mut next, tunnel.to_owned(), i);
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// What the tunnel's agents need for their own check.
    pub fn update_for(
        &self,
        store: &dyn Store,
        tunnel: &str,
        owner: &Owner,
        now: UnixTime,
    ) -> anyhow::Result<PolicyUpdate> {
        let grants = store
            .list_grants(Some(tunnel))?
            .into_iter()
            .filter(|g| g.is_live(now))
            .filter_map(to_policy_grant)
            .filter_map(|g| serde_json::to_value(g).ok())
            .collect();
        Ok(PolicyUpdate {
            owner: owner.email(),
            grants,
            open: *owner == Owner::DevToken,
        })
    }
}

/// A fingerprint of a tunnel's inputs (their `Debug` form is complete and
/// ordered: the store returns rows sorted).
fn fingerprint(i: &Inputs) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{i:?}").hash(&mut h);
    h.finish()
}

/// Parses a stored or reported tool list leniently: an entry that does not
/// parse is left out (and so counts as unannotated, i.e. destructive).
pub fn parse_tools(v: &serde_json::Value) -> Vec<ToolInfo> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| serde_json::from_value::<ToolInfo>(t.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A stored grant as the engine takes it; `None` if its subject no longer
/// parses (logged; such a grant grants nothing).
pub fn to_policy_grant(g: crate::store::Grant) -> Option<Grant> {
    let subject = match g.subject.parse::<GrantSubject>() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(grant = %g.id, "stored grant has an invalid subject: {e}");
            return None;
        }
    };
    Some(Grant {
        id: g.id,
        tunnel: g.tunnel,
        subject,
        tools: g.tools,
        read_only: g.read_only,
        expires_at: g.expires_at,
    })
}

/// Puts one tunnel into `engine`. An owner policy that no longer validates
/// (e.g. written for another schema) fails closed: the tunnel keeps only its
/// owner (no grants, no owner permits), and the error is logged.
fn set_tunnel(engine: &mut Engine, name: String, i: Inputs) {
    let mut owner_policies: Vec<PolicySource> = i.policy.into_iter().collect();
    if i.owner == Owner::DevToken {
        owner_policies.push(dev_open_policy(&name));
    }
    let spec = TunnelSpec {
        name: name.clone(),
        owner: i.owner.email().unwrap_or_default(),
        owner_policies,
        grants: i.grants,
        tools: dedup_tools(i.tools),
    };
    match engine.set_tunnel(spec) {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(tunnel = %name, "the owner's policy is invalid; only the owner keeps access: {e}");
            let fallback = TunnelSpec {
                owner_policies: if i.owner == Owner::DevToken {
                    vec![dev_open_policy(&name)]
                } else {
                    Vec::new()
                },
                name,
                owner: i.owner.email().unwrap_or_default(),
                grants: Vec::new(),
                tools: Vec::new(),
            };
            // The fallback has no owner policy to be invalid; if it still
            // fails, the tunnel keeps its previous entry (or none: deny all).
            let _ = engine.set_tunnel(fallback);
        }
    }
}

fn dedup_tools(tools: Vec<ToolInfo>) -> Vec<ToolInfo> {
    let mut seen = BTreeSet::new();
    tools
        .into_iter()
        .filter(|t| seen.insert(t.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_token_tunnels_are_open_and_only_changed_tunnels_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("db")).unwrap();
        let state = PolicyState::load(&[]).unwrap();
        let owners = HashMap::from([
            ("shop".to_owned(), Owner::DevToken),
            ("crm".to_owned(), Owner::User("alice@example.com".into())),
        ]);
        let mut first = state.refresh_all(&store, &owners, 1_700_000_000).unwrap();
        first.sort();
        assert_eq!(first, ["crm", "shop"]);
        // Nothing changed: nothing rebuilt, no agent told.
        assert!(
            state
                .refresh_all(&store, &owners, 1_700_000_000)
                .unwrap()
                .is_empty()
        );
        let e = state.engine();
        let ctx = mcp_tunnel_policy::RequestContext {
            time: 1_700_000_000,
            ..Default::default()
        };
        let bob = mcp_tunnel_policy::Principal::user("bob@example.com");
        let ask = |tunnel: &str| {
            e.decide(&mcp_tunnel_policy::Request {
                principal: &bob,
                tunnel,
                method: "tools/list",
                target: None,
                args: None,
                context: &ctx,
            })
        };
        let d = ask("shop");
        assert!(d.allowed, "{}", d.reason());
        assert!(!ask("crm").allowed);
        // A grant on crm: only crm is rebuilt, and bob may now list there.
        store
            .insert_grant(&crate::store::NewGrant {
                tunnel: "crm".into(),
                subject: "bob@example.com".into(),
                tools: None,
                read_only: true,
                created_by: "alice@example.com".into(),
                expires_at: None,
            })
            .unwrap();
        assert_eq!(
            state.refresh_all(&store, &owners, 1_700_000_000).unwrap(),
            ["crm"]
        );
        let e = state.engine();
        let d = e.decide(&mcp_tunnel_policy::Request {
            principal: &bob,
            tunnel: "crm",
            method: "tools/list",
            target: None,
            args: None,
            context: &ctx,
        });
        assert!(d.allowed, "{}", d.reason());
    }
}
