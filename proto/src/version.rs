//! Protocol version negotiation.
//!
//! The agent offers every version it speaks in `Hello`; the relay picks the
//! highest one it also speaks. A relay speaks the current and the previous
//! version, so agents and relays can be upgraded one at a time.

/// The version this build speaks natively.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = if PROTOCOL_VERSION > 1 {
    PROTOCOL_VERSION - 1
} else {
    1
};

/// Every version this build speaks, newest first.
pub const SUPPORTED_VERSIONS: &[u16] = if PROTOCOL_VERSION > 1 {
    &[PROTOCOL_VERSION, PROTOCOL_VERSION - 1]
} else {
    &[PROTOCOL_VERSION]
};

/// The highest version present in both lists, if any.
pub fn negotiate(offered: &[u16], supported: &[u16]) -> Option<u16> {
    offered
        .iter()
        .copied()
        .filter(|v| supported.contains(v))
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common() {
        assert_eq!(negotiate(&[1, 2, 3], &[3, 2]), Some(3));
        assert_eq!(
            negotiate(&[2], &[3, 2]),
            Some(2),
            "previous version still accepted"
        );
        assert_eq!(negotiate(&[1], &[3, 2]), None, "two behind is refused");
        assert_eq!(
            negotiate(&[4, 3], &[3, 2]),
            Some(3),
            "newer agent falls back"
        );
        assert_eq!(negotiate(&[], SUPPORTED_VERSIONS), None);
        assert_eq!(
            negotiate(SUPPORTED_VERSIONS, SUPPORTED_VERSIONS),
            Some(PROTOCOL_VERSION)
        );
    }
}
