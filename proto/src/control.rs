//! Messages of the control stream, which the agent opens first on every connection.

use crate::error::ErrorCode;
use crate::name::TunnelName;
use crate::secret::Secret;

/// Agent → relay: who I am and which tunnel I serve.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// Every protocol version the agent speaks; the relay picks one.
    pub protocol_versions: Vec<u16>,
    /// The agent's software version, for logs and support.
    pub agent_version: String,
    /// The tunnel this agent wants to serve.
    pub tunnel: TunnelName,
    /// How the agent proves who it is.
    pub credentials: Credentials,
}

/// How an agent authenticates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    /// A relay-issued agent token (`mcp-relay agent-tokens create`).
    AgentToken {
        /// The token value.
        token: Secret,
    },
    /// The device certificate presented in the QUIC handshake (mutual TLS,
    /// `mcp-agent login`); nothing more is sent.
    DeviceCertificate,
}

/// Relay → agent: accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    /// The version the relay picked from the agent's list.
    pub protocol_version: u16,
    /// Where MCP clients reach this tunnel.
    pub public_url: String,
    /// The relay's software version.
    pub relay_version: String,
    /// How often the agent must send `Ping` on the control stream.
    pub heartbeat_interval_ms: u64,
    /// Limits the relay enforces for this tunnel.
    pub limits: Limits,
    /// The relay's identity-assertion public keys (a JWKS document) when the
    /// relay authenticates callers: every request stream then carries an
    /// assertion signed by one of them. `None` only on a relay with
    /// authentication off (`--dev --no-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion_keys: Option<serde_json::Value>,
}

/// Limits the relay enforces, told to the agent so it can size its side.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Request streams the relay opens at once to this agent.
    pub max_concurrent_streams: u32,
    /// Largest request body the relay forwards.
    pub max_request_body: u64,
    /// Largest `Data` frame payload either side sends.
    pub max_frame_payload: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 512,
            max_request_body: 4 * 1024 * 1024,
            max_frame_payload: 64 * 1024,
        }
    }
}

/// Relay → agent: refused, with the reason a person can act on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// What happened and what to do next.
    pub message: String,
}

/// Either side: I am going away (shutdown, replaced); finish and reconnect.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GoAway {
    /// Why.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Agent → relay, on the open control stream: please renew my device
/// certificate (same key; the CSR's signature proves possession).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RenewCert {
    /// The CSR, DER, base64url without padding.
    pub csr: String,
}

/// Relay → agent, on the open control stream: a renewed certificate and/or
/// the relay's current identity-assertion keys (after a key rotation), or
/// why a renewal was refused.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DeviceUpdate {
    /// The renewed certificate (PEM).
    pub certificate: Option<String>,
    /// Its `notAfter` (Unix seconds).
    pub expires_at: Option<i64>,
    /// The relay's assertion-signing public keys (a JWKS document).
    pub assertion_keys: Option<serde_json::Value>,
    /// Why a renewal was refused (the agent keeps its certificate and says so).
    pub error: Option<String>,
}

/// Agent → relay, on the open control stream: what this agent serves — the
/// owner's policy file and its upstream's tools with their annotations. Sent
/// right after `Welcome` (tools not yet known) and again whenever either
/// changes; each one replaces the previous.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Catalog {
    /// The owner's Cedar policy (`mcp-agent connect --policy FILE`); `None`
    /// means the owner has none.
    pub policy: Option<PolicyFile>,
    /// The upstream's tools; `None` while the agent has not listed them yet
    /// (every tool then counts as destructive).
    pub tools: Option<Vec<ToolDescriptor>>,
}

/// A Cedar policy file, as written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyFile {
    /// Its file name, for error messages (`shop.cedar`).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// One tool of the upstream, as policy needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolDescriptor {
    /// The tool's name.
    pub name: String,
    /// The tool's MCP `annotations` object, as the upstream sent it
    /// (`readOnlyHint`, `destructiveHint`, …); `None` when it sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// Relay → agent, on the open control stream: who owns the tunnel and the
/// grants made on it, for the agent's own policy check. Sent after `Welcome`
/// and again whenever a grant is made, revoked or expires.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PolicyUpdate {
    /// The owner's email; `None` for a tunnel with no owning account.
    pub owner: Option<String>,
    /// The live grants on this tunnel (`mcp-agent share`), each a JSON
    /// object in the policy crate's `Grant` form.
    pub grants: Vec<serde_json::Value>,
    /// Every signed-in caller may use the tunnel: only for tunnels served
    /// with an agent token on a `--dev` relay (no person owns them).
    pub open: bool,
}
