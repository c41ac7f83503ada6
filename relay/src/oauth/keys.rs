//! Signing keys: the relay's Ed25519 keys, their rotation, and the JWKS.
//!
//! One [`KeySet`] holds the active [`SigningKey`] (it signs every new access
//! token and identity assertion) and the keys it replaced, each still
//! published until its `retires_at` so tokens signed before a rotation keep
//! verifying. A key's `kid` is its RFC 7638 thumbprint, so the same key always
//! has the same id and a JWKS can be checked against the keys it names.
//!
//! [`VerifyingKeys`] is the public half: built from a [`KeySet`] at the relay,
//! or from a published JWKS at the agent. It does the JWS checks every token
//! kind shares (size, header, pinned algorithm, `kid`, `typ`, signature); the
//! claim checks live with each token kind (`token`, `assertion`).
//!
//! Why EdDSA (Ed25519) rather than ES256: every proxied request costs one
//! assertion signature at the relay and one verification at the agent, and
//! with aws-lc-rs Ed25519 is about twice as fast on both (measured on this
//! project's 2-core machine: sign 10 µs vs 20 µs, verify 40 µs vs 80 µs).
//! Ed25519 signatures are deterministic (no per-signature randomness to get
//! wrong), and `jsonwebtoken` supports it with aws-lc-rs directly. Only the
//! relay and the agent ever verify these tokens (to MCP clients they are
//! opaque), so ES256's wider support among third-party verifiers buys nothing.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::oauth::token::{DEFAULT_ACCESS_TOKEN_TTL, DEFAULT_LEEWAY, MAX_TOKEN_BYTES, TokenError};

/// How long a replaced key stays published after [`KeySet::rotate`], unless
/// the caller says otherwise: the default access-token lifetime plus the
/// validation leeway, so every token signed just before the rotation still
/// verifies until it expires. Tokens issued with a longer TTL need a longer
/// overlap, or they stop verifying when their key retires.
pub const DEFAULT_ROTATION_OVERLAP: Duration =
    Duration::from_secs(DEFAULT_ACCESS_TOKEN_TTL.as_secs() + DEFAULT_LEEWAY.as_secs());

/// Most keys a JWKS may carry before [`VerifyingKeys::from_jwks`] refuses it.
pub const MAX_JWKS_KEYS: usize = 16;

/// Most retired keys a [`KeySet`] keeps; rotating more often than that within
/// one overlap drops the oldest retired key early.
pub const MAX_RETIRED_KEYS: usize = 8;

/// The JWS algorithm of a signing key. Tokens whose header names anything
/// else (`none`, `HS256`, …) are refused before any key is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    /// Ed25519 signatures (RFC 8037), JWS `alg` value `EdDSA`.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl SigningAlg {
    /// The JWS `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm whose JWS name is `name`, if we sign with it.
    pub fn from_jws_name(name: &str) -> Option<Self> {
        (name == "EdDSA").then_some(Self::EdDsa)
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A private key in PKCS#8 DER. `Debug` prints `MASKED`; serialized as
/// standard base64 so a [`StoredKey`] is plain JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs8Der(Vec<u8>);

impl Pkcs8Der {
    /// The DER bytes. Only for persisting the key; never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pkcs8Der {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkcs8Der(MASKED)")
    }
}

impl Serialize for Pkcs8Der {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Pkcs8Der {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("the private key is not valid base64"))
    }
}

/// The public half of a signing key as a JWK (RFC 8037 `OKP`, curve Ed25519).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    raw: Vec<u8>,
    x: String,
}

impl PublicJwk {
    /// The JWK of a raw 32-byte Ed25519 public key.
    pub fn from_ed25519(public_key: &[u8]) -> Self {
        Self {
            raw: public_key.to_vec(),
            x: URL_SAFE_NO_PAD.encode(public_key),
        }
    }

    /// The base64url public key (the JWK `x` member).
    pub fn x(&self) -> &str {
        &self.x
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of the required members in
    /// lexicographic order, without whitespace.
    pub fn thumbprint(&self) -> String {
        // `x` is base64url, so it needs no JSON escaping.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, self.x);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    /// This key as one JWKS entry, with `kid`, `alg` and `use: "sig"`.
    pub fn to_jwk(&self, kid: &str, alg: SigningAlg) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.x,
            "kid": kid,
            "alg": alg.as_str(),
            "use": "sig",
        })
    }
}

/// One signing key: id, algorithm, private key and public JWK.
#[derive(Debug, Clone)]
pub struct SigningKey {
    kid: String,
    alg: SigningAlg,
    pkcs8: Pkcs8Der,
    public: PublicJwk,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A fresh Ed25519 key from the system's secure random source.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| KeyError::Generate)?;
        let der = pair.to_pkcs8().map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Loads a key from PKCS#8 DER (v1 or v2) and derives its `kid`.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::InvalidPkcs8)?;
        let public = PublicJwk::from_ed25519(pair.public_key().as_ref());
        Ok(Self {
            kid: public.thumbprint(),
            alg: SigningAlg::EdDsa,
            pkcs8: Pkcs8Der(der.to_vec()),
            public,
            encoding: EncodingKey::from_ed_der(der),
        })
    }

    /// The key id: the RFC 7638 thumbprint of [`Self::public_jwk`].
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The public key.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// The private key, for persisting. Never log it (its `Debug` is masked).
    pub fn pkcs8(&self) -> &Pkcs8Der {
        &self.pkcs8
    }

    /// The public key as a JWKS entry.
    pub fn jwk(&self) -> serde_json::Value {
        self.public.to_jwk(&self.kid, self.alg)
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg.jwt());
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))
    }

    fn to_stored(&self) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            alg: self.alg,
            pkcs8: self.pkcs8.clone(),
        }
    }

    fn from_stored(stored: &StoredKey) -> Result<Self, KeyError> {
        let key = Self::from_pkcs8(stored.pkcs8.expose())?;
        if key.kid != stored.kid {
            return Err(KeyError::KidMismatch {
                stored: stored.kid.clone(),
                computed: key.kid,
            });
        }
        Ok(key)
    }
}

/// A replaced key, still published (and still verifying) until `retires_at`.
#[derive(Debug, Clone)]
pub struct RetiredKey {
    key: SigningKey,
    retires_at: u64,
}

impl RetiredKey {
    /// The key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Seconds since the Unix epoch from which the key no longer verifies.
    pub fn retires_at(&self) -> u64 {
        self.retires_at
    }
}

/// The relay's signing keys: one active key plus retired-but-published ones.
///
/// Serializes to and from [`StoredKeySet`] (private keys included, as base64
/// PKCS#8); loading re-derives every `kid` and refuses a mismatch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredKeySet", into = "StoredKeySet")]
pub struct KeySet {
    active: SigningKey,
    retired: Vec<RetiredKey>,
}

impl KeySet {
    /// A set with one freshly generated active key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_active(SigningKey::generate()?))
    }

    /// A set whose only key is `active`.
    pub fn from_active(active: SigningKey) -> Self {
        Self {
            active,
            retired: Vec::new(),
        }
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The replaced keys still published, oldest first.
    pub fn retired(&self) -> &[RetiredKey] {
        &self.retired
    }

    /// Makes a new active key; the old one keeps verifying until
    /// `now + overlap` (use [`DEFAULT_ROTATION_OVERLAP`] unless longer-lived
    /// tokens are out). Returns the new active key.
    pub fn rotate(&mut self, now: u64, overlap: Duration) -> Result<&SigningKey, KeyError> {
        let fresh = SigningKey::generate()?;
        let old = std::mem::replace(&mut self.active, fresh);
        self.prune(now);
        self.retired.push(RetiredKey {
            key: old,
            retires_at: now.saturating_add(overlap.as_secs()),
        });
        if self.retired.len() > MAX_RETIRED_KEYS {
            self.retired.sort_by_key(|r| r.retires_at);
            let excess = self.retired.len() - MAX_RETIRED_KEYS;
            self.retired.drain(..excess);
        }
        Ok(&self.active)
    }

    /// Forgets retired keys whose retirement time has come.
    pub fn prune(&mut self, now: u64) {
        self.retired.retain(|r| r.retires_at > now);
    }

    /// The RFC 7517 key set to publish at `now`: `{"keys": […]}`, active key
    /// first, public parts only.
    pub fn jwks(&self, now: u64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = std::iter::once(self.active.jwk())
            .chain(
                self.retired
                    .iter()
                    .filter(|r| r.retires_at > now)
                    .map(|r| r.key.jwk()),
            )
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The public keys that verify tokens, each retired key with its
    /// retirement time.
    pub fn verifying_keys(&self) -> VerifyingKeys {
        let mut keys = HashMap::with_capacity(1 + self.retired.len());
        keys.insert(
            self.active.kid.clone(),
            VerifyingKey::new(self.active.alg, &self.active.public, None),
        );
        for r in &self.retired {
            keys.insert(
                r.key.kid.clone(),
                VerifyingKey::new(r.key.alg, &r.key.public, Some(r.retires_at)),
            );
        }
        VerifyingKeys::from_map(keys)
    }

    /// Signs `claims` with the active key.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        self.active.sign(typ, claims)
    }

    /// This set as plain data, for the caller to persist.
    pub fn to_stored(&self) -> StoredKeySet {
        StoredKeySet {
            active: self.active.to_stored(),
            retired: self
                .retired
                .iter()
                .map(|r| StoredRetiredKey {
                    key: r.key.to_stored(),
                    retires_at: r.retires_at,
                })
                .collect(),
        }
    }

    /// Loads a set saved with [`Self::to_stored`].
    pub fn from_stored(stored: &StoredKeySet) -> Result<Self, KeyError> {
        Ok(Self {
            active: SigningKey::from_stored(&stored.active)?,
            retired: stored
                .retired
                .iter()
                .map(|r| {
                    Ok(RetiredKey {
                        key: SigningKey::from_stored(&r.key)?,
                        retires_at: r.retires_at,
                    })
                })
                .collect::<Result<_, KeyError>>()?,
        })
    }
}

impl TryFrom<StoredKeySet> for KeySet {
    type Error = KeyError;

    fn try_from(stored: StoredKeySet) -> Result<Self, KeyError> {
        Self::from_stored(&stored)
    }
}

impl From<KeySet> for StoredKeySet {
    fn from(set: KeySet) -> Self {
        set.to_stored()
    }
}

/// A [`KeySet`] as plain data (what the store saves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKeySet {
    /// The key that signs new tokens.
    pub active: StoredKey,
    /// Replaced keys still published.
    #[serde(default)]
    pub retired: Vec<StoredRetiredKey>,
}

/// One saved key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// RFC 7638 thumbprint; checked against the key on load.
    pub kid: String,
    /// JWS algorithm.
    pub alg: SigningAlg,
    /// Private key, PKCS#8 DER as standard base64.
    pub pkcs8: Pkcs8Der,
}

/// One saved retired key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRetiredKey {
    /// The key.
    pub key: StoredKey,
    /// Seconds since the Unix epoch from which it no longer verifies.
    pub retires_at: u64,
}

/// Public keys that verify our tokens, by `kid`.
#[derive(Debug, Clone)]
pub struct VerifyingKeys {
    keys: HashMap<String, VerifyingKey>,
    validation: Validation,
}

impl VerifyingKeys {
    /// Parses a published JWKS (`{"keys": […]}`), as the agent does.
    ///
    /// Keys of a type we do not sign with are skipped (RFC 7517 §5); a key
    /// of our type that is malformed, or any key carrying private members,
    /// refuses the whole set. Keys from a JWKS carry no retirement time: the
    /// publisher drops retired keys, so refresh the JWKS to follow rotations.
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, KeyError> {
        let entries = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or(KeyError::InvalidJwks("no \"keys\" array"))?;
        if entries.len() > MAX_JWKS_KEYS {
            return Err(KeyError::InvalidJwks("too many keys"));
        }
        let mut keys = HashMap::new();
        for entry in entries {
            let jwk: JwkEntry = serde_json::from_value(entry.clone())
                .map_err(|_| KeyError::InvalidJwks("a key is not a JSON object of strings"))?;
            if jwk.d.is_some() {
                return Err(KeyError::InvalidJwks(
                    "a key carries private material (\"d\")",
                ));
            }
            if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
                continue;
            }
            if jwk.alg.as_deref().is_some_and(|a| a != "EdDSA") {
                return Err(KeyError::InvalidJwks("an Ed25519 key names another alg"));
            }
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = jwk
                .kid
                .ok_or(KeyError::InvalidJwks("an Ed25519 key has no kid"))?;
            let x = jwk
                .x
                .ok_or(KeyError::InvalidJwks("an Ed25519 key has no \"x\""))?;
            let raw = URL_SAFE_NO_PAD
                .decode(x.as_bytes())
                .map_err(|_| KeyError::InvalidJwks("an Ed25519 \"x\" is not base64url"))?;
            ParsedPublicKey::new(&ED25519, &raw)
                .map_err(|_| KeyError::InvalidJwks("an Ed25519 \"x\" is not a public key"))?;
            let public = PublicJwk::from_ed25519(&raw);
            keys.insert(kid, VerifyingKey::new(SigningAlg::EdDsa, &public, None));
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKeys);
        }
        Ok(Self::from_map(keys))
    }

    /// Whether `kid` names a key that verifies at `now`.
    pub fn contains(&self, kid: &str, now: u64) -> bool {
        self.keys.get(kid).is_some_and(|k| k.live_at(now))
    }

    /// How many keys (live or not) this set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The JWS checks every token kind shares: size, shape, pinned
    /// algorithm, `kid` (known and not retired at `now`), `typ`, signature.
    /// Returns the decoded claims; claim checks are the caller's.
    pub(crate) fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        expected_typ: &str,
        now: u64,
    ) -> Result<Verified<T>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        let alg = SigningAlg::from_jws_name(&header.alg).ok_or(TokenError::AlgorithmNotAllowed)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: we understand no extension, so refuse them all.
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let key = self
            .keys
            .get(kid)
            .filter(|k| k.live_at(now))
            .ok_or(TokenError::UnknownKey)?;
        if key.alg != alg {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| typ_matches(t, expected_typ))
        {
            return Err(TokenError::WrongType);
        }
        let data = jsonwebtoken::decode::<T>(token, &key.decoding, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::UnsupportedAlgorithm => TokenError::AlgorithmNotAllowed,
                _ => TokenError::Malformed,
            },
        )?;
        Ok(Verified {
            claims: data.claims,
            key_retires_at: key.retires_at,
        })
    }

    fn from_map(keys: HashMap<String, VerifyingKey>) -> Self {
        // jsonwebtoken checks only the signature and the algorithm; every
        // claim check is ours, against the caller's `now`.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self { keys, validation }
    }
}

/// Why keys could not be made, loaded or used to sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The system random source failed.
    #[error("could not generate a signing key: the system random source failed")]
    Generate,
    /// The bytes are not an Ed25519 PKCS#8 private key.
    #[error(
        "the stored signing key is not an Ed25519 PKCS#8 key; restore it from a backup or run `mcp-relay keys rotate`"
    )]
    InvalidPkcs8,
    /// A stored `kid` does not match its key's thumbprint.
    #[error(
        "the stored signing key {stored} is really {computed}; the key store was edited or is corrupt"
    )]
    KidMismatch {
        /// The `kid` in the store.
        stored: String,
        /// The thumbprint of the stored key.
        computed: String,
    },
    /// A JWKS is malformed.
    #[error("the JWKS is invalid: {0}")]
    InvalidJwks(&'static str),
    /// A JWKS holds no key we can verify with.
    #[error("the JWKS holds no Ed25519 signing key")]
    NoUsableKeys,
    /// The signing library refused to sign.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A verified token's claims and when the key that signed it retires.
#[derive(Debug)]
pub(crate) struct Verified<T> {
    /// The decoded, not yet checked, claims.
    pub(crate) claims: T,
    /// `None` for the active key and for keys read from a JWKS.
    pub(crate) key_retires_at: Option<u64>,
}

#[derive(Debug, Clone)]
struct VerifyingKey {
    alg: SigningAlg,
    decoding: DecodingKey,
    retires_at: Option<u64>,
}

impl VerifyingKey {
    fn new(alg: SigningAlg, public: &PublicJwk, retires_at: Option<u64>) -> Self {
        Self {
            alg,
            // For Ed25519, jsonwebtoken's "DER" key is the raw public key.
            decoding: DecodingKey::from_ed_der(&public.raw),
            retires_at,
        }
    }

    fn live_at(&self, now: u64) -> bool {
        self.retires_at.is_none_or(|t| now < t)
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct JwkEntry {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    d: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
}

/// RFC 7515 §4.1.9: `typ` is a media type, compared case-insensitively, and
/// the `application/` prefix may be left out.
fn typ_matches(typ: &str, expected: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pkcs8_with_the_same_kid() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(key.pkcs8().expose()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
        assert_eq!(key.kid().len(), 43, "base64url of 32 bytes");
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
        let raw = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let jwk = PublicJwk::from_ed25519(&raw);
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn debug_masks_private_key() {
        let set = KeySet::generate().unwrap();
        let der_b64 = STANDARD.encode(set.active().pkcs8().expose());
        for text in [format!("{set:?}"), format!("{:?}", set.to_stored())] {
            assert!(text.contains("MASKED"), "{text}");
            assert!(!text.contains(&der_b64));
        }
    }

    #[test]
    fn jwks_has_public_parts_only() {
        let set = KeySet::generate().unwrap();
        let jwks = set.jwks(0);
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k["kid"], set.active().kid());
        assert_eq!(k["alg"], "EdDSA");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kty"], "OKP");
        assert!(k.get("d").is_none());
        let parsed = VerifyingKeys::from_jwks(&jwks).unwrap();
        assert!(parsed.contains(set.active().kid(), 0));
    }

    #[test]
    fn rotation_publishes_old_key_until_retirement() {
        let mut set = KeySet::generate().unwrap();
        let old = set.active().kid().to_owned();
        let now = 1_000_000;
        let new = set
            .rotate(now, DEFAULT_ROTATION_OVERLAP)
            .unwrap()
            .kid()
            .to_owned();
        assert_ne!(old, new);
        let retire = now + DEFAULT_ROTATION_OVERLAP.as_secs();
        let kids = |t| -> Vec<String> {
            set.jwks(t)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(kids(retire - 1), vec![new.clone(), old.clone()]);
        assert_eq!(kids(retire), vec![new.clone()]);
        let vk = set.verifying_keys();
        assert!(vk.contains(&old, retire - 1));
        assert!(!vk.contains(&old, retire));
        set.prune(retire);
        assert!(set.retired().is_empty());
    }

    #[test]
    fn retired_list_is_bounded() {
        let mut set = KeySet::generate().unwrap();
        for i in 0..(MAX_RETIRED_KEYS as u64 + 3) {
            set.rotate(i, Duration::from_secs(3600)).unwrap();
        }
        assert_eq!(set.retired().len(), MAX_RETIRED_KEYS);
    }

    #[test]
    fn stored_set_round_trips_and_detects_edits() {
        let mut set = KeySet::generate().unwrap();
        set.rotate(10, Duration::from_secs(60)).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        let back: KeySet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.active().kid(), set.active().kid());
        assert_eq!(back.retired().len(), 1);
        assert_eq!(back.retired()[0].retires_at(), 70);

        let mut stored = set.to_stored();
        stored.active.kid = "forged".to_owned();
        assert!(matches!(
            KeySet::from_stored(&stored),
            Err(KeyError::KidMismatch { .. })
        ));
        stored.active.pkcs8 = Pkcs8Der(vec![1, 2, 3]);
        assert_eq!(
            KeySet::from_stored(&stored).unwrap_err(),
            KeyError::InvalidPkcs8
        );
    }

    #[test]
    fn jwks_parsing_refuses_private_and_garbage_keys() {
        let set = KeySet::generate().unwrap();
        let mut jwks = set.jwks(0);
        jwks["keys"][0]["d"] = serde_json::json!("secret");
        assert!(matches!(
            VerifyingKeys::from_jwks(&jwks),
            Err(KeyError::InvalidJwks(_))
        ));
        let mut jwks = set.jwks(0);
        jwks["keys"][0]["x"] = serde_json::json!("AAAA");
        assert!(matches!(
            VerifyingKeys::from_jwks(&jwks),
            Err(KeyError::InvalidJwks(_))
        ));
        let rsa_only = serde_json::json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]});
        assert_eq!(
            VerifyingKeys::from_jwks(&rsa_only).unwrap_err(),
            KeyError::NoUsableKeys
        );
        assert!(VerifyingKeys::from_jwks(&serde_json::json!([])).is_err());
    }

    #[test]
    fn typ_comparison_follows_rfc_7515() {
        assert!(typ_matches("at+jwt", "at+jwt"));
        assert!(typ_matches("application/AT+JWT", "at+jwt"));
        assert!(!typ_matches("JWT", "at+jwt"));
        assert!(!typ_matches("application/", "at+jwt"));
    }
}
