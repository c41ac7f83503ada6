//! The QUIC endpoint's client-certificate check: chains to the device CA,
//! client-auth usage, not expired, except that a certificate expired less
//! than the renewal grace ago still completes the handshake (the handshake
//! proves possession of the key; the relay then only lets it renew).
//! A client without a certificate is let through to the Hello, where only a
//! `--dev` relay accepts an agent token.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// See the module docs.
#[derive(Debug)]
pub struct DeviceClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    grace: Duration,
}

impl DeviceClientVerifier {
    /// Trusts certificates issued by any of `cas`.
    pub fn new(cas: &[CertificateDer<'static>], grace: Duration) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            roots.add(ca.clone())?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()?;
        Ok(Self { inner, grace })
    }
}

impl ClientCertVerifier for DeviceClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                let expired = Error::InvalidCertificate(CertificateError::Expired);
                let peer = super::read_peer(end_entity).ok_or(expired.clone())?;
                let not_after = u64::try_from(peer.not_after).map_err(|_| expired.clone())?;
                if now.as_secs() > not_after.saturating_add(self.grace.as_secs()) {
                    return Err(expired);
                }
                // Within the grace: check everything else as of its last valid second.
                let then = UnixTime::since_unix_epoch(Duration::from_secs(not_after - 1));
                self.inner
                    .verify_client_cert(end_entity, intermediates, then)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
