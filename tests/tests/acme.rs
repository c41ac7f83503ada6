//! Automatic certificates against a real ACME CA: Let's Encrypt's test
//! server pebble (Debian `pebble`, installed by tests/setup.sh) with its DNS
//! stub `pebble-challtestsrv`. Pebble validates TLS-ALPN-01 by connecting to
//! the relay's own HTTPS port, exactly as Let's Encrypt would on port 443.
//!
//! What a user would notice: clients trusting only the CA's root reach the
//! relay; the certificate is renewed and swapped while requests keep
//! flowing (none fails); a restart reuses the stored account and
//! certificate without a new order; a misconfigured domain or directory is
//! explained in the log while the relay keeps serving; with subdomain
//! routing a claimed tunnel name gets its own certificate on first use and
//! an unclaimed one never causes an order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mcp_testkit::{Process as Proc, bin_path};

const DOMAIN: &str = "relay.test";

/// A port free on loopback for both TCP and UDP right now.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// pebble (the ACME CA) and pebble-challtestsrv (its DNS, answering every
/// A query with `dns_ipv4`).
struct Pebble {
    pebble: Proc,
    _dns: Proc,
    _dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    /// The CA that signed pebble's own HTTPS certificate (the relay's `ca_file`).
    tls_ca: PathBuf,
    management: u16,
}

impl Pebble {
    fn start(validation_port: u16, dns_ipv4: &str, validity_secs: u64) -> anyhow::Result<Self> {
        for tool in ["/usr/bin/pebble", "/usr/bin/pebble-challtestsrv"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's pebble (tests/setup.sh does)"
            );
        }
        let dir = tempfile::tempdir()?;
        // Pebble's HTTPS certificate, from a CA made here.
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test TLS CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer)?;
        let tls_ca = dir.path().join("pebble-tls-ca.pem");
        std::fs::write(&tls_ca, ca_cert.pem())?;
        std::fs::write(dir.path().join("cert.pem"), cert.pem())?;
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem())?;

        let (listen, management, dns, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": free_port(),
                "tlsPort": validation_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_secs,
            }
        });
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

        let mut dns_cmd = Command::new("/usr/bin/pebble-challtestsrv");
        dns_cmd
            .args(["-defaultIPv4", dns_ipv4, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")]);
        let dns_proc = Proc::spawn("challtestsrv", dns_cmd)?;
        wait_for_port(dns, Duration::from_secs(10))?;

        let mut cmd = Command::new("/usr/bin/pebble");
        cmd.arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated afresh, renewals included.
            .env("PEBBLE_AUTHZREUSE", "0");
        let pebble = Proc::spawn("pebble", cmd)?;
        wait_for_port(listen, Duration::from_secs(10))?;
        wait_for_port(management, Duration::from_secs(10))?;
        Ok(Self {
            pebble,
            _dns: dns_proc,
            _dir: dir,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            tls_ca,
            management,
        })
    }

    /// The root that signs the certificates pebble issues.
    async fn root_pem(&self) -> String {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.tls_ca).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let rsp = http
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .unwrap();
        assert!(rsp.status().is_success(), "{rsp:?}");
        rsp.text().await.unwrap()
    }

    /// Certificates pebble has issued so far.
    fn issued(&self) -> usize {
        self.pebble.count_lines("Issued certificate serial")
    }
}

/// `mcp-relay serve --config` with an `[acme]` section.
struct AcmeRelay {
    proc: Proc,
    state: PathBuf,
    https: u16,
}

impl AcmeRelay {
    fn start(
        state: &Path,
        https: u16,
        directory: &str,
        ca_file: &Path,
        renew_before: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(state, https, directory, ca_file, renew_before, "")
    }

    /// Like [`AcmeRelay::start`], with `extra` top-level relay.toml lines.
    fn start_with(
        state: &Path,
        https: u16,
        directory: &str,
        ca_file: &Path,
        renew_before: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let config = format!(
            r#"https = "127.0.0.1:{https}"
quic = "127.0.0.1:0"
state = "{state}"
public_url = "https://{DOMAIN}:{https}"
{extra}

[acme]
accept_terms = true
directory_url = "{directory}"
ca_file = "{ca}"
contact = ["ops@example.com"]
renew_before = "{renew_before}"
"#,
            state = state.display(),
            ca = ca_file.display(),
        );
        let config_path = state.with_extension("toml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(bin_path("mcp-relay"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("MCP_RELAY_CONFIG");
        let mut proc = Proc::spawn("relay", cmd)?;
        proc.wait_for_line("relay listening", Duration::from_secs(30))?;
        Ok(Self {
            proc,
            state: state.to_path_buf(),
            https,
        })
    }

    fn url(&self) -> String {
        format!("https://{DOMAIN}:{}/.well-known/mcp-relay", self.https)
    }

    /// The ACME state folder (one per directory URL).
    fn acme_dir(&self) -> PathBuf {
        let mut dirs: Vec<_> = std::fs::read_dir(self.state.join("acme"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }
}

/// A client trusting only `root_pem` that reaches relay.test on loopback;
/// `fresh`: a new TLS connection (and so a new handshake) per request.
fn client(root_pem: &str, https: u16, fresh: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
        .resolve(DOMAIN, SocketAddr::from(([127, 0, 0, 1], https)))
        .tls_info(true)
        .timeout(Duration::from_secs(10));
    if fresh {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

/// GET the relay's well-known document; the leaf certificate it presented.
async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let rsp = http.get(url).send().await?;
    if !rsp.status().is_success() {
        bail!("status {}", rsp.status());
    }
    let leaf = rsp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .context("no peer certificate")?;
    rsp.bytes().await?;
    Ok(leaf)
}

/// The certificate's serial number (hex), read from its DER: Certificate ::=
/// SEQUENCE { tbsCertificate SEQUENCE { [0] version, serialNumber INTEGER, … } }.
fn serial(der: &[u8]) -> String {
    let (_, cert, _) = element(der, 0);
    let (_, tbs, _) = element(der, cert);
    let (mut tag, mut start, mut end) = element(der, tbs);
    if tag == 0xa0 {
        (tag, start, end) = element(der, end);
    }
    assert_eq!(tag, 0x02, "serialNumber INTEGER");
    der[start..end].iter().map(|b| format!("{b:02x}")).collect()
}

/// (tag, content start, content end) of the DER element at `at`.
fn element(der: &[u8], at: usize) -> (u8, usize, usize) {
    let tag = der[at];
    let first = der[at + 1] as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = der[at + 2..at + 2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    (tag, at + header, at + header + len)
}

fn stored_leaf(acme_dir: &Path) -> Vec<u8> {
    let pem = std::fs::read(acme_dir.join("certificate.pem")).unwrap();
    let first = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap();
    first.to_vec()
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} is {:o}", path.display(), mode);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_issued_renewed_live_and_reused_after_restart() {
    let https = free_port();
    // 60 s certificates renewed with 50 s left: a renewal 10 s after issuance.
    let pebble = Pebble::start(https, "127.0.0.1", 60).unwrap();
    let root = pebble.root_pem().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let relay = AcmeRelay::start(&state, https, &pebble.directory, &pebble.tls_ca, "50s").unwrap();

    // A client that trusts only pebble's root gets through once the
    // certificate is issued (the temporary one fails its check before that).
    let fresh = client(&root, https, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        match fetch(&fresh, &relay.url()).await {
            Ok(leaf) => break leaf,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "no pebble-issued certificate within 60 s: {e:#}\nrelay:\n{}\npebble:\n{}",
                relay.proc.output(),
                pebble.pebble.output()
            ),
        }
    };
    assert!(relay.proc.output().contains("ACME: certificate installed"));
    assert!(pebble.issued() >= 1, "{}", pebble.pebble.output());
    let acme_dir = relay.acme_dir();
    let account = std::fs::read(acme_dir.join("account.json")).unwrap();
    #[cfg(unix)]
    {
        assert_private(&acme_dir.join("account.json"));
        assert_private(&acme_dir.join("certificate.pem"));
    }
    eprintln!("issued: serial {}", serial(&first));

    // Requests flow without pause while the certificate is renewed and
    // swapped: one client handshakes per request, one keeps its connection.
    let kept = client(&root, https, false);
    fetch(&kept, &relay.url()).await.unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let mut loops = Vec::new();
    for is_fresh in [true, false] {
        let (failures, requests, stop, seen, url, kept, root) = (
            failures.clone(),
            requests.clone(),
            stop.clone(),
            seen.clone(),
            relay.url(),
            kept.clone(),
            root.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new client each time: no pooled connection and no TLS
                // session to resume, so every request sees the served certificate.
                let http = if is_fresh {
                    client(&root, https, true)
                } else {
                    kept.clone()
                };
                match fetch(&http, &url).await {
                    Ok(leaf) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if is_fresh {
                            let mut seen = seen.lock().unwrap();
                            if seen.last() != Some(&leaf) {
                                seen.push(leaf);
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("request failed during renewal: {e:#}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    let renewed_at = loop {
        if seen.lock().unwrap().iter().any(|l| *l != first) {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no renewal within 45 s\nrelay:\n{}",
            relay.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Keep going a little past the swap.
    while renewed_at.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let renewed = seen
        .lock()
        .unwrap()
        .iter()
        .find(|l| **l != first)
        .cloned()
        .unwrap();
    assert_ne!(serial(&renewed), serial(&first), "a new certificate");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed");
    assert!(requests.load(Ordering::Relaxed) > 20);
    assert!(pebble.issued() >= 2);
    assert_eq!(
        std::fs::read(acme_dir.join("account.json")).unwrap(),
        account,
        "the renewal used the same account"
    );
    assert_eq!(relay.proc.count_lines("ACME: created an account"), 1);
    eprintln!(
        "renewed: serial {} after {} requests, 0 failed",
        serial(&renewed),
        requests.load(Ordering::Relaxed)
    );

    // Restart (with a smaller margin so the stored certificate is fresh):
    // the stored certificate is served from the first handshake on, and
    // nothing is ordered.
    drop(relay);
    let stored = stored_leaf(&acme_dir);
    let issued_before = pebble.issued();
    let relay = AcmeRelay::start(&state, https, &pebble.directory, &pebble.tls_ca, "5s").unwrap();
    let leaf = fetch(&client(&root, https, true), &relay.url())
        .await
        .unwrap();
    assert_eq!(
        serial(&leaf),
        serial(&stored),
        "the stored certificate is served"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = relay.proc.output();
    assert!(
        out.contains("ACME: serving the stored certificate"),
        "{out}"
    );
    assert!(!out.contains("ACME: ordering a certificate"), "{out}");
    assert!(!out.contains("ACME: created an account"), "{out}");
    assert_eq!(pebble.issued(), issued_before, "no new order at pebble");
    assert_eq!(
        std::fs::read(acme_dir.join("account.json")).unwrap(),
        account
    );

    // Restart with the stored certificate due (a margin longer than its
    // life): a new order at once, by the stored account.
    drop(relay);
    let mut relay =
        AcmeRelay::start(&state, https, &pebble.directory, &pebble.tls_ca, "2m").unwrap();
    relay
        .proc
        .wait_for_line("ACME: certificate installed", Duration::from_secs(30))
        .unwrap();
    let out = relay.proc.output();
    assert!(out.contains("ACME: using the stored account"), "{out}");
    assert!(!out.contains("ACME: created an account"), "{out}");
    assert_eq!(pebble.issued(), issued_before + 1);
    assert_eq!(
        std::fs::read(acme_dir.join("account.json")).unwrap(),
        account
    );
    let leaf = fetch(&client(&root, https, true), &relay.url())
        .await
        .unwrap();
    assert_eq!(serial(&leaf), serial(&stored_leaf(&acme_dir)));
    assert_ne!(serial(&leaf), serial(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained_and_the_relay_keeps_serving() {
    // DNS sends the CA to an address where the relay is not listening.
    let https = free_port();
    let pebble = Pebble::start(https, "127.0.0.2", 3600).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut wrong_dns = AcmeRelay::start(
        &dir.path().join("dns"),
        https,
        &pebble.directory,
        &pebble.tls_ca,
        "1h",
    )
    .unwrap();
    // The directory URL points where no CA listens.
    let closed = free_port();
    let other_https = free_port();
    let mut wrong_directory = AcmeRelay::start(
        &dir.path().join("dir"),
        other_https,
        &format!("https://127.0.0.1:{closed}/dir"),
        &pebble.tls_ca,
        "1h",
    )
    .unwrap();

    let line = wrong_dns
        .proc
        .wait_for_line(
            "ACME: getting a certificate failed",
            Duration::from_secs(60),
        )
        .unwrap();
    eprintln!("{line}");
    for needle in [
        "could not validate relay.test",
        "DNS A/AAAA records of relay.test",
        "TCP port 443",
        "127.0.0.2",
        "retry_at=",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }
    let line = wrong_directory
        .proc
        .wait_for_line(
            "ACME: getting a certificate failed",
            Duration::from_secs(60),
        )
        .unwrap();
    eprintln!("{line}");
    for needle in [
        "cannot reach the ACME directory",
        &format!("127.0.0.1:{closed}/dir"),
        "acme.directory_url",
        "retry_at=",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from: {line}");
    }

    // Both relays are up and answer over their temporary certificate;
    // a client trusting a real root refuses it.
    for relay in [&mut wrong_dns, &mut wrong_directory] {
        assert!(relay.proc.is_running());
        let lenient = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve(DOMAIN, SocketAddr::from(([127, 0, 0, 1], relay.https)))
            .build()
            .unwrap();
        let rsp = lenient.get(relay.url()).send().await.unwrap();
        assert!(rsp.status().is_success(), "{rsp:?}");
        let strict = client(&pebble.root_pem().await, relay.https, true);
        assert!(fetch(&strict, &relay.url()).await.is_err());
    }
}

/// `mcp-relay ARGS --state STATE` (an admin command); its stderr.
fn admin(state: &Path, https: u16, args: &[&str]) -> String {
    let out = Command::new(bin_path("mcp-relay"))
        .args(args)
        .arg("--state")
        .arg(state)
        .args(["--public-url", &format!("https://{DOMAIN}:{https}")])
        .env_remove("MCP_RELAY_CONFIG")
        .env_remove("MCP_RELAY_STATE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mcp-relay {args:?}: {stderr}");
    stderr
}

/// A client trusting only `root_pem` (or, `lenient`, any certificate) that
/// reaches `host` on loopback, a new handshake per request.
fn host_client(root_pem: &str, host: &str, https: u16, lenient: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], https)))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30));
    let b = if lenient {
        b.danger_accept_invalid_certs(true)
    } else {
        b.tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap()])
    };
    b.build().unwrap()
}

/// The certificate's DNS names, read from its DER: the extension
/// subjectAltName (OID 2.5.29.17, `06 03 55 1d 11`), [critical BOOLEAN,]
/// OCTET STRING { SEQUENCE { [2] dNSName IA5String, … } }.
fn dns_names(der: &[u8]) -> Vec<String> {
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let at = der
        .windows(SAN_OID.len())
        .position(|w| w == SAN_OID)
        .expect("a subjectAltName extension");
    let (_, _, oid_end) = element(der, at);
    let (mut tag, mut start, mut end) = element(der, oid_end);
    if tag == 0x01 {
        (tag, start, end) = element(der, end);
    }
    assert_eq!(tag, 0x04, "extnValue OCTET STRING");
    let (tag, mut at, seq_end) = element(der, start);
    assert_eq!(tag, 0x30, "GeneralNames SEQUENCE");
    assert!(seq_end <= end);
    let mut names = Vec::new();
    while at < seq_end {
        let (tag, s, e) = element(der, at);
        if tag == 0x82 {
            names.push(String::from_utf8(der[s..e].to_vec()).unwrap());
        }
        at = e;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_tunnel_names_get_their_own_certificate_on_demand() {
    let https = free_port();
    let pebble = Pebble::start(https, "127.0.0.1", 3600).unwrap();
    let root = pebble.root_pem().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // `shop` is claimed (reserved by the admin); `nosuch` is not.
    admin(&state, https, &["users", "add", "alice@example.com"]);
    admin(
        &state,
        https,
        &["tunnels", "reserve", "shop", "--owner", "alice@example.com"],
    );
    let start = || {
        AcmeRelay::start_with(
            &state,
            https,
            &pebble.directory,
            &pebble.tls_ca,
            "1m",
            "subdomains = true",
        )
        .unwrap()
    };
    let relay = start();

    // The relay's own certificate first (per-name orders wait for it).
    let main = client(&root, https, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    let main_leaf = loop {
        match fetch(&main, &relay.url()).await {
            Ok(leaf) => break leaf,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!(
                "no main certificate within 60 s: {e:#}\nrelay:\n{}",
                relay.proc.output()
            ),
        }
    };
    assert_eq!(dns_names(&main_leaf), [DOMAIN]);
    let issued_main = pebble.issued();
    assert_eq!(issued_main, 1, "{}", pebble.pebble.output());

    // An unclaimed name: the main certificate at once, which a strict
    // client refuses, and no order.
    let nosuch = format!("nosuch.{DOMAIN}");
    let nosuch_url = format!("https://{nosuch}:{https}/healthz");
    let began = Instant::now();
    let err = fetch(&host_client(&root, &nosuch, https, false), &nosuch_url)
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "an unclaimed name does not wait: {:?}",
        began.elapsed()
    );
    eprintln!("nosuch (strict client): {err:#}");
    let leaf = fetch(&host_client(&root, &nosuch, https, true), &nosuch_url)
        .await
        .unwrap();
    assert_eq!(leaf, main_leaf, "unclaimed names get the main certificate");

    // The claimed name: the first handshake waits for its certificate.
    let shop = format!("shop.{DOMAIN}");
    let shop_url = format!("https://{shop}:{https}/healthz");
    let began = Instant::now();
    let rsp = host_client(&root, &shop, https, false)
        .get(&shop_url)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "shop.relay.test over a pebble-issued certificate: {e:#}\nrelay:\n{}",
                relay.proc.output()
            )
        });
    let first_cert = began.elapsed();
    assert_eq!(rsp.status(), 200);
    let shop_leaf = rsp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap();
    assert_eq!(dns_names(&shop_leaf), [shop.as_str()]);
    assert_ne!(serial(&shop_leaf), serial(&main_leaf));
    eprintln!(
        "first certificate for {shop}: {} ms (serial {})",
        first_cert.as_millis(),
        serial(&shop_leaf)
    );
    let stored = relay.acme_dir().join("names").join("shop.pem");
    #[cfg(unix)]
    assert_private(&stored);
    assert_eq!(stored_leaf_at(&stored), shop_leaf);
    // Served from then on, without another order.
    let leaf = fetch(&host_client(&root, &shop, https, false), &shop_url)
        .await
        .unwrap();
    assert_eq!(leaf, shop_leaf);

    // Still nothing ordered for the unclaimed name, however often asked.
    for _ in 0..5 {
        let _ = fetch(&host_client(&root, &nosuch, https, true), &nosuch_url).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pebble.issued(),
        issued_main + 1,
        "{}",
        pebble.pebble.output()
    );
    let out = relay.proc.output();
    assert_eq!(
        relay
            .proc
            .count_lines("ACME: ordering a certificate for the tunnel name"),
        1,
        "{out}"
    );
    assert!(!out.contains("nosuch"), "{out}");
    assert!(!relay.acme_dir().join("names/nosuch.pem").exists());

    // Restart: the stored per-name certificate is served, nothing ordered.
    drop(relay);
    let issued_before = pebble.issued();
    let relay = start();
    let leaf = fetch(&host_client(&root, &shop, https, false), &shop_url)
        .await
        .unwrap();
    assert_eq!(serial(&leaf), serial(&shop_leaf), "the stored certificate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = relay.proc.output();
    assert!(!out.contains("ACME: ordering a certificate"), "{out}");
    assert_eq!(pebble.issued(), issued_before, "no new order at pebble");

    // Released: its clients get the main certificate again (within the
    // claim poll and the relay's sweep).
    admin(&state, https, &["tunnels", "release", "shop"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leaf = fetch(&host_client(&root, &shop, https, true), &shop_url)
            .await
            .unwrap();
        if serial(&leaf) != serial(&shop_leaf) {
            assert_eq!(dns_names(&leaf), [DOMAIN]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the released name's certificate is still served\nrelay:\n{}",
            relay.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pebble.issued(), issued_before, "releasing orders nothing");
}

fn stored_leaf_at(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}
