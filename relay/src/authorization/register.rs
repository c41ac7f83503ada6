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
use crate::store::{ClientKind, ClientOwner, NewClient, Secret};

/// Largest registration request.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// Redirect URIs per client.
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// Registrations allowed per source address per hour.
pub const MAX_REGISTRATIONS_PER_HOUR: u64 = 30;

/// `POST /register`
pub async fn register(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_REGISTRATION_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_client_metadata",
            "the registration request is too large",
        );
    }
    let req: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                "the body must be a JSON object",
            );
        }
    };
    let redirect_uris: Vec<String> = match req.get("redirect_uris").and_then(|v| v.as_array()) {
        Some(a) if !a.is_empty() && a.len() <= MAX_REDIRECT_URIS => {
            let mut out = Vec::new();
            for v in a {
                let Some(s) = v.as_str() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_redirect_uri",
                        "redirect_uris must be strings",
                    );
                };
                if let Err(why) = check_redirect_uri(s) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_redirect_uri",
                        &format!("{s:?}: {why}"),
                    );
                }
                out.push(s.to_owned());
            }
            out
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                &format!("redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"),
            );
        }
    };
    let method = req
        .get("token_endpoint_auth_method")
        .and_then(|v| v.as_str())
        .unwrap_or("none");
    if method != "none" {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "only public clients (token_endpoint_auth_method=none, with PKCE) can register",
        );
    }
    for (key, allowed) in [
        ("grant_types", &["authorization_code", "refresh_token"][..]),
        ("response_types", &["code"][..]),
    ] {
        if let Some(list) = req.get(key).and_then(|v| v.as_array())
            && list
                .iter()
                .any(|g| !g.as_str().is_some_and(|g| allowed.contains(&g)))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("{key} may only contain {allowed:?}"),
            );
        }
    }
    let name: String = req
        .get("client_name")
        .and_then(|v| v.as_str())
        .unwrap_or("Unnamed MCP client")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
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
        metadata: req.clone(),
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
        axum::Json(serde_json::json!({
            "client_id": client_id,
            "client_id_issued_at": issued_at,
            "client_name": name,
            "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        })),
    )
        .into_response()
}

/// https anywhere; http only to a loopback host; never fragments or userinfo.
pub fn check_redirect_uri(s: &str) -> Result<(), &'static str> {
    if s.len() > MAX_REDIRECT_URI_LEN {
        return Err("too long");
    }
    let u = url::Url::parse(s).map_err(|_| "not an absolute URL")?;
    if u.fragment().is_some() {
        return Err("must not contain a fragment");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not contain user info");
    }
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" => match u.host() {
            Some(url::Host::Domain("localhost")) => Ok(()),
            Some(url::Host::Ipv4(a)) if a.is_loopback() => Ok(()),
            Some(url::Host::Ipv6(a)) if a.is_loopback() => Ok(()),
            _ => Err("http is only allowed for loopback redirect URIs"),
        },
        _ => Err("must be https (or http on a loopback host)"),
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "error_description": description})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1:5555/callback",
            "http://localhost/cb",
            "http://[::1]:9/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "http://evil.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://user:pw@app.example.com/cb",
            "data:text/html,hi",
            "file:///etc/passwd",
            "/relative",
            "http://127.0.0.1.evil.net/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
