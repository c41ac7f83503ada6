//! Behaviour tests of the store, through the [`Store`] trait.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use super::*;

const T0: UnixTime = 1_700_000_000;

struct Fixture {
    dir: TempDir,
    clock: ManualClock,
    store: SqliteStore,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let store = SqliteStore::open_with_clock(&db(&dir), Arc::new(clock.clone())).unwrap();
        Self { dir, clock, store }
    }

    /// A second store on the same file, as the admin CLI would open it.
    fn second(&self) -> SqliteStore {
        SqliteStore::open_with_clock(&db(&self.dir), Arc::new(self.clock.clone())).unwrap()
    }

    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(db(&self.dir)).unwrap()
    }

    fn user(&self, email: &str) -> User {
        self.store.add_user(&new_user(email, &["eng"])).unwrap().0
    }

    fn client(&self, id: &str) -> Client {
        self.store.insert_client(&new_client(id)).unwrap()
    }

    /// Stores a code for `user` at `client`; returns its value and family.
    fn code(&self, user: &User, client: &str) -> (Secret, FamilyId) {
        let code = Secret::generate();
        let family = self
            .store
            .insert_code(&NewCode {
                hash: code.hash(),
                client_id: client.to_owned(),
                user_id: user.id,
                redirect_uri: "http://127.0.0.1:9999/cb".to_owned(),
                code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
                resource: "https://relay.example/t/shop/mcp".to_owned(),
                scope: "mcp".to_owned(),
                expires_at: self.clock.now() + 60,
            })
            .unwrap();
        (code, family)
    }

    /// Stores a refresh token in `family`; returns its value.
    fn refresh(&self, user: &User, client: &str, family: &FamilyId) -> Secret {
        let token = Secret::generate();
        self.store
            .insert_refresh(&NewRefresh {
                hash: token.hash(),
                family: family.clone(),
                client_id: client.to_owned(),
                user_id: user.id,
                resource: "https://relay.example/t/shop/mcp".to_owned(),
                scope: "mcp".to_owned(),
                expires_at: self.clock.now() + 3600,
            })
            .unwrap();
        token
    }
}

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join(DB_FILE)
}

fn new_user(email: &str, groups: &[&str]) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        display_name: "Someone".to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn new_client(id: &str) -> NewClient {
    NewClient {
        client_id: id.to_owned(),
        kind: ClientKind::Dynamic,
        name: format!("client {id}"),
        redirect_uris: vec!["http://127.0.0.1:9999/cb".to_owned()],
        secret_hash: None,
        owner: ClientOwner::SelfRegistered,
        metadata: serde_json::json!({ "client_name": id }),
        registered_from: Some("203.0.113.7".parse().unwrap()),
        expires_at: None,
    }
}

fn service_account(id: &str, secret: &Secret, expires_at: Option<UnixTime>) -> NewClient {
    NewClient {
        kind: ClientKind::ServiceAccount,
        redirect_uris: Vec::new(),
        secret_hash: Some(secret.hash()),
        owner: ClientOwner::Admin,
        registered_from: None,
        expires_at,
        ..new_client(id)
    }
}

fn new_key(kid: &str) -> NewSigningKey {
    NewSigningKey {
        kid: kid.to_owned(),
        algorithm: KeyAlgorithm::EdDsa,
        private_key: PrivateKeyDer(vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x42]),
        public_jwk: serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": kid, "kid": kid }),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---- opening and migrations ------------------------------------------------

#[cfg(unix)]
#[test]
fn database_and_wal_files_are_private() {
    let f = Fixture::new();
    f.user("a@example.com");
    let path = db(&f.dir);
    assert_eq!(mode(&path), 0o600);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(
        wal.exists(),
        "WAL mode keeps a -wal file beside the database"
    );
    assert_eq!(mode(&wal), 0o600);
}

#[cfg(unix)]
#[test]
fn an_existing_readable_file_is_tightened_to_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(db(&dir), b"").unwrap();
    std::fs::set_permissions(db(&dir), std::fs::Permissions::from_mode(0o644)).unwrap();
    SqliteStore::open(&db(&dir)).unwrap();
    assert_eq!(mode(&db(&dir)), 0o600);
}

#[test]
fn connection_uses_wal_and_foreign_keys() {
    let f = Fixture::new();
    let mode: String = f
        .raw()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // A code for a client that does not exist is refused by the foreign key.
    let user = f.user("a@example.com");
    let err = f
        .store
        .insert_code(&NewCode {
            hash: Secret::generate().hash(),
            client_id: "nope".to_owned(),
            user_id: user.id,
            redirect_uri: String::new(),
            code_challenge: String::new(),
            resource: String::new(),
            scope: String::new(),
            expires_at: T0 + 60,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn reopening_applies_no_migration_twice_and_keeps_data() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    drop(f.second());
    let again = f.second();
    assert_eq!(again.get_user(alice.id).unwrap().unwrap(), alice);
    let versions: Vec<i64> = f
        .raw()
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<i64> = (1..=SqliteStore::schema_version()).collect();
    assert_eq!(versions, expected);
}

#[test]
fn a_database_from_a_newer_relay_is_refused() {
    let f = Fixture::new();
    let newer = SqliteStore::schema_version() + 7;
    f.raw()
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
            [newer],
        )
        .unwrap();
    let err = SqliteStore::open(&db(&f.dir)).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == newer));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "this state dir was written by a newer mcp-relay (schema v{newer}"
        )) && msg.contains("upgrade mcp-relay"),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let junk = b"this is not an SQLite database, but it is somebody's data".repeat(100);
    std::fs::write(db(&dir), &junk).unwrap();
    let err = SqliteStore::open(&db(&dir)).unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert_eq!(std::fs::read(db(&dir)).unwrap(), junk);
}

#[test]
fn a_missing_state_dir_is_an_open_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join(DB_FILE);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn the_store_is_usable_as_a_trait_object() {
    let f = Fixture::new();
    let store: Arc<dyn Store> = Arc::new(f.second());
    assert_eq!(store.list_users().unwrap().len(), 0);
}

// ---- users ------------------------------------------------------------------

#[test]
fn users_are_found_by_normalized_email() {
    let f = Fixture::new();
    let (alice, _) = f
        .store
        .add_user(&new_user("  Alice@Example.COM ", &["eng", "ops"]))
        .unwrap();
    assert_eq!(alice.email.as_str(), "alice@example.com");
    assert_eq!(alice.groups, ["eng", "ops"]);
    assert_eq!(alice.created_at, T0);
    assert_eq!(alice.password_hash, None);
    assert!(!alice.disabled);
    let found = f
        .store
        .get_user_by_email(&Email::parse("ALICE@example.com").unwrap())
        .unwrap();
    assert_eq!(found, Some(alice.clone()));
    assert_eq!(f.store.get_user(alice.id).unwrap(), Some(alice));
    assert_eq!(f.store.get_user(UserId(999)).unwrap(), None);

    let err = f
        .store
        .add_user(&new_user("alice@EXAMPLE.com", &[]))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "user", .. }),
        "{err}"
    );

    f.user("bob@example.com");
    let emails: Vec<String> = f
        .store
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.email.to_string())
        .collect();
    assert_eq!(emails, ["alice@example.com", "bob@example.com"]);
}

#[test]
fn user_inputs_over_their_limits_are_refused() {
    for bad in [
        "",
        "no-at-sign",
        "@example.com",
        "a@",
        "a@b@c",
        "a b@example.com",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
    }
    let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN));
    assert!(Email::parse(&long).is_err());

    let f = Fixture::new();
    let many: Vec<String> = (0..=MAX_GROUPS_PER_USER).map(|i| format!("g{i}")).collect();
    let cases = [
        NewUser {
            groups: many,
            ..new_user("a@example.com", &[])
        },
        new_user("a@example.com", &[&"g".repeat(MAX_GROUP_LEN + 1)]),
        new_user("a@example.com", &[""]),
        NewUser {
            display_name: "evil\u{0}name".to_owned(),
            ..new_user("a@example.com", &[])
        },
        NewUser {
            display_name: "x".repeat(MAX_DISPLAY_NAME_LEN + 1),
            ..new_user("a@example.com", &[])
        },
    ];
    for case in cases {
        let err = f.store.add_user(&case).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    assert!(f.store.list_users().unwrap().is_empty());
}

#[test]
fn password_hashes_are_argon2id_phc_strings() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let hash = PasswordHash::parse(phc).unwrap();
    f.store.set_password_hash(alice.id, &hash).unwrap();
    let stored = f.store.get_user(alice.id).unwrap().unwrap().password_hash;
    assert_eq!(stored.as_ref().map(PasswordHash::as_str), Some(phc));
    assert!(!format!("{hash:?}").contains("argon2id"), "Debug is masked");

    assert!(PasswordHash::parse("hunter2").is_err());
    assert!(PasswordHash::parse("$argon2i$v=19$m=1,t=1,p=1$a$b").is_err());
    let err = f.store.set_password_hash(UserId(999), &hash).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { what: "user", .. }),
        "{err}"
    );
}

#[test]
fn a_setup_token_works_once_and_expires() {
    let f = Fixture::new();
    let (alice, token) = f
        .store
        .add_user(&new_user("alice@example.com", &[]))
        .unwrap();
    assert!(
        !format!("{token:?}").contains(token.expose()),
        "Debug is masked"
    );
    assert_eq!(
        f.store.setup_token_user(&token.hash()).unwrap(),
        Some(alice.id)
    );
    assert_eq!(
        f.store.setup_token_user(&token.hash()).unwrap(),
        Some(alice.id)
    );
    assert_eq!(
        f.store.consume_setup_token(&token.hash()).unwrap(),
        Some(alice.id)
    );
    assert_eq!(f.store.consume_setup_token(&token.hash()).unwrap(), None);
    assert_eq!(f.store.setup_token_user(&token.hash()).unwrap(), None);
    assert_eq!(
        f.store
            .consume_setup_token(&TokenHash::of("guess"))
            .unwrap(),
        None
    );

    // A reissued link replaces the previous one.
    let first = f.store.issue_setup_token(alice.id).unwrap();
    let second = f.store.issue_setup_token(alice.id).unwrap();
    assert_eq!(f.store.setup_token_user(&first.hash()).unwrap(), None);
    assert_eq!(
        f.store.setup_token_user(&second.hash()).unwrap(),
        Some(alice.id)
    );

    f.clock.advance(SETUP_TOKEN_TTL_SECS - 1);
    assert_eq!(
        f.store.setup_token_user(&second.hash()).unwrap(),
        Some(alice.id)
    );
    f.clock.advance(1);
    assert_eq!(f.store.consume_setup_token(&second.hash()).unwrap(), None);

    let err = f.store.issue_setup_token(UserId(999)).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn disabling_a_user_refuses_setup_and_revokes_everything() {
    let f = Fixture::new();
    let (alice, token) = f
        .store
        .add_user(&new_user("alice@example.com", &[]))
        .unwrap();
    f.client("c1");
    let (code, family) = f.code(&alice, "c1");
    let refresh = f.refresh(&alice, "c1", &family);

    f.store.disable_user(alice.id).unwrap();
    f.store.disable_user(alice.id).unwrap();
    let stored = f.store.get_user(alice.id).unwrap().unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.tokens_revoked_at, Some(T0));
    assert_eq!(f.store.consume_setup_token(&token.hash()).unwrap(), None);
    assert!(matches!(
        f.store.take_code(&code.hash()),
        Err(CodeError::Unknown)
    ));
    assert!(matches!(
        f.store
            .rotate_refresh(&refresh.hash(), "c1", &Secret::generate().hash(), T0 + 99),
        Err(RefreshError::Revoked)
    ));

    f.store.enable_user(alice.id).unwrap();
    assert!(!f.store.get_user(alice.id).unwrap().unwrap().disabled);
    assert!(matches!(
        f.store.disable_user(UserId(999)),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn external_users_are_created_then_updated() {
    let f = Fixture::new();
    let first = f
        .store
        .sync_external_user(&new_user("Carol@Example.com", &["a"]))
        .unwrap();
    assert_eq!(first.groups, ["a"]);
    f.store.disable_user(first.id).unwrap();
    let again = f
        .store
        .sync_external_user(&new_user("carol@example.com", &["a", "b"]))
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.groups, ["a", "b"]);
    assert!(again.disabled, "sign-in never re-enables a disabled user");
    assert_eq!(again.password_hash, None);
}

// ---- clients ----------------------------------------------------------------

#[test]
fn clients_register_list_update_touch_and_revoke() {
    let f = Fixture::new();
    let c1 = f.client("c1");
    assert_eq!(c1.kind, ClientKind::Dynamic);
    assert_eq!(c1.owner, ClientOwner::SelfRegistered);
    assert_eq!(c1.created_at, T0);
    assert_eq!(c1.metadata, serde_json::json!({ "client_name": "c1" }));
    assert_eq!(c1.registered_from, Some("203.0.113.7".parse().unwrap()));
    assert!(!c1.has_secret);
    assert!(c1.is_active(T0));

    let err = f.store.insert_client(&new_client("c1")).unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { what: "client", .. }),
        "{err}"
    );

    let owner = f.user("owner@example.com");
    let doc = f
        .store
        .insert_client(&NewClient {
            kind: ClientKind::MetadataDocument,
            owner: ClientOwner::User(owner.id),
            registered_from: None,
            ..new_client("https://app.example/client.json")
        })
        .unwrap();
    assert_eq!(doc.owner, ClientOwner::User(owner.id));
    let updated = f
        .store
        .update_client_registration(
            &doc.client_id,
            "Renamed",
            &["https://app.example/cb".to_owned()],
            &serde_json::json!({ "v": 2 }),
        )
        .unwrap();
    assert_eq!(updated.name, "Renamed");
    assert_eq!(updated.redirect_uris, ["https://app.example/cb"]);
    assert_eq!(updated.metadata, serde_json::json!({ "v": 2 }));

    let ids: Vec<String> = f
        .store
        .list_clients()
        .unwrap()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    assert_eq!(ids, ["c1", "https://app.example/client.json"]);

    f.clock.advance(5);
    f.store.touch_client_last_used("c1").unwrap();
    assert_eq!(
        f.store.get_client("c1").unwrap().unwrap().last_used_at,
        Some(T0 + 5)
    );

    f.store.revoke_client("c1").unwrap();
    f.clock.advance(5);
    f.store.revoke_client("c1").unwrap();
    let revoked = f.store.get_client("c1").unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at,
        Some(T0 + 5),
        "the first revocation counts"
    );
    assert!(!revoked.is_active(T0 + 10));

    for err in [
        f.store.revoke_client("nope").unwrap_err(),
        f.store.touch_client_last_used("nope").unwrap_err(),
        f.store
            .update_client_registration("nope", "x", &[], &serde_json::json!({}))
            .unwrap_err(),
        f.store
            .insert_client(&NewClient {
                owner: ClientOwner::User(UserId(999)),
                ..new_client("orphan")
            })
            .unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    }
    assert_eq!(f.store.get_client("nope").unwrap(), None);
}

#[test]
fn client_inputs_over_their_limits_are_refused() {
    let f = Fixture::new();
    let cases = [
        NewClient {
            redirect_uris: (0..=MAX_REDIRECT_URIS)
                .map(|i| format!("https://a.example/{i}"))
                .collect(),
            ..new_client("c")
        },
        NewClient {
            redirect_uris: vec![format!("https://a.example/{}", "x".repeat(MAX_URI_LEN))],
            ..new_client("c")
        },
        NewClient {
            metadata: serde_json::json!({ "pad": "x".repeat(MAX_CLIENT_METADATA_BYTES) }),
            ..new_client("c")
        },
        NewClient {
            name: "n".repeat(MAX_CLIENT_NAME_LEN + 1),
            ..new_client("c")
        },
        new_client(&"c".repeat(MAX_CLIENT_ID_LEN + 1)),
        new_client(""),
        NewClient {
            kind: ClientKind::ServiceAccount,
            secret_hash: None,
            ..new_client("c")
        },
    ];
    for case in cases {
        let err = f.store.insert_client(&case).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    assert!(f.store.list_clients().unwrap().is_empty());
}

#[test]
fn registrations_are_counted_per_source_address_and_window() {
    let f = Fixture::new();
    let a: IpAddr = "203.0.113.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
    f.client("c1");
    f.clock.advance(100);
    f.client("c2");
    f.store
        .insert_client(&NewClient {
            registered_from: Some("198.51.100.1".parse().unwrap()),
            ..new_client("other")
        })
        .unwrap();
    assert_eq!(f.store.count_registrations_since(a, T0).unwrap(), 2);
    assert_eq!(f.store.count_registrations_since(a, T0 + 1).unwrap(), 1);
    assert_eq!(
        f.store.count_registrations_since(mapped, T0).unwrap(),
        2,
        "an IPv4-mapped IPv6 address is the same source"
    );
    assert_eq!(
        f.store
            .count_registrations_since("192.0.2.1".parse().unwrap(), 0)
            .unwrap(),
        0
    );
}

#[test]
fn service_account_secrets_verify_only_while_active() {
    let f = Fixture::new();
    let secret = Secret::generate();
    let sa = f
        .store
        .insert_client(&service_account("sa-1", &secret, Some(T0 + 100)))
        .unwrap();
    assert!(sa.has_secret);
    assert!(
        f.store
            .verify_client_secret("sa-1", secret.expose())
            .unwrap()
    );
    assert!(!f.store.verify_client_secret("sa-1", "wrong").unwrap());
    assert!(
        !f.store
            .verify_client_secret("nope", secret.expose())
            .unwrap()
    );
    f.client("public");
    assert!(!f.store.verify_client_secret("public", "").unwrap());

    f.clock.advance(100);
    assert!(
        !f.store
            .verify_client_secret("sa-1", secret.expose())
            .unwrap(),
        "expired"
    );

    let other = Secret::generate();
    f.store
        .insert_client(&service_account("sa-2", &other, None))
        .unwrap();
    assert!(
        f.store
            .verify_client_secret("sa-2", other.expose())
            .unwrap()
    );
    f.store.revoke_client("sa-2").unwrap();
    assert!(
        !f.store
            .verify_client_secret("sa-2", other.expose())
            .unwrap(),
        "revoked"
    );
}

// ---- authorization codes ----------------------------------------------------

#[test]
fn a_code_is_taken_once_and_reuse_revokes_its_tokens() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (code, family) = f.code(&alice, "c1");

    let record = f.store.take_code(&code.hash()).unwrap();
    assert_eq!(record.family, family);
    assert_eq!(record.client_id, "c1");
    assert_eq!(record.user_id, alice.id);
    assert_eq!(record.redirect_uri, "http://127.0.0.1:9999/cb");
    assert_eq!(
        record.code_challenge,
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    assert_eq!(record.resource, "https://relay.example/t/shop/mcp");
    assert_eq!(record.scope, "mcp");
    assert_eq!(record.expires_at, T0 + 60);

    let refresh = f.refresh(&alice, "c1", &record.family);
    match f.store.take_code(&code.hash()) {
        Err(CodeError::Reused {
            family: f2,
            revoked,
        }) => {
            assert_eq!(f2, family);
            assert_eq!(revoked, 1);
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    assert!(matches!(
        f.store
            .rotate_refresh(&refresh.hash(), "c1", &Secret::generate().hash(), T0 + 99),
        Err(RefreshError::Revoked)
    ));
    assert!(matches!(
        f.store.take_code(&code.hash()),
        Err(CodeError::Reused { revoked: 0, .. })
    ));
}

#[test]
fn expired_and_unknown_codes_are_refused() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (code, _) = f.code(&alice, "c1");
    f.clock.advance(60);
    assert!(matches!(
        f.store.take_code(&code.hash()),
        Err(CodeError::Expired)
    ));
    assert!(matches!(
        f.store.take_code(&TokenHash::of("never issued")),
        Err(CodeError::Unknown)
    ));
    let err = CodeError::Expired.to_string();
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn code_inputs_over_their_limits_are_refused() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let err = f
        .store
        .insert_code(&NewCode {
            hash: Secret::generate().hash(),
            client_id: "c1".to_owned(),
            user_id: alice.id,
            redirect_uri: "x".repeat(MAX_URI_LEN + 1),
            code_challenge: String::new(),
            resource: String::new(),
            scope: String::new(),
            expires_at: T0 + 60,
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                field: "redirect_uri",
                ..
            }
        ),
        "{err}"
    );
}

// ---- refresh tokens ---------------------------------------------------------

#[test]
fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1");
    let first = f.refresh(&alice, "c1", &family);

    f.clock.advance(10);
    let second = Secret::generate();
    let rotated = f
        .store
        .rotate_refresh(&first.hash(), "c1", &second.hash(), T0 + 7200)
        .unwrap();
    assert_eq!(rotated.family, family);
    assert_eq!(rotated.user_id, alice.id);
    assert_eq!(rotated.client_id, "c1");
    assert_eq!(rotated.resource, "https://relay.example/t/shop/mcp");
    assert_eq!(rotated.created_at, T0 + 10);
    assert_eq!(rotated.expires_at, T0 + 7200);

    let third = Secret::generate();
    f.store
        .rotate_refresh(&second.hash(), "c1", &third.hash(), T0 + 7200)
        .unwrap();

    // The first token again: stolen. The whole family dies, the live one too.
    match f
        .store
        .rotate_refresh(&first.hash(), "c1", &Secret::generate().hash(), T0 + 7200)
    {
        Err(RefreshError::Reused {
            family: f2,
            revoked,
        }) => {
            assert_eq!(f2, family);
            assert_eq!(revoked, 3);
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    assert!(matches!(
        f.store
            .rotate_refresh(&third.hash(), "c1", &Secret::generate().hash(), T0 + 7200),
        Err(RefreshError::Revoked)
    ));
}

#[test]
fn refresh_tokens_of_another_client_are_refused_untouched() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    f.client("c2");
    let (_, family) = f.code(&alice, "c1");
    let token = f.refresh(&alice, "c1", &family);
    assert!(matches!(
        f.store
            .rotate_refresh(&token.hash(), "c2", &Secret::generate().hash(), T0 + 99),
        Err(RefreshError::WrongClient)
    ));
    f.store
        .rotate_refresh(&token.hash(), "c1", &Secret::generate().hash(), T0 + 99)
        .unwrap();
}

#[test]
fn expired_unknown_and_duplicate_refresh_tokens_are_refused() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1");
    let token = f.refresh(&alice, "c1", &family);
    assert!(matches!(
        f.store
            .rotate_refresh(&TokenHash::of("nope"), "c1", &TokenHash::of("x"), T0 + 99),
        Err(RefreshError::Unknown)
    ));

    // Rotating onto a hash that already exists fails as a whole: the old token
    // stays usable.
    let err = f
        .store
        .rotate_refresh(&token.hash(), "c1", &token.hash(), T0 + 99)
        .unwrap_err();
    assert!(
        matches!(err, RefreshError::Store(StoreError::Conflict { .. })),
        "{err}"
    );

    f.clock.advance(3600);
    assert!(matches!(
        f.store
            .rotate_refresh(&token.hash(), "c1", &Secret::generate().hash(), T0 + 9999),
        Err(RefreshError::Expired)
    ));
}

#[test]
fn concurrent_rotations_of_one_token_let_exactly_one_win() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1");
    let token = f.refresh(&alice, "c1", &family);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = f.second();
                let old = token.hash();
                s.spawn(move || {
                    store.rotate_refresh(&old, "c1", &Secret::generate().hash(), T0 + 99)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let reuses = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(RefreshError::Reused { .. }) | Err(RefreshError::Revoked)
            )
        })
        .count();
    assert_eq!((wins, reuses), (1, 3), "{results:?}");
}

#[test]
fn rfc7009_revocation_revokes_the_family_for_its_own_client_only() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1");
    let token = f.refresh(&alice, "c1", &family);
    assert!(!f.store.revoke_refresh_token(&token.hash(), "c2").unwrap());
    assert!(
        !f.store
            .revoke_refresh_token(&TokenHash::of("nope"), "c1")
            .unwrap()
    );
    assert!(f.store.revoke_refresh_token(&token.hash(), "c1").unwrap());
    assert!(matches!(
        f.store
            .rotate_refresh(&token.hash(), "c1", &Secret::generate().hash(), T0 + 99),
        Err(RefreshError::Revoked)
    ));
}

#[test]
fn revoking_a_family_user_or_client_kills_its_tokens() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let bob = f.user("bob@example.com");
    f.client("c1");
    f.client("c2");
    let (_, fam_a1) = f.code(&alice, "c1");
    let (_, fam_a2) = f.code(&alice, "c2");
    let (_, fam_b) = f.code(&bob, "c2");
    let a1 = f.refresh(&alice, "c1", &fam_a1);
    let a2 = f.refresh(&alice, "c2", &fam_a2);
    let b = f.refresh(&bob, "c2", &fam_b);
    let fresh = || Secret::generate().hash();

    assert_eq!(f.store.revoke_family(&fam_a1).unwrap(), 1);
    assert_eq!(f.store.revoke_family(&fam_a1).unwrap(), 0);
    assert!(matches!(
        f.store.rotate_refresh(&a1.hash(), "c1", &fresh(), T0 + 99),
        Err(RefreshError::Revoked)
    ));

    f.clock.advance(3);
    // Alice: one refresh token (a2) and two unused codes.
    assert_eq!(f.store.revoke_user_tokens(alice.id).unwrap(), 3);
    assert_eq!(
        f.store
            .get_user(alice.id)
            .unwrap()
            .unwrap()
            .tokens_revoked_at,
        Some(T0 + 3)
    );
    assert!(matches!(
        f.store.rotate_refresh(&a2.hash(), "c2", &fresh(), T0 + 99),
        Err(RefreshError::Revoked)
    ));

    // c2: Bob's refresh token and unused code.
    assert_eq!(f.store.revoke_client_tokens("c2").unwrap(), 2);
    assert!(matches!(
        f.store.rotate_refresh(&b.hash(), "c2", &fresh(), T0 + 99),
        Err(RefreshError::Revoked)
    ));
    assert!(matches!(
        f.store.revoke_client_tokens("nope"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        f.store.revoke_user_tokens(UserId(999)),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn a_revoked_client_can_no_longer_refresh() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1");
    let token = f.refresh(&alice, "c1", &family);
    f.store.revoke_client("c1").unwrap();
    assert!(matches!(
        f.store
            .rotate_refresh(&token.hash(), "c1", &Secret::generate().hash(), T0 + 99),
        Err(RefreshError::Revoked)
    ));
}

// ---- revoked access tokens --------------------------------------------------

#[test]
fn revoked_jtis_are_kept_until_expiry() {
    let f = Fixture::new();
    f.store.revoke_jti("jti-1", T0 + 900).unwrap();
    f.store.revoke_jti("jti-2", T0 + 60).unwrap();
    f.store.revoke_jti("jti-2", T0 + 30).unwrap();
    assert!(f.store.is_jti_revoked("jti-1").unwrap());
    assert!(!f.store.is_jti_revoked("jti-3").unwrap());
    assert_eq!(
        f.store.revoked_jtis(T0).unwrap(),
        [
            RevokedJti {
                jti: "jti-2".to_owned(),
                expires_at: T0 + 60
            },
            RevokedJti {
                jti: "jti-1".to_owned(),
                expires_at: T0 + 900
            },
        ],
        "a second revocation never shortens the record"
    );
    assert_eq!(f.store.revoked_jtis(T0 + 60).unwrap().len(), 1);
    let err = f
        .store
        .revoke_jti(&"j".repeat(MAX_JTI_LEN + 1), T0)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
}

// ---- signing keys -----------------------------------------------------------

#[test]
fn keys_rotate_with_overlap_through_the_jwks() {
    let f = Fixture::new();
    assert_eq!(f.store.active_key().unwrap(), None);
    f.store.insert_key(&new_key("k1")).unwrap();
    let k1 = f.store.active_key().unwrap().unwrap();
    assert_eq!(k1.kid, "k1");
    assert_eq!(k1.algorithm, KeyAlgorithm::EdDsa);
    assert_eq!(k1.private_key, new_key("k1").private_key);
    assert!(
        !format!("{k1:?}").contains("46"),
        "the private key is masked"
    );
    let err = f.store.insert_key(&new_key("k1")).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    // Same second as k1: the newer insert still wins.
    f.store.rotate_key(&new_key("k2"), T0 + 900).unwrap();
    assert_eq!(f.store.active_key().unwrap().unwrap().kid, "k2");
    let jwks: Vec<String> = f
        .store
        .keys_for_jwks(T0)
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(jwks, ["k2", "k1"]);
    let k1_public = &f.store.keys_for_jwks(T0).unwrap()[1];
    assert_eq!(k1_public.retires_at, Some(T0 + 900));
    assert_eq!(k1_public.public_jwk["x"], "k1");

    let jwks_later: Vec<String> = f
        .store
        .keys_for_jwks(T0 + 900)
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(jwks_later, ["k2"]);

    f.store.retire_key("k2", T0).unwrap();
    assert_eq!(
        f.store.active_key().unwrap().unwrap().kid,
        "k1",
        "k1 signs until it retires"
    );
    assert!(matches!(
        f.store.retire_key("nope", T0),
        Err(StoreError::NotFound { .. })
    ));

    let bad = NewSigningKey {
        public_jwk: serde_json::json!("not an object"),
        ..new_key("k3")
    };
    assert!(matches!(
        f.store.insert_key(&bad),
        Err(StoreError::Invalid { .. })
    ));
}

// ---- housekeeping -----------------------------------------------------------

#[test]
fn purge_deletes_only_what_expired() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let (_, family) = f.code(&alice, "c1"); // expires T0+60
    f.refresh(&alice, "c1", &family); // expires T0+3600
    f.store.revoke_jti("j", T0 + 900).unwrap();
    f.store.insert_key(&new_key("k1")).unwrap();
    f.store.rotate_key(&new_key("k2"), T0 + 900).unwrap();

    assert_eq!(f.store.purge_expired(T0).unwrap(), PurgeReport::default());
    assert_eq!(
        f.store.purge_expired(T0 + 900).unwrap(),
        PurgeReport {
            codes: 1,
            refresh_tokens: 0,
            setup_tokens: 0,
            revoked_jtis: 1,
            signing_keys: 1,
        }
    );
    assert_eq!(
        f.store.purge_expired(T0 + SETUP_TOKEN_TTL_SECS).unwrap(),
        PurgeReport {
            refresh_tokens: 1,
            setup_tokens: 1,
            ..PurgeReport::default()
        }
    );
    assert_eq!(f.store.active_key().unwrap().unwrap().kid, "k2");
}

#[test]
fn every_write_bumps_the_revision_and_reads_do_not() {
    let f = Fixture::new();
    let r0 = f.store.revision().unwrap();
    let alice = f.user("alice@example.com");
    let r1 = f.store.revision().unwrap();
    assert!(r1 > r0);
    f.store.list_users().unwrap();
    f.store.get_user(alice.id).unwrap();
    assert_eq!(f.store.revision().unwrap(), r1);
    f.store.enable_user(alice.id).unwrap(); // already enabled: nothing changed
    assert_eq!(f.store.revision().unwrap(), r1);
    f.store.disable_user(alice.id).unwrap();
    let r2 = f.store.revision().unwrap();
    assert!(r2 > r1);
    f.store.revoke_jti("j", T0 + 1).unwrap();
    assert!(f.store.revision().unwrap() > r2);
}

#[test]
fn two_stores_on_one_file_see_each_others_writes() {
    let f = Fixture::new();
    let cli = f.second();
    let before = f.store.revision().unwrap();
    let (alice, _) = cli.add_user(&new_user("alice@example.com", &[])).unwrap();
    assert!(f.store.revision().unwrap() > before, "the relay notices");
    assert_eq!(f.store.get_user(alice.id).unwrap(), Some(alice.clone()));
    cli.disable_user(alice.id).unwrap();
    assert!(f.store.get_user(alice.id).unwrap().unwrap().disabled);
    f.store.enable_user(alice.id).unwrap();
    assert!(!cli.get_user(alice.id).unwrap().unwrap().disabled);
}

#[test]
fn secrets_are_never_stored_in_plain() {
    let f = Fixture::new();
    let (alice, setup) = f
        .store
        .add_user(&new_user("alice@example.com", &[]))
        .unwrap();
    f.client("c1");
    let (code, family) = f.code(&alice, "c1");
    let refresh = f.refresh(&alice, "c1", &family);
    let sa_secret = Secret::generate();
    f.store
        .insert_client(&service_account("sa", &sa_secret, None))
        .unwrap();
    let rotated = Secret::generate();
    f.store
        .rotate_refresh(&refresh.hash(), "c1", &rotated.hash(), T0 + 99)
        .unwrap();

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(f.dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    // Sanity: the scan does see stored data, hashes included.
    assert!(contains(&bytes, b"alice@example.com"));
    assert!(contains(&bytes, code.hash().as_bytes()));
    for secret in [&setup, &code, &refresh, &sa_secret, &rotated] {
        let plain = secret.expose().as_bytes();
        let raw = hex::decode(secret.expose()).unwrap();
        assert!(!contains(&bytes, plain), "a secret was stored in plain");
        assert!(!contains(&bytes, &raw), "a secret's bytes were stored");
    }
}

#[test]
fn a_corrupt_row_is_an_error_naming_its_table() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    f.client("c1");
    let raw = f.raw();
    raw.execute("UPDATE users SET groups_json = 'not json'", [])
        .unwrap();
    raw.execute("UPDATE clients SET kind = 'martian'", [])
        .unwrap();
    for err in [
        f.store.list_users().unwrap_err(),
        f.store.get_user(alice.id).unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::Corrupt { table: "users", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`users`"), "{err}");
    }
    let err = f.store.list_clients().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "clients",
                ..
            }
        ),
        "{err}"
    );

    raw.execute(
        "INSERT INTO signing_keys VALUES ('bad', 'HS256', x'00', '{}', 0, NULL)",
        [],
    )
    .unwrap();
    let err = f.store.keys_for_jwks(T0).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "signing_keys",
                ..
            }
        ),
        "{err}"
    );

    raw.execute("DELETE FROM revision", []).unwrap();
    let err = f.store.revision().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "revision",
                ..
            }
        ),
        "{err}"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn enrollment_tokens_work_once_and_expire() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let token = f.store.issue_enroll_token(alice.id, 600).unwrap();
    assert_eq!(
        f.store.take_enroll_token(&token.hash()).unwrap(),
        Ok(alice.id)
    );
    assert_eq!(
        f.second().take_enroll_token(&token.hash()).unwrap(),
        Err(EnrollError::Used(T0)),
        "a reuse is reported as such, from any process"
    );
    assert_eq!(
        f.store
            .take_enroll_token(&Secret::generate().hash())
            .unwrap(),
        Err(EnrollError::Unknown)
    );
    let late = f.store.issue_enroll_token(alice.id, 60).unwrap();
    f.clock.set(T0 + 61);
    assert_eq!(
        f.store.take_enroll_token(&late.hash()).unwrap(),
        Err(EnrollError::Expired(T0 + 60))
    );
    let disabled = f.store.issue_enroll_token(alice.id, 600).unwrap();
    f.store.disable_user(alice.id).unwrap();
    assert_eq!(
        f.store.take_enroll_token(&disabled.hash()).unwrap(),
        Err(EnrollError::Disabled)
    );
    assert!(f.store.issue_enroll_token(UserId(999), 60).is_err());
}

#[test]
fn devices_are_recorded_listed_and_revoked_across_processes() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let rev0 = f.store.revision().unwrap();
    let d = f
        .store
        .insert_device(&NewDevice {
            id: "dev_a".into(),
            user_id: alice.id,
            label: "laptop".into(),
            key_sha256: "ab".repeat(32),
            cert_expires_at: T0 + 86_400,
        })
        .unwrap();
    assert_eq!(d.created_at, T0);
    assert!(d.revoked_at.is_none());
    f.store.touch_device("dev_a").unwrap();
    assert_eq!(
        f.store.revision().unwrap(),
        rev0 + 1,
        "a connection does not wake the watchers"
    );
    f.second().revoke_device("dev_a").unwrap();
    assert!(f.store.revision().unwrap() > rev0 + 1);
    let got = f.store.get_device("dev_a").unwrap().unwrap();
    assert_eq!(got.revoked_at, Some(T0));
    assert_eq!(got.last_seen_at, Some(T0));
    assert_eq!(f.store.list_devices().unwrap().len(), 1);
    assert!(matches!(
        f.store.revoke_device("dev_missing"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        f.store
            .insert_device(&NewDevice {
                id: "dev_b".into(),
                user_id: alice.id,
                label: "bad\nlabel".into(),
                key_sha256: "ab".repeat(32),
                cert_expires_at: T0,
            })
            .is_err()
    );
}

// ---- listings for the credential inventory ------------------------------------

#[test]
fn refresh_families_are_listed_one_row_each_with_their_span() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let bob = f.user("bob@example.com");
    f.client("c1");
    f.client("c2");
    assert!(f.store.list_refresh_families().unwrap().is_empty());

    // Alice's family: issued at T0 (expiry T0 + 3600), rotated at T0 + 10.
    let (_, fam_a) = f.code(&alice, "c1");
    let first = f.refresh(&alice, "c1", &fam_a);
    // Bob's family: issued at T0 + 5, revoked at T0 + 20.
    f.clock.advance(5);
    let (_, fam_b) = f.code(&bob, "c2");
    f.refresh(&bob, "c2", &fam_b);
    f.clock.set(T0 + 10);
    f.store
        .rotate_refresh(&first.hash(), "c1", &Secret::generate().hash(), T0 + 7200)
        .unwrap();
    f.clock.set(T0 + 20);
    f.second().revoke_family(&fam_b).unwrap();

    let got = f.store.list_refresh_families().unwrap();
    assert_eq!(
        got,
        vec![
            RefreshFamily {
                family: fam_a.clone(),
                client_id: "c1".into(),
                user_id: alice.id,
                created_at: T0,
                expires_at: T0 + 7200,
                last_used_at: T0 + 10,
                revoked_at: None,
            },
            RefreshFamily {
                family: fam_b,
                client_id: "c2".into(),
                user_id: bob.id,
                created_at: T0 + 5,
                expires_at: T0 + 5 + 3600,
                last_used_at: T0 + 5,
                revoked_at: Some(T0 + 20),
            },
        ],
        "one row per family, oldest first; the live token's expiry, not the used one's"
    );

    // Revoking the client revokes the family as a whole; nothing is secret in the rows.
    f.clock.set(T0 + 30);
    f.store.revoke_client("c1").unwrap();
    let got = f.store.list_refresh_families().unwrap();
    assert_eq!(got[0].revoked_at, Some(T0 + 30));
    assert_eq!(
        got[0].expires_at,
        T0 + 7200,
        "with no live token, the latest expiry of any"
    );
}

#[test]
fn enrollment_tokens_are_listed_by_id_and_revoked_by_prefix() {
    let f = Fixture::new();
    let alice = f.user("alice@example.com");
    let old = f.store.issue_enroll_token(alice.id, 600).unwrap();
    f.clock.advance(1);
    let new = f.store.issue_enroll_token(alice.id, 3600).unwrap();
    let id_of = |s: &Secret| hex::encode(s.hash().as_bytes())[..ENROLL_TOKEN_ID_LEN].to_owned();

    let listed = f.store.list_enroll_tokens().unwrap();
    assert_eq!(
        listed,
        vec![
            EnrollToken {
                id: id_of(&new),
                user_id: alice.id,
                created_at: T0 + 1,
                expires_at: T0 + 1 + 3600,
                used_at: None,
            },
            EnrollToken {
                id: id_of(&old),
                user_id: alice.id,
                created_at: T0,
                expires_at: T0 + 600,
                used_at: None,
            },
        ],
        "newest first"
    );

    // Revoked from another process by its listed id (any case): refused as expired at once.
    let rev = f.store.revision().unwrap();
    f.clock.advance(4);
    assert!(
        f.second()
            .revoke_enroll_token(&id_of(&new).to_uppercase())
            .unwrap()
    );
    assert!(f.store.revision().unwrap() > rev);
    assert_eq!(
        f.store.take_enroll_token(&new.hash()).unwrap(),
        Err(EnrollError::Expired(T0 + 5))
    );
    assert!(
        !f.store.revoke_enroll_token(&id_of(&new)).unwrap(),
        "nothing left to revoke"
    );

    // A used token has nothing to revoke; its record stays as it was.
    f.store.take_enroll_token(&old.hash()).unwrap().unwrap();
    assert!(!f.store.revoke_enroll_token(&id_of(&old)[..8]).unwrap());
    let old_row = f
        .store
        .list_enroll_tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == id_of(&old))
        .unwrap();
    assert_eq!(
        (old_row.expires_at, old_row.used_at),
        (T0 + 600, Some(T0 + 5))
    );

    // Malformed, ambiguous and unknown ids.
    for bad in ["abc", "zzzzzzzzzzzz", "abcd%_abcdef", &"a".repeat(65)] {
        assert!(
            matches!(
                f.store.revoke_enroll_token(bad),
                Err(StoreError::Invalid { .. })
            ),
            "{bad}"
        );
    }
    let raw = f.raw();
    for tail in [1u8, 2] {
        let mut hash = [0xabu8; 32];
        hash[31] = tail;
        raw.execute(
            "INSERT INTO enroll_tokens (hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![hash.as_slice(), alice.id.0, T0, T0 + 600],
        )
        .unwrap();
    }
    assert!(matches!(
        f.store.revoke_enroll_token("abababab"),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        f.store.revoke_enroll_token("cdcdcdcd"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn grants_are_saved_listed_and_revoked_by_prefix_across_processes() {
    let f = Fixture::new();
    let rev0 = f.store.revision().unwrap();
    let g = f
        .store
        .insert_grant(&NewGrant {
            tunnel: "shop".into(),
            subject: "bob@example.com".into(),
            tools: Some(vec!["read_query".into(), "list_tables".into()]),
            read_only: true,
            created_by: "alice@example.com".into(),
            expires_at: Some(T0 + 3600),
        })
        .unwrap();
    assert_eq!(g.id.len(), 16);
    assert!(g.is_live(T0) && !g.is_live(T0 + 3600));
    assert!(
        f.store.revision().unwrap() > rev0,
        "a grant is an admin change"
    );
    let other = f
        .store
        .insert_grant(&NewGrant {
            tunnel: "crm".into(),
            subject: "group:eng".into(),
            tools: None,
            read_only: false,
            created_by: "carol@example.com".into(),
            expires_at: None,
        })
        .unwrap();
    // The admin CLI (a second process) sees both.
    let second = f.second();
    assert_eq!(second.list_grants(None).unwrap().len(), 2);
    assert_eq!(second.list_grants(Some("shop")).unwrap(), vec![g.clone()]);
    // Prefixes: too short refused, unknown is None, a match revokes once.
    assert!(f.store.revoke_grant("ab").is_err());
    assert!(f.store.revoke_grant("zzzzzz").is_err(), "not hex");
    let unknown = if g.id.starts_with("000000") {
        "ffffff"
    } else {
        "000000"
    };
    if !other.id.starts_with(unknown) {
        assert_eq!(f.store.revoke_grant(unknown).unwrap(), None);
    }
    let revoked = f.store.revoke_grant(&g.id[..8]).unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0));
    assert!(!revoked.is_live(T0));
    assert_eq!(
        f.store.revoke_grant(&g.id).unwrap(),
        None,
        "already revoked"
    );
    assert!(other.is_live(T0 + 10_000_000));
}

#[test]
fn owner_policies_and_tool_catalogs_replace_and_only_real_changes_bump_the_revision() {
    let f = Fixture::new();
    f.store
        .set_tunnel_policy(
            "shop",
            Some(("shop.cedar", "forbid(principal, action, resource);")),
        )
        .unwrap();
    let rev = f.store.revision().unwrap();
    f.store
        .set_tunnel_policy(
            "shop",
            Some(("shop.cedar", "forbid(principal, action, resource);")),
        )
        .unwrap();
    assert_eq!(f.store.revision().unwrap(), rev, "same text: no change");
    let p = f.store.tunnel_policies(None).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].file_name, "shop.cedar");
    f.store.set_tunnel_policy("shop", None).unwrap();
    assert!(f.store.tunnel_policies(None).unwrap().is_empty());

    let tools = serde_json::json!([{"name": "read_query", "annotations": {"readOnlyHint": true}}]);
    f.store.set_tool_catalog("shop", &tools).unwrap();
    let rev = f.store.revision().unwrap();
    f.store.set_tool_catalog("shop", &tools).unwrap();
    assert_eq!(f.store.revision().unwrap(), rev);
    f.store
        .set_tool_catalog("other", &serde_json::json!([]))
        .unwrap();
    assert_eq!(
        f.second().tool_catalogs(Some("shop")).unwrap(),
        vec![("shop".to_owned(), tools)]
    );
    assert_eq!(f.store.tool_catalogs(None).unwrap().len(), 2);
    assert!(f.store.tool_catalogs(Some("nope")).unwrap().is_empty());
    f.store
        .set_tunnel_policy(
            "other",
            Some(("o.cedar", "permit(principal, action, resource);")),
        )
        .unwrap();
    assert!(f.store.tunnel_policies(Some("shop")).unwrap().is_empty());
    assert_eq!(
        f.store.tunnel_policies(Some("other")).unwrap()[0].file_name,
        "o.cedar"
    );
}
