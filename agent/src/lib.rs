//! `mcp-agent`: the laptop side of mcp-tunnel.
//!
//! ```text
//!  relay ══QUIC stream per request══► connect ──► forward ──HTTP──► local MCP server
//!    ▲                                   │
//!    └──── control stream: Hello/Welcome, Ping/Pong, GoAway
//! ```
//!
//! The agent dials out (no inbound port), reconnects by itself with jittered
//! backoff, and counts every stream it receives and rejects (see [`stats`]).
//! Secrets the upstream needs live in the [`credstore`] (OS keyring or a
//! 0600 file) and reach only the upstream (see [`secrets`]).

pub mod assertion;
pub mod backoff;
pub mod catalog;
pub mod config;
pub mod connect;
pub mod credstore;
pub mod forward;
pub mod identity;
pub mod local_log;
pub mod manage;
pub mod policy;
pub mod secrets;
pub mod stats;
pub mod tls;
pub mod upstream;

pub use connect::{ConnectConfig, ConnectError, run};

/// Installs the one rustls crypto provider of this program (aws-lc-rs).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
