//! Bad input of every kind gets a problem+json answer, never a panic, plain text or 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

fn fields(body: &serde_json::Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_invalid_field_is_listed() {
    let app = TestApp::spawn().await;
    let body = json!({"sku": "bad sku!", "name": "", "category": 7, "price": {"amount": "1.234", "currency": "EURO", "x": 1}, "colour": "red"});
    let problem = problem(app.post("/v2/products", body).await, 422).await;
    assert_eq!(
        fields(&problem),
        [
            "sku",
            "name",
            "category",
            "price.currency",
            "price.x",
            "colour"
        ]
    );

    let v1 =
        json!({"sku": "OK-1", "name": "n", "category": "c", "price": "12.50", "currency": "EUR"});
    let problem = problem_of(app.post("/v1/products", v1).await, 422).await;
    assert_eq!(fields(&problem), ["price"]);

    let precise =
        json!({"sku": "OK-1", "name": "n", "category": "c", "price": 12.505, "currency": "EUR"});
    let problem = problem_of(app.post("/v1/products", precise).await, 422).await;
    assert_eq!(fields(&problem), ["price"]);
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("decimal places")
    );

    let negative =
        json!({"sku": "OK-1", "name": "n", "category": "c", "price": -1, "currency": "EUR"});
    problem_of(app.post("/v1/products", negative).await, 422).await;
    let too_long = json!({"sku": "OK-1", "name": "x".repeat(201), "category": "c", "price": 1, "currency": "EUR"});
    assert_eq!(
        fields(&problem_of(app.post("/v1/products", too_long).await, 422).await),
        ["name"]
    );
    let mismatch = app
        .put(
            "/v2/products/OK-1",
            product_v2("OTHER", "c", "1.00"),
            Some("*"),
        )
        .await;
    assert_eq!(mismatch.status(), 422);
}

async fn problem_of(response: reqwest::Response, status: u16) -> serde_json::Value {
    problem(response, status).await
}

#[tokio::test]
async fn malformed_bodies() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, "/v2/products")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    problem(send("{\"sku\":", "application/json").await.unwrap(), 400).await;
    problem(send("not json", "application/json").await.unwrap(), 400).await;
    problem(send("[1,2,3]", "application/json").await.unwrap(), 422).await;
    problem(send("\"text\"", "application/json").await.unwrap(), 422).await;
    problem(send("{\"sku\": \"a\"}", "text/plain").await.unwrap(), 415).await;
    // No body and no content type: not JSON.
    problem(
        app.request(Method::POST, "/v2/products")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let app = TestApp::spawn_with(|s| s.http.max_body_bytes = 1024).await;
    let big = json!({"sku": "BIG", "name": "n", "category": "c", "description": "x".repeat(5000), "price": {"amount": "1", "currency": "EUR"}});
    problem(app.post("/v2/products", big).await, 413).await;
}

#[tokio::test]
async fn bad_query_parameters() {
    let app = TestApp::spawn().await;
    problem(app.get("/v2/products?limit=abc").await, 400).await;
    problem(app.get("/v2/products?limit=0").await, 422).await;
    problem(app.get("/v2/products?limit=101").await, 422).await;
    problem(app.get("/v2/products?colour=red").await, 400).await;
    problem(app.get("/v2/products?continuation=garbage").await, 400).await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = TestApp::spawn().await;
    problem(app.get("/v3/products").await, 404).await;
    let wrong_method = app
        .request(Method::PATCH, "/v2/products")
        .send()
        .await
        .unwrap();
    problem(wrong_method, 405).await;
}

#[tokio::test]
async fn a_key_sent_twice_is_refused_at_any_depth() {
    let app = TestApp::spawn().await;
    let send = |body: &'static str| {
        app.request(Method::POST, "/v2/products")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let top = r#"{"sku":"D-1","name":"a","name":"b","category":"c","price":{"amount":"1.00","currency":"EUR"}}"#;
    let body = problem(send(top).await.unwrap(), 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("`name`"),
        "{body}"
    );
    let nested = r#"{"sku":"D-1","name":"a","category":"c","price":{"amount":"1.00","amount":"0.01","currency":"EUR"}}"#;
    problem(send(nested).await.unwrap(), 400).await;
    assert_eq!(app.get("/v2/products/D-1").await.status(), 404);
}

#[tokio::test]
async fn bodies_the_service_would_misread_are_refused() {
    let app = TestApp::spawn().await;
    let body = json!({"sku": "E-1", "name": "n", "category": "c", "price": {"amount": "1.00", "currency": "EUR"}}).to_string();
    for (content_type, encoding) in [
        ("application/json", Some("br")),
        ("application/json", Some("gzip, zstd")),
        ("application/json; charset=iso-8859-1", None),
    ] {
        let mut request = app
            .request(Method::POST, "/v2/products")
            .header("content-type", content_type)
            .body(body.clone());
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        problem(request.send().await.unwrap(), 415).await;
    }
    let utf8 = app
        .request(Method::POST, "/v2/products")
        .header("content-type", "application/json; charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(utf8.status(), 201);
}

#[tokio::test]
async fn money_text_is_taken_as_sent() {
    let app = TestApp::spawn().await;
    for (amount, currency, field) in [
        (" 12.50", "EUR", "price.amount"),
        ("12.50 ", "EUR", "price.amount"),
        ("12.50", "EUR ", "price.currency"),
    ] {
        let body = json!({"sku": "M-1", "name": "n", "category": "c", "price": {"amount": amount, "currency": currency}});
        let problem = problem(app.post("/v2/products", body).await, 422).await;
        assert_eq!(fields(&problem), [field]);
    }
}

#[tokio::test]
async fn answers_are_not_sniffed_nor_stored_by_shared_caches() {
    let app = TestApp::spawn().await;
    let authenticated = app.get("/v2/products").await;
    assert_eq!(authenticated.headers()["x-content-type-options"], "nosniff");
    assert_eq!(authenticated.headers()["cache-control"], "no-store");
    let anonymous = app
        .http
        .get(format!("{}/health/live", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.headers()["x-content-type-options"], "nosniff");
    let refused = app
        .http
        .get(format!("{}/v2/products", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
}

#[cfg(unix)]
#[tokio::test]
async fn data_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    let mode = |name: &str| {
        std::fs::metadata(app.dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("catalog.db"), 0o600);
    assert_eq!(mode("bus.db"), 0o600);
    for name in ["catalog.db-wal", "bus.db-wal"] {
        if app.dir.path().join(name).exists() {
            assert_eq!(mode(name), 0o600, "{name}");
        }
    }
}

#[tokio::test]
async fn a_full_store_answers_507_and_readiness_says_why() {
    let app = TestApp::spawn_with(|settings| settings.store.max_size_mb = 1).await;
    let mut stored = 0;
    let full = loop {
        let body = json!({
            "sku": format!("F-{stored}"), "name": "n", "category": "c",
            "description": "d".repeat(4000),
            "price": {"amount": "1.00", "currency": "EUR"}
        });
        let response = app.post("/v2/products", body).await;
        if response.status() != 201 {
            break response;
        }
        stored += 1;
        assert!(stored < 2000, "the store never filled up");
    };
    assert!(full.headers().get("retry-after").is_some());
    let body = problem(full, 507).await;
    assert_eq!(body["type"], "urn:problem:insufficient-storage");
    let ready = app
        .http
        .get(format!("{}/health/ready", app.url))
        .send()
        .await
        .unwrap();
    let ready = problem(ready, 503).await;
    assert!(
        ready["detail"].as_str().unwrap().contains("out of space"),
        "{ready}"
    );
    // What was acknowledged is still served.
    assert_eq!(app.get("/v2/products/F-0").await.status(), 200);
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|settings| settings.http.request_timeout_seconds = 1).await;
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let token = app.token(ALL);
    let head = format!(
        "POST /v2/products HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"sku\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The rest never comes; the answer must, within the limit (and well before this).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = socket.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if String::from_utf8_lossy(&answer).contains("\"status\":408") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The server may answer and close before it has read all of an oversized head.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    String::from_utf8_lossy(&answer).into_owned()
}

fn problem_in(answer: &str, status: u16) -> serde_json::Value {
    let (head, body) = answer.split_once("\r\n\r\n").expect("no head");
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{answer}");
    let problem: serde_json::Value = serde_json::from_str(body).expect("a problem body");
    assert_eq!(problem["status"], status);
    problem
}

#[tokio::test]
async fn answers_the_http_decoder_gives_are_problems_too() {
    let app = TestApp::spawn_with(|settings| settings.http.request_timeout_seconds = 1).await;
    let huge = format!(
        "GET /v2/products HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let answer = raw_exchange(&app, huge.as_bytes()).await;
    assert_eq!(
        problem_in(&answer, 431)["type"],
        "urn:problem:headers-too-large"
    );
    let many: String = (0..120).map(|n| format!("x-h{n}: v\r\n")).collect();
    let answer = raw_exchange(
        &app,
        format!("GET /v2/products HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    problem_in(&answer, 431);
    let answer = raw_exchange(
        &app,
        b"GET /v2/products HTTP/1.1\r\nbad header line\r\n\r\n",
    )
    .await;
    assert_eq!(
        problem_in(&answer, 400)["type"],
        "urn:problem:malformed-request"
    );
    // A head that never ends is cut off by the request timeout.
    let answer = raw_exchange(&app, b"GET /v2/products HTTP/1.1\r\nhost: x\r\n").await;
    problem_in(&answer, 408);
    // The service still answers as usual.
    assert_eq!(app.get("/v2/products").await.status(), 200);
}

#[tokio::test]
async fn only_bodies_worth_it_are_compressed() {
    let app = TestApp::spawn().await;
    app.post("/v2/products", json!({"sku": "Z-1", "name": "z", "category": "c", "price": {"amount": "1.00", "currency": "EUR"}}))
        .await;
    // A client that shows the answer as sent (no transparent decompression).
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_deflate()
        .build()
        .unwrap();
    let small = raw
        .get(format!("{}/v2/products/Z-1", app.url))
        .bearer_auth(app.token(ALL))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert!(small.headers().get("content-encoding").is_none());
    let body: serde_json::Value = small.json().await.unwrap();
    assert_eq!(body["sku"], "Z-1");
    let large = raw
        .get(format!("{}/openapi.json", app.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(large.headers()["content-encoding"], "gzip");
}
