//! The relay as an OAuth 2.1 authorization server for MCP clients.
//!
//! ```text
//! client ─GET /authorize?…&code_challenge&resource─► sign-in + consent page (CSRF, rate limits)
//!        ─POST /authorize (email, password, allow)──► 302 redirect_uri?code&state&iss
//!        ─POST /token (code, code_verifier)─────────► access token (JWT, aud = one tunnel)
//!                                                      + refresh token (rotated on every use)
//!        ─POST /token (refresh_token)───────────────► new pair; a reused one revokes its family
//! ```
//!
//! Metadata: RFC 8414 at `/.well-known/oauth-authorization-server` (and the
//! OIDC discovery alias). Accounts: `mcp-relay users add` prints a one-time
//! link to `/setup`, where the person chooses a password (argon2id).

pub mod authorize;
pub mod clients;
pub mod device;
pub mod limiter;
pub mod metadata;
pub mod oidc;
pub mod pages;
pub mod password;
pub mod pkce;
pub mod register;
pub mod revoke;
pub mod setup;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};

use crate::app::App;
use crate::store::{Store, StoreError};

/// Authorization codes live this long.
pub const CODE_TTL_SECS: i64 = 60;
/// Refresh tokens live this long (each use rotates them).
pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;
/// Largest form body accepted on these endpoints.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The authorization server's routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/authorize", get(authorize::show).post(authorize::submit))
        .route("/token", post(token::token))
        .route("/register", post(register::register))
        .route("/revoke", post(revoke::revoke))
        .route("/setup", get(setup::show).post(setup::submit))
        .route("/device_authorization", post(device::authorize))
        .route("/device", get(device::show).post(device::submit))
        .route("/oidc/start", get(oidc::start))
        .route("/oidc/callback", get(oidc::callback))
        .route("/oidc/consent", post(oidc::consent))
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata::authorization_server),
        )
}

/// Runs a store operation on the blocking pool (the store is synchronous SQLite).
pub async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Invalid {
            field: "task",
            reason: e.to_string(),
        })?
}

/// A posted form, size-checked and CSRF-checked (double-submit: the hidden
/// `csrf` field must equal the `cookie_name` cookie); `Err` is the page to show.
pub fn checked_form(
    headers: &HeaderMap,
    body: &[u8],
    cookie_name: &str,
    what_to_do: &str,
) -> Result<Vec<(String, String)>, Box<axum::response::Response>> {
    use axum::http::StatusCode;
    if body.len() > MAX_FORM_BYTES {
        return Err(Box::new(pages::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The form is larger than this relay accepts.",
        )));
    }
    let form = parse_form(body);
    let ok = match (field(&form, "csrf"), cookie(headers, cookie_name)) {
        (Some(f), Some(c)) if !f.is_empty() => {
            subtle::ConstantTimeEq::ct_eq(f.as_bytes(), c.as_bytes()).into()
        }
        _ => false,
    };
    if !ok {
        return Err(Box::new(pages::error_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            &format!("This form could not be verified (missing or wrong CSRF token). {what_to_do}"),
        )));
    }
    Ok(form)
}

/// Sets a cookie with `attributes`, adding `Secure` when the relay is on https.
pub fn set_cookie(
    app: &App,
    r: &mut axum::response::Response,
    name: &str,
    value: &str,
    attributes: &str,
) {
    let secure = if app.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&format!("{name}={value}; {attributes}{secure}"))
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The value of the relay-made cookie `name` (64 hex digits, like a
/// [`crate::store::Secret`]), or a fresh random one when it is missing or
/// malformed: CSRF tokens and the OIDC browser binding.
pub fn secret_cookie(headers: &HeaderMap, name: &str) -> String {
    cookie(headers, name)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| crate::store::Secret::generate().expose().to_owned())
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Parses an `application/x-www-form-urlencoded` body (bounded by the caller).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The first value of `key` in a parsed form or query.
pub fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Whether `key` occurs more than once (RFC 6749 §3.1: parameters must not repeat).
pub fn repeated(form: &[(String, String)], keys: &[&str]) -> Option<String> {
    keys.iter()
        .find(|k| form.iter().filter(|(f, _)| f == *k).count() > 1)
        .map(|k| (*k).to_owned())
}
