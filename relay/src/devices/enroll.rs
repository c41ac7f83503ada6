//! `POST /agent/enroll`: a one-time enrollment token and a CSR in, a device
//! certificate out. The token says who the device belongs to; the CSR's
//! self-signature proves the agent holds the key (which never leaves it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use crate::app::App;
use crate::authorization::blocking;
use crate::store::NewDevice;

/// Largest request body.
pub const MAX_BODY: usize = 32 * 1024;

/// The request body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time token from `mcp-relay enroll-tokens create`.
    pub enroll_token: String,
    /// The CSR, DER, base64url (no padding).
    pub csr: String,
    /// A name for the device (e.g. the host name).
    #[serde(default)]
    pub label: String,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// `POST /agent/enroll`
pub async fn enroll(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request is larger than {MAX_BODY} bytes"),
        );
    }
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let Ok(csr) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(req.csr.trim()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "csr must be DER, base64url without padding",
        );
    };
    let hash = crate::store::TokenHash::of(req.enroll_token.trim());
    let user = match blocking(&app.store, move |s| s.take_enroll_token(&hash)).await {
        Ok(Ok(u)) => u,
        Ok(Err(why)) => {
            tracing::warn!(reason = %why, "enrollment refused");
            return error(StatusCode::UNAUTHORIZED, "invalid_grant", why.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "enrollment: store failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not read its state",
            );
        }
    };
    let Ok(Some(account)) = blocking(&app.store, move |s| s.get_user(user)).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "the enrollment token's account no longer exists",
        );
    };
    let device_id = super::new_device_id();
    let issued = match app.device_ca().issue(
        &csr,
        &device_id,
        account.email.as_str(),
        app.config.limits.device_cert_ttl,
    ) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(user = %account.email, error = %e, "enrollment: CSR refused");
            return error(StatusCode::BAD_REQUEST, "invalid_csr", e.to_string());
        }
    };
    let new = NewDevice {
        id: device_id.clone(),
        user_id: user,
        label: req
            .label
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect(),
        key_sha256: issued.key_sha256.clone(),
        cert_expires_at: issued.not_after,
    };
    if let Err(e) = blocking(&app.store, move |s| s.insert_device(&new)).await {
        tracing::error!(error = %e, "enrollment: recording the device failed");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the relay could not record the device",
        );
    }
    tracing::info!(user = %account.email, device = %device_id, "device enrolled");
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "device_id": device_id,
            "user": account.email.as_str(),
            "certificate": issued.cert_pem,
            "ca": app.device_ca().cert_pem(),
            "expires_at": issued.not_after,
            "assertion_keys": app.auth.jwks(),
        })),
    )
        .into_response()
}

/// The request body of `POST /agent/logout`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// The device signing out.
    pub device_id: String,
    /// A CSR signed with the device key whose subject CN is
    /// `logout <device_id> <unix seconds>` (proof of possession, fresh).
    pub proof: String,
}

/// How old a logout proof may be.
pub const LOGOUT_PROOF_MAX_AGE_SECS: i64 = 300;

/// `POST /agent/logout`: the device revokes itself (`mcp-agent logout`).
pub async fn logout(State(app): State<Arc<App>>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request is larger than {MAX_BODY} bytes"),
        );
    }
    let req: LogoutRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let Ok(der) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(req.proof.trim()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "proof must be a CSR, DER, base64url without padding",
        );
    };
    let (cn, key) = match super::ca::proof_of_possession(&der) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::UNAUTHORIZED, "invalid_proof", e.to_string()),
    };
    let now = crate::oauth::token::unix_now() as i64;
    let fresh = cn
        .strip_prefix("logout ")
        .and_then(|r| r.split_once(' '))
        .filter(|(id, _)| *id == req.device_id)
        .and_then(|(_, t)| t.parse::<i64>().ok())
        .is_some_and(|t| (now - t).abs() <= LOGOUT_PROOF_MAX_AGE_SECS);
    if !fresh {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
            "the proof must name this device and be at most 5 minutes old",
        );
    }
    let id = req.device_id.clone();
    let device = match blocking(&app.store, move |s| s.get_device(&id)).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return error(StatusCode::NOT_FOUND, "unknown_device", "no such device");
        }
        Err(e) => {
            tracing::error!(error = %e, "logout: store failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not read its devices",
            );
        }
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        device.key_sha256.as_bytes(),
        key.as_bytes(),
    )) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_proof",
            "the proof is not signed with this device's key",
        );
    }
    let id = req.device_id.clone();
    if let Err(e) = blocking(&app.store, move |s| s.revoke_device(&id)).await {
        tracing::error!(error = %e, "logout: revoking failed");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the relay could not revoke the device",
        );
    }
    tracing::info!(device = %req.device_id, "device signed out (revoked itself)");
    (
        StatusCode::OK,
        axum::Json(json!({"device_id": req.device_id, "revoked": true})),
    )
        .into_response()
}
