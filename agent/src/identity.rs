//! The agent's device identity: `mcp-agent login` (device grant or
//! enrollment token), the device key and certificate in the credential
//! store, the remembered relay, renewal, and `logout`.
//!
//! ```text
//! login ─POST /device_authorization─► "open <url>, enter ABCD-EFGH"
//!       ─POST /token (poll)──────────► one-time enrollment token
//!       (or --enroll-token from `mcp-relay enroll-tokens create`)
//!       key pair made here (never leaves) + CSR
//!       ─POST /agent/enroll──────────► certificate (device id, user), assertion keys
//! ```
//!
//! Secrets (`device-key`, `device-cert`) go to the credential store; the
//! profile (`login.toml`: relay URL, CA file, device id, user, expiry) and the
//! pinned assertion keys (`assertion-keys.json`) are plain files in the
//! config dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use crate::credstore::CredentialStore;

/// Credential-store entry of the device's private key (PKCS#8 PEM).
pub const KEY_ENTRY: &str = "device-key";
/// Credential-store entry of the device certificate (PEM).
pub const CERT_ENTRY: &str = "device-cert";
const PROFILE_FILE: &str = "login.toml";
const ASSERTION_KEYS_FILE: &str = "assertion-keys.json";
/// The device grant's client id at the relay.
const CLIENT_ID: &str = "mcp-agent";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What `login` remembers (not secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The relay's base URL.
    pub relay: Url,
    /// An extra CA to trust for the relay (a dev relay's `dev-ca.pem`).
    pub ca: Option<PathBuf>,
    /// The device id the relay assigned.
    pub device_id: String,
    /// The account the device belongs to.
    pub user: String,
    /// The certificate's `notAfter` (Unix seconds).
    pub cert_expires_at: i64,
    /// When the certificate was issued (Unix seconds; for the renewal point).
    pub cert_issued_at: i64,
}

impl Profile {
    /// Reads the profile from `dir`, if logged in.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(PROFILE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) => toml::from_str(&t).map(Some).with_context(|| {
                format!("{} is corrupt; run `mcp-agent login` again", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the profile to `dir` (created 0700).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        write_file(&dir.join(PROFILE_FILE), toml::to_string(self)?.as_bytes())
    }

    /// Whether the certificate should be renewed now: a third of its life
    /// left, or less.
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.cert_expires_at - self.cert_issued_at).max(1);
        now >= self.cert_expires_at - life / 3
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The certificate and key `connect` presents.
#[derive(Debug)]
pub struct DeviceIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The device key.
    pub key: PrivateKeyDer<'static>,
    /// The key again (PEM), to make renewal CSRs.
    pub key_pem: String,
    /// What login remembered.
    pub profile: Profile,
}

impl Clone for DeviceIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            key_pem: self.key_pem.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// Loads the logged-in device identity, if any.
pub fn load(store: &CredentialStore, dir: &Path) -> anyhow::Result<Option<DeviceIdentity>> {
    let Some(profile) = Profile::load(dir)? else {
        return Ok(None);
    };
    let (Some(key), Some(cert)) = (store.get(KEY_ENTRY)?, store.get(CERT_ENTRY)?) else {
        bail!(
            "logged in as {} but the device key is missing from the credential store ({}); run `mcp-agent login` again",
            profile.user,
            store.describe()
        );
    };
    let key_pem = String::from_utf8(key.expose().to_vec()).context("the device key is not PEM")?;
    let chain = rustls_pemfile::certs(&mut cert.expose())
        .collect::<Result<Vec<_>, _>>()
        .context("the device certificate is not PEM")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("parsing the device key")?
        .context("the device key entry holds no key")?;
    Ok(Some(DeviceIdentity {
        chain,
        key,
        key_pem,
        profile,
    }))
}

/// A CSR (DER, base64url) for the key in `key_pem`.
pub fn csr_for(key_pem: &str) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::from_pem(key_pem).context("parsing the device key")?;
    let der = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("making the certificate signing request")?
        .der()
        .to_vec();
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der))
}

/// Stores a renewed certificate (from the control stream).
pub fn store_renewed(
    store: &CredentialStore,
    dir: &Path,
    profile: &mut Profile,
    cert_pem: &str,
    expires_at: i64,
) -> anyhow::Result<()> {
    store.set(CERT_ENTRY, cert_pem.as_bytes())?;
    profile.cert_issued_at = unix_now();
    profile.cert_expires_at = expires_at;
    profile.save(dir)
}

/// Pins the relay's assertion-signing keys (a JWKS document).
pub fn pin_assertion_keys(dir: &Path, jwks: &serde_json::Value) -> anyhow::Result<()> {
    write_file(
        &dir.join(ASSERTION_KEYS_FILE),
        serde_json::to_vec_pretty(jwks)?.as_slice(),
    )
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What `login` needs.
#[derive(Debug, Clone)]
pub struct LoginArgs {
    /// The relay's base URL.
    pub relay: Url,
    /// Extra CA for the relay.
    pub ca: Option<PathBuf>,
    /// A one-time enrollment token (headless); `None` runs the device grant.
    pub enroll_token: Option<String>,
    /// The device's name at the relay (default: the host name).
    pub label: String,
    /// Don't try to open a browser.
    pub no_browser: bool,
}

fn http_client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let extra = match ca {
        Some(p) => crate::tls::load_ca(p)?,
        None => Vec::new(),
    };
    let tls = crate::tls::client_config(extra, &[b"h2", b"http/1.1"])?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

/// Runs the device grant; returns a one-time enrollment token.
async fn device_grant(
    http: &reqwest::Client,
    relay: &Url,
    label: &str,
    no_browser: bool,
) -> anyhow::Result<String> {
    let base = relay.as_str().trim_end_matches('/');
    let r = http
        .post(format!("{base}/device_authorization"))
        .form(&[("client_id", CLIENT_ID), ("label", label)])
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.context("the relay's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "the relay refused the sign-in: {}",
            v["error_description"].as_str().unwrap_or("unknown error")
        );
    }
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("the relay's answer lacks {k}"))
    };
    let device_code = field("device_code")?;
    let user_code = field("user_code")?;
    let uri = field("verification_uri")?;
    let complete = v["verification_uri_complete"]
        .as_str()
        .unwrap_or(&uri)
        .to_owned();
    let mut interval = Duration::from_secs(v["interval"].as_u64().unwrap_or(5).max(1));
    let expires = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(600));
    eprintln!(
        "To approve this device, open\n\n    {complete}\n\nand check that it shows the code  {user_code}\n"
    );
    if !no_browser {
        open_browser(&complete);
    }
    let started = std::time::Instant::now();
    let mut last_note = std::time::Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        if started.elapsed() > expires {
            bail!("the code expired before it was approved; run `mcp-agent login` again");
        }
        let r = http
            .post(format!("{base}/token"))
            .form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code.as_str()),
                ("client_id", CLIENT_ID),
            ])
            .send()
            .await;
        let Ok(r) = r else {
            continue; // the relay restarting: keep polling until the code expires
        };
        let ok = r.status().is_success();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if ok {
            return v["enroll_token"]
                .as_str()
                .map(str::to_owned)
                .context("the relay's answer lacks enroll_token");
        }
        match v["error"].as_str() {
            Some("authorization_pending") => {
                if last_note.elapsed() > Duration::from_secs(30) {
                    let left = expires.saturating_sub(started.elapsed());
                    eprintln!("still waiting for approval ({}s left)…", left.as_secs());
                    last_note = std::time::Instant::now();
                }
            }
            Some("slow_down") => interval += Duration::from_secs(5),
            Some("access_denied") => bail!("the device was denied on the approval page"),
            Some("expired_token") => {
                bail!("the code expired or was used; run `mcp-agent login` again")
            }
            other => bail!(
                "the relay refused: {} ({})",
                other.unwrap_or("error"),
                v["error_description"].as_str().unwrap_or("")
            ),
        }
    }
}

fn open_browser(url: &str) {
    let graphical = cfg!(target_os = "macos")
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !graphical {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// `mcp-agent login`: enrolls this machine as a device; returns the profile.
pub async fn login(
    args: &LoginArgs,
    store: &CredentialStore,
    dir: &Path,
) -> anyhow::Result<Profile> {
    let http = http_client(args.ca.as_deref())?;
    let token = match &args.enroll_token {
        Some(t) => t.clone(),
        None => device_grant(&http, &args.relay, &args.label, args.no_browser).await?,
    };
    let key = rcgen::KeyPair::generate().context("generating the device key")?;
    let key_pem = key.serialize_pem();
    let csr = csr_for(&key_pem)?;
    let base = args.relay.as_str().trim_end_matches('/');
    let r = http
        .post(format!("{base}/agent/enroll"))
        .json(&serde_json::json!({"enroll_token": token, "csr": csr, "label": args.label}))
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.context("the relay's answer is not JSON")?;
    if !status.is_success() {
        bail!(
            "the relay refused the enrollment: {}",
            v["message"].as_str().unwrap_or("unknown error")
        );
    }
    let cert = v["certificate"]
        .as_str()
        .context("no certificate in the answer")?;
    let profile = Profile {
        relay: args.relay.clone(),
        ca: args
            .ca
            .clone()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p)),
        device_id: v["device_id"].as_str().unwrap_or_default().to_owned(),
        user: v["user"].as_str().unwrap_or_default().to_owned(),
        cert_expires_at: v["expires_at"].as_i64().unwrap_or(0),
        cert_issued_at: unix_now(),
    };
    store.update(|u| {
        u.set(KEY_ENTRY, key_pem.as_bytes())?;
        u.set(CERT_ENTRY, cert.as_bytes())
    })?;
    profile.save(dir)?;
    if let Some(keys) = v.get("assertion_keys") {
        pin_assertion_keys(dir, keys)?;
    }
    Ok(profile)
}

/// Asks the relay to revoke this device, proving possession of its key with
/// a fresh CSR whose subject is `logout <device id> <unix seconds>`.
pub async fn revoke_at_relay(id: &DeviceIdentity) -> anyhow::Result<()> {
    let key = rcgen::KeyPair::from_pem(&id.key_pem).context("parsing the device key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("logout {} {}", id.profile.device_id, unix_now()),
    );
    let der = params
        .serialize_request(&key)
        .context("making the logout proof")?
        .der()
        .to_vec();
    let proof = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
    let http = http_client(id.profile.ca.as_deref())?;
    let base = id.profile.relay.as_str().trim_end_matches('/');
    let r = http
        .post(format!("{base}/agent/logout"))
        .json(&serde_json::json!({"device_id": id.profile.device_id, "proof": proof}))
        .send()
        .await
        .with_context(|| format!("reaching {base}"))?;
    if r.status().is_success() {
        return Ok(());
    }
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    bail!(
        "the relay answered {status}: {}",
        v["message"].as_str().unwrap_or("no reason given")
    )
}

/// `mcp-agent logout`: forgets the device locally; returns what was removed.
pub fn logout(store: &CredentialStore, dir: &Path) -> anyhow::Result<Option<Profile>> {
    let profile = Profile::load(dir)?;
    store.update(|u| {
        u.delete(KEY_ENTRY)?;
        u.delete(CERT_ENTRY).map(drop)
    })?;
    for f in [PROFILE_FILE, ASSERTION_KEYS_FILE] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {f}")),
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        let p = Profile {
            relay: Url::parse("https://r.example").unwrap(),
            ca: None,
            device_id: "dev_x".into(),
            user: "a@example.com".into(),
            cert_issued_at: 0,
            cert_expires_at: 90,
        };
        assert!(!p.renewal_due(59));
        assert!(p.renewal_due(60));
        assert!(p.renewal_due(1000));
    }

    #[test]
    fn profile_round_trips_and_login_state_is_forgotten_on_logout() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::file_in(dir.path());
        assert!(load(&store, dir.path()).unwrap().is_none());
        let key = rcgen::KeyPair::generate().unwrap();
        let p = Profile {
            relay: Url::parse("https://r.example").unwrap(),
            ca: None,
            device_id: "dev_x".into(),
            user: "a@example.com".into(),
            cert_issued_at: 1,
            cert_expires_at: 2,
        };
        p.save(dir.path()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        store
            .set(KEY_ENTRY, key.serialize_pem().as_bytes())
            .unwrap();
        store.set(CERT_ENTRY, cert.pem().as_bytes()).unwrap();
        let id = load(&store, dir.path()).unwrap().unwrap();
        assert_eq!(id.profile, p);
        assert_eq!(id.chain.len(), 1);
        assert!(!csr_for(&id.key_pem).unwrap().is_empty());
        assert_eq!(logout(&store, dir.path()).unwrap(), Some(p));
        assert!(load(&store, dir.path()).unwrap().is_none());
        assert!(store.get(KEY_ENTRY).unwrap().is_none());
    }
}
