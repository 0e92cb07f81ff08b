use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn stock_counts_and_reads() {
    let app = TestApp::spawn().await;
    app.post("/v2/products", product_v2("S-1", "c", "1.00"))
        .await;
    let initial: Value = app
        .get("/v1/products/S-1/stock")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        initial,
        json!({"sku": "S-1", "onHand": 0, "reserved": 0, "available": 0})
    );

    let counted = app
        .put("/v1/products/S-1/stock", json!({"onHand": 25}), None)
        .await;
    assert_eq!(counted.status(), 200);
    let first = etag(&counted);
    let body: Value = counted.json().await.unwrap();
    assert_eq!(body["available"], 25);

    let recount = app
        .put(
            "/v2/products/S-1/stock",
            json!({"onHand": 30}),
            Some(&first),
        )
        .await;
    assert_eq!(recount.status(), 200);
    problem(
        app.put(
            "/v2/products/S-1/stock",
            json!({"onHand": 31}),
            Some(&first),
        )
        .await,
        412,
    )
    .await;
    let read: Value = app
        .get("/v2/products/S-1/stock")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["onHand"], 30);

    for bad in [
        json!({"onHand": -1}),
        json!({"onHand": "5"}),
        json!({"onHand": 1.5}),
        json!({}),
        json!({"onHand": 1, "x": 2}),
    ] {
        problem(app.put("/v2/products/S-1/stock", bad, None).await, 422).await;
    }
    problem(app.get("/v2/products/NOPE/stock").await, 404).await;
    problem(
        app.put("/v2/products/NOPE/stock", json!({"onHand": 1}), None)
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn concurrent_counts_all_land() {
    let app = TestApp::spawn().await;
    app.post("/v2/products", product_v2("S-2", "c", "1.00"))
        .await;
    let mut tasks = Vec::new();
    for n in 1..=10 {
        let request = app
            .request(reqwest::Method::PUT, "/v2/products/S-2/stock")
            .json(&json!({"onHand": n}));
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let read: Value = app
        .get("/v2/products/S-2/stock")
        .await
        .json()
        .await
        .unwrap();
    assert!((1..=10).contains(&read["onHand"].as_i64().unwrap()));
}
