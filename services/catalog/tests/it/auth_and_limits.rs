use reqwest::Method;

use crate::helpers::*;

#[tokio::test]
async fn tokens_and_scopes() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v2/products", app.url);
    let none = app.http.get(&url).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    problem(none, 401).await;
    problem(
        app.http
            .get(&url)
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    problem(
        app.http
            .get(&url)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;

    let foreign = common::auth::mint_dev_token(
        &secrecy::SecretString::from("some-other-secret-entirely-000000000".to_owned()),
        &app.settings.auth,
        "mallory",
        ALL,
        600,
    )
    .unwrap();
    problem(
        app.http
            .get(&url)
            .bearer_auth(foreign)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;

    let read_only = app.token("catalog.read");
    assert_eq!(
        app.http
            .get(&url)
            .bearer_auth(&read_only)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let forbidden = app
        .http
        .post(&url)
        .bearer_auth(&read_only)
        .json(&product_v2("S-1", "c", "1.00"))
        .send()
        .await
        .unwrap();
    let body = problem(forbidden, 403).await;
    assert!(body["detail"].as_str().unwrap().contains("catalog.write"));
    let wrong_service = app.token("orders.read");
    problem(
        app.http
            .get(&url)
            .bearer_auth(wrong_service)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
}

#[tokio::test]
async fn clients_are_rate_limited_each_on_their_own() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limit.per_second = 1;
        s.rate_limit.burst = 3;
    })
    .await;
    for _ in 0..3 {
        let ok = app.get("/v2/products").await;
        assert_eq!(ok.status(), 200);
        assert!(
            ok.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("limit=3")
        );
    }
    let limited = app.get("/v2/products").await;
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(limited.headers()["ratelimit-remaining"] == "0");
    problem(limited, 429).await;

    // Another subject has its own budget; health probes are never limited.
    let other = common::auth::mint_dev_token(
        &secrecy::SecretString::from(SECRET.to_owned()),
        &app.settings.auth,
        "someone-else",
        ALL,
        600,
    )
    .unwrap();
    let theirs = app
        .http
        .request(Method::GET, format!("{}/v2/products", app.url))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 200);
    for _ in 0..5 {
        assert_eq!(
            app.http
                .get(format!("{}/health/live", app.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn an_unreachable_identity_provider_is_a_503_not_a_401() {
    let app = TestApp::spawn_with(|settings| {
        settings.auth.mode = common::config::AuthMode::Oidc;
        settings.auth.issuer = "http://127.0.0.1:9".into();
    })
    .await;
    use base64::Engine as _;
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let token = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"k-1","typ":"JWT"}"#),
        b64(r#"{"sub":"x"}"#),
        b64("signature")
    );
    let response = app
        .http
        .get(format!("{}/v2/products", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_some());
    let body = problem(response, 503).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be checked"),
        "{body}"
    );
}
