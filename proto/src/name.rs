//! Tunnel names: one DNS label, so a name works in a path today and as a
//! subdomain later.

use std::fmt;
use std::str::FromStr;

/// Longest tunnel name (the DNS label limit).
pub const MAX_TUNNEL_NAME_LEN: usize = 63;

/// A valid tunnel name: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelName(String);

/// Why a string is not a tunnel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid tunnel name {name:?}: {reason} (use 1-63 lowercase letters, digits and '-', not at either end)"
)]
pub struct InvalidTunnelName {
    name: String,
    reason: &'static str,
}

impl TunnelName {
    /// Parses and validates a tunnel name.
    pub fn parse(name: &str) -> Result<Self, InvalidTunnelName> {
        let fail = |reason| InvalidTunnelName {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(fail("it is empty"));
        }
        if name.len() > MAX_TUNNEL_NAME_LEN {
            return Err(fail("it is longer than 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(fail("it has a character other than a-z, 0-9 and '-'"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(fail("it starts or ends with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// Turns an arbitrary string (such as a file stem) into a valid name, if
    /// anything of it survives: lowercased, other characters become `-`.
    pub fn sanitize(raw: &str) -> Result<Self, InvalidTunnelName> {
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let trimmed: String = out
            .trim_matches('-')
            .chars()
            .take(MAX_TUNNEL_NAME_LEN)
            .collect();
        Self::parse(trimmed.trim_end_matches('-'))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by tunnel name can be looked up with a `&str` (the derived
/// `Hash`/`Eq` of the one `String` field agree with `str`'s).
impl std::borrow::Borrow<str> for TunnelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for TunnelName {
    type Err = InvalidTunnelName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl serde::Serialize for TunnelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TunnelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "shop", "my-db-2", &"x".repeat(63)] {
            assert!(TunnelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "-a",
            "a-",
            "Shop",
            "a.b",
            "a/b",
            "a b",
            "ü",
            "..",
            &"x".repeat(64),
        ] {
            let err = TunnelName::parse(bad).unwrap_err();
            assert!(err.to_string().contains("invalid tunnel name"), "{bad}");
        }
    }

    #[test]
    fn sanitizes_file_stems() {
        assert_eq!(
            TunnelName::sanitize("Shop DB_2024").unwrap().as_str(),
            "shop-db-2024"
        );
        assert!(TunnelName::sanitize("___").is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<TunnelName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<TunnelName>("\"NOT OK\"").is_err());
    }
}
