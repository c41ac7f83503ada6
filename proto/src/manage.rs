//! Management requests: `mcp-agent share`, `shares`, `audit`.
//!
//! A management client opens its own QUIC connection to the relay with its
//! device certificate (mutual TLS — that is the authentication), opens one
//! bidirectional stream, sends one [`ManageRequest`] frame, and reads one
//! [`ManageResponse`] frame. The relay then closes the stream.

use crate::error::ErrorCode;
use crate::name::TunnelName;

/// What the device's owner asks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ManageRequest {
    /// Grant someone access to one of my tunnels.
    Share {
        /// The tunnel; `None` = my only tunnel.
        tunnel: Option<TunnelName>,
        /// `bob@example.com`, `@example.com` or `group:NAME`.
        subject: String,
        /// Only these tools; `None` = every tool.
        tools: Option<Vec<String>>,
        /// Only tools annotated read-only (and not destructive).
        read_only: bool,
        /// Lifetime in seconds; `None` = until revoked.
        expires_in_secs: Option<u64>,
    },
    /// The grants on my tunnels.
    ListShares {
        /// Only this tunnel.
        tunnel: Option<TunnelName>,
    },
    /// Revoke one of my grants.
    RevokeShare {
        /// The grant id (a unique prefix is enough).
        id: String,
    },
    /// The relay's audit records for my tunnels, oldest first.
    Audit {
        /// Only this tunnel.
        tunnel: Option<TunnelName>,
        /// At most this many records (the relay caps it).
        limit: u32,
        /// Only records after this sequence number (for `--follow`).
        after_seq: Option<u64>,
    },
}

/// The relay's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ManageResponse {
    /// Done; the result's shape depends on the request.
    Ok {
        /// The result.
        result: serde_json::Value,
    },
    /// Refused or failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// What happened and what to do next.
        message: String,
    },
}
