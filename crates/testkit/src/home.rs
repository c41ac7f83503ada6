//! An agent's home for tests: its own config dir and the file credential
//! store, so several "machines" (device identities) run side by side.

use std::process::{Command, Stdio};

use crate::{Relay, bin_path};

/// An agent's home: its own config dir and the file credential store.
#[derive(Debug)]
pub struct AgentHome {
    dir: tempfile::TempDir,
}

impl AgentHome {
    /// A fresh, empty home.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    /// The agent's config dir in this home (profile, pinned keys, file store).
    pub fn config_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cfg")
    }

    /// The environment that points `mcp-agent` at this home.
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("MCP_AGENT_CONFIG_DIR", self.dir.path().join("cfg").into()),
            ("MCP_AGENT_CREDENTIAL_STORE", "file".into()),
        ]
    }

    /// `mcp-agent ARGS` in this home (no token, no display).
    pub fn agent(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_path("mcp-agent"));
        c.args(args)
            .envs(self.env())
            .env_remove("MCP_AGENT_TOKEN")
            .env_remove("DISPLAY");
        c
    }

    /// `mcp-agent login --enroll-token` (headless).
    pub fn login_with_token(&self, relay: &Relay, token: &str) -> std::process::Output {
        self.agent(&[
            "login",
            "--relay",
            &relay.https_url(),
            "--enroll-token",
            token,
            "--label",
            "ci",
        ])
        .arg("--ca")
        .arg(relay.ca_file())
        .output()
        .expect("mcp-agent runs")
    }

    /// A sample shop database in this home (made on first use).
    pub fn db(&self) -> String {
        let db = self.dir.path().join("shop.db");
        if !db.exists() {
            assert!(
                Command::new(bin_path("mcp-agent"))
                    .arg("demo-db")
                    .arg(&db)
                    .stderr(Stdio::null())
                    .status()
                    .expect("mcp-agent demo-db runs")
                    .success()
            );
        }
        db.display().to_string()
    }

    /// Starts `mcp-agent connect --db` with this home's device identity;
    /// `wait` waits for the public URL (else the caller waits for an exit).
    pub fn run_agent(&self, relay: &Relay, name: &str, wait: bool) -> anyhow::Result<crate::Agent> {
        self.run_agent_with(relay, name, &[], wait)
    }

    /// [`Self::run_agent`] with extra `connect` arguments (e.g. `--policy FILE`).
    pub fn run_agent_with(
        &self,
        relay: &Relay,
        name: &str,
        extra: &[&str],
        wait: bool,
    ) -> anyhow::Result<crate::Agent> {
        let env = self.env();
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let opts = crate::AgentOptions {
            name: name.into(),
            upstream: String::new(),
            token: None,
            args: ["--db".to_owned(), self.db()]
                .into_iter()
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect(),
        };
        if wait {
            crate::Agent::start_device(relay, opts, &env)
        } else {
            crate::Agent::spawn_device(relay, opts, &env)
        }
    }

    /// Connects and waits for the public URL.
    pub fn connect(&self, relay: &Relay, name: &str) -> anyhow::Result<crate::Agent> {
        self.run_agent(relay, name, true)
    }

    /// Starts `connect` without waiting.
    pub fn spawn(&self, relay: &Relay, name: &str) -> crate::Agent {
        self.run_agent(relay, name, false)
            .expect("mcp-agent starts")
    }
}
