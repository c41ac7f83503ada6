//! The HMAC chain: what each record's MAC covers (pure; no I/O).

use aws_lc_rs::{constant_time, hmac};

/// Length of a record MAC (HMAC-SHA256).
pub(crate) const MAC_LEN: usize = 32;
/// The `prev` of record 1.
pub(crate) const GENESIS: [u8; MAC_LEN] = [0; MAC_LEN];
/// Domain separation: a record MAC can never be mistaken for any other use of the key.
const RECORD_TAG: &[u8] = b"mcp-tunnel-audit/v1/record\0";

/// `HMAC(key, tag ‖ seq (8 bytes BE) ‖ prev (32 bytes) ‖ json)`. Every field
/// before the JSON has a fixed length, so the encoding is unambiguous.
pub(crate) fn record_mac(
    key: &hmac::Key,
    seq: u64,
    prev: &[u8; MAC_LEN],
    json: &[u8],
) -> [u8; MAC_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(RECORD_TAG);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(json);
    let mut out = [0; MAC_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Whether `mac` is the MAC of this record under `key` (constant time).
pub(crate) fn mac_matches(key: &hmac::Key, seq: u64, prev: &[u8], json: &[u8], mac: &[u8]) -> bool {
    let Ok(prev) = <&[u8; MAC_LEN]>::try_from(prev) else {
        return false;
    };
    constant_time::verify_slices_are_equal(&record_mac(key, seq, prev, json), mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_mac() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let base = record_mac(&key, 1, &GENESIS, b"{}");
        assert!(mac_matches(&key, 1, &GENESIS, b"{}", &base));
        assert_ne!(base, record_mac(&key, 2, &GENESIS, b"{}"));
        assert_ne!(base, record_mac(&key, 1, &[1; 32], b"{}"));
        assert_ne!(base, record_mac(&key, 1, &GENESIS, b"{ }"));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert!(!mac_matches(&other, 1, &GENESIS, b"{}", &base));
        assert!(!mac_matches(&key, 1, &[0; 5], b"{}", &base));
    }
}
