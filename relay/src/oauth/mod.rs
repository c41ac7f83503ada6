//! OAuth 2.1 tokens at the relay: signing keys, access tokens, their cache,
//! and the identity assertion handed to agents.
//!
//! ```text
//!   keys::KeySet ──sign──► token::Issuer ──► access token (JWT, aud = one tunnel)
//!        │                                        │
//!        └─verifying_keys / jwks──► token::Validator ◄── cache::ValidatorWithCache
//!        │                                                (hot path: SHA-256 → claims)
//!        └─sign──► assertion::sign_assertion ──stream head──► agent:
//!                                              assertion::verify_assertion(public JWKs)
//! ```
//!
//! Everything here is sans-IO: time comes in as `now` (seconds since the Unix
//! epoch), keys come in as values, and persisting them is the caller's job.

pub mod assertion;
pub mod cache;
pub mod cimd;
pub mod keys;
pub mod registration;
pub mod token;
