//! Deploying on a VPS: the systemd units, `deploy/install.sh` and the
//! annotated `deploy/relay.toml`, checked the way an operator would meet
//! them — `systemd-analyze verify` and `security`, the script run into a
//! scratch root (twice), and the configs it writes read by the relay's own
//! parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mcp_relay::tls::TlsSource;
use mcp_relay::{Config, FileConfig, Overrides};
use mcp_testkit::bin_path;

/// The exposure score (0 = locked down, 10 = unprotected) the service must stay under.
const MAX_EXPOSURE: f64 = 3.0;

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = unit_copies();
    let (socket, service) = (
        dir.path().join("mcp-relay.socket"),
        dir.path().join("mcp-relay.service"),
    );
    let o = Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&socket)
        .arg(&service)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("systemd-analyze verify: {}\n{stderr}", o.status);
    // Unknown keys and bad values are only warnings (exit 0) naming the file;
    // anything about our units is a failure. Other lines are the container
    // talking (no systemd as PID 1) and are only shown.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("mcp-relay")).collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "unit problems:\n{}",
        ours.join("\n")
    );
}

#[test]
fn service_exposure_score_is_low() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = unit_copies();
    let o = Command::new(&analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(dir.path().join("mcp-relay.service"))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    if stderr.contains("--offline") && stderr.contains("unrecognized") {
        // `security --offline` arrived in systemd 250; older hosts cannot score unit files.
        eprintln!("skipped: this systemd-analyze has no `security --offline`: {stderr}");
        return;
    }
    let score = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for mcp-relay.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{stdout}\n{stderr}"));
    eprintln!("systemd-analyze security: exposure {score} (must stay below {MAX_EXPOSURE})");
    assert!(score < MAX_EXPOSURE, "exposure {score}:\n{stdout}");
}

#[test]
fn install_script_is_clean_shell() {
    let script = deploy_dir().join("install.sh");
    let o = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "bash -n: {}", text(&o.stderr));
    assert!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o111 != 0,
        "install.sh must be executable"
    );
    if which("shellcheck").is_none() {
        eprintln!("skipped shellcheck: not on PATH");
        return;
    }
    let o = Command::new("shellcheck").arg(&script).output().unwrap();
    assert!(o.status.success(), "shellcheck:\n{}", text(&o.stdout));
}

#[test]
fn install_lays_out_a_fake_root_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let tls = tempfile::tempdir().unwrap();
    let (cert, key) = (tls.path().join("cert.pem"), tls.path().join("key.pem"));
    std::fs::write(&cert, "not checked under --root").unwrap();
    std::fs::write(&key, "not checked under --root").unwrap();
    let args = [
        "--public-url",
        "https://relay.example.com",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];

    let first = install(root.path(), &args);
    assert_eq!(first.status.code(), Some(0), "{}", both(&first));
    let out = text(&first.stdout);
    for step in [
        "useradd --system",
        "ufw allow 443/tcp && ufw allow 443/udp",
        "systemctl enable --now mcp-relay.socket mcp-relay.service",
        "mcp-relay check-config --config /etc/mcp-relay/relay.toml",
        "journalctl -u mcp-relay -f",
        "users add",
        "relay.example.com",
    ] {
        assert!(
            out.contains(step),
            "the output does not say {step:?}:\n{out}"
        );
    }
    for (path, mode) in [
        ("usr/local/bin/mcp-relay", 0o755),
        ("etc/systemd/system/mcp-relay.service", 0o644),
        ("etc/systemd/system/mcp-relay.socket", 0o644),
        ("etc/mcp-relay", 0o750),
        ("etc/mcp-relay/relay.toml", 0o640),
        ("var/lib/mcp-relay", 0o700),
        ("var/backups/mcp-relay", 0o700),
        ("etc/sysctl.d/60-mcp-relay.conf", 0o644),
    ] {
        let meta = std::fs::metadata(root.path().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", both(&first)));
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode of {path}");
    }
    assert_eq!(
        std::fs::read(root.path().join("usr/local/bin/mcp-relay")).unwrap(),
        std::fs::read(bin_path("mcp-relay")).unwrap()
    );
    let sysctl = read(&root.path().join("etc/sysctl.d/60-mcp-relay.conf"));
    assert!(sysctl.contains("net.ipv4.tcp_migrate_req = 1"), "{sysctl}");

    let conf_path = root.path().join("etc/mcp-relay/relay.toml");
    let written = read(&conf_path);
    let cfg = resolve(&written);
    assert_eq!(
        cfg.public_url.unwrap().as_str(),
        "https://relay.example.com/"
    );
    assert_eq!(cfg.https.to_string(), "[::]:443");
    assert_eq!(cfg.quic.to_string(), "[::]:443");
    assert_eq!(cfg.metrics.unwrap().to_string(), "127.0.0.1:9464");
    assert_eq!(cfg.state_dir, Path::new("/var/lib/mcp-relay"));
    assert!(
        matches!(&cfg.tls, TlsSource::Files { cert: c, key: k } if *c == cert && *k == key),
        "{:?}",
        cfg.tls
    );

    // A second run changes nothing and keeps the operator's edits.
    let edited = format!("{written}\n# edited by the operator\n");
    std::fs::write(&conf_path, &edited).unwrap();
    let second = install(root.path(), &args);
    assert_eq!(second.status.code(), Some(0), "{}", both(&second));
    let out = text(&second.stdout);
    assert!(out.contains("kept as it is"), "{out}");
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(read(&conf_path), edited, "relay.toml was overwritten");
    // Upgrades need no --public-url: the existing file answers it.
    let third = install(root.path(), &[]);
    assert_eq!(third.status.code(), Some(0), "{}", both(&third));
}

#[test]
fn install_with_acme_and_another_port() {
    let root = tempfile::tempdir().unwrap();
    let o = install(
        root.path(),
        &[
            "--public-url",
            "https://relay.example.com:8443",
            "--acme-email",
            "ops@example.com",
            "--https-port=8443",
            "--metrics",
            "off",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let socket = read(&root.path().join("etc/systemd/system/mcp-relay.socket"));
    assert!(
        socket.contains("\nListenStream=8443\n") && socket.contains("\nListenDatagram=8443\n"),
        "{socket}"
    );
    let written = read(&root.path().join("etc/mcp-relay/relay.toml"));
    let out = text(&o.stdout);
    assert!(
        out.contains("ufw allow 8443/tcp && ufw allow 8443/udp"),
        "{out}"
    );
    assert!(
        out.contains("forward TCP 443 to 8443"),
        "ACME needs 443: {out}"
    );
    let cfg = resolve(&written);
    let TlsSource::Acme(acme) = &cfg.tls else {
        panic!("not ACME: {:?}", cfg.tls)
    };
    assert_eq!(acme.contact, ["mailto:ops@example.com"]);
    assert_eq!(acme.domains, ["relay.example.com"]);
    assert_eq!((cfg.https.port(), cfg.quic.port()), (8443, 8443));
    assert_eq!(cfg.metrics, None);
}

#[test]
fn install_refuses_bad_usage_with_exit_2() {
    let root = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--bogus"][..], "unknown option: --bogus"),
        (&["--public-url", "http://relay.example.com"], "https://"),
        (&["--https-port", "70000"], "port number"),
        (&["--tls-cert", "/x/cert.pem"], "--tls-key go together"),
        (
            &[
                "--public-url",
                "https://r.example.com",
                "--acme-email",
                "a@b.c",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
            ],
            "not both",
        ),
        (&["--acme-email", "not-an-email"], "email address"),
        (&["--metrics", "everywhere"], "IP:PORT"),
        (&["--public-url"], "needs a value"),
        // A new relay.toml needs to know the URL and where the certificate comes from.
        (&[], "--public-url is needed"),
        (
            &["--public-url", "https://relay.example.com"],
            "--acme-email EMAIL",
        ),
    ] {
        let o = install(root.path(), args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", both(&o));
        assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
        assert!(
            err.contains("--help"),
            "{args:?} should point at --help: {err}"
        );
    }
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "a refused run must not touch the root"
    );
    let o = Command::new(deploy_dir().join("install.sh"))
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--yes",
            "--binary",
            "/nonexistent/mcp-relay",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        text(&o.stderr).contains("--binary target/release/mcp-relay"),
        "{}",
        both(&o)
    );
}

#[test]
fn shipped_relay_toml_parses_and_resolves() {
    let shipped = read(&deploy_dir().join("relay.toml"));
    let file = FileConfig::parse(&shipped).unwrap_or_else(|e| panic!("deploy/relay.toml: {e:#}"));
    let cfg = Config::resolve(file, Overrides::default()).expect("deploy/relay.toml resolves");
    assert_eq!(cfg.https.to_string(), "[::]:443");
    assert_eq!(cfg.quic.to_string(), "[::]:443");
    assert_eq!(
        cfg.public_url.unwrap().as_str(),
        "https://relay.example.com/"
    );
    assert_eq!(
        cfg.limits,
        Default::default(),
        "shipped limits are the defaults"
    );

    // Every optional setting, uncommented, is valid TOML of the right type.
    let uncommented = uncomment_settings(&shipped);
    let all = FileConfig::parse(&uncommented).unwrap_or_else(|e| {
        panic!("deploy/relay.toml with every '# key = value' uncommented: {e:#}\n{uncommented}")
    });
    assert!(all.acme.is_some() && all.oidc.is_some() && all.metrics.is_some());
}

#[test]
fn relay_toml_documents_every_key() {
    let shipped = read(&deploy_dir().join("relay.toml"));
    let src = repo_root().join("relay/src");
    let sections = [
        ("config.rs", "FileConfig", None),
        ("limits.rs", "RelayLimits", Some("limits")),
        ("config.rs", "OidcConfig", Some("oidc")),
        ("config.rs", "PolicyConfig", Some("policy")),
        ("config.rs", "RateLimitConfig", Some("rate_limits")),
        ("config.rs", "AuditConfig", Some("audit")),
        ("acme.rs", "AcmeConfig", Some("acme")),
    ];
    let mut missing = Vec::new();
    for (file, name, section) in sections {
        let body = read(&src.join(file));
        let fields = struct_fields(&body, name);
        if let Some(section) = section {
            let header = format!("[{section}]");
            if !shipped
                .lines()
                .any(|l| l.trim_start_matches("# ") == header)
            {
                missing.push(header);
            }
        }
        for field in fields {
            let is_section = sections.iter().any(|(_, _, s)| *s == Some(field.as_str()));
            if is_section {
                continue;
            }
            let key = format!("{field} = ");
            if !shipped
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&key))
            {
                missing.push(format!(
                    "{}{field}",
                    section.map(|s| format!("{s}.")).unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/relay.toml does not document: {missing:?}"
    );
}

// --- helpers -------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(o: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `systemd-analyze`, or `None` (with a note) where it is not installed;
/// `tests/setup.sh` installs it.
fn systemd_analyze() -> Option<PathBuf> {
    let found = which("systemd-analyze");
    if found.is_none() {
        eprintln!("skipped: systemd-analyze not on PATH (tests/setup.sh installs it)");
    }
    found
}

/// The units copied to a scratch dir, `ExecStart=` pointing at the built
/// binary: `verify` refuses a unit whose program does not exist.
fn unit_copies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = bin_path("mcp-relay");
    for name in ["mcp-relay.socket", "mcp-relay.service"] {
        let unit = read(&deploy_dir().join(name))
            .replace("/usr/local/bin/mcp-relay", bin.to_str().unwrap());
        std::fs::write(dir.path().join(name), unit).unwrap();
    }
    dir
}

/// Runs `install.sh --root ROOT --yes --binary <built mcp-relay> ARGS`.
fn install(root: &Path, args: &[&str]) -> Output {
    Command::new(deploy_dir().join("install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--yes")
        .arg("--binary")
        .arg(bin_path("mcp-relay"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Parses and resolves a relay.toml the way `mcp-relay serve` does.
fn resolve(text: &str) -> Config {
    let file = FileConfig::parse(text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    Config::resolve(file, Overrides::default()).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

/// Uncomments every `# key = value` and `# [section]` line.
fn uncomment_settings(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => out.push_str(rest),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn is_setting(s: &str) -> bool {
    let ident = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if let Some(name) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return ident(name);
    }
    s.split_once(" = ").is_some_and(|(k, _)| ident(k))
}

/// The `pub` field names of `struct name` in Rust source `src`.
fn struct_fields(src: &str, name: &str) -> Vec<String> {
    let start = format!("pub struct {name} {{");
    let mut lines = src.lines().skip_while(|l| !l.starts_with(&start));
    let open = lines
        .next()
        .unwrap_or_else(|| panic!("no `{start}` in the relay's source"));
    if open.trim_end().ends_with("{}") {
        return Vec::new();
    }
    lines
        .take_while(|l| *l != "}")
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub ")?
                .split_once(':')
                .map(|(f, _)| f.to_owned())
        })
        .collect()
}
