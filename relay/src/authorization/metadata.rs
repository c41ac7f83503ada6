//! RFC 8414 authorization-server metadata.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::auth::MCP_SCOPE;

/// `GET /.well-known/oauth-authorization-server` (and the OIDC alias).
pub async fn authorization_server(State(app): State<Arc<App>>) -> Response {
    let base = &app.public_url;
    axum::Json(serde_json::json!({
        "issuer": app.auth.issuer(),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "device_authorization_endpoint": format!("{base}/device_authorization"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", super::device::DEVICE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": [MCP_SCOPE],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
    .into_response()
}
