use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn create_read_update_delete_in_v1_and_v2() {
    let app = TestApp::spawn().await;
    let created = app.post("/v1/products", product_v1("ABC-1", "tools")).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/products/ABC-1");
    let first_etag = etag(&created);
    let text = created.text().await.unwrap();
    assert!(
        text.contains("\"price\":12.50"),
        "v1 price keeps its decimals: {text}"
    );

    let v2: Value = app.get("/v2/products/ABC-1").await.json().await.unwrap();
    assert_eq!(v2["price"], json!({"amount": "12.50", "currency": "EUR"}));
    assert_eq!(v2["category"], "tools");
    assert_eq!(v2["description"], "A thing");

    let updated = app
        .put(
            "/v2/products/ABC-1",
            product_v2("ABC-1", "garden", "19.99"),
            Some(&first_etag),
        )
        .await;
    assert_eq!(updated.status(), 200);
    let second_etag = etag(&updated);
    assert_ne!(first_etag, second_etag);
    let v1: Value = app.get("/v1/products/ABC-1").await.json().await.unwrap();
    assert_eq!(v1["price"], json!(19.99));
    assert_eq!(v1["category"], "garden");
    assert_eq!(v1["createdAt"], v2["createdAt"]);

    let stale = app
        .put(
            "/v1/products/ABC-1",
            product_v1("ABC-1", "x"),
            Some(&first_etag),
        )
        .await;
    problem(stale, 412).await;

    let deleted = app
        .request(Method::DELETE, "/v2/products/ABC-1")
        .header("if-match", &second_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    problem(app.get("/v2/products/ABC-1").await, 404).await;
}

#[tokio::test]
async fn v1_is_deprecated_and_v2_is_not() {
    let app = TestApp::spawn().await;
    let v1 = app.get("/v1/products").await;
    assert_eq!(v1.status(), 200);
    assert!(
        v1.headers()["deprecation"]
            .to_str()
            .unwrap()
            .starts_with('@')
    );
    assert!(v1.headers()["sunset"].to_str().unwrap().ends_with("GMT"));
    assert!(
        v1.headers()["link"]
            .to_str()
            .unwrap()
            .contains("successor-version")
    );
    let v2 = app.get("/v2/products").await;
    assert!(v2.headers().get("deprecation").is_none());
    assert!(v2.headers().get("sunset").is_none());
}

#[tokio::test]
async fn money_is_exact_in_both_versions() {
    let app = TestApp::spawn().await;
    let cases = [
        ("0.1", "0.10"),
        ("1999.99", "1999.99"),
        ("7", "7.00"),
        ("1234567890.05", "1234567890.05"),
    ];
    for (index, (sent, expected)) in cases.iter().enumerate() {
        let sku = format!("M-{index}");
        assert_eq!(
            app.post("/v2/products", product_v2(&sku, "m", sent))
                .await
                .status(),
            201
        );
        let v2: Value = app
            .get(&format!("/v2/products/{sku}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v2["price"]["amount"], *expected);
        let v1 = app
            .get(&format!("/v1/products/{sku}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(v1.contains(&format!("\"price\":{expected}")), "{v1}");
    }
    let yen = json!({"sku": "JP-1", "name": "n", "category": "c", "price": {"amount": "1500", "currency": "JPY"}});
    assert_eq!(app.post("/v2/products", yen).await.status(), 201);
    let v1 = app.get("/v1/products/JP-1").await.text().await.unwrap();
    assert!(v1.contains("\"price\":1500,"), "{v1}");
}

#[tokio::test]
async fn list_pages_with_continuation_and_filters_by_category() {
    let app = TestApp::spawn().await;
    for n in 0..7 {
        app.post("/v1/products", product_v1(&format!("T-{n}"), "tools"))
            .await;
        app.post("/v1/products", product_v1(&format!("G-{n}"), "garden"))
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/v2/products?category=tools&limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = app.list(&path).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["sku"].as_str().unwrap().to_owned()));
        match page["continuation"].as_str() {
            Some(token) => {
                path = format!(
                    "/v2/products?category=tools&limit=3&continuation={}",
                    urlencode(token)
                )
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|n| format!("T-{n}")).collect::<Vec<_>>());

    let all: Value = app
        .get("/v1/products?limit=100")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 14);
    assert!(all.get("continuation").is_none());
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn conditional_requests() {
    let app = TestApp::spawn().await;
    let created = app
        .post("/v2/products", product_v2("C-1", "c", "1.00"))
        .await;
    let tag = etag(&created);
    let unchanged = app
        .request(Method::GET, "/v2/products/C-1")
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert_eq!(etag(&unchanged), tag);
    let changed = app
        .request(Method::GET, "/v2/products/C-1")
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    let without = app
        .put("/v2/products/C-1", product_v2("C-1", "c", "2.00"), None)
        .await;
    problem(without, 428).await;
    let empty = app
        .put("/v2/products/C-1", product_v2("C-1", "c", "2.00"), Some(""))
        .await;
    problem(empty, 428).await;
    let any = app
        .put(
            "/v2/products/C-1",
            product_v2("C-1", "c", "2.00"),
            Some("*"),
        )
        .await;
    assert_eq!(any.status(), 200);
    let malformed = app
        .put(
            "/v2/products/C-1",
            product_v2("C-1", "c", "2.00"),
            Some("no-quotes"),
        )
        .await;
    problem(malformed, 400).await;
    let stale_delete = app
        .request(Method::DELETE, "/v2/products/C-1")
        .header("if-match", &tag)
        .send()
        .await
        .unwrap();
    problem(stale_delete, 412).await;
}

#[tokio::test]
async fn duplicates_and_unknown_ids() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post("/v2/products", product_v2("D-1", "c", "1.00"))
            .await
            .status(),
        201
    );
    let again = problem(
        app.post("/v2/products", product_v2("D-1", "c", "1.00"))
            .await,
        409,
    )
    .await;
    assert!(again["detail"].as_str().unwrap().contains("D-1"));
    problem(app.get("/v2/products/NOPE").await, 404).await;
    problem(app.get("/v2/products/%20bad%20sku").await, 404).await;
    problem(
        app.put(
            "/v2/products/NOPE",
            product_v2("NOPE", "c", "1.00"),
            Some("*"),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.request(Method::DELETE, "/v2/products/NOPE")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    let app = TestApp::spawn().await;
    app.post("/v2/products", product_v2("R-1", "c", "3.30"))
        .await;
    let app = app.restart().await;
    let read: Value = app.get("/v2/products/R-1").await.json().await.unwrap();
    assert_eq!(read["price"]["amount"], "3.30");
}

#[tokio::test]
async fn health_and_openapi_need_no_token() {
    let app = TestApp::spawn().await;
    let live = app
        .http
        .get(format!("{}/health/live", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready: Value = app
        .http
        .get(format!("{}/health/ready", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["store"], "ok");
    let document: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/products",
        "/v2/products/{sku}",
        "/v2/products/{sku}/stock",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
}

/// What a client (or a fuzzer) reads in the document is what the service accepts: the
/// required `If-Match`, the SKU syntax, the currencies and each one's decimals.
#[tokio::test]
async fn the_document_states_the_limits_the_service_enforces() {
    let app = TestApp::spawn().await;
    let document: Value = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = &document["paths"]["/v2/products/{sku}"]["put"];
    let parameter = |name: &str| {
        put["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} parameter"))
    };
    assert_eq!(parameter("If-Match")["required"], true);
    assert_eq!(
        parameter("sku")["schema"]["pattern"],
        common::sku::SKU_PATTERN
    );
    let schemas = &document["components"]["schemas"];
    let replacement = &schemas["ProductReplacementV2"];
    assert!(replacement["properties"].get("sku").is_none());
    assert_eq!(replacement["additionalProperties"], false);
    let branches = schemas["MoneyInputV2"]["oneOf"].as_array().unwrap();
    assert_eq!(branches.len(), 4, "one branch per number of decimals");
    let yen = branches
        .iter()
        .find(|b| {
            b["properties"]["currency"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("JPY"))
        })
        .unwrap();
    let pattern = yen["properties"]["amount"]["pattern"].as_str().unwrap();
    assert!(pattern.contains("(\\.0+)?"), "{pattern}");
    // An amount the JPY branch allows is taken.
    let created = app
        .post(
            "/v2/products",
            json!({"sku": "YEN-1", "name": "n", "category": "c",
                   "price": {"amount": "999999999999999", "currency": "JPY"}}),
        )
        .await;
    assert_eq!(created.status(), 201);
}
