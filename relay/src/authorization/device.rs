//! The OAuth 2.0 device authorization grant (RFC 8628) for `mcp-agent login`:
//! works over SSH with no browser on the agent's machine.
//!
//! ```text
//! agent ─POST /device_authorization (client_id=mcp-agent)─► device_code, user_code, /device URL
//! person ─GET /device?user_code=…─► sign in + approve ("the agent on <label> asks to be a device of yours")
//! agent ─POST /token (grant_type=…:device_code) every `interval` s─►
//!        authorization_pending | slow_down | access_denied | expired_token
//!        | success: a one-time enrollment token (then POST /agent/enroll with a CSR)
//! ```
//!
//! Pending authorizations are in memory (bounded, 10 min): a relay restart
//! makes a waiting `mcp-agent login` start again, nothing more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::pages::{self, escape};
use super::{blocking, field, parse_form};
use crate::app::App;
use crate::store::{Secret, TokenHash, UserId};

/// The one client id the device grant serves.
pub const AGENT_CLIENT_ID: &str = "mcp-agent";
/// The grant type URN.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a device code lives.
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// The polling interval the agent is told (and held to).
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long the enrollment token handed out on approval stays valid.
pub const ENROLL_TTL_SECS: i64 = 5 * 60;
/// Pending authorizations held at once.
pub const MAX_PENDING: usize = 10_000;
/// The double-submit CSRF cookie of the approval form.
const CSRF_COOKIE: &str = "mcp_relay_device_csrf";
/// User codes: 8 letters from an alphabet without vowels or look-alikes (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

#[derive(Debug)]
enum Decision {
    Pending,
    Approved(UserId),
    Denied,
}

#[derive(Debug)]
struct PendingDevice {
    user_code: String,
    label: String,
    created: Instant,
    last_poll: Option<Instant>,
    interval: Duration,
    decision: Decision,
}

/// The device grant's in-flight authorizations, keyed by device-code hash.
#[derive(Debug, Default)]
pub struct DeviceGrants {
    pending: Mutex<HashMap<TokenHash, PendingDevice>>,
}

impl DeviceGrants {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, PendingDevice>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user_code` (normalised) waits for a decision.
    pub fn is_pending(&self, user_code: &str) -> bool {
        self.lock().values().any(|p| {
            p.user_code == user_code
                && p.created.elapsed() < DEVICE_CODE_TTL
                && matches!(p.decision, Decision::Pending)
        })
    }

    /// One poll of the token endpoint (RFC 8628 §3.4–3.5) at `now`: the
    /// approving user, or the error code and message to answer.
    fn poll(&self, key: &TokenHash, now: Instant) -> Result<UserId, (&'static str, String)> {
        let mut map = self.lock();
        let Some(p) = map.get_mut(key) else {
            return Err((
                "expired_token",
                "the device code is unknown, expired or already used; run mcp-agent login again"
                    .into(),
            ));
        };
        if now.duration_since(p.created) >= DEVICE_CODE_TTL {
            map.remove(key);
            return Err((
                "expired_token",
                "the device code expired; run mcp-agent login again".into(),
            ));
        }
        if let Some(last) = p.last_poll
            && now.duration_since(last) < p.interval
        {
            // RFC 8628 §3.5: and the interval grows by 5 s for good.
            p.interval += Duration::from_secs(5);
            p.last_poll = Some(now);
            return Err((
                "slow_down",
                format!(
                    "polled too fast; wait {} s between polls",
                    p.interval.as_secs()
                ),
            ));
        }
        p.last_poll = Some(now);
        match p.decision {
            Decision::Pending => Err((
                "authorization_pending",
                "waiting for the person to approve".into(),
            )),
            Decision::Denied => {
                map.remove(key);
                Err(("access_denied", "the person denied this device".into()))
            }
            Decision::Approved(u) => {
                map.remove(key);
                Ok(u)
            }
        }
    }

    fn find_by_user_code(&self, user_code: &str) -> Option<(TokenHash, String)> {
        let map = self.lock();
        map.iter()
            .find(|(_, p)| p.user_code == user_code && p.created.elapsed() < DEVICE_CODE_TTL)
            .map(|(k, p)| (*k, p.label.clone()))
    }
}

/// Normalises what a person typed: upper case, no dashes or spaces.
pub fn normalize_user_code(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn new_user_code() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())]))
        .collect()
}

fn display_code(code: &str) -> String {
    format!("{}-{}", &code[..4], &code[4..])
}

/// `POST /device_authorization` (RFC 8628 §3.1).
pub async fn authorize(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if body.len() > super::MAX_FORM_BYTES {
        return super::token::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        );
    }
    let form = parse_form(&body);
    if field(&form, "client_id") != Some(AGENT_CLIENT_ID) {
        return super::token::error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the device grant is for mcp-agent only (client_id=mcp-agent)",
        );
    }
    let label: String = field(&form, "label")
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let device_code = Secret::generate();
    let user_code = new_user_code();
    {
        let mut map = app.device_grants.lock();
        if map.len() >= MAX_PENDING {
            map.retain(|_, p| p.created.elapsed() < DEVICE_CODE_TTL);
        }
        if map.len() >= MAX_PENDING {
            return super::token::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "slow_down",
                "too many device sign-ins in progress; try again in a few minutes",
            );
        }
        map.insert(
            device_code.hash(),
            PendingDevice {
                user_code: user_code.clone(),
                label,
                created: Instant::now(),
                last_poll: None,
                interval: INTERVAL,
                decision: Decision::Pending,
            },
        );
    }
    let uri = format!("{}/device", app.public_url);
    let mut r = axum::Json(json!({
        "device_code": device_code.expose(),
        "user_code": display_code(&user_code),
        "verification_uri": uri,
        "verification_uri_complete": format!("{uri}?user_code={}", display_code(&user_code)),
        "expires_in": DEVICE_CODE_TTL.as_secs(),
        "interval": INTERVAL.as_secs(),
    }))
    .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The `/token` branch for `grant_type=urn:ietf:params:oauth:grant-type:device_code`.
pub async fn token(app: &App, form: &[(String, String)]) -> Response {
    use super::token::error;
    if field(form, "client_id") != Some(AGENT_CLIENT_ID) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the device grant is for mcp-agent only",
        );
    }
    let Some(code) = field(form, "device_code") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "device_code is required",
        );
    };
    let key = TokenHash::of(code);
    let user = match app.device_grants.poll(&key, Instant::now()) {
        Ok(u) => u,
        Err((code, message)) => return error(StatusCode::BAD_REQUEST, code, &message),
    };
    match blocking(&app.store, move |s| {
        s.issue_enroll_token(user, ENROLL_TTL_SECS)
    })
    .await
    {
        Ok(t) => {
            let mut r = axum::Json(json!({
                "access_token": t.expose(),
                "token_type": "enroll",
                "expires_in": ENROLL_TTL_SECS,
                "enroll_token": t.expose(),
            }))
            .into_response();
            r.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "device grant: issuing the enrollment token failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not complete the request",
            )
        }
    }
}

/// `GET /device[?user_code=…]`: the approval page.
pub async fn show(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let code = field(&q, "user_code").unwrap_or("").to_owned();
    page(&app, &headers, &code, None, StatusCode::OK)
}

fn page(
    app: &App,
    headers: &HeaderMap,
    user_code: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = super::secret_cookie(headers, CSRF_COOKIE);
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    body.push_str(&format!(
        "<p>An <code>mcp-agent</code> asks to become one of your devices: it will be able to serve your tunnels through this relay. Only continue if you just ran <code>mcp-agent login</code> and the code below is the one it shows.</p>\
<p class=\"box\">Code: <strong>{code}</strong></p>",
        code = escape(user_code),
    ));
    let normalized = normalize_user_code(user_code);
    if let Some(oidc) = &app.oidc
        && !normalized.is_empty()
    {
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"/oidc/start?device_user_code={code}\">Sign in with {name} and approve</a></p>",
            code = escape(&normalized),
            name = escape(oidc.display_name()),
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/device\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"user_code\">Code shown by mcp-agent</label><input id=\"user_code\" name=\"user_code\" value=\"{code}\" autocomplete=\"off\" required>",
        csrf = escape(&csrf),
        code = escape(user_code),
    ));
    if app.config.password_login {
        body.push_str("<label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"allow\">Sign in and approve</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></div></form>");
    } else {
        body.push_str("<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></div></form>");
    }
    let mut r = pages::page(status, "Approve a device", &body);
    super::set_cookie(
        app,
        &mut r,
        CSRF_COOKIE,
        &csrf,
        "Path=/device; HttpOnly; SameSite=Strict",
    );
    r
}

/// `POST /device`: sign in and approve (or deny).
pub async fn submit(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match super::checked_form(
        &headers,
        &body,
        CSRF_COOKIE,
        "Open the link mcp-agent printed again.",
    ) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let typed = field(&form, "user_code").unwrap_or("").to_owned();
    let code = normalize_user_code(&typed);
    let email = field(&form, "email").unwrap_or("").to_owned();
    let password = field(&form, "password").unwrap_or("").to_owned();
    let addr = Some(peer.ip());
    // Wrong codes count against the address like wrong passwords do.
    if !app.login_limiter.allowed(&email, addr) {
        return pages::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many failed attempts for this account or from this address. Wait 15 minutes and try again.",
        );
    }
    let Some((key, _label)) = app.device_grants.find_by_user_code(&code) else {
        app.login_limiter.failed("", addr);
        return page(
            &app,
            &headers,
            &typed,
            Some(
                "That code is unknown or expired. Check the code mcp-agent shows, or run mcp-agent login again.",
            ),
            StatusCode::BAD_REQUEST,
        );
    };
    if field(&form, "decision") != Some("allow") {
        if let Some(p) = app.device_grants.lock().get_mut(&key) {
            p.decision = Decision::Denied;
        }
        return pages::page(
            StatusCode::OK,
            "Device denied",
            "<p>The device was not approved. You can close this page.</p>",
        );
    }
    let Some(user) = super::authorize::sign_in(&app, &email, &password).await else {
        app.login_limiter.failed(&email, addr);
        return page(
            &app,
            &headers,
            &typed,
            Some("Wrong email or password, or the account is disabled."),
            StatusCode::UNAUTHORIZED,
        );
    };
    app.login_limiter.succeeded(&email);
    approve_page(&app, &code, user)
}

/// Approves the pending device with `user_code` for `user`; the page to show.
pub fn approve_page(app: &App, user_code: &str, user: UserId) -> Response {
    let Some((key, _)) = app.device_grants.find_by_user_code(user_code) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Unknown code",
            "That code is unknown or expired. Run mcp-agent login again.",
        );
    };
    {
        let mut map = app.device_grants.lock();
        match map.get_mut(&key) {
            Some(p) if matches!(p.decision, Decision::Pending) => {
                p.decision = Decision::Approved(user);
            }
            _ => {
                return pages::error_page(
                    StatusCode::BAD_REQUEST,
                    "Already decided",
                    "This code was already approved or denied. Run mcp-agent login again if needed.",
                );
            }
        }
    }
    tracing::info!(user = user.0, "device authorization approved");
    pages::page(
        StatusCode::OK,
        "Device approved",
        "<p>Done: go back to your terminal; <code>mcp-agent</code> finishes signing in by itself. You can close this page.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(grants: &DeviceGrants, created: Instant, decision: Decision) -> TokenHash {
        let key = Secret::generate().hash();
        grants.lock().insert(
            key,
            PendingDevice {
                user_code: new_user_code(),
                label: String::new(),
                created,
                last_poll: None,
                interval: INTERVAL,
                decision,
            },
        );
        key
    }

    #[test]
    fn device_codes_expire_are_single_use_and_slow_down_fast_pollers() {
        let g = DeviceGrants::default();
        let t0 = Instant::now();
        // Expired.
        let k = pending(&g, t0, Decision::Approved(UserId(1)));
        assert_eq!(
            g.poll(&k, t0 + DEVICE_CODE_TTL).unwrap_err().0,
            "expired_token"
        );
        assert_eq!(
            g.poll(&k, t0).unwrap_err().0,
            "expired_token",
            "and forgotten"
        );
        // Pending, then too fast, then the interval has grown by 5 s.
        let k = pending(&g, t0, Decision::Pending);
        assert_eq!(g.poll(&k, t0).unwrap_err().0, "authorization_pending");
        assert_eq!(
            g.poll(&k, t0 + Duration::from_secs(1)).unwrap_err().0,
            "slow_down"
        );
        let later = t0 + Duration::from_secs(1) + INTERVAL;
        assert_eq!(g.poll(&k, later).unwrap_err().0, "slow_down", "10 s now");
        // Approved: once.
        let k = pending(&g, t0, Decision::Approved(UserId(7)));
        assert_eq!(g.poll(&k, t0), Ok(UserId(7)));
        assert_eq!(g.poll(&k, t0 + INTERVAL).unwrap_err().0, "expired_token");
        // Denied.
        let k = pending(&g, t0, Decision::Denied);
        assert_eq!(g.poll(&k, t0).unwrap_err().0, "access_denied");
    }

    #[test]
    fn user_codes_are_typable_and_normalised() {
        let c = new_user_code();
        assert_eq!(c.len(), 8);
        assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
        let shown = display_code(&c);
        assert_eq!(normalize_user_code(&shown.to_lowercase()), c);
        assert_eq!(normalize_user_code(" wdjb-mjht "), "WDJBMJHT");
    }
}
