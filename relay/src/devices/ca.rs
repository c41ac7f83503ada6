//! The relay's device CA: issues short-lived client certificates for agents
//! from their CSRs (the private key never leaves the laptop), and reads the
//! certificates agents present on the QUIC handshake.
//!
//! Files in the state dir: `device-ca.pem` (public) and `device-ca.key`
//! (0600), created on first use. A device certificate names the device id
//! (subject CN) and the user (an rfc822Name SAN); the relay trusts its own
//! database over these fields: the id is looked up, and the certificate's
//! public key must be the one enrolled.

use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::state_dir::{StateDir, write_private};

/// Default lifetime of a device certificate.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default time after expiry during which a device may still renew.
pub const DEFAULT_RENEW_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Largest CSR accepted.
pub const MAX_CSR_BYTES: usize = 8 * 1024;
const CA_LIFETIME_DAYS: i64 = 3650;
/// Retired device CAs still trusted (their certificates, until when).
const RETIRED_FILE: &str = "device-ca-retired.json";

/// A retired CA, trusted until the certificates it issued can no longer be used.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredCa {
    /// The CA certificate (PEM).
    pub pem: String,
    /// Unix seconds after which it is no longer trusted.
    pub trust_until: i64,
}

/// The CA: its certificate and an issuer holding its key.
pub struct DeviceCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

/// Why a CSR was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Not a parseable, correctly self-signed CSR.
    #[error("the certificate signing request is not valid: {0}")]
    Invalid(String),
    /// Larger than [`MAX_CSR_BYTES`].
    #[error("the certificate signing request is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    /// The CSR names someone else.
    #[error(
        "the certificate signing request names {named}, but the enrollment is for {user}; a device certificate is always issued to the enrolling user"
    )]
    OtherUser {
        /// Who the CSR names.
        named: String,
        /// Who is enrolling.
        user: String,
    },
}

/// What the relay reads from a device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDevice {
    /// Subject CN: the device id.
    pub device_id: String,
    /// SHA-256 of the SubjectPublicKeyInfo (hex).
    pub key_sha256: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// A certificate issued from a CSR.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// SHA-256 of the device's SubjectPublicKeyInfo (hex).
    pub key_sha256: String,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl DeviceCa {
    /// Replaces the CA with a new one. The old CA stays trusted for
    /// `trust_old_for` (certificate lifetime + renewal grace) so devices keep
    /// working and pick up certificates from the new CA when they renew.
    pub fn rotate(state: &StateDir, trust_old_for: Duration) -> anyhow::Result<Self> {
        let old = Self::load_or_create(state)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut retired = retired(state)?;
        retired.retain(|r| r.trust_until > now);
        retired.push(RetiredCa {
            pem: old.cert_pem.clone(),
            trust_until: now.saturating_add(trust_old_for.as_secs() as i64),
        });
        write_private(
            &state.path(RETIRED_FILE),
            &serde_json::to_vec_pretty(&retired)?,
        )?;
        // Remove the current pair so a new one is made (key first: a crash
        // in between leaves no usable half-pair that could be mistaken).
        std::fs::remove_file(state.path("device-ca.key")).context("removing the old CA key")?;
        std::fs::remove_file(state.path("device-ca.pem")).context("removing the old CA")?;
        let new = Self::load_or_create(state)?;
        tracing::info!("rotated the device CA; the old one stays trusted for {trust_old_for:?}");
        Ok(new)
    }

    /// Every CA certificate a device certificate may chain to now: the
    /// current one and retired ones still within their trust window.
    pub fn trust_anchors(&self, state: &StateDir) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut out = vec![self.cert_der.clone()];
        for r in retired(state)? {
            if r.trust_until > now
                && let Some(Ok(der)) = rustls_pemfile::certs(&mut r.pem.as_bytes()).next()
            {
                out.push(der);
            }
        }
        Ok(out)
    }

    /// Loads the CA from the state dir, creating it on first use.
    pub fn load_or_create(state: &StateDir) -> anyhow::Result<Self> {
        let cert_path = state.path("device-ca.pem");
        let key_path = state.path("device-ca.key");
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let key = KeyPair::from_pem(&key_pem)
                .with_context(|| format!("parsing {}", key_path.display()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .next()
                .with_context(|| format!("{} holds no certificate", cert_path.display()))?
                .with_context(|| format!("parsing {}", cert_path.display()))?;
            let issuer = Issuer::from_ca_cert_der(&der, key)
                .with_context(|| format!("{} does not match its key", cert_path.display()))?;
            return Ok(Self {
                cert_der: der,
                cert_pem,
                issuer,
            });
        }
        let key = KeyPair::generate().context("generating the device CA key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "mcp-relay device CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(CA_LIFETIME_DAYS);
        let cert = params
            .self_signed(&key)
            .context("self-signing the device CA")?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(path = %cert_path.display(), "created the device CA");
        let der = cert.der().clone();
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            cert_der: der,
        })
    }

    /// The CA certificate (DER), the trust anchor for client certificates.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a client certificate for `device_id` of `email` from a CSR
    /// (whose self-signature proves possession of the key).
    pub fn issue(
        &self,
        csr_der: &[u8],
        device_id: &str,
        email: &str,
        ttl: Duration,
    ) -> Result<Issued, CsrError> {
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| CsrError::Invalid(e.to_string()))?;
        for san in &csr.params.subject_alt_names {
            if let SanType::Rfc822Name(named) = san
                && !named.as_str().eq_ignore_ascii_case(email)
            {
                return Err(CsrError::OtherUser {
                    named: named.as_str().to_owned(),
                    user: email.to_owned(),
                });
            }
        }
        let key_sha256 = hex::encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&csr.public_key),
        ));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::Rfc822Name(email.try_into().map_err(|_| {
                CsrError::Invalid("the account's email is not ASCII".into())
            })?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial: [u8; 16] = rand::random();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        let not_after = now + time::Duration::seconds(ttl.as_secs() as i64);
        params.not_after = not_after;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CsrError::Invalid(e.to_string()))?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_sha256,
            not_after: not_after.unix_timestamp(),
        })
    }
}

/// The retired CAs recorded in the state dir.
pub fn retired(state: &StateDir) -> anyhow::Result<Vec<RetiredCa>> {
    let path = state.path(RETIRED_FILE);
    match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("{} is corrupt", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Checks a CSR used as a proof of possession (its signature) and returns
/// its subject CN and the SHA-256 (hex) of its public key.
pub fn proof_of_possession(csr_der: &[u8]) -> Result<(String, String), CsrError> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge);
    }
    let csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| CsrError::Invalid(e.to_string()))?;
    let cn = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .and_then(|v| match v {
            rcgen::DnValue::Utf8String(s) => Some(s.clone()),
            rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_default();
    let key_sha256 = hex::encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&csr.public_key),
    ));
    Ok((cn, key_sha256))
}

/// Reads the device id, key hash and expiry from a certificate (DER).
pub fn read_peer(cert_der: &[u8]) -> Option<PeerDevice> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let device_id = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    let key_sha256 = hex::encode(Sha256::digest(cert.public_key().raw));
    Some(PeerDevice {
        device_id,
        key_sha256,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The rfc822Name SANs of a certificate (for tests and `devices list`).
pub fn emails_of(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::RFC822Name(e) = n {
                    out.push((*e).to_owned());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(key: &KeyPair, email: Option<&str>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        if let Some(e) = email {
            p.subject_alt_names = vec![SanType::Rfc822Name(e.try_into().unwrap())];
        }
        p.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn issues_a_client_certificate_naming_device_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let ca = DeviceCa::load_or_create(&state).unwrap();
        let key = KeyPair::generate().unwrap();
        let issued = ca
            .issue(
                &csr(&key, None),
                "dev_abc",
                "a@example.com",
                DEFAULT_CERT_TTL,
            )
            .unwrap();
        let peer = read_peer(&issued.cert_der).unwrap();
        assert_eq!(peer.device_id, "dev_abc");
        assert_eq!(peer.key_sha256, issued.key_sha256);
        assert_eq!(emails_of(&issued.cert_der), ["a@example.com"]);
        // The CA survives a restart: same certificate, still able to issue.
        let again = DeviceCa::load_or_create(&state).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(state.path("device-ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn rotation_makes_a_new_ca_and_keeps_the_old_one_trusted_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let old = DeviceCa::load_or_create(&state).unwrap();
        let new = DeviceCa::rotate(&state, Duration::from_secs(3600)).unwrap();
        assert_ne!(old.cert_der(), new.cert_der());
        let anchors = new.trust_anchors(&state).unwrap();
        assert_eq!(anchors.len(), 2);
        assert!(anchors.contains(old.cert_der()));
        let reloaded = DeviceCa::load_or_create(&state).unwrap();
        assert_eq!(reloaded.cert_der(), new.cert_der());
        // A retired CA whose window has passed is no longer trusted.
        let again = DeviceCa::rotate(&state, Duration::ZERO).unwrap();
        assert_eq!(
            again.trust_anchors(&state).unwrap().len(),
            2,
            "only the one-hour-old CA stays"
        );
    }

    #[test]
    fn refuses_tampered_foreign_and_oversized_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DeviceCa::load_or_create(&StateDir::open(dir.path()).unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut bad = csr(&key, None);
        let n = bad.len();
        bad[n - 5] ^= 0x55;
        assert!(matches!(
            ca.issue(&bad, "d", "a@example.com", DEFAULT_CERT_TTL),
            Err(CsrError::Invalid(_))
        ));
        assert!(matches!(
            ca.issue(
                &csr(&key, Some("boss@example.com")),
                "d",
                "a@example.com",
                DEFAULT_CERT_TTL
            ),
            Err(CsrError::OtherUser { .. })
        ));
        assert!(matches!(
            ca.issue(
                &vec![0u8; MAX_CSR_BYTES + 1],
                "d",
                "a@example.com",
                DEFAULT_CERT_TTL
            ),
            Err(CsrError::TooLarge)
        ));
        assert!(matches!(
            ca.issue(b"not a csr", "d", "a@example.com", DEFAULT_CERT_TTL),
            Err(CsrError::Invalid(_))
        ));
    }
}
