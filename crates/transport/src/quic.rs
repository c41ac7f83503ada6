//! QUIC transport settings, chosen on purpose.
//!
//! - **Keep-alive, agent side, every 1 s.** Home and mobile NATs drop idle UDP
//!   mappings after roughly 30 s, so something must flow well inside that. A
//!   QUIC PING is the cheapest such thing (the relay's QUIC stack answers it
//!   without waking any task). 1 s rather than 15 s because the same packet is
//!   how an agent learns that the relay restarted: the new relay process holds
//!   the same stateless-reset key and answers any packet of an old connection
//!   with a stateless reset, so the agent notices within a second and reconnects.
//! - **Idle timeout 10 s, both sides.** With PINGs every second, ten seconds of
//!   silence means the peer is gone (relay down, laptop asleep, network lost);
//!   the relay then stops routing to that agent and the agent starts
//!   reconnecting.
//! - **Streams.** The agent opens exactly one bidirectional stream (control), so
//!   the relay allows one; the relay opens one stream per request, bounded by
//!   the agent's `max_concurrent_bidi_streams`. No unidirectional streams.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// How often the agent sends a QUIC PING.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Silence after which either side drops the connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request streams the agent lets the relay have open at once, by default
/// (`mcp-agent connect --max-streams N` changes it). Each long-lived SSE
/// stream holds one for as long as it is open.
pub const AGENT_MAX_INCOMING_STREAMS: u32 = 1024;

/// Transport settings for the agent's (client) side.
pub fn agent_transport(max_incoming_streams: u32) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    t.max_idle_timeout(Some(idle_timeout()));
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_incoming_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

/// Transport settings for the relay's (server) side.
pub fn relay_transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(idle_timeout()));
    // The control stream is the only one an agent may open.
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

fn idle_timeout() -> IdleTimeout {
    // 10 s is far below the VarInt limit (2^62 ms), so this cannot fail.
    IdleTimeout::try_from(IDLE_TIMEOUT).unwrap_or(IdleTimeout::from(VarInt::from_u32(10_000)))
}
