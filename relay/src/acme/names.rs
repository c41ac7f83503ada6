//! Certificates for tunnel names, on demand: with `subdomains = true` tunnel
//! NAME is reached at `https://NAME.<public host>/mcp`, and the relay gets
//! a certificate for exactly that name the first time a client asks for it.
//!
//! ```text
//!  ClientHello, SNI NAME.<host> ── NAME claimed? ──no──> main certificate (no order)
//!          │ yes, and no valid certificate of its own
//!          └─> request: joins the running order, or starts one unless the
//!              name is backing off or the hourly cap is reached
//!              order task: names/NAME.pem stored and valid? → serve it
//!                          else wait for the relay's own certificate →
//!                          permit (4 at once) → hourly slot → order
//!                          (TLS-ALPN-01, same account) → served, stored 0600
//!          the handshake waits up to NAME_WAIT for it, else gets the main one
//!  sweep (every SWEEP_INTERVAL): released names stop being served;
//!  certificates of claimed names are renewed like the main one
//! ```
//!
//! A hostile client can name any subdomain, so nothing is ordered for a
//! name nobody claimed, and the CA's rate limits are guarded by a per-name
//! failure backoff and a cap on orders per hour (`name_orders_per_hour`).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mcp_tunnel_proto::TunnelName;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    ATTEMPT_TIMEOUT, AcmeClient, AcmeError, AcmeSettings, ensure_private_dir, load_certificate,
    renew_at,
};
use crate::state_dir::write_private;
use crate::tls::Identity;

/// How long a handshake for a claimed name waits for the name's first
/// certificate before it is served the main one.
pub const NAME_WAIT: Duration = Duration::from_secs(15);
/// Orders for tunnel names running at once.
const CONCURRENT_ORDERS: usize = 4;
/// How often held certificates are checked for renewal and released names.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often a queued order checks whether the relay's own certificate
/// (and so the account) exists yet.
const MAIN_CERTIFICATE_POLL: Duration = Duration::from_millis(500);
/// The window of `name_orders_per_hour`.
const HOUR: Duration = Duration::from_secs(3600);
/// The "hourly cap reached" warning is logged at most this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// "Is this tunnel name claimed?" (the registry's answer, asked anew each time).
pub type IsClaimed = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The relay's tunnel subdomains: `NAME.<parent>` reaches tunnel NAME, and
/// only claimed names get a certificate.
#[derive(Clone)]
pub struct Subdomains {
    parent: String,
    claimed: IsClaimed,
}

impl std::fmt::Debug for Subdomains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subdomains")
            .field("parent", &self.parent)
            .finish_non_exhaustive()
    }
}

impl Subdomains {
    /// Tunnel names under `parent` (the public host, without port), claimed
    /// when `claimed` says so.
    pub fn new(parent: &str, claimed: IsClaimed) -> Self {
        Self {
            parent: parent.trim_end_matches('.').to_ascii_lowercase(),
            claimed,
        }
    }

    /// The tunnel `host` (lowercase) stands for, if it is `NAME.<parent>`.
    fn tunnel_of(&self, host: &str) -> Option<TunnelName> {
        let label = host.strip_suffix(self.parent.as_str())?.strip_suffix('.')?;
        TunnelName::parse(label).ok()
    }

    fn host_of(&self, name: &TunnelName) -> String {
        format!("{name}.{}", self.parent)
    }

    fn is_claimed(&self, name: &TunnelName) -> bool {
        (self.claimed)(name.as_str())
    }
}

/// Keeps the certificates of claimed tunnel names until `shutdown`: serves
/// the stored ones, lets handshakes order missing ones (through
/// `identity`), renews them when due and stops serving released names.
pub async fn keep_fresh(
    settings: AcmeSettings,
    identity: Identity,
    subdomains: Subdomains,
    shutdown: CancellationToken,
) {
    let orders = Arc::new(NameOrders::new(settings, subdomains, shutdown.clone()));
    // The stored certificates were loaded with the identity (so they are
    // served from the first handshake on); keep those of claimed names.
    orders.sweep(&identity);
    tracing::info!(
        stored = identity.names().len(),
        names = %format!("*.{}", orders.subdomains.parent),
        orders_per_hour = orders.settings.name_orders_per_hour,
        "ACME: certificates for claimed tunnel names are ordered when a client first asks for one"
    );
    identity.set_name_orders(orders.clone());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = shutdown.cancelled() => break,
        }
        orders.sweep(&identity);
    }
    orders.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), orders.tasks.wait()).await;
}

/// Orders certificates for tunnel names within the limits; shared by the
/// HTTPS handshakes (through [`Identity`]) and the renewal sweep.
pub struct NameOrders {
    settings: AcmeSettings,
    subdomains: Subdomains,
    book: Mutex<Book>,
    permits: Semaphore,
    /// The account, shared by the orders (created on first use).
    client: tokio::sync::Mutex<Option<AcmeClient>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for NameOrders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameOrders")
            .field("subdomains", &self.subdomains)
            .finish_non_exhaustive()
    }
}

/// What an order task achieved.
enum Obtained {
    /// A new certificate from the CA.
    Issued,
    /// The stored one, still valid.
    Stored,
    /// Nothing: the name was released meanwhile.
    Released,
}

/// Why an order task got nothing.
enum NameFailure {
    /// The hourly cap is reached; a slot frees up at this instant.
    Capped(Instant),
    /// The CA (or a local step) failed.
    Acme(AcmeError),
}

impl NameOrders {
    fn new(settings: AcmeSettings, subdomains: Subdomains, shutdown: CancellationToken) -> Self {
        let per_hour = settings.name_orders_per_hour;
        Self {
            settings,
            subdomains,
            book: Mutex::new(Book::new(per_hour)),
            permits: Semaphore::new(CONCURRENT_ORDERS),
            client: tokio::sync::Mutex::new(None),
            tasks: TaskTracker::new(),
            shutdown,
        }
    }

    /// For a client asking for `host`: if it is a claimed tunnel name with
    /// no valid certificate of its own, orders one (within the limits) and
    /// waits up to [`NAME_WAIT`] for it.
    pub(crate) async fn await_certificate(self: &Arc<Self>, identity: &Identity, host: &str) {
        let Some(name) = self.subdomains.tunnel_of(host) else {
            return;
        };
        match identity.name_validity(host) {
            // Expired (its renewals failed): order again.
            Some(Some((_, not_after))) if not_after <= SystemTime::now() => {}
            Some(_) => return,
            None => {}
        }
        if identity.main_covers(host) {
            return;
        }
        if !self.subdomains.is_claimed(&name) {
            tracing::debug!(
                host,
                "TLS: a client asked for an unclaimed tunnel name; serving the main certificate"
            );
            return;
        }
        let Some(mut done) = self.request(identity, &name) else {
            return;
        };
        if tokio::time::timeout(NAME_WAIT, done.wait_for(|d| *d))
            .await
            .is_err()
        {
            tracing::debug!(
                host,
                "TLS: the tunnel name's certificate is not ready after {NAME_WAIT:?}; serving the main certificate"
            );
        }
    }

    /// Starts an order for `name` (or joins the running one): a receiver
    /// that turns `true` when it ends, or `None` if no order may start now.
    fn request(
        self: &Arc<Self>,
        identity: &Identity,
        name: &TunnelName,
    ) -> Option<watch::Receiver<bool>> {
        let admitted = self.book().admit(name, Instant::now());
        match admitted {
            Admit::Join(done) => Some(done),
            Admit::Start(done) => {
                let this = self.clone();
                let identity = identity.clone();
                let name = name.clone();
                self.tasks
                    .spawn(async move { this.run_order(identity, name).await });
                Some(done)
            }
            Admit::BackingOff => None,
            Admit::Capped { warn } => {
                if warn {
                    tracing::warn!(
                        tunnel = %name,
                        per_hour = self.settings.name_orders_per_hour,
                        "ACME: the hourly cap on certificate orders for tunnel names is reached; clients of new names get the main certificate until it frees up (raise acme.name_orders_per_hour if this is expected)"
                    );
                }
                None
            }
        }
    }

    /// One order task: gets `name` a certificate, records the outcome, and
    /// wakes the handshakes waiting for it.
    async fn run_order(self: Arc<Self>, identity: Identity, name: TunnelName) {
        let host = self.subdomains.host_of(&name);
        let began = Instant::now();
        let result = tokio::select! {
            r = self.obtain(&identity, &name, &host) => Some(r),
            _ = self.shutdown.cancelled() => None,
        };
        if matches!(result, Some(Err(NameFailure::Acme(_)))) {
            // A fresh client next time: the directory or account may have changed.
            *self.client.lock().await = None;
        }
        let now = Instant::now();
        let mut book = self.book();
        match result {
            None => {}
            Some(Ok(Obtained::Issued)) => {
                book.succeeded(&name);
                tracing::info!(
                    tunnel = %name,
                    host = %host,
                    took_ms = began.elapsed().as_millis() as u64,
                    not_after = %identity.name_validity(&host).flatten().map(|(_, na)| humantime::format_rfc3339_seconds(na).to_string()).unwrap_or_default(),
                    "ACME: certificate for the tunnel name installed"
                );
            }
            Some(Ok(Obtained::Stored)) => {
                book.succeeded(&name);
                tracing::info!(tunnel = %name, host = %host, "ACME: serving the stored certificate of the tunnel name");
            }
            Some(Ok(Obtained::Released)) => {
                tracing::info!(tunnel = %name, "ACME: the tunnel name was released; not ordering its certificate");
            }
            Some(Err(NameFailure::Capped(free_at))) => {
                book.postpone(&name, free_at);
                tracing::warn!(
                    tunnel = %name,
                    per_hour = self.settings.name_orders_per_hour,
                    retry_in_s = free_at.saturating_duration_since(now).as_secs(),
                    "ACME: the hourly cap on certificate orders for tunnel names is reached; the name is served the main certificate meanwhile"
                );
            }
            Some(Err(NameFailure::Acme(e))) => {
                let wall = SystemTime::now();
                let wait = book.failed(&name, now, |n| e.retry_delay(n, wall));
                tracing::error!(
                    tunnel = %name,
                    host = %host,
                    error = %e,
                    retry_at = %humantime::format_rfc3339_seconds(wall + wait),
                    "ACME: getting the tunnel name's certificate failed; its clients get the main certificate meanwhile"
                );
            }
        }
        book.done(&name);
    }

    async fn obtain(
        &self,
        identity: &Identity,
        name: &TunnelName,
        host: &str,
    ) -> Result<Obtained, NameFailure> {
        let file = self.file_of(name);
        let domains = [host.to_owned()];
        match load_certificate(&file, &domains) {
            Ok(Some((chain, key))) => {
                identity
                    .install_name(host, chain, key)
                    .with_context(|| format!("installing {}", file.display()))
                    .map_err(|e| NameFailure::Acme(AcmeError::Local(e)))?;
                return Ok(Obtained::Stored);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "ACME: the stored certificate of the tunnel name is unusable; ordering a new one")
            }
        }
        // The relay's own certificate comes first: its order creates (and
        // stores) the account these orders share, and a relay the CA cannot
        // reach at all should not multiply failing orders.
        while identity.is_provisional() {
            tokio::time::sleep(MAIN_CERTIFICATE_POLL).await;
        }
        let _permit = self.permits.acquire().await.map_err(|_| {
            NameFailure::Acme(AcmeError::Local(anyhow::anyhow!(
                "the order queue is closed"
            )))
        })?;
        if !self.subdomains.is_claimed(name) {
            return Ok(Obtained::Released);
        }
        self.book()
            .take_slot(name, Instant::now())
            .map_err(NameFailure::Capped)?;
        tracing::info!(tunnel = %name, host, "ACME: ordering a certificate for the tunnel name");
        let attempt = async {
            let mut client = self.client().await?;
            client.order(&self.settings, &domains, identity).await
        };
        let issued = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(AcmeError::TimedOut(ATTEMPT_TIMEOUT)))
            .map_err(NameFailure::Acme)?;
        let local = |e: anyhow::Error| NameFailure::Acme(AcmeError::Local(e));
        identity
            .install_name(host, issued.chain, issued.key)
            .context("installing the issued certificate")
            .map_err(local)?;
        ensure_private_dir(&self.settings.names_dir()).map_err(local)?;
        write_private(&file, issued.pem.as_bytes()).map_err(local)?;
        Ok(Obtained::Issued)
    }

    /// The account client, created from the stored account on first use.
    async fn client(&self) -> Result<AcmeClient, AcmeError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = AcmeClient::new(&self.settings).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the certificates of released names from the served set and
    /// renews the others when due.
    fn sweep(self: &Arc<Self>, identity: &Identity) {
        let now = SystemTime::now();
        for (host, validity) in identity.names() {
            let name = self.subdomains.tunnel_of(&host);
            let Some(name) = name.filter(|n| self.subdomains.is_claimed(n)) else {
                identity.remove_name(&host);
                tracing::info!(host = %host, "ACME: the tunnel name was released; its certificate is no longer served");
                continue;
            };
            let due = validity
                .map(|(nb, na)| renew_at(nb, na, self.settings.renew_before))
                .unwrap_or(now);
            if due <= now {
                self.request(identity, &name);
            }
        }
        let known: Vec<TunnelName> = self.book().failures.keys().cloned().collect();
        let released: Vec<TunnelName> = known
            .into_iter()
            .filter(|n| !self.subdomains.is_claimed(n))
            .collect();
        if !released.is_empty() {
            let mut book = self.book();
            for n in &released {
                book.failures.remove(n);
            }
        }
    }

    fn file_of(&self, name: &TunnelName) -> PathBuf {
        self.settings.names_dir().join(format!("{name}.pem"))
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The stored, still valid certificates of tunnel names in
/// `settings.names_dir()`, by host name: each file `NAME.pem` must hold a
/// certificate for exactly one name, `NAME.<some host>`. Whether NAME is
/// claimed, and under which host, is for [`keep_fresh`] to check.
pub(crate) fn load_stored(settings: &AcmeSettings) -> Vec<(String, super::ChainAndKey)> {
    let dir = settings.names_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "ACME: cannot read the stored certificates of tunnel names; they are ordered again when asked for");
            return Vec::new();
        }
    };
    let mut loaded = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".pem"))
            .and_then(|stem| TunnelName::parse(stem).ok())
        else {
            continue;
        };
        let (chain, key) = match load_certificate(&path, &[]) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "ACME: a stored tunnel-name certificate does not load; a new one is ordered when asked for");
                continue;
            }
        };
        let names = chain
            .first()
            .map(crate::tls::leaf_dns_names)
            .unwrap_or_default();
        match names.as_slice() {
            [host] if host.starts_with(&format!("{name}.")) => {
                loaded.push((host.clone(), (chain, key)));
            }
            _ => {
                tracing::warn!(path = %path.display(), names = ?names, "ACME: a stored tunnel-name certificate is for other names; ignoring it")
            }
        }
    }
    loaded
}

/// The order bookkeeping: at most one order per name, none while a name
/// backs off after failures, at most `per_hour` started in any hour. Pure:
/// the caller passes the time.
#[derive(Debug)]
struct Book {
    per_hour: u32,
    /// Orders queued or running, by name.
    pending: HashMap<TunnelName, Pending>,
    /// Names whose last order failed (or hit the cap): when to try again.
    failures: HashMap<TunnelName, Failure>,
    /// When the orders of the last hour started, oldest first.
    started: VecDeque<Instant>,
    cap_warned_at: Option<Instant>,
}

#[derive(Debug)]
struct Pending {
    done: watch::Sender<bool>,
    /// It has taken its slot of the hourly cap.
    counted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    count: u32,
    retry_at: Instant,
}

/// What [`Book::admit`] decided.
#[derive(Debug)]
enum Admit {
    /// An order is running; wait on it.
    Join(watch::Receiver<bool>),
    /// Start one (the caller spawns it); it ends when this turns `true`.
    Start(watch::Receiver<bool>),
    /// The name's last order failed; not yet.
    BackingOff,
    /// The hourly cap is reached; `warn`: log it (rate-limited).
    Capped {
        /// Time to log the warning again.
        warn: bool,
    },
}

impl Book {
    fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            pending: HashMap::new(),
            failures: HashMap::new(),
            started: VecDeque::new(),
            cap_warned_at: None,
        }
    }

    fn admit(&mut self, name: &TunnelName, now: Instant) -> Admit {
        if let Some(p) = self.pending.get(name) {
            return Admit::Join(p.done.subscribe());
        }
        if self.failures.get(name).is_some_and(|f| now < f.retry_at) {
            return Admit::BackingOff;
        }
        self.prune(now);
        let queued = self.pending.values().filter(|p| !p.counted).count();
        if self.started.len() + queued >= self.per_hour as usize {
            let warn = self
                .cap_warned_at
                .is_none_or(|t| now.saturating_duration_since(t) >= CAP_WARNING_INTERVAL);
            if warn {
                self.cap_warned_at = Some(now);
            }
            return Admit::Capped { warn };
        }
        let (done, rx) = watch::channel(false);
        self.pending.insert(
            name.clone(),
            Pending {
                done,
                counted: false,
            },
        );
        Admit::Start(rx)
    }

    /// Counts `name`'s order against the hourly cap as it goes to the CA;
    /// `Err(when a slot frees up)` if the cap is reached.
    fn take_slot(&mut self, name: &TunnelName, now: Instant) -> Result<(), Instant> {
        self.prune(now);
        if self.started.len() >= self.per_hour as usize {
            let free_at = self
                .started
                .front()
                .map(|t| *t + HOUR)
                .unwrap_or(now + HOUR);
            return Err(free_at);
        }
        self.started.push_back(now);
        if let Some(p) = self.pending.get_mut(name) {
            p.counted = true;
        }
        Ok(())
    }

    fn succeeded(&mut self, name: &TunnelName) {
        self.failures.remove(name);
    }

    /// Records a failed order; `delay(failures in a row)` says how long it
    /// backs off, which is returned.
    fn failed(
        &mut self,
        name: &TunnelName,
        now: Instant,
        delay: impl FnOnce(u32) -> Duration,
    ) -> Duration {
        let count = self
            .failures
            .get(name)
            .map_or(1, |f| f.count.saturating_add(1));
        let wait = delay(count);
        self.failures.insert(
            name.clone(),
            Failure {
                count,
                retry_at: now + wait,
            },
        );
        wait
    }

    /// No new order for `name` before `until` (not counted as a failure).
    fn postpone(&mut self, name: &TunnelName, until: Instant) {
        let count = self.failures.get(name).map_or(0, |f| f.count);
        self.failures.insert(
            name.clone(),
            Failure {
                count,
                retry_at: until,
            },
        );
    }

    /// The order for `name` ended: wake whoever waits on it.
    fn done(&mut self, name: &TunnelName) {
        if let Some(p) = self.pending.remove(name) {
            p.done.send_replace(true);
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= HOUR)
        {
            self.started.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> TunnelName {
        TunnelName::parse(n).unwrap()
    }

    #[test]
    fn only_tunnel_names_under_the_parent_are_recognized() {
        let s = Subdomains::new("Relay.Test.", Arc::new(|n: &str| n == "shop"));
        assert_eq!(s.tunnel_of("shop.relay.test"), Some(name("shop")));
        assert_eq!(s.host_of(&name("shop")), "shop.relay.test");
        for host in [
            "relay.test",
            "shoprelay.test",
            "a.b.relay.test",
            "-x.relay.test",
            ".relay.test",
            "shop.relay.test.evil",
            "shop.other.test",
        ] {
            assert_eq!(s.tunnel_of(host), None, "{host}");
        }
        assert!(s.is_claimed(&name("shop")));
        assert!(!s.is_claimed(&name("nosuch")));
    }

    #[test]
    fn one_order_per_name_and_waiters_are_woken() {
        let mut book = Book::new(10);
        let now = Instant::now();
        let Admit::Start(mut first) = book.admit(&name("shop"), now) else {
            panic!("first request starts an order");
        };
        let Admit::Join(mut second) = book.admit(&name("shop"), now) else {
            panic!("second request joins it");
        };
        assert!(matches!(book.admit(&name("cafe"), now), Admit::Start(_)));
        assert!(!*first.borrow_and_update());
        book.done(&name("shop"));
        assert!(*first.borrow_and_update());
        assert!(*second.borrow_and_update());
        assert!(matches!(book.admit(&name("shop"), now), Admit::Start(_)));
    }

    #[test]
    fn failures_back_off_per_name() {
        let mut book = Book::new(10);
        let now = Instant::now();
        let shop = name("shop");
        assert!(matches!(book.admit(&shop, now), Admit::Start(_)));
        book.take_slot(&shop, now).unwrap();
        let wait = book.failed(&shop, now, |n| Duration::from_secs(60 * u64::from(n)));
        book.done(&shop);
        assert_eq!(wait, Duration::from_secs(60));
        assert!(matches!(book.admit(&shop, now), Admit::BackingOff));
        assert!(matches!(
            book.admit(&shop, now + Duration::from_secs(59)),
            Admit::BackingOff
        ));
        // Other names are not held back.
        assert!(matches!(book.admit(&name("cafe"), now), Admit::Start(_)));
        let later = now + Duration::from_secs(60);
        assert!(matches!(book.admit(&shop, later), Admit::Start(_)));
        let wait = book.failed(&shop, later, |n| Duration::from_secs(60 * u64::from(n)));
        assert_eq!(
            wait,
            Duration::from_secs(120),
            "the second failure in a row"
        );
        book.done(&shop);
        book.succeeded(&shop);
        assert!(matches!(book.admit(&shop, later), Admit::Start(_)));
    }

    #[test]
    fn orders_are_capped_per_hour() {
        let mut book = Book::new(2);
        let t0 = Instant::now();
        for (i, n) in ["a", "b"].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64 * 600);
            assert!(matches!(book.admit(&name(n), at), Admit::Start(_)));
            book.take_slot(&name(n), at).unwrap();
            book.done(&name(n));
        }
        let t1 = t0 + Duration::from_secs(1200);
        assert!(matches!(
            book.admit(&name("c"), t1),
            Admit::Capped { warn: true }
        ));
        assert!(matches!(
            book.admit(&name("d"), t1),
            Admit::Capped { warn: false }
        ));
        // The first slot frees up an hour after it was taken.
        assert!(matches!(book.admit(&name("c"), t0 + HOUR), Admit::Start(_)));
        // Queued orders count too: a third may not queue behind it.
        assert!(matches!(
            book.admit(&name("d"), t0 + HOUR),
            Admit::Capped { .. }
        ));
        book.take_slot(&name("c"), t0 + HOUR).unwrap();
        assert_eq!(
            book.take_slot(&name("e"), t0 + HOUR),
            Err(t0 + Duration::from_secs(600) + HOUR)
        );
        book.postpone(&name("e"), t0 + HOUR + Duration::from_secs(600));
        assert!(matches!(
            book.admit(&name("e"), t0 + HOUR),
            Admit::BackingOff
        ));
    }

    #[test]
    fn a_zero_cap_orders_nothing() {
        let mut book = Book::new(0);
        assert!(matches!(
            book.admit(&name("shop"), Instant::now()),
            Admit::Capped { .. }
        ));
    }
}
