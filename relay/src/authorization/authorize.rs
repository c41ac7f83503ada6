//! `/authorize`: validate the request, show sign-in + consent, issue a code.
//!
//! Until the client and its `redirect_uri` are known good, errors are shown
//! on a page; after that they go back to the client as `error=…` (RFC 6749
//! §4.1.2.1), always with `state` and `iss` (RFC 9207).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mcp_tunnel_proto::TunnelName;

use super::pages::{self, Consent};
use super::{CODE_TTL_SECS, blocking, field, parse_form, password, pkce, repeated};
use crate::app::App;
use crate::store::{Email, NewCode, Secret, UserId};

/// Name of the double-submit CSRF cookie.
const CSRF_COOKIE: &str = "mcp_relay_csrf";

/// The validated parts of an authorization request.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) client_id: String,
    pub(super) client_name: String,
    pub(super) redirect_uri: url::Url,
    pub(super) state: Option<String>,
    pub(super) challenge: String,
    pub(super) resource: String,
    pub(super) tunnel: TunnelName,
    pub(super) scope: String,
    /// The request's own parameters, to carry through forms and sign-ins.
    pub(super) raw: Vec<(String, String)>,
}

/// Why an authorization request failed.
pub(super) enum Failure {
    /// Shown on a page: the redirect URI cannot be trusted yet.
    Page(StatusCode, &'static str, String),
    /// Sent back to the client.
    Redirect(url::Url, Option<String>, &'static str, String),
}

/// `GET /authorize`
pub async fn show(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let form = parse_form(query.unwrap_or_default().as_bytes());
    match validate(&app, form).await {
        Ok(req) => render(&app, &req, &headers, None),
        Err(f) => fail(&app, f),
    }
}

/// `POST /authorize` (the consent form).
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
        "Go back to the application and start signing in again.",
    ) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let decision = field(&form, "decision").unwrap_or("").to_owned();
    let email_raw = field(&form, "email").unwrap_or("").to_owned();
    let password_raw = field(&form, "password").unwrap_or("").to_owned();
    let req = match validate(&app, form).await {
        Ok(r) => r,
        Err(f) => return fail(&app, f),
    };
    if decision != "allow" || !app.config.password_login {
        return fail(
            &app,
            Failure::Redirect(
                req.redirect_uri,
                req.state,
                "access_denied",
                "the user denied access".into(),
            ),
        );
    }
    let addr = Some(peer.ip());
    if !app.login_limiter.allowed(&email_raw, addr) {
        return pages::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many failed sign-ins for this account or from this address. Wait 15 minutes and try again.",
        );
    }
    let user = match sign_in(&app, &email_raw, &password_raw).await {
        Some(u) => u,
        None => {
            app.login_limiter.failed(&email_raw, addr);
            return render(
                &app,
                &req,
                &headers,
                Some("Wrong email or password, or the account is disabled."),
            );
        }
    };
    app.login_limiter.succeeded(&email_raw);
    grant(&app, req, user).await
}

/// Issues a code for `user` and sends the browser back to the client.
pub(super) async fn grant(app: &App, req: Request, user: UserId) -> Response {
    let code = Secret::generate();
    let new = NewCode {
        hash: code.hash(),
        client_id: req.client_id.clone(),
        user_id: user,
        redirect_uri: req.redirect_uri.to_string(),
        code_challenge: req.challenge.clone(),
        resource: req.resource.clone(),
        scope: req.scope.clone(),
        expires_at: now() + CODE_TTL_SECS,
    };
    if let Err(e) = blocking(&app.store, move |s| s.insert_code(&new)).await {
        tracing::error!(error = %e, "storing an authorization code failed");
        return fail(
            app,
            Failure::Redirect(
                req.redirect_uri,
                req.state,
                "server_error",
                "the relay could not store the authorization".into(),
            ),
        );
    }
    tracing::info!(client_id = %req.client_id, tunnel = %req.tunnel, user = user.0, "authorization granted");
    let mut target = req.redirect_uri;
    {
        let mut q = target.query_pairs_mut();
        q.append_pair("code", code.expose());
        if let Some(s) = &req.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", app.auth.issuer());
    }
    Redirect::to(target.as_str()).into_response()
}

/// Checks the email and password; `None` for any failure (no detail leaks).
pub(super) async fn sign_in(app: &App, email: &str, password_text: &str) -> Option<UserId> {
    let email = Email::parse(email).ok()?;
    let user = blocking(&app.store, move |s| s.get_user_by_email(&email))
        .await
        .ok()
        .flatten();
    let pw = password_text.to_owned();
    let (found, phc) = match &user {
        Some(u) if !u.disabled => match &u.password_hash {
            Some(h) => (true, h.as_str().to_owned()),
            None => (false, dummy_hash().to_owned()),
        },
        // Hash anyway so a missing account takes as long as a wrong password.
        _ => (false, dummy_hash().to_owned()),
    };
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &phc))
        .await
        .unwrap_or(false);
    (found && ok).then(|| user.map(|u| u.id)).flatten()
}

/// A real argon2id hash of a random password, verified against when there
/// is no account, so a missing account costs as much time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash(Secret::generate().expose()).unwrap_or_default())
}

/// Checks an authorization request (from the query, a form, or a sign-in in flight).
pub(super) async fn validate(app: &App, form: Vec<(String, String)>) -> Result<Request, Failure> {
    const ONCE: &[&str] = &[
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "scope",
    ];
    if let Some(k) = repeated(&form, ONCE) {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            format!("the parameter {k} appears more than once"),
        ));
    }
    let client_id = field(&form, "client_id").unwrap_or("").to_owned();
    if client_id.is_empty() {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "client_id is missing".into(),
        ));
    }
    let client = match super::clients::resolve(app, &client_id).await {
        Ok(c) => c,
        Err(why) => {
            return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                format!("the application's metadata document could not be used: {why}"),
            ));
        }
    };
    let Some(client) = client
        .filter(|c| c.revoked_at.is_none() && c.kind != crate::store::ClientKind::ServiceAccount)
    else {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            format!(
                "the application {client_id:?} is not registered with this relay (or was revoked)"
            ),
        ));
    };
    let presented = field(&form, "redirect_uri").unwrap_or("");
    let redirect =
        match presented {
            "" if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            "" => {
                return Err(Failure::Page(
                    StatusCode::BAD_REQUEST,
                    "Invalid request",
                    "redirect_uri is missing".into(),
                ));
            }
            // Exact match, but a loopback redirect may use any port (RFC 8252 §7.3).
            p if crate::oauth::registration::redirect_uri_matches(&client.redirect_uris, p) => {
                p.to_owned()
            }
            _ => return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "Invalid redirect",
                "the redirect_uri is not one this application registered; nothing was sent to it"
                    .into(),
            )),
        };
    let Ok(redirect_uri) = url::Url::parse(&redirect) else {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "the registered redirect_uri does not parse".into(),
        ));
    };
    let state = field(&form, "state").map(str::to_owned);
    let back = |code: &'static str, msg: &str| {
        Failure::Redirect(redirect_uri.clone(), state.clone(), code, msg.to_owned())
    };
    if field(&form, "response_type") != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "only response_type=code is supported",
        ));
    }
    let challenge = field(&form, "code_challenge").unwrap_or("").to_owned();
    if field(&form, "code_challenge_method") != Some("S256") || !pkce::valid_challenge(&challenge) {
        return Err(back(
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        ));
    }
    let Some(resource) = field(&form, "resource").map(str::to_owned) else {
        return Err(back(
            "invalid_target",
            "the resource parameter (RFC 8707) naming one tunnel URL is required",
        ));
    };
    let Some(tunnel) = app.auth.tunnel_of_resource(&resource) else {
        return Err(back(
            "invalid_target",
            "resource must be a tunnel URL of this relay: <relay>/t/<tunnel>/mcp (or https://<tunnel>.<relay host>/mcp with subdomain routing)",
        ));
    };
    let scope = field(&form, "scope")
        .unwrap_or(crate::auth::MCP_SCOPE)
        .to_owned();
    if scope
        .split(' ')
        .any(|s| !s.is_empty() && s != crate::auth::MCP_SCOPE)
    {
        return Err(back("invalid_scope", "the only scope is \"mcp\""));
    }
    let keep: Vec<(String, String)> = form
        .into_iter()
        .filter(|(k, _)| ONCE.contains(&k.as_str()))
        .collect();
    Ok(Request {
        client_name: client.name.clone(),
        client_id,
        redirect_uri,
        state,
        challenge,
        resource,
        tunnel,
        scope: crate::auth::MCP_SCOPE.to_owned(),
        raw: keep,
    })
}

/// `https://relay/t/shop/mcp` → `shop`, only for this relay's canonical URLs.
pub fn tunnel_of(public_url: &str, resource: &str) -> Option<TunnelName> {
    let rest = resource.strip_prefix(public_url)?.strip_prefix("/t/")?;
    let name = rest.strip_suffix("/mcp")?;
    TunnelName::parse(name).ok()
}

fn render(app: &App, req: &Request, headers: &HeaderMap, error: Option<&str>) -> Response {
    let csrf = super::secret_cookie(headers, CSRF_COOKIE);
    let hidden: Vec<(&str, &str)> = req
        .raw
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let host = req.redirect_uri.host_str().unwrap_or("").to_owned();
    let origin = req.redirect_uri.origin().ascii_serialization();
    let oidc_href = app.oidc.as_ref().map(|o| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(req.raw.iter())
            .finish();
        (o.display_name().to_owned(), format!("/oidc/start?{q}"))
    });
    let mut r = pages::consent(&Consent {
        client_name: &req.client_name,
        client_id: &req.client_id,
        redirect_host: &host,
        redirect_origin: &origin,
        tunnel: req.tunnel.as_str(),
        hidden: &hidden,
        csrf: &csrf,
        error,
        password_login: app.config.password_login,
        oidc: oidc_href.as_ref().map(|(n, h)| (n.as_str(), h.as_str())),
    });
    super::set_cookie(
        app,
        &mut r,
        CSRF_COOKIE,
        &csrf,
        "Path=/authorize; HttpOnly; SameSite=Strict",
    );
    if error.is_some() {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r
}

/// The consent page for a person who signed in at the OIDC provider.
pub(super) fn render_signed_in(
    req: &Request,
    email: &str,
    provider: &str,
    ticket: &str,
) -> Response {
    let host = req.redirect_uri.host_str().unwrap_or("").to_owned();
    let origin = req.redirect_uri.origin().ascii_serialization();
    pages::consent_signed_in(&pages::SignedInConsent {
        client_name: &req.client_name,
        client_id: &req.client_id,
        redirect_host: &host,
        redirect_origin: &origin,
        tunnel: req.tunnel.as_str(),
        email,
        provider,
        ticket,
    })
}

/// Shows the failure, or sends it back to the client.
pub(super) fn fail(app: &App, f: Failure) -> Response {
    match f {
        Failure::Page(status, title, message) => pages::error_page(status, title, &message),
        Failure::Redirect(mut uri, state, code, message) => {
            {
                let mut q = uri.query_pairs_mut();
                q.append_pair("error", code);
                q.append_pair("error_description", &message);
                if let Some(s) = &state {
                    q.append_pair("state", s);
                }
                q.append_pair("iss", app.auth.issuer());
            }
            Redirect::to(uri.as_str()).into_response()
        }
    }
}

fn now() -> i64 {
    crate::oauth::token::unix_now() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_must_name_one_tunnel_of_this_relay() {
        let base = "https://relay.example.com";
        assert_eq!(
            tunnel_of(base, "https://relay.example.com/t/shop/mcp")
                .unwrap()
                .as_str(),
            "shop"
        );
        for bad in [
            "https://relay.example.com/t/shop",
            "https://relay.example.com/t/shop/mcp/x",
            "https://evil.example.com/t/shop/mcp",
            "https://relay.example.com.evil.net/t/shop/mcp",
            "https://relay.example.com/t/Bad Name/mcp",
            "https://relay.example.com/t//mcp",
        ] {
            assert!(tunnel_of(base, bad).is_none(), "{bad}");
        }
    }
}
