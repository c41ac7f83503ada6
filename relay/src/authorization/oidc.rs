//! Sign-in through an upstream OpenID Connect provider.
//!
//! ```text
//! consent page ─"Sign in with P"─► GET /oidc/start?<authorization request>
//!    validate the request; remember it with a PKCE verifier, a nonce and the
//!    browser's binding cookie under a random `state`
//!  ─302─► provider /authorize (code, S256, nonce, state)
//!  ─302─► GET /oidc/callback?code&state[&iss]
//!    take the pending sign-in (single use, same browser), exchange the code,
//!    validate the ID token (signature, alg allow-list, iss, aud, exp, nonce,
//!    at_hash), read email / name / groups (userinfo when the ID token lacks
//!    them), admit the person (existing account, allowed domain, or anyone)
//!  ─200─► consent page "signed in as …" with a one-time ticket
//!  ─POST /oidc/consent (ticket, allow|deny)─► client redirect_uri?code&state&iss
//! ```
//!
//! `openidconnect` does discovery, the code exchange and every ID-token check;
//! this module plugs in the relay's HTTP client (no redirects, timeouts, size
//! cap) and keeps the in-flight sign-ins (bounded, expiring, in memory: a
//! restart only makes a half-finished sign-in start again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret,
    CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};

use super::authorize::{self, Failure};
use super::{blocking, cookie, field, parse_form};
use crate::app::App;
use crate::config::OidcSettings;
use crate::oauth::cimd::error_chain;
use crate::store::{Email, MAX_DISPLAY_NAME_LEN, MAX_GROUP_LEN, MAX_GROUPS_PER_USER, NewUser};
use crate::store::{Secret, UserId};

/// A sign-in started at the provider must come back within this long.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// A signed-in person must answer the consent page within this long.
pub const TICKET_TTL: Duration = Duration::from_secs(10 * 60);
/// At most this many sign-ins (and, separately, consent pages) in flight.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Each request to the provider must finish within this long.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted from the provider.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Discovery (and the provider's keys) are fetched again after this long.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The browser-binding cookie (scoped to `/oidc`).
const BROWSER_COOKIE: &str = "mcp_relay_oidc";

/// Claims outside the standard set (for the configurable groups claim).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExtraClaims(serde_json::Map<String, serde_json::Value>);
impl AdditionalClaims for ExtraClaims {}

type IdpTokenResponse = StandardTokenResponse<
    IdTokenFields<
        ExtraClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type IdpClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    IdpTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Signature algorithms accepted on ID tokens (asymmetric only).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// An HTTP failure talking to the provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// A sign-in sent to the provider, waiting for the callback.
struct Pending {
    params: Vec<(String, String)>,
    /// Set when the sign-in approves an `mcp-agent login` (its user code)
    /// rather than an OAuth authorization request.
    device: Option<String>,
    verifier: String,
    nonce: String,
    browser: String,
    created: Instant,
}

/// A person signed in at the provider, waiting for their consent.
struct Ticket {
    params: Vec<(String, String)>,
    user: UserId,
    browser: String,
    created: Instant,
}

/// The OIDC sign-in state: settings, HTTP client, discovered provider, in-flight sign-ins.
pub struct Oidc {
    settings: OidcSettings,
    redirect: RedirectUrl,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<(Arc<IdpClient>, Instant)>>,
    pending: Mutex<HashMap<String, Pending>>,
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Sets up the client; nothing is fetched until the first sign-in.
    pub fn new(settings: OidcSettings, public_url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let redirect = RedirectUrl::new(format!("{public_url}/oidc/callback"))
            .context("building the OIDC redirect URI from the public URL")?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            .user_agent(concat!("mcp-relay/", env!("CARGO_PKG_VERSION")))
            .referer(false);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing oidc.ca_file {}", ca.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .context("building the HTTP client for the OIDC provider")?;
        Ok(Self {
            settings,
            redirect,
            http,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's name for the sign-in button.
    pub fn display_name(&self) -> &str {
        &self.settings.display_name
    }

    /// The discovered provider (cached for [`DISCOVERY_TTL`]; `fresh` refetches).
    async fn provider(&self, fresh: bool) -> Result<Arc<IdpClient>, String> {
        let mut slot = self.provider.lock().await;
        if let Some((client, at)) = slot.as_ref()
            && !fresh
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(client.clone());
        }
        let issuer = IssuerUrl::new(
            self.settings
                .issuer
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        )
        .map_err(|e| format!("the issuer URL is not valid: {e}"))?;
        let http = self.http.clone();
        let call = move |r| send(http.clone(), r);
        let meta = CoreProviderMetadata::discover_async(issuer, &call)
            .await
            .map_err(|e| {
                format!(
                    "discovery at {} failed: {}",
                    self.settings.issuer,
                    error_chain(&e)
                )
            })?;
        let client = IdpClient::from_provider_metadata(
            meta,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone());
        let client = Arc::new(client);
        *slot = Some((client.clone(), Instant::now()));
        tracing::info!(issuer = %self.settings.issuer, "OIDC provider discovered");
        Ok(client)
    }

    fn remember_pending(&self, state: String, p: Pending) -> Result<(), ()> {
        remember(&self.pending, state, p, PENDING_TTL, |p| p.created)
    }

    fn remember_ticket(&self, id: String, t: Ticket) -> Result<(), ()> {
        remember(&self.tickets, id, t, TICKET_TTL, |t| t.created)
    }

    fn take_pending(&self, state: &str) -> Option<Pending> {
        take(&self.pending, state, PENDING_TTL, |p| p.created)
    }

    fn take_ticket(&self, id: &str) -> Option<Ticket> {
        take(&self.tickets, id, TICKET_TTL, |t| t.created)
    }
}

fn remember<T>(
    map: &Mutex<HashMap<String, T>>,
    key: String,
    value: T,
    ttl: Duration,
    created: impl Fn(&T) -> Instant,
) -> Result<(), ()> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= MAX_IN_FLIGHT {
        m.retain(|_, v| created(v).elapsed() < ttl);
    }
    if m.len() >= MAX_IN_FLIGHT {
        return Err(());
    }
    m.insert(key, value);
    Ok(())
}

fn take<T>(
    map: &Mutex<HashMap<String, T>>,
    key: &str,
    ttl: Duration,
    created: impl Fn(&T) -> Instant,
) -> Option<T> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    m.remove(key).filter(|v| created(v).elapsed() < ttl)
}

/// One request to the provider through the relay's client.
async fn send(
    http: reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let mut out = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(error_chain(&e)))?;
    let status = out.status();
    let headers = out.headers().clone();
    if out
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(HttpError(format!(
            "the provider's response is larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = out.chunk().await.map_err(|e| HttpError(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError(format!(
                "the provider's response is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// `GET /oidc/start?<the authorization request>`: off to the provider.
pub async fn start(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(oidc) = app.oidc.as_ref() else {
        return not_configured();
    };
    let form = parse_form(query.unwrap_or_default().as_bytes());
    let (params, device) = match field(&form, "device_user_code") {
        Some(code) => {
            let code = super::device::normalize_user_code(code);
            if !app.device_grants.is_pending(&code) {
                return super::pages::error_page(
                    StatusCode::BAD_REQUEST,
                    "Unknown code",
                    "That code is unknown, expired or already decided. Run mcp-agent login again.",
                );
            }
            (Vec::new(), Some(code))
        }
        None => match authorize::validate(&app, form).await {
            Ok(r) => (r.raw, None),
            Err(f) => return authorize::fail(&app, f),
        },
    };
    let provider = match oidc.provider(false).await {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(error = %why, "OIDC provider unavailable");
            return super::pages::error_page(
                StatusCode::BAD_GATEWAY,
                "Sign-in provider unavailable",
                &format!(
                    "The relay could not reach {}: {why}. Try again in a minute; if it persists, tell the relay's admin.",
                    oidc.display_name()
                ),
            );
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state = Secret::generate().expose().to_owned();
    let nonce = Secret::generate().expose().to_owned();
    let (url, _, _) = {
        let s = state.clone();
        let n = nonce.clone();
        provider
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(s),
                move || Nonce::new(n),
            )
            .add_scopes(oidc.settings.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url()
    };
    let browser = browser_id(&headers);
    let pending = Pending {
        params,
        device,
        verifier: verifier.secret().clone(),
        nonce,
        browser: browser.clone(),
        created: Instant::now(),
    };
    if oidc.remember_pending(state, pending).is_err() {
        return busy();
    }
    let mut r = Redirect::to(url.as_str()).into_response();
    set_browser_cookie(&app, &mut r, &browser);
    r
}

/// `GET /oidc/callback?code&state`: the provider sends the person back.
pub async fn callback(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(oidc) = app.oidc.as_ref() else {
        return not_configured();
    };
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let Some(pending) = field(&q, "state").and_then(|s| oidc.take_pending(s)) else {
        return super::pages::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in is unknown, expired or was already used. Go back to the application and start signing in again.",
        );
    };
    if !same_browser(&headers, &pending.browser) {
        return wrong_browser();
    }
    if let Some(user_code) = pending.device.clone() {
        return device_callback(&app, oidc, &q, &pending, &user_code).await;
    }
    let req = match authorize::validate(&app, pending.params.clone()).await {
        Ok(r) => r,
        Err(f) => return authorize::fail(&app, f),
    };
    let user = match signed_in_user(&app, oidc, &q, &pending).await {
        Ok(u) => u,
        Err(CallbackError::Page(r)) => return r,
        Err(CallbackError::ProviderRefused(err)) => {
            return authorize::fail(
                &app,
                Failure::Redirect(
                    req.redirect_uri,
                    req.state,
                    "access_denied",
                    format!("the sign-in provider refused: {err}"),
                ),
            );
        }
    };
    tracing::info!(user = user.id.0, email = %user.email, "signed in through OIDC");
    let ticket = Secret::generate().expose().to_owned();
    let t = Ticket {
        params: pending.params,
        user: user.id,
        browser: pending.browser,
        created: Instant::now(),
    };
    if oidc.remember_ticket(ticket.clone(), t).is_err() {
        return busy();
    }
    authorize::render_signed_in(&req, user.email.as_str(), oidc.display_name(), &ticket)
}

/// The callback of a sign-in that approves an `mcp-agent login`.
async fn device_callback(
    app: &App,
    oidc: &Oidc,
    q: &[(String, String)],
    pending: &Pending,
    user_code: &str,
) -> Response {
    match signed_in_user(app, oidc, q, pending).await {
        Ok(user) => super::device::approve_page(app, user_code, user.id),
        Err(CallbackError::Page(r)) => r,
        Err(CallbackError::ProviderRefused(err)) => super::pages::error_page(
            StatusCode::BAD_GATEWAY,
            "Sign-in failed",
            &format!("The sign-in provider refused ({err}); the device was not approved."),
        ),
    }
}

/// Why a callback did not yield a signed-in user.
enum CallbackError {
    /// The provider answered `error=…` (the caller tells whoever asked).
    ProviderRefused(String),
    /// Show this page.
    Page(Response),
}

/// The checks every callback makes, in order: the provider's own error, an
/// authorization code, the RFC 9207 issuer, the code exchange and ID token
/// ([`identify`]), then admission ([`admit`]).
async fn signed_in_user(
    app: &App,
    oidc: &Oidc,
    q: &[(String, String)],
    pending: &Pending,
) -> Result<crate::store::User, CallbackError> {
    if let Some(err) = field(q, "error") {
        let desc = field(q, "error_description").unwrap_or("");
        tracing::info!(
            error = err,
            description = desc,
            "the OIDC provider refused the sign-in"
        );
        return Err(CallbackError::ProviderRefused(err.to_owned()));
    }
    let Some(code) = field(q, "code").filter(|c| !c.is_empty()) else {
        return Err(CallbackError::Page(super::pages::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The sign-in provider sent no authorization code. Start signing in again.",
        )));
    };
    // RFC 9207: when the provider names itself, it must be the one we asked.
    if let Some(iss) = field(q, "iss")
        && iss.trim_end_matches('/') != oidc.settings.issuer.as_str().trim_end_matches('/')
    {
        tracing::warn!(
            iss,
            "OIDC callback from an unexpected issuer (mix-up attempt?)"
        );
        return Err(CallbackError::Page(super::pages::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The answer came from a different sign-in provider than the one this relay uses. Start signing in again.",
        )));
    }
    let person = identify(oidc, code, pending).await.map_err(|why| {
        tracing::warn!(error = %why, "OIDC sign-in failed");
        CallbackError::Page(super::pages::error_page(
            StatusCode::BAD_GATEWAY,
            "Sign-in failed",
            &format!(
                "The sign-in at {} could not be completed: {why}. Start signing in again.",
                oidc.display_name()
            ),
        ))
    })?;
    admit(app, oidc, person).await.map_err(|why| {
        CallbackError::Page(super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &why,
        ))
    })
}

/// `POST /oidc/consent` (ticket, decision): the signed-in person decides.
///
/// The one-time ticket is the synchronizer token: it is only in the page the
/// relay showed, and the browser cookie (SameSite=Lax, so not sent on a
/// cross-site POST) must match the browser that signed in.
pub async fn consent(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(oidc) = app.oidc.as_ref() else {
        return not_configured();
    };
    if body.len() > super::MAX_FORM_BYTES {
        return super::pages::error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The form is larger than this relay accepts.",
        );
    }
    let form = parse_form(&body);
    let Some(ticket) = field(&form, "ticket").and_then(|t| oidc.take_ticket(t)) else {
        return super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Form expired",
            "This consent form is unknown, expired or was already used. Go back to the application and start signing in again.",
        );
    };
    if !same_browser(&headers, &ticket.browser) {
        return wrong_browser();
    }
    let req = match authorize::validate(&app, ticket.params).await {
        Ok(r) => r,
        Err(f) => return authorize::fail(&app, f),
    };
    if field(&form, "decision") != Some("allow") {
        return authorize::fail(
            &app,
            Failure::Redirect(
                req.redirect_uri,
                req.state,
                "access_denied",
                "the user denied access".into(),
            ),
        );
    }
    let id = ticket.user;
    let still_ok = blocking(&app.store, move |s| s.get_user(id))
        .await
        .ok()
        .flatten()
        .is_some_and(|u| !u.disabled);
    if !still_ok {
        return super::pages::error_page(
            StatusCode::FORBIDDEN,
            "Account disabled",
            "This account was disabled. Ask the relay's admin.",
        );
    }
    authorize::grant(&app, req, ticket.user).await
}

/// What the provider says about the person.
#[derive(Debug)]
struct Person {
    email: String,
    email_verified: Option<bool>,
    name: String,
    groups: Option<Vec<String>>,
}

/// Exchanges the code and reads the validated claims.
async fn identify(oidc: &Oidc, code: &str, pending: &Pending) -> Result<Person, String> {
    let http = oidc.http.clone();
    let call = move |r| send(http.clone(), r);
    let mut provider = oidc.provider(false).await?;
    let response = provider
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| format!("the provider has no token endpoint: {e}"))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&call)
        .await
        .map_err(|e| format!("the code exchange failed: {}", error_chain(&e)))?;
    let id_token = response
        .id_token()
        .ok_or("the provider returned no ID token (is the openid scope allowed?)")?;
    let nonce = Nonce::new(pending.nonce.clone());
    let claims = {
        let verify = |p: &IdpClient| {
            let v = p.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
            id_token
                .claims(&v, &nonce)
                .cloned()
                .map_err(|e| e.to_string())
        };
        match verify(&provider) {
            Ok(c) => c,
            Err(first) => {
                // The provider may have rotated its keys since discovery.
                provider = oidc.provider(true).await?;
                verify(&provider)
                    .map_err(|e| format!("the ID token is not valid: {e} (first try: {first})"))?
            }
        }
    };
    if let Some(expected) = claims.access_token_hash() {
        let v = provider.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
        let alg = id_token.signing_alg().map_err(|e| e.to_string())?;
        let key = id_token.signing_key(&v).map_err(|e| e.to_string())?;
        let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
            .map_err(|e| e.to_string())?;
        if &actual != expected {
            return Err("the ID token's at_hash does not match the access token".into());
        }
    }
    let groups_claim = &oidc.settings.groups_claim;
    let mut person = Person {
        email: claims
            .email()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        email_verified: claims.email_verified(),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        groups: claims
            .additional_claims()
            .0
            .get(groups_claim)
            .map(groups_of),
    };
    let need_more = person.email.is_empty() || person.groups.is_none();
    if need_more
        && let Ok(req) = provider.user_info(
            response.access_token().clone(),
            Some(claims.subject().clone()),
        )
    {
        match req
            .request_async::<ExtraClaims, _, CoreGenderClaim>(&call)
            .await
        {
            Ok(info) => {
                if person.email.is_empty()
                    && let Some(e) = info.email()
                {
                    person.email = e.as_str().to_owned();
                    person.email_verified = info.email_verified();
                }
                if person.name.is_empty()
                    && let Some(n) = info.name().and_then(|n| n.get(None))
                {
                    person.name = n.as_str().to_owned();
                }
                if person.groups.is_none() {
                    person.groups = info.additional_claims().0.get(groups_claim).map(groups_of);
                }
            }
            Err(e) if person.email.is_empty() => {
                return Err(format!("the userinfo request failed: {}", error_chain(&e)));
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "OIDC userinfo failed; groups unknown")
            }
        }
    }
    if person.email.is_empty() {
        return Err("the provider did not share an email address (ask for the email scope)".into());
    }
    Ok(person)
}

/// A groups claim as a list: an array of strings, or one string.
fn groups_of(v: &serde_json::Value) -> Vec<String> {
    let raw: Vec<&str> = match v {
        serde_json::Value::Array(a) => a.iter().filter_map(|g| g.as_str()).collect(),
        serde_json::Value::String(s) => vec![s.as_str()],
        _ => Vec::new(),
    };
    let mut out: Vec<String> = Vec::new();
    for g in raw {
        let ok = !g.is_empty() && g.len() <= MAX_GROUP_LEN && !g.chars().any(char::is_control);
        if ok && !out.iter().any(|o| o == g) {
            out.push(g.to_owned());
        }
    }
    if out.len() > MAX_GROUPS_PER_USER {
        tracing::warn!(
            got = out.len(),
            kept = MAX_GROUPS_PER_USER,
            "the provider sent more groups than a user may have; keeping the first"
        );
        out.truncate(MAX_GROUPS_PER_USER);
    }
    out
}

/// Decides whether the person may use this relay; creates or updates their user.
async fn admit(app: &App, oidc: &Oidc, person: Person) -> Result<crate::store::User, String> {
    let s = &oidc.settings;
    if s.require_verified_email && person.email_verified != Some(true) {
        return Err(format!(
            "{} did not confirm that {} is a verified address, and this relay requires one.",
            s.display_name, person.email
        ));
    }
    let email = Email::parse(&person.email)
        .map_err(|e| format!("The provider's email address is not usable: {e}"))?;
    let lookup = email.clone();
    let existing = blocking(&app.store, move |st| st.get_user_by_email(&lookup))
        .await
        .map_err(|e| format!("The relay could not read its accounts: {e}"))?;
    if let Some(u) = &existing
        && u.disabled
    {
        return Err(format!(
            "The account {} is disabled on this relay. Ask the relay's admin.",
            u.email
        ));
    }
    let domain = email
        .as_str()
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    let allowed = existing.is_some() || s.allow_any_email || s.allowed_domains.contains(&domain);
    if !allowed {
        return Err(format!(
            "{email} may not use this relay. Ask its admin to run `mcp-relay users add {email}`, or to add {domain} to oidc.allowed_domains."
        ));
    }
    let mut name: String = person.name.chars().filter(|c| !c.is_control()).collect();
    while name.len() > MAX_DISPLAY_NAME_LEN {
        name.pop();
    }
    let groups = match (person.groups, &existing) {
        (Some(g), _) => g,
        // The provider said nothing about groups: keep what the relay knows.
        (None, Some(u)) => u.groups.clone(),
        (None, None) => Vec::new(),
    };
    let new = NewUser {
        email,
        display_name: name,
        groups,
    };
    blocking(&app.store, move |st| st.sync_external_user(&new))
        .await
        .map_err(|e| format!("The relay could not record the sign-in: {e}"))
}

fn browser_id(headers: &HeaderMap) -> String {
    super::secret_cookie(headers, BROWSER_COOKIE)
}

fn same_browser(headers: &HeaderMap, expected: &str) -> bool {
    cookie(headers, BROWSER_COOKIE)
        .is_some_and(|c| subtle::ConstantTimeEq::ct_eq(c.as_bytes(), expected.as_bytes()).into())
}

fn set_browser_cookie(app: &App, r: &mut Response, value: &str) {
    // Lax: the provider's redirect back is a top-level cross-site GET.
    super::set_cookie(
        app,
        r,
        BROWSER_COOKIE,
        value,
        "Path=/oidc; HttpOnly; SameSite=Lax; Max-Age=3600",
    );
}

fn wrong_browser() -> Response {
    super::pages::error_page(
        StatusCode::BAD_REQUEST,
        "Sign-in started elsewhere",
        "This sign-in was started in a different browser (or its cookie was blocked). Start signing in again from the application, in this browser.",
    )
}

fn busy() -> Response {
    super::pages::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many sign-ins",
        "Too many sign-ins are in progress on this relay. Try again in a few minutes.",
    )
}

fn not_configured() -> Response {
    super::pages::error_page(
        StatusCode::NOT_FOUND,
        "Not available",
        "This relay has no sign-in provider configured.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_claim_accepts_arrays_and_strings_and_drops_junk() {
        assert_eq!(groups_of(&json!(["a", "b", "a", 5, ""])), ["a", "b"]);
        assert_eq!(groups_of(&json!("solo")), ["solo"]);
        assert!(groups_of(&json!({"x": 1})).is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("g{i}")).collect();
        assert_eq!(groups_of(&json!(many)).len(), MAX_GROUPS_PER_USER);
        assert!(groups_of(&json!(["x".repeat(MAX_GROUP_LEN + 1), "bad\nname"])).is_empty());
    }

    #[test]
    fn in_flight_sign_ins_are_single_use_and_expire() {
        let m: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
        remember(&m, "a".into(), Instant::now(), PENDING_TTL, |c| *c).unwrap();
        assert!(take(&m, "a", PENDING_TTL, |c| *c).is_some());
        assert!(take(&m, "a", PENDING_TTL, |c| *c).is_none(), "used twice");
        let old = Instant::now()
            .checked_sub(PENDING_TTL + Duration::from_secs(1))
            .unwrap();
        remember(&m, "b".into(), old, PENDING_TTL, |c| *c).unwrap();
        assert!(take(&m, "b", PENDING_TTL, |c| *c).is_none(), "expired");
    }

    #[test]
    fn in_flight_sign_ins_are_bounded() {
        let m: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
        for i in 0..MAX_IN_FLIGHT {
            remember(&m, i.to_string(), Instant::now(), PENDING_TTL, |c| *c).unwrap();
        }
        assert!(remember(&m, "one more".into(), Instant::now(), PENDING_TTL, |c| *c).is_err());
    }
}
