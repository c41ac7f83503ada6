//! Small server-rendered pages: sign-in and consent, password set-up, errors.
//! Every interpolated value goes through [`escape`]; pages load nothing from
//! elsewhere and carry a strict Content-Security-Policy.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#111}\
label{display:block;margin-top:1rem;font-weight:600}input[type=email],input[type=password]{width:100%;padding:.5rem;font-size:1rem}\
.actions{margin-top:1.5rem;display:flex;gap:1rem}button{padding:.6rem 1.2rem;font-size:1rem}\
a.button{display:inline-block;padding:.6rem 1.2rem;border:1px solid #333;border-radius:4px;color:#111;text-decoration:none;background:#eef}\
.error{background:#fee;border:1px solid #c00;padding:.5rem 1rem}.box{background:#f6f6f6;padding:.5rem 1rem;border-radius:4px}code{word-break:break-all}";

/// Wraps `body` in a page with security headers.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_with_form_target(status, title, body, None)
}

/// Like [`page`], also allowing the form's submission to redirect to
/// `form_target` (an origin): browsers apply CSP `form-action` to the
/// redirect that follows a form post.
pub fn page_with_form_target(
    status: StatusCode,
    title: &str,
    body: &str,
    form_target: Option<&str>,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} · mcp-relay</title><style>{STYLE}</style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    let form_action = match form_target {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// A page that explains an error and what to do.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        title,
        &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)),
    )
}

/// What the consent page shows and carries.
#[derive(Debug)]
pub struct Consent<'a> {
    /// Client name as registered.
    pub client_name: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Host the code goes back to.
    pub redirect_host: &'a str,
    /// Origin of the redirect URI (the consent form's post redirects there).
    pub redirect_origin: &'a str,
    /// Tunnel being granted.
    pub tunnel: &'a str,
    /// Hidden form fields (the original authorization request).
    pub hidden: &'a [(&'a str, &'a str)],
    /// CSRF token (double-submit).
    pub csrf: &'a str,
    /// An error from the previous attempt.
    pub error: Option<&'a str>,
    /// Offer the built-in email + password form.
    pub password_login: bool,
    /// An OIDC provider to offer: (name, link that starts the sign-in).
    pub oidc: Option<(&'a str, &'a str)>,
}

/// The consent page after a sign-in at the OIDC provider.
#[derive(Debug)]
pub struct SignedInConsent<'a> {
    /// Client name as registered.
    pub client_name: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Host the code goes back to.
    pub redirect_host: &'a str,
    /// Origin of the redirect URI.
    pub redirect_origin: &'a str,
    /// Tunnel being granted.
    pub tunnel: &'a str,
    /// Who signed in.
    pub email: &'a str,
    /// Where they signed in.
    pub provider: &'a str,
    /// One-time ticket for the form.
    pub ticket: &'a str,
}

fn client_box(name: &str, id: &str, tunnel: &str, host: &str) -> String {
    format!(
        "<div class=\"box\"><p><strong>{name}</strong> (<code>{id}</code>) asks to use the MCP tunnel <strong>{tunnel}</strong> as you.</p>\
<p>After you allow it, you go back to <strong>{host}</strong>.</p></div>",
        name = escape(name),
        id = escape(id),
        tunnel = escape(tunnel),
        host = escape(host),
    )
}

/// Consent for someone already signed in at the OIDC provider.
pub fn consent_signed_in(c: &SignedInConsent<'_>) -> Response {
    let mut body = client_box(c.client_name, c.client_id, c.tunnel, c.redirect_host);
    body.push_str(&format!(
        "<p>Signed in as <strong>{email}</strong> through {provider}.</p>\
<form method=\"post\" action=\"/oidc/consent\"><input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form>",
        email = escape(c.email),
        provider = escape(c.provider),
        ticket = escape(c.ticket),
    ));
    page_with_form_target(
        StatusCode::OK,
        "Allow access?",
        &body,
        Some(c.redirect_origin),
    )
}

/// Sign-in and consent in one form.
pub fn consent(c: &Consent<'_>) -> Response {
    let mut body = String::new();
    if let Some(e) = c.error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    body.push_str(&client_box(
        c.client_name,
        c.client_id,
        c.tunnel,
        c.redirect_host,
    ));
    if let Some((name, href)) = c.oidc {
        body.push_str(&format!(
            "<p><a class=\"button\" href=\"{href}\">Sign in with {name}</a></p>",
            href = escape(href),
            name = escape(name),
        ));
    }
    body.push_str("<form method=\"post\" action=\"/authorize\">");
    for (k, v) in c.hidden {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(k),
            escape(v)
        ));
    }
    body.push_str(&format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(c.csrf)
    ));
    if c.password_login {
        body.push_str("<label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"allow\">Sign in and allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></div></form>");
    } else {
        body.push_str("<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form>");
    }
    page_with_form_target(
        StatusCode::OK,
        "Sign in to allow access",
        &body,
        Some(c.redirect_origin),
    )
}

/// The set-password form reached from `mcp-relay users add`'s link.
pub fn set_password(token: &str, csrf: &str, email: &str, error: Option<&str>) -> Response {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    body.push_str(&format!(
        "<p>Choose a password for <strong>{email}</strong>.</p><form method=\"post\" action=\"/setup\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"password\">New password (at least {min} characters)</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"{min}\">\
<div class=\"actions\"><button type=\"submit\">Set password</button></div></form>",
        email = escape(email),
        token = escape(token),
        csrf = escape(csrf),
        min = super::password::MIN_PASSWORD_LEN,
    ));
    page(StatusCode::OK, "Set your password", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_interpolated() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
