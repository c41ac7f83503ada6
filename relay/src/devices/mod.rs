//! Agent devices: enrollment (one-time token + CSR → client certificate),
//! the QUIC client-certificate check, and what a connected device may do.
//!
//! ```text
//! mcp-relay enroll-tokens create --user EMAIL      → one-time token
//! mcp-agent login --enroll-token T                 → key pair on the laptop, CSR
//!   POST /agent/enroll {token, csr}                → certificate (device id + user), CA
//! mcp-agent connect                                → QUIC + mutual TLS with that certificate
//!   Hello {credentials: device_certificate}        → device looked up: key, revocation, user
//! ```

pub mod ca;
pub mod enroll;
pub mod verifier;

pub use ca::{DeviceCa, PeerDevice, read_peer};

/// A fresh device id: `dev_` and 20 random base32 characters.
pub fn new_device_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let s: String = (0..20)
        .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.random_range(0..32)]))
        .collect();
    format!("dev_{s}")
}

/// Unix seconds as RFC 3339 (UTC), for messages.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
