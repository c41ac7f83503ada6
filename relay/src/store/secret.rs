//! Secret values handed out once, and the SHA-256 hashes the store keeps instead.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret token value (setup token, code, refresh token, client secret).
/// `Debug` prints `MASKED`; the value is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret: 32 random bytes from the OS-seeded CSPRNG, as 64 hex digits.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(hex::encode(bytes))
    }

    /// Wraps a value received from a client.
    pub fn from_presented(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value, to put in a link or a response body. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash under which the store keeps this secret.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(MASKED)")
    }
}

/// SHA-256 of a secret token: what the store keys codes, refresh tokens and
/// setup tokens by. Plain SHA-256 is enough because the secrets are 256-bit
/// random values, not passwords.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a presented token value.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a hash from stored bytes; `None` unless exactly 32 bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Constant-time equality, for comparing a presented secret with a stored hash.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; hashes are not secret anyway.
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..6]))
    }
}
