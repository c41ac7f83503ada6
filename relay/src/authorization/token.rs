//! `POST /token`: authorization_code (with PKCE) and refresh_token grants for
//! public clients. Errors follow RFC 6749 §5.2.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{MAX_FORM_BYTES, REFRESH_TTL_SECS, blocking, field, parse_form, pkce, repeated};
use crate::app::App;
use crate::oauth::token::{AccessGrant, unix_now};
use crate::store::{
    ClientKind, CodeError, NewRefresh, RefreshError, Secret, TokenHash, User, UserId,
};

/// `POST /token`
pub async fn token(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is too large",
        );
    }
    let form = parse_form(&body);
    if let Some(k) = repeated(
        &form,
        &[
            "grant_type",
            "code",
            "code_verifier",
            "refresh_token",
            "client_id",
            "redirect_uri",
            "resource",
            "device_code",
        ],
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{k} appears more than once"),
        );
    }
    if field(&form, "grant_type") == Some("client_credentials") {
        return client_credentials(&app, &headers, &form).await;
    }
    if field(&form, "grant_type") == Some(super::device::DEVICE_GRANT) {
        return super::device::token(&app, &form).await;
    }
    let Some(client_id) = field(&form, "client_id").map(str::to_owned) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        );
    };
    let cid = client_id.clone();
    match blocking(&app.store, move |s| s.get_client(&cid)).await {
        Ok(Some(c)) if c.revoked_at.is_none() => {}
        Ok(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown or revoked client",
            );
        }
        Err(e) => return server_error(e),
    }
    match field(&form, "grant_type") {
        Some("authorization_code") => code_grant(&app, &form, client_id).await,
        Some("refresh_token") => refresh_grant(&app, &form, client_id).await,
        Some(_) => error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use authorization_code or refresh_token",
        ),
        None => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
    }
}

/// The `client_credentials` grant for service accounts (non-human clients):
/// client_secret_basic or client_secret_post, a `resource` naming one tunnel,
/// an access token only (no refresh token).
async fn client_credentials(app: &App, headers: &HeaderMap, form: &[(String, String)]) -> Response {
    let (id, secret) = match basic_credentials(headers) {
        Some(pair) => pair,
        None => match (field(form, "client_id"), field(form, "client_secret")) {
            (Some(i), Some(s)) => (i.to_owned(), s.to_owned()),
            _ => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "authenticate with HTTP Basic (client_secret_basic) or client_id + client_secret",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mcp-relay\""),
                );
                return r;
            }
        },
    };
    let (cid, sec) = (id.clone(), secret.clone());
    let client = blocking(&app.store, move |s| {
        if !s.verify_client_secret(&cid, &sec)? {
            return Ok(None);
        }
        s.get_client(&cid)
    })
    .await;
    let client = match client {
        Ok(Some(c)) if c.kind == ClientKind::ServiceAccount && c.revoked_at.is_none() => c,
        Ok(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown service account, wrong secret, or revoked",
            );
        }
        Err(e) => return server_error(e),
    };
    let Some(resource) = field(form, "resource") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource (the tunnel URL, RFC 8707) is required",
        );
    };
    if app.auth.tunnel_of_resource(resource).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource must be a tunnel URL of this relay: <relay>/t/<tunnel>/mcp (or https://<tunnel>.<relay host>/mcp with subdomain routing)",
        );
    }
    let groups = client
        .metadata
        .get("groups")
        .and_then(|g| g.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let grant = AccessGrant {
        sub: format!("sa-{}", client.client_id),
        email: None,
        groups,
        client_id: client.client_id.clone(),
        scope: crate::auth::MCP_SCOPE.to_owned(),
        resource: resource.to_owned(),
    };
    let cid = client.client_id.clone();
    let _ = blocking(&app.store, move |s| s.touch_client_last_used(&cid)).await;
    match app.auth.issue(&grant) {
        Ok((token, ttl)) => {
            let mut r = axum::Json(serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl,
                "scope": crate::auth::MCP_SCOPE,
            }))
            .into_response();
            no_store(&mut r);
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "issuing a service-account token failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not sign a token",
            )
        }
    }
}

/// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1,
/// both parts form-urlencoded).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

async fn code_grant(app: &App, form: &[(String, String)], client_id: String) -> Response {
    let (Some(code), Some(verifier)) = (field(form, "code"), field(form, "code_verifier")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and code_verifier are required",
        );
    };
    let hash = TokenHash::of(code);
    let record = match blocking(&app.store, move |s| Ok(s.take_code(&hash))).await {
        Ok(Ok(r)) => r,
        Ok(Err(CodeError::Reused { .. })) => {
            tracing::warn!(
                client_id,
                "authorization code reused; tokens issued from it were revoked"
            );
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code was already used; every token issued from it is revoked",
            );
        }
        Ok(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization code is unknown or expired",
            );
        }
        Err(e) => return server_error(e),
    };
    if record.client_id != client_id {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued to another client",
        );
    }
    if field(form, "redirect_uri").is_some_and(|r| r != record.redirect_uri) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri does not match the authorization request",
        );
    }
    if !pkce::verify(verifier, &record.code_challenge) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match the code_challenge (PKCE)",
        );
    }
    if field(form, "resource").is_some_and(|r| r != record.resource) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the authorization request",
        );
    }
    issue(
        app,
        record.user_id,
        client_id,
        record.resource,
        record.scope,
        Some(record.family),
        None,
    )
    .await
}

async fn refresh_grant(app: &App, form: &[(String, String)], client_id: String) -> Response {
    let Some(presented) = field(form, "refresh_token") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    let old = TokenHash::of(presented);
    let next = Secret::generate();
    let next_hash = next.hash();
    let cid = client_id.clone();
    let expires = unix_now() as i64 + REFRESH_TTL_SECS;
    let record = match blocking(&app.store, move |s| {
        Ok(s.rotate_refresh(&old, &cid, &next_hash, expires))
    })
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(RefreshError::Reused { .. })) => {
            tracing::warn!(
                client_id,
                "refresh token reused; its whole family was revoked"
            );
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was already used; every token of its family is revoked, sign in again",
            );
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                &format!("refresh token refused: {e}"),
            );
        }
        Err(e) => return server_error(e),
    };
    if field(form, "resource").is_some_and(|r| r != record.resource) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "a refresh token stays bound to its tunnel",
        );
    }
    issue(
        app,
        record.user_id,
        client_id,
        record.resource,
        record.scope,
        None,
        Some(next),
    )
    .await
}

/// Issues an access token (and, for a code grant, the first refresh token).
async fn issue(
    app: &App,
    user_id: UserId,
    client_id: String,
    resource: String,
    scope: String,
    new_family: Option<crate::store::FamilyId>,
    rotated: Option<Secret>,
) -> Response {
    let user: Option<User> = match blocking(&app.store, move |s| s.get_user(user_id)).await {
        Ok(u) => u,
        Err(e) => return server_error(e),
    };
    let Some(user) = user.filter(|u| !u.disabled) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the account is disabled",
        );
    };
    let refresh = match (new_family, rotated) {
        (_, Some(r)) => r,
        (Some(family), None) => {
            let r = Secret::generate();
            let new = NewRefresh {
                hash: r.hash(),
                family,
                client_id: client_id.clone(),
                user_id,
                resource: resource.clone(),
                scope: scope.clone(),
                expires_at: unix_now() as i64 + REFRESH_TTL_SECS,
            };
            if let Err(e) = blocking(&app.store, move |s| s.insert_refresh(&new)).await {
                return server_error(e);
            }
            r
        }
        (None, None) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "no refresh token",
            );
        }
    };
    let grant = AccessGrant {
        sub: crate::auth::user_subject(user.id),
        email: Some(user.email.as_str().to_owned()),
        groups: user.groups.clone(),
        client_id: client_id.clone(),
        scope: scope.clone(),
        resource,
    };
    let token = match app.auth.issue(&grant) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "issuing an access token failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the relay could not sign a token",
            );
        }
    };
    let cid = client_id.clone();
    let _ = blocking(&app.store, move |s| s.touch_client_last_used(&cid)).await;
    let mut r = axum::Json(serde_json::json!({
        "access_token": token.0,
        "token_type": "Bearer",
        "expires_in": token.1,
        "refresh_token": refresh.expose(),
        "scope": scope,
    }))
    .into_response();
    no_store(&mut r);
    r
}

pub(super) fn error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response();
    no_store(&mut r);
    r
}

fn server_error(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "token endpoint store error");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the relay could not complete the request",
    )
}

fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
