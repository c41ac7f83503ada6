//! Heads of request streams: the HTTP request the relay forwards and the
//! response the agent sends back.

use crate::error::ErrorCode;

/// Relay → agent: the first frame of a request stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestHead {
    /// The relay's id for this request, shared by both sides' logs.
    pub request_id: u64,
    /// HTTP method (`POST`, `GET`, `DELETE`, …).
    pub method: String,
    /// Path and query below the tunnel prefix, starting with `/` (e.g. `/mcp`).
    pub path: String,
    /// End-to-end headers (hop-by-hop ones and credentials removed), lowercase names.
    pub headers: Vec<(String, String)>,
    /// Milliseconds the relay will wait for the response head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// A relay-signed identity assertion (filled by the identity work; `None` until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
}

/// Agent → relay: the first frame of the response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResponseHead {
    /// HTTP status code.
    pub status: u16,
    /// End-to-end response headers, lowercase names.
    pub headers: Vec<(String, String)>,
}

/// Either side: this stream failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail (never secrets).
    pub message: String,
}
