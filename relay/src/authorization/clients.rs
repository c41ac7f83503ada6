//! Finding the client of an authorization request: registered by DCR (in the
//! store), or identified by an https URL whose client metadata document the
//! relay fetches (SSRF-guarded, cached) and records, so codes and refresh
//! tokens can refer to it.

use crate::app::App;
use crate::authorization::blocking;
use crate::oauth::cimd::parse_client_id_url;
use crate::store::{Client, ClientKind, ClientOwner, NewClient};

/// The active client for `client_id`, fetching its metadata document if it is a URL.
pub async fn resolve(app: &App, client_id: &str) -> Result<Option<Client>, String> {
    let cid = client_id.to_owned();
    let stored = blocking(&app.store, move |s| s.get_client(&cid))
        .await
        .map_err(|e| e.to_string())?;
    if parse_client_id_url(client_id).is_err() {
        return Ok(stored.filter(|c| c.revoked_at.is_none()));
    }
    if stored.as_ref().is_some_and(|c| c.revoked_at.is_some()) {
        return Ok(None);
    }
    let doc = app.cimd.fetch(client_id).await.map_err(|e| e.to_string())?;
    let name = doc.display_name().to_owned();
    let redirect_uris = doc.registration().redirect_uris().to_vec();
    let metadata = doc.metadata();
    let cid = client_id.to_owned();
    let exists = stored.is_some();
    blocking(&app.store, move |s| {
        if exists {
            s.update_client_registration(&cid, &name, &redirect_uris, &metadata)
        } else {
            s.insert_client(&NewClient {
                client_id: cid.clone(),
                kind: ClientKind::MetadataDocument,
                name,
                redirect_uris,
                secret_hash: None,
                owner: ClientOwner::SelfRegistered,
                metadata,
                registered_from: None,
                expires_at: None,
            })
        }
    })
    .await
    .map(Some)
    .map_err(|e| e.to_string())
}
