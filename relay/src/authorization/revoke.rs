//! `POST /revoke` (RFC 7009): refresh tokens are revoked in the store;
//! access tokens (JWTs) by their `jti` until they expire. The answer is 200
//! whether or not the token was known, as the RFC asks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{MAX_FORM_BYTES, blocking, field, parse_form};
use crate::app::App;
use crate::store::TokenHash;

/// `POST /revoke`
pub async fn revoke(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        );
    }
    let form = parse_form(&body);
    let (Some(token), Some(client_id)) = (field(&form, "token"), field(&form, "client_id")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token and client_id are required",
        );
    };
    if let Some(claims) = app.auth.inspect(token) {
        if claims.client_id != client_id {
            // RFC 7009 §2.1: a client may only revoke its own tokens; say nothing more.
            return StatusCode::OK.into_response();
        }
        let (jti, exp) = (claims.jti.clone(), claims.exp);
        app.auth.revoke_jti(&jti, exp);
        let stored = blocking(&app.store, move |s| s.revoke_jti(&jti, exp as i64)).await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "persisting a revoked access token failed");
        }
        return StatusCode::OK.into_response();
    }
    let hash = TokenHash::of(token);
    let cid = client_id.to_owned();
    if let Err(e) = blocking(&app.store, move |s| s.revoke_refresh_token(&hash, &cid)).await {
        tracing::error!(error = %e, "revoking a refresh token failed");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again",
        );
    }
    StatusCode::OK.into_response()
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}
