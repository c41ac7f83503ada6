//! The agent's own policy check (defense in depth): before a request reaches
//! the upstream, the agent decides it again with the owner's policy — its
//! `--policy` file, the grants the relay pushed (`PolicyUpdate`), the owner
//! permit — against the identity in the relay's verified assertion. A relay
//! that forwards something the owner's policy does not allow gets a refusal,
//! and the upstream sees nothing.
//!
//! The relay's admin policies are the relay's business; the agent enforces
//! what its owner decided.

use std::sync::{Arc, RwLock};

use mcp_tunnel_policy::message::{Message, parse_body};
use mcp_tunnel_policy::{
    Engine, Grant, PolicySource, Principal, RequestContext, ToolInfo, TunnelSpec,
};
use mcp_tunnel_proto::{PolicyUpdate, ToolDescriptor};

use crate::assertion::VerifiedCaller;

/// The agent's policy state for the tunnel it serves.
#[derive(Debug)]
pub struct AgentPolicy {
    tunnel: String,
    /// The owner's policy file, as given to `connect --policy`.
    own: Option<PolicySource>,
    inputs: RwLock<Inputs>,
    engine: RwLock<Arc<Engine>>,
}

#[derive(Debug, Default, Clone)]
struct Inputs {
    owner: Option<String>,
    open: bool,
    grants: Vec<Grant>,
    tools: Vec<ToolInfo>,
    /// Whether the relay has told us anything yet.
    known: bool,
}

/// JSON-RPC error code of a refused call (the relay uses the same).
pub const RPC_FORBIDDEN: i64 = -32003;

/// What a request asked for (the first message), for the local log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checked {
    /// The JSON-RPC method as sent (or the HTTP method for GET/DELETE).
    pub method: String,
    /// Tool, prompt or resource.
    pub target: Option<String>,
    /// Its arguments.
    pub args: Option<serde_json::Value>,
    /// The policies that allowed it.
    pub policies: Vec<String>,
}

/// Why the agent refused a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// What was refused.
    pub what: Checked,
    /// The JSON-RPC id of the refused message, if it had one.
    pub id: Option<serde_json::Value>,
    /// One human line.
    pub reason: String,
    /// Whether the refused message is a `tools/call` (answered as a
    /// JSON-RPC error rather than 403).
    pub tool_call: bool,
}

impl AgentPolicy {
    /// State for `tunnel` with the owner's policy file, validated (the agent
    /// refuses to start with an invalid one).
    pub fn new(
        tunnel: &str,
        own: Option<PolicySource>,
    ) -> Result<Self, mcp_tunnel_policy::PolicyError> {
        if let Some(p) = &own {
            mcp_tunnel_policy::validate(p)?;
        }
        let engine = Engine::new(&[])?;
        let me = Self {
            tunnel: tunnel.to_owned(),
            own,
            inputs: RwLock::new(Inputs::default()),
            engine: RwLock::new(Arc::new(engine)),
        };
        Ok(me)
    }

    /// The owner's policy file, for the `Catalog` frame.
    pub fn own_policy(&self) -> Option<&PolicySource> {
        self.own.as_ref()
    }

    /// Applies the relay's owner + grants.
    pub fn apply_update(&self, u: PolicyUpdate) {
        let grants = u
            .grants
            .into_iter()
            .filter_map(|g| match serde_json::from_value::<Grant>(g) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!("ignoring a grant the relay sent: {e}");
                    None
                }
            })
            .collect();
        {
            let mut i = self.inputs.write().unwrap_or_else(|e| e.into_inner());
            i.owner = u.owner;
            i.open = u.open;
            i.grants = grants;
            i.known = true;
        }
        self.rebuild();
    }

    /// Applies the upstream's tool list.
    pub fn apply_tools(&self, tools: &[ToolDescriptor]) {
        {
            let mut i = self.inputs.write().unwrap_or_else(|e| e.into_inner());
            i.tools = tools
                .iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .filter_map(|v| serde_json::from_value::<ToolInfo>(v).ok())
                .collect();
        }
        self.rebuild();
    }

    fn rebuild(&self) {
        let i = self
            .inputs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut owner_policies: Vec<PolicySource> = self.own.iter().cloned().collect();
        if i.open {
            owner_policies.push(mcp_tunnel_policy::dev_open_policy(&self.tunnel));
        }
        let spec = TunnelSpec {
            name: self.tunnel.clone(),
            owner: i.owner.clone().unwrap_or_default(),
            owner_policies,
            grants: i.grants,
            tools: i.tools,
        };
        let built = Engine::new(&[]).and_then(|e| e.with_tunnel(spec));
        match built {
            Ok(e) => *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(e),
            Err(e) => tracing::error!(
                "rebuilding the agent's policy failed; keeping the previous one: {e}"
            ),
        }
    }

    /// Decides one request: every JSON-RPC message in `body` (POST), or the
    /// housekeeping GET/DELETE. `Ok` means it may reach the upstream.
    pub fn check(
        &self,
        caller: &VerifiedCaller,
        http_method: &str,
        protocol_version: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Checked, Box<Refusal>> {
        let messages = match http_method {
            "POST" => parse_body(body, protocol_version).map_err(|e| {
                Box::new(Refusal {
                    what: Checked {
                        method: "POST".into(),
                        ..Default::default()
                    },
                    id: None,
                    reason: e.to_string(),
                    tool_call: false,
                })
            })?,
            _ => vec![Message {
                id: None,
                method: "notifications".into(),
                wire_method: http_method.to_owned(),
                target: None,
                args: None,
            }],
        };
        let principal =
            Principal::from_identity(caller.email.as_deref(), &caller.groups, &caller.client_id);
        let context = RequestContext {
            client_id: caller.client_id.clone(),
            scopes: Vec::new(),
            source_ip: None,
            time: now,
            protocol_version: protocol_version.map(str::to_owned),
        };
        let engine = self
            .engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let what = |m: &Message, policies: Vec<String>| Checked {
            method: m.wire_method.clone(),
            target: m.target.clone(),
            args: m.args.clone(),
            policies,
        };
        match engine.decide_messages(&principal, &self.tunnel, &messages, &context) {
            Ok(policies) => Ok(messages
                .first()
                .map(|m| what(m, policies))
                .unwrap_or_default()),
            Err(refusal) => {
                let (i, d) = *refusal;
                let m = &messages[i];
                Err(Box::new(Refusal {
                    what: what(m, d.policies.clone()),
                    id: m.id.clone(),
                    reason: d.reason(),
                    tool_call: m.is_tool_call(),
                }))
            }
        }
    }
}
