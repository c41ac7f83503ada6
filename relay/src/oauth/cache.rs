//! The hot path: verified access tokens, cached so a request does not pay for
//! a signature check every time.
//!
//! Entries are keyed by the SHA-256 of the token (the token itself is never
//! stored), hold the validated claims, and are bounded in number
//! ([`DEFAULT_CACHE_ENTRIES`]). A hit still checks, cheaply: the audience
//! against the requested tunnel, expiry (and the signing key's retirement)
//! against `now`, and revocation. Revocations are kept in a small side table
//! that the hot path reads only when it is not empty.
//!
//! The cache is `quick_cache`'s sharded, bounded `sync::Cache`: CLOCK-PRO-like
//! eviction that keeps frequently used tokens under a scan of one-off ones,
//! no background threads, and a lock per shard, so it beats a hand-written
//! LRU behind one mutex on both hit rate and contention.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::oauth::keys::VerifyingKeys;
use crate::oauth::token::{
    AccessClaims, MAX_ACCESS_TOKEN_TTL, MAX_TOKEN_BYTES, TokenError, Validator,
};

/// Most verified tokens kept; beyond it, the least useful are evicted (they
/// are re-verified on next use). With claims of typical size (~0.5 KiB)
/// a full cache holds about 60 MiB.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

/// A [`Validator`] in front of a bounded cache of verified tokens, with
/// revocation.
#[derive(Debug)]
pub struct ValidatorWithCache {
    validator: Validator,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Entry>>,
    revocations: RwLock<Revocations>,
    /// Number of revocation entries; `0` lets the hot path skip the lock.
    revoked: AtomicUsize,
    verifications: AtomicU64,
}

impl ValidatorWithCache {
    /// Caches up to [`DEFAULT_CACHE_ENTRIES`] tokens verified by `validator`.
    pub fn new(validator: Validator) -> Self {
        Self::with_capacity(validator, DEFAULT_CACHE_ENTRIES)
    }

    /// Caches up to `entries` tokens (at least 1).
    pub fn with_capacity(validator: Validator, entries: usize) -> Self {
        Self {
            validator,
            cache: quick_cache::sync::Cache::new(entries.max(1)),
            revocations: RwLock::new(Revocations::default()),
            revoked: AtomicUsize::new(0),
            verifications: AtomicU64::new(0),
        }
    }

    /// Validates `token` for the tunnel whose canonical resource URL is
    /// `expected_aud` at `now`: from the cache when it was verified before,
    /// else fully (and then cached).
    pub fn validate(
        &self,
        token: &str,
        expected_aud: &str,
        now: u64,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let key = cache_key(token);
        if let Some(entry) = self.cache.get(&key) {
            if now >= entry.valid_until {
                self.cache.remove(&key);
                return Err(if now >= entry.expires_at {
                    TokenError::Expired
                } else {
                    TokenError::UnknownKey
                });
            }
            if entry.claims.nbf.max(entry.claims.iat) > now.saturating_add(self.leeway_secs()) {
                return Err(TokenError::NotYetValid);
            }
            if entry.claims.aud != expected_aud {
                return Err(TokenError::WrongAudience);
            }
            self.check_revoked(&entry.claims)?;
            return Ok(Arc::clone(&entry.claims));
        }

        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (claims, key_retires_at) =
            self.validator.validate_detailed(token, expected_aud, now)?;
        let claims = Arc::new(claims);
        self.check_revoked(&claims)?;
        let expires_at = claims.exp.saturating_add(self.leeway_secs());
        let entry = Entry {
            valid_until: key_retires_at.map_or(expires_at, |r| r.min(expires_at)),
            expires_at,
            claims: Arc::clone(&claims),
        };
        self.cache.insert(key, Arc::new(entry));
        Ok(claims)
    }

    /// Refuses the token with this `jti` from now on. `exp` is the token's
    /// expiry: the revocation is forgotten once the token could no longer
    /// validate anyway. O(1): a cached entry stays until it expires or is
    /// evicted, but every hit checks the revocation first.
    pub fn revoke_jti(&self, jti: &str, exp: u64, now: u64) {
        let forget_at = exp.saturating_add(self.leeway_secs());
        let mut r = self.write_revocations();
        r.purge(now);
        r.jtis.insert(jti.to_owned(), forget_at);
        self.revoked.store(r.len(), Ordering::Release);
    }

    /// Refuses every token of `sub` issued at or before `now` (`iat <= now`);
    /// tokens issued later are not affected (so a token issued in the same
    /// second as the revocation is refused too: fail closed). The revocation
    /// is forgotten once every token it covers has expired. Also drops the
    /// subject's cached entries (one pass over the cache; an admin action).
    pub fn revoke_sub(&self, sub: &str, now: u64) {
        let forget_at = now
            .saturating_add(MAX_ACCESS_TOKEN_TTL.as_secs())
            .saturating_add(self.leeway_secs());
        let mut r = self.write_revocations();
        r.purge(now);
        let revoked_at = r.subs.entry(sub.to_owned()).or_insert((now, forget_at));
        *revoked_at = (revoked_at.0.max(now), revoked_at.1.max(forget_at));
        self.revoked.store(r.len(), Ordering::Release);
        drop(r);
        self.cache.retain(|_, e| e.claims.sub != sub);
    }

    /// Refuses every token issued to the OAuth client `client_id` at or
    /// before `at` (`mcp-relay clients revoke`), cached or not; forgotten
    /// once every such token has expired.
    pub fn revoke_client(&self, client_id: &str, at: u64, now: u64) {
        let forget_at = at
            .saturating_add(MAX_ACCESS_TOKEN_TTL.as_secs())
            .saturating_add(self.leeway_secs());
        if forget_at <= now {
            return;
        }
        let mut r = self.write_revocations();
        r.purge(now);
        let e = r
            .clients
            .entry(client_id.to_owned())
            .or_insert((at, forget_at));
        *e = (e.0.max(at), e.1.max(forget_at));
        self.revoked.store(r.len(), Ordering::Release);
        drop(r);
        self.cache.retain(|_, e| e.claims.client_id != client_id);
    }

    /// Drops expired cache entries and revocations that can no longer
    /// matter. Validation stays correct without it; call it now and then to
    /// give memory back sooner.
    pub fn purge(&self, now: u64) {
        let mut r = self.write_revocations();
        r.purge(now);
        self.revoked.store(r.len(), Ordering::Release);
        drop(r);
        self.cache.retain(|_, e| now < e.valid_until);
    }

    /// Replaces the verifying keys and empties the cache, so a key that was
    /// removed (not merely rotated) stops verifying at once.
    pub fn set_keys(&self, keys: VerifyingKeys) {
        self.validator.set_keys(keys);
        self.cache.clear();
    }

    /// The validator behind the cache.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// How many tokens were fully verified (cache misses) so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// How many verified tokens are cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The leeway the validator applies, for callers reporting it.
    pub fn leeway(&self) -> Duration {
        self.validator.leeway()
    }

    fn leeway_secs(&self) -> u64 {
        self.validator.leeway().as_secs()
    }

    fn check_revoked(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.revoked.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let r = self
            .revocations
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let by_jti = r.jtis.contains_key(&claims.jti);
        let by_sub = r
            .subs
            .get(&claims.sub)
            .is_some_and(|&(revoked_at, _)| claims.iat <= revoked_at);
        let by_client = r
            .clients
            .get(&claims.client_id)
            .is_some_and(|&(revoked_at, _)| claims.iat <= revoked_at);
        if by_jti || by_sub || by_client {
            Err(TokenError::Revoked)
        } else {
            Ok(())
        }
    }

    fn write_revocations(&self) -> std::sync::RwLockWriteGuard<'_, Revocations> {
        self.revocations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Entry {
    claims: Arc<AccessClaims>,
    /// `exp + leeway`: from then on the token is expired.
    expires_at: u64,
    /// `expires_at`, or earlier if the signing key retires first.
    valid_until: u64,
}

/// Revoked token ids and subjects, each with the time it may be forgotten.
#[derive(Debug, Default)]
struct Revocations {
    /// jti → forget at.
    jtis: HashMap<String, u64>,
    /// sub → (tokens issued at or before this are revoked, forget at).
    subs: HashMap<String, (u64, u64)>,
    /// client_id → (tokens issued at or before this are revoked, forget at).
    clients: HashMap<String, (u64, u64)>,
}

impl Revocations {
    fn purge(&mut self, now: u64) {
        self.jtis.retain(|_, forget_at| now < *forget_at);
        self.subs.retain(|_, (_, forget_at)| now < *forget_at);
        self.clients.retain(|_, (_, forget_at)| now < *forget_at);
    }

    fn len(&self) -> usize {
        self.jtis.len() + self.subs.len() + self.clients.len()
    }
}

fn cache_key(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::keys::{DEFAULT_ROTATION_OVERLAP, KeySet};
    use crate::oauth::token::tests::{AUD_A, ISS, NOW, grant};
    use crate::oauth::token::{DEFAULT_LEEWAY, Issuer};

    fn setup(entries: usize) -> (KeySet, ValidatorWithCache) {
        let keys = KeySet::generate().unwrap();
        let v =
            ValidatorWithCache::with_capacity(Validator::new(ISS, keys.verifying_keys()), entries);
        (keys, v)
    }

    fn issue(keys: &KeySet, now: u64) -> String {
        Issuer::new(ISS)
            .issue(keys, &grant(), now)
            .unwrap()
            .into_token()
    }

    #[test]
    fn hit_returns_same_claims_without_reverifying() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        let first = v.validate(&token, AUD_A, NOW).unwrap();
        assert_eq!(v.verifications(), 1);
        for i in 0..10 {
            let again = v.validate(&token, AUD_A, NOW + i).unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(v.verifications(), 1);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn cache_is_keyed_by_hash_not_token() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        v.validate(&token, AUD_A, NOW).unwrap();
        let text = format!("{v:?}");
        assert!(!text.contains(&token));
        let sig = token.rsplit('.').next().unwrap();
        assert!(!text.contains(sig));
    }

    #[test]
    fn expired_entry_is_rejected_even_if_cached() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        let claims = v.validate(&token, AUD_A, NOW).unwrap();
        let dead = claims.exp + DEFAULT_LEEWAY.as_secs();
        assert!(v.validate(&token, AUD_A, dead - 1).is_ok());
        assert_eq!(v.validate(&token, AUD_A, dead), Err(TokenError::Expired));
        assert_eq!(v.validate(&token, AUD_A, dead), Err(TokenError::Expired));
        assert_eq!(v.verifications(), 2, "the expired entry was dropped");
    }

    #[test]
    fn cached_token_for_tunnel_a_fails_at_tunnel_b() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        v.validate(&token, AUD_A, NOW).unwrap();
        assert_eq!(
            v.validate(&token, "https://relay.example.com/t/other/mcp", NOW),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(v.verifications(), 1, "answered from the cache");
    }

    #[test]
    fn revoked_jti_is_rejected_cached_or_not() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        let claims = v.validate(&token, AUD_A, NOW).unwrap();
        let other = issue(&keys, NOW);
        v.validate(&other, AUD_A, NOW).unwrap();
        v.revoke_jti(&claims.jti, claims.exp, NOW + 1);
        assert_eq!(v.validate(&token, AUD_A, NOW + 1), Err(TokenError::Revoked));
        assert!(
            v.validate(&other, AUD_A, NOW + 1).is_ok(),
            "only that token"
        );

        // Revoked before it was ever seen: refused on the verifying path too.
        let fresh = issue(&keys, NOW);
        let fresh_jti = jsonwebtoken::dangerous::insecure_decode::<AccessClaims>(&fresh)
            .unwrap()
            .claims
            .jti;
        v.revoke_jti(&fresh_jti, NOW + 900, NOW + 1);
        assert_eq!(v.validate(&fresh, AUD_A, NOW + 1), Err(TokenError::Revoked));
        // Forgotten once the token is dead anyway.
        v.purge(NOW + 10_000);
        assert_eq!(v.revocations.read().unwrap().len(), 0);
    }

    #[test]
    fn revoked_client_blocks_its_tokens_cached_or_not() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        let claims = v.validate(&token, AUD_A, NOW).unwrap();
        v.revoke_client("someone-else", NOW + 1, NOW + 1);
        assert!(v.validate(&token, AUD_A, NOW + 1).is_ok(), "other client");
        v.revoke_client(&claims.client_id, NOW + 1, NOW + 1);
        assert_eq!(v.validate(&token, AUD_A, NOW + 2), Err(TokenError::Revoked));
        let fresh = issue(&keys, NOW);
        assert_eq!(v.validate(&fresh, AUD_A, NOW + 2), Err(TokenError::Revoked));
    }

    #[test]
    fn revoked_subject_blocks_older_tokens_only() {
        let (keys, v) = setup(16);
        let old = issue(&keys, NOW);
        v.validate(&old, AUD_A, NOW).unwrap();
        v.revoke_sub("user-1", NOW + 5);
        assert_eq!(v.validate(&old, AUD_A, NOW + 6), Err(TokenError::Revoked));
        let newer = issue(&keys, NOW + 6);
        assert!(v.validate(&newer, AUD_A, NOW + 6).is_ok());
    }

    #[test]
    fn cache_is_bounded() {
        let (keys, v) = setup(64);
        for i in 0..500 {
            let token = issue(&keys, NOW + i % 7);
            v.validate(&token, AUD_A, NOW + 7).unwrap();
        }
        assert!(v.len() <= 64, "len {}", v.len());
        assert_eq!(v.verifications(), 500);
    }

    #[test]
    fn retired_key_stops_cached_tokens() {
        let (mut keys, v) = setup(16);
        let token = Issuer::new(ISS)
            .with_ttl(Duration::from_secs(7200))
            .unwrap()
            .issue(&keys, &grant(), NOW)
            .unwrap()
            .into_token();
        keys.rotate(NOW, DEFAULT_ROTATION_OVERLAP).unwrap();
        v.set_keys(keys.verifying_keys());
        v.validate(&token, AUD_A, NOW + 1).unwrap();
        let retire = NOW + DEFAULT_ROTATION_OVERLAP.as_secs();
        assert!(v.validate(&token, AUD_A, retire - 1).is_ok());
        assert_eq!(
            v.validate(&token, AUD_A, retire),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(v.verifications(), 1);
    }

    #[test]
    fn removed_key_stops_cached_tokens_at_once() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        v.validate(&token, AUD_A, NOW).unwrap();
        let replacement = KeySet::generate().unwrap();
        v.set_keys(replacement.verifying_keys());
        assert_eq!(
            v.validate(&token, AUD_A, NOW + 1),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn failures_are_not_cached() {
        let (keys, v) = setup(16);
        let token = issue(&keys, NOW);
        assert_eq!(
            v.validate(&token, "https://relay.example.com/t/x/mcp", NOW),
            Err(TokenError::WrongAudience)
        );
        assert!(v.is_empty());
        assert!(v.validate(&token, AUD_A, NOW).is_ok());
    }
}
