//! `/setup`: the one-time link from `mcp-relay users add` where a person
//! chooses a password.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{blocking, field, pages, parse_form, password};
use crate::app::App;
use crate::store::{PasswordHash, TokenHash};

const CSRF_COOKIE: &str = "mcp_relay_setup_csrf";

/// `GET /setup?token=…`
pub async fn show(
    State(app): State<Arc<App>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let form = parse_form(q.unwrap_or_default().as_bytes());
    let token = field(&form, "token").unwrap_or("").to_owned();
    let hash = TokenHash::of(&token);
    let user = blocking(&app.store, move |s| {
        let Some(id) = s.setup_token_user(&hash)? else {
            return Ok(None);
        };
        s.get_user(id)
    })
    .await
    .ok()
    .flatten();
    let Some(user) = user else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This set-up link is unknown, used or expired. Ask the relay admin for a new one (mcp-relay users reset-link EMAIL).",
        );
    };
    let csrf = super::secret_cookie(&headers, CSRF_COOKIE);
    with_cookie(
        &app,
        pages::set_password(&token, &csrf, user.email.as_str(), None),
        &csrf,
    )
}

/// `POST /setup`
pub async fn submit(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let form =
        match super::checked_form(&headers, &body, CSRF_COOKIE, "Open the set-up link again.") {
            Ok(f) => f,
            Err(r) => return *r,
        };
    let token = field(&form, "token").unwrap_or("").to_owned();
    let pw = field(&form, "password").unwrap_or("").to_owned();
    if let Err(why) = password::check_new(&pw) {
        let csrf = field(&form, "csrf").unwrap_or("").to_owned();
        return pages::set_password(
            &token,
            &csrf,
            "your account",
            Some(&format!("Password not accepted: {why}.")),
        );
    }
    let Ok(Ok(phc)) = tokio::task::spawn_blocking(move || password::hash(&pw)).await else {
        return pages::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "The password could not be stored; try again.",
        );
    };
    let hash = TokenHash::of(&token);
    let done = blocking(&app.store, move |s| {
        let Some(id) = s.consume_setup_token(&hash)? else {
            return Ok(false);
        };
        s.set_password_hash(id, &PasswordHash::parse(&phc)?)?;
        Ok(true)
    })
    .await;
    match done {
        Ok(true) => pages::page(
            StatusCode::OK,
            "Password set",
            "<p>Your password is set. You can close this page and sign in from your MCP client.</p>",
        ),
        Ok(false) => pages::error_page(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This set-up link is unknown, used or expired.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "storing a password failed");
            pages::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "The password could not be stored; try again.",
            )
        }
    }
}

fn with_cookie(app: &App, mut r: Response, csrf: &str) -> Response {
    super::set_cookie(
        app,
        &mut r,
        CSRF_COOKIE,
        csrf,
        "Path=/setup; HttpOnly; SameSite=Strict",
    );
    r
}
