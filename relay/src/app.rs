//! State shared by the relay's QUIC side and HTTP front.

use std::sync::atomic::{AtomicU64, Ordering};

use mcp_tunnel_proto::TunnelName;

use crate::agent_tokens::AgentTokens;
use crate::auth::Auth;
use crate::config::Config;
use crate::host_check::HostPolicy;
use crate::registry::Registry;

/// What agents authenticate against.
#[derive(Debug)]
pub struct AgentCredentials {
    /// Agent tokens (`--dev` relays only).
    pub tokens: AgentTokens,
    /// The device CA.
    pub device_ca: crate::devices::DeviceCa,
}

/// Rate limits and the settings they were made from.
#[derive(Debug)]
pub struct LiveRate {
    /// The settings.
    pub config: crate::config::RateLimitConfig,
    /// The buckets.
    pub limits: crate::policy::rate::RateLimits,
}

/// Everything a request handler or agent connection needs.
#[derive(Debug)]
pub struct App {
    /// The resolved configuration.
    pub config: Config,
    /// Tunnels and their agents.
    pub registry: Registry,
    /// Agent credentials.
    pub tokens: AgentTokens,
    /// Bearer checks and identity assertions.
    pub auth: Auth,
    /// Users, clients, codes, refresh tokens.
    pub store: std::sync::Arc<dyn crate::store::Store>,
    /// Fetches client metadata documents (https `client_id`s).
    pub cimd: crate::oauth::cimd::CimdFetcher,
    /// Sign-in through an upstream OIDC provider, when configured.
    pub oidc: Option<crate::authorization::oidc::Oidc>,
    /// Device authorizations (RFC 8628) waiting for approval.
    pub device_grants: crate::authorization::device::DeviceGrants,
    /// Failed sign-ins.
    pub login_limiter: crate::authorization::limiter::LoginLimiter,
    /// Which Host/Origin values the MCP path accepts.
    pub host_policy: HostPolicy,
    /// The public base URL, without a trailing slash.
    pub public_url: String,
    /// Issues and checks agents' device certificates (replaced when rotated).
    pub device_ca: std::sync::RwLock<std::sync::Arc<crate::devices::DeviceCa>>,
    /// The QUIC port agents should dial (advertised in `/.well-known/mcp-relay`).
    pub quic_port: u16,
    next_request_id: AtomicU64,
    /// Authorization: the policy engine and its inputs.
    pub policy: crate::policy::PolicyState,
    /// Per-identity and per-tool rate limits (replaced on SIGHUP).
    rate: std::sync::RwLock<std::sync::Arc<LiveRate>>,
    /// The audit log (`None` only when authentication is off).
    pub audit: Option<mcp_tunnel_audit::AuditLog>,
    /// How tool arguments are recorded in it.
    pub audit_args: mcp_tunnel_audit::ArgsPolicy,
    /// Readiness, metrics and the draining flag.
    pub ops: crate::ops::Ops,
}

impl App {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        auth: Auth,
        store: std::sync::Arc<dyn crate::store::Store>,
        public_url: String,
        registry: Registry,
        agents: AgentCredentials,
        quic_port: u16,
    ) -> anyhow::Result<Self> {
        let AgentCredentials { tokens, device_ca } = agents;
        let policy = crate::policy::PolicyState::load(&config.policy_files)?;
        let rate = std::sync::RwLock::new(std::sync::Arc::new(LiveRate {
            limits: crate::policy::rate::RateLimits::new(&config.rate_limits),
            config: config.rate_limits.clone(),
        }));
        // Every decision is audited whenever callers are authenticated.
        let audit = if config.no_auth {
            None
        } else {
            Some(crate::audit::open(&config.state_dir)?)
        };
        let audit_args = crate::audit::args_policy(&config.audit);
        use anyhow::Context;
        let cimd = crate::oauth::cimd::CimdFetcher::new(cimd_config(&config)?)
            .context("setting up the client metadata fetcher")?;
        let public_host = url::Url::parse(&public_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "localhost".to_owned());
        let mut host_policy = HostPolicy::new(
            &public_host,
            &config.allowed_hosts,
            &config.allowed_origins,
            config.dev,
        );
        if config.subdomains {
            host_policy.allow_tunnel_subdomains(&public_host);
        }
        let oidc = match &config.oidc {
            Some(s) => Some(
                crate::authorization::oidc::Oidc::new(s.clone(), &public_url)
                    .context("setting up OIDC sign-in")?,
            ),
            None => None,
        };
        Ok(Self {
            oidc,
            public_url,
            auth,
            store,
            cimd,
            login_limiter: Default::default(),
            device_grants: Default::default(),
            host_policy,
            config,
            registry,
            tokens,
            device_ca: std::sync::RwLock::new(std::sync::Arc::new(device_ca)),
            quic_port,
            next_request_id: AtomicU64::new(1),
            policy,
            rate,
            audit,
            audit_args,
            ops: Default::default(),
        })
    }

    /// The current device CA.
    pub fn device_ca(&self) -> std::sync::Arc<crate::devices::DeviceCa> {
        self.device_ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rate limits in force.
    pub fn rate(&self) -> std::sync::Arc<LiveRate> {
        self.rate.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// New rate limits (SIGHUP); the same settings keep their buckets.
    pub fn set_rate_limits(&self, config: &crate::config::RateLimitConfig) -> bool {
        let mut live = self.rate.write().unwrap_or_else(|e| e.into_inner());
        if live.config == *config {
            return false;
        }
        *live = std::sync::Arc::new(LiveRate {
            limits: crate::policy::rate::RateLimits::new(config),
            config: config.clone(),
        });
        true
    }

    /// A fresh request id.
    pub fn request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Who owns `tunnel`, for policy (reads the store: call from blocking code).
    pub fn tunnel_owner(&self, tunnel: &str) -> crate::policy::Owner {
        match self.registry.claim_owner(tunnel) {
            Some(o) => self.owner_from_claim(&o),
            None => crate::policy::Owner::Nobody,
        }
    }

    /// [`Self::tunnel_owner`] from a claim's owner string.
    pub fn owner_from_claim(&self, claim: &str) -> crate::policy::Owner {
        crate::policy::owner_from_claim(self.store.as_ref(), self.config.dev, claim)
    }

    /// Rebuilds one tunnel's policy from the store and tells its agents
    /// (blocking: call from `spawn_blocking`).
    pub fn refresh_tunnel_policy(&self, tunnel: &str) {
        let owner = self.tunnel_owner(tunnel);
        let now = crate::oauth::token::unix_now() as i64;
        if let Err(e) = self
            .policy
            .refresh_tunnel(self.store.as_ref(), tunnel, owner, now)
        {
            tracing::error!(tunnel, error = %format!("{e:#}"), "rebuilding the tunnel's policy failed");
        }
        for a in self.registry.agents_of(tunnel) {
            a.policy_changed.notify_one();
        }
    }

    /// Brings every tunnel's policy up to date with the store and tells the
    /// agents of the tunnels that changed (blocking: call from `spawn_blocking`).
    pub fn refresh_all_policy(&self) {
        // Names reserved or released with `mcp-relay tunnels` since.
        if let Err(e) = self.registry.reload_claims() {
            tracing::error!(error = %format!("{e:#}"), "re-reading tunnel claims failed");
        }
        let owners = self.claim_owners();
        let now = crate::oauth::token::unix_now() as i64;
        match self.policy.refresh_all(self.store.as_ref(), &owners, now) {
            Ok(changed) => self.notify_policy_changed(changed),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "rebuilding policies failed"),
        }
    }

    /// Every claimed tunnel's owner, for policy (reads the store: blocking).
    pub fn claim_owners(&self) -> std::collections::HashMap<String, crate::policy::Owner> {
        self.registry
            .claims_snapshot()
            .into_iter()
            .map(|(t, o)| (t.as_str().to_owned(), self.owner_from_claim(&o)))
            .collect()
    }

    /// Tells the agents of `tunnels` that their policy changed.
    pub fn notify_policy_changed(&self, tunnels: impl IntoIterator<Item = String>) {
        for t in tunnels {
            for a in self.registry.agents_of(&t) {
                a.policy_changed.notify_one();
            }
        }
    }

    /// The MCP URL clients use for `tunnel`.
    pub fn public_mcp_url(&self, tunnel: &TunnelName) -> String {
        self.auth.resource_url(tunnel)
    }
}

/// The client-metadata fetcher's settings, with the test-only escape hatches.
fn cimd_config(config: &Config) -> anyhow::Result<crate::oauth::cimd::CimdConfig> {
    let mut c = crate::oauth::cimd::CimdConfig {
        allow: crate::oauth::cimd::AllowList::new(config.cimd_test_allow_hosts.iter()),
        ..Default::default()
    };
    if !config.cimd_test_allow_hosts.is_empty() {
        tracing::warn!(hosts = ?config.cimd_test_allow_hosts, "TEST ONLY: client metadata may be fetched from loopback for these hosts");
    }
    if let Some(ca) = &config.cimd_test_ca {
        use anyhow::Context;
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            c.extra_roots_der.push(cert?.to_vec());
        }
    }
    Ok(c)
}
