//! Every limit the relay enforces, in one place, with its default.

use std::time::Duration;

/// Limits on what MCP clients and agents may make the relay hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimits {
    /// Largest request body forwarded to an agent (default 4 MiB). Larger: 413.
    pub max_request_body: u64,
    /// Largest total size of a request's header block (default 16 KiB). Larger: 431.
    pub max_request_headers: usize,
    /// Requests in flight to one tunnel at once (default 512). More: 503 with `Retry-After`.
    pub max_streams_per_tunnel: u32,
    /// How long the relay waits for an agent's response head (default 120 s). Longer: 504.
    #[serde(with = "humantime_serde_compat")]
    pub response_head_timeout: Duration,
    /// How long a request waits for the agent to accept one more stream
    /// (default 5 s). The agent caps concurrent streams itself
    /// (`mcp-agent connect --max-streams`, default 1024); when the relay's
    /// `max_streams_per_tunnel` is higher, requests beyond the agent's cap
    /// wait this long and then get 503 with `Retry-After`.
    #[serde(with = "humantime_serde_compat")]
    pub stream_open_timeout: Duration,
    /// How long a request to a tunnel whose agent is not connected waits
    /// for it to (re)connect before 502 `agent_offline` (default 3 s; 0:
    /// answer at once). Covers relay restarts and agents on flaky networks.
    #[serde(with = "humantime_serde_compat")]
    pub offline_wait: Duration,
    /// Largest `Data` frame accepted from an agent (default 64 KiB).
    pub max_frame_payload: usize,
    /// Agent connections held at once (default 10,000).
    pub max_agents: usize,
    /// How long an agent has to send its Hello after the QUIC handshake (default 10 s).
    #[serde(with = "humantime_serde_compat")]
    pub hello_timeout: Duration,
    /// How long shutdown waits for in-flight requests to finish (default 10 s).
    #[serde(with = "humantime_serde_compat")]
    pub drain_timeout: Duration,
    /// Lifetime of a device (agent) certificate (default 24 h); agents renew well before.
    #[serde(with = "humantime_serde_compat")]
    pub device_cert_ttl: Duration,
    /// How long after its certificate expired a device may still renew by
    /// proving possession of its key (default 30 days); after that: log in again.
    #[serde(with = "humantime_serde_compat")]
    pub device_renew_grace: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_request_body: 4 * 1024 * 1024,
            max_request_headers: 16 * 1024,
            max_streams_per_tunnel: 512,
            response_head_timeout: Duration::from_secs(120),
            stream_open_timeout: Duration::from_secs(5),
            offline_wait: Duration::from_secs(3),
            max_frame_payload: 64 * 1024,
            max_agents: 10_000,
            hello_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            device_cert_ttl: Duration::from_secs(24 * 3600),
            device_renew_grace: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Durations in config files are written like `"10s"` or `"1m 30s"`.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
