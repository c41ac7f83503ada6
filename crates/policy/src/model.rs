//! The inputs of a decision: who asks, which tunnel, which tool, in what context.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::grant::Grant;
use crate::source::PolicySource;

/// Who sends a message, as established by the relay's authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A person. The email is compared case-insensitively (Cedar sees it in
    /// lower case); groups come from the identity provider.
    User {
        /// The user's email address.
        email: String,
        /// Group names; each becomes a `Mcp::Group` parent.
        groups: Vec<String>,
    },
    /// A non-interactive client, identified by its name (OAuth client id).
    ServiceAccount {
        /// The service account's name.
        name: String,
    },
}

impl Principal {
    /// The principal an authenticated caller is: a user when the identity
    /// has an email (lower-cased), else a service account named by its
    /// OAuth client id. The relay (from the access token) and the agent
    /// (from the identity assertion) both build it this way.
    pub fn from_identity(email: Option<&str>, groups: &[String], client_id: &str) -> Principal {
        match email {
            Some(e) => Principal::User {
                email: e.to_ascii_lowercase(),
                groups: groups.to_vec(),
            },
            None => Principal::ServiceAccount {
                name: client_id.to_owned(),
            },
        }
    }

    /// A user without groups (convenience for tests and tools).
    pub fn user(email: impl Into<String>) -> Principal {
        Principal::User {
            email: email.into(),
            groups: Vec::new(),
        }
    }
}

/// MCP tool annotations (hints), with MCP's field names on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// `readOnlyHint`: the tool does not modify its environment (MCP default false).
    #[serde(
        rename = "readOnlyHint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub read_only: Option<bool>,
    /// `destructiveHint`: the tool may destroy data (MCP default true).
    #[serde(
        rename = "destructiveHint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destructive: Option<bool>,
    /// `idempotentHint`: repeating a call has no further effect (MCP default false).
    #[serde(
        rename = "idempotentHint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotent: Option<bool>,
    /// `openWorldHint`: the tool talks to the outside world (MCP default true).
    #[serde(
        rename = "openWorldHint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub open_world: Option<bool>,
}

/// A tool offered by a tunnel, as reported in `tools/list`. Deserializes from
/// an MCP `Tool` object (other fields such as `inputSchema` are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// The tool name.
    pub name: String,
    /// Its annotations, if the server reported any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

impl ToolInfo {
    /// The attribute values Cedar sees for this tool. Unknown annotations
    /// count as destructive; absent hints take the MCP defaults; a read-only
    /// tool is never destructive (MCP: `destructiveHint` is meaningful only
    /// when `readOnlyHint` is false).
    pub fn flags(&self) -> ToolFlags {
        ToolFlags::from_annotations(self.annotations.as_ref())
    }
}

/// Resolved tool annotations, as the `Mcp::Tool` entity attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToolFlags {
    /// `readOnly`.
    pub read_only: bool,
    /// `destructive`.
    pub destructive: bool,
    /// `idempotent`.
    pub idempotent: bool,
    /// `openWorld`.
    pub open_world: bool,
    /// `annotated`: the server reported at least one hint.
    pub annotated: bool,
}

impl ToolFlags {
    /// Flags for a tool nobody told us about: destructive, not annotated.
    pub const UNKNOWN: ToolFlags = ToolFlags {
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: true,
        annotated: false,
    };

    fn from_annotations(annotations: Option<&ToolAnnotations>) -> ToolFlags {
        let Some(a) = annotations else {
            return ToolFlags::UNKNOWN;
        };
        let annotated = a.read_only.is_some()
            || a.destructive.is_some()
            || a.idempotent.is_some()
            || a.open_world.is_some();
        if !annotated {
            return ToolFlags::UNKNOWN;
        }
        let read_only = a.read_only.unwrap_or(false);
        ToolFlags {
            read_only,
            destructive: !read_only && a.destructive.unwrap_or(true),
            idempotent: a.idempotent.unwrap_or(false),
            open_world: a.open_world.unwrap_or(true),
            annotated,
        }
    }
}

/// Everything the engine needs to know about one tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// The tunnel name (Cedar entity id of its `Mcp::Tunnel`).
    pub name: String,
    /// The owner's email; the owner may do everything on the tunnel unless
    /// an admin forbid says otherwise. Empty: nobody owns it (only grants,
    /// owner-file and admin policies give access).
    pub owner: String,
    /// The owner's policy files (`mcp-agent connect --policy`); they apply
    /// to this tunnel only.
    #[serde(default)]
    pub owner_policies: Vec<PolicySource>,
    /// Grants made with `mcp-agent share`.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// The tools the tunnel offers, with their annotations. A tool not in
    /// this list is treated as unannotated (destructive).
    #[serde(default)]
    pub tools: Vec<ToolInfo>,
}

/// Facts about the request that are not part of the MCP message itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestContext {
    /// OAuth client id of the MCP client.
    pub client_id: String,
    /// Scopes granted to the access token.
    pub scopes: Vec<String>,
    /// Address the request came from; `None` shows as `0.0.0.0` to policies.
    pub source_ip: Option<IpAddr>,
    /// Current time in Unix seconds (the caller's clock, injectable for tests).
    pub time: i64,
    /// Negotiated MCP protocol version, if known.
    pub protocol_version: Option<String>,
}

/// One MCP message to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who sends it.
    pub principal: &'a Principal,
    /// The tunnel it is addressed to.
    pub tunnel: &'a str,
    /// The JSON-RPC method, or `"response"` for a response to a server request.
    pub method: &'a str,
    /// Tool name (`tools/call`), prompt name (`prompts/get`) or resource uri
    /// (`resources/read`, `resources/subscribe`, `resources/unsubscribe`).
    pub target: Option<&'a str>,
    /// `params.arguments` of `tools/call` or `prompts/get`.
    pub args: Option<&'a serde_json::Value>,
    /// Client, scopes, address, time.
    pub context: &'a RequestContext,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_resolve_with_mcp_defaults() {
        let ann = |json: &str| -> ToolFlags {
            let tool: ToolInfo = serde_json::from_str(json).expect("tool json");
            tool.flags()
        };
        assert_eq!(ann(r#"{"name":"t"}"#), ToolFlags::UNKNOWN);
        assert_eq!(
            ann(r#"{"name":"t","annotations":{"title":"T"}}"#),
            ToolFlags::UNKNOWN
        );
        let ro = ann(r#"{"name":"t","annotations":{"readOnlyHint":true},"inputSchema":{}}"#);
        assert!(ro.read_only && !ro.destructive && ro.annotated && ro.open_world);
        let w = ann(r#"{"name":"t","annotations":{"readOnlyHint":false}}"#);
        assert!(!w.read_only && w.destructive && w.annotated);
        let safe = ann(
            r#"{"name":"t","annotations":{"destructiveHint":false,"idempotentHint":true,"openWorldHint":false}}"#,
        );
        assert!(!safe.read_only && !safe.destructive && safe.idempotent && !safe.open_world);
    }
}
