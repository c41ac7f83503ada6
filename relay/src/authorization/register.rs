//! `POST /register`: RFC 7591 dynamic client registration for public clients
//! (PKCE, no secret). Redirect URIs must be https, or http on a loopback host
//! (native apps, RFC 8252). Registrations are rate-limited per address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::blocking;
use crate::app::App;
use crate::oauth::registration::{
    RegistrationLimits, registration_response, validate_registration,
};
use crate::store::{ClientKind, ClientOwner, NewClient, Secret};

/// Registrations allowed per source address per hour.
pub const MAX_REGISTRATIONS_PER_HOUR: u64 = 30;

/// `POST /register`
pub async fn register(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    // Issue 4 asks for https or loopback redirect URIs only: no private-use schemes.
    let limits = RegistrationLimits {
        allow_private_use_schemes: false,
        ..RegistrationLimits::default()
    };
    let reg = match validate_registration(&body, &limits) {
        Ok(r) => r,
        Err(e) => return (e.status(), axum::Json(e.to_json())).into_response(),
    };
    let name = reg.client_name().unwrap_or("Unnamed MCP client").to_owned();
    let redirect_uris = reg.redirect_uris().to_vec();
    let ip = peer.ip();
    let since = crate::oauth::token::unix_now() as i64 - 3600;
    match blocking(&app.store, move |s| s.count_registrations_since(ip, since)).await {
        Ok(n) if n >= MAX_REGISTRATIONS_PER_HOUR => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_client_metadata",
                "too many registrations from this address; try again later",
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "counting registrations failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not register the client",
            );
        }
    }
    let client_id = format!("mcpc_{}", Secret::generate().expose());
    let issued_at = crate::oauth::token::unix_now();
    let new = NewClient {
        client_id: client_id.clone(),
        kind: ClientKind::Dynamic,
        name: name.clone(),
        redirect_uris: redirect_uris.clone(),
        secret_hash: None,
        owner: ClientOwner::SelfRegistered,
        metadata: reg.metadata(),
        registered_from: Some(ip),
        expires_at: None,
    };
    if let Err(e) = blocking(&app.store, move |s| s.insert_client(&new)).await {
        tracing::warn!(error = %e, "client registration refused by the store");
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &e.to_string(),
        );
    }
    tracing::info!(client_id, name, "client registered");
    (
        StatusCode::CREATED,
        axum::Json(registration_response(&client_id, issued_at, &reg)),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}
