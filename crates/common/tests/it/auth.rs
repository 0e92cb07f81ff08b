//! Token validation: HS256 development tokens and RS256/ES256 against a JWKS served by a
//! real in-process OIDC issuer whose keys a test can rotate.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use common::auth::{AuthError, Authenticator, Claims, JwksClient, mint_dev_token};
use common::config::{AuthSettings, Settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use secrecy::SecretString;
use serde_json::json;

const RSA_PRIVATE: &str = include_str!("../fixtures/rsa-private.pem");
const EC_PRIVATE: &str = include_str!("../fixtures/ec-private.pem");
const RSA_JWKS: &str = include_str!("../fixtures/jwks-rsa.json");
const EC_JWKS: &str = include_str!("../fixtures/jwks-ec.json");

fn settings() -> AuthSettings {
    Settings::defaults().auth
}

fn claims(settings: &AuthSettings) -> Claims {
    let now = get_current_timestamp();
    Claims {
        sub: "client-1".into(),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        exp: now + 600,
        nbf: Some(now),
        iat: Some(now),
        scp: Some("catalog.read catalog.write".into()),
        scope: None,
        roles: vec![],
    }
}

fn secret() -> SecretString {
    SecretString::from("a-test-secret-that-is-long-enough-for-hs256".to_owned())
}

fn hs256(claims: &Claims, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn dev_token_round_trips_with_scopes() {
    let settings = settings();
    let token = mint_dev_token(
        &secret(),
        &settings,
        "alice",
        "catalog.read orders.write",
        60,
    )
    .unwrap();
    let principal = Authenticator::hs256(&secret(), &settings)
        .validate(&token)
        .await
        .unwrap();
    assert_eq!(principal.subject, "alice");
    assert!(principal.has_scope("catalog.read") && principal.has_scope("orders.write"));
    assert!(!principal.has_scope("catalog.write"));
}

#[test]
fn the_operator_scope_grants_reading_and_administration_but_no_business_write() {
    let operator = common::auth::Principal {
        subject: "ops".into(),
        scopes: ["platform.operator".to_owned()].into(),
    };
    for granted in [
        "catalog.read",
        "orders.read",
        "sync.admin",
        "notifications.admin",
        "platform.operator",
    ] {
        assert!(operator.require(granted).is_ok(), "{granted}");
    }
    for refused in ["catalog.write", "orders.write", "other"] {
        assert!(operator.require(refused).is_err(), "{refused}");
    }
}

#[tokio::test]
async fn hs256_rejections() {
    let settings = settings();
    let authenticator = Authenticator::hs256(&secret(), &settings);
    let good = claims(&settings);

    let wrong_secret = hs256(&good, "another-secret-entirely-different-bytes");
    assert_eq!(
        authenticator.validate(&wrong_secret).await,
        Err(AuthError::Signature)
    );

    let expired = Claims {
        exp: get_current_timestamp() - 3600,
        ..good.clone()
    };
    assert_eq!(
        authenticator
            .validate(&hs256(
                &expired,
                "a-test-secret-that-is-long-enough-for-hs256"
            ))
            .await,
        Err(AuthError::Expired)
    );

    let future = Claims {
        nbf: Some(get_current_timestamp() + 3600),
        ..good.clone()
    };
    assert_eq!(
        authenticator
            .validate(&hs256(
                &future,
                "a-test-secret-that-is-long-enough-for-hs256"
            ))
            .await,
        Err(AuthError::NotYetValid)
    );

    let other_audience = Claims {
        aud: "someone-else".into(),
        ..good.clone()
    };
    assert_eq!(
        authenticator
            .validate(&hs256(
                &other_audience,
                "a-test-secret-that-is-long-enough-for-hs256"
            ))
            .await,
        Err(AuthError::Audience)
    );

    let other_issuer = Claims {
        iss: "evil".into(),
        ..good.clone()
    };
    assert_eq!(
        authenticator
            .validate(&hs256(
                &other_issuer,
                "a-test-secret-that-is-long-enough-for-hs256"
            ))
            .await,
        Err(AuthError::Issuer)
    );

    assert_eq!(
        authenticator.validate("not.a.token").await,
        Err(AuthError::Malformed)
    );
    assert_eq!(authenticator.validate("").await, Err(AuthError::Malformed));
}

#[tokio::test]
async fn small_clock_skew_is_tolerated() {
    let settings = settings();
    let authenticator = Authenticator::hs256(&secret(), &settings);
    let skewed = Claims {
        exp: get_current_timestamp() - 5,
        ..claims(&settings)
    };
    assert!(
        authenticator
            .validate(&hs256(
                &skewed,
                "a-test-secret-that-is-long-enough-for-hs256"
            ))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    use base64::Engine as _;
    let settings = settings();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(serde_json::to_value(claims(&settings)).unwrap())
    );
    let result = Authenticator::hs256(&secret(), &settings)
        .validate(&token)
        .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn roles_and_scope_claims_become_scopes() {
    let settings = settings();
    let mut with_roles = claims(&settings);
    with_roles.scp = None;
    with_roles.scope = Some("sync.admin".into());
    with_roles.roles = vec!["notifications.admin".into()];
    let token = hs256(&with_roles, "a-test-secret-that-is-long-enough-for-hs256");
    let principal = Authenticator::hs256(&secret(), &settings)
        .validate(&token)
        .await
        .unwrap();
    assert!(principal.has_scope("sync.admin") && principal.has_scope("notifications.admin"));
}

/// A tiny OIDC issuer: discovery document and JWKS; tests swap the keys it serves.
struct Issuer {
    url: String,
    keys: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// While set, the issuer answers 503 (an outage).
    down: Arc<std::sync::atomic::AtomicBool>,
    _server: actix_web::dev::ServerHandle,
}

async fn issuer(initial_keys: &str) -> Issuer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(initial_keys.to_owned()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (served_keys, served_fetches, base) = (keys.clone(), fetches.clone(), url.clone());
    let served_down = down.clone();
    let server = HttpServer::new(move || {
        let keys = served_keys.clone();
        let fetches = served_fetches.clone();
        let down = served_down.clone();
        let base = base.clone();
        App::new()
            .route(
                "/.well-known/openid-configuration",
                web::get().to(move || {
                    let base = base.clone();
                    async move {
                        HttpResponse::Ok()
                            .json(json!({"issuer": base, "jwks_uri": format!("{base}/keys")}))
                    }
                }),
            )
            .route(
                "/keys",
                web::get().to(move || {
                    let keys = keys.lock().unwrap().clone();
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let down = down.load(Ordering::SeqCst);
                    async move {
                        if down {
                            return HttpResponse::ServiceUnavailable().finish();
                        }
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(keys)
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Issuer {
        url,
        keys,
        fetches,
        down,
        _server: handle,
    }
}

fn oidc_settings(issuer: &Issuer) -> AuthSettings {
    AuthSettings {
        issuer: issuer.url.clone(),
        ..settings()
    }
}

fn signed(claims: &Claims, algorithm: Algorithm, kid: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        other => panic!("no key for {other:?}"),
    };
    encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_and_es256_validate_against_jwks() {
    let issuer = issuer(RSA_JWKS).await;
    let settings = oidc_settings(&issuer);
    let authenticator = Authenticator::oidc(JwksClient::for_settings(&settings), &settings);
    let rs = signed(&claims(&settings), Algorithm::RS256, "rsa-1");
    assert_eq!(
        authenticator.validate(&rs).await.unwrap().subject,
        "client-1"
    );

    // Key rotation: the issuer now publishes the EC key; an unknown kid triggers a refresh.
    *issuer.keys.lock().unwrap() = EC_JWKS.to_owned();
    let settings_fast = AuthSettings {
        jwks_refresh_min_seconds: 0,
        ..settings.clone()
    };
    let rotating = Authenticator::oidc(JwksClient::for_settings(&settings_fast), &settings_fast);
    let es = signed(&claims(&settings), Algorithm::ES256, "ec-1");
    assert_eq!(rotating.validate(&es).await.unwrap().subject, "client-1");
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_it_expires_and_a_changed_one_is_not() {
    let issuer = issuer(RSA_JWKS).await;
    let settings = AuthSettings {
        jwks_refresh_min_seconds: 0,
        ..oidc_settings(&issuer)
    };
    let authenticator = Authenticator::oidc(JwksClient::for_settings(&settings), &settings);
    let token = signed(&claims(&settings), Algorithm::RS256, "rsa-1");
    assert_eq!(
        authenticator.validate(&token).await.unwrap().subject,
        "client-1"
    );
    // The issuer drops the key (seen at the next refresh, which an unknown kid causes): a
    // token not seen before cannot be checked any more ...
    *issuer.keys.lock().unwrap() = EC_JWKS.to_owned();
    let es = signed(&claims(&settings), Algorithm::ES256, "ec-1");
    assert!(authenticator.validate(&es).await.is_ok());
    let fresh = signed(
        &Claims {
            sub: "client-2".into(),
            ..claims(&settings)
        },
        Algorithm::RS256,
        "rsa-1",
    );
    assert_eq!(
        authenticator.validate(&fresh).await,
        Err(AuthError::UnknownKey)
    );
    // ... while the one verified before is still good until its exp, without a look at
    // the keys (as an RS256 check per request would cost).
    let fetches = issuer.fetches.load(Ordering::SeqCst);
    assert_eq!(
        authenticator.validate(&token).await.unwrap().subject,
        "client-1"
    );
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), fetches);
    // Remembered by its whole text: the same claims with another signature are checked.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(authenticator.validate(&forged).await.is_err());
}

#[tokio::test]
async fn unknown_kids_do_not_hammer_the_issuer() {
    let issuer = issuer(RSA_JWKS).await;
    let settings = AuthSettings {
        jwks_refresh_min_seconds: 3600,
        ..oidc_settings(&issuer)
    };
    let authenticator = Authenticator::oidc(JwksClient::for_settings(&settings), &settings);
    for _ in 0..5 {
        let token = signed(&claims(&settings), Algorithm::RS256, "unknown-kid");
        assert_eq!(
            authenticator.validate(&token).await,
            Err(AuthError::UnknownKey)
        );
    }
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let issuer = issuer(RSA_JWKS).await;
    let settings = oidc_settings(&issuer);
    let authenticator = Authenticator::oidc(JwksClient::for_settings(&settings), &settings);
    // HS256 signed with the public key's bytes: the classic confusion attack.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged = encode(
        &header,
        &claims(&settings),
        &EncodingKey::from_secret(RSA_JWKS.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        authenticator.validate(&forged).await,
        Err(AuthError::Algorithm)
    );
    // An ES256 header pointing at the RSA key.
    let mismatched = signed(&claims(&settings), Algorithm::ES256, "rsa-1");
    assert_eq!(
        authenticator.validate(&mismatched).await,
        Err(AuthError::Algorithm)
    );
    // And the HS256 validator refuses asymmetric tokens.
    let rs = signed(&claims(&settings), Algorithm::RS256, "rsa-1");
    assert_eq!(
        Authenticator::hs256(&secret(), &settings)
            .validate(&rs)
            .await,
        Err(AuthError::Algorithm)
    );
}

#[tokio::test]
async fn unreachable_issuer_is_a_clean_failure() {
    let settings = AuthSettings {
        issuer: "http://127.0.0.1:9".into(),
        ..settings()
    };
    let client = JwksClient::new(settings.issuer.clone(), None, Duration::ZERO);
    let authenticator = Authenticator::oidc(client, &settings);
    let token = signed(&claims(&settings), Algorithm::RS256, "rsa-1");
    assert_eq!(
        authenticator.validate(&token).await,
        Err(AuthError::KeysUnavailable)
    );
}

#[tokio::test]
async fn an_identity_provider_outage_is_unavailable_and_ends_when_it_comes_back() {
    let issuer = issuer(RSA_JWKS).await;
    issuer.down.store(true, Ordering::SeqCst);
    // A long interval between refreshes for unknown keys must not delay recovery.
    let settings = AuthSettings {
        jwks_refresh_min_seconds: 3600,
        ..oidc_settings(&issuer)
    };
    let authenticator = Authenticator::oidc(JwksClient::for_settings(&settings), &settings);
    let token = signed(&claims(&settings), Algorithm::RS256, "rsa-1");
    assert_eq!(
        authenticator.validate(&token).await,
        Err(AuthError::KeysUnavailable)
    );
    // Within the back-off it stays unavailable, without asking the issuer again.
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    assert_eq!(
        authenticator.validate(&token).await,
        Err(AuthError::KeysUnavailable)
    );
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), fetched);
    issuer.down.store(false, Ordering::SeqCst);
    let recovered = common::testing::eventually(Duration::from_secs(10), || async {
        authenticator.validate(&token).await.is_ok()
    })
    .await;
    assert!(
        recovered,
        "the issuer came back but tokens are still refused"
    );
}
