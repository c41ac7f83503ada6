//! Automatic certificates from an ACME CA (RFC 8555). Placeholder: the
//! `[acme]` section is parsed but not yet acted on.

use std::path::Path;

use url::Url;

/// `[acme]` in relay.toml.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {}

/// `[acme]`, checked, with defaults applied.
#[derive(Debug, Clone)]
pub struct AcmeSettings {}

impl AcmeConfig {
    /// Checks the section against the rest of the configuration.
    pub fn settle(
        self,
        _public_url: Option<&Url>,
        _state_dir: &Path,
    ) -> anyhow::Result<AcmeSettings> {
        anyhow::bail!("[acme] is not supported yet")
    }
}
