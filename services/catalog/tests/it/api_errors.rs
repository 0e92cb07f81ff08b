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
