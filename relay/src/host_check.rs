//! DNS-rebinding protection for the MCP path: a request must name this relay
//! in `Host` (or the HTTP/2 `:authority`), and an `Origin`, when a browser
//! sends one, must be this relay or an origin the admin allowed.
//!
//! Without this, a web page on another site could point its own DNS name at
//! the relay's address and talk to tunnels from a victim's browser.

use axum::http::{HeaderMap, Uri, header};

/// Which `Host` and `Origin` values the relay accepts.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// `.relay.example.com` when tunnels are also reached as its subdomains.
    subdomain_parent: Option<String>,
    hosts: Vec<String>,
    origins: Vec<String>,
    loopback: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// `Host` names something else.
    #[error("the Host {0:?} is not this relay's; use the relay's public URL")]
    Host(String),
    /// `Origin` is not allowed.
    #[error(
        "requests from the web origin {0:?} are not allowed (the relay admin can add it to allowed_origins)"
    )]
    Origin(String),
}

impl HostPolicy {
    /// Accepts the public URL's host and `extra_hosts`; with `loopback` (dev
    /// mode) also `localhost`, `127.0.0.1` and `::1`. `origins` are full
    /// origins (`https://app.example.com`) allowed besides the relay's own.
    pub fn new(
        public_host: &str,
        extra_hosts: &[String],
        origins: &[String],
        loopback: bool,
    ) -> Self {
        let mut hosts: Vec<String> = extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.push(public_host.to_ascii_lowercase());
        Self {
            subdomain_parent: None,
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            loopback,
        }
    }

    /// Checks a request's `Host`/authority and `Origin`.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), HostError> {
        let authority = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_default();
        if !self.host_allowed(&authority) {
            return Err(HostError::Host(authority));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let o = origin.trim_end_matches('/').to_ascii_lowercase();
            let origin_host = o.split_once("://").map(|(_, rest)| rest).unwrap_or("");
            if !(self.host_allowed(origin_host) || self.origins.contains(&o)) {
                return Err(HostError::Origin(origin.to_owned()));
            }
        }
        Ok(())
    }

    /// Also accepts `NAME.<parent>` for every valid tunnel name (subdomain routing).
    pub fn allow_tunnel_subdomains(&mut self, parent: &str) {
        self.subdomain_parent = Some(format!(".{}", parent.to_ascii_lowercase()));
    }

    fn host_allowed(&self, authority: &str) -> bool {
        let host = strip_port(authority).to_ascii_lowercase();
        if host.is_empty() {
            return false;
        }
        if let Some(parent) = &self.subdomain_parent
            && let Some(label) = host.strip_suffix(parent.as_str())
            && mcp_tunnel_proto::TunnelName::parse(label).is_ok()
        {
            return true;
        }
        self.hosts.contains(&host)
            || (self.loopback
                && matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]"))
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn req(host: &str, origin: Option<&str>) -> (Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        ("/t/x/mcp".parse().unwrap(), h)
    }

    #[test]
    fn production_accepts_only_its_name() {
        let p = HostPolicy::new(
            "relay.example.com",
            &[],
            &["https://app.example.org".into()],
            false,
        );
        for (host, origin) in [
            ("relay.example.com", None),
            ("RELAY.example.com:443", None),
            ("relay.example.com", Some("https://relay.example.com")),
            ("relay.example.com", Some("https://app.example.org/")),
        ] {
            let (u, h) = req(host, origin);
            assert_eq!(p.check(&u, &h), Ok(()), "{host} {origin:?}");
        }
        for (host, origin) in [
            ("evil.example.com", None),
            ("localhost", None),
            ("relay.example.com.evil.net", None),
            ("relay.example.com", Some("https://evil.example.com")),
            ("relay.example.com", Some("null")),
        ] {
            let (u, h) = req(host, origin);
            assert!(p.check(&u, &h).is_err(), "{host} {origin:?}");
        }
    }

    #[test]
    fn tunnel_subdomains_when_enabled() {
        let mut p = HostPolicy::new("relay.example.com", &[], &[], false);
        let (u, h) = req("shop.relay.example.com", None);
        assert!(p.check(&u, &h).is_err(), "off by default");
        p.allow_tunnel_subdomains("relay.example.com");
        assert!(p.check(&u, &h).is_ok());
        for bad in [
            "a.b.relay.example.com",
            "Bad_Name.relay.example.com",
            ".relay.example.com",
            "shop.relay.example.com.evil.net",
            "shoprelay.example.com",
        ] {
            let (u, h) = req(bad, None);
            assert!(p.check(&u, &h).is_err(), "{bad}");
        }
    }

    #[test]
    fn dev_also_accepts_loopback() {
        let p = HostPolicy::new("localhost", &[], &[], true);
        for host in ["localhost:8443", "127.0.0.1:1234", "[::1]:80"] {
            let (u, h) = req(host, Some(&format!("http://{host}")));
            assert_eq!(p.check(&u, &h), Ok(()), "{host}");
        }
        let (u, h) = req("evil.example.com", None);
        assert!(p.check(&u, &h).is_err());
    }
}
